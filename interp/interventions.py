"""`interp.intervene(vlm, *interventions)`: one engine that walks the model's sites in execution order and
lets each intervention edit or read them.

Order, per forward (and per decode step in generate):
  1. mask builder: every intervention's all-layer edge masks, ANDed into one `and_mask_function`;
  2. per layer, at the attention call: per-layer edge masks (ANDed into the call's mask), then probability
     injections (which re-apply the visibility mask, so cut edges stay cut), then readers (capture) see the
     final probabilities;
  3. per layer: attention output, MLP output, layer output (patching, feature taps).
Interventions are small frozen values; the engine owns all nnsight code.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import nnsight
import torch

from .attention import ops
from .errors import InputError


class Intervention:
    """Base of every intervention. Override the hooks you need; all are optional.

    `name`: key of its diagnostics. `prepare(ctx)` runs before the trace (profiling passes go here).
    `edges(ctx)` → list of (query_mask, key_mask) bool `[B, T+N]` pairs cut in every layer of `edge_layers`.
    `attention(ctx, call)` edits one attention call (block edges, register injections); an optional
    `read(ctx, call)` sees the call's final probabilities after every edit; an optional
    `lm_inputs(ctx, args, kwargs)` sees what the language model received (embeddings, positions);
    `output(ctx, site, layer, value)` edits/reads a module output (`site` in "attn_out", "mlp_out", "resid");
    `prefix_ok(ctx, P)` says whether it can run on a pass that starts after a reused P-token KV prefix;
    `finish(ctx)` → diagnostics dict.
    """

    name = "intervention"

    def prepare(self, ctx: "Context") -> None:
        pass

    def edges(self, ctx: "Context") -> list:
        return []

    def edge_layers(self, ctx: "Context"):
        """None: all layers (applied once, at the mask builder); or an iterable of layer indices."""
        return None

    def attention_layers(self, ctx: "Context") -> set:
        return set()

    def attention(self, ctx: "Context", call: "AttentionCall") -> None:
        pass

    def output_sites(self, ctx: "Context") -> set:
        """{(site, layer), ...} this intervention reads or edits."""
        return set()

    def output(self, ctx: "Context", site: str, layer: int, value):
        return None

    def finish(self, ctx: "Context") -> dict:
        return {}

    def prefix_ok(self, ctx: "Context", length: int) -> bool:
        """Can this intervention run on a pass that starts at position `length` (a reused KV prefix)?"""
        return False


@dataclass
class Context:
    """What interventions see: the model, the batch, the current step, and per-intervention scratch space."""

    vlm: Any
    batch: Any
    layout: Any  # TokenLayout covering prompt + max_new_tokens positions
    max_new_tokens: int = 0
    step: int = 0  # 0 = prefill / forward; k ≥ 1 = k-th decode step
    q_len: int = 0
    k_len: int = 0
    store: dict = field(default_factory=dict)
    interventions: tuple = ()
    mode: str = "forward"  # or "generate"
    generate_kwargs: dict = field(default_factory=dict)
    forward_kwargs: dict = field(default_factory=dict)  # extra model inputs for the forward (e.g. position_ids)
    prefix: "Prefix | None" = None  # a KV cache for the first tokens, computed by a profiling pass

    @property
    def device(self):
        return self.vlm.device

    def group(self, name) -> torch.Tensor:
        """Token group as bool `[B, T+N]` on the model device."""
        return self.layout.group(name).to(self.device)

    def scratch(self, iv) -> dict:
        return self.store.setdefault(id(iv), {})


@dataclass
class Prefix:
    """A profiling pass's KV cache cropped to the first `length` positions, with what the language model
    received there (`embeds` [B, T, D], `positions`: its position_ids, [B, T] or [3/4, B, T]) and the
    profiling pass's `logits` [B, T, V] (valid for the prefix, whose rows no intervention changed)."""

    cache: Any
    length: int
    embeds: torch.Tensor
    positions: torch.Tensor
    logits: torch.Tensor


class AttentionCall:
    """One layer's attention call during the trace. q: [B, H, Q, D], k/v: [B, Hk, K, D] (post-RoPE)."""

    def __init__(self, ctx, layer, q, k, v, mask, scale, eager_probs=None):
        self.ctx, self.layer = ctx, layer
        self.q, self.k, self.v, self.mask, self.scale = q, k, v, mask, scale
        self.B, self.H, self.Q, _ = q.shape
        self.K = k.shape[2]
        self.blocked = None  # [B, Q, K] bool
        self.injections = []
        self._probs = None  # explicit [B, H, Q, K] when injections ran
        self.eager_probs = eager_probs

    @property
    def q_positions(self) -> torch.Tensor:
        """[Q] absolute positions of the queries (the last Q of K)."""
        return torch.arange(self.K - self.Q, self.K, device=self.q.device)

    def rows(self, group: torch.Tensor) -> torch.Tensor:
        """A `[B, T+N]` group restricted to this call's query rows: `[B, Q]`."""
        return group[:, self.q_positions]

    def cols(self, group: torch.Tensor) -> torch.Tensor:
        return group[:, : self.K]

    def block(self, blocked: torch.Tensor) -> None:
        """Cut edges `[B, Q, K]` (True = cut) at this call."""
        self.blocked = blocked if self.blocked is None else (self.blocked | blocked)

    def inject(self, fn) -> None:
        """Register `fn(probs [B, H, Q, K], visible [B, Q, K]) → probs`; applied in order, after masks."""
        self.injections.append(fn)

    def visible(self) -> torch.Tensor:
        return ops.visible(self.mask, self.Q, self.K, self.B, self.q.device)

    def probs(self, rows: torch.Tensor | None = None) -> torch.Tensor:
        """Final attention probabilities (after masks and injections) of query rows `rows` (long [n], None =
        all): [B, H, n, K] float32."""
        if self._probs is not None:
            return self._probs if rows is None else self._probs[:, :, rows]
        if self.eager_probs is not None:
            p = self.eager_probs.float()
            return p if rows is None else p[:, :, rows]
        rows = torch.arange(self.Q, device=self.q.device) if rows is None else rows
        return ops.row_probs(self.q, self.k, self.mask, self.scale, rows)


@dataclass
class ForwardOutput:
    """`logits`: [B, T, V]; `diagnostics`: {intervention name: dict}."""

    logits: torch.Tensor
    diagnostics: dict
    cache: Any = None


@dataclass
class GenerateOutput:
    """`texts`: decoded new tokens per row; `sequences`: [B, T+n] ids as HF returns them; `diagnostics`."""

    texts: list
    sequences: torch.Tensor
    diagnostics: dict
    prompt_len: int = 0

    @property
    def new_tokens(self) -> torch.Tensor:
        return self.sequences[:, self.prompt_len:]


class Run:
    """The result of `intervene`: `.forward(batch)`, `.generate(batch, max_new_tokens=...)`; a context
    manager too (`with interp.intervene(vlm, iv) as run: ...`)."""

    def __init__(self, vlm, interventions):
        for iv in interventions:
            if not isinstance(iv, Intervention):
                raise InputError(f"{iv!r} is not an interp intervention (AIF, VIF, EdgeMask, InjectAttention, ...)")
        names = [iv.name for iv in interventions]
        dup = {n for n in names if names.count(n) > 1}
        if dup:
            raise InputError(f"two interventions share the diagnostics name {sorted(dup)}; give them distinct "
                             "names (e.g. EdgeMask(..., name='cut_a'))")
        self.vlm = vlm
        self.interventions = tuple(interventions)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    # ------------------------------------------------------------------ public
    def forward(self, batch, *, grad: bool = False, inputs: dict | None = None,
                return_cache: bool = False) -> ForwardOutput:
        """One forward with every intervention applied. Returns logits `[B, T, V]` and diagnostics.

        grad: keep the autograd graph (e.g. to train through an injection); inputs: extra model inputs
        (e.g. position_ids); return_cache: run with use_cache and return the KV cache as `.cache`."""
        ctx = self._context(batch, 0)
        for iv in self.interventions:
            iv.prepare(ctx)
        with torch.set_grad_enabled(grad):
            return self._forward(ctx, {**batch.inputs, **(inputs or {})}, return_cache)

    def generate(self, batch, max_new_tokens: int = 16, **generate_kwargs) -> GenerateOutput:
        """Greedy (by default) generation with every intervention applied at prefill and each decode step."""
        if max_new_tokens < 1:
            raise InputError(f"max_new_tokens must be ≥ 1, got {max_new_tokens}")
        ctx = self._context(batch, max_new_tokens, generate_kwargs)
        for iv in self.interventions:
            iv.prepare(ctx)
        with torch.no_grad():
            return self._generate(ctx, batch, max_new_tokens, **generate_kwargs)

    # ------------------------------------------------------------------ engine
    def _context(self, batch, n, generate_kwargs=None):
        layout = batch.layout.extend(n) if n else batch.layout
        return Context(vlm=self.vlm, batch=batch, layout=layout, max_new_tokens=n, interventions=self.interventions,
                       mode="generate" if n else "forward", generate_kwargs=dict(generate_kwargs or {}))

    def _plan(self, ctx):
        L = self.vlm.num_layers
        global_edges, layer_edges = [], {}
        for iv in self.interventions:
            e = iv.edges(ctx)
            if not e:
                continue
            layers = iv.edge_layers(ctx)
            if layers is None:
                global_edges += e
            else:
                for l in layers:
                    if not 0 <= l < L:
                        raise InputError(f"{iv.name}: layer {l} out of range; the model has {L} layers")
                    layer_edges.setdefault(l, []).extend(e)
        attn_layers = {}
        for iv in self.interventions:
            for l in iv.attention_layers(ctx):
                if not 0 <= l < L:
                    raise InputError(f"{iv.name}: layer {l} out of range; the model has {L} layers")
                attn_layers.setdefault(l, []).append(iv)
        out_sites = {}
        for iv in self.interventions:
            for site, l in iv.output_sites(ctx):
                if not 0 <= l < L:
                    raise InputError(f"{iv.name}: layer {l} out of range; the model has {L} layers")
                out_sites.setdefault((site, l), []).append(iv)
        return global_edges, layer_edges, attn_layers, out_sites

    def _check_edges(self, ctx, edges):
        """A query row left with no visible key is an error (softmax over nothing)."""
        if not edges:
            return
        lay = ctx.layout
        T = lay.seq_len
        qsel = torch.zeros(lay.shape, dtype=torch.bool)
        for qm, _ in edges:
            qsel |= qm.cpu()
        for b in range(lay.batch_size):
            rows = (qsel[b] & ~lay.pad[b]).nonzero().squeeze(1)
            if len(rows) == 0:
                continue
            blocked = torch.zeros(len(rows), T, dtype=torch.bool)
            for qm, km in edges:
                blocked |= qm.cpu()[b, rows][:, None] & km.cpu()[b][None, :]
            causal = rows[:, None] >= torch.arange(T)[None, :]
            vis = causal & ~lay.pad[b][None, :] & ~blocked
            empty = ~vis.any(1)
            if empty.any():
                raise InputError(f"edge mask leaves row {b}, position {int(rows[empty][0])} with no visible key; "
                                 "keep at least one key (e.g. do not cut text queries from all text keys)")

    def _run_sites(self, ctx, plan):
        """Walk the sites of one forward (prefill or decode step) in execution order. Runs inside a trace."""
        vlm, nn, sites = self.vlm, self.vlm.nn, self.vlm.sites
        global_edges, layer_edges, attn_layers, out_sites = plan
        if global_edges:
            qms = [qm for qm, _ in global_edges]
            kms = [km for _, km in global_edges]

            def keep(b, h, q_idx, kv_idx):
                cut = qms[0][b, q_idx] & kms[0][b, kv_idx]
                for qm, km in zip(qms[1:], kms[1:]):
                    cut = cut | (qm[b, q_idx] & km[b, kv_idx])
                return ~cut

            builder = sites.mask_builder(nn)
            args, kw = builder.inputs
            prev = kw.get("and_mask_function")
            kw["and_mask_function"] = keep if prev is None else (lambda *a: keep(*a) & prev(*a))
            builder.inputs = (args, kw)
        tappers = [iv for iv in self.interventions if hasattr(iv, "lm_inputs")]
        if tappers:
            lm_args, lm_kw = sites.lm(nn).inputs
            for iv in tappers:
                iv.lm_inputs(ctx, lm_args, lm_kw)
        eager = vlm.attn_implementation == "eager"
        for l in range(vlm.num_layers):
            if l in layer_edges or l in attn_layers:
                op = sites.attention_call(nn, l)
                args, kw = op.inputs
                q, k, v, mask = args[1], args[2], args[3], args[4]
                call = AttentionCall(ctx, l, q, k, v, mask, kw.get("scaling", q.shape[-1] ** -0.5))
                ctx.q_len, ctx.k_len = call.Q, call.K
                for qm, km in layer_edges.get(l, []):
                    call.block(call.rows(qm)[:, :, None] & call.cols(km)[:, None, :])
                for iv in attn_layers.get(l, []):
                    iv.attention(ctx, call)
                if call.blocked is not None:
                    call.mask = ops.apply_block(mask, call.blocked, call.Q, call.K, call.B)
                    if eager and call.mask.dtype == torch.bool:
                        call.mask = ops.mask_bias(call.mask, call.Q, call.K, q.dtype, q.device, call.B)
                    args = (*args[:4], call.mask, *args[5:])
                    op.inputs = (args, kw)
                if call.injections:
                    p = ops.row_probs(q, k, call.mask, call.scale, torch.arange(call.Q, device=q.device))
                    vis = call.visible()
                    for fn in call.injections:
                        p = fn(p, vis)
                    call._probs = p
                    out = torch.matmul(p.to(v.dtype), ops.repeat_kv(v, call.H)).transpose(1, 2).contiguous()
                    op.output = (out, p.to(q.dtype))
                elif eager and any(getattr(iv, "reads_probs", False) for iv in attn_layers.get(l, [])):
                    call.eager_probs = op.output[1]
                for iv in attn_layers.get(l, []):
                    if hasattr(iv, "read"):
                        iv.read(ctx, call)
            layer = sites.layer(nn, l)
            for site, module in (("attn_out", lambda: layer.self_attn), ("mlp_out", lambda: layer.mlp),
                                 ("resid", lambda: layer)):
                ivs = out_sites.get((site, l))
                if not ivs:
                    continue
                env = module()
                value = env.output[0] if site == "attn_out" else env.output
                for iv in ivs:
                    new = iv.output(ctx, site, l, value)
                    if new is not None:
                        value = new
                        if site == "attn_out":
                            env.output = (new, env.output[1])
                        else:
                            env.output = new

    def _forward(self, ctx, inputs, return_cache=False):
        plan = self._plan(ctx)
        self._check_edges(ctx, plan[0] + [e for es in plan[1].values() for e in es])
        nn = self.vlm.nn
        if ctx.prefix is not None:
            inputs, _ = self._suffix_inputs(ctx)
        else:
            inputs = {**inputs, **ctx.forward_kwargs}
        if return_cache:
            inputs["use_cache"] = True
        cache = None
        with nn.trace(dict(inputs), **self._remote_kw()):
            self._run_sites(ctx, plan)
            logits = nnsight.save(nn.output.logits)
            if return_cache:
                cache = nnsight.save(nn.output.past_key_values)
            # On a remote server ctx is a copy: bring what the interventions recorded back explicitly.
            store = nnsight.save(ctx.store)
        ctx.store = store
        if ctx.prefix is not None:  # prefix rows are unchanged by every intervention: take them from profiling
            logits = torch.cat([ctx.prefix.logits[:, : ctx.prefix.length].to(logits.dtype), logits], dim=1)
        diags = {iv.name: iv.finish(ctx) for iv in self.interventions}
        return ForwardOutput(logits=logits, diagnostics=diags, cache=cache)

    def _suffix_inputs(self, ctx):
        """Model inputs that continue from `ctx.prefix`: the language model's own embeddings and positions for
        positions P..T (no pixels needed: the image features are in the embeddings)."""
        pre, b = ctx.prefix, ctx.batch
        T = b.input_ids.shape[1]
        P = pre.length
        inputs = {"inputs_embeds": pre.embeds[:, P:], "attention_mask": b.inputs["attention_mask"],
                  "past_key_values": pre.cache, "position_ids": pre.positions[..., P:],
                  "cache_position": torch.arange(P, T, device=pre.embeds.device), "use_cache": True}
        return inputs, T

    def _generate(self, ctx, batch, n, **kwargs):
        plan = self._plan(ctx)
        self._check_edges(ctx, plan[0] + [e for es in plan[1].values() for e in es])
        tok = self.vlm.tokenizer
        kwargs.setdefault("pad_token_id", tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id)
        greedy = not kwargs.get("do_sample") and set(kwargs) <= {"do_sample", "pad_token_id"}
        if ctx.prefix is not None or (greedy and not self.vlm.remote):
            return self._greedy(ctx, batch, n, plan, kwargs["pad_token_id"])
        return self._hf_generate(ctx, batch, n, plan, **kwargs)

    def _eos(self) -> torch.Tensor:
        eos = self.vlm.hf.generation_config.eos_token_id
        eos = eos if isinstance(eos, (list, tuple)) else ([eos] if eos is not None else [])
        return torch.tensor(sorted(set(eos)), dtype=torch.long, device=self.vlm.device)

    def _hf_generate(self, ctx, batch, n, plan, **kwargs):
        """HF generate inside an nnsight trace (sampling, beams, remote), sites edited at every step.

        End-of-sequence stopping is off during the trace (a step that never comes would leave the trace body
        waiting), then applied afterwards exactly as HF does: tokens after a row's EOS become padding and the
        sequence ends when every row has finished."""
        import copy

        nn = self.vlm.nn
        gc = copy.deepcopy(self.vlm.hf.generation_config)
        gc.eos_token_id = None
        kwargs.setdefault("do_sample", False)
        with nn.generate(dict(batch.inputs), max_new_tokens=n, generation_config=gc,
                         **self._remote_kw(), **kwargs) as tracer:
            store = nnsight.save(ctx.store)
            for step in tracer.iter[:n]:
                ctx.step = int(step) if not isinstance(step, torch.Tensor) else int(step.item())
                self._run_sites(ctx, plan)
            sequences = nnsight.save(tracer.result)
        ctx.store = store
        T = batch.input_ids.shape[1]
        new = sequences[:, T:].clone()
        eos = self._eos()
        if len(eos):
            hit = torch.isin(new, eos.to(new.device))
            after = (hit.long().cumsum(1) - hit.long()) > 0  # strictly after the first EOS
            new[after] = kwargs["pad_token_id"]
            finished = hit.any(1)
            if finished.all():
                new = new[:, : int(hit.long().argmax(1).max()) + 1]
        return self._output(ctx, torch.cat([sequences[:, :T], new], 1), T)

    def _greedy(self, ctx, batch, n, plan, pad):
        """Greedy decoding as HF does it (finished rows padded, stop when every row finished), one forward per
        token over a KV cache: the first from `ctx.prefix` (the suffix only) or the whole prompt.

        Forwards whose only edits are all-layer edge masks skip nnsight: the same edges go in as an explicit
        4D mask (nnsight's per-op dispatch costs more than a small model's decode step)."""
        nn, hf = self.vlm.nn, self.vlm.hf
        global_edges, layer_edges, attn_layers, out_sites = plan
        masks_only = not (layer_edges or attn_layers or out_sites
                          or any(hasattr(iv, "lm_inputs") for iv in self.interventions))
        T = batch.input_ids.shape[1]
        am = batch.inputs["attention_mask"]
        if ctx.prefix is not None:
            inputs, _ = self._suffix_inputs(ctx)
            positions, first = ctx.prefix.positions, ctx.prefix.length
        else:
            pos = self.vlm.generation_positions(batch)
            inputs = {**batch.inputs, "use_cache": True, **({} if pos is None else {"position_ids": pos})}
            positions, first = None, 0
        eos = self._eos()
        seq = batch.input_ids
        done = torch.zeros(seq.shape[0], dtype=torch.bool, device=seq.device)
        for s in range(n):
            ctx.step = s
            if masks_only and positions is not None:
                q_pos = torch.arange(first if s == 0 else T + s - 1, T + s, device=am.device)
                inputs["attention_mask"] = self._step_mask(global_edges, am, q_pos)
                with torch.no_grad():
                    out = hf(**inputs)
                logits, cache = out.logits[:, -1], out.past_key_values
            else:
                with nn.trace(dict(inputs)):
                    if positions is None:  # what the language model was given (M-RoPE: computed by the model)
                        positions = nnsight.save(self.vlm.sites.lm(nn).inputs[1]["position_ids"])
                    self._run_sites(ctx, plan)
                    logits = nnsight.save(nn.output.logits[:, -1])
                    cache = nnsight.save(nn.output.past_key_values)
                    store = nnsight.save(ctx.store)
                ctx.store = store
            nxt = torch.where(done, torch.full_like(logits[:, 0], pad, dtype=torch.long), logits.argmax(-1))
            seq = torch.cat([seq, nxt[:, None]], 1)
            if len(eos):
                done |= torch.isin(nxt, eos)
            if bool(done.all()) or s == n - 1:
                break
            am = torch.cat([am, torch.ones_like(am[:, :1])], 1)
            positions = positions[..., -1:] + 1  # text continues one position at a time on every axis
            inputs = {"input_ids": nxt[:, None], "attention_mask": am, "past_key_values": cache,
                      "position_ids": positions, "cache_position": torch.tensor([T + s], device=seq.device),
                      "use_cache": True}
        return self._output(ctx, seq, T)

    def _output(self, ctx, seq, T):
        texts = [t.strip() for t in self.vlm.tokenizer.batch_decode(seq[:, T:], skip_special_tokens=True)]
        diags = {iv.name: iv.finish(ctx) for iv in self.interventions}
        return GenerateOutput(texts=texts, sequences=seq, diagnostics=diags, prompt_len=T)

    def _step_mask(self, edges, am, q_pos):
        """[B, 1, Q, K] additive mask for queries at absolute positions `q_pos` [Q] over K = am.shape[1] keys:
        causal, pad keys and the edges' cut keys get finfo.min (the edges the mask builder would cut)."""
        K = am.shape[1]
        causal = q_pos[:, None] >= torch.arange(K, device=am.device)[None, :]  # [Q, K]
        allowed = am.bool()[:, None, :] & causal[None]
        for qm, km in edges:
            allowed &= ~(qm[:, q_pos, None] & km[:, None, :K])
        neg = torch.finfo(self.vlm.dtype).min
        return torch.zeros(allowed.shape, dtype=self.vlm.dtype, device=am.device).masked_fill(~allowed, neg)[:, None]

    def _remote_kw(self):
        r = self.vlm.remote
        return {"remote": r} if r else {}


def intervene(vlm, *interventions) -> Run:
    """Compose interventions on a VLM: `run = intervene(vlm, AIF(), EdgeMask("question", "vision"))`."""
    return Run(vlm, interventions)
