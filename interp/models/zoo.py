"""Tiny random models of every supported family, built offline in seconds.

Real HF modeling code and real processors (PIL image processors, a word-level tokenizer made here), random
weights. For tests (`size="tiny"`) and CPU benchmarks (`size="bench"`: real vision-token counts, tens of
millions of parameters).

    vlm = interp.zoo.tiny("qwen2_5_vl", seed=0)
"""

from __future__ import annotations

import torch

from ..errors import InputError

ARCHS = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3")

# Words the zoo tokenizer knows; anything else becomes <unk> (random models, so meaning is irrelevant,
# but distinct ids keep prompts distinct).
_WORDS = (
    "what is the color of a an circle square triangle star red green blue yellow purple orange "
    "how many are there in image picture left right above below small large big object objects "
    "shape count yes no it this that which where who do does see can you tell me describe "
    "one two three four five six seven eight nine ten zero user assistant system answer question "
    "and or to on at with for from by near far top bottom middle cup dog cat car table text word"
).split()
_PUNCT = list("?.,:;!'\"()[]-/") + ["\n"]


def word_tokenizer(special_tokens: list[str], *, extra_tokens: list[str] = (), eos="</s>", bos="<s>"):
    """An offline word-level `PreTrainedTokenizerFast` with the given special tokens (no hub)."""
    from tokenizers import Tokenizer, decoders, normalizers, pre_tokenizers
    from tokenizers.models import WordLevel
    from transformers import PreTrainedTokenizerFast

    base = ["<pad>", bos, eos, "<unk>"]
    vocab: dict[str, int] = {}
    for tok in base + list(special_tokens) + list(extra_tokens) + _PUNCT + list(_WORDS):
        vocab.setdefault(tok, len(vocab))
    tok = Tokenizer(WordLevel(vocab, unk_token="<unk>"))
    tok.normalizer = normalizers.Lowercase()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Punctuation()]
    )
    tok.decoder = decoders.WordPiece(prefix="##")  # joins words with spaces
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token="<pad>",
        bos_token=bos,
        eos_token=eos,
        unk_token="<unk>",
        additional_special_tokens=list(special_tokens),
        padding_side="left",
    )
    return fast


def _seeded(seed: int):
    torch.manual_seed(seed)


def _text_kwargs(size: str, vocab: int) -> dict:
    if size == "tiny":
        return dict(vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=4,
                    num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=4096)
    if size == "bench":  # ~30M parameters in the decoder; tokens count like the real model
        return dict(vocab_size=vocab, hidden_size=512, intermediate_size=1376, num_hidden_layers=8,
                    num_attention_heads=8, num_key_value_heads=8, max_position_embeddings=16384)
    raise InputError(f"zoo size must be 'tiny' or 'bench', got {size!r}")


_LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _llava_assemble(tok, vision, text, img: int, patch: int, seed: int):
    """A seeded random `LlavaForConditionalGeneration` + `LlavaProcessor` (CLIP centre crop, LLaVA-1.5 prompt)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default", vision_feature_layer=-2,
                      projector_hidden_act="gelu")
    _seeded(seed)
    model = LlavaForConditionalGeneration(cfg).eval()
    ip = CLIPImageProcessorPil(size={"shortest_edge": img}, crop_size={"height": img, "width": img},
                               do_center_crop=True, do_resize=True)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=_LLAVA_TEMPLATE)
    return model, proc


def _llava(size: str, seed: int):
    from transformers import CLIPVisionConfig, LlamaConfig

    tok = word_tokenizer(["<image>"])
    img = 32 if size == "tiny" else 336
    patch = 8 if size == "tiny" else 14  # bench: 24×24 = 576 vision tokens, as LLaVA-1.5
    vision = CLIPVisionConfig(hidden_size=32 if size == "tiny" else 64, intermediate_size=64 if size == "tiny" else 128,
                              num_hidden_layers=2, num_attention_heads=2, image_size=img, patch_size=patch,
                              projection_dim=32)
    text = LlamaConfig(**_text_kwargs(size, len(tok)), pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return _llava_assemble(tok, vision, text, img, patch, seed)


def _llava_next(size: str, seed: int):
    from transformers import (CLIPVisionConfig, LlamaConfig, LlavaNextConfig, LlavaNextForConditionalGeneration,
                              LlavaNextProcessor)
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tok = word_tokenizer(["<image>"])
    img = 32 if size == "tiny" else 336
    patch = 8 if size == "tiny" else 14
    pinpoints = [[img, 2 * img], [2 * img, img], [2 * img, 2 * img]]
    vision = CLIPVisionConfig(hidden_size=32 if size == "tiny" else 64, intermediate_size=64 if size == "tiny" else 128,
                              num_hidden_layers=2, num_attention_heads=2, image_size=img, patch_size=patch,
                              projection_dim=32)
    text = LlamaConfig(**_text_kwargs(size, len(tok)), pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    cfg = LlavaNextConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                          image_grid_pinpoints=pinpoints, vision_feature_select_strategy="default",
                          vision_feature_layer=-2)
    _seeded(seed)
    model = LlavaNextForConditionalGeneration(cfg)
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": img}, crop_size={"height": img, "width": img},
                                    image_grid_pinpoints=pinpoints)
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
                "{% else %} {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
                "{% endfor %}")
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=patch,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=template)
    return model, proc


_QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen(size: str, seed: int, v25: bool):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = word_tokenizer(_QWEN_SPECIAL, eos="<|im_end|>")
    tk = _text_kwargs(size, len(tok))
    head_dim = tk["hidden_size"] // tk["num_attention_heads"]
    half = head_dim // 2  # mrope_section must sum to head_dim / 2
    section = [half - 2 * (half // 4), half // 4, half // 4]
    patch = 8 if size == "tiny" else 14
    vision = dict(depth=2, hidden_size=32 if size == "tiny" else 64, num_heads=2, patch_size=patch,
                  spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=tk["hidden_size"])
    ids = {k: tok.convert_tokens_to_ids(k) for k in _QWEN_SPECIAL}
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    text = dict(tk, rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
                pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    if v25:
        from transformers import Qwen2_5_VLConfig, Qwen2_5_VLForConditionalGeneration as Model, Qwen2_5_VLProcessor as P
        vision.update(intermediate_size=64 if size == "tiny" else 128, window_size=4 * patch * 2,
                      fullatt_block_indexes=[1])
        cfg = Qwen2_5_VLConfig(vision_config=vision, text_config=text, **common)
    else:
        from transformers import Qwen2VLConfig, Qwen2VLForConditionalGeneration as Model, Qwen2VLProcessor as P
        vision.update(embed_dim=vision["hidden_size"], hidden_size=tk["hidden_size"], mlp_ratio=2)
        vision.pop("out_hidden_size")
        cfg = Qwen2VLConfig(vision_config=vision, text_config=text, **common)
    _seeded(seed)
    model = Model(cfg)
    unit = patch * 2  # one merged token covers a (2·patch)² pixel square
    if size == "tiny":
        min_px, max_px = (2 * unit) ** 2, (6 * unit) ** 2
    else:  # up to 24×24 = 576 merged tokens per image, like a ~672 px image
        min_px, max_px = (4 * unit) ** 2, (24 * unit) ** 2
    ip = Qwen2VLImageProcessorPil(min_pixels=min_px, max_pixels=max_px, patch_size=patch, merge_size=2,
                                  temporal_patch_size=2)
    proc = _qwen_processor(P)(image_processor=ip, tokenizer=tok, chat_template=_QWEN_TEMPLATE)
    return model, proc


def _qwen_processor(base):
    """The Qwen processors demand a video processor (torchvision); images need none, so skip the check."""

    class ImageOnly(base):
        # Keep the real class name so save_pretrained writes a config AutoProcessor can load back.
        __qualname__ = base.__qualname__

        @classmethod
        def get_attributes(cls):
            return [a for a in super().get_attributes() if a != "video_processor"]

        def __init__(self, image_processor=None, tokenizer=None, chat_template=None, **kw):
            self.video_processor = None
            base.__init__(self, image_processor, tokenizer, video_processor=None, chat_template=chat_template, **kw)

    ImageOnly.__name__ = base.__name__
    return ImageOnly


def _idefics3(size: str, seed: int):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor, LlamaConfig
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    rowcol = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    tok = word_tokenizer(special, extra_tokens=rowcol + ["<|im_start|>"], eos="<end_of_utterance>")
    tile = 32 if size == "tiny" else 384
    patch = 8 if size == "tiny" else 16  # bench: (384/16)² / 2² = 144 tokens per tile
    scale = 2
    seq_len = (tile // patch) ** 2 // scale**2
    text = LlamaConfig(**_text_kwargs(size, len(tok)), pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    vision = dict(hidden_size=32 if size == "tiny" else 64, intermediate_size=64 if size == "tiny" else 128,
                  num_hidden_layers=2, num_attention_heads=2, image_size=tile, patch_size=patch)
    cfg = Idefics3Config(vision_config=vision, text_config=text.to_dict(), scale_factor=scale,
                         image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    _seeded(seed)
    model = Idefics3ForConditionalGeneration(cfg)
    ip = Idefics3ImageProcessorPil(size={"longest_edge": 2 * tile}, max_image_size={"longest_edge": tile},
                                   do_image_splitting=True)
    template = ("<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq_len, chat_template=template)
    return model, proc


_BUILDERS = {
    "llava": _llava,
    "llava_next": _llava_next,
    "qwen2_vl": lambda size, seed: _qwen(size, seed, v25=False),
    "qwen2_5_vl": lambda size, seed: _qwen(size, seed, v25=True),
    "idefics3": _idefics3,
}


def build(arch: str, *, seed: int = 0, size: str = "tiny"):
    """The raw `(hf_model, processor)` pair of a zoo model (float32, eval mode, CPU)."""
    if arch not in _BUILDERS:
        raise InputError(f"unknown zoo architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    model, proc = _BUILDERS[arch](size, seed)
    return model.eval(), proc


def tiny(arch: str, *, seed: int = 0, size: str = "tiny", attn_implementation: str = "sdpa", **load_kw):
    """A random `interp.VLM` of family `arch` (`llava`, `llava_next`, `qwen2_vl`, `qwen2_5_vl`, `idefics3`)."""
    from . import load

    model, proc = build(arch, seed=seed, size=size)
    return load(model, processor=proc, attn_implementation=attn_implementation, **load_kw)


# ---------------------------------------------------------------- benchmark-only configs (memory scaling)


def build_llava_grid(grid: int, *, layers: int = 2, hidden: int = 256, heads: int = 4, seed: int = 0):
    """The raw `(hf_model, processor)` of a random LLaVA-1.5-style model with `grid`² vision tokens.

    Patch 14, image 14·grid px (grid 24 = LLaVA-1.5's 576 tokens, 48 → 2,304, 96 → 9,216). Small decoder
    (`layers`, `hidden`, `heads`, head_dim = hidden / heads) and a 2-layer CLIP tower of width 64: sequence
    length is what the memory-scaling benchmark varies, the model stays the same across grids.
    """
    from transformers import CLIPVisionConfig, LlamaConfig

    if grid < 1 or hidden % heads:
        raise InputError(f"need grid ≥ 1 and hidden divisible by heads, got grid={grid}, hidden={hidden}, "
                         f"heads={heads}")
    tok = word_tokenizer(["<image>"])
    patch = 14
    img = patch * grid
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=2,
                              image_size=img, patch_size=patch, projection_dim=32)
    text = LlamaConfig(vocab_size=len(tok), hidden_size=hidden, intermediate_size=hidden * 11 // 4,
                       num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=heads,
                       max_position_embeddings=max(4096, grid * grid + 512), pad_token_id=tok.pad_token_id,
                       bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)
    return _llava_assemble(tok, vision, text, img, patch, seed)


def llava_grid(grid: int, *, layers: int = 2, hidden: int = 256, heads: int = 4, seed: int = 0,
               attn_implementation: str = "sdpa", **load_kw):
    """A random LLaVA-style `interp.VLM` with `grid`² vision tokens per image (see `build_llava_grid`).

        vlm = interp.zoo.llava_grid(96, check=False)   # 9,216 vision tokens; skip the load-time self-check
    """
    from . import load

    model, proc = build_llava_grid(grid, layers=layers, hidden=hidden, heads=heads, seed=seed)
    return load(model, processor=proc, attn_implementation=attn_implementation, **load_kw)
