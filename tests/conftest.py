import os
import random

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")

import numpy as np
import pytest
import torch
from PIL import Image

ARCHS = ("llava", "llava_next", "qwen2_vl", "qwen2_5_vl", "idefics3")


@pytest.fixture(autouse=True, scope="session")
def _one_thread():
    """One intra-op thread for the whole run, then the previous count: the suite's models are tiny, and a second
    thread on a shared 2-core machine made their forwards up to ~40× slower; no test depends on the order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def num_threads():
    """`num_threads(n)` sets torch's intra-op threads inside a test; the session's count comes back after."""
    before = torch.get_num_threads()
    yield torch.set_num_threads
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    """Every RNG seeded before each test: a test's draws do not depend on the tests before it."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


_CACHE = {}


def zoo(arch, attn="sdpa"):
    """A cached tiny zoo VLM (building is cheap, but the suite builds many)."""
    import interp

    key = (arch, attn)
    if key not in _CACHE:
        _CACHE[key] = interp.zoo.tiny(arch, attn_implementation=attn)
    vlm = _CACHE[key]
    vlm.hf.set_attn_implementation(attn)
    return vlm


def images(n=2, seed=0):
    """Random RGB images of different sizes and aspect ratios (exercises padding and tiling)."""
    rng = np.random.default_rng(seed)
    sizes = [(64, 48), (40, 80), (56, 56), (96, 32)]
    return [Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)) for w, h in sizes[:n]]


QUESTIONS = ["what color is the circle ?", "how many red objects are there in the picture ?",
             "is there a star ?", "what shape is left of the cup ?"]


def batch(vlm, n=2, answers=None):
    return vlm.prepare(images=images(n), questions=QUESTIONS[:n], answers=answers)


def reference_logits(vlm, b, mask4d):
    """HF forward with an explicit 4D float mask (M-RoPE positions computed as the model would from the 2D mask)."""
    inputs = dict(b.inputs)
    hf = vlm.hf
    if vlm.adapter.name.startswith("qwen"):
        pos, _ = hf.model.get_rope_index(inputs["input_ids"], inputs.get("mm_token_type_ids"),
                                         inputs["image_grid_thw"], None, inputs["attention_mask"])
        inputs["position_ids"] = pos
    inputs["attention_mask"] = mask4d
    return hf(**inputs).logits


def float_mask(layout, blocked=None, dtype=torch.float32):
    """[B, 1, T, T] additive mask: causal, pad keys cut, `blocked` [B, T, T] cut (pad rows keep themselves)."""
    B, T = layout.shape
    allowed = torch.ones(T, T, dtype=torch.bool).tril()[None] & ~layout.pad[:, None, :]
    if blocked is not None:
        allowed &= ~blocked
    allowed |= torch.eye(T, dtype=torch.bool)[None] & layout.pad[:, :, None]
    return torch.zeros(B, 1, T, T, dtype=dtype).masked_fill(~allowed[:, None], torch.finfo(dtype).min)
