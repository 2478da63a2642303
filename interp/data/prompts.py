"""Benchmark prompts as lmms-eval's `doc_to_text` builds them, and the named prompt styles papers used.

A *style* is explicit, never applied silently: `benchmark(..., style=...)` builds the question text with it,
and `apply_style(vlm, style)` gives the model view that wraps it (a full prompt template instead of the
model's chat template, an image processor's pixel bounds):

    samples = interp.data.benchmark("vstar", "data/vstar-bench", style="vicrop")
    vlm = apply_style(interp.load("llava-hf/llava-1.5-7b-hf"), "vicrop")

Styles (STYLES):
    lmms-eval   the `default` lmms_eval_specific_kwargs, inside the model's chat template (the default);
    bare        pre_prompt = post_prompt = "" (the hub question as is), inside the chat template;
    vicrop      AIF's LLaVA-1.5 runs: ViCrop's prompt `<image>\\nUSER: {q} Answer the question using a single
                word or phrase.\\nASSISTANT:`, q = the bare question; LLaVA models only;
    qwen2.5-vl  lmms-eval's prompts; images resized within VLMEvalKit's Qwen2.5-VL pixel bounds
                (min 1280·28², max 16384·28²); Qwen2-VL / Qwen2.5-VL models only.
"""

from __future__ import annotations

import copy
import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass

from interp.errors import InputError

# The `default` lmms_eval_specific_kwargs of each task (hrbench and refcoco's REC prompts take none).
DEFAULT_KWARGS = {
    "vstar": {"pre_prompt": "", "post_prompt": "\nAnswer with the option's letter from the given choices directly."},
    "realworldqa": {"pre_prompt": "", "post_prompt": ""},
    "mmstar": {"pre_prompt": "", "post_prompt": "\nAnswer with the option's letter from the given choices directly"},
    "textvqa": {"pre_prompt": "", "post_prompt": "\nAnswer the question using a single word or phrase.", "ocr": False},
    "countbench": {"pre_prompt": "Look at the image carefully and count the objects. Answer with just a number, "
                                 "without any additional text. ", "post_prompt": ""},
    "pope": {"pre_prompt": "", "post_prompt": "\nAnswer the question using a single word or phrase."},
}
REC_PROMPT = ("Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right x, "
              "bottom-right y). All values are floating point numbers bounded between 0 and 1. Please provide the "
              "bounding box coordinate of the region this sentence describes: ")
_VSTAR_OPTION = re.compile(r"\([A-D]\)\s*([^()]+?)(?=\s*\([A-D]\)|$)")
_RWQA_LETTER = "Please answer directly with only the letter of the correct option and nothing else."
_YES_NO = " Please answer yes or no."


def _vstar(doc, kw):
    text = doc["text"]
    options = _VSTAR_OPTION.findall(text)  # the last option runs to the end: it keeps V*'s own instruction
    if options:
        text = text.split("(A)")[0].strip() + "\n" + "\n".join(f"{L}. {o.strip()}" for L, o in zip("ABCD", options))
    if kw.get("pre_prompt"):
        text = kw["pre_prompt"] + text
    return text + kw["post_prompt"] if kw.get("post_prompt") else text


def _realworldqa(doc, kw):
    q = doc["question"].strip()
    if kw.get("post_prompt"):
        q = q.replace(_RWQA_LETTER, "")
    return f"{kw.get('pre_prompt', '')}{q}{kw.get('post_prompt') or ''}"


def _mmstar(doc, kw):
    q = doc["question"].strip()
    if kw.get("pre_prompt", "") != "":
        q = kw["pre_prompt"] + q.replace(_YES_NO, "")
    if kw.get("post_prompt", "") != "":
        q = q.replace(_YES_NO, "") + kw["post_prompt"]
    return q


def _textvqa(doc, kw):
    ocr = f"\nReference OCR token: {', '.join(doc['ocr_tokens'])}" if kw.get("ocr") else ""
    # str.capitalize() also lower-cases the rest: "what brand is the TV?" → "What brand is the tv?"
    return f"{kw['pre_prompt']}{doc['question'].capitalize()}{ocr}{kw['post_prompt']}"


def _plain(doc, kw):  # countbench, pope
    return f"{kw.get('pre_prompt', '')}{doc['question'].strip()}{kw.get('post_prompt', '')}"


def _hrbench(doc, kw):
    opts = "".join(f"{k}. {v}\n" for k, v in doc["options"].items())
    return f"{doc['question'].strip()}\n{opts}Answer the option letter directly."


def _rec(doc, kw):
    return REC_PROMPT + doc["expression"]


_BUILDERS = {"vstar": _vstar, "realworldqa": _realworldqa, "mmstar": _mmstar, "textvqa": _textvqa,
             "countbench": _plain, "pope": _plain, "hrbench": _hrbench, "rec": _rec}


def doc_to_text(kind: str, doc: Mapping, kwargs: Mapping | None = None) -> str:
    """The prompt lmms-eval builds for one row `doc` of benchmark kind `kind` (a key of DEFAULT_KWARGS, or
    "hrbench" / "rec"), with `kwargs` (default: the task's `default` entry).

    doc holds the hub columns the task reads; for "hrbench" also `options` (letter → text, present ones
    only), for "rec" `expression` (one referring expression).
    """
    kw = dict(DEFAULT_KWARGS.get(kind, {}) if kwargs is None else kwargs)
    if kind not in _BUILDERS:
        raise InputError(f"no prompt for benchmark kind {kind!r}; kinds are {sorted(_BUILDERS)}")
    return _BUILDERS[kind](doc, kw)


# --- styles ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PromptStyle:
    """A named way to prompt: question kwargs, and optionally a full template / image pixel bounds.

    kwargs: per-task lmms_eval_specific_kwargs replacing `default` (None: keep lmms-eval's).
    template: the whole prompt ("<image>" and "{question}" placeholders) instead of the chat template.
    pixels: (min_pixels, max_pixels) for a Qwen2-VL-family image processor.
    families: the adapter names (interp.models) the style is meant for; empty = any model.
    """

    name: str
    kwargs: Mapping[str, Mapping] | None = None
    template: str | None = None
    pixels: tuple[int, int] | None = None
    families: tuple[str, ...] = ()
    source: str = ""

    def kwargs_for(self, kind: str) -> dict | None:
        """The kwargs `doc_to_text` gets for benchmark kind `kind` under this style."""
        if self.kwargs is None or kind not in DEFAULT_KWARGS:
            return None
        return {**DEFAULT_KWARGS[kind], **self.kwargs}

    def describe(self) -> dict:
        """What a results table records about the style."""
        return {"name": self.name, "kwargs": None if self.kwargs is None else dict(self.kwargs),
                "template": self.template, "pixels": list(self.pixels) if self.pixels else None,
                "families": list(self.families), "source": self.source}


_BLANK = {"pre_prompt": "", "post_prompt": ""}
STYLES = {s.name: s for s in (
    PromptStyle("lmms-eval", source="lmms-eval main @ 75571cfe, default lmms_eval_specific_kwargs"),
    PromptStyle("bare", kwargs=_BLANK, source="pre_prompt = post_prompt = ''"),
    PromptStyle("vicrop", kwargs=_BLANK, families=("llava",),
                template="<image>\nUSER: {question} Answer the question using a single word or phrase.\nASSISTANT:",
                source="ViCrop's LLaVA-1.5 prompt, as the AIF paper's LLaVA runs used it"),
    PromptStyle("qwen2.5-vl", pixels=(1280 * 28 * 28, 16384 * 28 * 28), families=("qwen2_vl", "qwen2_5_vl"),
                source="VLMEvalKit config.py, Qwen2.5-VL-*-Instruct: min_pixels=1280*28*28, max_pixels=16384*28*28"),
)}


def style(name_or_style) -> PromptStyle:
    """A PromptStyle from its name (or itself)."""
    if isinstance(name_or_style, PromptStyle):
        return name_or_style
    if name_or_style not in STYLES:
        raise InputError(f"unknown prompt style {name_or_style!r}; styles are {sorted(STYLES)}")
    return STYLES[name_or_style]


def apply_style(vlm, name_or_style):
    """A view of `vlm` that prompts as the style says: the same model, its `prepare` builds the style's
    template and resizes images within its pixel bounds. Styles without either return `vlm` itself.

    The view is a shallow copy (same HF model, nnsight model, sites) with its own adapter and processor
    copies, so the original `vlm` is unchanged.
    """
    st = style(name_or_style)
    if st.template is None and st.pixels is None:
        return vlm
    family = getattr(getattr(vlm, "adapter", None), "name", None)
    if st.families and family not in st.families:
        raise InputError(f"prompt style {st.name!r} is for {list(st.families)} models, not {family!r}; "
                         "use --prompt-style lmms-eval (or bare) for this model")
    view = copy.copy(vlm)
    view.processor = copy.copy(vlm.processor)
    if st.template is not None:
        view.processor.chat_template = None  # the adapter's plain prompt then is the whole prompt
        view.adapter = dataclasses.replace(vlm.adapter, plain_prompt=st.template)
    if st.pixels is not None:
        from transformers.image_utils import SizeDict

        ip = copy.deepcopy(vlm.processor.image_processor)
        ip.size = SizeDict(shortest_edge=st.pixels[0], longest_edge=st.pixels[1])
        view.processor.image_processor = ip
    return view
