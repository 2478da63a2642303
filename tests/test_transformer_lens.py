"""TransformerLens as an independent oracle: its TransformerBridge on the zoo LLaVA recomputes the attention
pattern itself (`blocks.{l}.attn.hook_pattern`) and exposes residual hooks; interp's `capture` and `Patch`
must agree with them."""

from __future__ import annotations

import pytest
import torch
from transformer_lens.model_bridge.sources.transformers import helpers as tl_helpers

import interp
from interp.models import zoo as zoo_mod

from conftest import images, zoo


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    # TL installs torchvision by itself when it cannot build a multimodal processor: never here.
    mp = pytest.MonkeyPatch()
    mp.setattr(tl_helpers, "_ensure_torchvision", lambda: False)
    from transformers import AutoTokenizer
    from transformer_lens.model_bridge import TransformerBridge

    model, proc = zoo_mod.build("llava")
    model.config.architectures = ["LlavaForConditionalGeneration"]
    d = tmp_path_factory.mktemp("tok")
    proc.tokenizer.save_pretrained(d)  # TL re-reads the tokenizer from its name_or_path
    br = TransformerBridge.boot_transformers(str(d), hf_model=model, tokenizer=AutoTokenizer.from_pretrained(d))
    yield br
    mp.undo()


def _run(br, b, hooks=()):
    kw = dict(pixel_values=b.inputs["pixel_values"], attention_mask=b.inputs["attention_mask"])
    if hooks:
        return br.run_with_hooks(b.input_ids, fwd_hooks=list(hooks), **kw), None
    return br.run_with_cache(b.input_ids, **kw)


def test_bridge_logits_equal_interp_forward(bridge):
    vlm = zoo("llava")
    b = vlm.prepare(images=images(1), questions=["what color is the circle ?"])
    logits, _ = _run(bridge, b)
    torch.testing.assert_close(logits, interp.intervene(vlm).forward(b).logits, atol=1e-4, rtol=1e-4)


def test_capture_equals_transformer_lens_pattern(bridge):
    vlm = zoo("llava")
    b = vlm.prepare(images=images(1), questions=["what color is the circle ?"])
    _, cache = _run(bridge, b)
    stats = interp.capture(vlm, b)  # SDPA, question rows recomputed from q and k
    lay = b.layout
    rows, vis = lay.question[0], lay.vision[0]
    for l in range(vlm.num_layers):
        a = cache[f"blocks.{l}.attn.hook_pattern"][0].mean(0)  # [T, T], mean over heads
        av = a[rows][:, vis]  # [question rows, Nv]
        torch.testing.assert_close(stats.vision_max[l, 0], av.max(0).values, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(stats.vision_ratio[l, 0], av.sum(1).mean(), atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("layer", [0, 2])
def test_patch_equals_transformer_lens_resid_hook(bridge, layer):
    vlm = zoo("llava")
    q = ["what color is the circle ?"]
    clean = vlm.prepare(images=images(1, seed=0), questions=q)
    corrupt = vlm.prepare(images=images(1, seed=1), questions=q)
    _, cache = _run(bridge, clean)
    src = cache[f"blocks.{layer}.hook_resid_post"]
    pos = clean.layout.vision[0]

    def hook(value, hook):
        value[:, pos] = src[:, pos]
        return value

    ref, _ = _run(bridge, corrupt, [(f"blocks.{layer}.hook_resid_post", hook)])
    out = interp.intervene(vlm, interp.Patch("resid", (layer,), "vision", clean)).forward(corrupt).logits
    torch.testing.assert_close(out, ref, atol=1e-4, rtol=1e-4)
    assert not torch.allclose(out, interp.intervene(vlm).forward(corrupt).logits, atol=1e-3)  # it did patch
