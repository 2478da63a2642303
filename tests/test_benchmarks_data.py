"""interp.data.benchmark: all 11 benchmarks from fixture copies in their hub schema and layout; prompts exactly
as lmms-eval's doc_to_text; errors that name the fix."""

import datasets
import pytest

import hub_fixtures as F
from interp.data import BENCHMARKS, Sample, apply_style, benchmark
from interp.data.benchmarks import find_copy
from interp.errors import InputError, InterpError

V_POST = "\nAnswer with the option's letter from the given choices directly."
REC = ("Bounding box coordinates are specified in the format (top-left x, top-left y, bottom-right x, bottom-right "
       "y). All values are floating point numbers bounded between 0 and 1. Please provide the bounding box "
       "coordinate of the region this sentence describes: ")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", str(tmp_path / "hf-cache"))


@pytest.fixture(scope="module")
def copies(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    return {name: F.write(name, root / name) for name in F.SCHEMAS}


# name, split, n samples, first question, first answer, first family, ids
EXPECTED = [
    ("vstar", None, 3,
     "What is the material of the glove?\nA. rubber\nB. cotton\nC. kevlar\nD. leather" + V_POST + V_POST, "A",
     "direct_attributes", ["0", "1", "2"]),  # V*'s last option keeps the hub's own instruction: twice
    ("realworldqa", None, 3, F.RWQA_MC, "C", "", ["0", "1", "2"]),
    ("mmstar", None, 3, F.MMSTAR_Q + "\nAnswer with the option's letter from the given choices directly",
     "A", "fine-grained perception", ["0", "1", "2"]),
    ("textvqa", None, 3, "What brand is the tv?\nAnswer the question using a single word or phrase.", "sony", "",
     ["100", "101", "102"]),  # validation, not train/test; capitalize() lower-cases "TV"
    ("countbench", None, 3, "Look at the image carefully and count the objects. Answer with just a number, without "
     "any additional text. How many dogs are there?", "2", "", ["0", "1", "2"]),
    ("hrbench4k", None, 3, "What is the colour of the umbrella?\nA. red\nB. blue\nC. green\nD. 5\nAnswer the option "
     "letter directly.", "A", "single", ["0", "1", "2"]),
    ("hrbench8k", None, 3, None, "A", "single", ["0", "1", "2"]),
    ("pope", None, 3, "Is there a snowboard in the image?\nAnswer the question using a single word or phrase.", "yes",
     "adversarial", ["0", "1", "2"]),  # question_id repeats in the fixture: the unique `id` is used
    ("refcoco", "val", 4, REC + "man on the left", "[0.05, 0.1, 0.3, 0.3667]", "",
     ["val0:0", "val1:0", "val1:1", "val2:0"]),
    ("refcoco+", "testA", 4, REC + "man on the left", "[0.05, 0.1, 0.3, 0.3667]", "",
     ["testA0:0", "testA1:0", "testA1:1", "testA2:0"]),  # a save_to_disk folder
    ("refcocog", "test", 4, REC + "man on the left", "[0.05, 0.1, 0.3, 0.3667]", "",
     ["test0:0", "test1:0", "test1:1", "test2:0"]),
]


@pytest.mark.parametrize("name, split, n, question, answer, family, ids", EXPECTED)
def test_load(copies, name, split, n, question, answer, family, ids):
    samples = benchmark(name, copies[name], split=split)
    assert len(samples) == n and [s.id for s in samples] == ids
    s = samples[0]
    assert isinstance(s, Sample) and s.task == name and s.image.mode == "RGB"
    assert s.image.size == F.SIZES[0]  # decoded from the struct's bytes (its path names no file)
    if question is not None:
        assert s.question == question
    assert (s.answer, s.family) == (answer, family)


def test_details(copies):
    mm = benchmark("mmstar", copies["mmstar"])
    assert [s.meta["group"] for s in mm] == ["object counting", "recognition", "localization"]
    hr = benchmark("hrbench4k", copies["hrbench4k"])
    assert hr[1].meta["options"] == {"A": "red", "B": "blue", "C": "green"}  # D is None in row 1: left out
    assert "D." not in hr[1].question and hr[1].meta["group"] == "cycle1"
    tv = benchmark("textvqa", copies["textvqa"])
    assert tv[0].answers == ("sony",) * 4 + ("Sony TV",) * 3 + ("lg",) * 3
    assert benchmark("textvqa", copies["textvqa"], split="test")[0].answers == ()
    rc = benchmark("refcoco", copies["refcoco"], split="val")[0]
    # pixel box (x, y, x+w, y+h); lmms-eval's 0-1 box, stored as float32 as its Dataset.map does
    assert rc.boxes == ((2.0, 3.0, 12.0, 11.0),)
    assert rc.meta["bbox"] == [0.05000000074505806, 0.10000000149011612, 0.30000001192092896, 0.36666667461395264]
    assert benchmark("countbench", copies["countbench"])[2].answer == "4"


def test_limit_is_nested_subset(copies):
    small = benchmark("refcoco", copies["refcoco"], split="val", limit=2, seed=1)
    big = benchmark("refcoco", copies["refcoco"], split="val", limit=3, seed=1)
    assert len(small) == 2 and {s.id for s in small} <= {s.id for s in big}


def test_styles(copies):
    bare = benchmark("pope", copies["pope"], style="bare")[0]
    assert bare.question == "Is there a snowboard in the image?"
    vicrop = benchmark("countbench", copies["countbench"], style="vicrop")[0]
    assert vicrop.question == "How many dogs are there?"  # the template is the model side: apply_style
    with pytest.raises(InputError, match="unknown prompt style"):
        benchmark("pope", copies["pope"], style="llava")


@pytest.mark.parametrize("call, match", [
    (lambda c, t: benchmark("gqa", c["pope"]), "known benchmarks: vstar, realworldqa"),
    (lambda c, t: benchmark("mmstar", c["pope"]), "holds pope's schema"),
    (lambda c, t: benchmark("realworldqa", c["pope"]), "holds pope's schema"),  # subset of POPE's columns
    (lambda c, t: benchmark("vstar", c["hrbench4k"]), "holds hrbench4k's schema"),
    (lambda c, t: benchmark("refcoco", c["refcoco"]), "one lmms-eval task per split"),
    (lambda c, t: benchmark("refcoco", c["refcoco"], split="testB"), "no split 'testB'; it has"),
    (lambda c, t: benchmark("textvqa", c["textvqa"], split="dev"), "no split 'dev'"),
    (lambda c, t: benchmark("pope", t / "missing"), "does not exist; download it"),
    (lambda c, t: benchmark("pope", _empty(t)), "holds no data files"),
    (lambda c, t: benchmark("mmstar", _drop(t, "l2_category")), r"lacks column\(s\) \['l2_category'\]"),
    (lambda c, t: benchmark("refcoco", c["refcoco"], split="val", box="pixels"), "unknown box convention"),
    (lambda c, t: find_copy("pope", t), "hf download --repo-type dataset lmms-lab-encoder/POPE"),
])
def test_errors(copies, tmp_path, call, match):
    with pytest.raises(InterpError, match=match):
        call(copies, tmp_path)


def _empty(tmp):
    (tmp / "empty").mkdir()
    (tmp / "empty" / "README.md").write_text("# nothing\n")
    return tmp / "empty"


def _drop(tmp, column):
    splits, feats, kw = F.SCHEMAS["mmstar"](2, 0)
    rows = [{k: v for k, v in r.items() if k != column} for r in splits["val"]]
    del feats[column]
    return F.write_parquet_copy(tmp / "mm", {"val": rows}, features=feats, **kw)


def test_find_copy(copies, tmp_path):
    F.write("pope", tmp_path / "POPE")  # the hub repository's name
    assert find_copy("pope", tmp_path) == tmp_path / "POPE"
    assert find_copy("vstar", copies["vstar"].parent) == copies["vstar"]
    assert len(BENCHMARKS) == 11


def test_apply_style():
    from conftest import zoo

    llava, qwen = zoo("llava"), zoo("qwen2_5_vl")
    view = apply_style(llava, "vicrop")
    assert view.adapter.prompt(view.processor, 1, "is it red ?") == \
        "<image>\nUSER: is it red ? Answer the question using a single word or phrase.\nASSISTANT:"
    ids = [view.prepare(images=[F_image()], questions=["is it red ?"]).input_ids[0].tolist() for view in (view, llava)]
    image = llava.image_token_id
    assert ids[0][0] == image and ids[1][0] != image  # ViCrop's prompt starts with the image, the chat template not
    assert llava.processor.chat_template is not None and apply_style(llava, "lmms-eval") is llava  # untouched
    big = apply_style(qwen, "qwen2.5-vl").processor.image_processor.size
    assert (big.shortest_edge, big.longest_edge) == (1280 * 28 * 28, 16384 * 28 * 28)
    assert qwen.processor.image_processor.size.shortest_edge != 1280 * 28 * 28
    with pytest.raises(InputError, match="is for"):
        apply_style(qwen, "vicrop")


def F_image():
    import io

    from PIL import Image

    return Image.open(io.BytesIO(F.png(0))).convert("RGB")


def test_same_folder_name_other_rows(tmp_path):
    # datasets keys its cache of a local folder by the folder's name: interp's key adds path and file state
    F.write("pope", tmp_path / "a" / "POPE", n=2)
    F.write("pope", tmp_path / "b" / "POPE", n=5)
    assert [len(benchmark("pope", tmp_path / d / "POPE")) for d in "ab"] == [2, 5]
    F.write("pope", tmp_path / "a" / "POPE", n=3, seed=1)  # rewritten in place
    assert len(benchmark("pope", tmp_path / "a" / "POPE")) == 3
