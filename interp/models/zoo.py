"""Tiny random models of every supported family, built offline in seconds.

Real HF modeling code and real processors (PIL image processors, a word-level tokenizer made here), random
weights. For tests (`size="tiny"`) and CPU benchmarks (`size="bench"`: real vision-token counts, tens of
millions of parameters). `size="7b"` is the published geometry of each family's 7–8B checkpoint
(`interp/models/published.py`), random bf16 weights built on the meta device and initialised on the target
device (no float32 copy on the CPU), for GPU speed and memory benchmarks.

    vlm = interp.zoo.tiny("qwen2_5_vl", seed=0)
    vlm = interp.zoo.tiny("llava", size="7b", device="cuda")          # LLaVA-1.5-7B geometry, bf16, ~7.06B
    hf, proc = interp.zoo.build("qwen2_5_vl", size="7b", device="meta")  # count parameters, read the config
"""

from __future__ import annotations

import torch

from ..errors import InputError, InterpError
from .processors import image_only
from .published import GEOMETRY

SIZES = ("tiny", "bench", "7b")

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
    raise InputError(f"zoo size must be one of {', '.join(SIZES)}, got {size!r}")


def _ids(tok) -> dict:
    return dict(pad_token_id=tok.pad_token_id, bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id)


def _llama_text(size: str, tok, arch: str):
    """The decoder config: small (tiny / bench) or the published one of `arch` (7b)."""
    from transformers import LlamaConfig, MistralConfig

    if size == "7b":
        g = GEOMETRY[arch]
        return (MistralConfig if g.get("text_family") == "mistral" else LlamaConfig)(**g["text"], **_ids(tok))
    return LlamaConfig(**_text_kwargs(size, len(tok)), **_ids(tok))


def _clip(size: str, arch: str):
    """CLIP vision config: 2 narrow layers (tiny: 32 px, patch 8; bench: 336 px, patch 14) or ViT-L/14-336 (7b)."""
    from transformers import CLIPVisionConfig

    if size == "7b":
        return CLIPVisionConfig(**GEOMETRY[arch]["vision"])
    tiny_ = size == "tiny"
    return CLIPVisionConfig(hidden_size=32 if tiny_ else 64, intermediate_size=64 if tiny_ else 128,
                            num_hidden_layers=2, num_attention_heads=2, image_size=32 if tiny_ else 336,
                            patch_size=8 if tiny_ else 14, projection_dim=32)


_LLAVA_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: {% for c in m['content'] %}"
    "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    "{% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %} "
    "{% endfor %}{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def _llava_assemble(tok, vision, text, img: int, patch: int):
    """`(config, LlavaForConditionalGeneration, LlavaProcessor)` (CLIP centre crop, LLaVA-1.5 prompt)."""
    from transformers import LlavaConfig, LlavaForConditionalGeneration, LlavaProcessor
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=tok.convert_tokens_to_ids("<image>"),
                      vision_feature_select_strategy="default", vision_feature_layer=-2,
                      projector_hidden_act="gelu")
    ip = CLIPImageProcessorPil(size={"shortest_edge": img}, crop_size={"height": img, "width": img},
                               do_center_crop=True, do_resize=True)
    proc = LlavaProcessor(image_processor=ip, tokenizer=tok, patch_size=patch, vision_feature_select_strategy="default",
                          num_additional_image_tokens=1, chat_template=_LLAVA_TEMPLATE)
    return cfg, LlavaForConditionalGeneration, proc


def _llava(size: str):
    tok = word_tokenizer(["<image>"])
    vision = _clip(size, "llava")  # bench and 7b: 24×24 = 576 vision tokens, as LLaVA-1.5
    return _llava_assemble(tok, vision, _llama_text(size, tok, "llava"), vision.image_size, vision.patch_size)


def _llava_next(size: str):
    from transformers import LlavaNextConfig, LlavaNextForConditionalGeneration, LlavaNextProcessor
    from transformers.models.llava_next.image_processing_pil_llava_next import LlavaNextImageProcessorPil

    tok = word_tokenizer(["<image>"])
    vision = _clip(size, "llava_next")
    img, patch = vision.image_size, vision.patch_size
    pinpoints = ([[img, 2 * img], [2 * img, img], [2 * img, 2 * img]] if size != "7b"
                 else GEOMETRY["llava_next"]["image"]["pinpoints"])
    cfg = LlavaNextConfig(vision_config=vision, text_config=_llama_text(size, tok, "llava_next"),
                          image_token_id=tok.convert_tokens_to_ids("<image>"), image_grid_pinpoints=pinpoints,
                          vision_feature_select_strategy="default", vision_feature_layer=-2)
    ip = LlavaNextImageProcessorPil(size={"shortest_edge": img}, crop_size={"height": img, "width": img},
                                    image_grid_pinpoints=pinpoints)
    template = ("{% for m in messages %}{% if m['role'] == 'user' %}[INST] {% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %} [/INST]"
                "{% else %} {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}"
                "{% endfor %}")
    proc = LlavaNextProcessor(image_processor=ip, tokenizer=tok, patch_size=patch,
                              vision_feature_select_strategy="default", num_additional_image_tokens=1,
                              chat_template=template)
    return cfg, LlavaNextForConditionalGeneration, proc


_QWEN_SPECIAL = ["<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>", "<|video_pad|>"]
_QWEN_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<|vision_start|><|image_pad|><|vision_end|>"
    "{% else %}{{ c['text'] }}{% endif %}{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def _qwen(size: str, v25: bool):
    from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import Qwen2VLImageProcessorPil

    tok = word_tokenizer(_QWEN_SPECIAL, eos="<|im_end|>")
    ids = {k: tok.convert_tokens_to_ids(k) for k in _QWEN_SPECIAL}
    common = dict(image_token_id=ids["<|image_pad|>"], video_token_id=ids["<|video_pad|>"],
                  vision_start_token_id=ids["<|vision_start|>"], vision_end_token_id=ids["<|vision_end|>"])
    if size == "7b":
        g = GEOMETRY["qwen2_5_vl" if v25 else "qwen2_vl"]
        text = dict(g["text"], rope_parameters=dict(g["rope"]), **_ids(tok))
        vision, patch = dict(g["vision"]), g["image"]["patch_size"]
        min_px, max_px = g["image"]["min_pixels"], g["image"]["max_pixels"]
    else:
        tk = _text_kwargs(size, len(tok))
        head_dim = tk["hidden_size"] // tk["num_attention_heads"]
        half = head_dim // 2  # mrope_section must sum to head_dim / 2
        section = [half - 2 * (half // 4), half // 4, half // 4]
        patch = 8 if size == "tiny" else 14
        vision = dict(depth=2, hidden_size=32 if size == "tiny" else 64, num_heads=2, patch_size=patch,
                      spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=tk["hidden_size"])
        text = dict(tk, rope_parameters={"rope_type": "default", "mrope_section": section, "rope_theta": 10000.0},
                    **_ids(tok))
        if v25:
            vision.update(intermediate_size=64 if size == "tiny" else 128, window_size=4 * patch * 2,
                          fullatt_block_indexes=[1])
        else:
            vision.update(embed_dim=vision["hidden_size"], hidden_size=tk["hidden_size"], mlp_ratio=2)
            vision.pop("out_hidden_size")
        unit = patch * 2  # one merged token covers a (2·patch)² pixel square
        if size == "tiny":
            min_px, max_px = (2 * unit) ** 2, (6 * unit) ** 2
        else:  # up to 24×24 = 576 merged tokens per image, like a ~672 px image
            min_px, max_px = (4 * unit) ** 2, (24 * unit) ** 2
    if v25:
        from transformers import Qwen2_5_VLConfig as C, Qwen2_5_VLForConditionalGeneration as Model, Qwen2_5_VLProcessor as P
    else:
        from transformers import Qwen2VLConfig as C, Qwen2VLForConditionalGeneration as Model, Qwen2VLProcessor as P
    cfg = C(vision_config=vision, text_config=text, **common)
    ip = Qwen2VLImageProcessorPil(min_pixels=min_px, max_pixels=max_px, patch_size=patch, merge_size=2,
                                  temporal_patch_size=2)
    proc = image_only(P)(image_processor=ip, tokenizer=tok, chat_template=_QWEN_TEMPLATE)
    return cfg, Model, proc


def _idefics3(size: str):
    from transformers import Idefics3Config, Idefics3ForConditionalGeneration, Idefics3Processor
    from transformers.models.idefics3.image_processing_pil_idefics3 import Idefics3ImageProcessorPil

    rowcol = [f"<row_{i + 1}_col_{j + 1}>" for i in range(6) for j in range(6)]
    special = ["<fake_token_around_image>", "<image>", "<end_of_utterance>", "<global-img>"]
    tok = word_tokenizer(special, extra_tokens=rowcol + ["<|im_start|>"], eos="<end_of_utterance>")
    if size == "7b":  # 364 px tiles, patch 14: (364/14)² / 2² = 169 tokens per tile; longest edge 4 · 364
        g = GEOMETRY["idefics3"]
        vision, scale = dict(g["vision"]), g["scale_factor"]
        tile, patch, longest = vision["image_size"], vision["patch_size"], g["image"]["longest_edge"]
    else:
        tile = 32 if size == "tiny" else 384
        patch = 8 if size == "tiny" else 16  # bench: (384/16)² / 2² = 144 tokens per tile
        scale, longest = 2, 2 * tile
        vision = dict(hidden_size=32 if size == "tiny" else 64, intermediate_size=64 if size == "tiny" else 128,
                      num_hidden_layers=2, num_attention_heads=2, image_size=tile, patch_size=patch)
    seq_len = (tile // patch) ** 2 // scale**2
    text = _llama_text(size, tok, "idefics3")
    cfg = Idefics3Config(vision_config=vision, text_config=text.to_dict(), scale_factor=scale,
                         image_token_id=tok.convert_tokens_to_ids("<image>"), pad_token_id=tok.pad_token_id)
    ip = Idefics3ImageProcessorPil(size={"longest_edge": longest}, max_image_size={"longest_edge": tile},
                                   do_image_splitting=True)
    template = ("<|im_start|>{% for m in messages %}{{ m['role'] | capitalize }}:{% for c in m['content'] %}"
                "{% if c['type'] == 'image' %}<image>{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
                "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=seq_len, chat_template=template)
    return cfg, Idefics3ForConditionalGeneration, proc


_BUILDERS = {
    "llava": _llava,
    "llava_next": _llava_next,
    "qwen2_vl": lambda size: _qwen(size, v25=False),
    "qwen2_5_vl": lambda size: _qwen(size, v25=True),
    "idefics3": _idefics3,
}


def build(arch: str, *, seed: int = 0, size: str = "tiny", device=None, dtype=None):
    """The raw `(hf_model, processor)` pair of a zoo model, in eval mode.

    size: "tiny" | "bench" | "7b" (the published geometry, `interp/models/published.py`).
    device=None (tiny / bench only): built seeded on the CPU in float32, as always (the same weights every call).
    device given (always for "7b"): built on the meta device, `to_empty(device)`, then transformers' own init
    run on that device under `seed`, in `dtype` (default bfloat16): no float32 copy, no CPU materialisation.
    device="meta": left on the meta device (parameter counts, config checks; nothing allocated).

        hf, proc = zoo.build("llava", size="7b", device="cuda")   # ~7.06B parameters, 14 GB of bf16
    """
    if arch not in _BUILDERS:
        raise InputError(f"unknown zoo architecture {arch!r}; choose one of {', '.join(ARCHS)}")
    if size not in SIZES:
        raise InputError(f"zoo size must be one of {', '.join(SIZES)}, got {size!r}")
    if size == "7b" and device is None:
        raise InputError(f"zoo size '7b' ({GEOMETRY[arch]['checkpoint']} geometry) needs a device: "
                         "device='cuda' (random bf16 weights made there), or device='meta' to inspect it")
    cfg, cls, proc = _BUILDERS[arch](size)
    return construct(cls, cfg, seed=seed, device=device, dtype=dtype).eval(), proc


def construct(cls, cfg, *, seed: int = 0, device=None, dtype=None):
    """`cls(cfg)` with random weights: seeded on the CPU in float32 (device None), or meta → device (see `build`).

    On a device, every parameter and buffer is first filled with NaN (integers with -1), then transformers'
    init writes them (weights, norms, rotary `inv_freq`, position ids); any value left unwritten raises.
    """
    if device is None:
        _seeded(seed)
        return cls(cfg)
    dtype = torch.bfloat16 if dtype is None else dtype
    with torch.device("meta"):
        model = cls._from_config(cfg, dtype=dtype)
    if torch.device(device).type == "meta":
        return model
    model.to_empty(device=device)
    tensors = lambda: [*model.named_parameters(remove_duplicate=False), *model.named_buffers()]  # noqa: E731
    with torch.no_grad():
        for _, t in tensors():
            t.fill_(float("nan") if t.is_floating_point() else -1)
        _seeded(seed)  # seeds the CPU and every CUDA device
        model.initialize_weights()
        model.tie_weights()
        bad = [n for n, t in tensors()
               if not (torch.isfinite(t).all() if t.is_floating_point() else (t >= 0).all())]
    if bad:
        raise InterpError(f"{cls.__name__}: transformers' init left {len(bad)} tensors unwritten after "
                          f"to_empty ({', '.join(bad[:5])}, ...); initialise them in zoo.construct")
    return model


def tiny(arch: str, *, seed: int = 0, size: str = "tiny", attn_implementation: str = "sdpa", **load_kw):
    """A random `interp.VLM` of family `arch` (`llava`, `llava_next`, `qwen2_vl`, `qwen2_5_vl`, `idefics3`).

    tiny / bench: built on the CPU in float32; `dtype` / `device` in `load_kw` convert it afterwards.
    size="7b": the published geometry, built straight on `device` (default "cuda") in `dtype` (default
    bfloat16) by `build`.

        vlm = interp.zoo.tiny("qwen2_5_vl", size="7b", device="cuda")
    """
    from . import load

    if size == "7b":
        device, dtype = load_kw.pop("device", "cuda"), load_kw.pop("dtype", None)
        model, proc = build(arch, seed=seed, size=size, device=device, dtype=dtype)
    else:
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
    cfg, cls, proc = _llava_assemble(tok, vision, text, img, patch)
    return construct(cls, cfg, seed=seed).eval(), proc


def llava_grid(grid: int, *, layers: int = 2, hidden: int = 256, heads: int = 4, seed: int = 0,
               attn_implementation: str = "sdpa", **load_kw):
    """A random LLaVA-style `interp.VLM` with `grid`² vision tokens per image (see `build_llava_grid`).

        vlm = interp.zoo.llava_grid(96, check=False)   # 9,216 vision tokens; skip the load-time self-check
    """
    from . import load

    model, proc = build_llava_grid(grid, layers=layers, hidden=hidden, heads=heads, seed=seed)
    return load(model, processor=proc, attn_implementation=attn_implementation, **load_kw)
