"""The toy trainer's pieces checked against plain recomputations (batches, the auxiliary patch loss, forced choice
through the engine against an explicit 4D mask), its documented recipe against the shipped card, and a smoke run."""
import json
import os
import shlex

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import interp.toy as toy
from interp.stats import wilson_ci
from interp.toy import card, scenes, stages, train
from interp.toy import model as M
from interp.toy import objectives as O


@pytest.fixture(scope="module")
def model():
    from transformers import LlavaForConditionalGeneration

    return LlavaForConditionalGeneration.from_pretrained(toy.CHECKPOINT_DIR, attn_implementation="eager").eval()


def test_stage_b_batch_is_the_dataset_with_its_patch_labels():
    fams = ("spatial", "count", "spatial")
    px, ids, mask, pos, labels, y = O.stage_b_batch(3, 6, 0, fams, offset=10, max_objects=3)
    seed = scenes.TRAIN_SEED_BASE + 10 + 3
    samples = scenes.dataset(6, seed=seed, families=fams, max_objects=3)
    ids2, mask2, _ = M.encode(samples, with_answer=True)
    assert torch.equal(ids, ids2) and torch.equal(mask, mask2)
    assert [s.family for s in samples] == list(fams) * 2
    torch.testing.assert_close(px, M.pixels([s.image for s in samples]))
    objs = scenes.make("count", seed, 4, max_objects=3)[1]
    assert all(np.array_equal(y[k][4].numpy(), v) for k, v in O.patch_labels(objs).items())
    # the loss reads exactly the answer word and </s> of every row
    assert (labels != -100).sum(1).tolist() == [2] * 6
    assert [M.VOCAB[s.answer] for s in samples] == labels[:, -2].tolist()


def test_aux_loss_is_answer_ce_plus_patch_ce_on_projector_output(model):
    torch.manual_seed(0)
    aux = torch.nn.Linear(model.config.text_config.hidden_size, sum(O.HEAD.values()))
    px, ids, mask, pos, labels, y = O.stage_b_batch(0, 4, 1, scenes.ALL_FAMILIES)
    with torch.no_grad():
        got = O.stage_b_loss(model, px, ids, mask, pos, labels, y, aux=aux, aux_weight=0.3)
        plain = O.stage_b_loss(model, px, ids, mask, pos, labels, y)
        # oracle: the tower's last hidden state without CLS, through the projector, then the head
        h = model.model.vision_tower(pixel_values=px).last_hidden_state[:, 1:]
        z = aux(model.model.multi_modal_projector(h))  # [B, 64, sum(HEAD)]
        ce, start = 0.0, 0
        for k, n in O.HEAD.items():
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
    got = card.choose(model, samples, block_vision=block)
    for s, g in zip(samples, got):
        ids, mask, pos = M.encode([s], with_answer=False)  # one row alone: no padding
        am = M.attention_bias(ids, mask) if block else mask
        with torch.no_grad():
            row = model(input_ids=ids, pixel_values=M.pixels([s.image]), attention_mask=am,
                        position_ids=pos).logits[0, -1]
        scores = {c: row[M.VOCAB[c]].item() for c in s.choices}
        assert g == max(scores, key=scores.get) and g in s.choices


def test_targets_gate_on_accuracy_and_the_blind_control():
    fams = ["a", "b", "c"]
    acc = {"a": .70, "b": .40, "c": .80}
    blind = {"a": .10, "b": .10, "c": .40}
    made = {"families": fams, "eval": {
        "chance": {"a": .25, "b": .25, "c": .30},
        "accuracy": {f: {"acc": v} for f, v in acc.items()},
        "accuracy_vision_blocked": {f: {"acc": v} for f, v in blind.items()},
        "accuracy_vision_blocked_forced_choice": {f: {"acc": .25} for f in fams}}}
    t = card.targets(made)
    # b is only 15 points above chance; c sees 10 points above chance with vision blocked
    assert t["default_families"] == ["a"] and t["overall_on_default_families"] == pytest.approx(.70)
    assert t["overall_in_0.6_0.9"] and t["per_family"]["c"]["blocked_above_chance"] == pytest.approx(.10)
    # ... unless on this eval set a blind constant guess already scores .37 on c
    made["eval"]["blind_best"] = {"a": .3, "b": .3, "c": .37}
    t = card.targets(made)
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
    assert card.blind_best(samples) == {"sp": 0.75, "ex": pytest.approx(2 / 3)}


def test_restricted_batches_narrow_only_the_families_that_give_those_answers():
    fams = ("spatial", "color_of_shape", "spatial", "exists")
    px, ids, mask, pos, labels, y = O.stage_b_batch(2, 8, 0, fams, offset=10, max_objects=3,
                                                        answers={"left", "right"})
    seed = scenes.TRAIN_SEED_BASE + 10 + 2
    words = list(M.VOCAB)
    got = [words[t] for t in labels[:, -2].tolist()]
    for i, f in enumerate(fams * 2):
        if f == "spatial":  # the first of indices i, i + 8, i + 16, ... with a horizontal question
            j = next(j for j in range(i, 400, 8)
                     if scenes.make(f, seed, j, max_objects=3)[0].answer in ("left", "right"))
            want = scenes.make(f, seed, j, max_objects=3)[0]
        else:  # untouched: exactly scenes.make
            want = scenes.make(f, seed, i, max_objects=3)[0]
        assert got[i] == want.answer
        torch.testing.assert_close(px[i], M.pixels([want.image])[0])
    assert {got[i] for i in (0, 2, 4, 6)} <= {"left", "right"}
    # without answers the batch is the plain dataset
    plain = O.stage_b_batch(2, 8, 0, fams, offset=10, max_objects=3)
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
    got = card.by_answer(preds, samples)
    assert list(got) == ["sp", "ex"] and list(got["sp"]) == ["above", "left", "right"]
    assert {a: (r["acc"], r["n"]) for a, r in got["sp"].items()} == {"above": (1.0, 1), "left": (0.5, 2),
                                                                     "right": (0.0, 1)}
    assert {a: (r["acc"], r["n"]) for a, r in got["ex"].items()} == {"no": (1.0, 1), "yes": (0.0, 1)}
    assert got["sp"]["left"]["ci95"] == wilson_ci(1, 2)


# --- the recipe ------------------------------------------------------------------------------------------

def documented_commands() -> list[list[str]]:
    """The `python -m interp.toy.train ...` lines of train.py's docstring (continuation lines joined), as argv."""
    text = train.__doc__.replace("\\\n", " ")
    return [shlex.split(line.split("#")[0])[3:] for line in text.splitlines()
            if line.strip().startswith("python -m interp.toy.train")]


def test_the_documented_recipe_is_the_shipped_recipe_as_data():
    docs = documented_commands()
    replay = [argv for argv in docs if "--recipe" in argv]
    assert ["--out", "runs/toy", "--recipe", "shipped"] in replay
    steps = [argv for argv in docs if "--recipe" not in argv][:-1]  # the last one: "continue after a crash"
    assert steps == stages.SHIPPED.commands("runs/toy")


def test_the_recipe_is_what_the_shipped_card_records():
    shipped = json.load(open(os.path.join(toy.CHECKPOINT_DIR, "model_card.json")))
    first = shlex.split(shipped["commands"][0])
    assert float(first[first.index("--minutes-a") + 1]) == stages.SHIPPED.minutes_a
    assert float(first[first.index("--minutes-b") + 1]) == stages.SHIPPED.minutes_b
    ran = shipped["training"]["continuations"]
    assert [c["stage"] for c in ran] == [stages.stage_name(k) for k in range(len(stages.SHIPPED.continuations))]
    assert [stages.Continuation.from_config(c) for c in ran] == list(stages.SHIPPED.continuations)
    assert tuple(shipped["families"]) == stages.SHIPPED.families


@pytest.mark.parametrize("argv", documented_commands(), ids=lambda a: " ".join(a[2:])[:60])
def test_every_documented_command_validates_and_builds_its_first_batch(argv, tmp_path, capsys):
    argv = [str(tmp_path / "run") if a == "runs/toy" else a for a in argv]
    plan = train.main(argv + ["--dry-run"])
    assert not os.path.exists(tmp_path / "run")  # a dry run writes nothing
    assert [p["stage"] for p in plan][:2] == ["A", "B"] and capsys.readouterr().out.count("stage=") == len(plan)
    for p in plan[2:]:  # every family is one scenes.make knows, with this stage's scene cap and answer filter
        fams = tuple(p["families"])
        assert set(fams) <= set(scenes.ALL_FAMILIES)
        _, _, _, _, labels, _ = O.stage_b_batch(0, len(fams), 0, fams, max_objects=p["max_objects"],
                                                 answers=set(p["answers"] or ()))
        if p["answers"]:
            assert {list(M.VOCAB)[t] for t in labels[:, -2].tolist()} <= set(p["answers"])


def test_mix_names_expand_and_unknown_families_stop_before_training(tmp_path):
    assert stages.expand("HARD1") == stages.SHIPPED.continuations[0].families
    assert stages.expand("MIX4,position")[-1] == "position" and stages.mix_name(stages.expand("MIX5")) == "MIX5"
    with pytest.raises(SystemExit, match="unknown family 'HARD3'.*or a mix HARD1, HARD2, MIX4, MIX5"):
        train.main(["--out", str(tmp_path), "--minutes-c", "1", "--families-c", "HARD3", "--dry-run"])
    with pytest.raises(SystemExit, match="--recipe shipped sets the stages; drop --minutes-c"):
        train.main(["--out", str(tmp_path), "--recipe", "shipped", "--minutes-c", "3"])


def test_a_replay_continues_only_a_state_of_its_own_recipe():
    recipe = stages.SHIPPED
    state = {"C": {"config": recipe.continuations[0].config()}, "C2": {"config": recipe.continuations[1].config()}}
    got = stages.continuations(state, recipe, replay="shipped")
    assert got == [(stages.stage_name(k), c) for k, c in enumerate(recipe.continuations)]
    state["C2"]["config"]["minutes"] = 10
    with pytest.raises(stages.InputError, match="stage C2 was trained as"):
        stages.continuations(state, recipe, replay="shipped")
    # flags: a new continuation only when there is none yet, or with --new-c after the others
    flags = stages.Recipe(5, 37, (stages.Continuation(3, ("spatial",)),))
    assert [n for n, _ in stages.continuations(state, flags)] == ["C", "C2"]
    assert [n for n, _ in stages.continuations(state, flags, new=True)] == ["C", "C2", "C3"]


def test_a_two_step_run_writes_a_checkpoint_interp_loads(tmp_path, num_threads):
    import interp

    out = tmp_path / "run"
    argv = ["--out", str(out), "--steps", "2", "--layers", "1", "--families", "spatial", "--eval-per-family",
            "2", "--minutes-c", "1", "--families-c", "spatial", "--aux-c", "1", "--answers-c", "left,right"]
    num_threads(2)
    got = train.main(argv)  # trains with --threads 1 (the default)
    assert torch.get_num_threads() == 2  # and gives the process its count back
    written = json.load(open(out / "model_card.json"))
    assert written == json.loads(json.dumps(got)) and written["commands"][-1].endswith(" ".join(argv))
    t = written["training"]
    assert (t["stage_a"]["step"], t["stage_b"]["step"], [c["step"] for c in t["continuations"]]) == (2, 2, [2])
    assert t["continuations"][0]["answers"] == ["left", "right"] and written["eval"]["accuracy"]["spatial"]["n"] == 2
    assert not [f for f in os.listdir(out) if f.startswith(".")]  # no temporary file or folder left
    vlm = interp.load(str(out))
    assert vlm.num_layers == 1 and vlm.image_token_id == M.IMG
