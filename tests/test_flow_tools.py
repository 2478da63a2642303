"""The information-flow tools against references interp did not write, on the toy and the LLaVA and
Qwen2.5-VL zoo models (each a pristine HF copy with the same weights):

- `logit_lens`: forward hooks on the HF decoder layers, then the HF model's own final norm and `lm_head`;
- `patch_sweep` (every site × positions mode, exact and attribution): hook-based patching of the pristine copy
  (record the clean module output, replace it in the corrupt run; heads: a pre-hook on `o_proj`), gradients
  from `torch.autograd` on the pristine copy;
- `knockout_flow`: the pristine copy whose attention cuts the edges explicitly in the window's layers only
  (tests/oracle.py).
"""

import functools

import numpy as np
import pytest
import torch
from PIL import Image

import interp
from interp.errors import InputError, SiteError
from interp.models import zoo as zoo_mod
from interp.sweep import columns

from conftest import batch, zoo
from oracle import oracle, pair_cut

FAMILIES = ("toy", "llava", "qwen2_5_vl")
TOL = 1e-4


@functools.lru_cache(maxsize=None)
def setup(family):
    """(vlm, pristine HF copy, its decoder stack, clean batch, corrupt batch with the same layout)."""
    if family == "toy":
        from transformers import LlavaForConditionalGeneration

        vlm = interp.toy.load()
        hf = LlavaForConditionalGeneration.from_pretrained(interp.toy.CHECKPOINT_DIR).eval()
        samples = interp.toy.dataset(40, seed=interp.toy.EVAL_SEED, families=["spatial"])
        x = next(s for s in samples if s.answer in ("left", "right"))
        y = next(s for s in samples if s.answer in ("above", "below"))
        pairs = [((s.image, s.question), (m.image, m.question))
                 for s, m in ((x, interp.toy.mirror(x, "x")), (y, interp.toy.mirror(y, "y")))]
    else:
        vlm = zoo(family)
        hf, _ = zoo_mod.build(family)
        hf.set_attn_implementation("sdpa")
        rng = np.random.default_rng(0)
        ims = [Image.fromarray(rng.integers(0, 255, (56, 56, 3), dtype=np.uint8)) for _ in range(4)]
        qs = ["what color is the circle ?", "is there a star ?"]
        pairs = [((ims[i], qs[i]), (ims[2 + i], qs[i])) for i in range(2)]
    clean = vlm.prepare(images=[a[0] for a, _ in pairs], questions=[a[1] for a, _ in pairs])
    corrupt = vlm.prepare(images=[b[0] for _, b in pairs], questions=[b[1] for _, b in pairs])
    assert torch.equal(clean.input_ids, corrupt.input_ids)
    lm = hf.model.language_model
    return vlm, hf, lm, clean, corrupt


def _out(o):
    return o[0] if isinstance(o, tuple) else o


def module(lm, site, layer):
    L = lm.layers[layer]
    return {"resid": L, "attn_out": L.self_attn, "mlp_out": L.mlp, "heads": L.self_attn.o_proj}[site]


def record(hf, m, site, batch, grad=False):
    """What module `m` outputs (heads: what o_proj receives) in a forward of `batch`; with `grad`, attached to the
    graph, and the forward's logits too."""
    box = {}
    keep = (lambda x: x) if grad else (lambda x: x.detach().clone())
    if site == "heads":
        h = m.register_forward_pre_hook(lambda mod, a: box.__setitem__("x", keep(a[0])))
    else:
        h = m.register_forward_hook(lambda mod, a, o: box.__setitem__("x", keep(_out(o))))
    with torch.set_grad_enabled(grad):
        logits = hf(**batch.inputs).logits
    h.remove()
    return (box["x"], logits) if grad else box["x"]


def hook_patch(hf, lm, clean, corrupt, site, layer, head, mask, H):
    """Logits of the corrupt run with `site` of `layer` (head `head`) at `mask` [B, T] taken from the clean run."""
    m = module(lm, site, layer)
    src = record(hf, m, site, clean)

    def post(mod, a, o):
        new = torch.where(mask[..., None], src, _out(o))
        return (new, *o[1:]) if isinstance(o, tuple) else new

    def pre(mod, a):
        x = a[0]
        B, Q, HD = x.shape
        out = x.clone().view(B, Q, H, HD // H)
        out[:, :, head] = torch.where(mask[..., None], src.view(B, Q, H, HD // H)[:, :, head], out[:, :, head])
        return (out.view(B, Q, HD), *a[1:])

    h = m.register_forward_pre_hook(pre) if site == "heads" else m.register_forward_hook(post)
    with torch.no_grad():
        logits = hf(**corrupt.inputs).logits
    h.remove()
    return logits


def metric_parts(hf, clean, corrupt):
    with torch.no_grad():
        c0, k0 = hf(**clean.inputs).logits, hf(**corrupt.inputs).logits
    last = corrupt.layout.last.int().argmax(1)
    b = torch.arange(len(last))
    good, bad = c0[b, last].argmax(-1), k0[b, last].argmax(-1)
    return lambda lg: lg[b, last, good] - lg[b, last, bad], c0, k0


# ------------------------------------------------------------------------------------------ logit lens

@pytest.mark.parametrize("family", FAMILIES)
def test_logit_lens_matches_decoder_hooks_and_the_models_own_head(family):
    vlm, hf, lm, clean, _ = setup(family)
    lens = interp.logit_lens(vlm, clean)
    outs = {}
    hooks = [layer.register_forward_hook(lambda m, a, o, i=i: outs.__setitem__(i, _out(o)))
             for i, layer in enumerate(lm.layers)]
    with torch.no_grad():
        logits = hf(**clean.inputs).logits
        for h in hooks:
            h.remove()
        B, T = clean.layout.shape
        last = clean.layout.last.int().argmax(1)
        target = logits[torch.arange(B), last].argmax(-1)
        assert torch.equal(lens.targets, target)  # default: the model's own next token
        real = ~clean.layout.pad
        for l in range(vlm.num_layers):
            ref = torch.softmax(hf.lm_head(lm.norm(outs[l])).float(), -1)  # [B, T, V]
            p = ref.gather(2, target[:, None, None].expand(B, T, 1))[..., 0]
            assert (p[real] - lens.probs[l][real]).abs().max() < TOL
            assert torch.equal(ref.argmax(-1)[real], lens.top[l][real])
    assert lens.probs[:, clean.layout.pad].isnan().all() and (lens.top[:, clean.layout.pad] == -1).all()


def test_logit_lens_targets_layers_positions_and_grid():
    vlm, _, _, clean, _ = setup("toy")
    full = interp.logit_lens(vlm, clean, targets=[3, 4])
    part = interp.logit_lens(vlm, clean, targets=torch.tensor([3, 4]), layers=(2, -1), positions="vision")
    assert part.layers == [2, vlm.num_layers - 1] and part.probs.shape == (2, 2, clean.layout.seq_len)
    vis = clean.layout.vision
    assert torch.equal(part.probs[:, vis], full.probs[[2, -1]][:, vis])
    assert part.probs[:, ~vis].isnan().all()
    grid = part.on_grid(2, row=1)
    assert grid[0]["image"].shape == clean.layout.images[1][0].grid
    assert torch.equal(grid[0]["image"].flatten(), part.probs[0, 1][vis[1]])  # row-major vision order
    with pytest.raises(InputError, match="targets must be 2 token ids"):
        interp.logit_lens(vlm, clean, targets=[1, 10**6])
    with pytest.raises(InputError, match="was not read"):
        part.on_grid(3)


# ------------------------------------------------------------------------------------------ patching

@pytest.mark.parametrize("family", FAMILIES)
def test_patch_sweep_every_mode_matches_hook_patching(family):
    vlm, hf, lm, clean, corrupt = setup(family)
    H = vlm.hf.config.get_text_config().num_attention_heads
    md, _, _ = metric_parts(hf, clean, corrupt)
    g = torch.Generator().manual_seed(0)
    for k, (site, positions) in enumerate((s, p) for s in ("resid", "attn_out", "mlp_out", "heads")
                                          for p in ("groups", "tokens", "vision_blocks")):
        # two layers per mode (one for "tokens", the costly mode: benchmarks.patching's smoke test checks it on
        # two layers against one forward per variant); every layer is visited
        layers = (k % vlm.num_layers,) + (() if positions == "tokens" else ((k + 5) % vlm.num_layers,))
        sw = interp.patch_sweep(vlm, clean, corrupt, site=site, positions=positions, layers=layers,
                                normalize=False, batch_size=48)
        cols, _, _ = columns(vlm, corrupt, positions)
        assert sw.rows.shape[-1] == len(cols) and sw.layers == list(layers)
        for _ in range(3):  # a few variants against the reference, both ends of the sequence included
            i = int(torch.randint(len(sw.layers), (1,), generator=g))
            p = int(torch.randint(len(cols), (1,), generator=g)) if _ else len(cols) - 1
            h = int(torch.randint(H, (1,), generator=g)) if site == "heads" else None
            ref = md(hook_patch(hf, lm, clean, corrupt, site, sw.layers[i], h, cols[p], H))
            got = sw.rows[:, i, h, p] if site == "heads" else sw.rows[:, i, p]
            ok = cols[p].any(1)
            assert (ref[ok] - got[ok]).abs().max() < TOL, (site, positions, i, h, p)
            assert got[~ok].isnan().all()


def test_patch_sweep_normalised_on_mirror_pairs():
    vlm, hf, lm, clean, corrupt = setup("toy")
    md, c0, k0 = metric_parts(hf, clean, corrupt)
    C, c = md(c0), md(k0)
    sw = interp.patch_sweep(vlm, clean, corrupt, groups=("vision", "question", "last", "all"))
    assert not sw.same_token.any() and sw.clean == 1.0 and sw.corrupt == 0.0
    assert torch.allclose(sw.clean_rows, C, atol=TOL) and torch.allclose(sw.corrupt_rows, c, atol=TOL)
    cols, _, _ = columns(vlm, corrupt, "groups", ("vision", "question", "last", "all"))
    for l in (0, 3, vlm.num_layers - 1):
        for p in range(4):
            raw = md(hook_patch(hf, lm, clean, corrupt, "resid", l, None, cols[p], 0))
            assert torch.allclose(sw.rows[:, l, p], (raw - c) / (C - c), atol=TOL)
            assert abs(float(sw.effect[l, p]) - float((raw - c).mean() / (C - c).mean())) < TOL
    assert torch.allclose(sw.effect[:, 3], torch.ones(vlm.num_layers), atol=TOL)  # everything patched = clean
    assert sw["effect"] is sw.effect and sw["groups"] == ["vision", "question", "last", "all"]


@pytest.mark.parametrize("family", FAMILIES)
def test_attribution_matches_autograd_on_the_pristine_copy(family):
    vlm, hf, lm, clean, corrupt = setup(family)
    md, _, _ = metric_parts(hf, clean, corrupt)
    H = vlm.hf.config.get_text_config().num_attention_heads
    for site in ("resid", "heads"):
        sw = interp.patch_sweep(vlm, clean, corrupt, site=site, positions="tokens", method="attribution",
                                normalize=False)
        for l in range(vlm.num_layers):
            m = module(lm, site, l)
            src = record(hf, m, site, clean)
            act, logits = record(hf, m, site, corrupt, grad=True)
            base = md(logits)
            (grad,) = torch.autograd.grad(base.sum(), [act])
            d = (src - act.detach()) * grad  # [B, T, D]
            if site == "heads":
                d = d.view(*d.shape[:2], H, -1)  # [B, T, H, Dh]
            d = d.sum(-1)  # [B, T] or [B, T, H]
            ref = base.detach().view(-1, *[1] * (d.dim() - 1)) + d
            mine = sw.rows[:, l] if site == "resid" else sw.rows[:, l].transpose(1, 2)  # the same layout
            real = ~corrupt.layout.pad
            assert (mine[real] - ref[real]).abs().max() < TOL * max(1.0, float(ref[real].abs().max()))


def test_patch_sweep_custom_metrics():
    vlm, hf, _, clean, corrupt = setup("toy")
    md, _, _ = metric_parts(hf, clean, corrupt)
    default = interp.patch_sweep(vlm, clean, corrupt, layers=(0, 6))
    per_row = interp.patch_sweep(vlm, clean, corrupt, layers=(0, 6), metric=md)  # [B] per row: the same numbers
    assert torch.allclose(per_row.rows, default.rows, atol=TOL, equal_nan=True)
    batch = interp.patch_sweep(vlm, clean, corrupt, layers=(0, 6), metric=lambda lg: md(lg).mean())
    assert batch.rows is None and batch.clean_rows is None
    assert torch.allclose(batch.effect, default.effect, atol=TOL)  # mean-normalised == (mean m − c)/(C − c)


def test_patch_sweep_warns_and_refuses():
    vlm, _, _, clean, corrupt = setup("toy")
    with pytest.warns(interp.errors.InterpWarning, match="predict the same token"):
        sw = interp.patch_sweep(vlm, clean, clean, layers=(1,))
    assert sw.rows.isnan().all()
    other = vlm.prepare(images=[im[0] for im in clean.images], questions=["what color is the circle ?"] * 2)
    with pytest.raises(InputError, match="differ in token layout"):
        interp.patch_sweep(vlm, clean, other)
    for kw, msg in ((dict(site="mlp"), "site must be"), (dict(positions="rows"), "positions must be"),
                    (dict(method="approx"), "method must be"), (dict(batch_size=0), "batch_size")):
        with pytest.raises(InputError, match=msg):
            interp.patch_sweep(vlm, clean, corrupt, **kw)
    sw = interp.patch_sweep(vlm, clean, corrupt, positions="vision_blocks", block=4, layers=(0,))
    assert sw.blocks == (2, 2) and sw.block_map(0).shape == (2, 2)


# ------------------------------------------------------------------------------------------ knockout

@pytest.mark.parametrize("family", FAMILIES)
def test_knockout_flow_matches_explicit_cuts_in_the_window(family):
    vlm, hf, lm, clean, _ = setup(family)
    window = 3 if family == "toy" else 2
    flow = interp.knockout_flow(vlm, clean, window=window, batch_size=4)
    assert flow.change.shape == (3, vlm.num_layers - window + 1) and flow.starts[0] == 0
    cls = type(vlm.sites.layer(vlm.nn, 0).self_attn._module)
    lay = clean.layout
    B = len(clean)
    last = lay.last.int().argmax(1)
    b = torch.arange(B)
    with torch.no_grad():
        p = torch.softmax(hf(**clean.inputs).logits[b, last].float(), -1)[b, flow.targets]
        assert (p - flow.base).abs().max() < TOL
        for e, (q, k) in enumerate(interp.flow.EDGES.values()):
            cut = pair_cut(lay.group(q) & ~lay.pad, lay.group(k) & ~lay.pad)
            for s in flow.starts:
                with oracle(hf, cls, cuts={l: cut for l in range(s, s + window)}) as m:
                    pc = torch.softmax(m(**clean.inputs).logits[b, last].float(), -1)[b, flow.targets]
                assert ((pc - p) / p - flow.rows[e, s]).abs().max() < TOL
    assert torch.allclose(flow.change, flow.rows.mean(-1))


def test_knockout_flow_refuses():
    vlm, _, _, clean, _ = setup("toy")
    with pytest.raises(InputError, match="window must be"):
        interp.knockout_flow(vlm, clean, window=99)
    with pytest.raises(InputError, match="no causal edge"):
        interp.knockout_flow(vlm, clean, edges={"backwards": ("vision", "last")})
    flow = interp.knockout_flow(vlm, clean, edges={"vision → question": ("question", "vision")})
    assert flow.window == 2 and flow.edges == ["vision → question"]  # default window: a quarter of 8 layers


# ------------------------------------------------------------------------------------------ engine sites

def test_skip_and_heads_edits_are_exact_no_ops():
    """A layer skipped with its own recorded output, and heads handed back unchanged, give the plain logits."""
    from interp.engine import EditOutput, Intervention, intervene
    from interp.patching import Record

    vlm, _, _, clean, _ = setup("qwen2_5_vl")
    plain = intervene(vlm).forward(clean).logits
    rec = intervene(vlm, Record("resid", (0, 1))).forward(clean).diagnostics["record"]

    class Same(Intervention):
        name = "same"

        def edits(self, ctx):
            return [EditOutput("resid", (0, 1), lambda ctx, l, _: rec[l], skip=True),
                    EditOutput("heads", (2,), lambda ctx, l, v: v.clone())]

    assert torch.equal(intervene(vlm, Same()).forward(clean).logits, plain)
    with pytest.raises(InputError, match="skip=True"):
        EditOutput("attn_out", (0,), lambda *a: None, skip=True)


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl"])
def test_a_skipped_mlp_is_a_zero_output_hook(arch):
    """SkipMLP (AIF's profiling pass skips its last MLP) against a plain PyTorch forward hook that replaces the
    same MLP's output by zeros on a pristine copy; the MLP's own forward never runs."""
    from interp.variants import SkipMLP

    vlm = zoo(arch)
    b = batch(vlm, 2)
    pristine, _ = zoo_mod.build(arch)
    pristine.set_attn_implementation("sdpa")
    lm = pristine.model.language_model
    last = len(lm.layers) - 1
    h = lm.layers[last].mlp.register_forward_hook(lambda m, a, o: torch.zeros_like(o))
    with torch.no_grad():
        want = pristine(**b.inputs).logits
    h.remove()
    ran = []
    mlp = vlm.hf.model.language_model.layers[last].mlp
    g = getattr(mlp, "down_proj", None) or mlp.fc2  # inside the MLP: runs only if its forward does
    g = g.register_forward_hook(lambda *a: ran.append(1))
    try:
        got = interp.intervene(vlm, SkipMLP((last,))).forward(b).logits
    finally:
        g.remove()
    real = ~b.layout.pad
    torch.testing.assert_close(got[real], want[real], atol=1e-5, rtol=1e-5)
    assert not ran
    with pytest.raises(SiteError, match="MLP is skipped but other edits"):
        interp.intervene(vlm, SkipMLP((last,)), interp.Patch("mlp_out", (last,), "vision", b)).forward(b)
