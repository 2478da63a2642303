"""The papers' benchmarks as lmms-eval defines them, loaded from local hub copies: `benchmark(name, root)`.

    samples = interp.data.benchmark("mmstar", "data/MMStar")                  # lmms-eval's split ("val")
    samples = interp.data.benchmark("refcoco", "data/RefCOCO", split="testA", limit=200)
    interp.data.score(samples[0], "The answer is (B).")                        # lmms-eval's process_results

Every `Sample.question` is the prompt lmms-eval's `doc_to_text` builds (default kwargs, or a named style of
`interp.data.prompts`); `Sample.task` names the rule `score` applies (`interp.data.lmms`). The facts, with
file references: ../shared/BENCHMARKS.md. Rows are decoded only for the samples picked (`limit` = a seeded
subset, nested across limits; lmms-eval's --limit takes the first N instead).
"""

from __future__ import annotations

import base64
import json
import math
import string
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from interp.data import hub, prompts
from interp.data.lmms import box_convention
from interp.data.loaders import _open_images, subsample
from interp.data.prompts import doc_to_text
from interp.data.schema import Sample
from interp.errors import InputError


@dataclass(frozen=True)
class Benchmark:
    """One benchmark: where lmms-eval reads it, its schema and its generation settings.

    kind: the prompt/row builder; split: lmms-eval's split (None: one task per split, pass split=);
    required: the columns lmms-eval's functions index; hub_columns: the hub schema (recognises a directory
    that holds another benchmark); ids: columns tried, in order, for unique sample ids (else the row number);
    max_new_tokens: lmms-eval's generation_kwargs (None: left to the model class); dirs: folder names looked
    for under a data root (`find_copy`).
    """

    name: str
    hub: str
    task: str
    kind: str
    split: str | None
    required: tuple[str, ...]
    hub_columns: tuple[str, ...]
    ids: tuple[str, ...] = ()
    config: str | None = None
    max_new_tokens: int | None = None
    until: tuple[str, ...] = ("\n\n",)
    dirs: tuple[str, ...] = ()


_REC_COLS = ("question_id", "image", "question", "answer", "segmentation", "bbox", "iscrowd", "file_name")
_HR_COLS = ("index", "question", "answer", "category", "A", "B", "C", "D", "cycle_category", "image")
_HR_REQ = ("image", "question", "answer", "category", "cycle_category", "index")
BENCHMARKS = {b.name: b for b in (
    Benchmark("vstar", "lmms-lab-encoder/vstar-bench", "vstar_bench", "vstar", "test",
              ("image", "text", "label", "question_id"), ("image", "text", "label", "question_id", "category"),
              ids=("question_id",), max_new_tokens=16, dirs=("vstar-bench",)),
    Benchmark("realworldqa", "lmms-lab-encoder/RealWorldQA", "realworldqa", "realworldqa", "test",
              ("image", "question", "answer"), ("image", "question", "answer"), max_new_tokens=16,
              dirs=("RealWorldQA",)),
    Benchmark("mmstar", "Lin-Chen/MMStar", "mmstar", "mmstar", "val",
              ("image", "question", "answer", "index", "category", "l2_category"),
              ("index", "question", "image", "answer", "category", "l2_category", "meta_info"), ids=("index",),
              dirs=("MMStar",)),
    Benchmark("textvqa", "lmms-lab-encoder/textvqa", "textvqa_val", "textvqa", "validation",
              ("image", "question", "question_id"),
              ("image_id", "question_id", "question", "question_tokens", "image", "image_width", "image_height",
               "flickr_original_url", "flickr_300k_url", "answers", "image_classes", "set_name", "ocr_tokens"),
              ids=("question_id",), until=("ASSISTANT:",), dirs=("textvqa", "TextVQA")),
    Benchmark("countbench", "vikhyatk/CountBenchQA", "countbench", "countbench", "test",
              ("image", "question", "number"), ("image", "text", "question", "number"), max_new_tokens=16,
              dirs=("CountBenchQA",)),
    Benchmark("hrbench4k", "DreamMr/HR-Bench", "hrbench4k", "hrbench", "hrbench_4k", _HR_REQ, _HR_COLS,
              ids=("index",), config="hrbench_version_split", dirs=("HR-Bench",)),
    Benchmark("hrbench8k", "DreamMr/HR-Bench", "hrbench8k", "hrbench", "hrbench_8k", _HR_REQ, _HR_COLS,
              ids=("index",), config="hrbench_version_split", dirs=("HR-Bench",)),
    Benchmark("pope", "lmms-lab-encoder/POPE", "pope", "pope", "test", ("image", "question", "answer", "question_id"),
              ("id", "question_id", "question", "answer", "image_source", "image", "category"),
              ids=("id", "question_id"), max_new_tokens=128, dirs=("POPE",)),
    Benchmark("refcoco", "lmms-lab-encoder/RefCOCO", "refcoco_bbox_rec_<split>", "rec", None,
              ("image", "answer", "bbox", "question_id"), _REC_COLS, ids=("question_id",), until=("ASSISTANT:",),
              dirs=("RefCOCO",)),
    Benchmark("refcoco+", "lmms-lab-encoder/RefCOCOplus", "refcoco+_bbox_rec_<split>", "rec", None,
              ("image", "answer", "bbox", "question_id"), _REC_COLS, ids=("question_id",), until=("ASSISTANT:",),
              dirs=("RefCOCOplus", "refcocoplus")),
    Benchmark("refcocog", "lmms-lab-encoder/RefCOCOg", "refcocog_bbox_rec_<split>", "rec", None,
              ("image", "answer", "bbox", "question_id"), _REC_COLS, ids=("question_id",), until=("ASSISTANT:",),
              dirs=("RefCOCOg",)),
)}
REC_SPLITS = {"refcoco": ("val", "test", "testA", "testB"), "refcoco+": ("val", "testA", "testB"),
              "refcocog": ("val", "test")}


def get(name: str) -> Benchmark:
    """The Benchmark called `name`; an error listing the known names otherwise."""
    if name not in BENCHMARKS:
        raise InputError(f"unknown benchmark {name!r}; known benchmarks: {', '.join(BENCHMARKS)}")
    return BENCHMARKS[name]


def find_copy(name: str, data_root) -> Path:
    """The local copy of benchmark `name` under `data_root`: DATA_ROOT/<name> or DATA_ROOT/<hub name>
    (e.g. `POPE` for lmms-lab-encoder/POPE)."""
    b = get(name)
    tried = [Path(data_root) / d for d in (b.name, *b.dirs, b.hub.split("/")[-1])]
    for p in tried:
        if p.is_dir():
            return p
    raise InputError(f"no local copy of {name} under {str(data_root)!r}; tried {[str(p) for p in tried]}. Get it with "
                     f"`hf download --repo-type dataset {b.hub} --local-dir {tried[1 if b.dirs else 0]}`")


def benchmark(name: str, root, *, split: str | None = None, limit: int | None = None, seed: int = 0,
              style: str = "lmms-eval", box: str = "unit") -> list[Sample]:
    """Samples of benchmark `name` from its local hub copy `root`, prompts and scoring as lmms-eval's.
    (`open_benchmark` takes the same arguments and decodes images only for the samples asked for.)

    split: default lmms-eval's split for the task (RefCOCO/+/g: one task per split, so pass it).
    limit, seed: a seeded subset (see `interp.data.loaders.subsample`); RefCOCO counts expressions.
    style: a prompt style of `interp.data.prompts.STYLES` ("lmms-eval", "bare", "vicrop", ...).
    box: REC only, how replies give boxes (`interp.data.lmms.BOX_CONVENTIONS`: "unit" as lmms-eval asks,
        "qwen2.5-vl" for Qwen2.5-VL's absolute pixels of its resized image).
    """
    return open_benchmark(name, root, split=split, limit=limit, seed=seed, style=style, box=box).samples()


def open_benchmark(name: str, root, *, split: str | None = None, limit: int | None = None, seed: int = 0,
                   style: str = "lmms-eval", box: str = "unit") -> BenchmarkSplit:
    """The split `benchmark` would load, opened: its sample ids now, the samples (images decoded) on
    `.samples(positions)`. For runs over thousands of images, a chunk at a time."""
    b = get(name)
    st, conv = prompts.style(style), box_convention(box)
    root = hub.check_dir(root, name)
    _check_schema(b, root)
    have = hub.splits(root, b.config)
    if split is None and b.split is None:
        raise InputError(f"{name} has one lmms-eval task per split ({', '.join(REC_SPLITS[name])}); pass split=..."
                         f" ({str(root)!r} holds {have})")
    split = split or b.split
    if split not in have:
        raise InputError(f"{name}: {str(root)!r} has no split {split!r}; it has {have}. Pass split= one of them, or "
                         f"download the full copy of {b.hub}")
    return BenchmarkSplit(b, hub.open_split(root, split, b.config), root, split, limit, seed,
                          st.kwargs_for(b.kind), conv.name)


def _check_schema(b: Benchmark, root: Path) -> None:
    cols = set(hub.columns(root))
    # Another benchmark's full schema explains the columns better than this one's: a wrong folder.
    others = [o for o in BENCHMARKS.values() if o.hub_columns != b.hub_columns and set(o.hub_columns) <= cols]
    best = max(others, key=lambda o: len(o.hub_columns), default=None)
    if best is not None and len(best.hub_columns) > len(set(b.hub_columns) & cols):
        raise InputError(f"{str(root)!r} holds {best.name}'s schema ({best.hub}: columns {sorted(cols)}), not "
                         f"{b.name}'s; pass benchmark({best.name!r}, ...) or the folder of {b.hub}")
    missing = [c for c in b.required if c not in cols]
    if missing:
        raise InputError(f"{b.name}: {str(root)!r} lacks column(s) {missing} (it has {sorted(cols)}); lmms-eval's "
                         f"{b.task} reads them: use an unmodified copy of {b.hub}")


# --- rows → samples --------------------------------------------------------------------------------------

class BenchmarkSplit:
    """One benchmark split, rows picked (limit / seed), images not yet decoded.

    ids: the sample ids in order; len(split); split.samples(positions=None) → the Samples at those
    positions (all by default), each row's image decoded once per call.
    """

    def __init__(self, b: Benchmark, ds, root: Path, split: str, limit, seed, kwargs, box: str):
        self.benchmark, self.split, self.root = b, split, root
        self._ds, self._kwargs, self._box = ds, kwargs, box
        row_ids = _ids(b, ds)
        if b.kind == "rec":  # one sample per referring expression (lmms-eval's process_docs)
            units = [(i, k) for i, exprs in enumerate(ds["answer"]) for k in range(len(exprs or ()))]
        else:
            units = [(i, None) for i in range(len(ds))]
        self._units = [units[j] for j in subsample(len(units), limit, seed)]
        self.ids = [row_ids[i] if k is None else f"{row_ids[i]}:{k}" for i, k in self._units]

    def __len__(self) -> int:
        return len(self._units)

    def samples(self, positions=None) -> list[Sample]:
        picked = [(p, *self._units[p]) for p in (range(len(self)) if positions is None else positions)]
        rows = sorted({i for _, i, _ in picked})
        table = dict(zip(rows, self._ds.select(rows))) if rows else {}
        images, out = {}, []
        for p, i, k in picked:
            row, where = table[i], f"{self.root} ({self.benchmark.name}, split {self.split!r}), row {i}"
            if i not in images:
                images[i] = _image(row["image"], where, self.root)
            out.append(_BUILD[self.benchmark.kind](self.benchmark, row, images[i], self.ids[p], k, self._kwargs,
                                                   self._box, where))
        return out


def _ids(b: Benchmark, ds) -> list[str]:
    for col in b.ids:
        if col in ds.column_names:
            values = [str(v) for v in ds[col]]
            if len(set(values)) == len(values):
                return values
    return [str(i) for i in range(len(ds))]


def _image(cell, where: str, root: Path):
    if isinstance(cell, str):  # HR-Bench: the image itself, base64-encoded
        try:
            data = base64.b64decode(cell, validate=True)
        except ValueError:
            raise InputError(f"{where}: column 'image' is a str but not base64 image data") from None
        return _open_images(data, where)
    if isinstance(cell, dict):
        if cell.get("bytes"):
            return _open_images(cell["bytes"], where)
        path = cell.get("path")
        if path and (root / path).is_file():  # a hub cell's path often names a file that is not there
            return _open_images(root / path, where)
        raise InputError(f"{where}: image cell has no bytes and its path {path!r} is not under {str(root)!r}")
    raise InputError(f"{where}: column 'image' holds {type(cell).__name__}; expected an HF Image "
                     "({bytes, path}) or base64 text")


def _vstar(b, row, image, id_, k, kw, box, where):
    return Sample(image, doc_to_text("vstar", row, kw), str(row["label"]), family=row.get("category") or "",
                  id=id_, task=b.name)


def _realworldqa(b, row, image, id_, k, kw, box, where):
    return Sample(image, doc_to_text("realworldqa", row, kw), str(row["answer"]), id=id_, task=b.name)


def _mmstar(b, row, image, id_, k, kw, box, where):
    return Sample(image, doc_to_text("mmstar", row, kw), str(row["answer"]), family=row["category"], id=id_,
                  task=b.name, meta={"group": row["l2_category"]})


def _textvqa(b, row, image, id_, k, kw, box, where):
    answers = tuple(row.get("answers") or ())
    answer = Counter(answers).most_common(1)[0][0] if answers else ""
    return Sample(image, doc_to_text("textvqa", row, kw), answer, answers=answers, id=id_, task=b.name)


def _countbench(b, row, image, id_, k, kw, box, where):
    return Sample(image, doc_to_text("countbench", row, kw), str(row["number"]), id=id_, task=b.name)


def _hrbench(b, row, image, id_, k, kw, box, where):
    options = {c: str(row[c]) for c in string.ascii_uppercase if c in row and not _isna(row[c])}
    return Sample(image, doc_to_text("hrbench", dict(row, options=options)), str(row["answer"]),
                  family=row["category"], id=id_, task=b.name,
                  meta={"options": options, "group": row["cycle_category"]})


def _pope(b, row, image, id_, k, kw, box, where):
    if str(row["answer"]).lower().strip() not in ("yes", "no"):
        raise InputError(f"{where}: POPE answer {row['answer']!r} is not yes/no (lmms-eval asserts it)")
    return Sample(image, doc_to_text("pope", row, kw), str(row["answer"]), family=row.get("category") or "",
                  id=id_, task=b.name)


def _rec(b, row, image, id_, k, kw, box, where):
    x, y, w, h = (float(v) for v in row["bbox"])  # COCO (x, y, w, h) in pixels
    W, H = image.size
    # lmms-eval's process_docs normalises and stores back as float32 (Dataset.map keeps the column's type)
    unit = [float(np.float32(v)) for v in (x / W, y / H, (x + w) / W, (y + h) / H)]
    expr = row["answer"][k]
    return Sample(image, doc_to_text("rec", {"expression": expr}), json.dumps([round(v, 4) for v in unit]),
                  boxes=((x, y, x + w, y + h),), id=id_, task=b.name,
                  meta={"bbox": unit, "expression": expr, "box_convention": box})


def _isna(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v))


_BUILD = {"vstar": _vstar, "realworldqa": _realworldqa, "mmstar": _mmstar, "textvqa": _textvqa,
          "countbench": _countbench, "hrbench": _hrbench, "pope": _pope, "rec": _rec}
