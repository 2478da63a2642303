"""Generation parity: `intervene(vlm, ...).generate(batch, **options)` gives exactly the tokens HF `generate` gives
on a pristine copy of the model whose attention applies the same edits explicitly (tests/oracle.py), for every
option × intervention × family. The toy model emits EOS after a word or two, so it exercises early stopping."""

from __future__ import annotations

import contextlib
import functools

import pytest
import torch

import interp
from interp.engine import repeat_layout
from interp.models import zoo as zoo_mod

from conftest import ARCHS, batch, images, zoo
from oracle import oracle, pair_cut

N = 6
OPTIONS = {
    "greedy": {},
    "greedy_explicit": dict(do_sample=False, temperature=1.0),
    "sample": dict(do_sample=True, temperature=0.8, top_k=20, top_p=0.9),
    "min_new_tokens": dict(min_new_tokens=4, repetition_penalty=1.3),
    "no_repeat_ngram": dict(no_repeat_ngram_size=2),
    "eos_override": "eos",
    "beams": dict(num_beams=2),
    "beams_return": dict(num_beams=3, num_return_sequences=2),
    "sample_return": dict(do_sample=True, num_return_sequences=2),
    "return_dict": dict(return_dict_in_generate=True, output_scores=True),
}
FAMILY_OPTIONS = ("greedy", "sample", "min_new_tokens", "beams_return", "return_dict")  # zoo: a cheaper cut


@functools.lru_cache(maxsize=None)
def setup(family):
    """(vlm, pristine HF copy, decoder attention class, batch, corrupt batch with the same layout)."""
    if family == "toy":
        from transformers import LlavaForConditionalGeneration

        vlm = interp.toy.load()
        pristine = LlavaForConditionalGeneration.from_pretrained(interp.toy.CHECKPOINT_DIR).eval()
        samples = interp.toy.dataset(4, seed=interp.toy.EVAL_SEED)
        b = vlm.prepare(images=[s.image for s in samples[:2]], questions=[s.question for s in samples[:2]])
        c = vlm.prepare(images=[s.image for s in samples[2:]], questions=[s.question for s in samples[:2]])
    else:
        vlm = zoo(family)
        pristine, _ = zoo_mod.build(family)
        pristine.set_attn_implementation("sdpa")
        b = batch(vlm, 2)
        c = vlm.prepare(images=images(2, seed=1), questions=list(b.questions))
    cls = type(vlm.sites.layer(vlm.nn, 0).self_attn._module)
    return vlm, pristine, cls, b, c


def options(family, name, vlm, pristine, b):
    opt = OPTIONS[name]
    if opt == "eos":  # a token greedy decoding emits early: both must stop there
        ref = pristine.generate(**b.inputs, max_new_tokens=N)
        opt = dict(eos_token_id=int(ref[0, b.input_ids.shape[1] + 1]))
    return opt


def expansion(opt):
    return max(opt.get("num_beams", 1), opt.get("num_return_sequences", 1))


def run_layout(b, opt):
    return repeat_layout(b.layout.extend(N), expansion(opt))


def after_last_image(lay):
    T = lay.seq_len
    last = T - 1 - lay.vision.flip(1).int().argmax(1)
    return lay.text & (torch.arange(T)[None] > last[:, None])


def scatter(values, lay):
    """[B, Nv] per-vision-token values → [B, S] by position (zero elsewhere)."""
    out = torch.zeros(lay.shape)
    vpos = lay.vision_positions()
    for r in range(lay.batch_size):
        ok = vpos[r] >= 0
        out[r, vpos[r][ok]] = values[r][ok].float()
    return out


# Each case: (interventions for interp, fn(out, lay) → oracle kwargs, or None: tokens equal plain HF)
def _aif_cuts(out, lay):
    kept = out.diagnostics["aif"]["kept"]
    masked = lay.vision & ~(scatter(kept.float(), lay) > 0)
    return {"cuts": {None: pair_cut(after_last_image(lay), masked)}}


def _weights(vlm, b):
    nv = int(b.layout.num_vision.max())
    return torch.softmax(torch.randn(len(b), nv, generator=torch.Generator().manual_seed(1)), -1)


def _inject_cfg(lay, rows, weights, layers, alpha=0.5, decode=True):
    w = scatter(weights, lay)
    return {l: dict(rows=rows, cols=lay.vision, weights=w, alpha=alpha, decode=decode) for l in layers}


CASES = {
    "none": (lambda vlm, b, c: (), lambda out, lay: {}),
    "blind": (lambda vlm, b, c: (interp.EdgeMask("text", "vision"),),
              lambda out, lay: {"cuts": {None: pair_cut(lay.text, lay.vision)}}),
    "edge_layer": (lambda vlm, b, c: (interp.EdgeMask("question", "vision", layers=1),),
                   lambda out, lay: {"cuts": {1: pair_cut(lay.question, lay.vision)}}),
    "aif": (lambda vlm, b, c: (interp.AIF(max_ratio=0.5),), _aif_cuts),
    "inject": (lambda vlm, b, c: (interp.InjectAttention((1,), "question", "vision", _weights(vlm, b)),),
               lambda out, lay: {"inject": _inject_cfg(lay, lay.question, _rep(out, lay), (1,))}),
    "capture": (lambda vlm, b, c: (interp.Capture(),), None),
    "vif": (lambda vlm, b, c: (interp.VIF.build(vlm, alpha=0.5),), "vif"),
    "patch": (lambda vlm, b, c: (interp.Patch("resid", (1,), "vision", c),), "patch"),
    "aif+inject": (lambda vlm, b, c: (interp.AIF(max_ratio=0.5),
                                      interp.InjectAttention((1,), "question", "vision", _weights(vlm, b))),
                   lambda out, lay: {**_aif_cuts(out, lay),
                                     "inject": _inject_cfg(lay, lay.question, _rep(out, lay), (1,))}),
}


def _rep(out, lay):
    w = out._weights
    return w.repeat_interleave(lay.batch_size // w.shape[0], 0)


def _vif_oracle(out, lay, vif_iv):
    d = out.diagnostics["vif"]
    rows = after_last_image(lay)  # VIF's default query rows: text after the row's last image
    inject = {}
    for (e, i), m in zip(d["pairs"], d["maps"]):
        inject.update(_inject_cfg(lay, rows, torch.nan_to_num(m), (i,), alpha=0.5, decode=False))
    return {"inject": inject}


def _layers(model):
    return (model.model.language_model if hasattr(model.model, "language_model") else model.model.text_model).layers


@contextlib.contextmanager
def _patched(model, c, b, layer):
    """Plain PyTorch forward hooks: record decoder layer `layer`'s output on `c`, then write it into the
    prefill of `b`'s run at b's vision positions (prefill only, rows repeated for beams)."""
    mod = _layers(model)[layer]
    seen = {}

    def record(m, args, out):
        seen["acts"] = (out[0] if isinstance(out, tuple) else out).detach().clone()

    h = mod.register_forward_hook(record)
    with torch.no_grad():
        model(**c.inputs)
    h.remove()
    T = b.input_ids.shape[1]

    def write(m, args, out):
        x = out[0] if isinstance(out, tuple) else out
        if x.shape[1] != T:  # a decode step: Patch is prefill-only
            return None
        n = x.shape[0] // seen["acts"].shape[0]
        src = seen["acts"].repeat_interleave(n, 0)
        pos = b.layout.vision.repeat_interleave(n, 0)
        x = torch.where(pos[..., None], src, x)
        return (x, *out[1:]) if isinstance(out, tuple) else x

    h = mod.register_forward_hook(write)
    try:
        yield
    finally:
        h.remove()


def check(family, opt_name, case):
    vlm, pristine, cls, b, c = setup(family)
    opt = options(family, opt_name, vlm, pristine, b)
    make, oracle_kw = CASES[case]
    ivs = make(vlm, b, c)
    torch.manual_seed(7)
    out = interp.intervene(vlm, *ivs).generate(b, max_new_tokens=N, **opt)
    lay = run_layout(b, opt)
    out._weights = _weights(vlm, b)
    patch = contextlib.nullcontext()
    if oracle_kw is None:
        kw = {}
    elif oracle_kw == "patch":
        kw, patch = {}, _patched(pristine, c, b, 1)
    elif oracle_kw == "vif":
        kw = _vif_oracle(out, lay, ivs[0])
    else:
        kw = oracle_kw(out, lay)
    with oracle(pristine, cls, **kw) as model, patch:
        torch.manual_seed(7)
        ref = model.generate(**b.inputs, max_new_tokens=N, **opt)
    ref_seq = ref if isinstance(ref, torch.Tensor) else ref.sequences
    assert out.sequences.shape == ref_seq.shape, (out.sequences.shape, ref_seq.shape)
    assert torch.equal(out.sequences, ref_seq), (out.sequences[:, b.input_ids.shape[1]:], ref_seq[:, b.input_ids.shape[1]:])
    assert len(out.texts) == ref_seq.shape[0]
    if "aif" in out.diagnostics:  # the profiling pass's KV prefix was handed to HF generate, whatever the options
        assert out.diagnostics["aif"]["reuse"], out.diagnostics["aif"]["reuse_reason"]
        assert out.diagnostics["aif"]["kept"].shape[0] == len(b) * expansion(opt)  # rows as HF expands them
    if opt.get("return_dict_in_generate"):
        assert len(out.scores) == len(ref.scores)
        torch.testing.assert_close(out.scores[0], ref.scores[0], atol=1e-4, rtol=1e-4)
    return out


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("opt_name", list(OPTIONS))
def test_toy_every_option(opt_name, case):
    check("toy", opt_name, case)


@pytest.mark.parametrize("case", ["none", "blind", "edge_layer", "aif", "inject", "vif", "patch"])
@pytest.mark.parametrize("opt_name", FAMILY_OPTIONS)
@pytest.mark.parametrize("family", ARCHS)
def test_families(family, opt_name, case):
    check(family, opt_name, case)


# -------------------------------------------------------------------- cuts lowered into HF's attention_mask


@functools.lru_cache(maxsize=None)
def one_row():
    """The toy setup with a one-row batch: no left padding, so every position after AIF's prefix is a query
    after the image (in a padded batch a row's own image can end after the shared prefix)."""
    vlm, pristine, cls, b, c = setup("toy")
    s = interp.toy.dataset(1, seed=interp.toy.EVAL_SEED + 1)[0]
    return vlm, pristine, cls, vlm.prepare(images=[s.image], questions=[s.question])


def _lowered(monkeypatch):
    """Records (all-layer cuts planned, left as edits at every forward, left for the prefill only, keys hidden?)
    for each pass that plans a cut."""
    import interp.engine.run as run_mod

    seen, real = [], run_mod.lower_cuts

    def spy(ctx, plan, T):
        new, hide = real(ctx, plan, T)
        if plan.cuts:
            seen.append((len(plan.cuts), len(new.cuts), len(new.prefill_cuts), hide is not None))
        return new, hide

    monkeypatch.setattr(run_mod, "lower_cuts", spy)
    return seen


def _no_trace(*a, **k):
    raise AssertionError("the pass went through nnsight although its only edit is a key mask")


@pytest.mark.parametrize("opt_name", ["greedy", "beams_return", "sample_return", "return_dict"])
def test_aif_after_its_prefix_is_plain_hf(monkeypatch, opt_name):
    # AIF's cut hides the masked vision keys from every query after the image: after the reused prefix that is
    # every query HF computes, so the cut is the 2D attention_mask and HF generates alone (no trace)
    from interp.engine import walk

    vlm, pristine, cls, b = one_row()
    opt = options("toy", opt_name, vlm, pristine, b)
    seen = _lowered(monkeypatch)
    monkeypatch.setattr(walk, "trace_generate", _no_trace)
    torch.manual_seed(7)
    out = interp.intervene(vlm, interp.AIF(max_ratio=0.5)).generate(b, max_new_tokens=N, **opt)
    assert out.diagnostics["aif"]["reuse"] and seen == [(1, 0, 0, True)]
    lay = run_layout(b, opt)
    with oracle(pristine, cls, **_aif_cuts(out, lay)) as model:
        torch.manual_seed(7)
        ref = model.generate(**b.inputs, max_new_tokens=N, **opt)
    ref_seq = ref if isinstance(ref, torch.Tensor) else ref.sequences
    assert torch.equal(out.sequences, ref_seq)
    if opt.get("return_dict_in_generate"):
        torch.testing.assert_close(torch.stack(out.scores), torch.stack(ref.scores), atol=1e-4, rtol=1e-4)


def test_aif_forward_after_its_prefix_is_plain_hf(monkeypatch):
    from interp.engine import walk

    vlm, pristine, cls, b = one_row()
    ref = interp.intervene(vlm, interp.AIF(max_ratio=0.5, reuse_prefix=False)).forward(b)
    real, calls = walk.trace_forward, []
    monkeypatch.setattr(walk, "trace_forward", lambda *a, **k: (calls.append(1), real(*a, **k))[1])
    out = interp.intervene(vlm, interp.AIF(max_ratio=0.5)).forward(b)
    assert len(calls) == 1 and out.diagnostics["aif"]["reuse"]  # the profiling pass only; the answer pass is HF
    with oracle(pristine, cls, **_aif_cuts(out, b.layout)) as model, torch.no_grad():
        want = model(**b.inputs).logits
    torch.testing.assert_close(out.logits, want, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(out.logits, ref.logits, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("opt_name", ["greedy", "beams_return"])
def test_a_cut_that_is_not_a_key_mask_stays_an_edit(monkeypatch, opt_name):
    # the question's own tokens are not every query after the prefix (the template after it, the generated
    # tokens): that cut stays at the mask builder while AIF's is lowered; both hold against the oracle. In a
    # left-padded batch whose rows' images end at different positions, AIF's cut is a key mask for the decode
    # steps only: it stays an edit at the prefill (test_toy_every_option checks those tokens).
    vlm, pristine, cls, b = one_row()
    opt = options("toy", opt_name, vlm, pristine, b)
    seen = _lowered(monkeypatch)
    torch.manual_seed(7)
    out = interp.intervene(vlm, interp.AIF(max_ratio=0.5), interp.EdgeMask("question", "vision")).generate(
        b, max_new_tokens=N, **opt)
    assert seen == [(2, 1, 0, True)]
    lay = run_layout(b, opt)
    cuts = _aif_cuts(out, lay)["cuts"][None] | pair_cut(lay.question, lay.vision)
    with oracle(pristine, cls, cuts={None: cuts}) as model:
        torch.manual_seed(7)
        ref = model.generate(**b.inputs, max_new_tokens=N, **opt)
    assert torch.equal(out.sequences, ref)
    seen.clear()
    _, _, _, padded, _ = setup("toy")
    interp.intervene(vlm, interp.AIF(max_ratio=0.5)).generate(padded, max_new_tokens=2)
    assert seen == [(1, 0, 1, True)]


@pytest.mark.parametrize("opt_name", ["return_dict", "beams_return"])
def test_a_full_and_a_decode_only_key_mask_together(monkeypatch, opt_name):
    # after AIF's prefix its cut holds every computed query; "generated → vision" holds only the decode steps'.
    # Both hide keys in the 2D mask; the prefill's builder gets them all back, so both are edits there. Scores
    # too: the toy's short answers survive a missing cut, its logits do not.
    vlm, pristine, cls, b = one_row()
    opt = {**options("toy", opt_name, vlm, pristine, b), "return_dict_in_generate": True, "output_scores": True}
    seen = _lowered(monkeypatch)
    torch.manual_seed(7)
    out = interp.intervene(vlm, interp.AIF(max_ratio=0.5), interp.EdgeMask("generated", "vision")).generate(
        b, max_new_tokens=N, **opt)
    assert seen == [(2, 0, 2, True)] and out.diagnostics["aif"]["reuse"]
    lay = run_layout(b, opt)
    cuts = _aif_cuts(out, lay)["cuts"][None] | pair_cut(lay.generated, lay.vision)
    with oracle(pristine, cls, cuts={None: cuts}) as model:
        torch.manual_seed(7)
        ref = model.generate(**b.inputs, max_new_tokens=N, **opt)
    assert torch.equal(out.sequences, ref.sequences)
    torch.testing.assert_close(torch.stack(out.scores), torch.stack(ref.scores), atol=1e-4, rtol=1e-4)
