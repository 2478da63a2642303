"""Real-geometry zoo builders (`interp.zoo.build(arch, size="7b")`): the published configs, parameter counts
from meta-device builds (nothing allocated; a 7B model is never built on the CPU here), the processors' vision
token counts, and the meta → device → init path on tiny geometry."""

import pytest
import torch
from PIL import Image

from interp.errors import InputError, InterpError
from interp.models import zoo
from interp.models.published import GEOMETRY


@pytest.fixture(scope="module")
def meta():
    return {a: zoo.build(a, size="7b", device="meta") for a in zoo.ARCHS}


@pytest.mark.parametrize("arch", zoo.ARCHS)
def test_7b_parameter_count_on_meta(meta, arch):
    hf, _ = meta[arch]
    params = list(hf.parameters())
    assert all(p.is_meta and p.dtype == torch.bfloat16 for p in params)
    assert sum(p.numel() for p in params) == GEOMETRY[arch]["params"]


def test_published_counts():
    # the model cards' rounded sizes: LLaVA-1.5-7B 7.06B, LLaVA-NeXT-Mistral-7B 7.57B, Qwen2(.5)-VL-7B 8.29B,
    # Idefics3-8B 8.46B
    billions = {a: round(GEOMETRY[a]["params"] / 1e9, 2) for a in zoo.ARCHS}
    assert billions == {"llava": 7.06, "llava_next": 7.57, "qwen2_vl": 8.29, "qwen2_5_vl": 8.29, "idefics3": 8.46}


def test_llava_7b_config(meta):
    hf, _ = meta["llava"]
    t, v = hf.config.text_config, hf.config.vision_config
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads,
            t.intermediate_size, t.vocab_size) == (32, 4096, 32, 32, 11008, 32064)
    assert (v.num_hidden_layers, v.hidden_size, v.num_attention_heads, v.intermediate_size, v.image_size,
            v.patch_size, v.hidden_act) == (24, 1024, 16, 4096, 336, 14, "quick_gelu")
    assert hf.config.vision_feature_layer == -2 and hf.config.vision_feature_select_strategy == "default"


def test_qwen2_5_vl_7b_config(meta):
    hf, _ = meta["qwen2_5_vl"]
    t, v = hf.config.text_config, hf.config.vision_config
    assert (t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.num_key_value_heads,
            t.intermediate_size, t.vocab_size) == (28, 3584, 28, 4, 18944, 152064)
    assert t.rope_parameters["mrope_section"] == [16, 24, 24] and t.rope_parameters["rope_theta"] == 1e6
    assert (v.depth, v.hidden_size, v.out_hidden_size, v.num_heads, v.intermediate_size, v.patch_size,
            v.spatial_merge_size, v.window_size, v.fullatt_block_indexes) == \
        (32, 1280, 3584, 16, 3420, 14, 2, 112, [7, 15, 23, 31])
    assert not hf.config.tie_word_embeddings and not t.tie_word_embeddings


def test_llava_7b_processor_gives_576_tokens(meta):
    _, proc = meta["llava"]
    img = Image.new("RGB", (500, 400), (10, 20, 30))
    enc = proc(images=[img], text=["USER: <image>\nwhat ?"], return_tensors="pt")
    assert tuple(enc["pixel_values"].shape) == (1, 3, 336, 336)
    assert int((enc["input_ids"] == proc.tokenizer.convert_tokens_to_ids("<image>")).sum()) == 576


@pytest.mark.parametrize("side,tokens", [(1008, 1296), (1792, 4096)])
def test_qwen_7b_processor_vision_tokens(meta, side, tokens):
    _, proc = meta["qwen2_5_vl"]
    out = proc.image_processor(images=[Image.new("RGB", (side, side))], return_tensors="pt")
    assert int(out["image_grid_thw"].prod()) // 4 == tokens  # 2×2 merge
    # 16,384 merged tokens (3584 px) is the processor's pixel limit exactly: 28² · 16,384
    assert proc.image_processor.size["longest_edge"] == 28 * 28 * 16384


def test_7b_needs_a_device_and_sizes_are_checked():
    with pytest.raises(InputError, match="needs a device"):
        zoo.build("llava", size="7b")
    with pytest.raises(InputError, match="tiny, bench, 7b"):
        zoo.build("llava", size="13b")


@pytest.mark.parametrize("arch", zoo.ARCHS)
def test_meta_to_device_init_is_complete(arch):
    """The path the GPU run takes, on tiny geometry: bf16 on the device, every tensor written by the init."""
    hf, _ = zoo.build(arch, size="tiny", device="cpu", dtype=torch.bfloat16)
    assert {p.dtype for p in hf.parameters()} == {torch.bfloat16}
    assert all(not t.is_meta for t in [*hf.parameters(), *hf.buffers()])
    assert all(torch.isfinite(p).all() for p in hf.parameters())
    assert any(p.std() > 0 for p in hf.parameters())  # random, not a constant


def test_meta_to_device_init_reports_what_it_missed(monkeypatch):
    from transformers import LlavaForConditionalGeneration

    monkeypatch.setattr(LlavaForConditionalGeneration, "initialize_weights", lambda self: None)
    with pytest.raises(InterpError, match="left .* tensors unwritten"):
        zoo.build("llava", size="tiny", device="cpu")


def test_seeded_cpu_build_unchanged_by_device_path():
    """device=None keeps the seeded float32 CPU build (the suite's and the toy's weights)."""
    a, _ = zoo.build("llava", size="tiny")
    b, _ = zoo.build("llava", size="tiny")
    assert {p.dtype for p in a.parameters()} == {torch.float32}
    assert all(torch.equal(x, y) for x, y in zip(a.parameters(), b.parameters()))
