"""AIF against a plain loop of the paper's formulas fed by HF eager output_attentions; prefix reuse equals
the naive two-pass version; masked edges are exactly zero; composition and edge cases."""

import math

import pytest
import torch

import interp
from interp.errors import InputError

from conftest import ARCHS, batch, images, zoo


def eager_attentions(vlm, b):
    old = vlm.attn_implementation
    vlm.hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            pos = vlm.generation_positions(b)
            kw = {} if pos is None else {"position_ids": pos}
            out = vlm.hf(**b.inputs, **kw, output_attentions=True)
    finally:
        vlm.hf.set_attn_implementation(old)
    return torch.stack(out.attentions)  # [L, B, H, T, T]


def loop_aif(A, layout, row, ratios, criterion):
    """The formulas of DESIGN.md 'AIF, precisely', written as plain Python loops."""
    L = A.shape[0]
    qs = layout.question[row].nonzero().squeeze(1).tolist()
    vs = layout.vision[row].nonzero().squeeze(1).tolist()
    n = len(vs)
    d = [[max(float(A[l, row, :, q, v].mean()) for q in qs) for v in vs] for l in range(L)]
    mu = [sum(d[l][i] for l in range(L)) / L for i in range(n)]
    ent = []
    for i in range(n):
        e = 0.0
        for l in range(L):
            p = d[l][i] / (L * mu[i])
            if p > 0:
                e -= p * math.log(p)
        ent.append(e)

    def H(idx):
        tot = sum(mu[i] for i in idx)
        h = -sum((mu[i] / tot) * math.log(mu[i] / tot) for i in idx if mu[i] > 0)
        if criterion == "normalized":
            h = h / math.log(len(idx)) if len(idx) > 1 else 1.0
        return h

    S0 = H(range(n))
    order = sorted(range(n), key=lambda i: (-ent[i], i))  # highest entropy first, ties by index
    S, kept_sets = [], []
    for r in ratios:
        k = min(int(math.floor(r * n + 0.5 + 1e-9)), n - 1)
        kept = sorted(set(range(n)) - set(order[:k]))
        kept_sets.append(kept)
        S.append(H(kept))
    scores = [abs(x - S0) for x in S]
    best = max(scores)
    j = min(i for i, x in enumerate(scores) if x >= best - 1e-9)
    return {"mu": mu, "entropy": ent, "S0": S0, "S": S, "ratio": ratios[j], "kept": kept_sets[j]}


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl", "idefics3"])
@pytest.mark.parametrize("criterion", ["paper", "normalized"])
def test_aif_statistics_match_loop_over_eager_attentions(arch, criterion):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    A = eager_attentions(vlm, b)
    out = interp.intervene(vlm, interp.AIF(criterion=criterion)).forward(b)
    d = out.diagnostics["aif"]
    ratios = [float(r) for r in d["ratios"]]
    for r in range(2):
        ref = loop_aif(A, b.layout, r, ratios, criterion)
        n = len(ref["mu"])
        torch.testing.assert_close(d["mu"][r, :n].double(), torch.tensor(ref["mu"], dtype=torch.float64), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(d["entropy"][r, :n].double(), torch.tensor(ref["entropy"], dtype=torch.float64),
                                   atol=1e-5, rtol=1e-5)
        assert abs(float(d["S0"][r]) - ref["S0"]) < 1e-5
        torch.testing.assert_close(d["S"][r].double(), torch.tensor(ref["S"], dtype=torch.float64), atol=1e-5, rtol=1e-5)
        assert float(d["ratio"][r]) == pytest.approx(ref["ratio"])
        assert d["kept"][r, :n].nonzero().squeeze(1).tolist() == ref["kept"]


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("rows", [1, 2])
def test_prefix_reuse_equals_two_full_passes(arch, rows):
    vlm = zoo(arch)
    b = batch(vlm, rows)
    fast = interp.intervene(vlm, interp.AIF()).forward(b)
    slow = interp.intervene(vlm, interp.AIF(reuse_prefix=False)).forward(b)
    assert fast.diagnostics["aif"]["reuse"] and not slow.diagnostics["aif"]["reuse"]
    real = ~b.layout.pad
    torch.testing.assert_close(fast.logits[real], slow.logits[real], atol=1e-5, rtol=1e-5)
    gf = interp.intervene(vlm, interp.AIF(max_ratio=0.5)).generate(b, max_new_tokens=5)
    gs = interp.intervene(vlm, interp.AIF(max_ratio=0.5, reuse_prefix=False)).generate(b, max_new_tokens=5)
    assert torch.equal(gf.sequences, gs.sequences)
    assert gf.texts == gs.texts


def test_aif_changes_the_answer_pass_and_cuts_exactly():
    vlm = zoo("llava")
    b = batch(vlm, 2)
    aif = interp.AIF(max_ratio=0.5)
    st = interp.capture(vlm, b, queries="question", interventions=(aif,))
    d = interp.intervene(vlm, aif).forward(b).diagnostics["aif"]
    for r in range(2):
        n = int(b.layout.num_vision[r])
        cut = ~d["kept"][r, :n]
        assert cut.any()
        assert (st.vision_max[:, r, :n][:, cut] == 0).all()  # text → masked vision is exactly zero
        assert (st.vision_max[:, r, :n][:, ~cut] > 0).all()
    one = batch(vlm, 1)  # unpadded, so both runs use the same positions: vision rows must be bit-identical
    plain_v = interp.capture(vlm, one, queries="vision")
    aif_v = interp.capture(vlm, one, queries="vision", interventions=(aif,))
    torch.testing.assert_close(plain_v.vision_max, aif_v.vision_max, atol=0, rtol=0, equal_nan=True)


def test_aif_layers_subset_and_composition():
    vlm = zoo("qwen2_vl")
    b = batch(vlm, 2)
    aif = interp.AIF(layers=(2, 3), max_ratio=0.5)
    st = interp.capture(vlm, b, queries="question", interventions=(aif,))
    d = interp.intervene(vlm, aif).forward(b).diagnostics["aif"]
    n = int(b.layout.num_vision[0])
    cut = ~d["kept"][0, :n]
    assert (st.vision_max[2:, 0, :n][:, cut] == 0).all() and (st.vision_max[:2, 0, :n][:, cut] > 0).any()
    both = interp.intervene(vlm, interp.AIF(), interp.EdgeMask("question", "vision", layers=(0,)))
    out = both.forward(b)
    assert set(out.diagnostics) == {"aif", "edge_mask"} and out.diagnostics["aif"]["reuse"]


def test_aif_edge_cases_and_errors():
    vlm = zoo("qwen2_5_vl")
    from PIL import Image
    tiny = Image.new("RGB", (16, 16), (200, 10, 10))  # min_pixels → the smallest grid the processor allows
    b = vlm.prepare(images=[tiny, images(1)[0]], questions=["what ?", "what color is the circle ?"])
    assert int(b.layout.num_vision.min()) <= 4
    out = interp.intervene(vlm, interp.AIF(ratios=(0.5,))).generate(b, max_new_tokens=2)
    d = out.diagnostics["aif"]
    assert d["kept"][0].sum() >= 1 and d["ratio"].tolist() == [0.5, 0.5]
    with pytest.raises(InputError):
        interp.AIF(ratios=(0.0, 0.5))
    with pytest.raises(InputError):
        interp.AIF(ratios=(1.2,))
    with pytest.raises(InputError):
        interp.AIF(max_ratio=0.05)
    with pytest.raises(InputError):
        interp.AIF(criterion="best")
    g = interp.intervene(vlm, interp.AIF()).generate(b, max_new_tokens=2, do_sample=False, repetition_penalty=1.1)
    assert g.diagnostics["aif"]["reuse"]  # generation options no longer cost the prefix
    rec = interp.Patch("resid", (0,), "all", b)
    g = interp.intervene(vlm, interp.AIF(), rec).generate(b, max_new_tokens=2)
    assert not g.diagnostics["aif"]["reuse"] and "patch must see position 0" in g.diagnostics["aif"]["reuse_reason"]


def test_aif_bf16_is_nan_free():
    vlm = interp.zoo.tiny("llava", dtype=torch.bfloat16)
    b = batch(vlm, 2)
    out = interp.intervene(vlm, interp.AIF()).forward(b)
    d = out.diagnostics["aif"]
    valid = b.layout.vision_valid()
    assert torch.isfinite(d["mu"][valid]).all() and torch.isfinite(d["entropy"][valid]).all()
    assert torch.isfinite(out.logits[~b.layout.pad]).all()
