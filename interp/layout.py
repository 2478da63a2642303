"""Where every token of a batch comes from (the token groups) and image geometry.

Token groups are bool `[B, T]` masks, True = in the group; `TokenLayout.group(name)` is the one place a group
name is resolved (it also takes a bool `[B, T]` tensor or a callable of the layout):

| group         | tokens                                                                                          |
|---------------|-------------------------------------------------------------------------------------------------|
| `vision`      | image tokens (LLaVA-NeXT's image-newline tokens included)                                       |
| `text`        | every non-pad, non-vision token (template, question, answer, generated, text between images)    |
| `question`    | exactly the user's question text, found from its character offsets in the rendered prompt; a    |
|               | token that straddles the question's boundary belongs to the question                            |
| `template`    | chat-template tokens after the last image that are neither question nor answer: role markers,   |
|               | `<|vision_end|>`, `<end_of_utterance>`, "ASSISTANT:", newlines                                  |
| `after_image` | text after the row's last image: `question ∪ template ∪ answer`, and generated positions        |
| `answer`      | teacher-forced answer tokens (`prepare(..., answers=...)`)                                      |
| `last`        | the last prompt position of each row, where the first answer token is predicted                 |
| `generated`   | positions produced by generate (`extend(n)`)                                                    |
| `pad`         | left padding                                                                                    |
| `all`         | every non-pad position                                                                          |

`question`, `template` and `answer` partition `after_image` within the prompt. On Qwen2-VL, for example, the
prompt after the image is `<|vision_end|>` + question + `<|im_end|>` `\n` `<|im_start|>` `assistant` `\n`: the
question group is the question's tokens, the template group the rest.

Vision token `i` of a row is its `i`-th vision position in sequence order; every per-vision-token array in
interp (`[..., Nv]`) uses that order. Each image is made of one or more `Piece`s (a grid of tokens over a
region of the original image: LLaVA's single grid, LLaVA-NeXT's base image + tiles, Idefics3's tiles + global
image); vision tokens that cover no patch (LLaVA-NeXT's image-newline) belong to no piece.
"""

from __future__ import annotations

import difflib
from dataclasses import dataclass, field, replace

import torch

from .errors import InputError


@dataclass(frozen=True)
class Piece:
    """A `(rows, cols)` grid of vision tokens covering a pixel region of one original image.

    positions: [rows·cols] sequence positions, row-major. boxes: [rows·cols, 4] float (x0, y0, x1, y1) in
    original-image pixels, the area each token covers (exclusive x1, y1).
    """

    name: str
    grid: tuple[int, int]
    positions: torch.Tensor
    boxes: torch.Tensor


@dataclass(frozen=True)
class ImageLayout:
    """One image of one row: its vision positions (all of them, newline tokens included) and its pieces."""

    row: int
    index: int  # image index within the row
    size: tuple[int, int]  # original (width, height)
    positions: torch.Tensor  # [n] sequence positions of this image's tokens
    pieces: tuple[Piece, ...]

    @property
    def grid(self) -> tuple[int, int]:
        """Grid of the main piece (the full-image one: LLaVA's grid, NeXT's base, Idefics3's global)."""
        return self.main.grid

    @property
    def main(self) -> Piece:
        names = [p.name for p in self.pieces]
        for pref in ("image", "base", "global"):
            if pref in names:
                return self.pieces[names.index(pref)]
        return self.pieces[0]


GROUPS = ("vision", "text", "question", "template", "after_image", "answer", "last", "generated", "pad", "all")


def check_group(g, what: str):
    """Check a token group when an intervention is built (its shape against the batch is checked when the batch
    is known): a name from `GROUPS`, a bool 2-D tensor `[B, T]`, or a callable of the layout. Returns `g`."""
    if isinstance(g, str):
        if g not in GROUPS:
            close = difflib.get_close_matches(g, GROUPS, n=1)
            hint = f"did you mean {close[0]!r}? " if close else ""
            raise InputError(f"{what}: unknown token group {g!r}; {hint}use one of {', '.join(GROUPS)}, a bool "
                             "[B, T] tensor, or a callable of the layout")
    elif isinstance(g, torch.Tensor):
        if g.dtype != torch.bool or g.dim() != 2:
            raise InputError(f"{what}: a token group tensor must be bool [B, T], got {str(g.dtype).replace('torch.', '')} "
                             f"[{', '.join(map(str, g.shape))}]; use e.g. mask > 0 (or mask.bool())")
    elif not callable(g):
        raise InputError(f"{what}: a token group must be a name ({', '.join(GROUPS)}), a bool [B, T] tensor or a "
                         f"callable of the layout, got {type(g).__name__}")
    return g


@dataclass(frozen=True)
class TokenLayout:
    """Bool `[B, T]` token groups (see the module docstring's table) plus per-image geometry.

    `template` and `after_image` default to what the other groups imply: `after_image` = non-pad text after the
    row's last vision token (and generated positions), `template` = `after_image` minus question, answer and
    generated positions.
    """

    vision: torch.Tensor
    text: torch.Tensor
    question: torch.Tensor
    answer: torch.Tensor
    pad: torch.Tensor
    images: tuple[tuple[ImageLayout, ...], ...]
    generated: torch.Tensor = field(default=None)  # [B, T] bool; positions produced by generate
    prompt_len: int = -1  # columns before any generated token
    template: torch.Tensor = field(default=None)  # [B, T] bool
    after_image: torch.Tensor = field(default=None)  # [B, T] bool

    def __post_init__(self):
        if self.generated is None:
            object.__setattr__(self, "generated", torch.zeros_like(self.vision))
        if self.prompt_len < 0:
            object.__setattr__(self, "prompt_len", self.vision.shape[1])
        if self.after_image is None:
            object.__setattr__(self, "after_image", self.text & after_last_image(self.vision))
        if self.template is None:
            object.__setattr__(self, "template", self.after_image & ~(self.question | self.answer | self.generated))

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(self.vision.shape)

    @property
    def batch_size(self) -> int:
        return self.vision.shape[0]

    @property
    def seq_len(self) -> int:
        return self.vision.shape[1]

    @property
    def num_vision(self) -> torch.Tensor:
        """[B] number of vision tokens per row."""
        return self.vision.sum(1)

    @property
    def last(self) -> torch.Tensor:
        """[B, T] bool: the last prompt position of each row (where the first answer token is predicted)."""
        # Left padding: the last prompt column is a real token; with teacher-forced answers, the one before them.
        has = self.answer.any(1)
        pos = torch.where(has, self.answer.int().argmax(1) - 1, torch.full_like(has, self.prompt_len - 1, dtype=torch.long))
        out = torch.zeros_like(self.vision)
        out[torch.arange(self.batch_size), pos] = True
        return out

    @property
    def all(self) -> torch.Tensor:
        """[B, T] bool: every non-pad position."""
        return ~self.pad

    def vision_positions(self) -> torch.Tensor:
        """[B, Nv] long: sequence position of each vision token, -1 where a row has fewer."""
        n = int(self.num_vision.max()) if self.vision.numel() else 0
        out = torch.full((self.batch_size, n), -1, dtype=torch.long)
        for b in range(self.batch_size):
            pos = self.vision[b].nonzero().squeeze(1)
            out[b, : len(pos)] = pos
        return out

    def vision_valid(self) -> torch.Tensor:
        """[B, Nv] bool: which entries of a `[B, Nv]` array are real vision tokens (rest are NaN padding)."""
        return self.vision_positions() >= 0

    def group(self, name) -> torch.Tensor:
        """A token group as bool `[B, T]`: a name from `GROUPS`, a bool tensor, or a callable of the layout.

        On a layout extended by generation (`extend(n)`, T = prompt + n), a `[B, prompt_len]` tensor (or a
        callable's result of that shape) covers the prompt and is padded with False over the generated positions.

            layout.group("question")                     # [B, T] bool
            layout.group(lambda lay: lay.question | lay.answer)
        """
        if isinstance(name, torch.Tensor):
            mask = name
        elif callable(name):
            mask = name(self)
        elif isinstance(name, str) and name in GROUPS:
            mask = getattr(self, name)
        else:
            raise InputError(f"unknown token group {name!r}; use one of {', '.join(GROUPS)}, a bool [B, T] tensor, "
                             "or a callable of the layout")
        if (isinstance(mask, torch.Tensor) and mask.dtype == torch.bool and mask.dim() == 2
                and mask.shape[0] == self.batch_size and mask.shape[1] == self.prompt_len < self.seq_len):
            pad = torch.zeros(self.batch_size, self.seq_len - self.prompt_len, dtype=torch.bool, device=mask.device)
            mask = torch.cat([mask, pad], dim=1)
        if not isinstance(mask, torch.Tensor) or mask.dtype != torch.bool or tuple(mask.shape) != self.shape:
            got = (f"{mask.dtype} {tuple(mask.shape)}" if isinstance(mask, torch.Tensor) else type(mask).__name__)
            raise InputError(f"token group {_label(name)} must be a bool tensor of shape {self.shape}"
                             f"{f' or {(self.batch_size, self.prompt_len)}' if self.prompt_len < self.seq_len else ''}"
                             f", got {got}")
        return mask

    def extend(self, n: int) -> "TokenLayout":
        """The layout after `n` generated tokens: new positions are `text`, `after_image` and `generated`."""
        B = self.batch_size

        def grow(x, value):
            return torch.cat([x, torch.full((B, n), value, dtype=torch.bool)], dim=1)

        return replace(self, vision=grow(self.vision, False), text=grow(self.text, True),
                       question=grow(self.question, False), template=grow(self.template, False),
                       after_image=grow(self.after_image, True), answer=grow(self.answer, False),
                       pad=grow(self.pad, False), generated=grow(self.generated, True))

    # ----- geometry helpers -----

    def scatter(self, values: torch.Tensor, row: int = 0) -> list[dict[str, torch.Tensor]]:
        """Per-vision-token values `[Nv]` (row `row`'s order) → per image a dict piece name → `[rows, cols]`."""
        pos = self.vision[row].nonzero().squeeze(1)
        if values.shape[0] < len(pos):
            raise InputError(f"row {row} has {len(pos)} vision tokens but values has {values.shape[0]}")
        index = torch.full((self.seq_len,), -1, dtype=torch.long)
        index[pos] = torch.arange(len(pos))
        out = []
        for img in self.images[row]:
            out.append({p.name: values[index[p.positions]].reshape(p.grid) for p in img.pieces})
        return out

    def boxes_to_mask(self, boxes: list) -> torch.Tensor:
        """Pixel boxes per row (list of B lists of (x0, y0, x1, y1); per image when a row has several images:
        a list of lists) → bool `[B, T]`: the vision tokens whose patch overlaps any box of their image."""
        if len(boxes) != self.batch_size:
            raise InputError(f"boxes_to_mask needs one list of boxes per row ({self.batch_size}), got {len(boxes)}")
        mask = torch.zeros_like(self.vision)
        for b, row_boxes in enumerate(boxes):
            imgs = self.images[b]
            per_image = row_boxes if (len(imgs) > 1 and row_boxes and _is_nested(row_boxes)) else [row_boxes] * len(imgs)
            for img, img_boxes in zip(imgs, per_image):
                if not img_boxes:
                    continue
                bx = torch.as_tensor(img_boxes, dtype=torch.float32).reshape(-1, 4)
                for p in img.pieces:
                    t = p.boxes  # [n, 4]
                    overlap = ((t[:, None, 0] < bx[None, :, 2]) & (bx[None, :, 0] < t[:, None, 2])
                               & (t[:, None, 1] < bx[None, :, 3]) & (bx[None, :, 1] < t[:, None, 3]))
                    mask[b, p.positions[overlap.any(1)]] = True
        return mask


def after_last_image(vision: torch.Tensor) -> torch.Tensor:
    """[B, T] bool: positions after each row's last vision token (every position where a row has none).
    vision: [B, T] bool."""
    B, T = vision.shape
    last = torch.where(vision.any(1), T - 1 - vision.flip(1).int().argmax(1), torch.full((B,), -1))
    return torch.arange(T)[None, :] > last[:, None]


def _label(name) -> str:
    return repr(name) if isinstance(name, str) else f"({type(name).__name__})"


def _is_nested(boxes) -> bool:
    first = boxes[0]
    return isinstance(first, (list, tuple)) and len(first) > 0 and isinstance(first[0], (list, tuple))


def grid_boxes(rows: int, cols: int, region: tuple[float, float, float, float],
               clip: tuple[float, float] | None = None) -> torch.Tensor:
    """[rows·cols, 4] boxes of a regular grid laid over `region` (x0, y0, x1, y1), row-major, optionally
    clipped to an image of size `clip` = (width, height)."""
    x0, y0, x1, y1 = region
    xs = torch.linspace(x0, x1, cols + 1, dtype=torch.float64)
    ys = torch.linspace(y0, y1, rows + 1, dtype=torch.float64)
    gy, gx = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    gy, gx = gy.flatten(), gx.flatten()
    out = torch.stack([xs[gx], ys[gy], xs[gx + 1], ys[gy + 1]], dim=1)
    if clip is not None:
        out[:, 0::2] = out[:, 0::2].clamp(0, clip[0])
        out[:, 1::2] = out[:, 1::2].clamp(0, clip[1])
    return out.float()
