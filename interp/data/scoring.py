"""Answer scoring: exact match, multiple choice, VQA soft accuracy, REC IoU.

Every scorer returns a float in [0, 1] (1.0 = correct); only VQA accuracy takes values in between.

>>> exact_match("Two.", "2")
1.0
>>> extract_choice("Answer: (b) a red cube")
'B'
>>> vqa_accuracy("yes", ["yes"] * 2 + ["no"] * 8)
0.6
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from interp.data.vqa_tables import _ARTICLES, _COMMA_NUMBER, _CONTRACTIONS, _NUMBERS, _PERIOD, _PUNCT
from interp.errors import InputError

# --- VQA answer normalisation ---------------------------------------------------------------------------
# The steps and tables of the official VQA evaluation (Antol et al. 2015, vqaEval.py), re-stated:
# punctuation is deleted when it touches a space (or the text has a "1,000"-style number), else replaced by a
# space; a period not followed by a digit is deleted; then lowercase, number words -> digits, drop articles,
# restore apostrophes in common contractions.

# (the tables: interp/data/vqa_tables.py)


def normalize_answer(text: str) -> str:
    """Normalise an answer as the VQA evaluation does.

    >>> normalize_answer("  The Two dogs! ")
    '2 dogs'
    """
    if not isinstance(text, str):
        raise InputError(f"normalize_answer expects a str, got {type(text).__name__} ({text!r:.60})")
    text = text.replace("\n", " ").replace("\t", " ").strip()
    delete_all = _COMMA_NUMBER.search(text) is not None
    out = text
    for p in _PUNCT:
        if delete_all or (p + " ") in text or (" " + p) in text:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD.sub("", out)
    words = []
    for word in out.lower().split():
        word = _NUMBERS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words)


def exact_match(prediction: str, answer: str) -> float:
    """1.0 if the normalised prediction equals the normalised answer, else 0.0."""
    return float(normalize_answer(prediction) == normalize_answer(answer))


def vqa_accuracy(prediction: str, answers: Sequence[str]) -> float:
    """VQA soft accuracy: min(#matching annotators / 3, 1), averaged over the leave-one-out subsets.

    With the usual 10 answers this is the mean over the 10 choose 9 subsets the official metric uses: a
    prediction given by k annotators scores 0, .3, .6, .9, 1 for k = 0, 1, 2, 3, >=4. A single reference
    answer degenerates to exact match (leaving it out would leave nothing to match).
    """
    if isinstance(answers, str):
        raise InputError("vqa_accuracy expects a list of reference answers, got one str; "
                         "wrap it in a list or use exact_match")
    answers = [normalize_answer(a) for a in answers]
    if not answers:
        raise InputError("vqa_accuracy got an empty list of reference answers")
    pred = normalize_answer(prediction)
    if len(answers) == 1:
        return float(pred == answers[0])
    hits = sum(a == pred for a in answers)
    # Leaving out a matching answer leaves hits-1 matches, leaving out another one leaves hits.
    total = hits * min(1.0, (hits - 1) / 3) + (len(answers) - hits) * min(1.0, hits / 3)
    return total / len(answers)


# --- multiple choice -------------------------------------------------------------------------------------

_LETTER_ONLY = re.compile(r"^\W*\(?([A-Za-z])\)?\W*$")
_LEAD = re.compile(r"^\s*[\(\[]?([A-Za-z])(?:[\)\]][\s\S]*|[.:,][\s\S]*)$")
_CUE = re.compile(r"\b(?:answer|option|choice)\b(?:\s+is)?\s*[:\-]?\s*[\(\[]?([A-Za-z])(?![A-Za-z])",
                  re.IGNORECASE)
_PAREN = re.compile(r"[\(\[]([A-Za-z])[\)\]]")
_CAPITAL = re.compile(r"(?<![A-Za-z'])([A-Z])(?![A-Za-z'])")


def extract_choice(text: str, choices: Sequence[str] = ()) -> str | None:
    """The option letter (upper case) a free-text reply picks, or None.

    Tried in order: a bare letter ("b", "(B)", "B."), a letter after "answer"/"option"/"choice"
    ("Answer: b", "The answer is (C)"), a leading "B)" / "B." / "B:", a parenthesised letter anywhere, the
    text of one of `choices`, and last a standalone capital letter (skipping "A"/"I" used as words). With
    `choices`, letters beyond the number of options are ignored.

    >>> extract_choice("I think the answer is (c).")
    'C'
    """
    if not isinstance(text, str):
        raise InputError(f"extract_choice expects a str, got {type(text).__name__}")
    valid = {chr(65 + i) for i in range(len(choices))} if choices else None

    def ok(letter: str | None) -> str | None:
        if letter is None:
            return None
        letter = letter.upper()
        return letter if valid is None or letter in valid else None

    stripped = text.strip()
    for pattern in (_LETTER_ONLY, _CUE, _LEAD):
        for m in pattern.finditer(stripped):
            if ok(m.group(1)) and not _is_word(stripped, m):
                return ok(m.group(1))
    for m in _PAREN.finditer(text):
        if ok(m.group(1)):
            return ok(m.group(1))
    if choices:
        norm = normalize_answer(text)
        hits = [i for i, c in enumerate(choices) if normalize_answer(c) == norm]
        if len(hits) == 1:
            return chr(65 + hits[0])
    for m in _CAPITAL.finditer(text):
        if ok(m.group(1)) and not _is_word(text, m):
            return ok(m.group(1))
    return None


def _is_word(text: str, m: re.Match) -> bool:
    # "A cat", "the answer is a dog", "I think": an article or pronoun before a lower-case word is not a letter.
    return m.group(1) in "aAiI" and re.match(r"\s+[a-z]", text[m.end(1):]) is not None


def multiple_choice(prediction: str, answer: str, choices: Sequence[str] = ()) -> float:
    """1.0 if the option picked by `prediction` is `answer` (a letter, or the text of one of `choices`)."""
    target = _answer_letter(answer, choices)
    return float(extract_choice(prediction, choices) == target)


def _answer_letter(answer: str, choices: Sequence[str]) -> str:
    stripped = answer.strip().strip("().").strip()
    if len(stripped) == 1 and stripped.isalpha():
        return stripped.upper()
    norm = normalize_answer(answer)
    for i, c in enumerate(choices):
        if normalize_answer(c) == norm:
            return chr(65 + i)
    raise InputError(f"multiple choice answer {answer!r} is neither a letter A-Z nor one of the choices "
                     f"{list(choices)!r}")


# --- referring expressions -------------------------------------------------------------------------------

_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:\.\d+)?")  # not the 0 in "x0"


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes; 0.0 when either has no area."""
    ax0, ay0, ax1, ay1 = (float(v) for v in a)
    bx0, by0, bx1, by1 = (float(v) for v in b)
    iw = max(0.0, min(ax1, bx1) - max(ax0, bx0))
    ih = max(0.0, min(ay1, by1) - max(ay0, by0))
    inter = iw * ih
    union = max(0.0, ax1 - ax0) * max(0.0, ay1 - ay0) + max(0.0, bx1 - bx0) * max(0.0, by1 - by0) - inter
    return inter / union if union > 0 else 0.0


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """The first four numbers in `text` as an (x0, y0, x1, y1) box, or None. Coordinates are taken as is."""
    nums = _NUMBER.findall(text)
    return tuple(float(v) for v in nums[:4]) if len(nums) >= 4 else None


def rec_iou(pred_box, gt_box, threshold: float = 0.5) -> float:
    """REC accuracy: 1.0 if IoU(pred_box, gt_box) >= threshold (0.5 as in RefCOCO), else 0.0.

    pred_box may be text ("[12, 30, 48, 60]"); unparseable text scores 0.
    """
    if isinstance(pred_box, str):
        pred_box = parse_box(pred_box)
        if pred_box is None:
            return 0.0
    return float(box_iou(pred_box, gt_box) >= threshold)


# --- per sample ------------------------------------------------------------------------------------------

METRICS = ("auto", "exact_match", "multiple_choice", "vqa", "rec")


def resolve_metric(sample, metric: str = "auto") -> str:
    """The metric "auto" picks for `sample`.

    A benchmark sample (`sample.task` set, see `interp.data.benchmark`) gets its benchmark's lmms-eval rule;
    otherwise multiple_choice when the sample has choices and its answer is an option letter (A, B, ...); vqa when it
    has several annotator answers; else exact_match. Choices with a free-text answer (e.g. the toy task's
    answer vocabulary, never shown as lettered options) stay exact_match, so a reply "a" is not option A.
    """
    if metric not in METRICS:
        raise InputError(f"unknown metric {metric!r}; expected one of {METRICS}")
    if metric != "auto":
        return metric
    if getattr(sample, "task", ""):
        return sample.task  # a benchmark sample: its lmms-eval rule (interp.data.lmms)
    letter = sample.answer.strip().strip("().").strip()
    if sample.choices and len(letter) == 1 and "A" <= letter.upper() < chr(65 + len(sample.choices)):
        return "multiple_choice"
    if len(sample.answers) > 1:
        return "vqa"
    return "exact_match"


def score(sample, prediction: str, metric: str = "auto") -> float:
    """Score one model reply against a `Sample`; a float in [0, 1].

    metric: "auto" (see `resolve_metric`: for a benchmark sample, exactly lmms-eval's `process_results`
    rule, `interp.data.lmms.judge`), "exact_match", "multiple_choice" (answer: a letter or an option's
    text), "vqa" (uses `sample.answers`,
    or `answer` alone), "rec" (prediction text parsed as a pixel box, compared with `sample.boxes[0]`).
    """
    metric = resolve_metric(sample, metric)
    if metric not in METRICS:
        from interp.data.lmms import judge

        return judge(sample, prediction)[0]
    if metric == "exact_match":
        return exact_match(prediction, sample.answer)
    if metric == "multiple_choice":
        return multiple_choice(prediction, sample.answer, sample.choices)
    if metric == "vqa":
        return vqa_accuracy(prediction, sample.answers or (sample.answer,))
    if not sample.boxes:
        raise InputError(f"Sample id={sample.id!r}: metric 'rec' needs a ground-truth box in field 'boxes'")
    return rec_iou(prediction, sample.boxes[0])
