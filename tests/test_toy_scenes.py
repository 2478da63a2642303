"""The toy scene generator and processor: determinism, boxes, answers recomputed from objects, tokens."""
import re
import tempfile
import time
from collections import Counter

import numpy as np
import pytest
import torch

from interp.toy import processor as P
from interp.toy import scenes

N = 20 * len(scenes.ALL_FAMILIES)  # 20 per family: enough to hit every branch of every family


@pytest.fixture(scope="module")
def made():
    return [scenes.make(scenes.ALL_FAMILIES[i % len(scenes.ALL_FAMILIES)], 11, i) for i in range(N)]


def test_deterministic_in_seed():
    a, b, c = (scenes.dataset(24, seed=s, families=scenes.ALL_FAMILIES) for s in (3, 3, 4))
    for x, y in zip(a, b):
        assert np.array_equal(np.asarray(x.image), np.asarray(y.image))
        assert (x.question, x.answer, x.boxes, x.id, x.choices) == (y.question, y.answer, y.boxes, y.id, y.choices)
    assert any(not np.array_equal(np.asarray(x.image), np.asarray(z.image)) for x, z in zip(a, c))
    assert a[5].id == "spatial-3-5"


def test_balanced_families_and_chance():
    d = scenes.dataset(10 * len(scenes.ALL_FAMILIES), seed=1, families=scenes.ALL_FAMILIES)
    assert Counter(s.family for s in d) == {f: 10 for f in scenes.ALL_FAMILIES}
    k = len(scenes.FAMILIES)
    assert Counter(s.family for s in scenes.dataset(3 * k, seed=1)) == {f: 3 for f in scenes.FAMILIES}
    assert scenes.dataset(8, seed=1, families=["count"])[7].family == "count"
    for s in d:
        assert s.answer in s.choices and s.image.size == (64, 64) and s.image.mode == "RGB"
    assert scenes.CHANCE["color_of_shape"] == pytest.approx(1 / 6) and scenes.CHANCE["exists"] == 0.5


def test_boxes_hold_exactly_their_object(made):
    for sample, objs in made:
        img = np.asarray(sample.image)
        assert 2 <= len(objs) <= 6
        for o in objs:
            x0, y0, x1, y1 = o.box
            assert 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64
            fp = scenes.footprint(o)
            assert fp.shape == (y1 - y0, x1 - x0)
            assert fp[0].any() and fp[-1].any() and fp[:, 0].any() and fp[:, -1].any()  # tight
            same = (img == o.rgb).all(-1)  # [64, 64] pixels of this object's exact colour
            # inside the box: exactly the object's footprint; outside: only other objects of that rgb
            assert np.array_equal(same[y0:y1, x0:x1], fp)
            others = sum(scenes.footprint(p).sum() for p in objs if p.rgb == o.rgb and p is not o)
            assert same.sum() == fp.sum() + others
        for b in sample.boxes:
            assert tuple(int(v) for v in b) in [o.box for o in objs]


def _answer(question, objs):
    """Recompute (answer, evidence boxes) from the object list alone, by parsing the question."""
    cs, ss = "|".join(scenes.COLORS), "|".join(scenes.SHAPES)
    pl = {v: k for k, v in scenes.PLURAL.items()}
    if m := re.fullmatch(rf"what color is the ({ss}) \?", question):
        hit = [o for o in objs if o.shape == m[1]]
        assert len(hit) == 1
        return hit[0].color, [hit[0].box]
    if m := re.fullmatch(rf"what shape is the ({cs}) object \?", question):
        hit = [o for o in objs if o.color == m[1]]
        assert len(hit) == 1
        return hit[0].shape, [hit[0].box]
    if question == "what color is the small object ?":
        hit = [o for o in objs if o.size == "small"]
        assert len(hit) == 1
        return hit[0].color, [hit[0].box]
    if m := re.fullmatch(rf"how many (?:({cs}) objects|(\w+)) are there \?", question):
        hit = [o for o in objs if (o.color == m[1] if m[1] else o.shape == pl[m[2]])]
        return scenes.NUMBERS[len(hit) - 1], [o.box for o in hit]
    if m := re.fullmatch(rf"is there an? ({cs}) ({ss}) \?", question):
        hit = [o for o in objs if (o.color, o.shape) == (m[1], m[2])]
        if hit:
            return "yes", [hit[0].box]
        near = [o for o in objs if (o.color == m[1]) != (o.shape == m[2])]
        return "no", [o.box for o in near]
    if m := re.fullmatch(rf"is the ({cs}) ({ss}) (left|above) or (right|below) (?:of )?the ({cs}) ({ss}) \?",
                         question):
        a = [o for o in objs if o.color == m[1]]  # each named colour is unique, so colour alone finds it
        b = [o for o in objs if o.color == m[5]]
        assert len(a) == len(b) == 1 and (a[0].shape, b[0].shape) == (m[2], m[6])
        axis = 0 if m[3] == "left" else 1
        d = a[0].center[axis] - b[0].center[axis]
        assert abs(d) >= scenes.SPATIAL_MIN_GAP
        return (m[3] if d < 0 else m[4]), [a[0].box, b[0].box]
    if m := re.fullmatch(rf"is the ({cs}) ({ss}) (left|above) or (right|below) \?", question):
        a = [o for o in objs if o.color == m[1]]
        assert len(a) == 1 and a[0].shape == m[2]
        axis = 0 if m[3] == "left" else 1
        d = a[0].center[axis] - scenes.SIZE / 2  # against the image centre
        assert abs(d) >= scenes.SPATIAL_MIN_GAP
        return (m[3] if d < 0 else m[4]), [a[0].box]
    raise AssertionError(f"unparsed question {question!r}")


def test_answers_recomputed_from_objects(made):
    answers = Counter()
    for sample, objs in made:
        answer, boxes = _answer(sample.question, objs)
        assert sample.answer == answer, sample.id
        got = {tuple(int(v) for v in b) for b in sample.boxes}
        if sample.answer == "no":  # evidence = the near misses we placed (a subset of all near misses)
            assert got <= set(boxes) and len(got) == 2
        else:
            assert got == set(boxes), sample.id
        answers[sample.family, sample.answer] += 1
    assert answers["exists", "yes"] and answers["exists", "no"]
    assert len({a for f, a in answers if f == "count"}) == 4


@pytest.mark.parametrize("axis", ["x", "y"])
def test_mirror_moves_pixels_boxes_and_answers_together(made, axis):
    from dataclasses import replace

    flip = np.fliplr if axis == "x" else np.flipud
    for sample, objs in made:
        m = scenes.mirror(sample, axis)
        img, out = np.asarray(sample.image), np.asarray(m.image)
        assert np.array_equal(out, flip(img))
        moved = []  # the objects where the mirror puts them, boxes computed here by hand
        for o in objs:
            x0, y0, x1, y1 = o.box
            box = (64 - x1, y0, 64 - x0, y1) if axis == "x" else (x0, 64 - y1, x1, 64 - y0)
            bx0, by0, bx1, by1 = box
            assert np.array_equal(out[by0:by1, bx0:bx1], flip(img[y0:y1, x0:x1]))
            moved.append(replace(o, box=box))
        # the answer re-derived from the moved objects by the independent parser, and the evidence with it
        answer, boxes = _answer(m.question, moved)
        assert m.answer == answer, m.id
        got = {tuple(int(v) for v in b) for b in m.boxes}
        assert got <= set(boxes) if m.answer == "no" else got == set(boxes)
        swapped = m.answer != sample.answer
        assert swapped == (sample.answer in scenes.SIDES[axis]), m.id  # only that axis' sides change
        assert (m.question, m.choices, m.family) == (sample.question, sample.choices, sample.family)
        assert scenes.mirror(m, axis).answer == sample.answer
    with pytest.raises(ValueError, match="axis must be"):
        scenes.mirror(made[0][0], "z")


def test_unknown_family_is_named():
    with pytest.raises(ValueError, match=r"unknown family 'colour'; expected one of \('color_of_shape'"):
        scenes.dataset(3, seed=0, families=["colour"])


def test_max_objects_caps_scenes():
    for f in scenes.ALL_FAMILIES:
        for i in range(12):
            sample, objs = scenes.make(f, 5, i, max_objects=3)
            assert 2 <= len(objs) <= (5 if f == "count" else 3)  # count needs k + 1 objects for k up to 4
            assert _answer(sample.question, objs)[0] == sample.answer
    assert max(len(scenes.make("color_of_shape", 5, i)[1]) for i in range(40)) == 6
    for bad in (1, 7):
        with pytest.raises(ValueError, match="max_objects"):
            scenes.make("count", 5, 0, max_objects=bad)


def test_generator_speed():
    scenes.dataset(12, seed=0)
    t = time.perf_counter()
    scenes.dataset(300, seed=0)
    assert (time.perf_counter() - t) / 300 < 3e-3  # ~0.45 ms alone; slack for a shared machine


@pytest.fixture(scope="module")
def proc():
    return P.build_processor()


def test_vocabulary_covers_generator():
    d = scenes.dataset(600, seed=2, families=scenes.ALL_FAMILIES)
    words = {w for s in d for w in f"{s.question} {s.answer}".split()}
    assert words <= set(P.vocabulary())
    assert P.vocabulary()[:5] == list(P.SPECIAL)


def test_chat_template_is_training_prompt(proc):
    q = "what color is the circle ?"
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": q}]}]
    text = proc.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
    assert text == P.prompt(q) == "<s> <image> question : what color is the circle ? answer :"


def test_processor_expands_image_and_matches_training_encoding(proc):
    from interp.toy import train

    d = scenes.dataset(6, seed=5)
    enc = proc(images=[s.image for s in d], text=[P.prompt(s.question) for s in d], return_tensors="pt",
               padding=True)
    assert ((enc.input_ids == train.IMG).sum(1) == 64).all()
    assert enc.pixel_values.shape == (6, 3, 64, 64)
    ids, mask, _ = train.encode(d, with_answer=False)
    assert torch.equal(ids, enc.input_ids) and torch.equal(mask, enc.attention_mask)
    torch.testing.assert_close(train.pixels([s.image for s in d]), enc.pixel_values)
    assert proc.tokenizer.padding_side == "left"
    assert proc.tokenizer("red </s>").input_ids == [P.vocabulary().index("red"), 2]


def test_processor_round_trip(proc):
    from transformers import AutoProcessor

    d = scenes.dataset(2, seed=6)
    with tempfile.TemporaryDirectory() as tmp:
        proc.save_pretrained(tmp)
        back = AutoProcessor.from_pretrained(tmp)
    kw = dict(images=[s.image for s in d], text=[P.prompt(s.question) for s in d], return_tensors="pt",
              padding=True)
    a, b = proc(**kw), back(**kw)
    assert all(torch.equal(a[k], b[k]) for k in a)
    msgs = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "x"}]}]
    assert back.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False) == P.prompt("x")
