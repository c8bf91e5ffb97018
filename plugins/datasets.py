"""Bundled datasets: Flickr8k, Flickr30k and COCO (Karpathy splits) from their distributed files,
and ``embedded``, a deterministic synthetic dataset of captioned compositional scenes that needs no
download.

Every dataset reads its caption files lazily (in :meth:`load_split`) and caches what it parsed on
the instance.  Problems with the files raise :class:`vlcore.errors.DataError` naming the file, what
was expected and how to fix it.  Image loaders are small picklable objects (so they survive being
sent to worker processes) that return RGB ``PIL.Image`` objects.
"""
from __future__ import annotations

import json
import math
import os
import random
from dataclasses import dataclass
from typing import Callable

import numpy as np

from vlcore import hookimpl
from vlcore.data import Dataset, Split
from vlcore.errors import ConfigError, DataError

#: how many missing files an error message lists before summarising the rest as a count
_SHOW_MISSING = 5


# ============================================================================ shared file helpers
def _stamp(path: str) -> str:
    """``path`` with its size and modification time: changes whenever the file does."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{os.path.abspath(path)}(missing)"
    return f"{os.path.abspath(path)}({st.st_size}b,{st.st_mtime_ns})"


def _need_root(name: str, root: str | None, what: str) -> str:
    """The absolute data folder, or a DataError saying how to pass one."""
    if root is None or str(root).strip() == "":
        raise DataError(f"Dataset '{name}' needs its data folder: pass --data DIR pointing at {what}.")
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        kind = "is not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"Dataset '{name}': data folder {root} {kind}. Pass --data DIR pointing at {what}.")
    return root


def _read_text(path: str, name: str, what: str) -> list[str]:
    """The lines of a text file (without line endings), or a DataError naming the file."""
    if not os.path.isfile(path):
        raise DataError(f"Dataset '{name}': {what} {path} not found.")
    try:
        with open(path, encoding="utf-8", errors="replace", newline=None) as f:
            return f.read().splitlines()
    except OSError as exc:
        raise DataError(f"Dataset '{name}': cannot read {what} {path}: {exc}.") from None


def _missing_message(missing: list[str], total: int) -> str:
    shown = ", ".join(missing[:_SHOW_MISSING])
    more = f" and {len(missing) - _SHOW_MISSING} more" if len(missing) > _SHOW_MISSING else ""
    return f"{len(missing)} of {total} image files are missing: {shown}{more}"


class _DirListing:
    """Cached directory listings, so checking thousands of image paths costs one scandir per folder."""

    def __init__(self):
        self._cache: dict[str, set[str] | None] = {}

    def exists(self, path: str) -> bool:
        folder, base = os.path.split(path)
        if folder not in self._cache:
            try:
                self._cache[folder] = {e.name for e in os.scandir(folder)}
            except OSError:
                self._cache[folder] = None
        names = self._cache[folder]
        if names is None:
            return False
        return base in names or os.path.exists(path)  # exists(): case-insensitive file systems


def _check_images(name: str, split: str, paths: list[str], listed_in: str, fix: str) -> None:
    listing = _DirListing()
    missing = [p for p in paths if not listing.exists(p)]
    if missing:
        raise DataError(f"Dataset '{name}', split '{split}': {_missing_message(missing, len(paths))} "
                        f"(listed in {listed_in}). {fix}")


class ImageFileLoader:
    """``loader(i)``: image file ``paths[i]`` as an RGB ``PIL.Image`` (picklable)."""

    def __init__(self, dataset: str, paths: list[str]):
        self.dataset = dataset
        self.paths = paths

    def __call__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path = self.paths[i]
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"Dataset '{self.dataset}': image file {path} not found (it was listed "
                            f"in the split; was it moved or deleted?). Restore the file or re-download "
                            f"the dataset.") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"Dataset '{self.dataset}': cannot read image file {path}: "
                            f"{type(exc).__name__}: {exc}. The file is corrupt or not an image; "
                            f"replace it with a good copy (re-download the dataset).") from None

    def __len__(self) -> int:
        return len(self.paths)


# ================================================================================== Flickr8k
class Flickr8k(Dataset):
    """Flickr8k (8,000 Flickr photos, 5 captions each) in its original file layout.

    The data folder holds ``Flickr8k.token.txt`` (``<id>.jpg#<k>\\t<caption>`` lines),
    ``Flickr_8k.{train,dev,test}Images.txt`` (one image id a line) and the photos in ``images/``
    (or the official ``Flicker8k_Dataset/``).  A split is listed only when its split file exists.
    """

    name = "flickr8k"
    CAPTION_FILE = "Flickr8k.token.txt"
    SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
                   "test": "Flickr_8k.testImages.txt"}
    IMAGE_DIRS = ("images", "Flicker8k_Dataset", "Flickr8k_Dataset")
    LAYOUT = ("the Flickr8k folder (containing Flickr8k.token.txt, Flickr_8k.trainImages.txt, "
              "Flickr_8k.devImages.txt and an images/ folder)")

    @dataclass(frozen=True)
    class Config:
        #: the Flickr8k folder (``--data DIR``)
        root: str | None = None
        #: at most this many images per split (the first ones), for tests and quick runs
        limit: int | None = None

    def __init__(self, config=None):
        super().__init__(config if config is not None else self.Config())
        self._captions: dict[str, list[str]] | None = None
        self._splits: dict[str, Split] = {}

    @property
    def root(self) -> str:
        return _need_root(self.name, self.config.root, self.LAYOUT)

    def splits(self) -> list[str]:
        root = self.root
        return [s for s, f in self.SPLIT_FILES.items() if os.path.isfile(os.path.join(root, f))]

    def split(self, split: str) -> Split:
        if split in self.SPLIT_FILES and split not in self.splits():
            self._missing_split_file(split)
        return super().split(split)

    def _missing_split_file(self, split: str):
        path = os.path.join(self.root, self.SPLIT_FILES[split])
        extra = (" (copies without the test split, like the development copy, evaluate on 'dev')" if split == "test" else "")
        raise DataError(f"Dataset '{self.name}': split file {path} not found, so split '{split}' is "
                        f"not available{extra}. Expected one image id (e.g. 1000268201_693b08cb0e.jpg) "
                        f"a line; add the file from the Flickr8k text archive or choose another split.")

    def image_dir(self) -> str:
        root = self.root
        for d in self.IMAGE_DIRS:
            if os.path.isdir(os.path.join(root, d)):
                return os.path.join(root, d)
        raise DataError(f"Dataset '{self.name}': no image folder in {root}: expected "
                        f"{root}/images/ (or the official {root}/Flicker8k_Dataset/) holding the "
                        f"<id>.jpg photos. Unpack the Flickr8k images there.")

    def captions(self) -> dict[str, list[str]]:
        """Image id -> its captions in caption-index order (parsed once)."""
        if self._captions is None:
            self._captions = self._parse_captions(os.path.join(self.root, self.CAPTION_FILE))
        return self._captions

    def _parse_captions(self, path: str) -> dict[str, list[str]]:
        lines = _read_text(path, self.name, "caption file")
        found: dict[str, list[tuple[int, int, str]]] = {}
        expected = ("expected '<image id>#<caption index>\\t<caption>', e.g. "
                    "'1000268201_693b08cb0e.jpg#0\\tA child in a pink dress is climbing up a set of stairs .'")
        for lineno, line in enumerate(lines, 1):
            if not line.strip():
                continue
            key, tab, text = line.partition("\t")
            iid, hash_, k = key.strip().rpartition("#")
            text = text.strip()
            if not tab or not hash_ or not iid or not k.strip().isdigit() or not text:
                raise DataError(f"Dataset '{self.name}': malformed caption line {lineno} of {path}: "
                                f"{line[:120]!r}; {expected}. Fix or remove the line.")
            found.setdefault(iid, []).append((int(k), lineno, text))
        return {iid: [t for _, _, t in sorted(caps)] for iid, caps in found.items()}

    def load_split(self, split: str) -> Split:
        if split in self._splits:
            return self._splits[split]
        if split not in self.SPLIT_FILES:
            raise DataError(f"Dataset '{self.name}' has no split '{split}'. Available: "
                            f"{', '.join(self.splits())}.")
        root = self.root
        split_path = os.path.join(root, self.SPLIT_FILES[split])
        if not os.path.isfile(split_path):
            self._missing_split_file(split)
        ids: list[str] = []
        seen: set[str] = set()
        for line in _read_text(split_path, self.name, "split file"):
            iid = line.strip()
            if iid and iid not in seen:
                seen.add(iid)
                ids.append(iid)
        if not ids:
            raise DataError(f"Dataset '{self.name}': split file {split_path} lists no images (split "
                            f"'{split}' is empty). Expected one image id a line.")
        caps_path = os.path.join(root, self.CAPTION_FILE)
        captions = self.captions()
        no_caps = [i for i in ids if i not in captions]
        if no_caps:
            more = f" and {len(no_caps) - _SHOW_MISSING} more" if len(no_caps) > _SHOW_MISSING else ""
            raise DataError(f"Dataset '{self.name}': {len(no_caps)} of {len(ids)} images listed in "
                            f"{split_path} have no captions in {caps_path}: "
                            f"{', '.join(no_caps[:_SHOW_MISSING])}{more}. Use the caption file that "
                            f"belongs to this split file, or remove those ids.")
        image_dir = self.image_dir()
        paths = [os.path.join(image_dir, i) for i in ids]
        _check_images(self.name, split, paths, split_path,
                      f"Put the photos in {image_dir}/ (re-download or unpack the Flickr8k images).")
        source = (f"{self.name}:{root}|{_stamp(caps_path)}|{_stamp(split_path)}|images={image_dir}")
        out = Split(dataset=self.name, name=split, image_ids=ids, captions=[list(captions[i]) for i in ids],
                    loader=ImageFileLoader(self.name, paths), source=source)
        self._splits[split] = out
        return out


# ======================================================================= Karpathy JSON splits
class _KarpathyDataset(Dataset):
    """Shared reader of Karpathy's ``dataset_<name>.json`` split files."""

    default_eval_split = "dev"
    #: our split name -> Karpathy split names
    SPLITS = {"train": ("train",), "dev": ("val",), "test": ("test",)}
    JSON_NAME = ""
    DOWNLOAD_HINT = ("the Karpathy split files are in caption_datasets.zip from "
                     "https://cs.stanford.edu/people/karpathy/deepimagesent/")

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
        return _need_root(self.name, cfg.root, self._layout())

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
        except (OSError, UnicodeDecodeError) as exc:
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
        if split not in self.SPLITS:
            raise DataError(f"Dataset '{self.name}' has no split '{split}'. Available: "
                            f"{', '.join(self.SPLITS)}.")
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
            more = f" and {len(no_caps) - _SHOW_MISSING} more" if len(no_caps) > _SHOW_MISSING else ""
            raise DataError(f"Dataset '{self.name}': {len(no_caps)} images of split '{split}' in {path} "
                            f"have no captions (empty \"sentences\"): "
                            f"{', '.join(no_caps[:_SHOW_MISSING])}{more}.")
        image_root = self.image_root()
        paths = [self._image_path(image_root, e) for e in chosen]
        _check_images(self.name, split, paths, path,
                      f"Put the images under {image_root} or pass images=DIR.")
        ids = [f"{e['filepath']}/{e['filename']}" if e["filepath"] else e["filename"] for e in chosen]
        source = (f"{self.name}:{_stamp(path)}|images={image_root}|splits={','.join(wanted)}")
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
    JSON_NAME = "dataset_flickr30k.json"
    SPLITS = {"train": ("train", "restval"), "dev": ("val",), "test": ("test",)}

    @dataclass(frozen=True)
    class Config:
        #: the folder holding dataset_flickr30k.json and the images (``--data DIR``)
        root: str | None = None
        #: at most this many images per split (the first ones)
        limit: int | None = None
        #: the Karpathy split JSON (default: <root>/dataset_flickr30k.json)
        annotations: str | None = None
        #: the image folder (default: <root>/flickr30k-images, else <root>/images, else <root>)
        images: str | None = None

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
    JSON_NAME = "dataset_coco.json"

    @dataclass(frozen=True)
    class Config:
        #: the folder holding dataset_coco.json and the train2014/ val2014/ folders (``--data DIR``)
        root: str | None = None
        #: at most this many images per split (the first ones)
        limit: int | None = None
        #: the Karpathy split JSON (default: <root>/dataset_coco.json)
        annotations: str | None = None
        #: the folder holding train2014/ and val2014/ (default: <root>, or <root>/images)
        images: str | None = None
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


# =================================================================== embedded synthetic scenes
GENERATOR_VERSION = "scenes-v1"

#: name -> (RGB, outline RGB)
_COLOURS: dict[str, tuple[tuple[int, int, int], tuple[int, int, int]]] = {
    "red": ((220, 35, 35), (110, 15, 15)),
    "orange": ((255, 140, 10), (140, 70, 0)),
    "yellow": ((250, 222, 30), (130, 110, 0)),
    "green": ((35, 175, 60), (10, 85, 25)),
    "blue": ((35, 85, 235), (10, 35, 120)),
    "purple": ((145, 55, 195), (70, 20, 100)),
    "white": ((246, 246, 246), (120, 120, 120)),
    "black": ((22, 22, 22), (120, 120, 120)),
}
_COLOUR_WORDS = {"red": ["red"], "orange": ["orange"], "yellow": ["yellow"], "green": ["green"],
                 "blue": ["blue"], "purple": ["purple", "violet"], "white": ["white"], "black": ["black"]}
_SHAPES = ["circle", "square", "triangle", "star", "diamond", "ring", "cross", "hexagon"]
_SHAPE_WORDS = {
    "circle": ["circle", "circle", "disc", "round shape"],
    "square": ["square", "square", "box", "block"],
    "triangle": ["triangle"],
    "star": ["star", "star", "five-pointed star"],
    "diamond": ["diamond", "diamond", "rhombus"],
    "ring": ["ring", "ring", "hoop", "donut"],
    "cross": ["cross", "cross", "plus sign"],
    "hexagon": ["hexagon", "hexagon", "six-sided shape"],
}
_SIZE_WORDS = {"small": ["small", "small", "little", "tiny"], "large": ["large", "large", "big", "huge"]}
#: background scene -> (top colour, bottom colour, noise amplitude)
_SCENES: dict[str, tuple[tuple[int, int, int], tuple[int, int, int], float]] = {
    "sky": ((95, 160, 235), (185, 220, 250), 3.0),
    "grass": ((120, 190, 80), (45, 115, 35), 9.0),
    "sand": ((238, 214, 160), (205, 175, 115), 8.0),
    "night": ((8, 12, 40), (35, 45, 95), 3.0),
    "snow": ((226, 233, 242), (250, 250, 252), 4.0),
    "sunset": ((250, 150, 70), (150, 70, 130), 4.0),
}
#: colours that would vanish into a background
_CLASH = {("blue", "sky"), ("green", "grass"), ("yellow", "sand"), ("black", "night"),
          ("white", "snow"), ("orange", "sunset"), ("white", "sky")}
_BG_PHRASES = {  # "... <phrase>" after the objects
    "sky": ["against a blue sky", "on a blue sky background", "in the sky", "on a pale blue background"],
    "grass": ["on green grass", "on a grassy background", "in a field of grass", "on the grass"],
    "sand": ["on the sand", "on a sandy background", "on a beach", "on beige sand"],
    "night": ["against the night sky", "on a dark background", "at night", "on a dark blue night sky"],
    "snow": ["on white snow", "on a snowy background", "in the snow", "on a snowy field"],
    "sunset": ["against a sunset", "on an orange and purple sunset sky", "at sunset",
               "on a sunset background"],
}
_BG_NOUNS = {  # "<noun> with ..."
    "sky": ["a blue sky", "a sky scene", "a clear sky"],
    "grass": ["a grassy field", "a patch of green grass", "a grass scene"],
    "sand": ["a sandy beach", "a beach scene", "a stretch of sand"],
    "night": ["a night sky", "a dark night scene", "a night scene"],
    "snow": ["a snowy field", "a snow scene", "a white snowy landscape"],
    "sunset": ["a sunset sky", "a sunset scene", "an orange sunset"],
}
_REL_WORDS = {
    "above": ["above", "above", "over", "higher than"],
    "below": ["below", "below", "under", "beneath", "lower than"],
    "left": ["to the left of", "to the left of", "left of", "on the left of"],
    "right": ["to the right of", "to the right of", "right of", "on the right of"],
}
_INVERSE = {"above": "below", "below": "above", "left": "right", "right": "left"}
_POS_WORDS = {
    (0, 0): ["in the top left corner", "at the top left"],
    (0, 1): ["at the top", "at the top of the picture", "near the top"],
    (0, 2): ["in the top right corner", "at the top right"],
    (1, 0): ["on the left", "on the left side", "at the left"],
    (1, 1): ["in the middle", "in the centre", "in the center of the image"],
    (1, 2): ["on the right", "on the right side", "at the right"],
    (2, 0): ["in the bottom left corner", "at the bottom left"],
    (2, 1): ["at the bottom", "near the bottom", "at the bottom of the picture"],
    (2, 2): ["in the bottom right corner", "at the bottom right"],
}
_NUM_WORDS = {1: "one", 2: "two", 3: "three"}
_VERBS = ["is", "sits", "is placed", "appears", "floats"]


def _article(word: str) -> str:
    return "an" if word[:1] in "aeiou" else "a"


def _plural(word: str) -> str:
    head, _, last = word.rpartition(" ")
    last = last + "es" if last.endswith(("s", "x", "sh", "ch")) else last + "s"
    return f"{head} {last}" if head else last


class _Phrases:
    """Caption wording for one scene, drawing synonyms from ``rng``."""

    def __init__(self, scene: dict, rng: random.Random):
        self.s = scene
        self.rng = rng

    def adj(self, o: dict, size_p: float = 0.5, colour_p: float = 1.0) -> str:
        """"small red star" (size with probability ``size_p``)."""
        r = self.rng
        words = []
        if r.random() < size_p:
            words.append(r.choice(_SIZE_WORDS[o["size"]]))
        if r.random() < colour_p:
            words.append(r.choice(_COLOUR_WORDS[o["colour"]]))
        words.append(r.choice(_SHAPE_WORDS[o["shape"]]))
        return " ".join(words)

    def np(self, o: dict, size_p: float = 0.5, colour_p: float = 1.0) -> str:
        a = self.adj(o, size_p, colour_p)
        return f"{_article(a)} {a}"

    def the(self, o: dict, size_p: float = 0.3) -> str:
        return "the " + self.adj(o, size_p)

    def bg(self) -> str:
        return self.rng.choice(_BG_PHRASES[self.s["background"]])

    def bg_noun(self) -> str:
        return self.rng.choice(_BG_NOUNS[self.s["background"]])

    def pos(self, o: dict) -> str:
        return self.rng.choice(_POS_WORDS[(o["row"], o["col"])])

    def relation(self, a: dict, b: dict) -> str:
        """Where ``a`` is relative to ``b``: one of above/below/left/right (always true)."""
        dr, dc = b["row"] - a["row"], b["col"] - a["col"]
        vertical = "above" if dr > 0 else "below"
        horizontal = "left" if dc > 0 else "right"
        if dc == 0:
            return vertical
        if dr == 0:
            return horizontal
        return vertical if self.rng.random() < 0.5 else horizontal

    def rel(self, a: dict, b: dict) -> str:
        return self.rng.choice(_REL_WORDS[self.relation(a, b)])

    def listing(self, objs: list[dict], size_p: float = 0.5) -> str:
        parts = [self.np(o, size_p) for o in objs]
        if len(parts) == 1:
            return parts[0]
        return ", ".join(parts[:-1]) + " and " + parts[-1]

    def maybe_bg(self, p: float = 0.4) -> str:
        return " " + self.bg() if self.rng.random() < p else ""


def _cap_list(p: _Phrases, objs: list[dict]) -> str:
    r, n = p.rng, len(objs)
    order = objs[:]
    r.shuffle(order)
    if n == 1:
        o = order[0]
        return r.choice([f"{p.np(o, 0.8)} {p.bg()}", f"a single {p.adj(o, 0.7)} {p.bg()}",
                         f"one {p.adj(o, 0.7)} {p.bg()}"])
    items = p.listing(order)
    return r.choice([f"{_NUM_WORDS[n]} shapes: {items} {p.bg()}", f"{items} {p.bg()}",
                     f"there are {_NUM_WORDS[n]} shapes {p.bg()}: {items}",
                     f"{p.bg_noun()} with {items}"])


def _cap_relation(p: _Phrases, objs: list[dict]) -> str | None:
    if len(objs) < 2:
        return None
    r = p.rng
    a, b = r.sample(objs, 2)
    rel = p.rel(a, b)
    text = r.choice([f"{p.np(a)} {rel} {p.np(b)}", f"{p.np(a)} {r.choice(_VERBS)} {rel} {p.np(b)}",
                     f"there is {p.np(a)} {rel} {p.np(b)}", f"{p.the(a)} is {rel} {p.the(b)}"])
    if len(objs) == 3 and r.random() < 0.5:
        c = next(o for o in objs if o is not a and o is not b)
        text += r.choice([f", and {p.np(c)} {p.pos(c)}", f" with {p.np(c)} {p.rel(c, b)} it",
                          f"; there is also {p.np(c)}"])
    return text + p.maybe_bg(0.3)


def _cap_position(p: _Phrases, objs: list[dict]) -> str:
    r = p.rng
    if len(objs) >= 2 and r.random() < 0.5:
        a, b = r.sample(objs, 2)
        return f"{p.np(a)} {p.pos(a)} and {p.np(b)} {p.pos(b)}" + p.maybe_bg(0.3)
    o = r.choice(objs)
    return r.choice([f"{p.np(o, 0.6)} {p.pos(o)}", f"{p.pos(o)} there is {p.np(o, 0.6)}",
                     f"{p.np(o, 0.6)} {r.choice(_VERBS)} {p.pos(o)}"]) + p.maybe_bg(0.5)


def _cap_count(p: _Phrases, objs: list[dict]) -> str:
    r, n = p.rng, len(objs)
    shapes = {o["shape"] for o in objs}
    colours = {o["colour"] for o in objs}
    if n == 1:
        o = objs[0]
        return r.choice([f"a picture with just one shape, {p.np(o)}",
                         f"only one object: {p.np(o, 0.8)}"]) + p.maybe_bg(0.3)
    if n >= 2 and len(shapes) == 1:
        shape = _plural(r.choice(_SHAPE_WORDS[objs[0]["shape"]]))
        cols = [r.choice(_COLOUR_WORDS[o["colour"]]) for o in objs]
        return f"{_NUM_WORDS[n]} {shape}, " + " and ".join(f"{_article(c)} {c} one" for c in cols) \
            + p.maybe_bg(0.3)
    if n >= 2 and len(colours) == 1:
        col = r.choice(_COLOUR_WORDS[objs[0]["colour"]])
        names = [r.choice(_SHAPE_WORDS[o["shape"]]) for o in objs]
        return f"{_NUM_WORDS[n]} {col} shapes: " + " and ".join(f"{_article(x)} {x}" for x in names) \
            + p.maybe_bg(0.3)
    o = r.choice(objs)
    return r.choice([f"{_NUM_WORDS[n]} shapes, one of them {p.np(o)}",
                     f"{_NUM_WORDS[n]} objects including {p.np(o)}",
                     f"{_NUM_WORDS[n]} coloured shapes {p.bg()}"])


def _cap_partial(p: _Phrases, objs: list[dict]) -> str:
    r = p.rng
    o = r.choice(objs)
    return r.choice([f"a picture of {p.np(o, 0.5, 0.9)}", f"an image showing {p.np(o, 0.5, 0.9)}",
                     f"{p.np(o, 0.7)} {p.bg()}", f"{p.np(o, 0.4)}",
                     f"a simple drawing of {p.np(o, 0.5)}"])


def _cap_background(p: _Phrases, objs: list[dict]) -> str:
    r, n = p.rng, len(objs)
    if n == 1 or r.random() < 0.5:
        o = r.choice(objs)
        text = f"{p.bg_noun()} with {p.np(o, 0.6)}"
        if n == 1 and r.random() < 0.5:
            text += f" {p.pos(o)}"
        return text
    return f"{p.bg_noun()} with {_NUM_WORDS[n]} shapes"


_FAMILIES: list[Callable[[_Phrases, list[dict]], str | None]] = [
    _cap_list, _cap_relation, _cap_position, _cap_count, _cap_partial, _cap_background]


def make_scene(seed: int, split: str, index: int) -> dict:
    """The scene graph of image ``index`` of ``split``: background and 1-3 objects (deterministic)."""
    rng = random.Random(f"{GENERATOR_VERSION}|{seed}|{split}|{index}")
    background = rng.choice(list(_SCENES))
    n = rng.choices((1, 2, 3), weights=(0.25, 0.45, 0.30))[0]
    cells = rng.sample([(r, c) for r in range(3) for c in range(3)], n)
    objs: list[dict] = []
    used: set[tuple[str, str]] = set()
    for row, col in cells:
        while True:
            shape = rng.choice(_SHAPES)
            colour = rng.choice(list(_COLOURS))
            if (colour, background) not in _CLASH and (shape, colour) not in used:
                break
        used.add((shape, colour))
        size = rng.choice(("small", "large"))
        radius = (0.145 if size == "large" else 0.085) * rng.uniform(0.92, 1.08)
        slack = max(0.0, 1 / 6 - radius - 0.01)
        cx = (col + 0.5) / 3 + rng.uniform(-slack, slack)
        cy = (row + 0.5) / 3 + rng.uniform(-slack, slack)
        objs.append({"shape": shape, "colour": colour, "size": size, "row": row, "col": col,
                     "cx": cx, "cy": cy, "r": radius, "angle": rng.uniform(-0.12, 0.12),
                     "tint": [rng.randint(-12, 12) for _ in range(3)]})
    return {"background": background, "objects": objs, "noise_seed": rng.getrandbits(63),
            "bg_tint": [rng.randint(-10, 10) for _ in range(3)], "bg_phase": rng.random()}


def make_captions(scene: dict, seed: int, split: str, index: int, k: int = 5) -> list[str]:
    """``k`` differently-worded captions of ``scene`` from distinct template families."""
    rng = random.Random(f"{GENERATOR_VERSION}|captions|{seed}|{split}|{index}")
    p = _Phrases(scene, rng)
    objs = scene["objects"]
    families = [f for f in _FAMILIES if not (f is _cap_relation and len(objs) < 2)]
    rng.shuffle(families)
    if len(objs) >= 2:  # spatial relations are the most informative: always include one
        families.remove(_cap_relation)
        families.insert(0, _cap_relation)
    queue = families[:]  # one caption per family first, then any family again
    out: list[str] = []
    seen: set[str] = set()
    attempts = 0
    while len(out) < k and attempts < 60:
        fam = queue.pop(0) if queue else rng.choice(families)
        attempts += 1
        text = fam(p, objs)
        if text is None:
            continue
        text = " ".join(text.split())
        if text not in seen:
            seen.add(text)
            out.append(text)
    while len(out) < k:  # practically unreachable; keeps the count exact
        out.append(f"{out[0]} ({len(out)})")
    return out


def _polygon(cx: float, cy: float, r: float, n: int, start: float, inner: float | None = None) -> list:
    pts = []
    steps = n * 2 if inner is not None else n
    for i in range(steps):
        a = start + 2 * math.pi * i / steps
        rad = r if inner is None or i % 2 == 0 else r * inner
        pts.append((cx + rad * math.cos(a), cy + rad * math.sin(a)))
    return pts


def _rotate(pts: list, cx: float, cy: float, angle: float) -> list:
    c, s = math.cos(angle), math.sin(angle)
    return [(cx + (x - cx) * c - (y - cy) * s, cy + (x - cx) * s + (y - cy) * c) for x, y in pts]


def _background(scene: dict, size: int) -> np.ndarray:
    """(size, size, 3) float32 background: a vertical gradient, texture and noise."""
    name = scene["background"]
    top, bottom, amp = _SCENES[name]
    rng = np.random.default_rng(scene["noise_seed"])
    tint = np.asarray(scene["bg_tint"], np.float32)
    t = np.linspace(0.0, 1.0, size, dtype=np.float32)[:, None, None]
    img = (np.asarray(top, np.float32) + tint) * (1 - t) + (np.asarray(bottom, np.float32) + tint) * t
    img = np.broadcast_to(img, (size, size, 3)).copy()
    half = max(1, size // 2)
    noise = rng.standard_normal((half, half, 1), dtype=np.float32) * amp
    img += np.repeat(np.repeat(noise, 2, 0), 2, 1)[:size, :size]
    y = np.arange(size, dtype=np.float32)[:, None]
    x = np.arange(size, dtype=np.float32)[None, :]
    if name == "grass":  # vertical blades
        blades = rng.standard_normal((1, size), dtype=np.float32) * 10.0
        img += (blades * (0.4 + 0.6 * (y / size)))[..., None]
    elif name == "sand":  # gentle ripples
        ripple = np.sin((y / size * 9.0 + x / size * 1.5 + scene["bg_phase"]) * 2 * math.pi) * 6.0
        img += ripple[..., None]
    elif name == "sunset":  # soft horizontal bands
        img += (np.sin((y / size * 5.0 + scene["bg_phase"]) * 2 * math.pi) * 5.0)[..., None]
    elif name == "sky":  # faint flat clouds
        for _ in range(2):
            cx, cy = rng.uniform(0, size), rng.uniform(0, size)
            rx, ry = rng.uniform(0.2, 0.35) * size, rng.uniform(0.05, 0.09) * size
            mask = np.clip(1.0 - ((x - cx) / rx) ** 2 - ((y - cy) / ry) ** 2, 0, 1) * 0.35
            img += (255.0 - img) * mask[..., None]
    elif name == "night":  # a few faint specks
        for _ in range(int(rng.integers(4, 9))):
            yy, xx = int(rng.integers(0, size)), int(rng.integers(0, size))
            img[yy, xx] += 110.0
    elif name == "snow":  # speckles
        img += (rng.random((size, size, 1), dtype=np.float32) > 0.97) * -18.0
    return img


def render_scene(scene: dict, size: int = 64):
    """Draw ``scene`` as a ``size``-pixel RGB PIL image (drawn at 2x and downsampled)."""
    from PIL import Image, ImageDraw

    big = 2 * size
    bg = _background(scene, big)
    bg8 = np.clip(bg, 0, 255).astype(np.uint8)
    img = Image.fromarray(bg8, "RGB")
    bg_img = None
    draw = ImageDraw.Draw(img)
    width = max(2, big // 64)
    for o in scene["objects"]:
        fill = tuple(int(min(255, max(0, c + d))) for c, d in zip(_COLOURS[o["colour"]][0], o["tint"]))
        line = _COLOURS[o["colour"]][1]
        cx, cy, r, ang = o["cx"] * big, o["cy"] * big, o["r"] * big, o["angle"]
        shape = o["shape"]
        if shape in ("circle", "ring"):
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=fill, outline=line, width=width)
            ri = r - max(3.0, 0.4 * r)
            if shape == "ring" and ri > 1.0:  # punch a hole that shows the background (if it fits)
                box = (cx - ri, cy - ri, cx + ri, cy + ri)
                if bg_img is None:
                    bg_img = Image.fromarray(bg8, "RGB")
                mask = Image.new("L", img.size, 0)
                ImageDraw.Draw(mask).ellipse(box, fill=255)
                img.paste(bg_img, (0, 0), mask)
                draw.ellipse(box, outline=line, width=width)
        else:
            if shape == "square":
                pts = _rotate(_polygon(cx, cy, r * 1.2, 4, math.pi / 4), cx, cy, ang)
            elif shape == "diamond":
                pts = _polygon(cx, cy, r * 1.15, 4, -math.pi / 2)
                pts = [(cx + (x - cx) * 0.8, y) for x, y in pts]  # a little taller than wide
            elif shape == "triangle":
                pts = _polygon(cx, cy + 0.12 * r, r * 1.2, 3, -math.pi / 2)
            elif shape == "star":
                pts = _rotate(_polygon(cx, cy, r * 1.25, 5, -math.pi / 2, inner=0.45), cx, cy, ang)
            elif shape == "hexagon":
                pts = _polygon(cx, cy, r * 1.05, 6, 0.0)
            elif shape == "cross":
                a, b = r * 1.05, r * 0.36
                pts = [(cx - b, cy - a), (cx + b, cy - a), (cx + b, cy - b), (cx + a, cy - b),
                       (cx + a, cy + b), (cx + b, cy + b), (cx + b, cy + a), (cx - b, cy + a),
                       (cx - b, cy + b), (cx - a, cy + b), (cx - a, cy - b), (cx - b, cy - b)]
                pts = _rotate(pts, cx, cy, ang)
            else:  # pragma: no cover - all shapes are handled above
                raise ValueError(shape)
            draw.polygon(pts, fill=fill, outline=line, width=width)
    return img.resize((size, size), Image.Resampling.BOX)


class SceneLoader:
    """``loader(i)``: renders scene ``i`` (picklable; deterministic)."""

    def __init__(self, scenes: list[dict], size: int):
        self.scenes = scenes
        self.size = size

    def __call__(self, i: int):
        return render_scene(self.scenes[i], self.size)

    def __len__(self) -> int:
        return len(self.scenes)


class Embedded(Dataset):
    """Built-in synthetic captioned scenes (no download): 1-3 coloured shapes on textured backgrounds.

    Each image is a compositional scene: 1 to 3 objects, each with a shape (circle, square, triangle,
    star, diamond, ring, cross, hexagon), a colour (8), a size (small/large) and a position, on one of
    six backgrounds (sky, grass, sand, night, snow, sunset).  Its 5 captions are generated from the
    scene graph with varied templates, synonyms, counts and spatial relations; some mention only part
    of the scene.  Everything is deterministic in (seed, split, index); images are rendered on demand.
    """

    name = "embedded"
    SPLIT_SEEDS = ("train", "dev", "test")

    @dataclass(frozen=True)
    class Config:
        #: ignored (accepted so that --data works uniformly)
        root: str | None = None
        #: at most this many images per split (the first ones)
        limit: int | None = None
        #: generator seed; train/dev/test draw from disjoint streams derived from it
        seed: int = 0
        num_train: int = 2000
        num_dev: int = 500
        num_test: int = 500
        #: rendered image side in pixels
        image_size: int = 64

    def __init__(self, config=None):
        config = config if config is not None else self.Config()
        for field_name in ("num_train", "num_dev", "num_test"):
            if getattr(config, field_name) < 1:
                raise ConfigError(f"Option '{field_name}' of dataset 'embedded' must be at least 1 "
                                  f"(got {getattr(config, field_name)}).")
        if config.image_size < 16:
            raise ConfigError(f"Option 'image_size' of dataset 'embedded' must be at least 16 "
                              f"(got {config.image_size}).")
        super().__init__(config)
        self._splits: dict[str, Split] = {}

    def splits(self) -> list[str]:
        return list(self.SPLIT_SEEDS)

    def num_images(self, split: str) -> int:
        return getattr(self.config, f"num_{split}")

    def load_split(self, split: str) -> Split:
        if split in self._splits:
            return self._splits[split]
        if split not in self.SPLIT_SEEDS:
            raise DataError(f"Dataset 'embedded' has no split '{split}'. Available: train, dev, test.")
        cfg = self.config
        n = self.num_images(split)
        scenes = [make_scene(cfg.seed, split, i) for i in range(n)]
        captions = [make_captions(s, cfg.seed, split, i) for i, s in enumerate(scenes)]
        ids = [f"{split}-{i:05d}" for i in range(n)]
        source = (f"embedded:{GENERATOR_VERSION}:seed={cfg.seed}:split={split}:n={n}:"
                  f"size={cfg.image_size}")
        out = Split(dataset=self.name, name=split, image_ids=ids, captions=captions,
                    loader=SceneLoader(scenes, cfg.image_size), source=source)
        self._splits[split] = out
        return out


@hookimpl
def register_datasets(register):
    for cls in (Flickr8k, Flickr30k, Coco, Embedded):
        register(cls)
