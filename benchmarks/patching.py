"""Batched activation patching against one forward per variant: a full layer × token sweep of a toy mirror pair.

    .venv/bin/python -m benchmarks.patching                  # ~2 min on 2 shared CPU cores
    .venv/bin/python -m benchmarks.patching --quick --out /tmp/patching.json   # smoke run: two layers, one round

Model: the shipped toy LLaVA (8 decoder layers), one spatial question and its mirror image
(`interp.toy.mirror`): clean = the scene, corrupt = its mirror, T ≈ 81 positions, so 8 × T variants at
site "resid". Variants, interleaved, one thread:

- `per_variant` (the baseline): what `patch_sweep` did before batching: the clean run recorded once, then per
  (layer, position) one `intervene(vlm, Patch(...)).forward(corrupt)` and the metric;
- `batched`: `interp.patch_sweep(vlm, clean, corrupt, positions="tokens", normalize=False)`: many variants
  per forward through the batch dimension, each forward continuing from the corrupt run's KV cache and
  skipping the layers before the patched one;
- `knockout_per_variant` / `knockout_batched`: the same comparison for `interp.knockout_flow` (window 3):
  one oracle-style forward per (edge set, window) with an `EdgeMask` in the window's layers, against the
  batched call.

Results must be identical (max |difference| of the metric maps is reported and checked ≤ 1e-4). Target (issue
16): batched ≥ 5× faster than per_variant, checked on the paired ratio. Writes
`benchmarks/results/patching.json` (or `--out`).
"""

from __future__ import annotations

import argparse
import os

import torch

from benchmarks import harness

TARGET = 5.0


def pair(vlm):
    """(clean, corrupt): the first left/right question of the held-out spatial scenes and its mirror image."""
    import interp

    samples = interp.toy.dataset(40, seed=interp.toy.EVAL_SEED, families=["spatial"])
    s = next(x for x in samples if x.answer in ("left", "right"))
    m = interp.toy.mirror(s, "x")
    return (vlm.prepare(images=[s.image], questions=[s.question]),
            vlm.prepare(images=[m.image], questions=[m.question]))


def per_variant(vlm, clean, corrupt, layers):
    """The unbatched reference: [L, T] raw metric (clean-top − corrupt-top logit at the last position)."""
    import interp
    from interp.patching import Record, logit_diff

    rec = Record(site="resid", layers=tuple(layers))
    c = interp.intervene(vlm, rec).forward(clean)
    acts = c.diagnostics[rec.name]
    k = interp.intervene(vlm).forward(corrupt).logits
    last = corrupt.layout.last.int().argmax(1)
    b = torch.arange(len(last))
    good, bad = c.logits[b, last].argmax(-1), k[b, last].argmax(-1)
    T = corrupt.layout.seq_len
    out = torch.full((len(layers), T), float("nan"))
    for i, l in enumerate(layers):
        for t in range(T):
            pos = torch.zeros(1, T, dtype=torch.bool)
            pos[0, t] = True
            logits = interp.intervene(vlm, interp.Patch("resid", (l,), pos, {l: acts[l]})).forward(corrupt).logits
            out[i, t] = logit_diff(logits, last, good, bad)[0]
    return out


def knockout_per_variant(vlm, batch, window):
    """The unbatched knockout reference: [E, W] relative change, one forward per (edge set, window)."""
    import interp
    from interp.flow import EDGES

    L = vlm.num_layers
    last = batch.layout.last.int().argmax(1)
    b = torch.arange(len(last))
    p0 = torch.softmax(interp.intervene(vlm).forward(batch).logits[b, last], -1)
    tgt = p0.argmax(-1)
    p = p0[b, tgt]
    out = torch.zeros(len(EDGES), L - window + 1)
    for e, (q, k) in enumerate(EDGES.values()):
        for s in range(L - window + 1):
            cut = interp.EdgeMask(q, k, layers=tuple(range(s, s + window)))
            pc = torch.softmax(interp.intervene(vlm, cut).forward(batch).logits[b, last], -1)[b, tgt]
            out[e, s] = ((pc - p) / p).mean()
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="two layers, 1 repeat: a smoke run")
    ap.add_argument("--out", default=os.path.join(harness.RESULTS, "patching.json"))
    args = ap.parse_args(argv)
    with harness.session(args.threads):
        import interp

        vlm = interp.toy.load()
        clean, corrupt = pair(vlm)
        layers = [0, vlm.num_layers - 1] if args.quick else list(range(vlm.num_layers))
        repeats = 1 if args.quick else args.repeats
        window = 3
        out = {}  # each variant's last result: the comparison below needs no extra run

        def keep(name, fn):
            return lambda: out.__setitem__(name, fn())

        variants = {
            "per_variant": keep("per_variant", lambda: per_variant(vlm, clean, corrupt, layers)),
            "batched": keep("batched", lambda: interp.patch_sweep(vlm, clean, corrupt, positions="tokens",
                                                                  layers=layers, normalize=False).effect),
            "knockout_per_variant": keep("knockout_per_variant", lambda: knockout_per_variant(vlm, clean, window)),
            "knockout_batched": keep("knockout_batched", lambda: interp.knockout_flow(vlm, clean, window=window).change),
        }
        raw = harness.interleave(variants, repeats=repeats, warmup=0 if args.quick else 1)
        summary = harness.summarize(raw, "per_variant")
        ko = harness.summarize({k: raw[k] for k in ("knockout_per_variant", "knockout_batched")}, "knockout_per_variant")
        diff = float((out["per_variant"] - out["batched"]).abs().max())
        kdiff = float((out["knockout_per_variant"] - out["knockout_batched"]).abs().max())
        speedup = 1 / summary["paired_ratio"]["batched"]
        payload = {
            "benchmark": "patching", "quick": args.quick, "environment": harness.environment(),
            "config": {"model": "interp.toy.load()", "decoder_layers": vlm.num_layers, "layers": layers,
                       "seq_len": int(corrupt.input_ids.shape[1]), "variants": len(layers) * corrupt.layout.seq_len,
                       "knockout_window": window, "repeats": repeats, "threads": args.threads},
            "raw_s": raw, **summary,
            "speedup": {"patch_sweep": speedup, "patch_sweep_ratio_of_medians": 1 / summary["ratio"]["batched"],
                        "knockout_flow": 1 / ko["paired_ratio"]["knockout_batched"]},
            "max_abs_difference": {"patch_sweep": diff, "knockout_flow": kdiff},
            "targets": {"speedup": TARGET, "max_abs_difference": 1e-4},
            "met": {"speedup": speedup >= TARGET, "identical": diff <= 1e-4 and kdiff <= 1e-4},
        }
        path = harness.write(args.out, payload)
        print(f"patch_sweep batched {speedup:.1f}× faster than one forward per variant (max |Δ| {diff:.1e}); "
              f"knockout_flow {payload['speedup']['knockout_flow']:.1f}× (max |Δ| {kdiff:.1e}) → {path}")
        return payload


if __name__ == "__main__":
    main()
