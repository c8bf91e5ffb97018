"""``hf``: any image-caption dataset of the Hugging Face ``datasets`` library: a local
``save_to_disk`` folder or parquet files (offline), or a hub name (online)."""
from __future__ import annotations

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from vlcore.artifacts.io import cache_dir, fingerprint
from vlcore.core.errors import DataError
from vlcore.data.dataset import Dataset, Split

from ._files import time_stamp
from ._table import SPLIT_NAMES, TableConfig, assign, check_columns, group
from .layout import files_named, parquet_files
from vlcore.artifacts.hub import hub_offline, hub_reachable, import_datasets


def _datasets():
    return import_datasets("Dataset 'hf'")


def _parquet_files(path: Path) -> dict[str, list[str]]:
    """Parquet files by split: named after it (``train-00000-of-00001.parquet``, ``data/test*``),
    else all of them are the train split."""
    files = [path] if path.is_file() else sorted(path.rglob("*.parquet"))
    by_split: dict[str, list[str]] = {}
    for f in files:
        word = f.stem.split("-")[0].split("_")[0].lower()
        by_split.setdefault(word if word in SPLIT_NAMES else "train", []).append(str(f))
    return by_split


def open_source(source: tuple) -> dict[str, Any]:
    """The ``datasets.Dataset`` of each split key of a source: ``("disk", folder)``, ``("parquet",
    {split: files})`` or ``("hub", name, revision)``."""
    datasets = _datasets()
    kind = source[0]
    if kind == "disk":
        obj = datasets.load_from_disk(source[1])
    elif kind == "parquet":
        obj = datasets.load_dataset("parquet", data_files={k: list(v) for k, v in source[1]},
                                    cache_dir=str(cache_dir() / "hf-datasets"))
    else:
        obj = datasets.load_dataset(source[1], revision=source[2], cache_dir=str(cache_dir() / "hf-datasets"))
    return dict(obj) if isinstance(obj, datasets.DatasetDict) else {"train": obj}


class HFImageLoader:
    """``loader(i)``: the image of row ``rows[i]`` of a split of a ``datasets`` source, as RGB
    (picklable: the dataset is opened again, from its files or the local cache, where it is used)."""

    def __init__(self, source: tuple, key: str, column: str, rows: list[int], root: str | None):
        self.source, self.key, self.column, self.rows, self.root = source, key, column, rows, root
        self._ds = None

    def __getstate__(self):
        return {**self.__dict__, "_ds": None}

    def __call__(self, i: int):
        from PIL import Image

        if self._ds is None:
            self._ds = open_source(self.source)[self.key]
        value = self._ds[int(self.rows[i])][self.column]
        try:
            if isinstance(value, dict):  # an undecoded Image feature
                value = value.get("bytes") or value.get("path")
            if isinstance(value, bytes):
                value = Image.open(io.BytesIO(value))
            elif isinstance(value, str):
                value = Image.open(value if os.path.isabs(value) or not self.root else os.path.join(self.root, value))
            return value.convert("RGB")
        except Exception as exc:
            raise DataError(f"Dataset 'hf': row {self.rows[i]} of split '{self.key}': cannot read its image "
                            f"({type(exc).__name__}: {exc}).") from None

    def __len__(self) -> int:
        return len(self.rows)


class HFDataset(Dataset):
    """A Hugging Face `datasets` image-caption dataset: a save_to_disk folder or parquet files (--data), or a hub name.

    Its splits (train, validation -> dev, test) are used as they are; a dataset with one split is
    split by its ``split`` column, else by a seeded split of the images (options ``dev``, ``test``,
    ``seed``).  Rows sharing ``id_column`` are one image with several captions; a list-valued caption
    column gives several captions per row.  Needs ``pip install 'vlcore[hf]'``.
    """

    name = "hf"

    @dataclass(frozen=True)
    class Config(TableConfig):
        #: a dataset on the Hugging Face hub, e.g. nlphuji/flickr30k (needs the internet once; or --data DIR)
        name: str | None = None
        #: revision (branch, tag or commit) of the hub dataset
        revision: str | None = None
        #: column of an image id shared by the rows of one image (none: each row is an image)
        id_column: str | None = None

    layout_hint = "a datasets save_to_disk folder (dataset_dict.json or state.json) or parquet files"

    @classmethod
    def detect_layout(cls, root) -> str | None:
        """A ``save_to_disk`` folder or parquet files at ``root`` (:mod:`.layout`), or None."""
        saved = files_named(root, ("dataset_dict.json", "state.json")) if root.is_dir() else []
        if saved:
            return f"{saved[0]}: a datasets save_to_disk folder"
        found = parquet_files(root)
        if len(found) == 1:
            return f"1 parquet file ({found[0].name})"
        return f"{len(found)} parquet files ({found[0].name}, ...)" if found else None

    def __init__(self, config=None):
        super().__init__(config)
        self._splits: dict[str, Split] | None = None

    def source(self) -> tuple:
        cfg = self.config
        if cfg.root:
            path = Path(os.path.expanduser(cfg.root)).resolve()
            if (path / "dataset_dict.json").exists() or (path / "state.json").exists():
                return ("disk", str(path))
            if (path.is_file() and path.suffix == ".parquet") or (path.is_dir() and any(path.rglob("*.parquet"))):
                return ("parquet", tuple((k, tuple(v)) for k, v in sorted(_parquet_files(path).items())))
            raise DataError(f"Dataset 'hf': {path} is neither a `save_to_disk` folder (dataset_dict.json or "
                            f"state.json) nor parquet files. Pass --data DIR of one, or --dataset-option name=HUB_NAME.")
        if not cfg.name:
            raise DataError("Dataset 'hf' needs --data DIR (a datasets.save_to_disk folder or parquet files) or "
                            "--dataset-option name=HUB_NAME (e.g. nlphuji/flickr30k, online).")

        if hub_offline() or not hub_reachable():
            fix = (f"Once online, save it with datasets.load_dataset({cfg.name!r}).save_to_disk(DIR) and pass "
                   f"--data DIR.")
            try:  # the local datasets cache may hold it
                open_source(("hub", cfg.name, cfg.revision))
            except Exception:
                raise DataError(f"Dataset 'hf': the hub dataset '{cfg.name}' cannot be downloaded here (the "
                                f"Hugging Face hub is {'switched off' if hub_offline() else 'unreachable'}) and "
                                f"is not in the local cache. {fix}") from None
        return ("hub", cfg.name, cfg.revision)

    def _load(self) -> dict[str, Split]:
        if self._splits is not None:
            return self._splits
        source = self.source()
        parts = open_source(source)
        named = {SPLIT_NAMES.get(k.lower()): k for k in parts if SPLIT_NAMES.get(k.lower())}
        self._splits = {}
        if len(parts) > 1 and "train" in named:
            for split, key in named.items():
                self._splits.update(self._table(source, key, parts[key], split_by_column=False, only=split))
        else:
            key = named.get("train") or next(iter(parts))
            self._splits.update(self._table(source, key, parts[key], split_by_column=None))
        return self._splits

    def _table(self, source: tuple, key: str, ds, split_by_column: bool | None, only: str | None = None):
        cfg = self.config
        where = f"split '{key}' of {source[1]}"
        has_split = check_columns(ds.column_names, cfg, where, self.name)
        if cfg.id_column is not None and cfg.id_column not in ds.column_names:
            raise DataError(f"Dataset 'hf': {where} has no id column '{cfg.id_column}'. Columns: "
                            f"{', '.join(ds.column_names)}.")
        use_column = has_split if split_by_column is None else split_by_column
        caps = list(ds[cfg.caption_column])
        ids = list(ds[cfg.id_column]) if cfg.id_column else range(len(caps))
        splits = list(ds[cfg.split_column]) if use_column else [None] * len(caps)
        images = group(((k, c, s, f"{where}, row {i}", i) for i, (k, c, s) in enumerate(zip(ids, caps, splits))),
                       self.name)
        if only is not None:
            groups = {only: images}
        else:
            groups = assign(images, cfg, self.name, use_column)
        local = time_stamp(str(source[1])) if source[0] != "hub" else None
        content = fingerprint(source, getattr(ds, "_fingerprint", None), local, cfg.image_column, cfg.caption_column,
                              cfg.id_column)
        out = {}
        for split, members in groups.items():
            rows = [im.rows[0] for im in members]
            out[split] = Split(self.name, split, [f"{key}/{r}" for r in rows], [im.captions for im in members],
                               HFImageLoader(source, key, cfg.image_column, rows, cfg.root),
                               f"hf:{content}|{'column' if use_column else f'seeded:{cfg.seed}:{cfg.dev}:{cfg.test}'}"
                               f"|{split}")
        return out

    def splits(self) -> list[str]:
        return list(self._load())

    def load_split(self, split: str) -> Split:
        return self._load()[split]

    def data_license(self) -> str:
        if self.config.license:
            return self.config.license
        try:
            first = next(iter(open_source(self.source()).values()))
            return first.info.license or self.license
        except Exception:
            return self.license
