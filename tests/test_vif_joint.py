"""VIF trained as its reference trains it: joint fine-tuning of the base (and only the modules named), the
controls without a CVAE (fine-tune only, uniform map, oracle map), posterior-collapse diagnostics, options
that are off by default, and joint checkpoints (base weights beside the CVAE; `VIF.load` refuses other weights)."""

import dataclasses
import json
import math
import os
import warnings

import pytest
import torch

import interp
from interp.errors import CheckpointError, InputError
from interp.vif import checkpoint as ckpt
from interp.vif.diagnostics import (CollapseWatch, PosteriorCollapseWarning, evidence_mask, free_bits_kl,
                                            kl_per_dim, map_stats)
from interp.vif.fixed import FixedMap
from interp.vif.intervention import VIF
from interp.vif.joint import BASE_CONFIG, BASE_WEIGHTS, apply_base, read_base, resolve_modules
from interp.vif.trainer import TrainConfig, train

from test_vif import _one_thread  # noqa: F401  (autouse: one thread, as in test_vif)

SMALL = dict(width=32, latent=8, n_queries=4, n_components=4)
STEP = dict(batch_size=2, warmup=1, save_every=0)




def fresh():
    """A fresh tiny LLaVA (joint training changes it: never the cached one other tests share)."""
    return interp.zoo.tiny("llava")


def samples(n=4):
    return interp.toy.dataset(n, seed=interp.toy.EVAL_SEED)  # toy scenes: they carry evidence boxes


def snap(vlm):
    return {k: v.detach().clone() for k, v in vlm.hf.named_parameters()}


def changed(vlm, before):
    return {k for k, v in vlm.hf.named_parameters() if not torch.equal(v, before[k])}


# ------------------------------------------------------------------------------------------ frozen vs joint


def test_frozen_changes_no_base_parameter():
    vlm = fresh()
    before = snap(vlm)
    res = train(vlm, samples(), TrainConfig(steps=2, **STEP), vif=VIF.build(vlm, **SMALL), progress=False)
    assert changed(vlm, before) == set() and res.base == ()
    assert all(p.grad is None for p in vlm.hf.parameters())


def test_joint_changes_the_decoder_and_projector_only():
    vlm = fresh()
    before = snap(vlm)
    flags = [p.requires_grad for p in vlm.hf.parameters()]
    res = train(vlm, samples(), TrainConfig(steps=2, base="joint", base_lr=1e-2, **STEP),
                vif=VIF.build(vlm, **SMALL), progress=False)
    assert res.base == ("model.language_model", "lm_head", "model.multi_modal_projector")
    got = changed(vlm, before)
    assert any(k.startswith("model.language_model.") for k in got) and "lm_head.weight" in got
    assert any(k.startswith("model.multi_modal_projector.") for k in got)
    assert not any(k.startswith("model.vision_tower.") for k in got)  # frozen, as the reference keeps CLIP
    assert [p.requires_grad for p in vlm.hf.parameters()] == flags
    assert all(p.grad is None for p in vlm.hf.parameters())


def test_joint_vision_tower_trains_when_asked():
    vlm = fresh()
    before = snap(vlm)
    train(vlm, samples(), TrainConfig(steps=1, base="joint", base_lr=1e-2, train_modules=("vision",), **STEP),
          vif=VIF.build(vlm, **SMALL), progress=False)
    got = changed(vlm, before)
    assert got and all(k.startswith("model.vision_tower.") for k in got)


def test_joint_lets_the_cvae_terms_reach_the_base():
    # VIF.detach=False (the trainer's choice in joint mode): KL alone has a gradient into the decoder
    vlm = fresh()
    b = vlm.prepare([s.image for s in samples(2)], [s.question for s in samples(2)], answers=["red", "two"])
    vif = VIF.build(vlm, **SMALL)
    for detach, reaches in ((True, False), (False, True)):
        vlm.hf.zero_grad(set_to_none=True)
        d = interp.intervene(vlm, vif.with_(training=True, detach=detach)).forward(b, grad=True).diagnostics["vif"]
        d["kl"].backward()
        g = vlm.hf.model.language_model.layers[0].mlp.down_proj.weight.grad
        assert (g is not None and g.abs().sum() > 0) == reaches
    vlm.hf.zero_grad(set_to_none=True)


@pytest.mark.parametrize("focus", ["none", "uniform", "oracle"])
def test_controls_fine_tune_without_a_cvae(focus, tmp_path):
    vlm = fresh()
    before = snap(vlm)
    res = train(vlm, samples(), TrainConfig(steps=2, base="joint", focus=focus, **STEP), out=tmp_path,
                progress=False)
    assert res.vif is None and changed(vlm, before)
    rec = res.history[-1]
    assert rec["loss"] == rec["ce"]
    if focus == "none":
        assert res.intervention is None and "map_mass" not in rec
    else:
        assert isinstance(res.intervention, FixedMap)
        assert rec["map_mass"] == pytest.approx(1.0 if focus == "oracle" else rec["box_area"], abs=1e-6)
    info = read_base(tmp_path)
    assert info["focus"] == focus and (tmp_path / BASE_WEIGHTS).exists() and not (tmp_path / ckpt.CONFIG).exists()


def test_controls_need_joint_and_modules_must_exist():
    with pytest.raises(InputError, match="base='joint'"):
        TrainConfig(focus="none")
    with pytest.raises(InputError, match="no module"):
        resolve_modules(fresh(), ("nope",))


# ------------------------------------------------------------------------------------------ diagnostics


def _evidence(layout, chunk):
    """Plain loop: [B, Nv] bool, the vision tokens (in sequence order) whose patch overlaps an evidence box."""
    vpos = layout.vision_positions()
    ev = torch.zeros(vpos.shape, dtype=torch.bool)
    for r, sample in enumerate(chunk):
        order = {int(p): j for j, p in enumerate(vpos[r]) if p >= 0}
        for img in layout.images[r]:
            for piece in img.pieces:
                for pos, (x0, y0, x1, y1) in zip(piece.positions.tolist(), piece.boxes.tolist()):
                    ev[r, order[pos]] = any(x0 < bx1 and bx0 < x1 and y0 < by1 and by0 < y1
                                            for bx0, by0, bx1, by1 in sample.boxes)
    return ev


def test_every_step_logs_the_collapse_diagnostics():
    # lr = 0 leaves the CVAE as built, so each step's record is recomputed from that step's batch alone
    vlm = fresh()
    chunks = [samples(2), interp.toy.dataset(2, seed=interp.toy.EVAL_SEED + 1)]
    vif = VIF.build(vlm, **SMALL)
    cfg = TrainConfig(steps=2, lr=0.0, **STEP)
    res = train(vlm, lambda step, bs: chunks[step], cfg, vif=vif, progress=False)
    records = [r for r in res.history if "loss" in r]
    assert [r["step"] for r in records] == [1, 2]
    for step, (rec, chunk) in enumerate(zip(records, chunks)):
        b = vlm.prepare([x.image for x in chunk], [x.question for x in chunk], answers=[x.answer for x in chunk])
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(cfg.seed * 1_000_003 + 7919 * step + 1)  # the trainer's posterior ε for this step
            d = interp.intervene(vlm, vif.with_(training=True)).forward(b).diagnostics["vif"]
        ev = _evidence(b.layout, chunk)
        maps = [m.nan_to_num() for m in d["maps"]]  # per pair [B, Nv]
        mass = torch.stack([(m * ev).sum(1) for m in maps]).mean(0)  # [B], mean over pairs
        ent = torch.stack([-(m * m.clamp(min=1e-30).log()).sum(1) for m in maps]).mean(0)
        area = ev.sum(1) / b.layout.num_vision
        assert rec["map_mass"] == pytest.approx(float(mass.mean()), rel=1e-5)
        assert rec["map_entropy"] == pytest.approx(float(ent.mean()), rel=1e-5)
        assert rec["box_area"] == pytest.approx(float(area.mean()), rel=1e-6) and 0 < rec["box_area"] < 1
        assert rec["kl"] == pytest.approx(float(d["kl"]), rel=1e-5)
        assert rec["kl_active"] == int((d["kl_dims"] > 0.01).sum())


def collapsed(vlm):
    """A VIF whose latent carries nothing: both branches output the same constant Gaussian, so KL = 0."""
    vif = VIF.build(vlm, **SMALL)
    with torch.no_grad():
        for enc in (vif.module.prior, vif.module.posterior):
            for head in (enc.mean_head, enc.logvar_head):
                head.weight.zero_()
                head.bias.fill_(0.3)
    return vif


def test_collapse_warning_fires_in_a_collapsed_case():
    vlm = fresh()
    vif = collapsed(vlm)
    cfg = TrainConfig(steps=3, lr=1e-12, collapse_kl=1e-6, collapse_steps=2, **STEP)
    with pytest.warns(PosteriorCollapseWarning, match="posterior collapse"):
        res = train(vlm, samples(), cfg, vif=vif, progress=False)
    assert max(r["kl"] for r in res.history if "kl" in r) < 1e-6
    assert [r["step"] for r in res.history if "collapse" in r] == [2]


def test_no_collapse_warning_while_kl_is_large():
    vlm = fresh()
    with warnings.catch_warnings():
        warnings.simplefilter("error", PosteriorCollapseWarning)
        res = train(vlm, samples(), TrainConfig(steps=2, collapse_kl=1e-9, collapse_steps=1, **STEP),
                    vif=VIF.build(vlm, **SMALL), progress=False)
    assert all(r["kl"] > 1e-9 for r in res.history if "kl" in r)


def test_collapse_watch_counts_consecutive_steps():
    w = CollapseWatch(0.1, 3)
    with pytest.warns(PosteriorCollapseWarning):
        fired = [w.update(s, kl) for s, kl in enumerate([0.0, 0.0, 1.0, 0.0, 0.0, 0.05, 0.0], 1)]
    assert [s for s, m in enumerate(fired, 1) if m] == [6]


def test_kl_per_dim_sums_to_the_kl_and_free_bits_floor_it():
    from interp.vif.cvae import CVAE

    g = torch.Generator().manual_seed(0)
    post, prior = [(torch.randn(3, 5, generator=g), torch.randn(3, 5, generator=g)) for _ in range(2)]
    dims = kl_per_dim(post, prior)
    torch.testing.assert_close(dims.sum(), CVAE.kl(post, prior))
    assert free_bits_kl(dims, 0.0) == dims.sum()
    torch.testing.assert_close(free_bits_kl(dims, 10.0), torch.tensor(50.0))
    torch.testing.assert_close(free_bits_kl(dims, 0.5), torch.maximum(dims, torch.tensor(0.5)).sum())


def test_options_off_by_default_and_what_they_do():
    c = TrainConfig()
    assert (c.base, c.focus, c.kl_anneal, c.free_bits) == ("frozen", "cvae", 0, 0.0)
    assert c.beta_at(0) == c.beta_at(999) == 0.1
    a = dataclasses.replace(c, kl_anneal=10)
    assert a.beta_at(0) == pytest.approx(0.01) and a.beta_at(4) == pytest.approx(0.05) and a.beta_at(50) == 0.1
    v = VIF()
    assert (v.sample, v.decode) == (False, False)  # prior mean; prefill only (the reference's injection)


def test_free_bits_enter_the_loss():
    vlm = fresh()
    cfg = TrainConfig(steps=1, free_bits=100.0, **STEP)
    rec = train(vlm, samples(), cfg, vif=VIF.build(vlm, **SMALL), progress=False).history[-1]
    assert rec["loss"] == pytest.approx(rec["ce"] + 0.1 * 8 * 100.0 + 0.1 * (rec["entropy"] + rec["volume"]), rel=1e-5)


def test_map_stats_and_fixed_maps_on_the_evidence():
    vlm = fresh()
    s = samples(3)
    b = vlm.prepare([x.image for x in s], [x.question for x in s])
    ev, has = evidence_mask(b.layout, s)
    assert has.all() and ev.any(1).all()
    uni, _ = FixedMap("uniform", layers=(3,)).maps(b.layout)
    box, fb = FixedMap("boxes", layers=(3,)).for_samples(s).maps(b.layout)
    torch.testing.assert_close(uni.sum(1), torch.ones(3))
    assert not fb.any()
    st_u, st_b = map_stats(uni, ev, has), map_stats(box, ev, has)
    assert st_b["map_mass"] == pytest.approx(1.0) and st_u["map_mass"] == pytest.approx(st_u["box_area"])
    assert st_u["map_entropy"] == pytest.approx(math.log(16)) and st_b["map_entropy"] < st_u["map_entropy"]
    with pytest.raises(InputError, match="for_samples"):
        interp.intervene(vlm, FixedMap("boxes", layers=(3,))).forward(b)
    out = interp.intervene(vlm, FixedMap("boxes", layers=(3,)).for_samples(s)).forward(b)
    assert out.diagnostics["focus"]["applied"] == [(0, 3)]
    assert (out.logits - interp.intervene(vlm).forward(b).logits).abs().max() > 1e-4


# ------------------------------------------------------------------------------------------ checkpoints


def test_joint_checkpoint_round_trips_and_refuses_the_unmodified_base(tmp_path):
    vlm = fresh()
    res = train(vlm, samples(), TrainConfig(steps=2, base="joint", base_lr=1e-2, **STEP), out=tmp_path,
                vif=VIF.build(vlm, **SMALL), progress=False)
    cfg = json.loads((tmp_path / ckpt.CONFIG).read_text())
    assert cfg["base"]["file"] == BASE_WEIGHTS and (tmp_path / BASE_CONFIG).exists()
    names = set(json.loads((tmp_path / BASE_CONFIG).read_text())["modules"])
    assert names == set(res.base)
    s = samples(2)
    b = vlm.prepare([x.image for x in s], [x.question for x in s])
    want = interp.intervene(vlm, res.vif).forward(b).logits
    other = fresh()
    with pytest.raises(CheckpointError, match="load_joint"):
        VIF.load(tmp_path, other)
    apply_base(tmp_path, other)
    got = interp.intervene(other, VIF.load(tmp_path, other)).forward(b).logits
    assert torch.equal(got, want)


def test_joint_resume_continues_exactly(tmp_path):
    cfg = TrainConfig(steps=3, base="joint", base_lr=1e-3, batch_size=2, warmup=1, save_every=1)
    a = fresh()
    straight = train(a, samples(), cfg, out=tmp_path / "a", vif=VIF.build(a, **SMALL), progress=False)
    b = fresh()
    train(b, samples(), dataclasses.replace(cfg, steps=2), out=tmp_path / "b", vif=VIF.build(b, **SMALL),
          progress=False)
    c = fresh()  # a new process would start from the unmodified base: the resume copies the saved one in
    resumed = train(c, samples(), cfg, out=tmp_path / "b", progress=False)
    assert resumed.step == 3 and len([r for r in resumed.history if "loss" in r]) == 1
    for (k, v), (_, w) in zip(a.hf.named_parameters(), c.hf.named_parameters()):
        torch.testing.assert_close(w, v, atol=1e-6, rtol=0, msg=k)
    sa, sc = straight.vif.module.state_dict(), resumed.vif.module.state_dict()
    for k in sa:
        torch.testing.assert_close(sc[k], sa[k], atol=1e-6, rtol=0)
    with pytest.raises(CheckpointError, match="frozen-base|joint"):
        train(fresh(), samples(), dataclasses.replace(cfg, base="frozen"), out=tmp_path / "b", progress=False)


def test_load_joint_on_the_toy(tmp_path):
    vlm = interp.toy.load()
    train(vlm, samples(), TrainConfig(steps=1, base="joint", focus="uniform", **STEP), out=tmp_path, progress=False)
    assert read_base(tmp_path)["source"] == "toy"
    vlm2, fm = interp.vif.load_joint(tmp_path)
    assert isinstance(fm, FixedMap) and fm.kind == "uniform" and fm.layers == (6, 7)
    for (k, v), (_, w) in zip(vlm.hf.named_parameters(), vlm2.hf.named_parameters()):
        assert torch.equal(v, w), k
    with pytest.raises(CheckpointError, match="frozen"):
        interp.vif.load_joint(os.path.join(os.path.dirname(interp.toy.CHECKPOINT_DIR), "checkpoint"))


# Each shipped variant on the first four held-out toy scenes (interp.toy.dataset(4, seed=EVAL_SEED)): greedy answers
# and the probability of the top next token at the answer position, recorded from the code that trained and
# evaluated them (analyses.vif_ablation's numbers come from these checkpoints); the answers also agree with the
# per-scene scores figures/vif_ablation.json saved.
SHIPPED_OUTPUTS = {
    "finetune": (["purple", "circle", "blue", "three"], [0.962, 0.9602, 0.9599, 0.615]),
    "vif_frozen": (["purple", "cross", "blue", "two"], [0.9181, 0.6449, 0.9253, 0.535]),
    "vif_joint": (["purple", "circle", "blue", "three"], [0.9544, 0.8413, 0.9692, 0.5086]),
    "vif_joint_ref": (["purple", "circle", "blue", "three"], [0.9531, 0.9601, 0.9703, 0.5921]),
    "uniform_map": (["purple", "circle", "blue", "three"], [0.9541, 0.9608, 0.9698, 0.6071]),
    "oracle_map": (["purple", "circle", "blue", "three"], [0.9806, 0.9767, 0.9772, 0.5764]),
}


def test_shipped_ablation_variants_give_their_recorded_outputs():
    from interp.data.scoring import score

    assert set(SHIPPED_OUTPUTS) == set(os.listdir(interp.toy.VIF_ABLATION_DIR))  # every shipped variant
    figure = json.loads(open(os.path.join(os.path.dirname(__file__), "..", "figures", "vif_ablation.json")).read())
    base = interp.toy.load()
    s = samples(4)
    b = base.prepare([x.image for x in s], [x.question for x in s])
    for v, (texts, top) in SHIPPED_OUTPUTS.items():
        d = os.path.join(interp.toy.VIF_ABLATION_DIR, v)
        card = json.loads(open(os.path.join(d, "card.json")).read())
        assert card["command"].startswith("python -m interp.vif.train ") and card["steps"] >= 100
        if read_base(d) is None:  # frozen: loads on the shipped toy model as is
            iv, vlm = VIF.load(d, base), base
        else:
            vlm, iv = interp.vif.load_joint(d)
            assert read_base(d)["dtype"] == "float16"
            if os.path.exists(os.path.join(d, ckpt.CONFIG)):
                with pytest.raises(CheckpointError, match="load_joint"):
                    VIF.load(d, base)
        ivs = () if iv is None else (iv.for_samples(s) if isinstance(iv, FixedMap) else iv,)
        assert interp.intervene(vlm, *ivs).generate(b, max_new_tokens=3).texts == texts, v
        probs = interp.intervene(vlm, *ivs).forward(b).logits[b.layout.last].softmax(-1)  # [4, V]
        torch.testing.assert_close(probs.max(-1).values, torch.tensor(top), atol=1e-4, rtol=0, msg=v)
        saved = [figure["scores"][v][figure["ids"].index(x.id)] for x in s]
        assert [score(x, t) for x, t in zip(s, texts)] == saved, v
