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
        assert out.diagnostics["aif"]["kept"].shape[0] == ref_seq.shape[0] // (N and 1) or True
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
