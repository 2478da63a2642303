"""The site walk: the only nnsight code of the engine. One walk per forward (the forward of `Run.forward`,
each prefill and decode step of HF `generate`), visiting sites in execution order:

  1. the language model's inputs (`TapInputs`);
  2. the mask builder: all-layer `Cut`s are ANDed into the mask it built (one tensor op per forward);
  3. per layer, at the attention call: per-layer `Cut`s, then `EditProbs` (which re-apply the visibility
     mask, so cut edges stay cut), then `ReadProbs` (which see what the model finally used);
  4. per layer: each head's output before the output projection ("heads"), attention output, MLP
     output, decoder-layer output (`EditOutput`); a layer (or an MLP) an `EditOutput(skip=True)` replaces does
     not run.
"""

from __future__ import annotations

import functools
import warnings

import nnsight
import torch

from ..attention import ops
from ..errors import SiteError


class AttentionCall:
    """One layer's attention call. q: [B, H, Q, D], k/v: [B, Hk, K, D] (post-RoPE); mask as HF passes it."""

    def __init__(self, ctx, layer, q, k, v, mask, scale):
        self.ctx, self.layer = ctx, layer
        self.q, self.k, self.v, self.mask, self.scale = q, k, v, mask, scale
        self.B, self.H, self.Q, _ = q.shape
        self.K = k.shape[2]
        self._probs = None  # [B, H, Q, K] once EditProbs ran
        self.eager_probs = None

    @property
    def q_positions(self) -> torch.Tensor:
        """[Q] absolute positions of the queries (the last Q of K)."""
        return torch.arange(self.K - self.Q, self.K, device=self.q.device)

    def rows(self, group: torch.Tensor) -> torch.Tensor:
        """A `[B, T+N]` group restricted to this call's query rows: `[B, Q]`."""
        return group[:, self.q_positions]

    def cols(self, group: torch.Tensor) -> torch.Tensor:
        return group[:, : self.K]

    def visible(self) -> torch.Tensor:
        """[B, Q, K] bool: the edges the call's (edited) mask lets through."""
        return ops.visible(self.mask, self.Q, self.K, self.B, self.q.device)

    def probs(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Final attention probabilities (after masks and edits) of query rows `rows` (long [n], None = all):
        [B, H, n, K] float32."""
        p = self._probs if self._probs is not None else (
            self.eager_probs.float() if self.eager_probs is not None else None)
        if p is not None:
            return p if rows is None else p[:, :, rows]
        rows = torch.arange(self.Q, device=self.q.device) if rows is None else rows
        return ops.row_probs(self.q, self.k, self.mask, self.scale, rows)


def _cut(cuts, q_pos: torch.Tensor, K: int) -> torch.Tensor:
    """[B, Q, K] bool: the (query, key) pairs the cuts remove, for queries at absolute positions `q_pos`."""
    S = cuts[0].queries.shape[1]
    if int(q_pos[-1]) >= S or K > S:
        raise SiteError(f"the run reached position {max(int(q_pos[-1]), K - 1)} but interp planned {S} positions; "
                        "pass max_new_tokens= explicitly to generate")
    out = None
    for c in cuts:
        x = c.queries[:, q_pos, None] & c.keys[:, None, :K]
        out = x if out is None else out | x
    return out


def _cut_builder(ctx, plan, nn, sites, cuts) -> None:
    builder = sites.mask_builder(nn)
    args, kw = builder.inputs
    if plan.unhide is not None and ctx.step == 0:  # the 2D mask hides keys for the decode steps, not the prefill
        _unhide(ctx, plan, builder, args, kw)
    emb = kw["inputs_embeds"] if "inputs_embeds" in kw else args[1]
    cache = kw.get("cache", kw.get("past_key_values"))
    past = cache.get_seq_length() if cache is not None else 0
    mask = builder.output
    if mask is not None and not isinstance(mask, torch.Tensor):
        raise SiteError(f"the mask builder returned {type(mask).__name__}; interp edits tensor masks "
                        "(attn_implementation 'sdpa' or 'eager')")
    B, Q = emb.shape[0], emb.shape[1]
    K = past + Q if mask is None else mask.shape[-1]
    q_pos = torch.arange(past, past + Q, device=emb.device)
    cut = _cut(cuts, q_pos, K)
    if cut.shape[0] != B:
        raise SiteError(f"the model runs {B} rows but interp planned {cut.shape[0]}; report this generate option")
    builder.output = ops.cut_mask(mask, cut, q_pos, K, emb.dtype)


def _unhide(ctx, plan, builder, args, kw) -> None:
    """Gives the mask builder the 2D mask without the keys `plan.lower_cuts` hid (rows as HF expanded them)."""
    named = "attention_mask" in kw
    m = kw["attention_mask"] if named else args[2]
    back = plan.unhide.to(m.device).repeat_interleave(ctx.expand, 0)
    if m.dim() != 2 or m.shape != back.shape:
        raise SiteError(f"the mask builder got an attention_mask of shape {tuple(m.shape)}, interp expected "
                        f"{tuple(back.shape)}; report this model")
    m = m + back.to(m.dtype)
    builder.inputs = (args, {**kw, "attention_mask": m}) if named else ((*args[:2], m, *args[3:]), kw)


def walk(ctx, plan) -> None:
    """Apply `plan` at the sites of one forward. Runs inside an nnsight trace body."""
    vlm, nn, sites = ctx.vlm, ctx.vlm.nn, ctx.vlm.sites
    if plan.taps:
        _, lm_kw = sites.lm(nn).inputs
        for t in plan.taps:
            t.fn(ctx, lm_kw)
    cuts = plan.cuts + plan.prefill_cuts if ctx.step == 0 else plan.cuts
    if cuts:
        _cut_builder(ctx, plan, nn, sites, cuts)
    eager = vlm.attn_implementation == "eager"
    attn_layers = set(plan.attention_layers)
    for l in range(vlm.num_layers):
        skips = [e for e in plan.outputs.get(("resid", l), ()) if e.skip]
        if skips:
            _skip(ctx, plan, l, sites.layer(nn, l), skips, attn_layers)
            continue
        if l in attn_layers:
            op = sites.attention_call(nn, l)
            args, kw = op.inputs
            q, k, v, mask = args[1], args[2], args[3], args[4]
            call = AttentionCall(ctx, l, q, k, v, mask, kw.get("scaling", q.shape[-1] ** -0.5))
            layer_cuts = plan.layer_cuts.get(l, ())
            if layer_cuts:
                blocked = _cut(layer_cuts, call.q_positions, call.K)
                call.mask = ops.apply_block(mask, blocked, call.Q, call.K, call.B)
                if eager and call.mask.dtype == torch.bool:
                    call.mask = ops.mask_bias(call.mask, call.Q, call.K, q.dtype, q.device, call.B)
                op.inputs = ((*args[:4], call.mask, *args[5:]), kw)
            edits = [e for e in plan.probs.get(l, ()) if e.decode or ctx.step == 0]
            if edits:
                p = ops.row_probs(q, k, call.mask, call.scale, torch.arange(call.Q, device=q.device))
                vis = call.visible()
                for e in edits:
                    p = e.fn(call, p, vis)
                call._probs = p
                out = torch.matmul(p.to(v.dtype), ops.repeat_kv(v, call.H)).transpose(1, 2).contiguous()
                op.output = (out, p.to(q.dtype))
            elif eager and plan.reads.get(l):
                call.eager_probs = op.output[1]
            for r in plan.reads.get(l, ()):
                r.fn(call)
        if not any((s, l) in plan.outputs for s in ("heads", "attn_out", "mlp_out", "resid")):
            continue
        layer = sites.layer(nn, l)
        if plan.outputs.get(("heads", l)):
            _heads(ctx, l, _path(layer, vlm.adapter.head_out), plan.outputs[("heads", l)])
        for site, env in (("attn_out", layer.self_attn), ("mlp_out", layer.mlp), ("resid", layer)):
            es = [e for e in plan.outputs.get((site, l), ()) if not e.skip]
            if site == "mlp_out" and len(es) < len(plan.outputs.get((site, l), ())):
                _skip_mlp(ctx, l, env, plan.outputs[(site, l)])
                continue
            if not es:
                continue
            value = env.output[0] if site == "attn_out" else env.output
            for e in es:
                new = e.fn(ctx, l, value)
                if new is not None:
                    value = new
                    env.output = (new, *env.output[1:]) if site == "attn_out" else new


def _skip(ctx, plan, l, layer, skips, attn_layers) -> None:
    """The decoder layer does not run: its output is what the skip edits give (the last one wins)."""
    others = [s for s in ("heads", "attn_out", "mlp_out") if plan.outputs.get((s, l))]
    if l in attn_layers or others or len(plan.outputs[("resid", l)]) > len(skips):
        raise SiteError(f"layer {l} is skipped but other edits act inside it ({', '.join(others) or 'attention'}); "
                        "a skipped layer runs nothing to edit")
    value = None
    for e in skips:
        value = e.fn(ctx, l, None)
    layer.skip(value)


def _skip_mlp(ctx, l, mlp, edits) -> None:
    """The MLP does not run: its output is what the skip edit gives from its input (one edit, nothing else there)."""
    if len(edits) > 1:
        raise SiteError(f"layer {l}'s MLP is skipped but other edits act on its output; a skipped MLP runs nothing "
                        "to edit")
    x = mlp.input
    mlp.skip(edits[0].fn(ctx, l, x))


def _path(env, path: str):
    for part in path.split("."):
        env = getattr(env, part)
    return env


def _heads(ctx, l, proj, edits) -> None:
    """"heads" edits at the output projection's input [B, Q, H·Dh], shown to them as [B, Q, H, Dh]."""
    x = proj.input
    B, Q, HD = x.shape
    H = ctx.vlm.hf.config.get_text_config().num_attention_heads
    value = x.view(B, Q, H, HD // H)
    changed = False
    for e in edits:
        new = e.fn(ctx, l, value)
        if new is not None:
            value, changed = new, True
    if changed:
        proj.input = value.reshape(B, Q, HD)


def trace_forward(ctx, plan, inputs: dict, return_cache: bool):
    """One traced forward with `plan` applied. Returns (logits [B, T, V], cache or None)."""
    nn = ctx.vlm.nn
    cache = None
    inputs, kw = _split(inputs)
    if kw:  # an invoke cannot carry M-RoPE positions (see _split): the call adds them
        if ctx.vlm.remote:
            raise SiteError("a pass with explicit M-RoPE position_ids cannot run remotely")
        kw = {"fn": functools.partial(ctx.vlm.hf.__call__, **kw)}
    with nn.trace(inputs, **kw, **_remote(ctx)):
        walk(ctx, plan)
        logits = nnsight.save(nn.output.logits)
        if return_cache:
            cache = nnsight.save(nn.output.cache)
        store = nnsight.save(ctx.store)  # on a remote server ctx is a copy: bring the scratch back
    ctx.store = store
    return logits, cache


def trace_generate(ctx, plan, inputs: dict, kwargs: dict):
    """HF `generate` with `plan` applied at every forward it makes (prefill and each decode step). HF does
    all the decoding (logits processors, stopping criteria, beams, cache reordering); the body follows it
    step by step until it stops. Returns what HF generate returned."""
    nn = ctx.vlm.nn
    with warnings.catch_warnings():
        # The open-ended step loop ends parked on a step HF never runs: nnsight says so; that is the design.
        warnings.filterwarnings("ignore", message=".*(dangling|never ran|did not run|cut short).*")
        inputs, kw = _split(inputs)
        with nn.generate(**kwargs, **kw, **_remote(ctx)) as tracer:
            with tracer.invoke(inputs):
                store = nnsight.save(ctx.store)
                if plan.decode_free:  # what is left acts at the prefill only: the decode steps run untraced
                    ctx.step = 0
                    walk(ctx, plan)
                else:
                    for step in tracer.iter[:]:
                        ctx.step = step
                        walk(ctx, plan)
            with tracer.invoke():
                result = nnsight.save(tracer.result)
    ctx.store = store
    return result


def _split(inputs: dict) -> tuple[dict, dict]:
    """(per-row inputs for the invoke, the rest as call keywords): nnsight splits an invoke's `position_ids` by
    rows along dim 0, which M-RoPE's [3 or 4, B, T] positions do not have."""
    inputs = dict(inputs)
    pos = inputs.get("position_ids")
    kw = {"position_ids": inputs.pop("position_ids")} if pos is not None and pos.dim() == 3 else {}
    return inputs, kw


def _remote(ctx) -> dict:
    r = ctx.vlm.remote
    return {"remote": r} if r else {}

