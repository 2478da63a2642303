"""The toy trainer's pieces checked against plain recomputations: batches, the auxiliary patch loss, forced choice."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F

import interp.toy as toy
from interp.toy import scenes, train


@pytest.fixture(scope="module")
def model():
    from transformers import LlavaForConditionalGeneration

    torch.set_num_threads(1)
    return LlavaForConditionalGeneration.from_pretrained(toy.CHECKPOINT_DIR, attn_implementation="eager").eval()


def test_stage_b_batch_is_the_dataset_with_its_patch_labels():
    fams = ("spatial", "count", "spatial")
    px, ids, mask, pos, labels, y = train.stage_b_batch(3, 6, 0, fams, offset=10, max_objects=3)
    seed = scenes.TRAIN_SEED_BASE + 10 + 3
    samples = scenes.dataset(6, seed=seed, families=fams, max_objects=3)
    ids2, mask2, _ = train.encode(samples, with_answer=True)
    assert torch.equal(ids, ids2) and torch.equal(mask, mask2)
    assert [s.family for s in samples] == list(fams) * 2
    torch.testing.assert_close(px, train.pixels([s.image for s in samples]))
    objs = scenes.make("count", seed, 4, max_objects=3)[1]
    assert all(np.array_equal(y[k][4].numpy(), v) for k, v in train.patch_labels(objs).items())
    # the loss reads exactly the answer word and </s> of every row
    assert (labels != -100).sum(1).tolist() == [2] * 6
    assert [train.VOCAB[s.answer] for s in samples] == labels[:, -2].tolist()


def test_aux_loss_is_answer_ce_plus_patch_ce_on_projector_output(model):
    torch.manual_seed(0)
    aux = torch.nn.Linear(model.config.text_config.hidden_size, sum(train.HEAD.values()))
    px, ids, mask, pos, labels, y = train.stage_b_batch(0, 4, 1, scenes.ALL_FAMILIES)
    with torch.no_grad():
        got = train.stage_b_loss(model, px, ids, mask, pos, labels, y, aux=aux, aux_weight=0.3)
        plain = train.stage_b_loss(model, px, ids, mask, pos, labels, y)
        # oracle: the tower's last hidden state without CLS, through the projector, then the head
        h = model.model.vision_tower(pixel_values=px).last_hidden_state[:, 1:]
        z = aux(model.model.multi_modal_projector(h))  # [B, 64, sum(HEAD)]
        ce, start = 0.0, 0
        for k, n in train.HEAD.items():
            ce = ce + F.cross_entropy(z[..., start:start + n].reshape(-1, n), y[k].reshape(-1))
            start += n
        logits = model(input_ids=ids, pixel_values=px, attention_mask=mask, position_ids=pos).logits
        answer = F.cross_entropy(logits[:, :-1].flatten(0, 1), labels[:, 1:].flatten(), ignore_index=-100)
    torch.testing.assert_close(plain, answer)
    torch.testing.assert_close(got, answer + 0.3 * ce)
    assert not model.model.multi_modal_projector._forward_hooks  # the capture hook is gone afterwards


@pytest.mark.parametrize("block", [False, True])
def test_forced_choice_is_the_best_choice_of_an_unpadded_run(model, block):
    samples = scenes.dataset(12, seed=scenes.EVAL_SEED + 1, families=scenes.ALL_FAMILIES)
    got = train.choose(model, samples, block_vision=block)
    for s, g in zip(samples, got):
        ids, mask, pos = train.encode([s], with_answer=False)  # one row alone: no padding
        am = train.blocked_mask(ids, mask) if block else mask
        with torch.no_grad():
            row = model(input_ids=ids, pixel_values=train.pixels([s.image]), attention_mask=am,
                        position_ids=pos).logits[0, -1]
        scores = {c: row[train.VOCAB[c]].item() for c in s.choices}
        assert g == max(scores, key=scores.get) and g in s.choices


def test_targets_gate_on_accuracy_and_the_blind_control():
    fams = ["a", "b", "c"]
    acc = {"a": .70, "b": .40, "c": .80}
    blind = {"a": .10, "b": .10, "c": .40}
    card = {"families": fams, "eval": {
        "chance": {"a": .25, "b": .25, "c": .30},
        "accuracy": {f: {"acc": v} for f, v in acc.items()},
        "accuracy_vision_blocked": {f: {"acc": v} for f, v in blind.items()},
        "accuracy_vision_blocked_forced_choice": {f: {"acc": .25} for f in fams}}}
    t = train.targets(card)
    # b is only 15 points above chance; c sees 10 points above chance with vision blocked
    assert t["default_families"] == ["a"] and t["overall_on_default_families"] == pytest.approx(.70)
    assert t["overall_in_0.6_0.9"] and t["per_family"]["c"]["blocked_above_chance"] == pytest.approx(.10)
    # ... unless on this eval set a blind constant guess already scores .37 on c
    card["eval"]["blind_best"] = {"a": .3, "b": .3, "c": .37}
    t = train.targets(card)
    assert t["default_families"] == ["a", "c"] and t["per_family"]["c"]["blocked_above_chance"] == pytest.approx(.03)


def test_blind_best_is_the_best_constant_answer_per_choice_set():
    S = type("S", (), {})

    def s(f, choices, answer):
        x = S()
        x.family, x.choices, x.answer = f, choices, answer
        return x

    lr, ab = ("left", "right"), ("above", "below")
    samples = [s("sp", lr, "left"), s("sp", lr, "left"), s("sp", lr, "right"), s("sp", ab, "below"),
               s("ex", ("yes", "no"), "no"), s("ex", ("yes", "no"), "yes"), s("ex", ("yes", "no"), "no")]
    # sp: "left" for the left/right questions (2 of 3), "below" for the other (1 of 1) → 3 of 4
    assert train.blind_best(samples) == {"sp": 0.75, "ex": pytest.approx(2 / 3)}


def test_restricted_batches_narrow_only_the_families_that_give_those_answers():
    fams = ("spatial", "color_of_shape", "spatial", "exists")
    px, ids, mask, pos, labels, y = train.stage_b_batch(2, 8, 0, fams, offset=10, max_objects=3,
                                                        answers={"left", "right"})
    seed = scenes.TRAIN_SEED_BASE + 10 + 2
    words = list(train.VOCAB)
    got = [words[t] for t in labels[:, -2].tolist()]
    for i, f in enumerate(fams * 2):
        if f == "spatial":  # the first of indices i, i + 8, i + 16, ... with a horizontal question
            j = next(j for j in range(i, 400, 8) if scenes.make(f, seed, j, max_objects=3)[0].answer in ("left", "right"))
            want = scenes.make(f, seed, j, max_objects=3)[0]
        else:  # untouched: exactly scenes.make
            want = scenes.make(f, seed, i, max_objects=3)[0]
        assert got[i] == want.answer
        torch.testing.assert_close(px[i], train.pixels([want.image])[0])
    assert {got[i] for i in (0, 2, 4, 6)} <= {"left", "right"}
    # without answers the batch is the plain dataset
    plain = train.stage_b_batch(2, 8, 0, fams, offset=10, max_objects=3)
    samples = scenes.dataset(8, seed=seed, families=fams, max_objects=3)
    assert [words[t] for t in plain[4][:, -2].tolist()] == [s.answer for s in samples]


def test_answers_c_names_an_answer_no_family_gives(tmp_path):
    with pytest.raises(SystemExit, match=r"no family of the mix \['spatial'\] answers \['up'\]"):
        train.main(["--out", str(tmp_path), "--minutes-a", "0", "--minutes-b", "0", "--minutes-c", "1",
                    "--families-c", "spatial", "--answers-c", "left,up", "--layers", "1"])


def test_by_answer_splits_each_family_by_its_true_answer():
    S = type("S", (), {})

    def s(f, answer):
        x = S()
        x.family, x.answer = f, answer
        return x

    samples = [s("sp", "left"), s("sp", "right"), s("sp", "left"), s("sp", "above"), s("ex", "no"), s("ex", "yes")]
    preds = ["left", "left", "right", "Above.", "no", "no"]
    got = train.by_answer(preds, samples)
    assert list(got) == ["sp", "ex"] and list(got["sp"]) == ["above", "left", "right"]
    assert {a: (r["acc"], r["n"]) for a, r in got["sp"].items()} == {"above": (1.0, 1), "left": (0.5, 2), "right": (0.0, 1)}
    assert {a: (r["acc"], r["n"]) for a, r in got["ex"].items()} == {"no": (1.0, 1), "yes": (0.0, 1)}
    assert got["sp"]["left"]["ci95"] == train.wilson(1, 2)
