"""The one record every loader, generator and the evaluation harness agree on: `Sample`."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from numbers import Real
from typing import Any

from PIL import Image

from interp.errors import InputError

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in pixels of the (first) image


@dataclass(frozen=True)
class Sample:
    """One visual question with its reference answer.

    image:    a PIL image (converted to RGB here), or a non-empty list of them for multi-image rows.
    question: the full prompt text as the model should see it (for multiple choice, including the options:
              `choices` are used for scoring only, never appended).
    answer:   the reference answer: free text, or for multiple choice the letter ("B") or the option's text.
    choices:  option texts in letter order (A, B, ...); empty for open questions.
    family:   a grouping name for per-family accuracy (toy task family, benchmark category, ...).
    boxes:    evidence regions as (x0, y0, x1, y1) pixel boxes, x0 < x1 and y0 < y1.
    id:       unique within a dataset; the evaluation harness resumes by it.
    answers:  all annotator answers for VQA-style soft accuracy (e.g. the 10 of VQAv2/TextVQA); empty if
              there is only `answer`.
    task:     a benchmark name from `interp.data.BENCHMARKS` ("pope", "mmstar", ...): `score` then applies
              that benchmark's lmms-eval rule; "" for the generic metrics.
    meta:     what that rule and its aggregation read besides the fields above (options, the normalised
              REC box, the aggregation group, ...); a copy of the mapping given.

    Lists given for `choices`, `boxes` and `answers` are stored as tuples so the value stays hashable-ish and
    immutable.

    >>> s = Sample(Image.new("RGB", (64, 64)), "What color is the square?", "red", family="color", id="0")
    """

    image: Any
    question: str
    answer: str
    choices: tuple[str, ...] = ()
    family: str = ""
    boxes: tuple[Box, ...] = ()
    id: str = ""
    answers: tuple[str, ...] = ()
    task: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        where = f"Sample id={self.id!r}"
        if not isinstance(self.id, str):
            raise InputError(f"{where}: field 'id' must be a str, got {type(self.id).__name__}; "
                             "convert it with str(...) when building the Sample")
        set_ = object.__setattr__  # frozen: normalising values in place is the only write we do
        set_(self, "image", _check_image(self.image, where))
        for name in ("question", "answer", "family", "task"):
            value = getattr(self, name)
            if not isinstance(value, str):
                raise InputError(f"{where}: field {name!r} must be a str, got {type(value).__name__} "
                                 f"({value!r:.60})")
        if not self.question.strip():
            raise InputError(f"{where}: field 'question' is empty; every sample needs a question")
        set_(self, "choices", _check_strings(self.choices, "choices", where))
        set_(self, "answers", _check_strings(self.answers, "answers", where))
        if len(self.choices) > 26:
            raise InputError(f"{where}: field 'choices' has {len(self.choices)} options; at most 26 (A-Z)")
        if not isinstance(self.meta, Mapping):
            raise InputError(f"{where}: field 'meta' must be a mapping, got {type(self.meta).__name__}")
        set_(self, "meta", dict(self.meta))  # a private copy: the caller's dict can change
        set_(self, "boxes", tuple(_check_box(b, i, where) for i, b in enumerate(_as_sequence(
            self.boxes, "boxes", where))))

    @property
    def images(self) -> list[Image.Image]:
        """The image(s) as a list, whether the sample holds one image or several."""
        return list(self.image) if isinstance(self.image, (list, tuple)) else [self.image]


def as_sample(obj, where: str = "sample") -> Sample:
    """`obj` if it is a Sample, else a Sample built from its same-named attributes (image, question, answer,
    and optionally choices, family, boxes, id, answers, task, meta), e.g. another module's record class."""
    if isinstance(obj, Sample):
        return obj
    missing = [f for f in ("image", "question", "answer") if not hasattr(obj, f)]
    if missing:
        raise InputError(f"{where} is a {type(obj).__name__} without {missing}; expected an interp.data.Sample")
    kwargs = {f: getattr(obj, f) for f in ("image", "question", "answer", "choices", "family", "boxes", "id",
                                          "answers", "task", "meta") if getattr(obj, f, None) is not None}
    return Sample(**kwargs)


def _check_image(image, where: str):
    if isinstance(image, Image.Image):
        return image if image.mode == "RGB" else image.convert("RGB")
    if isinstance(image, (list, tuple)):
        if not image:
            raise InputError(f"{where}: field 'image' is an empty list; give at least one PIL image")
        return [_check_image_one(im, f"{where}: field 'image'[{i}]") for i, im in enumerate(image)]
    raise InputError(f"{where}: field 'image' must be a PIL.Image.Image or a list of them, got "
                     f"{type(image).__name__}; open files with PIL.Image.open(path)")


def _check_image_one(image, where: str):
    if not isinstance(image, Image.Image):
        raise InputError(f"{where} must be a PIL.Image.Image, got {type(image).__name__}")
    return image if image.mode == "RGB" else image.convert("RGB")


def _as_sequence(value, name: str, where: str):
    if isinstance(value, (str, bytes)) or not hasattr(value, "__iter__"):
        raise InputError(f"{where}: field {name!r} must be a list or tuple, got {type(value).__name__} "
                         f"({value!r:.60})")
    return tuple(value)


def _check_strings(value, name: str, where: str) -> tuple[str, ...]:
    items = _as_sequence(value, name, where)
    for i, item in enumerate(items):
        if not isinstance(item, str):
            raise InputError(f"{where}: field {name!r}[{i}] must be a str, got {type(item).__name__} "
                             f"({item!r:.60})")
    return items


def _check_box(box, i: int, where: str) -> Box:
    field = f"{where}: field 'boxes'[{i}]"
    if isinstance(box, (str, bytes)) or not hasattr(box, "__len__") or len(box) != 4:
        raise InputError(f"{field} must be 4 numbers (x0, y0, x1, y1) in pixels, got {box!r:.80}")
    if not all(isinstance(v, Real) and not isinstance(v, bool) for v in box):
        raise InputError(f"{field} must hold numbers, got {box!r:.80}")
    x0, y0, x1, y1 = (float(v) for v in box)
    if not all(math.isfinite(v) for v in (x0, y0, x1, y1)):
        raise InputError(f"{field} has a non-finite coordinate: {box!r:.80}")
    if not (x0 < x1 and y0 < y1):
        raise InputError(f"{field} = {box!r:.80} is not (x0, y0, x1, y1) with x0 < x1 and y0 < y1; "
                         "convert (x, y, w, h) boxes with (x, y, x + w, y + h)")
    return (x0, y0, x1, y1)
