"""The shipped toy checkpoint: loads with plain HF (eager and sdpa), uses the image, beats chance."""
import json
import os

import pytest
import torch

import interp.toy as toy
from interp.toy import scenes, train

PER_FAMILY = 40


@pytest.fixture(scope="module")
def model():
    from transformers import LlavaForConditionalGeneration

    if not os.path.exists(os.path.join(toy.CHECKPOINT_DIR, "model.safetensors")):
        pytest.fail(f"no checkpoint in {toy.CHECKPOINT_DIR}; train one: python -m interp.toy.train --out DIR")
    return LlavaForConditionalGeneration.from_pretrained(toy.CHECKPOINT_DIR, attn_implementation="sdpa").eval()


@pytest.fixture(scope="module")
def held_out():
    return scenes.dataset(PER_FAMILY * len(scenes.FAMILIES), seed=scenes.EVAL_SEED)


def test_card_and_config(model):
    card = json.load(open(os.path.join(toy.CHECKPOINT_DIR, "model_card.json")))
    assert model.config.text_config.num_hidden_layers == card["decoder_layers"] >= 6
    assert set(card["eval"]["accuracy"]) >= set(card["families"])
    assert model.config.image_token_id == train.IMG


def test_eager_and_sdpa_agree_and_4d_mask_matches_2d(model, held_out):
    from transformers import LlavaForConditionalGeneration

    eager = LlavaForConditionalGeneration.from_pretrained(toy.CHECKPOINT_DIR, attn_implementation="eager").eval()
    batch = held_out[:6]
    ids, mask, pos = train.encode(batch, with_answer=False)  # left-padded: rows differ in length
    px = train.pixels([s.image for s in batch])
    with torch.no_grad():
        a = model(input_ids=ids, pixel_values=px, attention_mask=mask, position_ids=pos).logits[:, -1]
        b = eager(input_ids=ids, pixel_values=px, attention_mask=mask, position_ids=pos).logits[:, -1]
        full = train.attention_bias(ids, mask, cut=False)  # the same visibility, as an explicit 4D float mask
        c = eager(input_ids=ids, pixel_values=px, attention_mask=full, position_ids=pos).logits[:, -1]
    torch.testing.assert_close(a, b, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(b, c, atol=1e-4, rtol=1e-4)


def test_beats_chance_and_needs_the_image(model, held_out):
    acc = train.evaluate(model, held_out)
    blind = train.evaluate(model, held_out, block_vision=True)
    chance = sum(scenes.CHANCE[f] for f in scenes.FAMILIES) / len(scenes.FAMILIES)
    # Deterministic (fixed seeds, fixed weights); margins far from the card's numbers so numerics can't flip it.
    assert acc["overall"]["acc"] > chance + 0.25, acc
    for f in scenes.FAMILIES:
        assert acc[f]["acc"] > scenes.CHANCE[f] + 0.1, (f, acc[f])
    assert blind["overall"]["acc"] < chance + 0.1, blind
    assert acc["overall"]["acc"] - blind["overall"]["acc"] > 0.25


@pytest.mark.parametrize("axis", ["x", "y"])
def test_spatial_answers_follow_the_mirrored_image(model, held_out, axis):
    # A behavioural check needing no labels: a model that reads where objects are swaps its answer when the
    # scene is mirrored on the asked axis (the card's family mean once hid a model right only on above/below).
    sp = [s for s in held_out if s.family == "spatial" and s.answer in scenes.SIDES[axis]]
    a, b = scenes.SIDES[axis]
    before = train.greedy(model, sp)
    after = train.greedy(model, [scenes.mirror(s, axis) for s in sp])
    follows = sum({a: b, b: a}.get(p) == q for p, q in zip(before, after)) / len(sp)
    assert len(sp) >= 15 and follows > 0.8, (axis, follows)


def test_interp_load_uses_the_training_prompt(held_out):
    vlm = toy.load()
    batch = vlm.prepare(images=[s.image for s in held_out[:3]], questions=[s.question for s in held_out[:3]])
    ids, mask, _ = train.encode(held_out[:3], with_answer=False)
    assert torch.equal(batch.input_ids, ids) and torch.equal(batch.inputs["attention_mask"], mask)
    assert vlm.num_layers == vlm.hf.config.text_config.num_hidden_layers
