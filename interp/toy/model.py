"""The toy LLaVA: its architecture, and its inputs built straight from samples (no PIL processor).

    model = build_model(layers=8, seed=0)                     # CLIP tower 64×2 + Llama decoder 128×8
    ids, mask, pos = encode(samples, with_answer=True)        # [B, T] each, left-padded
    px = pixels([s.image for s in samples])                   # [B, 3, 64, 64]

`encode` and `pixels` equal the shipped processor's output (tests/test_toy_scenes.py checks this); training
uses them because the processor is slow. Evaluation goes through `interp.load` and the processor instead
(`interp.toy.card`).
"""
from __future__ import annotations

import numpy as np
import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from interp.toy import processor as P
from interp.toy import scenes

GRID = scenes.SIZE // P.PATCH  # 8 patches per side
VOCAB = {w: i for i, w in enumerate(P.vocabulary())}
PAD, BOS, EOS, IMG = (VOCAB[t] for t in ("<pad>", "<s>", "</s>", "<image>"))


def build_model(layers: int = 8, seed: int = 0) -> LlavaForConditionalGeneration:
    """Tiny LLaVA: CLIP tower 64×2 (patch 8 → 64 tokens), Llama decoder 128×layers, 4 heads, MLP 256."""
    torch.manual_seed(seed)
    vision = CLIPVisionConfig(hidden_size=64, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                              image_size=scenes.SIZE, patch_size=P.PATCH, projection_dim=64)
    text = LlamaConfig(vocab_size=len(VOCAB), hidden_size=128, intermediate_size=256, num_hidden_layers=layers,
                       num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
                       bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD, tie_word_embeddings=False)
    cfg = LlavaConfig(vision_config=vision, text_config=text, image_token_id=IMG, projector_hidden_act="gelu",
                      vision_feature_select_strategy="default", vision_feature_layer=-1,
                      image_seq_length=P.N_IMAGE_TOKENS)
    cfg.pad_token_id = PAD
    return LlavaForConditionalGeneration(cfg).to(torch.float32)


def pixels(images) -> torch.Tensor:
    """PIL images → normalised pixel_values [B, 3, 64, 64], equal to the processor's (tests check this)."""
    x = np.stack([np.asarray(im, dtype=np.float32) for im in images]) / 255.0  # [B, H, W, 3]
    x = (x - np.array(P.MEAN, np.float32)) / np.array(P.STD, np.float32)
    return torch.from_numpy(x).permute(0, 3, 1, 2).contiguous()


def encode(samples, with_answer: bool):
    """Left-padded ids [B, T], attention_mask [B, T], position_ids [B, T].

    Equal to processor(text=prompt(q)) (+ answer, </s> when with_answer); bypasses the slow PIL processor.
    """
    rows = []
    for s in samples:
        ids = []
        for w in P.prompt(s.question).split():
            ids += [IMG] * P.N_IMAGE_TOKENS if w == "<image>" else [VOCAB[w]]
        if with_answer:
            ids += [VOCAB[s.answer], EOS]
        rows.append(ids)
    T = max(map(len, rows))
    ids = torch.full((len(rows), T), PAD)
    mask = torch.zeros((len(rows), T), dtype=torch.long)
    for b, r in enumerate(rows):
        ids[b, T - len(r):] = torch.tensor(r)
        mask[b, T - len(r):] = 1
    # Positions count real tokens only, so a left-padded row is computed exactly as it would be alone.
    pos = (mask.cumsum(1) - 1).clamp(min=0)
    return ids, mask, pos


def attention_bias(ids: torch.Tensor, mask: torch.Tensor, dtype=torch.float32, cut: bool = True) -> torch.Tensor:
    """4D additive attention bias [B, 1, T, T] (0 allowed, finfo.min cut): causal + padding, and (cut) every
    text query → image key edge cut.

    The plain-PyTorch picture of `interp.EdgeMask("text", "vision")`, which the toy's evaluation uses; the tests
    check the engine against it. Float, never bool: a bool 4D mask is silently added as 0/1 under eager
    attention."""
    B, T = ids.shape
    causal = torch.ones(T, T, dtype=torch.bool).tril()
    allowed = causal[None] & mask.bool()[:, None, :]  # [B, Q, K]
    is_img = ids == IMG
    if cut:
        allowed &= ~((~is_img)[:, :, None] & is_img[:, None, :])  # text rows × image columns
    out = torch.zeros(B, 1, T, T, dtype=dtype)
    return out.masked_fill(~allowed[:, None], torch.finfo(dtype).min)


@torch.no_grad()
def fold_normalisation(model, seed: int) -> None:
    """Fold the frozen tower's per-channel mean/std into linear_1; scale linear_2 to the text-embedding std."""
    samples = scenes.dataset(512, seed=scenes.TRAIN_SEED_BASE - 1 - seed)
    h = model.model.vision_tower(pixel_values=pixels([s.image for s in samples])).last_hidden_state[:, 1:]
    h = h.flatten(0, 1)  # [N*64, 64]
    mu, sd = h.mean(0), h.std(0) + 1e-6
    proj = model.model.multi_modal_projector
    proj.linear_1.weight /= sd  # W' x + b' = W (x - mu)/sd + b
    proj.linear_1.bias -= proj.linear_1.weight @ mu
    scale = model.get_input_embeddings().weight.std() / proj(h).std()
    proj.linear_2.weight *= scale
    proj.linear_2.bias *= scale
