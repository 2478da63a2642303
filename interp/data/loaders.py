"""Load evaluation data as `Sample`s: the toy task, a JSONL file, or a local HF `datasets` directory.

JSONL, one object per line (blank lines allowed; anything else that is not a valid record is an error,
never a silent skip):

    {"id": "q1", "image": "imgs/0001.jpg", "question": "What color is the cup?", "answer": "red",
     "family": "color", "boxes": [[10, 20, 50, 60]], "choices": ["red", "blue"], "answers": ["red", ...]}

Required: question, image (a path relative to `image_root`, default the file's folder, or a list of paths),
and answer (or answers: then answer is their most common entry). Optional: id (default "line<N>"),
family, choices, boxes (pixel (x0, y0, x1, y1); one box may be given flat), answers. Other keys are ignored.

    samples = load_samples("toy", limit=100, seed=0)        # interp.toy's held-out scenes
    samples = load_samples("data/vstar.jsonl", limit=50)    # a seeded subset, in file order
"""

from __future__ import annotations

import io
import json
import os
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from interp.data.schema import Sample, _check_box, as_sample
from interp.errors import InputError

TOY_DEFAULT_SIZE = 1000  # 200 held-out questions per toy family, as in the design's measurements
FIELDS = ("image", "question", "answer", "choices", "family", "boxes", "id", "answers")


def subsample(n: int, limit: int | None, seed: int = 0) -> list[int]:
    """Indices of a seeded random subset of size `limit` out of `n`, in ascending order (all if no limit).

    Subsets are nested: for one seed, the first `limit` of a fixed permutation, so a run with a larger limit
    contains every sample of a smaller one (and resumes from its results).
    """
    if limit is None or limit >= n:
        return list(range(n))
    if limit < 0:
        raise InputError(f"limit must be >= 0, got {limit}")
    perm = np.random.default_rng(seed).permutation(n)[:limit]
    return sorted(int(i) for i in perm)


# --- JSONL -----------------------------------------------------------------------------------------------

def load_jsonl(path, image_root=None, *, limit: int | None = None, seed: int = 0) -> list[Sample]:
    """Samples from a JSONL file (format in the module docstring).

    Every record is checked (JSON, fields, image files exist) before any image is opened; only the
    `limit` selected ones (see `subsample`) are decoded. Errors name the file, line and field.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"JSONL file {str(path)!r} does not exist")
    root = Path(image_root) if image_root is not None else path.parent
    records = []  # (where, fields)
    seen: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            where = f"{path}, line {lineno}"
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise InputError(f"{where}: not valid JSON ({e.msg} at column {e.colno}); "
                                 "each line must be one JSON object") from None
            if not isinstance(obj, dict):
                raise InputError(f"{where}: expected a JSON object, got {type(obj).__name__}")
            fields = _fields(obj, where, default_id=f"line{lineno}")
            fields["image"] = _image_paths(fields["image"], where, root)
            if fields["id"] in seen:
                raise InputError(f"{where}: field 'id' = {fields['id']!r} repeats {seen[fields['id']]}; "
                                 "ids must be unique (results are resumed by id)")
            seen[fields["id"]] = where
            records.append((where, fields))
    samples = []
    for i in subsample(len(records), limit, seed):
        where, fields = records[i]
        fields = dict(fields, image=_open_images(fields["image"], where))
        samples.append(_sample(fields, where))
    return samples


def _image_paths(value, where: str, root: Path):
    def one(p, field):
        if not isinstance(p, str) or not p:
            raise InputError(f"{where}: field {field} must be a file path (str), got {p!r:.60}")
        full = Path(p) if os.path.isabs(p) else root / p
        if not full.is_file():
            raise InputError(f"{where}: field {field}: image file {str(full)!r} not found "
                             f"(relative paths resolve against image_root={str(root)!r})")
        return full

    if isinstance(value, list):
        if not value:
            raise InputError(f"{where}: field 'image' is an empty list; give at least one path")
        return [one(p, f"'image'[{i}]") for i, p in enumerate(value)]
    return one(value, "'image'")


def _open_images(value, where: str):
    if isinstance(value, list):
        return [_open_images(v, where) for v in value]
    if isinstance(value, Image.Image):
        return value.convert("RGB")
    try:
        if isinstance(value, (bytes, bytearray)):
            with Image.open(io.BytesIO(value)) as im:
                return im.convert("RGB")
        with Image.open(value) as im:
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError) as e:
        name = "<bytes>" if isinstance(value, (bytes, bytearray)) else str(value)
        raise InputError(f"{where}: field 'image': cannot read image {name!r}: {e}") from None


# --- shared record checks --------------------------------------------------------------------------------

def _fields(obj: Mapping, where: str, *, default_id: str) -> dict:
    """Check a raw record's fields and return Sample keyword arguments (image left raw)."""
    def get(name):
        return obj.get(name)

    for name in ("question", "image"):
        if get(name) is None:
            raise InputError(f"{where}: missing required field {name!r} (present: {sorted(obj)})")
    question = get("question")
    if not isinstance(question, str):
        raise InputError(f"{where}: field 'question' must be a str, got {type(question).__name__}")

    answers = get("answers")
    if answers is None:
        answers = ()
    elif not isinstance(answers, (list, tuple)) or not all(isinstance(a, str) for a in answers):
        raise InputError(f"{where}: field 'answers' must be a list of str, got {answers!r:.80}")
    answer = get("answer")
    if answer is None:
        if not answers:
            raise InputError(f"{where}: missing required field 'answer' (or a non-empty 'answers' list)")
        answer = Counter(answers).most_common(1)[0][0]
    elif isinstance(answer, int) and not isinstance(answer, bool):
        answer = str(answer)  # counting benchmarks store 3, not "3"
    elif not isinstance(answer, str):
        hint = "; put annotator lists in 'answers'" if isinstance(answer, list) else ""
        raise InputError(f"{where}: field 'answer' must be a str, got {type(answer).__name__} "
                         f"({answer!r:.60}){hint}")

    choices = get("choices")
    if choices is None:
        choices = ()
    elif not isinstance(choices, (list, tuple)) or not all(isinstance(c, str) for c in choices):
        raise InputError(f"{where}: field 'choices' must be a list of str, got {choices!r:.80}")

    family = get("family")
    if family is None:
        family = ""
    elif not isinstance(family, str):
        raise InputError(f"{where}: field 'family' must be a str, got {type(family).__name__}")

    id_ = get("id")
    if id_ is None:
        id_ = default_id
    elif isinstance(id_, int) and not isinstance(id_, bool):
        id_ = str(id_)
    elif not isinstance(id_, str) or not id_:
        raise InputError(f"{where}: field 'id' must be a non-empty str or int, got {id_!r:.60}")

    boxes = get("boxes")
    if boxes is None:
        boxes = ()
    elif not isinstance(boxes, (list, tuple)):
        raise InputError(f"{where}: field 'boxes' must be a list of [x0, y0, x1, y1], got {boxes!r:.80}")
    elif len(boxes) == 4 and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in boxes):
        boxes = (boxes,)  # one box given flat
    boxes = tuple(_check_box(b, i, where) for i, b in enumerate(boxes))

    return dict(image=get("image"), question=question, answer=answer, choices=tuple(choices),
                family=family, boxes=boxes, id=id_, answers=tuple(answers))


def _sample(fields: dict, where: str) -> Sample:
    try:
        return Sample(**fields)
    except InputError as e:
        raise InputError(f"{where}: {e}") from None


# --- HF datasets -----------------------------------------------------------------------------------------

def load_hf_dataset(path, *, split: str | None = None, columns: Mapping[str, str] | None = None,
                    image_root=None, limit: int | None = None, seed: int = 0) -> list[Sample]:
    """Samples from a local `datasets` directory (made with `save_to_disk`).

    columns: Sample field → column name, for the fields whose column is named differently, e.g.
    `{"question": "query", "answer": "label"}`. The image column may hold `datasets.Image` values (PIL),
    `{"bytes", "path"}` dicts, file paths (relative to `image_root`, default the dataset directory), or
    lists of these. A `DatasetDict` needs `split` unless it has exactly one.
    """
    import datasets

    path = Path(path)
    if not path.is_dir():
        raise InputError(f"datasets directory {str(path)!r} does not exist")
    try:
        ds = datasets.load_from_disk(str(path))
    except FileNotFoundError as e:
        raise InputError(f"{str(path)!r} is not a directory written by Dataset.save_to_disk: {e}") from None
    if isinstance(ds, datasets.DatasetDict):
        names = list(ds)
        if split is None:
            if len(names) != 1:
                raise InputError(f"{str(path)!r} holds splits {names}; pick one with split=...")
            split = names[0]
        if split not in ds:
            raise InputError(f"{str(path)!r} has no split {split!r}; it has {names}")
        ds = ds[split]
    elif split is not None and split != str(ds.split):
        raise InputError(f"{str(path)!r} is a single Dataset (split {str(ds.split)!r}), not split {split!r}; "
                         "leave split=None")

    columns = dict(columns or {})
    unknown = sorted(set(columns) - set(FIELDS))
    if unknown:
        raise InputError(f"columns= names unknown Sample fields {unknown}; fields are {list(FIELDS)}")
    colmap = {f: columns.get(f, f) for f in FIELDS}
    for f, col in colmap.items():
        if f in columns and col not in ds.column_names:
            raise InputError(f"columns= maps field {f!r} to column {col!r}, which {str(path)!r} lacks; "
                             f"columns are {ds.column_names}")
    for f in ("image", "question"):
        if colmap[f] not in ds.column_names:
            raise InputError(f"{str(path)!r} has no column {colmap[f]!r} for field {f!r}; columns are "
                             f"{ds.column_names}; map it with columns={{{f!r}: '<column>'}}")
    if colmap["answer"] not in ds.column_names and colmap["answers"] not in ds.column_names:
        raise InputError(f"{str(path)!r} has no column {colmap['answer']!r} (or {colmap['answers']!r}) for "
                         f"field 'answer'; columns are {ds.column_names}; map it with columns={{'answer': ...}}")
    present = {f: c for f, c in colmap.items() if c in ds.column_names}

    if "id" in present:
        ids = [str(v) for v in ds[present["id"]]]
        dup = [k for k, n in Counter(ids).items() if n > 1]
        if dup:
            raise InputError(f"{str(path)!r}: column {present['id']!r} repeats ids {dup[:5]}; ids must be "
                             "unique (results are resumed by id)")

    root = Path(image_root) if image_root is not None else path
    prefix = f"{split}:" if split else ""
    samples = []
    for i in subsample(len(ds), limit, seed):
        row = ds[i]
        where = f"{path}, row {i}"
        obj = {f: row[c] for f, c in present.items()}
        fields = _fields(obj, where, default_id=f"{prefix}{i}")
        fields["image"] = _open_images(_hf_image(fields["image"], where, root), where)
        samples.append(_sample(fields, where))
    return samples


def _hf_image(value, where: str, root: Path):
    if isinstance(value, Image.Image):
        return value
    if isinstance(value, (list, tuple)):
        if not value:
            raise InputError(f"{where}: field 'image' is an empty list")
        return [_hf_image(v, where, root) for v in value]
    if isinstance(value, dict):
        if value.get("bytes"):
            return value["bytes"]
        if value.get("path"):
            return _image_paths(value["path"], where, root)
    if isinstance(value, str):
        return _image_paths(value, where, root)
    raise InputError(f"{where}: field 'image' must be a PIL image, image bytes or a path, got "
                     f"{type(value).__name__}")


# --- dispatch --------------------------------------------------------------------------------------------

def _toy_module():
    import interp.toy as toy  # lazily: the toy package is another part of interp, only needed for "toy"

    if not hasattr(toy, "dataset") or not hasattr(toy, "EVAL_SEED"):
        raise InputError("data 'toy' needs interp.toy.dataset and interp.toy.EVAL_SEED, which this "
                         "install of interp lacks")
    return toy


def load_samples(spec, *, limit: int | None = None, seed: int = 0, split: str | None = None) -> list[Sample]:
    """Samples from `spec`: "toy", a .jsonl path, a `datasets` directory, or a list of Samples.

    limit: how many (a seeded subset for files, see `subsample`; the first `limit` generated for "toy").
    seed: the subset for files; for "toy" an offset on interp.toy.EVAL_SEED (the held-out scenes).
    """
    if isinstance(spec, Sequence) and not isinstance(spec, (str, bytes)):
        return [as_sample(spec[i], f"item {i} of the list given to load_samples")
                for i in subsample(len(spec), limit, seed)]
    if not isinstance(spec, (str, os.PathLike)):
        raise InputError(f"data spec must be 'toy', a path or a list of Samples, got {type(spec).__name__}")
    if str(spec) == "toy":
        toy = _toy_module()
        n = TOY_DEFAULT_SIZE if limit is None else limit
        return [as_sample(s, f"interp.toy.dataset item {i}")
                for i, s in enumerate(toy.dataset(n, seed=toy.EVAL_SEED + seed))]
    path = Path(spec)
    if path.is_dir():
        return load_hf_dataset(path, split=split, limit=limit, seed=seed)
    if path.suffix == ".jsonl":
        if split is not None:
            raise InputError(f"split={split!r} applies to datasets directories, not to {str(path)!r}")
        return load_jsonl(path, limit=limit, seed=seed)
    if not path.exists():
        raise InputError(f"data {str(spec)!r} not found; expected 'toy', a .jsonl file or a datasets "
                         "directory (Dataset.save_to_disk)")
    raise InputError(f"data {str(spec)!r} is neither a .jsonl file nor a datasets directory")
