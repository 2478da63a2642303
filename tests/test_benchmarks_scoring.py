"""lmms-eval's per-benchmark rules (interp.data.lmms) against tables of cases from ../shared/BENCHMARKS.md."""

import pytest
from PIL import Image

from interp.data import Sample, score
from interp.data.aggregate import harness, weights
from interp.data.lmms import evalai_normalize, extract_mcq_answer, judge, rec_box, rec_iou, vstar_letter
from interp.errors import InputError

IMG = Image.new("RGB", (100, 100))
HR_OPTIONS = {"A": "red", "B": "blue", "C": "green", "D": "5"}
GT_BOX = [0.1, 0.1, 0.5, 0.5]


def _sample(task, answer="B", answers=(), **meta):
    if task.startswith("refcoco"):
        meta = {"bbox": GT_BOX, "box_convention": "unit", **meta}
    if task.startswith("hrbench"):
        meta = {"options": HR_OPTIONS, **meta}
    return Sample(IMG, "q?", answer, answers=answers, task=task, id="t", meta=meta)


CASES = [  # task, answer, reply, expected score, expected parsed
    # V*: upper-case the reply, then the first rule that matches (a reply *starting* with A-D wins)
    ("vstar", "B", "B", 1, "B"),
    ("vstar", "B", "b", 1, "B"),                        # a lowercase letter counts (upper-cased first)
    ("vstar", "B", "(B)", 1, "B"),
    ("vstar", "B", "The answer is (B).", 1, "B"),       # "IS (B" fails rule 2, rule 3 takes "(B)"
    ("vstar", "B", "Answer: B", 0, "A"),                # starts with A
    ("vstar", "C", "cotton", 1, "C"),                   # text instead of a letter: its first letter
    ("vstar", "B", "Definitely B", 0, "D"),
    ("vstar", "A", "left", 0, None),                    # no letter rule matches, no lone A-D
    ("vstar", "B", "I think B.", 1, "B"),
    # MMStar: extract_mcq_answer, case-sensitive
    ("mmstar", "B", "B", 1, "B"),
    ("mmstar", "B", "b", 0, ""),                        # a lowercase letter is no answer
    ("mmstar", "B", "The answer is (B).", 1, "B"),
    ("mmstar", "B", "The suitcase is beneath the cat.", 0, ""),   # option text instead of a letter
    ("mmstar", "A", "A car turns right, so the answer is C", 1, "A"),  # start beats phrase
    ("mmstar", "D", "Answer: D", 1, "D"),
    ("mmstar", "D", "Based on the image, D", 1, "D"),
    ("mmstar", "C", "I choose C", 1, "C"),
    ("mmstar", "B", "B. The suitcase is beneath the cat.", 1, "B"),
    # RealWorldQA: letters through extract_mcq_answer, open answers lower/strip/rstrip(".")
    ("realworldqa", "C", "C", 1, "C"),
    ("realworldqa", "C", "c", 0, ""),
    ("realworldqa", "C", "The answer is (C).", 1, "C"),
    ("realworldqa", "2", "2.", 1, "2"),
    ("realworldqa", "2", "Two", 0, "two"),              # no number words
    ("realworldqa", "Downhill", "downhill.", 1, "downhill"),
    # CountBench: number words 0-20 to digits, then exact match
    ("countbench", "3", "3", 1, "3"),
    ("countbench", "3", "Three", 1, "3"),
    ("countbench", "3", " three\n", 1, "3"),
    ("countbench", "3", "3.", 0, "3."),
    ("countbench", "3", "There are 3 dogs.", 0, "there are 3 dogs."),
    ("countbench", "20", "twenty", 1, "20"),
    # HR-Bench: can_infer (letter token, else unique option text), undecided → 0 (lmms-eval: GPT judge)
    ("hrbench4k", "B", "B", 1, "B"),
    ("hrbench4k", "B", "B.", 1, "B"),
    ("hrbench4k", "B", "A blue umbrella", 0, "A"),      # the token "A" is option A
    ("hrbench4k", "B", "blue", 1, "B"),
    ("hrbench4k", "B", "The umbrella is blue.", 1, "B"),
    ("hrbench4k", "B", "red or blue", 0, None),         # two option texts: undecided
    ("hrbench8k", "D", "5", 1, "D"),
    ("hrbench8k", "B", "Cannot determine the answer", 0, "Z"),
    ("hrbench8k", "B", "Z", 0, "Z"),
    ("hrbench8k", "B", "b", 0, None),                   # case-sensitive letters; "b" is no option text
    # POPE: reply.lower().strip() == answer
    ("pope", "yes", "yes", 1, "yes"),
    ("pope", "yes", " Yes\n", 1, "yes"),
    ("pope", "no", "No", 1, "no"),
    ("pope", "yes", "yes.", 0, "yes."),
    ("pope", "yes", "Yes, there is a snowboard.", 0, "yes, there is a snowboard."),
    # REC: the first [x0, y0, x1, y1] in 0-1 units, ACC@0.5 = IoU >= 0.5 (gt [0.1, 0.1, 0.5, 0.5])
    ("refcoco", "", "[0.1, 0.1, 0.5, 0.5]", 1, [0.1, 0.1, 0.5, 0.5]),
    ("refcoco", "", "[0.1, 0.1, 0.5, 0.89]", 1, [0.1, 0.1, 0.5, 0.89]),   # IoU .506: just above
    ("refcoco", "", "[0.1, 0.1, 0.5, 0.91]", 0, [0.1, 0.1, 0.5, 0.91]),   # IoU .494: just below
    ("refcoco+", "", "box: [0.1,0.1,0.5,0.5] or [0, 0, 1, 1]", 1, [0.1, 0.1, 0.5, 0.5]),  # the first one
    ("refcocog", "", "(0.1, 0.1, 0.5, 0.5)", 0, [0, 0, 0, 0]),            # parentheses: no box
    ("refcocog", "", "[.1, .1, .5, .5]", 0, [0, 0, 0, 0]),
    ("refcocog", "", "[0.1 ,0.1, 0.5, 0.5]", 0, [0, 0, 0, 0]),            # space before a comma
    ("refcoco", "", "[10, 10, 50, 50]", 0, [10, 10, 50, 50]),             # pixels are not rescaled
]


@pytest.mark.parametrize("task, answer, reply, expected, parsed", CASES)
def test_rules(task, answer, reply, expected, parsed):
    s = _sample(task, answer)
    value, got, _ = judge(s, reply)
    assert (value, got) == (expected, parsed)
    assert score(s, reply) == expected  # interp.data.score applies the same rule


@pytest.mark.parametrize("reply, answers, expected", [
    ("Two", ["2"] * 10, 1.0),                           # "two" → "2" in EvalAI normalisation
    ("Two", ["2"] * 3 + ["3"] * 7, 0.9),                # leave-one-out: 3 × 2/3 + 7 × 1, over 10
    ("2", ["2"] + ["3"] * 9, 0.3),
    ("2", ["2"] * 2 + ["3"] * 8, 0.6),
    ("2", ["2"] * 4 + ["3"] * 6, 1.0),
    ("coca-cola", ["coca cola"] * 10, 1.0),
    ("The Sony.", ["sony"] * 10, 1.0),
    ("2", ["2"], 0.0),                                  # a single answer: leaving it out leaves nothing
    ("2", [], 0.0),                                     # no answers (the test split)
])
def test_textvqa(reply, answers, expected):
    s = _sample("textvqa", answers[0] if answers else "", answers=tuple(answers))
    assert judge(s, reply)[0] == pytest.approx(expected)


@pytest.mark.parametrize("text, expected", [
    ("Two", "2"), ("The Dog's bone?", "dog 's bone"), ("coca - cola", "coca cola"), ("coca-cola", "coca cola"),
    ("3.5", "3.5"), ("red.", "red"), ("1,000", "1000"), ("dont", "don't"), ("somebody'd", "somebodyd"),
    ("a\tcat\n", "cat"), ("yes!", "yes"), ("(left)", "left"),
])
def test_evalai_normalize(text, expected):
    assert evalai_normalize(text) == expected


def test_evalai_period_limit():
    # EvalAI passes re.UNICODE (32) as re.sub's count: only the first 32 periods go
    assert evalai_normalize("x" + "." * 40) == "x" + "." * 8


@pytest.mark.parametrize("reply, expected", [("", ""), ("   ", ""), ("E", ""), ("(E) or B", "B"), ("BAD", "D")])
def test_mcq_edges(reply, expected):
    assert extract_mcq_answer(reply) == expected


def test_vstar_letter_none():
    assert vstar_letter("") is None and vstar_letter("xyz") is None


def test_rec_box_and_iou():
    assert rec_box("[1, 2, 3, 4]") == [1.0, 2.0, 3.0, 4.0]
    assert rec_box("[-0.5, 0, 1.25, 2]") == [-0.5, 0.0, 1.25, 2.0]
    assert rec_iou([0, 0, 1, 1], [0, 0, 0, 0]) == 0.0
    assert rec_iou([0, 0, 0, 0], [0, 0, 0, 0]) == 0.0  # lmms-eval would divide by zero


def test_rec_qwen_pixels():
    # Qwen2.5-VL answers in pixels of its resized image: 100×100 → 1008×1008 within VLMEvalKit's bounds
    reply = "[100, 100, 504, 504]"
    assert judge(_sample("refcoco", box_convention="unit"), reply)[0] == 0
    value, box, extra = judge(_sample("refcoco", box_convention="qwen2.5-vl"), reply)
    assert value == 1 and box[2] == pytest.approx(0.5) and extra["iou"] > 0.9 and extra["center"]
    with pytest.raises(InputError, match="box convention"):
        judge(_sample("refcoco", box_convention="pixels"), reply)


def test_unknown_task():
    with pytest.raises(InputError, match="no lmms-eval rule"):
        judge(Sample(IMG, "q?", "a", task="gqa", id="x"), "a")


def _rec(score, family="", group=None, **kw):
    return {"score": score, "family": family, "group": group, "correct": score >= 0.5, **kw}


def test_harness_mmstar_macro():
    recs = [_rec(1, "math", "geometry", task="mmstar"), _rec(0, "math", "geometry", task="mmstar"),
            _rec(1, "math", "statistics", task="mmstar"), _rec(1, "coarse", "emotion", task="mmstar")]
    h = harness(recs)
    assert h["metric"] == "average" and h["score"] == pytest.approx((0.5 + 1 + 1) / 3)
    assert h["by_category"] == {"coarse": 1.0, "math": pytest.approx(0.75)}
    w = weights(recs)
    assert w.sum() == pytest.approx(1) and w @ [r["score"] for r in recs] == pytest.approx(h["score"])


def test_harness_pope():
    pairs = [("yes", "yes"), ("yes", "no"), ("no", "yes"), ("yes.", "yes"), ("no", "no")]  # (prediction, answer)
    recs = [_rec(float(p == a), prediction=p, answer=a, task="pope") for p, a in pairs]
    h = harness(recs)
    # tp 1, fp 1, fn 1 ("yes." is neither yes nor no); yes ratio = ground-truth yes share
    assert h["score"] == pytest.approx(2 / 5)
    assert (h["pope_precision"], h["pope_recall"], h["pope_f1_score"]) == (0.5, 0.5, 0.5)
    assert h["pope_yes_ratio"] == pytest.approx(3 / 5)


def test_harness_hrbench_and_rec():
    recs = [_rec(1, "single", "c0", task="hrbench4k", parsed="B"),
            _rec(0, "cross", "c0", task="hrbench4k", parsed=None),
            _rec(0, "single", "c1", task="hrbench4k", parsed="A")]
    h = harness(recs)
    assert h["score"] == pytest.approx(0.25) and h["undecided"] == 1 and h["by_category"]["single"] == 0.5
    rec = [_rec(1, task="refcoco", extra={"iou": 0.6, "center": True}),
           _rec(0, task="refcoco", extra={"iou": 0.2, "center": False})]
    h = harness(rec)
    assert h["metric"] == "refcoco_ACC@0.5" and h["score"] == 0.5 and h["refcoco_ACC@0.1"] == 1.0
    assert h["refcoco_IoU"] == pytest.approx(0.4) and h["refcoco_Center_ACC"] == 0.5
    with pytest.raises(InputError, match="mix"):
        harness(recs + rec)
