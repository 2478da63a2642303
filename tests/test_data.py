"""Sample validation and loaders: every malformed record is an InputError naming the line and field."""

import json
import sys
import types

import datasets
import pytest
from PIL import Image

import interp.toy
from interp.data import Sample, load_hf_dataset, load_jsonl, load_samples
from interp.data.loaders import subsample
from interp.errors import InputError


def _img(color=(255, 0, 0), size=(16, 12)):
    return Image.new("RGB", size, color)


# --- Sample ----------------------------------------------------------------------------------------------

def test_sample_normalises():
    s = Sample(Image.new("L", (8, 8)), "q?", "a", choices=["x", "y"], boxes=[[0, 1, 4, 5]], id="s0",
               answers=["a", "b"])
    assert s.image.mode == "RGB"
    assert s.choices == ("x", "y") and s.answers == ("a", "b")
    assert s.boxes == ((0.0, 1.0, 4.0, 5.0),)
    multi = Sample([_img(), Image.new("RGBA", (4, 4))], "q?", "a")
    assert [im.mode for im in multi.images] == ["RGB", "RGB"]
    with pytest.raises(Exception):
        s.answer = "b"  # frozen


@pytest.mark.parametrize("kwargs, field", [
    (dict(image="pic.png"), "image"),
    (dict(image=[]), "image"),
    (dict(image=[_img(), "x"]), "image"),
    (dict(question=3), "question"),
    (dict(question="  "), "question"),
    (dict(answer=["a"]), "answer"),
    (dict(family=None), "family"),
    (dict(choices="AB"), "choices"),
    (dict(choices=("a", 1)), "choices"),
    (dict(boxes=((0, 0, 1),)), "boxes"),
    (dict(boxes=((2, 0, 1, 1),)), "boxes"),     # x0 > x1
    (dict(boxes=((0, 0, 1, 0),)), "boxes"),     # no height
    (dict(boxes=((0, 0, float("nan"), 1),)), "boxes"),
    (dict(boxes=((0, 0, "1", 1),)), "boxes"),
    (dict(id=7), "id"),
])
def test_sample_rejects(kwargs, field):
    args = dict(image=_img(), question="q?", answer="a", id="bad1") | kwargs
    with pytest.raises(InputError) as e:
        Sample(**args)
    assert repr(field) in str(e.value)
    if isinstance(args["id"], str):
        assert "bad1" in str(e.value)


# --- JSONL -----------------------------------------------------------------------------------------------

@pytest.fixture
def image_dir(tmp_path):
    (tmp_path / "imgs").mkdir()
    for i, color in enumerate([(255, 0, 0), (0, 255, 0), (0, 0, 255)]):
        _img(color).save(tmp_path / "imgs" / f"{i}.png")
    (tmp_path / "imgs" / "broken.png").write_text("not an image")
    return tmp_path


def _write(path, lines):
    path.write_text("".join((l if isinstance(l, str) else json.dumps(l)) + "\n" for l in lines))
    return path


GOOD = {"id": "q0", "image": "imgs/0.png", "question": "What color?", "answer": "red", "family": "color",
        "boxes": [[0, 0, 8, 8]], "choices": ["red", "green"]}


def test_load_jsonl(image_dir):
    path = _write(image_dir / "d.jsonl", [
        GOOD,
        "",  # blank lines are not records
        {"image": "imgs/1.png", "question": "How many?", "answer": 2, "boxes": [1, 1, 3, 3]},
        {"image": ["imgs/2.png", "imgs/0.png"], "question": "Same?", "answers": ["no", "no", "yes"]},
    ])
    s = load_jsonl(path)
    assert [x.id for x in s] == ["q0", "line3", "line4"]
    assert s[0].image.getpixel((0, 0)) == (255, 0, 0)
    assert s[0].choices == ("red", "green") and s[0].family == "color"
    assert s[1].answer == "2" and s[1].boxes == ((1.0, 1.0, 3.0, 3.0),)
    assert len(s[2].images) == 2 and s[2].answer == "no" and s[2].answers == ("no", "no", "yes")


def test_load_jsonl_image_root(image_dir, tmp_path_factory):
    other = tmp_path_factory.mktemp("elsewhere")
    path = _write(other / "d.jsonl", [GOOD])
    with pytest.raises(InputError, match="not found"):
        load_jsonl(path)
    assert load_jsonl(path, image_root=image_dir)[0].id == "q0"


@pytest.mark.parametrize("line, field", [
    ('{"id": "x", "image": "imgs/0.png", "question": "q"', "JSON"),
    ('["a", "b"]', "JSON object"),
    ({"image": "imgs/0.png", "answer": "a"}, "'question'"),
    ({"question": "q", "answer": "a"}, "'image'"),
    ({"image": "imgs/0.png", "question": "q"}, "'answer'"),
    ({"image": "imgs/0.png", "question": 5, "answer": "a"}, "'question'"),
    ({"image": "imgs/0.png", "question": "q", "answer": ["a", "b"]}, "'answers'"),
    ({"image": "imgs/0.png", "question": "q", "answer": True}, "'answer'"),
    ({"image": "imgs/0.png", "question": "q", "answer": "a", "answers": "a"}, "'answers'"),
    ({"image": "imgs/0.png", "question": "q", "answer": "a", "choices": "ab"}, "'choices'"),
    ({"image": "imgs/0.png", "question": "q", "answer": "a", "family": 3}, "'family'"),
    ({"image": "imgs/0.png", "question": "q", "answer": "a", "id": ""}, "'id'"),
    ({"image": "imgs/0.png", "question": "q", "answer": "a", "boxes": [[0, 0, 1]]}, "'boxes'"),
    ({"image": "imgs/0.png", "question": "q", "answer": "a", "boxes": [[5, 0, 1, 1]]}, "'boxes'"),
    ({"image": "imgs/0.png", "question": "q", "answer": "a", "boxes": "0 0 1 1"}, "'boxes'"),
    ({"image": "imgs/missing.png", "question": "q", "answer": "a"}, "'image'"),
    ({"image": 3, "question": "q", "answer": "a"}, "'image'"),
    ({"image": [], "question": "q", "answer": "a"}, "'image'"),
    ({"image": "imgs/broken.png", "question": "q", "answer": "a"}, "cannot read image"),
    ({"id": "q0", "image": "imgs/1.png", "question": "q", "answer": "a"}, "repeats"),
])
def test_load_jsonl_malformed(image_dir, line, field):
    path = _write(image_dir / "bad.jsonl", [GOOD, "", line, GOOD | {"id": "q9"}])
    with pytest.raises(InputError) as e:
        load_jsonl(path)
    msg = str(e.value)
    assert "line 3" in msg and field in msg, msg


def test_load_jsonl_missing_file(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_jsonl(tmp_path / "nope.jsonl")


def test_subsample_is_seeded_nested_and_ordered():
    assert subsample(5, None) == [0, 1, 2, 3, 4]
    assert subsample(5, 9) == [0, 1, 2, 3, 4]
    a, b = subsample(100, 10, seed=1), subsample(100, 30, seed=1)
    assert a == sorted(a) and len(set(a)) == 10 and set(a) <= set(b)
    assert a == subsample(100, 10, seed=1) and a != subsample(100, 10, seed=2)


def test_limit_opens_only_selected_images(image_dir):
    # A broken image outside the chosen subset is not opened, but a missing file anywhere is an error.
    recs = [GOOD | {"id": f"q{i}", "image": f"imgs/{i % 3}.png"} for i in range(20)]
    recs[7]["image"] = "imgs/broken.png"
    path = _write(image_dir / "d.jsonl", recs)
    keep = subsample(20, 3, seed=0)
    assert 7 not in keep
    assert [s.id for s in load_jsonl(path, limit=3, seed=0)] == [f"q{i}" for i in keep]


# --- datasets directories ---------------------------------------------------------------------------------

def test_hf_dataset_round_trip(tmp_path):
    features = datasets.Features({
        "image": datasets.Image(), "question": datasets.Value("string"), "answer": datasets.Value("string"),
        "category": datasets.Value("string"), "qid": datasets.Value("int64"),
        "boxes": datasets.Sequence(datasets.Sequence(datasets.Value("float32"))),
    })
    ds = datasets.Dataset.from_dict({
        "image": [_img((255, 0, 0)), _img((0, 255, 0)), Image.new("L", (5, 5), 200)],
        "question": ["a?", "b?", "c?"], "answer": ["red", "green", "grey"], "category": ["x", "y", "x"],
        "qid": [10, 11, 12], "boxes": [[[0, 0, 4, 4]], [], [[1, 1, 2, 2]]],
    }, features=features)
    ds.save_to_disk(str(tmp_path / "single"))
    s = load_hf_dataset(tmp_path / "single", columns={"family": "category", "id": "qid"})
    assert [x.id for x in s] == ["10", "11", "12"]
    assert [x.family for x in s] == ["x", "y", "x"]
    assert s[1].image.getpixel((0, 0)) == (0, 255, 0) and s[2].image.mode == "RGB"
    assert s[0].boxes == ((0.0, 0.0, 4.0, 4.0),) and s[1].boxes == ()
    assert [x.id for x in load_samples(tmp_path / "single", limit=2, seed=3)] == \
        [str(i) for i in subsample(3, 2, seed=3)]  # no id column mapped: the row index

    with pytest.raises(InputError, match="columns="):
        load_hf_dataset(tmp_path / "single", columns={"family": "nope"})
    with pytest.raises(InputError, match="unknown Sample fields"):
        load_hf_dataset(tmp_path / "single", columns={"colour": "category"})
    ds.rename_column("question", "prompt").save_to_disk(str(tmp_path / "renamed"))
    with pytest.raises(InputError, match="'question'"):
        load_hf_dataset(tmp_path / "renamed")
    assert load_hf_dataset(tmp_path / "renamed", columns={"question": "prompt"})[0].question == "a?"


def test_hf_dataset_splits_and_paths(tmp_path):
    (tmp_path / "imgs").mkdir()
    _img((1, 2, 3)).save(tmp_path / "imgs" / "a.png")
    rows = {"image": ["imgs/a.png", "imgs/a.png"], "question": ["q1", "q2"], "answer": ["x", "y"]}
    dd = datasets.DatasetDict({"val": datasets.Dataset.from_dict(rows), "test": datasets.Dataset.from_dict(rows)})
    dd.save_to_disk(str(tmp_path / "dd"))
    with pytest.raises(InputError, match="split"):
        load_hf_dataset(tmp_path / "dd")
    with pytest.raises(InputError, match="no split 'train'"):
        load_hf_dataset(tmp_path / "dd", split="train")
    s = load_hf_dataset(tmp_path / "dd", split="test", image_root=tmp_path)
    assert [x.id for x in s] == ["test:0", "test:1"] and s[0].image.getpixel((0, 0)) == (1, 2, 3)
    with pytest.raises(InputError, match="row 0.*not found"):
        load_hf_dataset(tmp_path / "dd", split="val")  # paths resolve against the dataset dir by default


# --- dispatch --------------------------------------------------------------------------------------------

def test_load_samples_toy(monkeypatch):
    calls = []

    def fake_dataset(n, seed):
        calls.append((n, seed))
        return [Sample(_img(), "q?", "a", id=str(i)) for i in range(n)]

    monkeypatch.setattr(interp.toy, "dataset", fake_dataset, raising=False)
    monkeypatch.setattr(interp.toy, "EVAL_SEED", 1000, raising=False)
    assert len(load_samples("toy", limit=4, seed=2)) == 4
    load_samples("toy")
    assert calls == [(4, 1002), (1000, 1000)]


def test_load_samples_dispatch_errors(tmp_path):
    with pytest.raises(InputError, match="does not exist"):
        load_samples(tmp_path / "missing.jsonl")
    with pytest.raises(InputError, match="not found"):
        load_samples(tmp_path / "missing_dir")
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(InputError, match="neither"):
        load_samples(tmp_path / "x.csv")
    with pytest.raises(InputError, match="item 1 .*expected an interp.data.Sample"):
        load_samples([Sample(_img(), "q", "a"), "oops"])
    other = types.SimpleNamespace(image=_img(), question="q", answer="a", choices=["x"], family="f",
                                  boxes=[(0, 0, 1, 1)], id="o1")  # another module's record class
    assert load_samples([other])[0] == Sample(_img(), "q", "a", ("x",), "f", ((0, 0, 1, 1),), "o1")
    with pytest.raises(InputError, match="data spec"):
        load_samples(3)
    samples = [Sample(_img(), "q", "a", id=str(i)) for i in range(10)]
    assert [s.id for s in load_samples(samples, limit=3, seed=0)] == [str(i) for i in subsample(10, 3)]


def test_load_samples_toy_missing(monkeypatch):
    import interp.data.loaders as loaders

    monkeypatch.setitem(sys.modules, "interp.toy", types.ModuleType("interp.toy"))
    monkeypatch.setattr(interp, "toy", sys.modules["interp.toy"], raising=False)
    with pytest.raises(InputError, match="interp.toy.dataset"):
        loaders._toy_module()

