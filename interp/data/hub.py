"""Local copies of hub datasets, read with HF `datasets` exactly as the hub lays them out.

Layouts (the first two as `hf download --repo-type dataset <id> --local-dir DIR` leaves them, the third as
`Dataset(Dict).save_to_disk` writes it):

    DIR/README.md (YAML `configs`) + DIR/data/<split>-00000-of-00002.parquet     lmms-lab-encoder/*, CountBenchQA
    DIR/README.md (YAML `configs`) + DIR/mmstar.parquet, DIR/hr_bench_4k.parquet   Lin-Chen/MMStar, DreamMr/HR-Bench
    DIR/dataset_dict.json (+ one folder per split), or DIR/state.json               Dataset(Dict).save_to_disk

`open_split` returns the split as a `datasets.Dataset` whose image columns are left undecoded ({bytes, path}
dicts), so only the rows a caller picks are ever decoded. `write_parquet_copy` writes the first two layouts
(tests, and the toy benchmark copies of `analyses.toy_benchmarks`).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from interp.errors import InputError

DATA_SUFFIXES = (".parquet", ".arrow", ".jsonl", ".json", ".csv", ".tsv")


def columns(root) -> list[str]:
    """Column names of the first data file under `root` (no data read)."""
    root = Path(root)
    if _saved(root):
        return list(_load_saved(root).column_names)
    files = data_files(root)
    first = next((f for f in files if f.suffix == ".parquet"), None)
    if first is None:
        return []
    import pyarrow.parquet as pq

    return list(pq.read_schema(first).names)


def data_files(root: Path) -> list[Path]:
    """The data files under `root`, sorted (README.md and dot-folders such as .cache ignored)."""
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        out += [Path(dirpath) / f for f in sorted(filenames) if f.endswith(DATA_SUFFIXES)]
    return out


def check_dir(root, what: str) -> Path:
    """`root` as a Path; an error naming `what` if it is missing, not a folder or holds no data files."""
    root = Path(root)
    if not root.exists():
        raise InputError(f"{what}: directory {str(root)!r} does not exist; download it with "
                         "`hf download --repo-type dataset <hub id> --local-dir DIR` and pass DIR")
    if not root.is_dir():
        raise InputError(f"{what}: {str(root)!r} is a file; pass the folder of the local hub copy")
    if not _saved(root) and not data_files(root):
        raise InputError(f"{what}: directory {str(root)!r} holds no data files ({', '.join(DATA_SUFFIXES)}) and "
                         "no save_to_disk dataset; is the download incomplete (large files as git-lfs pointers)?")
    return root


def _saved(root: Path) -> bool:
    return (root / "dataset_dict.json").is_file() or (root / "state.json").is_file()


def _load_saved(root: Path):
    import datasets

    ds = datasets.load_from_disk(str(root))
    if isinstance(ds, datasets.DatasetDict):
        return ds[next(iter(ds))]
    return ds


def splits(root, config: str | None = None) -> list[str]:
    """The split names a local copy holds (README `configs`, the data/ file names, or save_to_disk)."""
    root = Path(root)
    if _saved(root):
        import datasets

        ds = datasets.load_from_disk(str(root))
        return list(ds) if isinstance(ds, datasets.DatasetDict) else [str(ds.split) if ds.split else "train"]
    return list(_builder(root, config).config.data_files)


def cache_dir(root: Path) -> str:
    """Where `datasets` keeps the Arrow copy of `root`: a folder per copy and file state. datasets' own key
    for a local folder is its base name and config only (datasets 5.2: two different "pope" folders share one
    cache and the second silently reads the first's rows), so the key here also hashes the folder's path and
    every data file's name, size and mtime."""
    import datasets

    h = hashlib.sha1(str(root.resolve()).encode())
    for f in [root / "README.md", *data_files(root)]:
        if f.is_file():
            st = f.stat()
            h.update(f"{f.relative_to(root)}:{st.st_size}:{st.st_mtime_ns}".encode())
    return os.path.join(datasets.config.HF_DATASETS_CACHE, "interp-hub", h.hexdigest()[:16])


def _builder(root: Path, config: str | None):
    import datasets

    try:
        return datasets.load_dataset_builder(str(root), config, cache_dir=cache_dir(root))
    except ValueError as e:  # an unknown config: datasets lists the ones there are
        if config is not None and "not found" in str(e):  # a copy without that README config
            return datasets.load_dataset_builder(str(root), cache_dir=cache_dir(root))
        raise InputError(f"{str(root)!r}: {e}") from None
    except FileNotFoundError as e:
        raise InputError(f"{str(root)!r} holds no dataset files datasets can read: {e}") from None


def open_split(root, split: str, config: str | None = None):
    """The split `split` of a local copy as a `datasets.Dataset`, image columns not decoded.

    The Arrow copy `datasets` builds from parquet goes under HF_DATASETS_CACHE (see `cache_dir`)."""
    import datasets

    root = Path(root)
    if _saved(root):
        ds = datasets.load_from_disk(str(root))
        if isinstance(ds, datasets.DatasetDict):
            ds = ds[split]
    else:
        builder = _builder(root, config)
        builder.download_and_prepare()
        ds = builder.as_dataset(split=split)
    for name, feature in ds.features.items():
        if isinstance(feature, datasets.Image):
            ds = ds.cast_column(name, datasets.Image(decode=False))
    return ds


# --- writing ---------------------------------------------------------------------------------------------

def write_parquet_copy(root, splits_rows: Mapping[str, Sequence[Mapping]], *, features=None,
                       files: Mapping[str, str] | None = None, config: str = "default", shards: int = 1) -> Path:
    """Write rows as a hub copy: parquet files + a README.md whose YAML `configs` maps them to splits.

    splits_rows: split → rows (dicts of column → value; images as PIL images or {bytes, path}).
    features: a `datasets.Features` (e.g. with `datasets.Image()` columns: stored as {bytes, path} structs).
    files: split → file name at the root (MMStar's "mmstar.parquet"); default
        `data/<split>-0000k-of-0000n.parquet` in `shards` pieces.
    """
    import datasets

    root = Path(root)
    root.mkdir(parents=True, exist_ok=True)
    entries = []
    for split, rows in splits_rows.items():
        ds = datasets.Dataset.from_list(list(rows), features=features)
        if files and split in files:
            ds.to_parquet(str(root / files[split]))
            entries.append((split, files[split]))
            continue
        (root / "data").mkdir(exist_ok=True)
        for k in range(shards):
            name = f"{split}-{k:05d}-of-{shards:05d}.parquet"
            ds.shard(shards, k, contiguous=True).to_parquet(str(root / "data" / name))
        entries.append((split, f"data/{split}-*"))
    yaml = "".join(f"  - split: {s}\n    path: {p}\n" for s, p in entries)
    (root / "README.md").write_text(f"---\nconfigs:\n- config_name: {config}\n  data_files:\n{yaml}---\n")
    return root
