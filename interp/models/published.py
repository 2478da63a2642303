"""Published geometry of the real checkpoints, written out as numbers: what `interp.zoo.build(arch, size="7b")`
builds with random weights (no hub download: timing and memory do not depend on the weights).

Values are those of each checkpoint's `config.json` / preprocessor config on the hub (as stored in public
copies); `params` is the parameter count of the model built from them (tests check it).

| arch | checkpoint | decoder | vision tower | vision tokens |
|---|---|---|---|---|
| llava | llava-hf/llava-1.5-7b-hf | Llama/Vicuna-7B: 32 × 4096, 32 heads | CLIP ViT-L/14-336, 24 × 1024 | 576 at 336 px |
| llava_next | llava-hf/llava-v1.6-mistral-7b-hf | Mistral-7B: 32 × 4096, GQA 32/8 | CLIP ViT-L/14-336 | base + anyres tiles |
| qwen2_vl | Qwen/Qwen2-VL-7B-Instruct | Qwen2-7B: 28 × 3584, GQA 28/4 | 32 × 1280, patch 14, merge 2 | dynamic h×w |
| qwen2_5_vl | Qwen/Qwen2.5-VL-7B-Instruct | Qwen2.5-7B: 28 × 3584, GQA 28/4 | 32 × 1280 → 3584, window attention | dynamic h×w |
| idefics3 | HuggingFaceM4/Idefics3-8B-Llama3 | Llama-3-8B: 32 × 4096, GQA 32/8 | SigLIP so400m, 27 × 1152, 364 px | 169 per tile |
"""

from __future__ import annotations

_CLIP_L_336 = dict(hidden_size=1024, intermediate_size=4096, num_hidden_layers=24, num_attention_heads=16,
                   image_size=336, patch_size=14, projection_dim=768, hidden_act="quick_gelu", layer_norm_eps=1e-5)

_VICUNA_7B = dict(vocab_size=32064, hidden_size=4096, intermediate_size=11008, num_hidden_layers=32,
                  num_attention_heads=32, num_key_value_heads=32, max_position_embeddings=4096, rms_norm_eps=1e-5,
                  hidden_act="silu", tie_word_embeddings=False)

_QWEN2_7B = dict(vocab_size=152064, hidden_size=3584, intermediate_size=18944, num_hidden_layers=28,
                 num_attention_heads=28, num_key_value_heads=4, rms_norm_eps=1e-6, hidden_act="silu",
                 tie_word_embeddings=False, use_sliding_window=False, sliding_window=32768, max_window_layers=28)
_QWEN_ROPE = {"rope_type": "default", "mrope_section": [16, 24, 24], "rope_theta": 1000000.0}
_QWEN_PIXELS = dict(min_pixels=56 * 56, max_pixels=28 * 28 * 16384)  # 4 … 16,384 merged tokens per image

GEOMETRY = {
    "llava": {
        "checkpoint": "llava-hf/llava-1.5-7b-hf", "params": 7_063_427_072,
        "vision": _CLIP_L_336, "text": _VICUNA_7B,
        "image": {"size": 336},
    },
    "llava_next": {
        "checkpoint": "llava-hf/llava-v1.6-mistral-7b-hf", "params": 7_566_747_648,
        "vision": _CLIP_L_336,
        "text": dict(vocab_size=32064, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=32768, rms_norm_eps=1e-5,
                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}, sliding_window=None,
                     hidden_act="silu", tie_word_embeddings=False),
        "text_family": "mistral",
        "image": {"size": 336, "pinpoints": [[336, 672], [672, 336], [672, 672], [1008, 336], [336, 1008]]},
    },
    "qwen2_vl": {
        "checkpoint": "Qwen/Qwen2-VL-7B-Instruct", "params": 8_291_375_616,
        "vision": dict(depth=32, embed_dim=1280, hidden_size=3584, mlp_ratio=4, num_heads=16, patch_size=14,
                       spatial_merge_size=2, temporal_patch_size=2, hidden_act="quick_gelu"),
        "text": dict(_QWEN2_7B, max_position_embeddings=32768), "rope": _QWEN_ROPE,
        "image": dict(_QWEN_PIXELS, patch_size=14),
    },
    "qwen2_5_vl": {
        "checkpoint": "Qwen/Qwen2.5-VL-7B-Instruct", "params": 8_292_166_656,
        "vision": dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
        "text": dict(_QWEN2_7B, max_position_embeddings=128000), "rope": _QWEN_ROPE,
        "image": dict(_QWEN_PIXELS, patch_size=14),
    },
    "idefics3": {
        "checkpoint": "HuggingFaceM4/Idefics3-8B-Llama3", "params": 8_462_086_384,
        "vision": dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                       image_size=364, patch_size=14, hidden_act="gelu_pytorch_tanh", layer_norm_eps=1e-6),
        "text": dict(vocab_size=128259, hidden_size=4096, intermediate_size=14336, num_hidden_layers=32,
                     num_attention_heads=32, num_key_value_heads=8, max_position_embeddings=131072,
                     rms_norm_eps=1e-5, rope_parameters={"rope_type": "default", "rope_theta": 500000.0},
                     hidden_act="silu", tie_word_embeddings=False),
        "scale_factor": 2,
        "image": {"tile": 364, "longest_edge": 4 * 364},  # 169 tokens per 364 px tile, up to 4 × 4 tiles + global
    },
}
