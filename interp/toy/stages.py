"""The toy trainer's stages as small frozen values, and the shipped model's recipe as data the CLI replays.

    python -m interp.toy.train --out runs/toy --recipe shipped            # = RECIPES["shipped"].commands(...)

Stage A trains the CLIP tower with a per-patch head (`TOWER` schedule); stage B the projector + decoder on VQA
over the recipe's families (`VQA`); each `Continuation` (C, C2, ...) reruns stage B with a fresh schedule on a
family mix of its own. A mix names a family k times for k shares of each batch; `MIXES` names the shipped ones,
and `--families-c` takes those names as well as families.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

from interp.errors import InputError
from interp.toy import scenes


@dataclass(frozen=True)
class Schedule:
    """A stage's AdamW (weight decay 0.05) and warmup + cosine schedule (`interp.training.warmup_cosine`)."""

    batch: int
    lr: float  # peak
    betas: tuple[float, float]
    warmup: int  # steps
    floor: float  # the cosine ends at floor × lr
    clip: float  # gradient-norm clip; 0: none


TOWER = Schedule(batch=128, lr=2e-3, betas=(0.9, 0.999), warmup=100, floor=0.05, clip=0.0)  # stage A
VQA = Schedule(batch=64, lr=1e-3, betas=(0.9, 0.98), warmup=150, floor=0.1, clip=1.0)  # stage B


def _mix(**shares: int) -> tuple[str, ...]:
    return tuple(f for f, k in shares.items() for _ in range(k))


MIXES = {
    "HARD1": _mix(shape_of_color=3, spatial=3, color_of_shape=2, count=1, exists=1, small_color=1),
    "HARD2": _mix(spatial=4, shape_of_color=3, color_of_shape=2, count=2, exists=2, small_color=1),
    "MIX4": _mix(spatial=4, shape_of_color=2, color_of_shape=2, count=2, exists=2, small_color=1),
    "MIX5": _mix(spatial=5, shape_of_color=2, color_of_shape=2, count=2, exists=2, small_color=1),
}


def expand(spec: str) -> tuple[str, ...]:
    """A comma-separated mix ("spatial,count", "HARD1", "MIX4,position") as the tuple of its family names."""
    return tuple(f for item in spec.split(",") for f in MIXES.get(item.strip(), (item.strip(),)))


def mix_name(families) -> str:
    """The shortest spelling of a mix for `--families-c`: its `MIXES` name, else the families joined."""
    return next((k for k, v in MIXES.items() if v == tuple(families)), ",".join(families))


def check_families(families, what: str) -> tuple[str, ...]:
    families = tuple(families)
    unknown = sorted({f for f in families if f not in scenes.ALL_FAMILIES})
    if not families or unknown:
        raise InputError(f"{what}: unknown family {', '.join(map(repr, unknown)) or '(none given)'}; use the "
                         f"families {', '.join(scenes.ALL_FAMILIES)} (a name k times: k shares) or a mix "
                         f"{', '.join(MIXES)}")
    return families


def stage_name(k: int) -> str:
    """The k-th continuation's name (0-based) in the training state and the card: C, C2, C3, ..."""
    return "C" if k == 0 else f"C{k + 1}"


def _g(x: float) -> str:
    return f"{x:g}"


@dataclass(frozen=True)
class Continuation:
    """Stage B again with a fresh schedule (`schedule`) on its own family mix. aux: weight of the per-patch
    label loss on the projector's output; tower_lr: train the tower too, at this multiple of lr (0: frozen);
    max_objects: easier scenes (a curriculum); answers: families whose choices meet this set only ask
    questions answered from it (left, right: horizontal spatial only)."""

    minutes: float
    families: tuple[str, ...]
    lr: float = 5e-4
    aux: float = 0.0
    tower_lr: float = 0.0
    max_objects: int = scenes.MAX_OBJECTS
    answers: tuple[str, ...] | None = None

    def __post_init__(self):  # lists (a state's JSON-like config) become tuples: values compare equal
        object.__setattr__(self, "families", tuple(self.families))
        object.__setattr__(self, "answers", tuple(self.answers) if self.answers else None)

    @property
    def schedule(self) -> Schedule:
        return replace(VQA, lr=self.lr, warmup=50)

    def validate(self) -> Continuation:
        """Raise InputError, before any training, on what would fail or do nothing in the middle of it."""
        check_families(self.families, "--families-c")
        if not 2 <= self.max_objects <= scenes.MAX_OBJECTS:
            raise InputError(f"--max-objects-c must be in 2..{scenes.MAX_OBJECTS}, got {self.max_objects}")
        for flag, v in (("--minutes-c", self.minutes), ("--lr-c", self.lr)):
            if not v > 0:
                raise InputError(f"{flag} must be > 0, got {v}")
        for flag, v in (("--aux-c", self.aux), ("--tower-lr-c", self.tower_lr)):
            if not v >= 0:
                raise InputError(f"{flag} must be >= 0, got {v}")
        known = {a for f in self.families for a in scenes.CHOICES[f]}
        if self.answers and not set(self.answers) <= known:
            raise InputError(f"--answers-c {','.join(self.answers)}: no family of the mix "
                             f"{sorted(set(self.families))} answers {sorted(set(self.answers) - known)}; its "
                             f"answers are {sorted(known)}")
        return self

    def config(self) -> dict:
        """The stage's entry in the training state (and, with its counts, in the card's continuations)."""
        return {"minutes": self.minutes, "lr": self.lr, "max_objects": self.max_objects, "aux": self.aux,
                "tower_lr": self.tower_lr, "answers": list(self.answers) if self.answers else None,
                "families": list(self.families)}

    @classmethod
    def from_config(cls, cfg: dict) -> Continuation:
        """The value a state's config records; a config from before aux / tower_lr / answers lacks them."""
        return cls(**{k: cfg[k] for k in ("minutes", "families", "lr", "aux", "tower_lr", "max_objects", "answers")
                      if k in cfg})

    def flags(self) -> list[str]:
        """The CLI flags that ask for this continuation (defaults left out)."""
        out = ["--minutes-c", _g(self.minutes)]
        if self.aux:
            out += ["--aux-c", _g(self.aux)]
        out += ["--families-c", mix_name(self.families)]
        if self.max_objects != scenes.MAX_OBJECTS:
            out += ["--max-objects-c", str(self.max_objects)]
        if self.answers:
            out += ["--answers-c", ",".join(self.answers)]
        if self.lr != Continuation.lr:
            out += ["--lr-c", _g(self.lr)]
        if self.tower_lr:
            out += ["--tower-lr-c", _g(self.tower_lr)]
        return out


@dataclass(frozen=True)
class Recipe:
    """Stage A for minutes_a, stage B for minutes_b on `families` (also the card's evaluation families), then
    each continuation in order. Stage lengths are CPU-minutes of one thread (the trainer calibrates steps)."""

    minutes_a: float
    minutes_b: float
    continuations: tuple[Continuation, ...] = ()
    families: tuple[str, ...] = scenes.FAMILIES

    def validate(self) -> Recipe:
        check_families(self.families, "--families")
        for k, c in enumerate(self.continuations):
            try:
                c.validate()
            except InputError as e:
                raise InputError(f"continuation {stage_name(k)}: {e}") from None
        return self

    def commands(self, out: str) -> list[list[str]]:
        """The CLI invocations (argv after `python -m interp.toy.train`) that run this recipe in folder `out`."""
        first = ["--out", out, "--minutes-a", _g(self.minutes_a), "--minutes-b", _g(self.minutes_b)]
        if self.families != scenes.FAMILIES:
            first += ["--families", ",".join(self.families)]
        return [first] + [["--out", out, "--resume", *(["--new-c"] if k else []), *c.flags()]
                          for k, c in enumerate(self.continuations)]


def continuations(state: dict, recipe: Recipe, *, replay: str | None = None, new: bool = False,
                  where="the state") -> list[tuple[str, Continuation]]:
    """(name, value) of every continuation a run trains or finishes, in order: those in the training `state`,
    then what `recipe` adds. replay (a recipe's name): the state's continuations must be the recipe's first ones,
    and the rest follow; else the recipe's one continuation (if any) is added when the state has none, or with
    `new` (--new-c) after them."""
    have = sorted((k for k in state if k == "C" or (k[0] == "C" and k[1:].isdigit())), key=lambda k: int(k[1:] or 1))
    old = [(k, Continuation.from_config(state[k]["config"])) for k in have]
    if not replay:
        return old + ([(stage_name(len(old)), recipe.continuations[0])]
                      if recipe.continuations and (new or not old) else [])
    want = [(stage_name(k), c) for k, c in enumerate(recipe.continuations)]
    for (name, got), (_, c) in zip(old, want):
        if got != c:
            raise InputError(f"{where}: stage {name} was trained as {got}, recipe {replay} has {c}; replay into "
                             "a new --out")
    if len(old) > len(want):
        raise InputError(f"{where} holds {len(old)} continuations, recipe {replay} {len(want)}; use a new --out")
    return want


_SPATIAL = ("spatial",)
# The shipped checkpoint (interp/toy/checkpoint/model_card.json: its "commands" ran these, each stage on a copy
# of the previous folder; its notes say why each stage is there).
SHIPPED = Recipe(minutes_a=5, minutes_b=38, continuations=(
    Continuation(20, MIXES["HARD1"]),
    Continuation(20, MIXES["HARD2"]),
    Continuation(20, MIXES["HARD2"], aux=1.0),
    Continuation(25, _SPATIAL, aux=1.0, max_objects=2),
    Continuation(14, MIXES["MIX4"], aux=1.0),
    Continuation(15, _SPATIAL, aux=1.0, max_objects=4),
    Continuation(14, MIXES["MIX5"], aux=1.0),
    Continuation(15, _SPATIAL, aux=1.0, max_objects=4, answers=("left", "right")),
    Continuation(14, MIXES["MIX5"], aux=1.0),
))
RECIPES = {"shipped": SHIPPED}
