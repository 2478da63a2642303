"""VIF as an intervention: pair scaling, maps on each family's vision tokens, determinism, identity at α = 0,
composition with edge masks, gradients through the injection, training (frozen base), checkpoints."""

import dataclasses
import json
import math
import os
import subprocess
import sys

import pytest
import torch

import interp
from interp.errors import CheckpointError, InputError, InterpWarning, NoEffectError
from interp.vif import checkpoint as ckpt
from interp.vif.gmm import gmm_entropy, grid_points, render_gmm, render_gmm_points
from interp.vif.intervention import PAPER_PAIRS, VIF, scale_pairs, vision_geometry
from interp.vif.trainer import TrainConfig, answer_ce, train

from conftest import QUESTIONS, batch, images, zoo

SMALL = dict(width=32, latent=8, n_queries=4, n_components=4)  # keeps the CVAE tiny (tests stay fast)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    # Tiny models gain nothing from threads, and on a shared 2-core machine OpenMP workers waiting on a busy
    # core turn a 70 ms training step into seconds.
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def small_vif(vlm, **fields):
    return VIF.build(vlm, seed=0, **SMALL, **fields)


def toy_samples(n=4):
    from interp.data.schema import Sample

    answers = ["red", "two", "yes", "circle"]
    return [Sample(im, q, a, family="f", id=str(i))
            for i, (im, q, a) in enumerate(zip(images(n), QUESTIONS[:n], answers[:n]))]


# ------------------------------------------------------------------------------------------ pairs


@pytest.mark.parametrize("L, expected", [
    (32, PAPER_PAIRS),
    (28, ((10, 22), (11, 24), (13, 25), (15, 27))),  # Qwen2.5-VL-7B
    (40, ((14, 31), (16, 34), (19, 36), (21, 39))),  # LLaVA-1.5-13B
    (16, ((5, 12), (6, 13), (7, 14), (8, 15))),
    (8, ((2, 6), (3, 7))),  # the toy model
    (4, ((1, 2), (1, 3))),  # zoo tiny: injection layers collide, first pair kept
    (2, ((0, 1),)),
])
def test_scale_pairs_table(L, expected):
    assert scale_pairs(L) == expected


def test_scale_pairs_rule_on_every_depth():
    """The rule on every depth from 2 to 80 layers against a plain reference (float rounding, halves up)."""
    for L in range(2, 81):
        pairs = scale_pairs(L)
        inj = [i for _, i in pairs]
        assert all(0 <= e < i < L for e, i in pairs) and len(set(inj)) == len(inj), L
        assert inj[-1] == L - 1, L  # the last paper layer maps to the last layer
        # plain reference: relative depth, halves up; keep the first pair per injection layer
        ref, seen = [], set()
        for pe, pi in PAPER_PAIRS:
            e, i = (math.floor(x * (L - 1) / 31 + 0.5) for x in (pe, pi))
            if e < i and i not in seen:
                ref.append((e, i))
                seen.add(i)
        assert pairs == tuple(ref), L


def test_scale_pairs_and_explicit_pairs_errors():
    with pytest.raises(InputError, match="at least 2"):
        scale_pairs(1)
    vlm = zoo("llava")
    with pytest.raises(InputError, match="extract < inject"):
        small_vif(vlm, pairs=((3, 1),))
    with pytest.raises(InputError, match="inject twice"):
        small_vif(vlm, pairs=((0, 3), (1, 3)))
    with pytest.raises(InputError, match="layer count"):
        small_vif(vlm, pairs=((1, 9),))
    assert small_vif(vlm, pairs=((0, 2),)).pairs == ((0, 2),)


# ------------------------------------------------------------------------------------------ maps


@pytest.mark.parametrize("normalize", ["paper", "reference", "none"])
@pytest.mark.parametrize("per_axis", [False, True])
def test_render_points_is_render_gmm_on_grid_points(normalize, per_axis):
    B, K, grid = 3, 4, (5, 7)
    c, w = torch.rand(B, K, 2), torch.softmax(torch.randn(B, K), -1)
    sg = 0.05 + 0.3 * torch.rand((B, K, 2) if per_axis else (B, K))
    pts = grid_points(grid).expand(B, -1, -1)
    valid = torch.ones(B, 35, dtype=torch.bool)
    got = render_gmm_points(c, sg, w, pts, valid, normalize=normalize)
    assert torch.equal(got, render_gmm(c, sg, w, grid, normalize=normalize))
    # invalid points (image-newline tokens) are 0 and the rest is the map over the valid points alone
    valid[:, 1::3] = False
    got = render_gmm_points(c, sg, w, pts, valid, normalize=normalize)
    assert (got[~valid] == 0).all()
    raw = render_gmm(c, sg, w, grid, normalize="none")
    for b in range(B):
        v = raw[b, valid[b]]
        exp = {"paper": v / v.sum(), "reference": torch.softmax(v, 0), "none": v}[normalize]
        torch.testing.assert_close(got[b, valid[b]], exp)


def test_entropy_gradient_is_finite_where_the_map_underflows():
    # a sharp component in a corner leaves most cells exactly 0.0 in float32 (this NaN'd a toy training run)
    c = torch.tensor([[[0.02, 0.02]]], requires_grad=True)
    s = torch.tensor([[0.035]], requires_grad=True)
    m = render_gmm(c, s, torch.ones(1, 1), (8, 8))
    assert (m == 0).sum() > 10
    gmm_entropy(m).sum().backward()
    assert torch.isfinite(c.grad).all() and torch.isfinite(s.grad).all() and s.grad.abs().sum() > 0


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_single_grid_map_is_render_gmm_on_the_layout_grid(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    vif = small_vif(vlm)
    d = interp.intervene(vlm, vif).forward(b).diagnostics["vif"]
    for m, mix in zip(d["maps"], d["mixtures"]):
        for r in range(2):
            grid = b.layout.images[r][0].main.grid
            n = grid[0] * grid[1]
            exp = render_gmm(mix.centers[r:r + 1], mix.sigmas[r:r + 1], mix.weights[r:r + 1], grid)[0]
            assert int(b.layout.num_vision[r]) == n
            torch.testing.assert_close(m[r, :n], exp, atol=1e-7, rtol=0)
            assert torch.isnan(m[r, n:]).all()  # padding of the shorter row


@pytest.mark.parametrize("arch", ["llava_next", "idefics3"])
def test_tiled_map_covers_every_piece_and_zeroes_newlines(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    d = interp.intervene(vlm, small_vif(vlm)).forward(b).diagnostics["vif"]
    points, on_piece, valid = vision_geometry(b.layout)
    for m, mix in zip(d["maps"], d["mixtures"]):
        torch.testing.assert_close(m.nansum(1), torch.ones(2), atol=1e-6, rtol=0)
        assert (m[valid & ~on_piece] == 0).all()
        assert (m[on_piece] > 0).all()
        for r in range(2):  # the main piece's share of the map has the shape render_gmm gives on its grid
            img = b.layout.images[r][0]
            vpos = b.layout.vision_positions()[r]
            idx = torch.searchsorted(vpos[vpos >= 0], img.main.positions)
            exp = render_gmm(mix.centers[r:r + 1], mix.sigmas[r:r + 1], mix.weights[r:r + 1], img.main.grid)[0]
            torch.testing.assert_close(m[r, idx] / m[r, idx].sum(), exp, atol=1e-6, rtol=0)
    if arch == "llava_next":
        assert (valid & ~on_piece).any()  # image-newline tokens exist and got 0


def test_reference_normalisation_is_nearly_uniform():
    vlm = zoo("llava")
    b = batch(vlm, 1)
    paper = interp.intervene(vlm, small_vif(vlm)).forward(b).diagnostics["vif"]["maps"][0][0]
    ref = interp.intervene(vlm, small_vif(vlm, normalize="reference")).forward(b).diagnostics["vif"]["maps"][0][0]
    torch.testing.assert_close(ref.sum(), torch.tensor(1.0))
    assert ref.max() / ref.min() <= torch.e + 1e-4
    assert paper.max() / paper.min() > ref.max() / ref.min()


# ------------------------------------------------------------------------------------------ behaviour


def test_prior_mean_is_deterministic_and_changes_logits():
    vlm = zoo("llava")
    b = batch(vlm, 2)
    vif = small_vif(vlm)
    o1 = interp.intervene(vlm, vif).forward(b)
    o2 = interp.intervene(vlm, vif).forward(b)
    assert torch.equal(o1.logits, o2.logits)
    for m1, m2 in zip(o1.diagnostics["vif"]["maps"], o2.diagnostics["vif"]["maps"]):
        torch.testing.assert_close(m1, m2, rtol=0, atol=0, equal_nan=True)
    base = interp.intervene(vlm).forward(b).logits
    assert (o1.logits - base).abs().max() > 1e-3
    assert o1.diagnostics["vif"]["applied"] == [(0, i) for _, i in vif.pairs]
    assert o1.diagnostics["vif"]["source"] == "prior"


def test_sampling_draws_from_the_prior():
    vlm = zoo("llava")
    b = batch(vlm, 1)
    vif = small_vif(vlm, sample=True)

    def first_map(seed, iv=vif):
        torch.manual_seed(seed)
        return interp.intervene(vlm, iv).forward(b).diagnostics["vif"]["maps"][0]  # [1, Nv], no padding

    a = first_map(1)
    assert torch.isfinite(a).all()
    assert torch.equal(first_map(1), a)  # the global RNG draws z
    assert (first_map(2) - a).abs().max() > 1e-6
    assert (first_map(1, vif.with_(sample=False)) - a).abs().max() > 1e-6  # not the prior mean


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_alpha_zero_is_the_plain_model_exactly(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    base = interp.intervene(vlm).forward(b).logits
    out = interp.intervene(vlm, small_vif(vlm, alpha=0.0)).forward(b)
    assert torch.equal(out.logits, base)
    assert out.diagnostics["vif"]["applied"] == [] and len(out.diagnostics["vif"]["maps"]) == 2


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
def test_composes_with_edge_mask_cut_edges_stay_zero(arch):
    vlm = zoo(arch)
    b = batch(vlm, 2)
    vif = small_vif(vlm)
    inj = [i for _, i in vif.pairs]
    # a cut over every row VIF injects into cancels it: refused, never run as a silent no-op
    with pytest.raises(NoEffectError, match="edge_mask cuts every one of them"):
        interp.intervene(vlm, interp.EdgeMask("after_image", "vision"), vif).forward(b)
    # a cut over some of them (the question rows): those edges stay exactly zero, the template rows get the map
    mask = interp.EdgeMask("question", "vision")
    with pytest.warns(InterpWarning, match="edge_mask cuts some of the entries vif injects into"):
        st = interp.capture(vlm, b, interventions=(mask, vif), layers=inj)
    assert (st.vision_max.nan_to_num() == 0).all() and (st.vision_ratio == 0).all()
    with pytest.warns(InterpWarning):
        kept = interp.intervene(vlm, mask, vif).forward(b).diagnostics["vif"]["kept"]
    assert set(kept) == set(inj) and all(k > 0 for k in kept.values())
    # without the mask the same layers do see the injected map
    st2 = interp.capture(vlm, b, interventions=(vif,), layers=inj)
    assert (st2.vision_ratio > 0).all()


def test_injection_raises_vision_attention_towards_the_map():
    vlm = zoo("llava")
    b = batch(vlm, 2)
    vif = small_vif(vlm, alpha=0.9)
    inj = [i for _, i in vif.pairs]
    plain = interp.capture(vlm, b, layers=inj)
    st = interp.capture(vlm, b, layers=inj, interventions=(vif,))
    assert (st.vision_ratio > plain.vision_ratio).all()


def test_queries_choose_the_rows_that_get_the_map():
    vlm = zoo("llava")
    b = batch(vlm, 2)
    base = interp.intervene(vlm).forward(b).logits
    got = interp.intervene(vlm, small_vif(vlm, queries="last")).forward(b).logits
    last = b.layout.last
    torch.testing.assert_close(got[~last & ~b.layout.pad], base[~last & ~b.layout.pad], atol=1e-5, rtol=0)
    assert (got[last] - base[last]).abs().amax(-1).min() > 1e-3


def test_decode_flag_controls_decode_steps():
    vlm = zoo("llava")
    b = batch(vlm, 2)
    vif = small_vif(vlm)
    inj = [i for _, i in vif.pairs]
    pre = interp.intervene(vlm, vif).generate(b, max_new_tokens=3).diagnostics["vif"]["applied"]
    assert pre == [(0, i) for i in inj]
    every = interp.intervene(vlm, vif.with_(decode=True)).generate(b, max_new_tokens=3).diagnostics["vif"]["applied"]
    assert every == [(s, i) for s in range(3) for i in inj]


def test_gradients_reach_the_cvae_through_the_injected_attention():
    vlm = zoo("llava")
    b = batch(vlm, 2, answers=["red", "two"])
    vif = small_vif(vlm)
    vif.module.zero_grad(set_to_none=True)
    out = interp.intervene(vlm, vif).forward(b, grad=True)  # inference mode: no KL, only the injection path
    answer_ce(out.logits, b).backward()
    enc = vif.module.prior
    # the prior mean path: every encoder weight but the log-variance head (unused when z = mean)
    grads = {n: p.grad for n, p in enc.named_parameters() if not n.startswith("logvar_head")}
    assert all(g is not None and torch.isfinite(g).all() for g in grads.values()), \
        [n for n, g in grads.items() if g is None]
    assert enc.logvar_head.weight.grad is None
    assert grads["vision_in.1.weight"].abs().sum() > 0 and grads["mean_head.weight"].abs().sum() > 0
    assert all(p.grad is None for p in vif.module.posterior.parameters())
    vlm.hf.zero_grad(set_to_none=True)
    vif.module.zero_grad(set_to_none=True)
    # training mode: the posterior's map is injected, CE alone reaches its encoder
    tv = vif.with_(training=True)
    out = interp.intervene(vlm, tv).forward(b, grad=True)
    d = out.diagnostics["vif"]
    assert d["source"] == "posterior" and d["kl"].requires_grad and d["kl"] > 0
    answer_ce(out.logits, b).backward()
    assert vif.module.posterior.mean_head.weight.grad.abs().sum() > 0
    vlm.hf.zero_grad(set_to_none=True)


def test_training_mode_needs_answers():
    vlm = zoo("llava")
    with pytest.raises(InputError, match="answers"):
        interp.intervene(vlm, small_vif(vlm, training=True)).forward(batch(vlm, 2))


def test_vif_without_module_says_how_to_get_one():
    vlm = zoo("llava")
    with pytest.raises(InputError, match="VIF.load"):
        interp.intervene(vlm, VIF()).forward(batch(vlm, 1))


# ------------------------------------------------------------------------------------------ training


def _snapshot(module):
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


def test_one_training_step_changes_only_the_vif(tmp_path):
    vlm = zoo("llava")
    vif = small_vif(vlm)
    base0, vif0 = _snapshot(vlm.hf), _snapshot(vif.module)
    flags = [p.requires_grad for p in vlm.hf.parameters()]
    res = train(vlm, toy_samples(), TrainConfig(steps=1, batch_size=2, warmup=1, save_every=0), out=tmp_path,
                vif=vif, progress=False)
    assert res.step == 1 and res.vif.training is False
    for k, v in vlm.hf.state_dict().items():
        assert torch.equal(v, base0[k]), k
    assert all(p.grad is None for p in vlm.hf.parameters())
    assert [p.requires_grad for p in vlm.hf.parameters()] == flags  # restored
    changed = [k for k, v in res.vif.module.state_dict().items() if not torch.equal(v, vif0[k])]
    assert any(k.startswith("prior.") for k in changed) and any(k.startswith("posterior.") for k in changed)
    rec = res.history[-1]
    assert rec["step"] == 1 and all(k in rec for k in ("loss", "ce", "kl", "entropy", "volume"))
    assert rec["loss"] == pytest.approx(rec["ce"] + 0.1 * rec["kl"] + 0.1 * (rec["entropy"] + rec["volume"]), rel=1e-5)
    assert (tmp_path / ckpt.WEIGHTS).exists() and (tmp_path / ckpt.STATE).exists()


def test_resume_continues_exactly(tmp_path):
    vlm = zoo("llava")
    cfg = TrainConfig(steps=3, batch_size=2, warmup=1, save_every=1)
    straight = train(vlm, toy_samples(), cfg, out=tmp_path / "a", vif=small_vif(vlm), progress=False)
    part = train(vlm, toy_samples(), dataclasses.replace(cfg, steps=2), out=tmp_path / "b", vif=small_vif(vlm),
                 progress=False)
    assert part.step == 2
    resumed = train(vlm, toy_samples(), cfg, out=tmp_path / "b", progress=False)
    assert resumed.step == 3 and len(resumed.history) == 1
    a, b = straight.vif.module.state_dict(), resumed.vif.module.state_dict()
    for k in a:
        torch.testing.assert_close(b[k], a[k], atol=1e-6, rtol=0)
    assert json.loads((tmp_path / "b" / ckpt.CONFIG).read_text())["step"] == 3


def test_train_with_periodic_evaluation():
    from interp.data.scoring import score

    vlm = zoo("llava")
    s = toy_samples()
    res = train(vlm, s, TrainConfig(steps=2, batch_size=2, warmup=1, eval_every=1, max_new_tokens=2),
                vif=small_vif(vlm), eval_samples=s[:2], progress=False)
    assert set(res.evals) == {"baseline", "0", "1", "2"}
    b = vlm.prepare([x.image for x in s[:2]], [x.question for x in s[:2]])

    def accuracy(*ivs):  # plain reference: greedy answers scored one by one
        texts = interp.intervene(vlm, *ivs).generate(b, max_new_tokens=2).texts
        ok = [float(score(x, t)) for x, t in zip(s[:2], texts)]
        return {"accuracy": sum(ok) / 2, "by_family": {"f": sum(ok) / 2}}

    assert res.evals["baseline"] == accuracy()  # the base model alone
    assert res.evals["0"] == accuracy(small_vif(vlm))  # the untrained VIF (same seed, same weights)
    assert res.evals["2"] == accuracy(res.vif)  # the trained one, prior mean
    assert [r["step"] for r in res.history if "eval" in r] == [0, 1, 2]


# ------------------------------------------------------------------------------------------ checkpoints


def test_save_load_gives_identical_outputs(tmp_path):
    vlm = zoo("llava")
    b = batch(vlm, 2)
    vif = small_vif(vlm, alpha=0.3, decode=True)
    vif.save(tmp_path / "ck", vlm)
    cfg = json.loads((tmp_path / "ck" / "vif.json").read_text())
    assert cfg["base_model"] == vlm.identity() and cfg["vif"]["pairs"] == [list(p) for p in vif.pairs]
    assert not any(p.name.startswith(".") for p in (tmp_path / "ck").iterdir())  # no temporaries left
    loaded = VIF.load(tmp_path / "ck", vlm)
    assert (loaded.alpha, loaded.decode, loaded.pairs, loaded.normalize) == (0.3, True, vif.pairs, "paper")
    assert repr(loaded) == repr(vif)  # the repr carries a weight fingerprint (evaluate's resume key)
    o1 = interp.intervene(vlm, vif).forward(b).logits
    o2 = interp.intervene(vlm, loaded).forward(b).logits
    assert torch.equal(o1, o2)
    assert interp.vif.load(tmp_path / "ck" / "vif.json", vlm, alpha=0.0).alpha == 0.0


def test_checkpoint_for_another_model_is_refused(tmp_path):
    llava, qwen = zoo("llava"), zoo("qwen2_vl")
    small_vif(llava).save(tmp_path, llava)
    with pytest.raises(CheckpointError, match="architecture"):
        VIF.load(tmp_path, qwen)
    cfg = json.loads((tmp_path / "vif.json").read_text())
    cfg["base_model"]["hidden_size"] = 4096
    (tmp_path / "vif.json").write_text(json.dumps(cfg))
    with pytest.raises(CheckpointError, match="hidden_size"):
        VIF.load(tmp_path, llava)


def test_broken_checkpoints_raise_checkpoint_error(tmp_path):
    vlm = zoo("llava")
    with pytest.raises(CheckpointError, match="vif.json is missing"):
        VIF.load(tmp_path, vlm)
    small_vif(vlm).save(tmp_path, vlm)
    (tmp_path / "vif.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CheckpointError, match="corrupt"):
        VIF.load(tmp_path, vlm)


# ------------------------------------------------------------------------------------------ public names


def test_public_names():
    import interp.vif as m

    assert interp.VIF is VIF and interp.vif is m and interp.vif.train is train
    assert interp.vif.render_gmm is render_gmm
    assert m.__file__.endswith(os.path.join("interp", "vif", "__init__.py"))  # a plain package, no alias


def test_cli_help_runs():
    env = dict(os.environ, PYTHONPATH=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, "-m", "interp.vif.train", "--help"], capture_output=True, text=True, env=env,
                       timeout=120)
    assert r.returncode == 0, r.stderr
    assert "--steps" in r.stdout and "--out" in r.stdout


def test_shipped_toy_vif_loads_and_runs():
    # the shipped toy VIF is the best variant of analyses.vif_ablation (its card says which): a joint one runs
    # on its own fine-tuned base, which load_vif / load_pair load; VIF.load refuses it on the unmodified toy model
    base = interp.toy.load()
    vlm, vif = interp.toy.load_vif()
    assert vlm is not base and isinstance(vif, VIF)
    with pytest.raises(CheckpointError, match="load_joint"):
        VIF.load(interp.toy.VIF_DIR, base)
    run_on, vif2 = interp.vif.load_pair(interp.toy.VIF_DIR, base)
    assert run_on is not base and torch.equal(run_on.hf.lm_head.weight, vlm.hf.lm_head.weight)
    assert vif.pairs == scale_pairs(vlm.num_layers) and vif.module.num_parameters() > 0
    s = interp.toy.dataset(4, seed=interp.toy.EVAL_SEED)
    b = vlm.prepare([x.image for x in s], [x.question for x in s])
    out = interp.intervene(vlm, vif).generate(b, max_new_tokens=2)
    assert out.texts == [x.answer for x in s] and len(out.diagnostics["vif"]["maps"]) == len(vif.pairs)
    # it is the ablation variant its card names, file for file: the same outputs (test_vif_joint pins those)
    card = json.loads(open(os.path.join(interp.toy.VIF_DIR, "model_card.json")).read())
    vlm_a, vif_a = interp.vif.load_joint(os.path.join(interp.toy.VIF_ABLATION_DIR, card["variant"]))
    assert torch.equal(interp.intervene(vlm, vif).forward(b).logits, interp.intervene(vlm_a, vif_a).forward(b).logits)
    with pytest.raises(InputError, match="no shipped toy VIF variant 'nope'"):
        interp.toy.load_vif("nope")
    fvlm, fixed = interp.toy.load_vif("uniform_map")
    assert type(fixed).__name__ == "FixedMap" and fvlm is not base
    with pytest.raises(CheckpointError):
        VIF.load(interp.toy.VIF_DIR, zoo("llava"))
