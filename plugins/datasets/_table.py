"""Image-caption tables (a CSV of the user's own data, a Hugging Face ``datasets`` dataset): rows of
(image, caption[, split]) grouped into images with several captions, and split either by a column
or by a seeded split of the images whose sizes are options.  Shared by :mod:`.captions` and
:mod:`.hf`; problems raise :class:`vlcore.core.errors.DataError` naming the file and row."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Iterable

import numpy as np

from vlcore.core.config import INT64_MAX, SEED, ranged
from vlcore.core.errors import ConfigError, DataError, suggest

#: split names a column may use -> vlcore's
SPLIT_NAMES = {"train": "train", "training": "train", "restval": "train", "dev": "dev", "val": "dev",
               "valid": "dev", "validation": "dev", "test": "test", "testing": "test"}
SPLITS = ("train", "dev", "test")


@dataclass(frozen=True)
class TableConfig:
    """The options every image-caption table has (the Config of ``captions`` and ``hf`` extends it).
    Numbers are checked when the options are read (``--dataset-option``), like the flags."""

    #: the data folder (``--data DIR``)
    root: str | None = None
    #: at most this many images per split (the first ones)
    limit: int | None = ranged(None, 1)
    #: column of the image (a file path, relative to the folder or its images/, or image data)
    image_column: str = "image"
    #: column of the caption (a string, or a list of strings: several captions of one image)
    caption_column: str = "caption"
    #: column naming each row's split (train, dev/val/validation, test); when absent, a seeded split
    split_column: str = "split"
    #: seeded split: dev images, as a fraction of all images (< 1) or a count (>= 1)
    dev: float = ranged(0.1, 0, INT64_MAX)
    #: seeded split: test images, as a fraction (< 1) or a count (>= 1); 0: no test split
    test: float = ranged(0.1, 0, INT64_MAX)
    #: seed of the seeded split
    seed: int = ranged(0, SEED.lo, SEED.hi)
    #: the terms of the data, recorded in every artifact made from it (and in an exported set's card)
    license: str | None = None

    def __post_init__(self):
        for what in ("dev", "test"):
            v = getattr(self, what)
            if isinstance(v, (int, float)) and v >= 1 and not float(v).is_integer():
                raise ConfigError(f"Dataset option '{what}': {v:g} is neither a fraction (< 1) nor a count of "
                                  f"images (a whole number >= 1); give e.g. {what}=0.1 or {what}={int(v)}.")


@dataclass
class Image:
    """One image of a table: its key (a path or a row's image), captions, split and first row."""

    key: Any
    where: str
    captions: list[str] = field(default_factory=list)
    split: str | None = None
    rows: list[int] = field(default_factory=list)


def split_name(value: Any, where: str, dataset: str) -> str:
    name = SPLIT_NAMES.get(str(value).strip().lower())
    if name is None:
        raise DataError(f"Dataset '{dataset}': {where}: split {value!r} is not one of train, dev (val, validation) "
                        f"or test. Fix the split column, or drop it for a seeded split.")
    return name


def captions_of(value: Any, where: str, dataset: str) -> list[str]:
    """The caption(s) of one row: a string or a list of strings, whitespace normalised, none empty."""
    values = value if isinstance(value, (list, tuple)) else [value]
    out = []
    for v in values:
        if not isinstance(v, str):
            raise DataError(f"Dataset '{dataset}': {where}: the caption is {type(v).__name__} {v!r}, not text.")
        text = " ".join(v.split())
        if not text:
            raise DataError(f"Dataset '{dataset}': {where}: the caption is empty. Fix or remove the row.")
        out.append(text)
    if not out:
        raise DataError(f"Dataset '{dataset}': {where}: no caption. Fix or remove the row.")
    return out


def group(rows: Iterable[tuple[Any, Any, Any, str, int]], dataset: str) -> list[Image]:
    """Rows ``(image key, caption value, split value or None, where, row index)`` -> images in order
    of first appearance, each with all its captions; an image in two splits is an error."""
    images: dict[Any, Image] = {}
    for key, caption, split, where, index in rows:
        if key is None or (isinstance(key, str) and not key.strip()):
            raise DataError(f"Dataset '{dataset}': {where}: the image is empty. Fix or remove the row.")
        img = images.get(key)
        if img is None:
            img = images[key] = Image(key, where)
        img.captions += captions_of(caption, where, dataset)
        img.rows.append(index)
        if split is not None:
            s = split_name(split, where, dataset)
            if img.split is not None and img.split != s:
                raise DataError(f"Dataset '{dataset}': {where}: image {key!r} is in split '{s}' here but in "
                                f"'{img.split}' at {img.where}. An image belongs to one split.")
            img.split = s
    if not images:
        raise DataError(f"Dataset '{dataset}': the table has no rows.")
    return list(images.values())


def sizes(n: int, dev: float, test: float, dataset: str) -> tuple[int, int]:
    """(dev images, test images) of a seeded split of ``n`` images."""
    def count(v: float, what: str) -> int:
        if v < 0:
            raise DataError(f"Dataset '{dataset}': option {what}={v} must be >= 0 (a fraction < 1 or a count).")
        return int(v) if v >= 1 else (max(1, round(v * n)) if v > 0 else 0)

    n_dev, n_test = count(dev, "dev"), count(test, "test")
    if n_dev + n_test >= n:
        raise DataError(f"Dataset '{dataset}': a seeded split of {n} images into dev={n_dev} and test={n_test} "
                        f"leaves no training image. Lower --dataset-option dev=... / test=..., or add a split "
                        f"column.")
    return n_dev, n_test


def assign(images: list[Image], cfg: TableConfig, dataset: str, has_column: bool) -> dict[str, list[Image]]:
    """The images of each split: by the split column when the table has one, else a seeded split
    (``cfg.dev``/``cfg.test`` images drawn with ``cfg.seed``; the rest is train)."""
    if has_column:
        missing = [im for im in images if im.split is None]
        if missing:
            raise DataError(f"Dataset '{dataset}': {missing[0].where}: image {missing[0].key!r} has no split "
                            f"although the table has a '{cfg.split_column}' column.")
        out = {s: [im for im in images if im.split == s] for s in SPLITS}
        return {s: v for s, v in out.items() if v}
    n_dev, n_test = sizes(len(images), cfg.dev, cfg.test, dataset)
    order = np.random.default_rng(cfg.seed).permutation(len(images))
    split_of = {int(i): "dev" for i in order[:n_dev]}
    split_of.update({int(i): "test" for i in order[n_dev:n_dev + n_test]})
    out = {s: [im for i, im in enumerate(images) if split_of.get(i, "train") == s] for s in SPLITS}
    return {s: v for s, v in out.items() if v}


def check_columns(found: Iterable[str], cfg: TableConfig, where: str, dataset: str) -> bool:
    """Refuse a table without the image or caption column (naming the columns it has); return
    whether it has the split column."""
    found = list(found)
    for what, col in (("image", cfg.image_column), ("caption", cfg.caption_column)):
        if col not in found:
            raise DataError(f"Dataset '{dataset}': {where} has no {what} column '{col}'.{suggest(col, found)} "
                            f"Columns: {', '.join(map(str, found)) or '(none)'}. Name it with "
                            f"--dataset-option {what}_column=NAME.")
    return cfg.split_column in found
