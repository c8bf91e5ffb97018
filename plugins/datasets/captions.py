"""``captions``: the user's own data, a folder of images with a CSV, TSV or JSON Lines file of
(image file, caption) rows."""
from __future__ import annotations

import csv
import io
import json
import os
from dataclasses import dataclass

from vlcore.core.errors import DataError
from vlcore.data.dataset import Dataset, Split

from ._files import ImageFileLoader, _DirListing, decode_text, missing_message, need_root, read_bytes, stamp
from ._table import TableConfig, assign, check_columns, group
from .layout import files_named

#: the caption files looked for in the folder when none is named, in this order
DEFAULT_FILES = ("captions.csv", "captions.tsv", "captions.jsonl", "captions.json")


class Captions(Dataset):
    """Your own images and captions: a folder of images plus captions.csv, .tsv or .jsonl rows.

    Each row names an image file (relative to the folder, or to its ``images/``) and one caption;
    several rows may name the same image.  Splits come from a ``split`` column (train, dev/val,
    test) or, without one, from a seeded split of the images whose sizes (``dev``, ``test``) and
    seed are options, recorded in every artifact made from it.  Errors name the file and row.
    """

    name = "captions"

    @dataclass(frozen=True)
    class Config(TableConfig):
        #: the caption file (relative to the folder, or absolute); default: captions.csv, .tsv, .jsonl or
        #: .json in the folder
        file: str | None = None

    LAYOUT = ("your data folder: images (in it or in its images/) and captions.csv with the columns image and "
              "caption (or .tsv, or .jsonl with one {\"image\": ..., \"caption\": ...} object a line)")

    layout_hint = "captions.csv, .tsv or .jsonl beside the images (or their images/ folder)"

    @classmethod
    def detect_layout(cls, root) -> str | None:
        """The caption files of the folder ``root`` (:mod:`.layout`), or None."""
        found = files_named(root, DEFAULT_FILES) if root.is_dir() else []
        return ", ".join(found) or None

    def __init__(self, config=None):
        super().__init__(config)
        self._splits: dict[str, Split] | None = None

    # ---------------------------------------------------------------- files
    def caption_file(self) -> str:
        root = need_root(self.name, self.config.root, self.LAYOUT)
        if self.config.file:
            path = os.path.join(root, os.path.expanduser(self.config.file))
            if not os.path.isfile(path):
                raise DataError(f"Dataset '{self.name}': caption file {path} not found (option file=).")
            return path
        found = [os.path.join(root, f) for f in DEFAULT_FILES if os.path.isfile(os.path.join(root, f))]
        if not found:
            raise DataError(f"Dataset '{self.name}': no caption file in {root}: expected one of "
                            f"{', '.join(DEFAULT_FILES)}, or name yours with --dataset-option file=NAME.")
        if len(found) > 1:
            raise DataError(f"Dataset '{self.name}': {root} holds several caption files "
                            f"({', '.join(map(os.path.basename, found))}); choose one with --dataset-option file=NAME.")
        return found[0]

    def _rows(self, path: str):
        """(columns, rows as (record, where, index)) of the caption file."""
        base = os.path.basename(path)
        ext = os.path.splitext(path)[1].lower()
        # not UTF-8: the lines are read with replacement characters and a warning (the rule of every caption file)
        text = decode_text(read_bytes(path, self.name, "caption file"), path, self.name, "caption file", bom=True)
        try:
            with io.StringIO(text, newline="") as f:
                if ext in (".csv", ".tsv", ".txt"):
                    reader = csv.DictReader(f, delimiter="\t" if ext == ".tsv" else ",")
                    columns = list(reader.fieldnames or [])
                    rows = [(r, f"{base} line {reader.line_num}", i) for i, r in enumerate(reader)]
                    return columns, rows
                if ext == ".json":
                    data = json.load(f)
                    if not isinstance(data, list):
                        raise DataError(f"Dataset '{self.name}': {path} must hold a JSON list of objects "
                                        f"(or use .jsonl, one object a line).")
                    rows = [(r, f"{base} entry {i}", i) for i, r in enumerate(data)]
                else:
                    rows = []
                    for n, line in enumerate(f, 1):
                        if line.strip():
                            try:
                                rows.append((json.loads(line), f"{base} line {n}", len(rows)))
                            except json.JSONDecodeError as exc:
                                raise DataError(f"Dataset '{self.name}': {base} line {n} is not valid JSON "
                                                f"({exc.msg}); expected one object a line, e.g. "
                                                f"{{\"image\": \"a.jpg\", \"caption\": \"a dog\"}}.") from None
        except json.JSONDecodeError as exc:
            raise DataError(f"Dataset '{self.name}': {path} is not valid JSON (line {exc.lineno}: {exc.msg}).") from None
        except csv.Error as exc:
            raise DataError(f"Dataset '{self.name}': cannot read {path}: {exc}. Fix the line it names.") from None
        for r, where, _ in rows:
            if not isinstance(r, dict):
                raise DataError(f"Dataset '{self.name}': {where} is {type(r).__name__}, not an object with the "
                                f"image and caption.")
        columns = list(dict.fromkeys(k for r, _, _ in rows for k in r))
        return columns, rows

    def _image_path(self, root: str, value: str, listing: _DirListing) -> str:
        value = os.path.expanduser(str(value).strip())
        if os.path.isabs(value):
            return value
        here = os.path.join(root, value)
        if listing.exists(here):
            return here
        sub = os.path.join(root, "images", value)
        return sub if listing.exists(sub) else here

    # --------------------------------------------------------------- splits
    def _load(self) -> dict[str, Split]:
        if self._splits is not None:
            return self._splits
        cfg, path = self.config, self.caption_file()
        root = need_root(self.name, cfg.root, self.LAYOUT)
        columns, rows = self._rows(path)
        has_split = check_columns(columns, cfg, path, self.name)
        for r, where, _ in rows:
            for col in (cfg.image_column, cfg.caption_column):
                if r.get(col) in (None, ""):
                    raise DataError(f"Dataset '{self.name}': {where} of {path}: no {col.replace('_', ' ')} "
                                    f"(column '{col}' is empty). Fix or remove the row.")
        listing = _DirListing()
        images = group(((self._image_path(root, r[cfg.image_column], listing), r[cfg.caption_column],
                         r.get(cfg.split_column) if has_split else None, where, i) for r, where, i in rows), self.name)
        missing = [im for im in images if not listing.exists(im.key)]
        if missing:
            shown = ", ".join(f"{im.where}: {im.key}" for im in missing[:5])
            raise DataError(f"Dataset '{self.name}': {missing_message([m.key for m in missing], len(images))} "
                            f"(listed in {path}; first: {shown}). Image paths are relative to {root} or "
                            f"{os.path.join(root, 'images')}.")
        source = f"{self.name}:{stamp(path)}|{cfg.image_column},{cfg.caption_column},{cfg.split_column}|" \
                 f"{'column' if has_split else f'seeded:{cfg.seed}:{cfg.dev}:{cfg.test}'}"
        self._splits = {}
        for split, members in assign(images, cfg, self.name, has_split).items():
            paths = [im.key for im in members]
            ids = [os.path.relpath(p, root) for p in paths]
            self._splits[split] = Split(self.name, split, ids, [im.captions for im in members],
                                        ImageFileLoader(self.name, paths), f"{source}|{split}")
        return self._splits

    def splits(self) -> list[str]:
        return list(self._load())

    def load_split(self, split: str) -> Split:
        return self._load()[split]
