"""One adapter per VLM family: mostly data (module paths, image token, prompt format) plus the geometry rule
that says which vision tokens each image produced and which pixels each covers.

Supporting a new family means adding an `Adapter` here; the nnsight code that walks sites lives in
`interp.attention.sites`, not in adapters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable

import torch

from ..errors import InputError, UnsupportedModelError
from ..layout import ImageLayout, Piece, grid_boxes


@dataclass(frozen=True)
class Adapter:
    """What interp needs to know about one family.

    `language_model`: attribute path from the top model to the decoder stack holder (has `.layers`).
    `pieces(vlm, enc, image_index, image, size)` → list of (n_tokens, [Piece-like tuples]) for one image.
    """

    name: str
    classes: tuple[str, ...]
    language_model: str
    geometry: Callable
    nested_images: bool = False  # processor wants images as one list per row
    max_images_per_row: int | None = None
    plain_prompt: str = "<image>\n{question}"
    mrope: bool = False  # positions are computed by the model from the mask (Qwen M-RoPE)
    # Readout and head sites (the same names in all five families today; a family that differs says so here):
    head_out: str = "self_attn.o_proj"  # per decoder layer: the attention output projection (input = heads)
    final_norm: str = "norm"  # on the decoder stack holder: the norm before the unembedding
    unembed: str = "lm_head"  # on the top model: hidden → vocabulary logits

    def image_token_id(self, hf) -> int:
        cfg = hf.config
        for attr in ("image_token_id", "image_token_index"):
            v = getattr(cfg, attr, None)
            if v is not None:
                return int(v)
        raise UnsupportedModelError(f"{type(hf).__name__}: config has no image_token_id")

    def prompt(self, processor, n_images: int, question: str) -> str:
        """The user turn with `n_images` images then the question, ready for the answer."""
        if getattr(processor, "chat_template", None):
            content = [{"type": "image"} for _ in range(n_images)] + [{"type": "text", "text": question}]
            return processor.apply_chat_template([{"role": "user", "content": content}],
                                                 add_generation_prompt=True, tokenize=False)
        token = getattr(processor, "image_token", "<image>")
        return self.plain_prompt.replace("<image>", token * n_images).format(question=question)

    def prompt_with_span(self, processor, n_images: int, question: str) -> tuple[str, tuple[int, int]]:
        """`prompt(...)` plus the character span `(start, end)` of the question in it.

        The span comes from rendering the template twice, once with a sentinel in place of the question: the
        text before and after the sentinel is the template's, whatever the template does to the question
        itself (e.g. `| trim`) lands in between. Templates whose surrounding text depends on the question fall
        back to the question's last occurrence in the prompt.
        """
        text = self.prompt(processor, n_images, question)
        marked = self.prompt(processor, n_images, _SENTINEL)
        i = marked.find(_SENTINEL)
        if i >= 0 and marked.count(_SENTINEL) == 1:
            head, tail = marked[:i], marked[i + len(_SENTINEL):]
            if text.startswith(head) and text.endswith(tail) and len(head) + len(tail) <= len(text):
                return text, (len(head), len(text) - len(tail))
        j = text.rfind(question.strip())
        if not question.strip() or j < 0:
            raise InputError(f"cannot find the question {question!r} in the prompt the chat template rendered "
                             f"({text!r}); the template rewrites the question text, so interp cannot tell which "
                             "tokens are the question: set processor.chat_template to one that inserts it verbatim")
        return text, (j, j + len(question.strip()))


# Stands in for the question when rendering a template (private-use characters: whitespace filters keep it).
_SENTINEL = "\ue000interp-question\ue001"


def _image_size(img) -> tuple[int, int]:
    return tuple(img.size)  # PIL: (width, height)


# ---------------------------------------------------------------- geometry rules, one per family
# Each returns (n_tokens, pieces) where pieces are (name, (rows, cols), offsets[rows*cols] within the image's
# token run, boxes[rows*cols, 4]).


def _llava_geometry(vlm, enc, k, img, n_found):
    cfg = vlm.hf.config
    ip = vlm.processor.image_processor
    n = cfg.vision_config.image_size // cfg.vision_config.patch_size
    extra = 1 if getattr(cfg, "vision_feature_select_strategy", "default") == "full" else 0
    W, H = _image_size(img)
    if getattr(ip, "do_pad", False):  # padded to a square around the image, then resized
        side = max(W, H)
        region = ((W - side) / 2, (H - side) / 2, (W + side) / 2, (H + side) / 2)
    elif getattr(ip, "do_center_crop", False):  # shortest edge resized to the crop, centre cropped
        crop = ip.crop_size["height"] if isinstance(ip.crop_size, dict) else ip.crop_size.height
        short = ip.size.get("shortest_edge") if isinstance(ip.size, dict) else ip.size.shortest_edge
        s = (short or crop) / min(W, H)
        cw, ch = crop / s, crop / s
        region = ((W - cw) / 2, (H - ch) / 2, (W + cw) / 2, (H + ch) / 2)
    else:
        region = (0, 0, W, H)
    offsets = torch.arange(extra, extra + n * n)
    return n * n + extra, [("image", (n, n), offsets, grid_boxes(n, n, region, clip=(W, H)))]


def _llava_next_geometry(vlm, enc, k, img, n_found):
    from transformers.image_processing_utils import select_best_resolution
    from transformers.models.llava_next.modeling_llava_next import get_anyres_image_grid_shape, unpad_image

    cfg = vlm.hf.config
    vc = cfg.vision_config
    n = vc.image_size // vc.patch_size
    H, W = (int(x) for x in enc["image_sizes"][k])
    nph, npw = get_anyres_image_grid_shape((H, W), cfg.image_grid_pinpoints, vc.image_size)
    rows_full, cols_full = nph * n, npw * n
    # Which cells of the padded canvas survive HF's unpad: run it on an index grid (exact parity).
    idx = torch.arange(rows_full * cols_full, dtype=torch.float32).reshape(1, rows_full, cols_full)
    kept = unpad_image(idx, torch.tensor([H, W]))[0].long()  # [rows, cols]
    rows, cols = kept.shape
    hb, wb = select_best_resolution((H, W), cfg.image_grid_pinpoints)
    scale = min(wb / W, hb / H)
    new_w, new_h = min(math.ceil(W * scale), wb), min(math.ceil(H * scale), hb)
    px, py = (wb - new_w) / 2, (hb - new_h) / 2
    canvas = grid_boxes(rows_full, cols_full, (-px / scale, -py / scale, (wb - px) / scale, (hb - py) / scale),
                        clip=(W, H))
    base_n = n * n
    base = ("base", (n, n), torch.arange(base_n), grid_boxes(n, n, (0, 0, W, H)))
    # After the base image: each grid row is `cols` tokens then one image-newline token.
    r, c = torch.meshgrid(torch.arange(rows), torch.arange(cols), indexing="ij")
    offsets = base_n + (r * (cols + 1) + c).flatten()
    tiles = ("tiles", (rows, cols), offsets, canvas[kept.flatten()])
    return base_n + rows * (cols + 1), [base, tiles]


def _qwen_geometry(vlm, enc, k, img, n_found):
    t, h, w = (int(x) for x in enc["image_grid_thw"][k])
    m = vlm.hf.config.vision_config.spatial_merge_size
    rows, cols = h // m, w // m
    W, H = _image_size(img)
    # smart_resize rescales the whole image (no crop): the merged grid spans it.
    n = t * rows * cols
    if t != 1:
        raise InputError(f"image {k} has temporal grid {t}; interp supports still images (t = 1)")
    return n, [("image", (rows, cols), torch.arange(n), grid_boxes(rows, cols, (0, 0, W, H)))]


def _idefics3_geometry(vlm, enc, k, img, n_found):
    proc = vlm.processor
    seq = proc.image_seq_len
    side = int(round(math.sqrt(seq)))
    W, H = _image_size(img)
    _, rows, cols = proc.image_processor.get_number_of_image_patches(H, W, {})
    pieces, start = [], 0
    # Tiles in row-major order, then the global image; each is a side×side grid after pixel shuffle.
    for i in range(rows):
        for j in range(cols):
            region = (j * W / cols, i * H / rows, (j + 1) * W / cols, (i + 1) * H / rows)
            pieces.append((f"tile_{i + 1}_{j + 1}", (side, side), start + torch.arange(seq),
                           grid_boxes(side, side, region)))
            start += seq
    pieces.append(("global", (side, side), start + torch.arange(seq), grid_boxes(side, side, (0, 0, W, H))))
    return start + seq, pieces


ADAPTERS = (
    Adapter("llava", ("LlavaForConditionalGeneration",), "model.language_model", _llava_geometry,
            plain_prompt="USER: <image>\n{question} ASSISTANT:"),
    Adapter("llava_next", ("LlavaNextForConditionalGeneration",), "model.language_model", _llava_next_geometry,
            plain_prompt="[INST] <image>\n{question} [/INST]"),
    Adapter("qwen2_vl", ("Qwen2VLForConditionalGeneration",), "model.language_model", _qwen_geometry, mrope=True),
    Adapter("qwen2_5_vl", ("Qwen2_5_VLForConditionalGeneration",), "model.language_model", _qwen_geometry,
            mrope=True),
    Adapter("idefics3", ("Idefics3ForConditionalGeneration", "SmolVLMForConditionalGeneration"), "model.text_model",
            _idefics3_geometry, nested_images=True),
)


def supported() -> list[str]:
    return [c for a in ADAPTERS for c in a.classes]


def adapter_for(hf) -> Adapter:
    name = type(hf).__name__
    for a in ADAPTERS:
        if name in a.classes:
            return a
    raise UnsupportedModelError(
        f"{name} is not supported; interp has adapters for: {', '.join(supported())}. "
        "Add an Adapter in interp/models/adapters.py to support it."
    )


def image_layouts(vlm, enc, images_per_row, input_ids: torch.Tensor) -> tuple[tuple[ImageLayout, ...], ...]:
    """Assign each row's image tokens to its images, in order, and attach geometry; checks the counts."""
    adapter = vlm.adapter
    image_id = adapter.image_token_id(vlm.hf)
    out, k = [], 0
    for b, imgs in enumerate(images_per_row):
        pos = (input_ids[b] == image_id).nonzero().squeeze(1)
        start, row = 0, []
        for i, img in enumerate(imgs):
            n, pieces = adapter.geometry(vlm, enc, k, img, len(pos))
            span = pos[start:start + n]
            if len(span) != n:
                raise InputError(
                    f"image-token mismatch in row {b}: image {i} needs {n} tokens but only {len(pos) - start} "
                    "image tokens are left in the sequence; give the prompt exactly one image placeholder per image"
                )
            row.append(ImageLayout(row=b, index=i, size=_image_size(img), positions=span,
                                   pieces=tuple(Piece(name, grid, span[off], boxes)
                                                for name, grid, off, boxes in pieces)))
            start += n
            k += 1
        if start != len(pos):
            raise InputError(f"image-token mismatch in row {b}: {len(pos)} image tokens but the images "
                             f"account for {start}")
        out.append(tuple(row))
    return tuple(out)
