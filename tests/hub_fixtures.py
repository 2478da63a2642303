"""Tiny local copies of the papers' benchmarks in their real hub schemas and layouts (for tests).

    root = write("pope", tmp_path / "POPE")        # README configs + data/test-00000-of-00001.parquet

Images are random PNGs stored as HF Image structs {bytes, path} whose path names an absent COCO file, or
(HR-Bench) as base64 text; MMStar and HR-Bench are root files mapped by README configs; refcoco+ is a
`DatasetDict.save_to_disk` folder. Row contents mirror the examples in ../shared/BENCHMARKS.md.
"""

from __future__ import annotations

import base64
import io

import datasets
import numpy as np
from PIL import Image

from interp.data.hub import write_parquet_copy

V = datasets.Value
SIZES = [(40, 30), (32, 48), (36, 36), (50, 20)]

VSTAR_TEXT = ("What is the material of the glove?\n(A) rubber\n(B) cotton\n(C) kevlar\n(D) leather\n"
              "Answer with the option's letter from the given choices directly.")
RWQA_MC = ("Which direction is the car facing?\nA. Left\nB. Straight\nC. Right\n"
           "Please answer directly with only the letter of the correct option and nothing else.")
MMSTAR_Q = ("Which option describe the object relationship in the image correctly?\nOptions: A: The suitcase is on "
            "the book., B: The suitcase is beneath the cat., C: The suitcase is beneath the bed., D: The suitcase is "
            "beneath the book.")


def png(i: int, seed: int = 0) -> bytes:
    w, h = SIZES[i % len(SIZES)]
    arr = np.random.default_rng([seed, i]).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, "PNG")
    return buf.getvalue()


def cell(i: int, seed: int = 0) -> dict:
    return {"bytes": png(i, seed), "path": f"COCO_val2014_{i:012d}.jpg"}  # the path is never there


def _vstar(n, seed):
    rows = [{"image": cell(i, seed), "text": VSTAR_TEXT, "label": "ABCD"[i % 4], "question_id": str(i),
             "category": ("direct_attributes", "relative_position")[i % 2]} for i in range(n)]
    feats = datasets.Features({"image": datasets.Image(), "text": V("string"), "label": V("string"),
                               "question_id": V("string"), "category": V("string")})
    return {"test": rows}, feats, {}


def _realworldqa(n, seed):
    rows = [{"image": cell(i, seed), "question": RWQA_MC if i % 2 == 0 else
             "How many cars are there?\nPlease answer directly with a single word or number.",
             "answer": "C" if i % 2 == 0 else "2"} for i in range(n)]
    feats = datasets.Features({"image": datasets.Image(), "question": V("string"), "answer": V("string")})
    return {"test": rows}, feats, {"shards": 2}


def _mmstar(n, seed):
    l2 = ("object counting", "recognition", "localization")
    rows = [{"index": i, "question": MMSTAR_Q, "image": cell(i, seed), "answer": "ABCD"[i % 4],
             "category": "fine-grained perception", "l2_category": l2[i % 3],
             "meta_info": {"source": "SEEDBench_IMG", "split": "val", "image_path": f"images/{i}.jpg"}}
            for i in range(n)]
    feats = datasets.Features({"index": V("int64"), "question": V("string"), "image": datasets.Image(),
                               "answer": V("string"), "category": V("string"), "l2_category": V("string"),
                               "meta_info": {"source": V("string"), "split": V("string"), "image_path": V("string")}})
    return {"val": rows}, feats, {"files": {"val": "mmstar.parquet"}, "config": "val"}


def _textvqa(n, seed):
    def row(i, split):
        return {"image_id": f"img{i}", "question_id": 100 * ("train", "validation", "test").index(split) + i,
                "question": "what brand is the TV?", "question_tokens": ["what", "brand", "is", "the", "tv"],
                "image": cell(i, seed), "image_width": SIZES[i % 4][0], "image_height": SIZES[i % 4][1],
                "flickr_original_url": "", "flickr_300k_url": "",
                "answers": None if split == "test" else ["sony"] * 4 + ["Sony TV"] * 3 + ["lg"] * 3,
                "image_classes": ["television"], "set_name": split, "ocr_tokens": ["SONY", "tv"]}

    feats = datasets.Features({
        "image_id": V("string"), "question_id": V("int32"), "question": V("string"),
        "question_tokens": datasets.List(V("string")), "image": datasets.Image(), "image_width": V("int32"),
        "image_height": V("int32"), "flickr_original_url": V("string"), "flickr_300k_url": V("string"),
        "answers": datasets.List(V("string")), "image_classes": datasets.List(V("string")), "set_name": V("string"),
        "ocr_tokens": datasets.List(V("string"))})
    return {s: [row(i, s) for i in range(n)] for s in ("train", "validation", "test")}, feats, {}


def _countbench(n, seed):
    rows = [{"image": cell(i, seed), "text": "three dogs on a lawn", "question": "How many dogs are there? ",
             "number": i + 2} for i in range(n)]
    feats = datasets.Features({"image": datasets.Image(), "text": V("string"), "question": V("string"),
                               "number": V("int32")})
    return {"test": rows}, feats, {}


def _hrbench(n, seed):
    def rows(split):
        return [{"index": i, "question": "What is the colour of the umbrella?", "answer": "ABCD"[i % 4],
                 "category": ("single", "cross")[i % 2], "A": "red", "B": "blue", "C": "green",
                 "D": None if i == 1 else "5", "cycle_category": f"cycle{i % 2}",
                 "image": base64.b64encode(png(i, seed)).decode()} for i in range(n)]

    feats = datasets.Features({"index": V("int64"), "question": V("string"), "answer": V("string"),
                               "category": V("string"), **{c: V("string") for c in "ABCD"},
                               "cycle_category": V("string"), "image": V("string")})
    return ({"hrbench_4k": rows("4k"), "hrbench_8k": rows("8k")}, feats,
            {"files": {"hrbench_4k": "hr_bench_4k.parquet", "hrbench_8k": "hr_bench_8k.parquet"},
             "config": "hrbench_version_split"})


def _pope(n, seed):
    cats = ("adversarial", "popular", "random")
    rows = [{"id": str(i), "question_id": str(i % 2 + 1), "question": "Is there a snowboard in the image?",
             "answer": ("yes", "no")[i % 2], "image_source": f"COCO_val2014_{i:012d}", "image": cell(i, seed),
             "category": cats[i % 3]} for i in range(n)]
    feats = datasets.Features({"id": V("string"), "question_id": V("string"), "question": V("string"),
                               "answer": V("string"), "image_source": V("string"), "image": datasets.Image(),
                               "category": V("string")})
    return {"test": rows}, feats, {}


def _rec(n, seed, splits=("val", "testA")):
    def rows(split):
        return [{"question_id": f"{split}{i}", "image": cell(i, seed), "question": "Please carefully observe the area",
                 "answer": ["man on the left", "guy in red"][: 1 + i % 2], "segmentation": [1.0, 2.0, 3.0],
                 "bbox": [2.0, 3.0, 10.0 + i, 8.0], "iscrowd": 0, "file_name": f"COCO_train2014_{i:012d}.jpg"}
                for i in range(n)]

    feats = datasets.Features({"question_id": V("string"), "image": datasets.Image(), "question": V("string"),
                               "answer": datasets.List(V("string")), "segmentation": datasets.List(V("float32")),
                               "bbox": datasets.List(V("float32")), "iscrowd": V("int8"), "file_name": V("string")})
    return {s: rows(s) for s in splits}, feats, {"shards": 2}


SCHEMAS = {"vstar": _vstar, "realworldqa": _realworldqa, "mmstar": _mmstar, "textvqa": _textvqa,
           "countbench": _countbench, "hrbench4k": _hrbench, "hrbench8k": _hrbench, "pope": _pope,
           "refcoco": _rec, "refcoco+": _rec, "refcocog": lambda n, seed: _rec(n, seed, ("val", "test"))}


def write(name: str, root, n: int = 3, seed: int = 0):
    """Write benchmark `name`'s fixture copy (n rows per split) at `root`; returns root."""
    splits, feats, kw = SCHEMAS[name](n, seed)
    if name == "refcoco+":  # the save_to_disk layout
        datasets.DatasetDict({s: datasets.Dataset.from_list(r, features=feats) for s, r in splits.items()}
                             ).save_to_disk(str(root))
        return root
    return write_parquet_copy(root, splits, features=feats, **kw)
