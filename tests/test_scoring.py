"""Scorers against tables of hand-checked cases (VQA normalisation as in the official evaluation)."""

import math

import pytest
from PIL import Image

from interp.data import Sample
from interp.data.scoring import (
    box_iou,
    exact_match,
    extract_choice,
    multiple_choice,
    normalize_answer,
    parse_box,
    rec_iou,
    resolve_metric,
    score,
    vqa_accuracy,
)
from interp.errors import InputError

IMG = Image.new("RGB", (32, 32))


@pytest.mark.parametrize("text, expected", [
    ("red", "red"),
    ("  Red\n", "red"),
    ("Yes.", "yes"),
    ("Two", "2"),
    ("ten", "10"),
    ("none", "0"),
    ("The dog", "dog"),
    ("a red cube", "red cube"),
    ("an apple", "apple"),
    ("dont", "don't"),
    ("don't", "don't"),
    ("isnt it", "isn't it"),
    ("3.5", "3.5"),             # a period before a digit stays
    ("1,000", "1000"),          # digit,digit → every punctuation mark deleted
    ("red, white", "red white"),
    ("black/white", "black white"),  # punctuation touching no space → a space
    ("t-shirt", "t shirt"),
    ("what?", "what"),
    ("(left)", "left"),
    ("two dogs!", "2 dogs"),
    ("a\tcat", "cat"),
    ("", ""),
])
def test_normalize_answer(text, expected):
    assert normalize_answer(text) == expected


@pytest.mark.parametrize("pred, answer, expected", [
    ("red", "red", 1.0),
    ("Red.", "red", 1.0),
    ("two", "2", 1.0),
    ("The cube", "cube", 1.0),
    ("red cube", "red", 0.0),
    ("blue", "red", 0.0),
    ("", "red", 0.0),
    ("yes", "Yes", 1.0),
])
def test_exact_match(pred, answer, expected):
    assert exact_match(pred, answer) == expected


@pytest.mark.parametrize("hits, expected", [(0, 0.0), (1, 0.3), (2, 0.6), (3, 0.9), (4, 1.0), (7, 1.0), (10, 1.0)])
def test_vqa_accuracy_official_values(hits, expected):
    # Official metric: mean over the 10 leave-one-out subsets of min(matches / 3, 1).
    answers = ["cat"] * hits + [f"other{i}" for i in range(10 - hits)]
    assert vqa_accuracy("cat", answers) == pytest.approx(expected)


def _official(pred, answers):
    # The official loop, written out: for each answer, count matches among the other nine.
    accs = []
    for k in range(len(answers)):
        others = answers[:k] + answers[k + 1:]
        accs.append(min(1.0, sum(a == pred for a in others) / 3))
    return sum(accs) / len(accs)


@pytest.mark.parametrize("pred, answers", [
    ("2", ["2", "2", "two", "3", "2", "2 ", "3", "4", "2", "2"]),
    ("yes", ["yes", "no"] * 5),
    ("blue", ["blue", "light blue", "blue", "navy", "teal", "blue.", "sky", "navy", "navy", "navy"]),
])
def test_vqa_accuracy_matches_official_loop(pred, answers):
    normed = [normalize_answer(a) for a in answers]
    assert vqa_accuracy(pred, answers) == pytest.approx(_official(normalize_answer(pred), normed))


def test_vqa_accuracy_normalises_and_edge_cases():
    assert vqa_accuracy("Two", ["2"] * 10) == 1.0
    assert vqa_accuracy("yes", ["yes"]) == 1.0  # one reference: exact match
    with pytest.raises(InputError, match="list"):
        vqa_accuracy("yes", "yes")
    with pytest.raises(InputError, match="empty"):
        vqa_accuracy("yes", [])


@pytest.mark.parametrize("text, choices, expected", [
    ("B", (), "B"),
    ("b", (), "B"),
    ("(B)", (), "B"),
    ("B.", (), "B"),
    ("[c]", (), "C"),
    ("Answer: b", (), "B"),
    ("answer:(D)", (), "D"),
    ("The answer is (C).", (), "C"),
    ("The correct option is B", (), "B"),
    ("C) a red cube", (), "C"),
    ("D. green", (), "D"),
    ("I think it is (d)", (), "D"),
    ("It must be B, because", (), "B"),
    ("A", (), "A"),
    ("A.", (), "A"),
    ("A cat", (), None),                       # article, not option A
    ("The answer is a dog", (), None),
    ("I think so", (), None),
    ("no idea", (), None),
    ("", (), None),
    ("blue", ("red", "blue", "green"), "B"),   # the option's text
    ("The Green", ("red", "blue", "green"), "C"),
    ("E", ("red", "blue", "green", "cyan"), None),  # beyond the options
    ("answer: E, no (B)", ("w", "x", "y", "z"), "B"),
])
def test_extract_choice(text, choices, expected):
    assert extract_choice(text, choices) == expected


@pytest.mark.parametrize("pred, answer, choices, expected", [
    ("(B)", "B", ("red", "blue"), 1.0),
    ("Answer: a", "A", ("red", "blue"), 1.0),
    ("blue", "B", ("red", "blue"), 1.0),
    ("B", "blue", ("red", "blue"), 1.0),     # answer given as the option text
    ("A", "blue", ("red", "blue"), 0.0),
    ("nothing", "B", ("red", "blue"), 0.0),
])
def test_multiple_choice(pred, answer, choices, expected):
    assert multiple_choice(pred, answer, choices) == expected


def test_multiple_choice_bad_answer():
    with pytest.raises(InputError, match="neither a letter"):
        multiple_choice("A", "purple", ("red", "blue"))


@pytest.mark.parametrize("a, b, expected", [
    ((0, 0, 2, 2), (0, 0, 2, 2), 1.0),
    ((0, 0, 2, 2), (2, 0, 4, 2), 0.0),          # touching edges
    ((0, 0, 2, 2), (5, 5, 6, 6), 0.0),
    ((0, 0, 2, 2), (1, 0, 3, 2), 1 / 3),
    ((0, 0, 4, 4), (0, 0, 2, 2), 0.25),
    ((0, 0, 2, 1), (0, 0, 1, 1), 0.5),
    ((0, 0, 0, 0), (0, 0, 0, 0), 0.0),          # no area
])
def test_box_iou(a, b, expected):
    assert box_iou(a, b) == pytest.approx(expected)
    assert box_iou(b, a) == pytest.approx(expected)


@pytest.mark.parametrize("pred, gt, expected", [
    ((0, 0, 2, 1), (0, 0, 1, 1), 1.0),          # IoU exactly 0.5 counts
    ((0, 0, 4, 4), (0, 0, 2, 2), 0.0),
    ("[0, 0, 2, 2]", (0, 0, 2, 2), 1.0),
    ("box: (0.0, 0, 2.5, 2)", (0, 0, 2, 2), 1.0),
    ("somewhere left", (0, 0, 2, 2), 0.0),
])
def test_rec_iou(pred, gt, expected):
    assert rec_iou(pred, gt) == expected


def test_parse_box():
    assert parse_box("x0=1 y0=2 x1=3.5 y1=-4 extra 9") == (1.0, 2.0, 3.5, -4.0)
    assert parse_box("1 2 3") is None


def test_score_auto_dispatch():
    open_q = Sample(IMG, "color?", "red", id="o")
    mc = Sample(IMG, "color? (A) red (B) blue", "B", choices=("red", "blue"), id="m")
    vqa = Sample(IMG, "how many?", "2", answers=("2",) * 3 + ("3",) * 7, id="v")
    rec = Sample(IMG, "where is the cube?", "", boxes=((0, 0, 8, 8),), id="r")
    vocab = Sample(IMG, "color?", "red", choices=("red", "blue"), id="t")  # toy-style answer vocabulary
    assert [resolve_metric(s) for s in (open_q, mc, vqa, rec, vocab)] == [
        "exact_match", "multiple_choice", "vqa", "exact_match", "exact_match"]
    assert score(vocab, "a") == 0.0 and score(vocab, "Red") == 1.0
    assert score(vocab, "(a)", metric="multiple_choice") == 1.0
    assert score(open_q, "Red.") == 1.0
    assert score(mc, "(b)") == 1.0
    assert score(vqa, "two") == pytest.approx(0.9)
    assert score(rec, "[0, 0, 8, 8]", metric="rec") == 1.0
    with pytest.raises(InputError, match="boxes"):
        score(open_q, "[0, 0, 8, 8]", metric="rec")
    with pytest.raises(InputError, match="unknown metric"):
        score(open_q, "red", metric="bleu")
    assert not math.isnan(score(vqa, "3"))
