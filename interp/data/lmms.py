"""The per-sample rules of lmms-eval's `process_results`, re-stated for interp's benchmarks.

Each rule turns a raw model reply into (score, parsed): the score lmms-eval gives that reply and what it
extracted (a letter, a normalised answer, a box). Facts and examples: ../shared/BENCHMARKS.md (lmms-eval main
@ 75571cfe). interp applies no reasoning-tag stripping (`<think>` blocks): the papers' models emit none.

>>> vstar_letter("Answer: B")      # V* takes a reply that *starts* with A-D at its word
'A'
>>> extract_mcq_answer("c")        # MMStar / RealWorldQA: case-sensitive
''
>>> textvqa_accuracy("Two", ["2"] * 3 + ["two dogs"] * 7)
0.9
"""

from __future__ import annotations

import math
import re
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from interp.data.vqa_tables import _ARTICLES, _NUMBERS, _PUNCT
from interp.errors import InputError

# --- V* (vstar_bench/utils.py::extract_answer_letter) ----------------------------------------------------

_VSTAR = [re.compile(p, re.IGNORECASE) for p in (
    r"^([A-D])",                                                     # starts with a letter ("Answer" → A)
    r"(?:THE\s+)?(?:ANSWER|CHOICE|OPTION)(?:\s+IS)?[\s:]+([A-D])",   # "ANSWER: B", "THE ANSWER IS B"
    r"\(([A-D])\)", r"([A-D])\s*(?:\.|\)|])", r"(?:^|\s)([A-D])(?:\s|$)")]


def vstar_letter(reply: str) -> str | None:
    """The letter V*'s extractor reads from a reply (upper-cased first), or None."""
    r = reply.strip().upper()
    for pattern in _VSTAR:
        m = pattern.search(r)
        if m:
            return m.group(1).upper()
    letters = re.findall(r"[A-D]", r)
    return letters[0] if len(letters) == 1 else None


# --- the shared MCQ extractor (_task_utils/mcq_extract.py::extract_mcq_answer) ---------------------------

_PHRASES = ("the answer is", "answer is", "the correct answer is", "correct answer is", "the best answer is",
            "best answer is", "the correct option is", "correct option is", "the best option is",
            "best option is", "the choice is", "choice is", "the correct choice is", "correct choice is",
            "i choose", "i select", "i pick", "my answer is", "my choice is",
            "옵션", "정답은", "답은", "답:", "答案是", "答案为", "选", "答えは")
# format → priority; a letter after "(", before ".", ":", ")" or " " (in this order of confidence)
_MARKS = (("({})", 6), ("{}.", 5), ("{}:", 4), ("{})", 3), ("{} ", 2))


def extract_mcq_answer(response: str, choices: Sequence[str] = ("A", "B", "C", "D")) -> str:
    """The choice letter lmms-eval's shared extractor picks, or "" (case-sensitive: "c" is no answer).

    Candidates: the reply starts (priority 10) or ends (9) with a standalone letter; a letter anywhere after
    an answer phrase (7); "(X)" (6), "X." (5), "X:" (4), "X)" (3), "X " (2); if none, any X (0). The highest
    priority wins, then the later position.
    """
    if not response or not response.strip():
        return ""
    text = response.strip()
    for ch in ",.!?;:'\"":
        text = text.strip(ch)
    text = f" {text} "
    cands: list[tuple[int, int, str]] = []  # (priority, position, letter), in lmms-eval's order
    for mark, prio in _MARKS:
        cands += [(prio, text.rfind(mark.format(c)), c) for c in choices if mark.format(c) in text]
    lower = text.lower()
    for phrase in _PHRASES:
        at = lower.find(phrase)
        if at != -1:
            cands += [(7, text.find(c, at + len(phrase)), c) for c in choices
                      if text.find(c, at + len(phrase)) != -1]
    core = text.strip()
    cands += [(10, 0, c) for c in choices if core.startswith(c) and (len(core) == 1 or not core[1].isalpha())]
    cands += [(9, len(text) - 1, c) for c in choices
              if core.endswith(c) and (len(core) == 1 or not core[-2].isalpha())]
    if not cands:
        cands = [(0, text.rfind(c), c) for c in choices if c in text]
    if not cands:
        return ""
    # lmms-eval sorts by (priority, position) descending, stably: among equal keys the first found wins.
    return max(enumerate(cands), key=lambda t: (t[1][0], t[1][1], -t[0]))[1][2]


# --- TextVQA (_task_utils/vqa_eval_metric.py::EvalAIAnswerProcessor) -------------------------------------

# canonical spelling: the variants EvalAI maps to it (its table, less the keys it can never see: upper-case
# ones, since it lower-cases first, and identities)
_CONTRACTION_TABLE = (
    "ain't:aint aren't:arent can't:cant could've:couldve couldn't:couldnt couldn't've:couldn'tve,couldnt've "
    "didn't:didnt doesn't:doesnt don't:dont hadn't:hadnt hadn't've:hadnt've,hadn'tve hasn't:hasnt "
    "haven't:havent he'd:hed he'd've:hed've,he'dve he's:hes how'd:howd how'll:howll how's:hows isn't:isnt "
    "it'd:itd it'd've:itd've,it'dve it'll:itll ma'am:maam mightn't:mightnt mightn't've:mightnt've,mightn'tve "
    "might've:mightve mustn't:mustnt must've:mustve needn't:neednt not've:notve o'clock:oclock "
    "oughtn't:oughtnt 'ow's'at:ow's'at,'ows'at,'ow'sat shan't:shant she'd've:shed've,she'dve "
    "should've:shouldve shouldn't:shouldnt shouldn't've:shouldnt've,shouldn'tve somebodyd:somebody'd "
    "somebody'd've:somebodyd've,somebody'dve somebody'll:somebodyll somebody's:somebodys someone'd:someoned "
    "someone'd've:someoned've,someone'dve someone'll:someonell someone's:someones something'd:somethingd "
    "something'd've:somethingd've,something'dve something'll:somethingll that's:thats there'd:thered "
    "there'd've:thered've,there'dve there're:therere there's:theres they'd:theyd they'd've:theyd've,they'dve "
    "they'll:theyll they're:theyre they've:theyve 'twas:twas wasn't:wasnt we'd've:wed've,we'dve we've:weve "
    "weren't:werent what'll:whatll what're:whatre what's:whats what've:whatve when's:whens where'd:whered "
    "where's:wheres where've:whereve who'd:whod who'd've:whod've,who'dve who'll:wholl who's:whos who've:whove "
    "why'll:whyll why're:whyre why's:whys won't:wont would've:wouldve wouldn't:wouldnt "
    "wouldn't've:wouldnt've,wouldn'tve y'all:yall y'all'll:yall'll,y'allll "
    "y'all'd've:yall'd've,y'alld've,y'all'dve you'd:youd you'd've:youd've,you'dve you'll:youll you're:youre "
    "you've:youve")
_CONTRACTIONS = {variant: canon for item in _CONTRACTION_TABLE.split()
                 for canon, variants in [item.split(":")] for variant in variants.split(",")}
_PERIOD = re.compile(r"\.(?!\d)")  # EvalAI's "(?!<=\d)(\.)(?!\d)" has a mistyped look-behind: this is its effect


def evalai_normalize(text: str) -> str:
    """An answer as EvalAI normalises it (TextVQA): lower-case, delete "," "?", split "'s", punctuation,
    periods not before a digit (at most 32: EvalAI passes re.UNICODE as the count), number words, articles,
    contractions.

    >>> evalai_normalize("Coca-Cola, the drink?")
    'coca cola drink'
    """
    text = text.lower().replace(",", "").replace("?", "").replace("'s", " 's").strip()
    text = text.replace("\n", " ").replace("\t", " ").strip()
    out = text  # EvalAI also deletes all punctuation after a digit,digit comma: impossible once "," is gone
    for p in _PUNCT:
        out = out.replace(p, "" if (p + " " in text or " " + p in text) else " ")
    out = _PERIOD.sub("", out, count=32)
    words = [_NUMBERS.get(w, w) for w in out.lower().split()]
    return " ".join(_CONTRACTIONS.get(w, w) for w in words if w not in _ARTICLES)


def textvqa_accuracy(reply: str, answers: Sequence[str]) -> float:
    """VQA accuracy as lmms-eval computes it: mean over i of min(1, #{j != i: answer_j == reply} / 3), after
    EvalAI normalisation of all. No answers → 0 (and so is a single one: leaving it out leaves nothing)."""
    if not answers:
        return 0.0
    pred = evalai_normalize(reply)
    refs = [evalai_normalize(a) for a in answers]
    hits = [sum(r == pred for j, r in enumerate(refs) if j != i) for i in range(len(refs))]
    return float(statistics.mean(min(1.0, h / 3) for h in hits))


# --- CountBench (countbench/utils.py) --------------------------------------------------------------------

_COUNT_WORDS = dict(_NUMBERS, eleven="11", twelve="12", thirteen="13", fourteen="14", fifteen="15",
                    sixteen="16", seventeen="17", eighteen="18", nineteen="19", twenty="20")


def count_normalize(value) -> str:
    """str(value), stripped, lower-cased, and a number word (zero/none..twenty) as digits: "Three" → "3"."""
    text = str(value).strip().lower()
    return _COUNT_WORDS.get(text, text)


# --- HR-Bench (hrbench/hrbench_evals.py::can_infer) ------------------------------------------------------

_REFUSALS = ("Sorry, I can't help with images of people yet.", "I can't process this file.",
             "I'm sorry, but without the image provided", "Cannot determine the answer")


def hrbench_choice(reply: str, options: Mapping[str, str]) -> str | None:
    """The option HR-Bench's `can_infer` reads from a reply ("Z" = refused / none of them), or None where
    lmms-eval would ask its GPT judge.

    First by letter: punctuation `.()[],:;!*#{}` → spaces, split; exactly one option letter among the tokens
    → it (case-sensitive: "A blue umbrella" → A); none but a "Z" token → "Z". Else by text: exactly one option
    whose lower-cased text is a substring of the lower-cased reply.
    """
    answer = reply.strip()
    if "Failed to obtain answer via API" not in answer:
        if any(r in answer for r in _REFUSALS):
            return "Z"
        for c in ".()[],:;!*#{}":
            answer = answer.replace(c, " ")
        tokens = answer.split()
        found = [k for k in options if k in tokens]
        if len(found) == 1:
            return found[0]
        if not found and "Z" in tokens:
            return "Z"
    low = reply.strip().lower()
    found = [k for k, v in options.items() if str(v).lower() in low]
    return found[0] if len(found) == 1 else None


# --- REC (refcoco/utils_rec.py) --------------------------------------------------------------------------

_NUM = r"(-?\d+(?:\.\d+)?)"
_BOX = re.compile(rf"\[\s*{_NUM},\s*{_NUM},\s*{_NUM},\s*{_NUM}\s*\]")


def rec_box(reply: str) -> list[float]:
    """The first "[x0, y0, x1, y1]" in a reply (a comma right after each of the first three numbers; no
    ".5", no exponents), else [0, 0, 0, 0]."""
    m = _BOX.search(reply)
    return [float(v) for v in m.groups()] if m else [0.0, 0.0, 0.0, 0.0]


def rec_iou(gt: Sequence[float], pred: Sequence[float]) -> float:
    """IoU of two (x0, y0, x1, y1) boxes as lmms-eval computes it (areas not clamped); 0 if the union is 0
    (where lmms-eval would divide by zero)."""
    iw = max(0.0, min(gt[2], pred[2]) - max(gt[0], pred[0]))
    ih = max(0.0, min(gt[3], pred[3]) - max(gt[1], pred[1]))
    inter = iw * ih
    union = (gt[2] - gt[0]) * (gt[3] - gt[1]) + (pred[2] - pred[0]) * (pred[3] - pred[1]) - inter
    return inter / union if union else 0.0


@dataclass(frozen=True)
class BoxConvention:
    """How a REC reply's numbers map to 0-1 image units before lmms-eval's IoU.

    pixels: None = the numbers are 0-1 fractions (lmms-eval's prompt asks for them); else (factor,
    min_pixels, max_pixels): they are pixels of the image as Qwen2-VL's `smart_resize` resizes it.
    """

    name: str
    pixels: tuple[int, int, int] | None = None

    def to_unit(self, box: list[float], size: tuple[int, int]) -> list[float]:
        """box in this convention, size = (W, H) of the original image → box in 0-1 units."""
        if self.pixels is None:
            return box
        from transformers.models.qwen2_vl.image_processing_pil_qwen2_vl import smart_resize

        factor, lo, hi = self.pixels
        h, w = smart_resize(size[1], size[0], factor=factor, min_pixels=lo, max_pixels=hi)
        return [box[0] / w, box[1] / h, box[2] / w, box[3] / h]


BOX_CONVENTIONS = {c.name: c for c in (
    BoxConvention("unit"),                                           # lmms-eval
    BoxConvention("qwen2.5-vl", (28, 1280 * 28 * 28, 16384 * 28 * 28)),  # VLMEvalKit's pixel bounds
)}


def box_convention(name: str) -> BoxConvention:
    if name not in BOX_CONVENTIONS:
        raise InputError(f"unknown box convention {name!r}; expected one of {sorted(BOX_CONVENTIONS)}")
    return BOX_CONVENTIONS[name]


# --- per task --------------------------------------------------------------------------------------------

def _letter_rule(extract):
    def rule(s, reply):
        got = extract(reply)
        return float(got == s.answer.strip().upper()), got
    return rule


def _realworldqa(s, reply):
    gt = s.answer.strip()
    if gt.upper() in ("A", "B", "C", "D"):
        got = extract_mcq_answer(reply)
        return float(got == gt.upper()), got
    got = reply.lower().strip().rstrip(".")
    return float(got == gt.lower()), got


def _textvqa(s, reply):
    return textvqa_accuracy(reply, s.answers), evalai_normalize(reply)


def _countbench(s, reply):
    got = count_normalize(reply)
    return float(got == count_normalize(s.answer)), got


def _hrbench(s, reply):
    got = hrbench_choice(reply, s.meta["options"])
    return float(got is not None and got.lower() == s.answer.lower()), got


def _pope(s, reply):
    got = reply.lower().strip()
    return float(got == s.answer.lower().strip()), got


def _rec(s, reply):
    box = box_convention(s.meta.get("box_convention", "unit")).to_unit(rec_box(reply), s.images[0].size)
    gt, iou = s.meta["bbox"], rec_iou(s.meta["bbox"], box)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2  # Center_ACC: the reply's centre inside the truth
    return float(iou >= 0.5), box, {"iou": iou, "center": gt[0] <= cx <= gt[2] and gt[1] <= cy <= gt[3]}


RULES = {"vstar": _letter_rule(vstar_letter), "realworldqa": _realworldqa,
         "mmstar": _letter_rule(extract_mcq_answer), "textvqa": _textvqa, "countbench": _countbench,
         "hrbench4k": _hrbench, "hrbench8k": _hrbench, "pope": _pope,
         "refcoco": _rec, "refcoco+": _rec, "refcocog": _rec}


def judge(sample, reply: str) -> tuple[float, object, dict]:
    """(score, parsed, extra) of `reply` under the lmms-eval rule of `sample.task`.

    score: 0/1 (TextVQA: soft accuracy in [0, 1]; REC: ACC@0.5). parsed: what the rule read (a letter, ""
    or None for none; the normalised reply; the REC box in 0-1 units). extra: what aggregation needs beyond
    the score (REC: iou, center). HR-Bench replies no rule can read (parsed None) score 0: lmms-eval would ask
    a GPT judge there, interp has none.
    """
    if sample.task not in RULES:
        raise InputError(f"Sample id={sample.id!r}: task {sample.task!r} has no lmms-eval rule; tasks are "
                         f"{sorted(RULES)}")
    if not isinstance(reply, str):
        raise InputError(f"a reply must be a str, got {type(reply).__name__}")
    value, parsed, *extra = RULES[sample.task](sample, reply)
    if isinstance(parsed, list):
        parsed = [round(v, 6) if math.isfinite(v) else None for v in parsed]
    return value, parsed, (extra[0] if extra else {})
