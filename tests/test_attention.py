"""Capture, edge masks, injection, patching against independent references: HF eager output_attentions,
explicit 4D float masks passed to HF, and plainly written eager reference attention."""

import pytest
import torch
from transformers import AttentionInterface

import interp
from interp.errors import InputError

from conftest import ARCHS, batch, float_mask, reference_logits, zoo


def eager_attentions(vlm, b):
    """[L, B, H, T, T] from HF eager output_attentions (the oracle)."""
    old = vlm.attn_implementation
    vlm.hf.set_attn_implementation("eager")
    try:
        with torch.no_grad():
            out = vlm.hf(**b.inputs, output_attentions=True)
    finally:
        vlm.hf.set_attn_implementation(old)
    return torch.stack(out.attentions)


def loop_stats(A, layout, queries, heads):
    """Plain per-row loop over the oracle attentions: (ratio [L, B], vmax [L, B, Nv] padded NaN, ent [L, B])."""
    L, B = A.shape[:2]
    Nv = int(layout.num_vision.max())
    qg = layout.group(queries)
    ratio = torch.full((L, B), float("nan"))
    vmax = torch.full((L, B, Nv), float("nan"))
    vmean = torch.full((L, B, Nv), float("nan"))
    ent = torch.full((L, B), float("nan"))
    for l in range(L):
        for r in range(B):
            qs = qg[r].nonzero().squeeze(1).tolist()
            vs = layout.vision[r].nonzero().squeeze(1).tolist()
            a = A[l, r]
            a = a.mean(0) if heads == "mean" else a.amax(0)
            rows = [[float(a[q, v]) for v in vs] for q in qs]
            ratio[l, r] = sum(sum(x) for x in rows) / len(rows)
            for j in range(len(vs)):
                vmax[l, r, j] = max(x[j] for x in rows)
                vmean[l, r, j] = sum(x[j] for x in rows) / len(rows)
            e = 0.0
            for x in rows:
                s = sum(x)
                e -= sum((y / s) * torch.log(torch.tensor(y / s)).item() for y in x if y > 0)
            ent[l, r] = e / len(rows)
    return ratio, vmax, vmean, ent


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_capture_matches_eager_output_attentions(arch, attn):
    vlm = zoo(arch, attn)
    b = batch(vlm, 2)
    A = eager_attentions(vlm, b)
    for queries in ("question", "last", "text"):
        for heads in ("mean", "max"):
            st = interp.capture(vlm, b, queries=queries, heads=heads)
            ratio, vmax, vmean, ent = loop_stats(A, b.layout, queries, heads)
            torch.testing.assert_close(st.vision_ratio, ratio, atol=1e-5, rtol=0, equal_nan=True)
            torch.testing.assert_close(st.vision_max, vmax, atol=1e-5, rtol=0, equal_nan=True)
            torch.testing.assert_close(st.vision_mean, vmean, atol=1e-5, rtol=0, equal_nan=True)
            torch.testing.assert_close(st.vision_entropy, ent, atol=1e-4, rtol=0, equal_nan=True)


def test_capture_heads_none_and_subset_and_probs():
    vlm = zoo("qwen2_vl")
    b = batch(vlm, 2)
    A = eager_attentions(vlm, b)
    st = interp.capture(vlm, b, heads="none", layers=[1, 3], keep_probs=True)
    assert st.layers == [1, 3] and st.vision_max.dim() == 4  # [L, B, H, Nv]
    vs = b.layout.vision[0].nonzero().squeeze(1)
    qs = b.layout.question[0].nonzero().squeeze(1)
    ref = A[3, 0][:, qs][:, :, vs].amax(1)  # [H, Nv]
    torch.testing.assert_close(st.vision_max[1, 0, :, : len(vs)], ref, atol=1e-5, rtol=0)
    rows = st.rows
    torch.testing.assert_close(st.probs[0][0], A[1, 0][:, rows], atol=1e-5, rtol=0)


def test_capture_rejects_bad_args():
    vlm = zoo("llava")
    b = batch(vlm, 1)
    with pytest.raises(InputError, match="heads"):
        interp.capture(vlm, b, heads="sum")
    with pytest.raises(InputError, match="selects no token"):
        interp.capture(vlm, b, queries="answer")


@pytest.mark.parametrize("arch", ARCHS)
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
def test_edge_mask_all_layers_equals_explicit_4d_mask(arch, attn):
    vlm = zoo(arch, attn)
    b = batch(vlm, 2)
    lay = b.layout
    out = interp.intervene(vlm, interp.EdgeMask("question", "vision")).forward(b)
    blocked = lay.question[:, :, None] & lay.vision[:, None, :]
    with torch.no_grad():
        ref = reference_logits(vlm, b, float_mask(lay, blocked))
    real = ~lay.pad
    torch.testing.assert_close(out.logits[real], ref[real], atol=1e-5, rtol=1e-5)
    plain = interp.intervene(vlm).forward(b).logits
    assert (plain[real] - out.logits[real]).abs().max() > 1e-4  # the knock-out changed the logits


class _PerLayerMaskHook:
    """Reference for per-layer masks: a forward pre-hook that rewrites the attention_mask kwarg of chosen
    layers (eager), independent of nnsight."""

    def __init__(self, vlm, layers, extra):
        self.handles = []
        lm = vlm.hf.model.language_model if hasattr(vlm.hf.model, "language_model") else vlm.hf.model.text_model
        for l in layers:
            def hook(mod, args, kwargs, extra=extra):
                m = kwargs["attention_mask"]
                kwargs["attention_mask"] = m + extra if m.dtype != torch.bool else None
                return args, kwargs
            self.handles.append(lm.layers[l].self_attn.register_forward_pre_hook(hook, with_kwargs=True))

    def remove(self):
        for h in self.handles:
            h.remove()


@pytest.mark.parametrize("arch", ["llava", "qwen2_5_vl", "idefics3"])
def test_edge_mask_per_layer_equals_eager_reference(arch):
    vlm = zoo(arch, "eager")
    b = batch(vlm, 2)
    lay = b.layout
    layers = (1, 2)
    out = interp.intervene(vlm, interp.EdgeMask("text", "vision", layers=layers)).forward(b)
    blocked = lay.text[:, :, None] & lay.vision[:, None, :]
    extra = torch.zeros(2, 1, lay.seq_len, lay.seq_len).masked_fill(blocked[:, None], torch.finfo(torch.float32).min)
    hook = _PerLayerMaskHook(vlm, layers, extra)
    try:
        with torch.no_grad():
            ref = vlm.hf(**b.inputs).logits
    finally:
        hook.remove()
    real = ~lay.pad
    torch.testing.assert_close(out.logits[real], ref[real], atol=1e-5, rtol=1e-5)
    sdpa = interp.intervene(zoo(arch, "sdpa"), interp.EdgeMask("text", "vision", layers=layers)).forward(b)
    torch.testing.assert_close(sdpa.logits[real], ref[real], atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", ["llava", "qwen2_vl"])
@pytest.mark.parametrize("layers", [None, (0, 3)])
def test_edge_mask_generate_matches_uncached_reference(arch, layers):
    """Prefill and KV-cached decode steps: greedy tokens equal a loop of full forwards with explicit masks
    (generated tokens are text: cut from vision too)."""
    vlm = zoo(arch, "eager")
    b = batch(vlm, 2)
    n = 4
    g = interp.intervene(vlm, interp.EdgeMask("text", "vision", layers=layers)).generate(b, max_new_tokens=n)
    ids, am = b.inputs["input_ids"], b.inputs["attention_mask"]
    extra_inputs = {k: v for k, v in b.inputs.items() if k not in ("input_ids", "attention_mask")}
    for _ in range(n):
        vision = ids == vlm.image_token_id
        pad = am == 0
        text = ~vision & ~pad
        T = ids.shape[1]
        blocked = text[:, :, None] & vision[:, None, :]
        allowed = torch.ones(T, T, dtype=torch.bool).tril()[None] & ~pad[:, None, :]
        keep = (allowed | torch.eye(T, dtype=torch.bool))[:, None]
        base = torch.zeros(ids.shape[0], 1, T, T).masked_fill(~keep, torch.finfo(torch.float32).min)
        cut = torch.zeros_like(base).masked_fill(blocked[:, None], torch.finfo(torch.float32).min)
        inputs = dict(extra_inputs, input_ids=ids)
        if arch.startswith("qwen"):
            inputs["position_ids"], _ = vlm.hf.model.get_rope_index(ids, (ids == vlm.image_token_id).int(),
                                                                    b.inputs["image_grid_thw"], None, am)
            inputs.pop("mm_token_type_ids", None)
        else:
            inputs["position_ids"] = (am.cumsum(1) - 1).clamp(min=0)
        if layers is None:
            inputs["attention_mask"] = (base + cut).clamp(min=torch.finfo(torch.float32).min)
            hook = None
        else:
            inputs["attention_mask"] = base
            hook = _PerLayerMaskHook(vlm, layers, cut)
        try:
            with torch.no_grad():
                nxt = vlm.hf(**inputs).logits[:, -1].argmax(-1)
        finally:
            if hook:
                hook.remove()
        ids = torch.cat([ids, nxt[:, None]], 1)
        am = torch.cat([am, torch.ones_like(am[:, :1])], 1)
    assert torch.equal(g.sequences, ids)


def test_edge_mask_bf16_and_vision_to_vision_untouched():
    vlm = zoo("llava")
    b = batch(vlm, 2)
    st_plain = interp.capture(vlm, b, queries="after_image")
    m = interp.EdgeMask("question", "vision")
    st = interp.capture(vlm, b, queries="question", interventions=(m,))
    assert torch.nan_to_num(st.vision_max).abs().max() == 0  # cut edges are exactly zero
    # vision rows' attention to vision is unchanged: capture with vision queries
    v_plain = interp.capture(vlm, b, queries="vision")
    v_cut = interp.capture(vlm, b, queries="vision", interventions=(m,))
    torch.testing.assert_close(v_plain.vision_max, v_cut.vision_max, equal_nan=True, atol=0, rtol=0)
    assert st_plain.vision_ratio.nan_to_num().max() > 0
    vlm16 = interp.zoo.tiny("llava", dtype=torch.bfloat16)  # a fresh model: never mutate the cached one
    bb = batch(vlm16, 2)
    out = interp.intervene(vlm16, m).forward(bb)
    real = ~bb.layout.pad
    assert out.logits.dtype == torch.bfloat16 and torch.isfinite(out.logits[real]).all()
    blocked = bb.layout.question[:, :, None] & bb.layout.vision[:, None, :]
    with torch.no_grad():
        ref = reference_logits(vlm16, bb, float_mask(bb.layout, blocked, torch.bfloat16))
    torch.testing.assert_close(out.logits[real].float(), ref[real].float(), atol=2e-2, rtol=2e-2)


def test_edge_mask_errors():
    vlm = zoo("llava")
    b = batch(vlm, 1)
    with pytest.raises(InputError, match="selects no edge"):
        interp.intervene(vlm, interp.EdgeMask("answer", "vision")).forward(b)
    with pytest.raises(InputError, match="no visible key"):
        interp.intervene(vlm, interp.EdgeMask("all", "all")).forward(b)
    with pytest.raises(InputError, match="out of range"):
        interp.intervene(vlm, interp.EdgeMask("text", "vision", layers=(9,))).forward(b)
    with pytest.raises(InputError, match="unknown token group"):
        interp.intervene(vlm, interp.EdgeMask("texts", "vision")).forward(b)


# ----------------------------------------------------------------------------- injection

def _reference_inject(layers, rows, cols, w, alpha, mode):
    """Eager attention written plainly, with the injection on rows × cols at `layers`."""
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    def attn(module, q, k, v, mask, scaling=None, dropout=0.0, **kw):
        if getattr(module, "layer_idx", None) is None:  # the vision tower: HF's own attention
            return sdpa_attention_forward(module, q, k, v, mask, scaling=scaling, dropout=dropout, **kw)
        H = q.shape[1]
        k = k.repeat_interleave(H // k.shape[1], 1)
        v = v.repeat_interleave(H // v.shape[1], 1)
        s = q @ k.transpose(-1, -2) * scaling
        if mask is None:  # causal by flag
            Q, K = q.shape[2], k.shape[2]
            mask = (torch.arange(K - Q, K)[:, None] >= torch.arange(K)[None, :])[None, None]
        if mask is not None:
            mask = mask[..., : k.shape[2]]
            # a registered interface gets HF's bool (SDPA-style) mask: True = attend
            if mask.dtype == torch.bool:
                mask = torch.zeros(mask.shape).masked_fill(~mask, torch.finfo(torch.float32).min)
            s = s + mask
        p = torch.softmax(s.float(), -1)
        if getattr(module, "layer_idx", None) in layers and mask is not None:
            B, _, Q, K = p.shape
            vis = (mask[:, 0] > torch.finfo(mask.dtype).min / 2).expand(B, Q, K)
            for bi in range(B):
                for qi in range(Q):
                    if not rows[bi, qi]:
                        continue
                    row = p[bi, :, qi].clone()
                    for ki in range(K):
                        if cols[bi, ki]:
                            mixed = (1 - alpha) * row[:, ki] if mode == "convex" else row[:, ki]
                            row[:, ki] = mixed + alpha * w[bi, ki]
                        if not vis[bi, qi, ki]:
                            row[:, ki] = 0
                    p[bi, :, qi] = row / row.sum(-1, keepdim=True)
        out = (p.to(v.dtype) @ v).transpose(1, 2).contiguous()
        return out, p
    return attn


@pytest.mark.parametrize("mode", ["convex", "additive"])
def test_inject_matches_plain_reference(mode, monkeypatch):
    vlm = zoo("llava", "eager")
    b = batch(vlm, 1)  # HF hands a registered interface no padding mask, so the reference runs unpadded
    lay = b.layout
    nv = int(lay.num_vision.max())
    w = torch.softmax(torch.randn(1, nv), -1)
    layers, alpha = (1, 3), 0.4
    out = interp.intervene(vlm, interp.InjectAttention(layers, "question", "vision", w, alpha=alpha, mode=mode)).forward(b)
    full = torch.zeros(1, lay.seq_len)
    for r in range(1):
        full[r, lay.vision[r]] = w[r, : int(lay.num_vision[r])]
    # registered for this test only (AttentionInterface.register writes the class-wide table, for good)
    monkeypatch.setitem(AttentionInterface._global_mapping, "inject_ref",
                        _reference_inject(layers, lay.question, lay.vision, full, alpha, mode))
    vlm.hf.set_attn_implementation("inject_ref")
    try:
        with torch.no_grad():
            ref = vlm.hf(**b.inputs).logits
    finally:
        vlm.hf.set_attn_implementation("eager")
    real = ~lay.pad
    torch.testing.assert_close(out.logits[real], ref[real], atol=1e-5, rtol=1e-5)
    inj = interp.InjectAttention(layers, "question", "vision", w, alpha=alpha, mode=mode)
    sd = interp.intervene(zoo("llava", "sdpa"), inj).forward(b)
    torch.testing.assert_close(sd.logits[real], ref[real], atol=1e-5, rtol=1e-5)


def test_inject_alpha_zero_is_identity_and_composes_with_mask():
    vlm = zoo("qwen2_5_vl")
    b = batch(vlm, 2)
    nv = int(b.layout.num_vision.max())
    w = torch.softmax(torch.randn(2, nv), -1)
    plain = interp.intervene(vlm).forward(b).logits
    zero = interp.intervene(vlm, interp.InjectAttention((1, 2), "text", "vision", w, alpha=0.0)).forward(b).logits
    assert torch.equal(plain, zero)
    inj = interp.InjectAttention((1, 2), "text", "vision", w, alpha=0.7)
    cut = interp.EdgeMask("question", "vision")
    st = interp.capture(vlm, b, queries="question", layers=[1, 2], interventions=(cut, inj))
    assert torch.nan_to_num(st.vision_max).abs().max() == 0  # masked edges stay exactly zero
    st2 = interp.capture(vlm, b, queries="question", layers=[1, 2], interventions=(inj,))
    assert torch.nan_to_num(st2.vision_ratio).min() > 0.5  # the injection moved mass onto vision


def test_inject_gradients_flow_to_weights():
    vlm = zoo("llava")
    b = batch(vlm, 1)
    nv = int(b.layout.num_vision.max())
    logits_w = torch.zeros(1, nv, requires_grad=True)
    inj = interp.InjectAttention((2,), "question", "vision", lambda ctx, call: torch.softmax(logits_w, -1), alpha=0.5)
    out = interp.intervene(vlm, inj).forward(b, grad=True)
    out.logits[0, -1, 5].backward()
    grad = logits_w.grad[0]
    # against central differences of the same logit, at the entries that matter most and least
    eps = 1e-2
    for j in (int(grad.abs().argmax()), int(grad.abs().argmin()), 0):
        step = torch.zeros_like(logits_w)
        step[0, j] = eps
        f = [interp.intervene(vlm, interp.InjectAttention(
            (2,), "question", "vision", lambda ctx, call, w=logits_w.detach() + s * step: torch.softmax(w, -1),
            alpha=0.5)).forward(b).logits[0, -1, 5] for s in (1, -1)]
        assert float((f[0] - f[1]) / (2 * eps)) == pytest.approx(float(grad[j]), abs=1e-4, rel=1e-2)
    assert grad.abs().max() > 1e-3  # the weights reach the logit


# ----------------------------------------------------------------------------- patching

def test_patch_all_positions_reproduces_clean_and_nothing_reproduces_corrupt():
    vlm = zoo("llava")
    clean = batch(vlm, 2)
    corrupt = vlm.prepare(images=list(reversed(clean.images and [im[0] for im in clean.images])),
                          questions=list(clean.questions))
    assert torch.equal(corrupt.input_ids, clean.input_ids)  # the same questions, fixed-size vision: one layout
    c_logits = interp.intervene(vlm).forward(clean).logits
    k_logits = interp.intervene(vlm).forward(corrupt).logits
    last = vlm.num_layers - 1
    p = interp.Patch("resid", (last,), "all", clean)
    assert torch.equal(interp.intervene(vlm, p).forward(corrupt).logits, c_logits)
    p0 = interp.Patch("resid", (1,), "all", corrupt)  # patching a run with itself is the identity
    assert torch.equal(interp.intervene(vlm, p0).forward(corrupt).logits, k_logits)
    none = torch.zeros(corrupt.layout.shape, dtype=torch.bool)
    with pytest.raises(interp.InterpError, match=r"bool tensor \[2, \d+\] select no token"):
        interp.intervene(vlm, interp.Patch("resid", (1,), none, clean)).forward(corrupt)
    for site in ("attn_out", "mlp_out"):
        out = interp.intervene(vlm, interp.Patch(site, (1,), "vision", clean)).forward(corrupt).logits
        assert not torch.equal(out, k_logits)
    sweep = interp.patch_sweep(vlm, clean, corrupt, layers=[0, last], groups=("vision", "question", "all"))
    assert sweep["effect"].shape == (2, 3)
    assert abs(sweep["effect"][1, 2] - sweep["clean"]) < 1e-4  # patching everything at the last layer = clean
