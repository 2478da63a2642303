"""The analyses, declared once: each module `analyses/<name>.py` ends with `ANALYSIS = Analysis(...)` and `NAMES`
lists them in the main job's order. The main job, REPORT, the notebooks and the tests read this list; adding an
analysis is a module and one line here.

    from analyses import vision_attention_ratio as a
    rec = a.compute(model="toy", data="toy", limit=20)    # the numbers + provenance, a JSON-able dict
    a.plot(rec, "out")                                      # → out/vision_attention_ratio.png, .pdf
    print(a.finding(rec))                                   # its REPORT paragraph
    a.run(model="toy", limit=20, out="out")                 # compute + out/vision_attention_ratio.json + plot

`python -m analyses.<name> --help` is the same call from the command line (`analyses.cli`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from typing import Callable

# The main job's order: premises runs last (it reads oracle_masks.json and vif_ablation.json for its headroom)
NAMES = ("vision_attention_ratio", "attenuation_violin", "attention_heatmaps", "token_dynamics", "mu_masking",
         "aif_ratios", "oracle_masks", "vif_focus", "vif_ablation", "method_table", "patching", "knockout_flow",
         "logit_lens", "premises")


@dataclass(frozen=True)
class Option:
    """An analysis's own keyword argument of `compute` (flag `--<name with dashes>`). parse: turns the flag's
    text into the value (default `str`); a keyword caller passes the value itself."""

    name: str
    default: object
    help: str
    parse: Callable = str


@dataclass(frozen=True)
class Analysis:
    """One analysis.

    measure(vlm, samples, s: runner.Settings, **options) -> dict: the numbers ([N] / [N, L] per-sample values,
    summaries, tables), from the loaded model and samples. plot(data, out_dir) -> [png, pdf] from the record
    alone (a dict or the JSON's path). finding(data) -> str: the REPORT paragraph, verdicts in bold
    (`analyses.findings`). limit / batch_size: the defaults of `compute`; main_limit: the main job's limit on the
    toy (None: `limit`); notebook_limit: the notebook's. claim: what REPORT's summary says it tests (None:
    descriptive, left out of the summary).
    """

    name: str
    doc: str
    title: str
    measure: Callable
    plot: Callable
    finding: Callable
    limit: int
    batch_size: int
    main_limit: int | None = None
    notebook_limit: int = 16
    claim: str | None = None
    options: tuple[Option, ...] = field(default=())

    def compute(self, **kwargs) -> dict:
        """The record: `model`, `data`, `limit`, `seed`, `batch_size`, ... (`runner.Settings`) and this
        analysis's options as keywords; nothing is written."""
        from analyses import runner

        return runner.compute(self, kwargs)

    def run(self, **kwargs) -> dict:
        """`compute`, then OUT/<name>.json and OUT/<name>.png/.pdf (`out=`, default runs/<name>/<model>-<data>)."""
        from analyses import runner

        return runner.run(self, kwargs)

    def main(self, argv=None) -> dict:
        """The command line: `python -m analyses.<name> --flags` → `run`."""
        from analyses import cli

        return cli.main(self, argv)


def get(name: str) -> Analysis:
    """The declared analysis `name` (one of NAMES)."""
    if name not in NAMES:
        from interp.errors import InputError

        raise InputError(f"no analysis {name!r}; the analyses are {', '.join(NAMES)}")
    return importlib.import_module(f"analyses.{name}").ANALYSIS


def every() -> list[Analysis]:
    """Every analysis, in the main job's order."""
    return [get(n) for n in NAMES]
