"""Synthetic scene-VQA: 64×64 RGB scenes of 2–6 objects on cluttered noisy grey, with known evidence boxes.

Every sample is a pure function of (family, seed, index), so any slice of any split can be regenerated.
Objects are drawn in saturated palette colours; background and clutter are grey (r = g = b), and object
boxes never touch, so every pixel of an object's colour inside its box belongs to that object.

    >>> samples = dataset(600, seed=EVAL_SEED)       # balanced over FAMILIES
    >>> s = samples[0]; s.question, s.answer, s.boxes
    ('what color is the circle ?', 'purple', ((25.0, 28.0, 38.0, 41.0),))
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

from interp.data.schema import Sample  # boxes are stored as float (x0, y0, x1, y1), x1/y1 exclusive

SIZE = 64  # image side, pixels
COLORS = {  # name -> RGB; saturated, so never equal to a grey pixel even after jitter
    "red": (220, 40, 40), "green": (40, 170, 60), "blue": (50, 80, 225),
    "yellow": (235, 215, 40), "purple": (150, 55, 200), "orange": (245, 135, 25),
}
SHAPES = ("circle", "square", "triangle", "cross")
PLURAL = {"circle": "circles", "square": "squares", "triangle": "triangles", "cross": "crosses"}
SIZES = {"small": (6, 8), "large": (12, 15)}  # side of the object's square footprint, inclusive range
NUMBERS = ("one", "two", "three", "four")
MAX_OBJECTS = 6  # scenes hold 2..MAX_OBJECTS objects
SIDES = {"x": ("left", "right"), "y": ("above", "below")}  # spatial / position answers per axis
SPATIAL_MIN_GAP = 8  # spatial / position: the centres (object and object, or object and image centre)
#                      differ by at least this many pixels along the asked axis

EVAL_SEED = 20_240_601  # held-out evaluation scenes; training never uses it (see TRAIN_SEED_BASE)
TRAIN_SEED_BASE = 1_000_000  # training batch k uses seed TRAIN_SEED_BASE + k

ALL_FAMILIES = ("color_of_shape", "shape_of_color", "small_color", "count", "exists", "spatial", "position")
# The default list: families the shipped model learned to chance + 20 points (checkpoint/model_card.json).
# position (absolute left/right, above/below) is a stepping stone towards spatial, generatable by name; the
# shipped model was not trained on it.
FAMILIES = ("color_of_shape", "shape_of_color", "small_color", "count", "exists", "spatial")
CHOICES = {
    "color_of_shape": tuple(COLORS), "shape_of_color": SHAPES, "small_color": tuple(COLORS),
    "count": NUMBERS, "exists": ("yes", "no"), "spatial": ("left", "right", "above", "below"),
    "position": ("left", "right", "above", "below"),
}
# Chance of a blind guesser. exists is balanced, so majority = 1/2; spatial names its two options.
CHANCE = {f: 1 / len(c) for f, c in CHOICES.items()} | {"exists": 0.5, "spatial": 0.5, "position": 0.5}


@dataclass(frozen=True)
class Obj:
    """A drawn object. rgb: its exact pixel colour; box: tight pixel box, x1/y1 exclusive."""
    color: str
    shape: str
    size: str
    rgb: tuple[int, int, int]
    box: tuple[int, int, int, int]

    @property
    def center(self) -> tuple[float, float]:
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2


def _mask(shape: str, side: int) -> np.ndarray:
    """Boolean footprint [side, side] of a shape."""
    y, x = np.mgrid[0:side, 0:side] + 0.5
    c, r = side / 2, side / 2
    if shape == "circle":
        return (x - c) ** 2 + (y - c) ** 2 <= r * r
    if shape == "square":
        return np.ones((side, side), bool)
    if shape == "triangle":  # apex up: half-width grows linearly with y
        return np.abs(x - c) <= (y / side) * r
    if shape == "cross":
        t = max(side / 6, 1.0)
        return (np.abs(x - c) <= t) | (np.abs(y - c) <= t)
    raise ValueError(f"unknown shape {shape!r}; expected one of {SHAPES}")


def _tight(m: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(m)
    return m[ys.min():ys.max() + 1, xs.min():xs.max() + 1]


# Tight footprints. Every shape spans its full side in one axis, so max(h, w) recovers the side from a box.
_MASKS = {(s, n): _tight(_mask(s, n)) for s in SHAPES for lo, hi in SIZES.values() for n in range(lo, hi + 1)}
assert all(max(m.shape) == n for (_, n), m in _MASKS.items())


def _background(rng: np.random.Generator) -> np.ndarray:
    """Cluttered noisy grey [SIZE, SIZE] float image (one channel: it is grey)."""
    img = np.full((SIZE, SIZE), rng.uniform(90, 160))
    for _ in range(rng.integers(3, 9)):  # clutter: grey bars and blocks of another level
        x0, y0 = rng.integers(0, SIZE, 2)
        w, h = (rng.integers(1, 4), rng.integers(6, 30)) if rng.random() < 0.5 else rng.integers(3, 16, 2)
        if rng.random() < 0.5:
            w, h = h, w
        img[y0:y0 + h, x0:x0 + w] = rng.uniform(60, 200)
    return img + rng.normal(0, 9, (SIZE, SIZE))


def _place(rng: np.random.Generator, specs: list[tuple[str, str, str]]) -> list[Obj] | None:
    """Place (color, shape, size) specs with boxes ≥ 2 px apart; None if rejection sampling fails."""
    objs: list[Obj] = []
    for color, shape, size in specs:
        side = int(rng.integers(SIZES[size][0], SIZES[size][1] + 1))
        for _ in range(60):
            x0, y0 = (int(v) for v in rng.integers(1, SIZE - side, 2))
            box = (x0, y0, x0 + side, y0 + side)
            if all(box[0] >= o.box[2] + 2 or o.box[0] >= box[2] + 2 or
                   box[1] >= o.box[3] + 2 or o.box[1] >= box[3] + 2 for o in objs):
                break
        else:
            return None
        rgb = tuple(int(np.clip(v + rng.integers(-12, 13), 0, 255)) for v in COLORS[color])
        h, w = _MASKS[shape, side].shape
        box = (x0, y0, x0 + w, y0 + h)  # tight box of the footprint
        objs.append(Obj(color, shape, size, rgb, box))
    return objs


def render(objs: list[Obj], rng: np.random.Generator) -> np.ndarray:
    """Draw objects on a fresh background. Returns uint8 [SIZE, SIZE, 3]."""
    img = np.repeat(np.clip(_background(rng), 0, 255).round().astype(np.uint8)[..., None], 3, axis=2)
    for o in objs:
        x0, y0, x1, y1 = o.box
        m = footprint(o)
        img[y0:y1, x0:x1][m] = o.rgb
    return img


def footprint(o: Obj) -> np.ndarray:
    """Boolean mask [y1-y0, x1-x0] of the object's pixels inside its box."""
    x0, y0, x1, y1 = o.box
    return _MASKS[o.shape, max(x1 - x0, y1 - y0)]


def _pick(rng, seq, exclude=()):
    return str(rng.choice([v for v in seq if v not in exclude]))


def _a(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _size(rng) -> str:
    return "small" if rng.random() < 0.4 else "large"


def _others(rng, n: int, ok) -> list[tuple[str, str, str]]:
    """n random (color, shape, size) specs satisfying ok(color, shape)."""
    out = []
    while len(out) < n:
        c, s = _pick(rng, COLORS), _pick(rng, SHAPES)
        if ok(c, s):
            out.append((c, s, _size(rng)))
    return out


def _question(family: str, rng: np.random.Generator, max_objects: int = MAX_OBJECTS):
    """Draw specs and a question. Returns (specs, question, answer, evidence spec indices, choices)."""
    n = int(rng.integers(2, max_objects + 1))
    if family == "color_of_shape":  # the asked shape is unique
        c, s = _pick(rng, COLORS), _pick(rng, SHAPES)
        specs = [(c, s, _size(rng))] + _others(rng, n - 1, lambda c2, s2: s2 != s)
        return specs, f"what color is the {s} ?", c, [0], CHOICES[family]
    if family == "shape_of_color":  # the asked colour is unique
        c, s = _pick(rng, COLORS), _pick(rng, SHAPES)
        specs = [(c, s, _size(rng))] + _others(rng, n - 1, lambda c2, s2: c2 != c)
        return specs, f"what shape is the {c} object ?", s, [0], CHOICES[family]
    if family == "small_color":  # one small object among 1–4 large distractors (V*-like)
        c, s = _pick(rng, COLORS), _pick(rng, SHAPES)
        k = min(n - 1, 4) or 1
        specs = [(c, s, "small")] + [(_pick(rng, COLORS), _pick(rng, SHAPES), "large") for _ in range(k)]
        return specs, "what color is the small object ?", c, [0], CHOICES[family]
    if family == "count":  # k ∈ 1..4 matching objects, the rest do not match (CountBench-like)
        k = int(rng.integers(1, 5))
        n = max(n, k + 1) if rng.random() < 0.8 else max(n, k)
        if rng.random() < 0.5:
            c = _pick(rng, COLORS)
            specs = [(c, _pick(rng, SHAPES), _size(rng)) for _ in range(k)]
            specs += _others(rng, n - k, lambda c2, s2: c2 != c)
            q = f"how many {c} objects are there ?"
        else:
            s = _pick(rng, SHAPES)
            specs = [(_pick(rng, COLORS), s, _size(rng)) for _ in range(k)]
            specs += _others(rng, n - k, lambda c2, s2: s2 != s)
            q = f"how many {PLURAL[s]} are there ?"
        return specs, q, NUMBERS[k - 1], list(range(k)), CHOICES[family]
    if family == "exists":  # near misses: same colour other shape, same shape other colour (POPE-like)
        c, s = _pick(rng, COLORS), _pick(rng, SHAPES)
        near = [(c, _pick(rng, SHAPES, [s]), _size(rng)), (_pick(rng, COLORS, [c]), s, _size(rng))]
        n = max(n, 3)
        if rng.random() < 0.5:
            if rng.random() < 0.5:
                near = near[:int(rng.integers(0, 3))]  # a yes scene with 0–2 near misses
            specs = [(c, s, _size(rng))] + near
            specs += _others(rng, max(n - len(specs), 0), lambda c2, s2: (c2, s2) != (c, s))
            return specs, f"is there {_a(c)} {c} {s} ?", "yes", [0], CHOICES[family]
        specs = near + _others(rng, n - 2, lambda c2, s2: (c2, s2) != (c, s))
        return specs, f"is there {_a(c)} {c} {s} ?", "no", [0, 1], CHOICES[family]
    if family == "spatial":  # two objects whose colours are unique in the scene; answer by box centres
        ca, cb = (str(c) for c in rng.choice(list(COLORS), 2, replace=False))
        sa, sb = _pick(rng, SHAPES), _pick(rng, SHAPES)
        specs = [(ca, sa, _size(rng)), (cb, sb, _size(rng))]
        specs += _others(rng, n - 2, lambda c2, s2: c2 not in (ca, cb))
        axis = "x" if rng.random() < 0.5 else "y"
        words = SIDES[axis]
        rel = "of the" if axis == "x" else "the"
        q = f"is the {ca} {sa} {words[0]} or {words[1]} {rel} {cb} {sb} ?"
        return specs, q, axis, [0, 1], words  # answer filled after placement
    if family == "position":  # which half of the image a uniquely coloured object is in (RealWorldQA-like)
        c, s = _pick(rng, COLORS), _pick(rng, SHAPES)
        specs = [(c, s, _size(rng))] + _others(rng, n - 1, lambda c2, s2: c2 != c)
        axis = "x" if rng.random() < 0.5 else "y"
        words = SIDES[axis]
        return specs, f"is the {c} {s} {words[0]} or {words[1]} ?", axis, [0], words
    raise AssertionError(family)  # make() checks the name against ALL_FAMILIES first


def make(family: str, seed: int, index: int, *, max_objects: int = MAX_OBJECTS) -> tuple[Sample, list[Obj]]:
    """One sample and its object list, a pure function of (family, seed, index, max_objects).

    max_objects (2..6) caps the scene's object count (a few families need 3 or k+1 and take them anyway):
    fewer objects make easier scenes, for curricula and difficulty sweeps."""
    if not 2 <= max_objects <= MAX_OBJECTS:
        raise ValueError(f"max_objects must be in 2..{MAX_OBJECTS}, got {max_objects}")
    if family not in ALL_FAMILIES:
        raise ValueError(f"unknown family {family!r}; expected one of {ALL_FAMILIES}")
    rng = np.random.default_rng([seed, index, ALL_FAMILIES.index(family)])
    while True:
        specs, q, answer, ev, choices = _question(family, rng, max_objects)
        objs = _place(rng, specs)
        if objs is None:
            continue
        if family in ("spatial", "position"):  # A's centre against B's, or against the image centre
            (ax, ay) = objs[0].center
            (bx, by) = objs[1].center if family == "spatial" else (SIZE / 2, SIZE / 2)
            d = ax - bx if answer == "x" else ay - by
            if abs(d) < SPATIAL_MIN_GAP:  # too close to call; redraw
                continue
            answer = choices[0] if d < 0 else choices[1]
        break
    order = rng.permutation(len(objs))  # draw order carries no information about the evidence
    img = render([objs[i] for i in order], rng)
    sample = Sample(Image.fromarray(img), q, answer, tuple(choices), family,
                    [objs[i].box for i in ev], f"{family}-{seed}-{index}")
    return sample, objs


def mirror(sample: Sample, axis: str = "x") -> Sample:
    """A toy sample's mirror image: flipped left↔right (axis "x") or upside down ("y"), boxes moved with it,
    and an answer that names a side on that axis swapped (spatial, position). Colour, shape, count and existence
    answers do not change under a mirror, so (sample, mirror(sample)) is a clean/corrupt pair for activation
    patching that differs only in geometry. With "y", triangles point down: a shape the model never saw."""
    if axis not in SIDES:
        raise ValueError(f"axis must be 'x' (left↔right) or 'y' (upside down), got {axis!r}")
    w, h = sample.image.size
    if axis == "x":
        image = sample.image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
        boxes = tuple((w - x1, y0, w - x0, y1) for x0, y0, x1, y1 in sample.boxes)
    else:
        image = sample.image.transpose(Image.Transpose.FLIP_TOP_BOTTOM)
        boxes = tuple((x0, h - y1, x1, h - y0) for x0, y0, x1, y1 in sample.boxes)
    a, b = SIDES[axis]
    answer = {a: b, b: a}.get(sample.answer, sample.answer)
    return Sample(image, sample.question, answer, sample.choices, sample.family, boxes,
                  f"{sample.id}-mirror-{axis}", sample.answers)


def dataset(n: int, *, seed: int, families=None, max_objects: int = MAX_OBJECTS) -> list[Sample]:
    """n samples balanced over families (round-robin; a family named twice gets twice the share),
    deterministic in seed."""
    families = tuple(families or FAMILIES)
    return [make(families[i % len(families)], seed, i, max_objects=max_objects)[0] for i in range(n)]
