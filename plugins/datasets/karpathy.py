"""Flickr30k and COCO with Karpathy's split files (``dataset_<name>.json``)."""
from __future__ import annotations

import json
import os
from dataclasses import dataclass

from vlcore.core.errors import DataError
from vlcore.data.dataset import Dataset, Split

from ._files import SHOW_MISSING, FolderConfig, ImageFileLoader, check_images, need_root, stamp
from .layout import files_named


class _KarpathyDataset(Dataset):
    """Shared reader of Karpathy's ``dataset_<name>.json`` split files."""

    default_eval_split = "dev"
    #: our split name -> Karpathy split names
    SPLITS = {"train": ("train",), "dev": ("val",), "test": ("test",)}
    JSON_NAME = ""
    DOWNLOAD_HINT = ("the Karpathy split files are in caption_datasets.zip from "
                     "https://cs.stanford.edu/people/karpathy/deepimagesent/")

    @dataclass(frozen=True)
    class Config(FolderConfig):
        #: the Karpathy split JSON (default: <root>/dataset_<name>.json, the dataset's name)
        annotations: str | None = None
        #: the image folder (default: found under <root>, as the dataset's help says)
        images: str | None = None

    @classmethod
    def detect_layout(cls, root) -> str | None:
        """Karpathy's split file of this dataset in the folder ``root`` (:mod:`.layout`), or None."""
        return cls.JSON_NAME if root.is_dir() and files_named(root, (cls.JSON_NAME,)) else None

    def __init__(self, config=None):
        super().__init__(config if config is not None else self.Config())
        self._images: list[dict] | None = None
        self._splits: dict[str, Split] = {}

    # ------------------------------------------------------------- paths
    def _layout(self) -> str:
        return f"the folder holding {self.JSON_NAME} and the {self.name} images"

    def _root(self) -> str | None:
        cfg = self.config
        if cfg.root is None and cfg.annotations is not None:
            return None
        return need_root(self.name, cfg.root, self._layout())

    def annotations_path(self) -> str:
        cfg = self.config
        if cfg.annotations is not None:
            return os.path.abspath(os.path.expanduser(cfg.annotations))
        return os.path.join(self._root(), self.JSON_NAME)

    def image_root(self) -> str:
        cfg = self.config
        if cfg.images is not None:
            path = os.path.abspath(os.path.expanduser(cfg.images))
        else:
            root = self._root() or os.path.dirname(self.annotations_path())
            path = self._default_image_root(root)
        if not os.path.isdir(path):
            raise DataError(f"Dataset '{self.name}': image folder {path} not found. Put the images "
                            f"there or pass images=DIR (e.g. --dataset-opt images=DIR).")
        return path

    def _default_image_root(self, root: str) -> str:
        return root

    def _image_path(self, image_root: str, entry: dict) -> str:
        return os.path.join(image_root, entry["filename"])

    def _karpathy_splits(self, split: str) -> tuple[str, ...]:
        return self.SPLITS[split]

    # ------------------------------------------------------------ parsing
    def splits(self) -> list[str]:
        # the distributed Karpathy files hold all three splits; the JSON is only read in load_split
        self.annotations_path()  # checks that a root or annotations path was given
        return list(self.SPLITS)

    def entries(self) -> list[dict]:
        """The parsed image entries: dicts with filename, filepath, split and captions (cached)."""
        if self._images is None:
            self._images = self._parse(self.annotations_path())
        return self._images

    def _parse(self, path: str) -> list[dict]:
        if not os.path.isfile(path):
            raise DataError(f"Dataset '{self.name}': annotation file {path} not found. Expected the "
                            f"Karpathy split file {self.JSON_NAME} ({self.DOWNLOAD_HINT}) in the data "
                            f"folder, or pass annotations=PATH.")
        try:
            with open(path, encoding="utf-8") as f:
                data = json.load(f)
        except json.JSONDecodeError as exc:
            raise DataError(f"Dataset '{self.name}': annotation file {path} is not valid JSON "
                            f"(line {exc.lineno}, column {exc.colno}: {exc.msg}). Expected the Karpathy "
                            f"split file {self.JSON_NAME}; re-download it ({self.DOWNLOAD_HINT}).") from None
        except UnicodeDecodeError as exc:
            raise DataError(f"Dataset '{self.name}': annotation file {path} is not valid UTF-8 (byte "
                            f"{exc.object[exc.start:exc.start + 1]!r} at offset {exc.start}), which JSON requires. "
                            f"Re-download it ({self.DOWNLOAD_HINT}) or convert it to UTF-8.") from None
        except OSError as exc:
            raise DataError(f"Dataset '{self.name}': cannot read annotation file {path}: {exc}.") from None
        fmt = ('{"images": [{"filename": ..., "split": "train"|"val"|"test"|"restval", '
               '"sentences": [{"raw": ...}, ...]}, ...]}')
        if not isinstance(data, dict) or not isinstance(data.get("images"), list):
            raise DataError(f"Dataset '{self.name}': annotation file {path} has no \"images\" list. "
                            f"Expected the Karpathy split format {fmt}.")
        out = []
        for n, img in enumerate(data["images"]):
            where = f"entry {n} of \"images\" in {path}"
            if not isinstance(img, dict) or not isinstance(img.get("filename"), str) or \
                    not isinstance(img.get("split"), str) or not isinstance(img.get("sentences"), list):
                raise DataError(f"Dataset '{self.name}': {where} is malformed: expected an object with "
                                f"\"filename\", \"split\" and \"sentences\" (format {fmt}).")
            caps = []
            for s in img["sentences"]:
                text = s.get("raw") if isinstance(s, dict) else None
                if not isinstance(text, str) and isinstance(s, dict) and isinstance(s.get("tokens"), list):
                    text = " ".join(map(str, s["tokens"]))
                if not isinstance(text, str):
                    raise DataError(f"Dataset '{self.name}': a sentence of {where} "
                                    f"({img['filename']}) has no \"raw\" text (format {fmt}).")
                text = " ".join(text.split())
                if text:
                    caps.append(text)
            out.append({"filename": img["filename"], "filepath": str(img.get("filepath") or ""),
                        "split": img["split"], "captions": caps})
        return out

    def load_split(self, split: str) -> Split:
        if split in self._splits:
            return self._splits[split]
        path = self.annotations_path()
        wanted = self._karpathy_splits(split)
        chosen = [e for e in self.entries() if e["split"] in wanted]
        if not chosen:
            present = sorted({e["split"] for e in self.entries()})
            raise DataError(f"Dataset '{self.name}': split '{split}' is empty: no image in {path} has "
                            f"split {' or '.join(repr(w) for w in wanted)} (found: "
                            f"{', '.join(present) or 'no images'}). Use the Karpathy split file.")
        no_caps = [e["filename"] for e in chosen if not e["captions"]]
        if no_caps:
            more = f" and {len(no_caps) - SHOW_MISSING} more" if len(no_caps) > SHOW_MISSING else ""
            raise DataError(f"Dataset '{self.name}': {len(no_caps)} images of split '{split}' in {path} "
                            f"have no captions (empty \"sentences\"): "
                            f"{', '.join(no_caps[:SHOW_MISSING])}{more}.")
        image_root = self.image_root()
        paths = [self._image_path(image_root, e) for e in chosen]
        check_images(self.name, split, paths, path,
                      f"Put the images under {image_root} or pass images=DIR.")
        ids = [f"{e['filepath']}/{e['filename']}" if e["filepath"] else e["filename"] for e in chosen]
        source = (f"{self.name}:{stamp(path)}|images={image_root}|splits={','.join(wanted)}")
        out = Split(dataset=self.name, name=split, image_ids=ids, captions=[list(e["captions"]) for e in chosen],
                    loader=ImageFileLoader(self.name, paths), source=source)
        self._splits[split] = out
        return out


class Flickr30k(_KarpathyDataset):
    """Flickr30k (31,783 photos, 5 captions each) with the Karpathy splits (dataset_flickr30k.json).

    Images are read from ``images=DIR``, else ``<root>/flickr30k-images``, else ``<root>/images``,
    else the data folder itself.  Splits: train, dev (Karpathy "val") and test.
    """

    name = "flickr30k"
    license = ("Flickr30k (Young et al., 2014): non-commercial research use only; the photos belong to their "
               "Flickr owners")
    JSON_NAME = "dataset_flickr30k.json"
    layout_hint = "dataset_flickr30k.json (Karpathy's split file) and the images"
    SPLITS = {"train": ("train", "restval"), "dev": ("val",), "test": ("test",)}

    def _default_image_root(self, root: str) -> str:
        for d in ("flickr30k-images", "images"):
            if os.path.isdir(os.path.join(root, d)):
                return os.path.join(root, d)
        return root


class Coco(_KarpathyDataset):
    """MS-COCO captions (123,287 images, ~5 captions each) with the Karpathy splits (dataset_coco.json).

    Image paths are ``<images>/<filepath>/<filename>`` (e.g. ``val2014/COCO_val2014_...jpg``) with
    ``images`` defaulting to the data folder (or ``<root>/images`` when the ``train2014``/``val2014``
    folders are there).  Splits: train (+ restval by default), dev (Karpathy "val") and test.
    """

    name = "coco"
    license = ("MS-COCO: annotations CC BY 4.0; the images are under the Flickr terms of their owners")
    JSON_NAME = "dataset_coco.json"
    layout_hint = "dataset_coco.json (Karpathy's split file) and train2014/, val2014/"

    @dataclass(frozen=True)
    class Config(_KarpathyDataset.Config):
        #: add Karpathy's "restval" images (~30k) to the train split
        restval_in_train: bool = True

    def _karpathy_splits(self, split: str) -> tuple[str, ...]:
        if split == "train" and self.config.restval_in_train:
            return ("train", "restval")
        return self.SPLITS[split]

    def _default_image_root(self, root: str) -> str:
        sub = os.path.join(root, "images")
        if os.path.isdir(sub) and not any(os.path.isdir(os.path.join(root, d)) for d in ("train2014", "val2014")):
            return sub
        return root

    def _image_path(self, image_root: str, entry: dict) -> str:
        return os.path.join(image_root, entry["filepath"], entry["filename"])

