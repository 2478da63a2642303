"""Bad input never gives a silent wrong answer (issue 13): tables of inputs, each with the exception it raises
and a fragment of the message, or the lenient reading it gets. Every error is an `interp.InterpError` whose
message names the thing and never dumps a tensor."""

import os
import tempfile
import warnings

import pytest
import torch
from PIL import Image

import interp
from interp.errors import CheckpointError, InputError, InterpWarning, NoEffectError
from interp.vif.cvae import VIFConfig

from conftest import zoo

I, E = interp.InjectAttention, interp.EdgeMask
NV = 64  # vision tokens per row of the toy model
# the VIF trained on the unmodified shipped toy model (the shipped interp/vif/checkpoints/toy is a joint one: own base)
FROZEN_VIF = "interp/vif/checkpoints/ablation/vif_frozen"


@pytest.fixture(scope="module")
def toy():
    vlm = interp.toy.load()
    s = interp.toy.dataset(2, seed=1)
    return vlm, vlm.prepare(images=[x.image for x in s], questions=[x.question for x in s])


def w(rows=2, n=NV, value=1.0 / NV):
    return torch.full((rows, n), value)


def run(*ivs):
    return lambda vlm, b: interp.intervene(vlm, *ivs).forward(b)


def _other_base(vlm):
    """A model of the toy's architecture and size with other (random) weights."""
    from transformers import LlavaForConditionalGeneration

    torch.manual_seed(1)
    hf = LlavaForConditionalGeneration(vlm.hf.config).eval()
    return interp.load(hf, processor=vlm.processor, attn_implementation="sdpa", check=False)


def _ragged_keys(lay):
    keys = lay.vision.clone()
    keys[1, lay.vision[1].nonzero()[:8, 0]] = False  # row 1 selects 8 keys fewer than row 0
    return keys


def _empty_dir():
    return tempfile.mkdtemp(prefix="interp-empty-")


def _question_weights(lay):
    n = lay.question.sum(1)  # [B]
    return (torch.arange(int(n.max()))[None] < n[:, None]).float()


# ------------------------------------------------------------------------- refused when built (no model needed)

BUILT = [
    # issue table
    ("inject negative weights", lambda: I((2,), "question", "vision", -w()), InputError, "must be non-negative"),
    ("inject alpha > 1", lambda: I((2,), "question", "vision", w(), alpha=1.5), InputError, r"alpha must be a number in \[0, 1\]"),
    ("inject alpha < 0", lambda: I((2,), "question", "vision", w(), alpha=-0.1), InputError, r"in \[0, 1\]"),
    ("inject additive alpha < 0", lambda: I((2,), "question", "vision", w(), alpha=-1, mode="additive"), InputError, "≥ 0"),
    ("inject NaN weights", lambda: I((2,), "question", "vision", w(value=float("nan"))), InputError, "NaN or inf"),
    ("inject weights as a list", lambda: I((2,), "question", "vision", [[0.5, 0.5]]), InputError, "got list; use torch.tensor"),
    ("inject 1-D weights", lambda: I((2,), "question", "vision", torch.ones(NV)), InputError, r"got shape \(64,\)"),
    ("AIF(layers=())", lambda: interp.AIF(layers=()), InputError, "layers is empty"),
    ("EdgeMask('txt', ...)", lambda: E("txt", "vision"), InputError, "unknown token group 'txt'; did you mean 'text'"),
    ("float tensor as a group", lambda: E(torch.ones(2, 76), "vision"), InputError, r"must be bool \[B, T\], got float32 \[2, 76\]"),
    # the same checks elsewhere
    ("EdgeMask keys 'image'", lambda: E("text", "image"), InputError, "edge_mask keys: unknown token group 'image'"),
    ("EdgeMask a group of type int", lambda: E(3, "vision"), InputError, "got int"),
    ("EdgeMask 3-D group", lambda: E(torch.ones(2, 3, 4, dtype=torch.bool), "vision"), InputError, r"bool \[2, 3, 4\]"),
    ("EdgeMask layers='3'", lambda: E("text", "vision", layers="3"), InputError, "layers must be an int or a tuple"),
    ("EdgeMask layers=(1.5,)", lambda: E("text", "vision", layers=(1.5,)), InputError, "layer 1.5 is not an int"),
    ("EdgeMask layers=()", lambda: E("text", "vision", layers=()), InputError, "use None for all layers"),
    ("inject no layers", lambda: I((), "question", "vision", w()), InputError, "at least one layer"),
    ("inject no weights", lambda: I((2,), "question", "vision"), InputError, "needs weights"),
    ("inject int weights", lambda: I((2,), "question", "vision", torch.ones(2, NV, dtype=torch.long)), InputError, "float tensor, got dtype torch.int64"),
    ("inject mode", lambda: I((2,), "question", "vision", w(), mode="mix"), InputError, "mode must be one of"),
    ("inject queries 'questions'", lambda: I((2,), "questions", "vision", w()), InputError, "did you mean 'question'"),
    ("capture heads", lambda: interp.Capture(heads="sum"), InputError, "capture heads must be one of"),
    ("capture queries 'txt'", lambda: interp.Capture(queries="txt"), InputError, "capture queries: unknown token group"),
    ("capture layers=()", lambda: interp.Capture(layers=()), InputError, "layers is empty"),
    ("Patch site", lambda: interp.Patch("resid_post", (1,)), InputError, "site must be one of"),
    ("Patch layers=()", lambda: interp.Patch("resid", ()), InputError, "layers is empty"),
    ("AIF heads", lambda: interp.AIF(heads="sum"), InputError, "heads must be 'mean' or 'max'"),
    ("AIF criterion", lambda: interp.AIF(criterion="best"), InputError, "criterion must be 'paper' or 'normalized'"),
    ("AIF queries 'txt'", lambda: interp.AIF(queries="txt"), InputError, "AIF queries: unknown token group"),
    ("AIF ratio 1.5", lambda: interp.AIF(ratios=1.5), InputError, "strictly between 0 and 1"),
    ("AIF ratios '0.5'", lambda: interp.AIF(ratios="0.5"), InputError, "a number or a tuple of numbers"),
    ("AIF max_ratio '0.5'", lambda: interp.AIF(max_ratio="0.5"), InputError, "max_ratio must be a number"),
    ("AIF max_ratio 2", lambda: interp.AIF(max_ratio=2), InputError, r"must lie in \(0, 1\]"),
    ("VIF alpha 2", lambda: interp.VIF(alpha=2), InputError, r"VIF alpha must be a number in \[0, 1\]"),
    ("VIF alpha 'x'", lambda: interp.VIF(alpha="x"), InputError, "got 'x'"),
    ("VIF normalize", lambda: interp.VIF(normalize="softmax"), InputError, "normalize must be one of"),
    ("VIF queries 'txt'", lambda: interp.VIF(queries="txt"), InputError, "vif queries: unknown token group"),
    ("VIF module", lambda: interp.VIF(module=torch.nn.Linear(2, 2)), InputError, "module must be an interp CVAE"),
    ("VIF pairs inverted", lambda: interp.VIF(pairs=((5, 2),)), InputError, "extract < inject"),
    ("VIF pairs junk", lambda: interp.VIF(pairs="ab"), InputError, r"pairs must be \(\(extract, inject\), \.\.\.\)"),
    ("VIF load no checkpoint", lambda: interp.VIF.load(_empty_dir(), None), CheckpointError, "vif.json is missing"),
    ("load empty directory", lambda: interp.load(_empty_dir()), CheckpointError, "missing: config.json; model weights"),
    ("load dtype 'int8'", lambda: interp.load(_empty_dir(), dtype="int8"), InputError, "dtype must be a floating torch dtype"),
    ("load dtype torch.int8", lambda: interp.load(_empty_dir(), dtype=torch.int8), InputError, "got torch.int8"),
    ("load device 'gpu'", lambda: interp.load(_empty_dir(), device="gpu"), InputError, "device must be a torch device"),
    ("load attn 'flash'", lambda: interp.load(_empty_dir(), attn_implementation="flash"), InputError, "attn_implementation must be one of"),
    ("load source 42", lambda: interp.load(42), InputError, "source must be a hub id, a directory"),
    ("load a file", lambda: interp.load(os.path.join(interp.toy.CHECKPOINT_DIR, "config.json")), InputError, "not a local directory"),
    ("load a foreign config", lambda: interp.load(_foreign_dir()), CheckpointError, "config.json is not a transformers config"),
]


def _foreign_dir():
    d = _empty_dir()
    for f in ("config.json", "model.safetensors", "preprocessor_config.json", "tokenizer.json"):
        with open(os.path.join(d, f), "w") as fh:
            fh.write('{"model_type": "no-such-model"}' if f == "config.json" else "{}")
    return d


def _check(e, exc, match):
    assert isinstance(e, interp.InterpError) and isinstance(e, exc)
    assert "tensor([" not in str(e), "a message must name a shape or dtype, never dump a tensor"


@pytest.mark.parametrize("make, exc, match", [r[1:] for r in BUILT], ids=[r[0] for r in BUILT])
def test_refused_when_built(make, exc, match):
    with pytest.raises(exc, match=match) as e:
        make()
    _check(e.value, exc, match)


# ------------------------------------------------------------------------- refused when the batch is known

def _float_group_run(vlm, b):
    g = b.layout.vision.float()
    return interp.intervene(vlm, E(lambda lay: g, "vision")).forward(b)  # a callable's result: seen at run time


def _other_model_batch(vlm, b):
    return interp.intervene(zoo("llava")).forward(b)


def _attention_changed(vlm, b, monkeypatch):
    monkeypatch.setattr(type(vlm), "attn_implementation", property(lambda self: "flash_attention_2"))
    return run(E("text", "vision"))(vlm, b)


BATCH = [
    # issue table
    ("inject weights [B, Nv+7]", run(I((2,), "question", "vision", w(n=NV + 7))), InputError, "71 entries per row but the key group 'vision' selects 64"),
    ("inject 3 rows for a batch of 2", run(I((2,), "question", "vision", w(rows=3))), InputError, "3 rows but the batch has 2"),
    ("inject [1, Nv] for B=2", run(I((2,), "question", "vision", w(rows=1))), InputError, "1 rows but the batch has 2"),
    ("EdgeMask('vision', 'question')", run(E("vision", "question")), NoEffectError, "selects no edge"),
    ("README intervene(vlm, blind, inj)", run(E("text", "vision"), I((2, 3), "question", "vision", w())), NoEffectError,
     "edge_mask cuts every one of them"),
    ("float tensor from a group callable", _float_group_run, InputError, "must be a bool tensor of shape"),
    ("a Batch from another model", _other_model_batch, InputError, "prepared by .* but is run on"),
    # the same checks elsewhere
    ("not a Batch", lambda vlm, b: interp.intervene(vlm).forward(dict(b.inputs)), InputError, "expected an interp Batch, got dict"),
    ("a Batch on another device", lambda vlm, b: interp.intervene(vlm).forward(b.to("meta")), InputError, "the batch is on meta"),
    ("not an intervention", lambda vlm, b: interp.intervene(vlm, "blind").forward(b), InputError, "is not an interp intervention"),
    ("two interventions, one name", run(E("text", "vision"), E("question", "vision")), InputError, "share the diagnostics name"),
    ("EdgeMask layer 9 of 8", run(E("text", "vision", layers=(9,))), InputError, r"out of range; the model has 8 layers \(0..7\)"),
    ("EdgeMask('all', 'all')", run(E("all", "all")), InputError, "no visible key"),
    ("EdgeMask('answer', ...) without answers", run(E("answer", "vision")), NoEffectError, "selects no edge"),
    ("a bool group of the wrong shape", run(E(torch.ones(2, 5, dtype=torch.bool), "vision")), InputError, r"shape \(2, 76\)"),
    ("inject no causal entry", lambda vlm, b: run(I((2,), "vision", "question", _question_weights(b.layout)))(vlm, b),
     NoEffectError, "no causal \\(query, key\\) entry"),
    ("inject [B, Q, Nk] with the wrong Q", run(I((2,), "question", "vision", torch.ones(2, 5, NV) / NV)), InputError, "need Q = 76"),
    ("inject callable returns negative", run(I((2,), "question", "vision", lambda ctx, call: -w())), InputError, "non-negative"),
    ("inject callable returns a list", run(I((2,), "question", "vision", lambda ctx, call: [1.0])), InputError, "callable returned list"),
    ("inject callable returns [2, 3]", run(I((2,), "question", "vision", lambda ctx, call: w(n=3))), InputError, "3 entries per row"),
    ("generate max_new_tokens=0", lambda vlm, b: interp.intervene(vlm).generate(b, max_new_tokens=0), InputError, "max_new_tokens must be an int"),
    ("capture layers=99", lambda vlm, b: interp.capture(vlm, b, layers=99), InputError, "out of range"),
    ("capture a float query tensor", lambda vlm, b: interp.capture(vlm, b, queries=b.layout.question.float()), InputError, "got float32"),
    ("capture queries select nothing", lambda vlm, b: interp.capture(vlm, b, queries="answer"), NoEffectError, "selects no token"),
    ("capture a Batch from another model", lambda vlm, b: interp.capture(zoo("llava"), b), InputError, "prepared by"),
    ("Patch without a source", run(interp.Patch("resid", (1,))), InputError, "Patch needs a source"),
    ("Patch positions 'txt'", lambda vlm, b: run(interp.Patch("resid", (1,), "txt", b))(vlm, b), InputError, "unknown token group 'txt'"),
    ("Patch positions select nothing", lambda vlm, b: run(interp.Patch("resid", (1,), "answer", b))(vlm, b), InputError, "select no token"),
    ("Patch source of another shape", lambda vlm, b: run(interp.Patch("resid", (1,), "all", _one_row(vlm, b)))(vlm, b), InputError,
     "source batch shape"),
    ("Patch source missing a layer", run(interp.Patch("resid", (1,), "all", {2: torch.zeros(2, 76, 128)})), InputError, "no activations for layers \\[1\\]"),
    ("Patch source activations [2, 3, 128]", run(interp.Patch("resid", (1,), "all", {1: torch.zeros(2, 3, 128)})), InputError, r"\(2, 3, 128\) vs run"),
    ("VIF without a module", run(interp.VIF()), InputError, "VIF has no CVAE"),
    ("VIF for another hidden size", lambda vlm, b: run(interp.VIF(module=_cvae(64)))(vlm, b), InputError, "reads hidden size 64"),
    ("VIF pair beyond the model", lambda vlm, b: run(interp.VIF(module=_cvae(128), pairs=((2, 9),)))(vlm, b), InputError, "inject < 8"),
    ("VIF cancelled by a mask", lambda vlm, b: run(E("after_image", "vision"), interp.VIF.load(FROZEN_VIF, vlm))(vlm, b),
     NoEffectError, "edge_mask cuts every one of them"),
    ("VIF.load onto another base of the same shape", lambda vlm, b: interp.VIF.load(FROZEN_VIF, _other_base(vlm)), CheckpointError,
     "other base weights.*allow_other_base=True"),
    ("VIF.load onto another architecture", lambda vlm, b: interp.VIF.load(FROZEN_VIF, zoo("qwen2_vl")), CheckpointError, "was trained for"),
    ("evaluate batch_size=0", lambda vlm, b: interp.evaluate(vlm, [], batch_size=0), InputError, "batch_size must be an int >= 1"),
    ("evaluate batch_size='8'", lambda vlm, b: interp.evaluate(vlm, [], batch_size="8"), InputError, "got '8'"),
    ("evaluate max_new_tokens=0", lambda vlm, b: interp.evaluate(vlm, [], max_new_tokens=0), InputError, "max_new_tokens must be an int"),
    ("evaluate samples=42", lambda vlm, b: interp.evaluate(vlm, 42), InputError, "data spec must be"),
    ("evaluate a non-intervention", lambda vlm, b: interp.evaluate(vlm, interp.toy.dataset(1, seed=0), "blind", progress=False), InputError,
     "is not an interp intervention"),
    ("prepare an image the processor rejects", lambda vlm, b: zoo("qwen2_vl").prepare(images=[Image.new("RGB", (1, 300))], questions=["what ?"]),
     InputError, "Qwen2VLProcessor rejected the inputs .*aspect ratio.*resize, crop or pad"),
    ("prepare a tensor image", lambda vlm, b: vlm.prepare(images=[torch.zeros(3, 8, 8)], questions=["what ?"]), InputError, "must be PIL images, got Tensor"),
    ("prepare 2 images for 1 question", lambda vlm, b: vlm.prepare(images=list(b.images[0]) * 2, questions=["what ?"]), InputError, "2 image entries for 1"),
]


def _one_row(vlm, b):
    return vlm.prepare(images=[b.images[0][0]], questions=[b.questions[0]])


def _cvae(d):
    from interp.vif.cvae import CVAE

    return CVAE(VIFConfig(d_model=d, width=16, latent=4, n_heads=2, n_queries=2, n_components=2))


@pytest.mark.parametrize("call, exc, match", [r[1:] for r in BATCH], ids=[r[0] for r in BATCH])
def test_refused_when_run(toy, call, exc, match):
    vlm, b = toy
    with pytest.raises(exc, match=match) as e:
        call(vlm, b)
    _check(e.value, exc, match)


def test_refused_when_the_attention_implementation_takes_no_mask(toy, monkeypatch):
    vlm, b = toy
    with pytest.raises(InputError, match="attn_implementation='flash_attention_2'.*set_attn_implementation"):
        _attention_changed(vlm, b, monkeypatch)


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
def test_load_refuses_a_gpu_it_does_not_have():
    with pytest.raises(InputError, match="sees no CUDA GPU; use device='cpu'"):
        interp.load(_empty_dir(), device="cuda")


# ------------------------------------------------------------------------- lenient readings

LENIENT = [
    ("layers=3 is one layer", lambda vlm, b: E("text", "vision", layers=3).layers, (3,)),
    ("negative layers count from the end", lambda vlm, b: run(E("text", "vision", layers=-1))(vlm, b).diagnostics["edge_mask"]["layers"], 1),
    ("AIF(ratios=0.5) is one ratio", lambda vlm, b: interp.AIF(ratios=0.5).ratios, (0.5,)),
    ("AIF(layers=3)", lambda vlm, b: interp.AIF(layers=3).layers, (3,)),
    ("capture(layers=3)", lambda vlm, b: interp.capture(vlm, b, layers=3).layers, [3]),
    ("Patch(layers=1)", lambda vlm, b: interp.Patch("resid", 1, "all", b).layers, (1,)),
    ("load(dtype='bfloat16')", lambda vlm, b: interp.toy.load(dtype="bfloat16").dtype, torch.bfloat16),
    ("load(dtype='torch.float16')", lambda vlm, b: interp.toy.load(dtype="torch.float16", check=False).dtype, torch.float16),
    ("load(dtype='auto') keeps the saved dtype", lambda vlm, b: interp.toy.load(dtype="auto", check=False).dtype, torch.float32),
    ("VIF.load onto another base with allow_other_base=True",
     lambda vlm, b: interp.VIF.load(FROZEN_VIF, _other_base(vlm), allow_other_base=True).pairs, ((2, 6), (3, 7))),
    ("VIF.load onto the toy cast to bfloat16", lambda vlm, b: interp.VIF.load(FROZEN_VIF, interp.toy.load(dtype="bfloat16", check=False)).pairs,
     ((2, 6), (3, 7))),
]


@pytest.mark.parametrize("call, expected", [r[1:] for r in LENIENT], ids=[r[0] for r in LENIENT])
def test_lenient_reading(toy, call, expected):
    vlm, b = toy
    with warnings.catch_warnings():
        warnings.simplefilter("error", InterpWarning)
        assert call(vlm, b) == expected


def test_the_shipped_vif_records_its_base_weights(toy):
    vlm, _ = toy
    from interp.vif.checkpoint import read_config, same_weights

    saved = read_config(FROZEN_VIF)["base_weights"]
    assert same_weights(saved, vlm.weights_fingerprint())
    assert not same_weights(saved, _other_base(vlm).weights_fingerprint())


def test_a_checkpoint_without_a_fingerprint_warns(toy, tmp_path):
    import json
    import shutil

    vlm, _ = toy
    shutil.copytree(FROZEN_VIF, tmp_path / "vif")
    cfg = json.loads((tmp_path / "vif" / "vif.json").read_text())
    del cfg["base_weights"]
    (tmp_path / "vif" / "vif.json").write_text(json.dumps(cfg))
    with pytest.warns(InterpWarning, match="records no fingerprint of its base weights"):
        interp.VIF.load(tmp_path / "vif", vlm)


# ------------------------------------------------------------------------- warnings: legitimate, maybe not meant

WARNED = [
    ("an injection partly cut by a mask", run(E("question", "vision", layers=(2,)), I((2, 3), "after_image", "vision", w())),
     "edge_mask cuts some of the entries inject injects into at layers 2, 3"),
    ("an injection partly cut by AIF", run(interp.AIF(max_ratio=0.5), I((1,), "question", "vision", w())),
     "aif cuts some of the entries inject injects into at layer 1"),
    ("inject weights past a shorter row's keys", lambda vlm, b: run(I((2,), "question", _ragged_keys(b.layout), w()))(vlm, b),
     r"rows \[1\] select fewer .* keys \(\[56\]\) than the weights have entries \(64\).*pad shorter rows with 0"),
    ("patch_sweep on a pair predicting the same token", lambda vlm, b: interp.patch_sweep(vlm, b, b, layers=[1]),
     "clean and corrupt predict the same token"),
]


@pytest.mark.parametrize("call, match", [r[1:] for r in WARNED], ids=[r[0] for r in WARNED])
def test_warned(toy, call, match):
    vlm, b = toy
    with pytest.warns(InterpWarning, match=match):
        call(vlm, b)


def test_a_partly_cancelled_injection_warns_and_says_what_survived(toy):
    vlm, b = toy
    inj = I((2, 3), "after_image", "vision", w())
    with pytest.warns(InterpWarning, match="edge_mask cuts some of the entries inject injects into"):
        out = interp.intervene(vlm, E("question", "vision", layers=(2,)), inj).forward(b)
    d = out.diagnostics["inject"]
    n_q, n_a = int(b.layout.question.sum()), int(b.layout.after_image.sum())
    assert d["entries"] == {2: n_a * NV, 3: n_a * NV}
    assert d["kept"] == {2: (n_a - n_q) * NV, 3: n_a * NV} and d["visible"] == d["kept"]


def test_an_uncancelled_injection_reports_every_entry_written(toy):
    vlm, b = toy
    with warnings.catch_warnings():
        warnings.simplefilter("error", InterpWarning)
        d = interp.intervene(vlm, I((2,), "question", "vision", w())).forward(b).diagnostics["inject"]
    assert d["entries"] == d["kept"] == d["visible"] == {2: int(b.layout.question.sum()) * NV}


def test_every_exception_class_is_an_interp_error():
    from interp import errors

    classes = [v for v in vars(errors).values()
               if isinstance(v, type) and issubclass(v, Exception) and not issubclass(v, Warning)]
    assert len(classes) >= 5 and all(issubclass(c, interp.InterpError) for c in classes)
    assert issubclass(InterpWarning, UserWarning) and interp.errors is errors


def test_cut_checks_match_a_brute_force_over_every_pair():
    # check_cuts and coverage group query rows by which cuts select them (linear in T); the reference here
    # builds every (query, key) pair: [B, S, S]
    from interp.engine.core import Cut
    from interp.engine.plan import check_cuts, coverage

    vlm = zoo("llava")
    from conftest import batch

    lay = batch(vlm, 2).layout  # left-padded second row
    B, S = lay.shape
    ok = ~lay.pad
    causal = torch.ones(S, S, dtype=torch.bool).tril()
    g = torch.Generator().manual_seed(0)
    raised = kept_any = 0
    for trial in range(60):
        E = 1 + trial % 3
        dens = 0.2 + 0.7 * torch.rand(E, generator=g)
        cuts = [Cut(torch.rand(B, S, generator=g) < dens[e], torch.rand(B, S, generator=g) < dens[e]) for e in range(E)]
        pairs = ok[:, :, None] & ok[:, None, :] & causal  # [B, Q, K]
        cut = torch.zeros(B, S, S, dtype=torch.bool)
        for c in cuts:
            cut |= c.queries[:, :, None] & c.keys[:, None, :]
        selected = torch.stack([c.queries for c in cuts]).any(0) & ok
        empty = (selected & ~(pairs & ~cut).any(-1)).any()
        try:
            check_cuts(lay, cuts)
            assert not empty, trial
        except InputError as e:
            assert empty and "no visible key" in str(e), trial
            raised += 1
        q, k = torch.rand(B, S, generator=g) < 0.5, torch.rand(B, S, generator=g) < 0.5
        target = pairs & q[:, :, None] & k[:, None, :]
        n, kept, per_cut = coverage(lay, q, k, cuts)
        assert n == int(target.sum()) and kept == int((target & ~cut).sum())
        assert per_cut == [int((target & c.queries[:, :, None] & c.keys[:, None, :]).sum()) for c in cuts]
        kept_any += 0 < kept < n
    assert raised and raised < 60 and kept_any  # both outcomes occurred
