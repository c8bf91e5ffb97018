"""Flickr8k in its original file layout."""
from __future__ import annotations

import os

from vlcore.core.errors import DataError
from vlcore.data.dataset import Dataset, Split

from ._files import SHOW_MISSING, FolderConfig, ImageFileLoader, check_images, need_root, read_text, stamp
from .layout import files_named


class Flickr8k(Dataset):
    """Flickr8k (8,000 Flickr photos, 5 captions each) in its original file layout.

    The data folder holds ``Flickr8k.token.txt`` (``<id>.jpg#<k>\\t<caption>`` lines),
    ``Flickr_8k.{train,dev,test}Images.txt`` (one image id a line) and the photos in ``images/``
    (or the official ``Flicker8k_Dataset/``).  A split is listed only when its split file exists.
    """

    name = "flickr8k"
    license = ("Flickr8k (Hodosh et al., 2013): research use only, under the University of Illinois' terms; "
               "the photos belong to their Flickr owners")
    CAPTION_FILE = "Flickr8k.token.txt"
    SPLIT_FILES = {"train": "Flickr_8k.trainImages.txt", "dev": "Flickr_8k.devImages.txt",
                   "test": "Flickr_8k.testImages.txt"}
    IMAGE_DIRS = ("images", "Flicker8k_Dataset", "Flickr8k_Dataset")
    LAYOUT = ("the Flickr8k folder (containing Flickr8k.token.txt, Flickr_8k.trainImages.txt, "
              "Flickr_8k.devImages.txt and an images/ folder)")

    Config = FolderConfig
    layout_hint = "Flickr8k.token.txt with the Flickr_8k.*Images.txt split files and images/"

    @classmethod
    def detect_layout(cls, root) -> str | None:
        """``Flickr8k.token.txt`` in the folder ``root`` (:mod:`.layout`), or None."""
        return cls.CAPTION_FILE if root.is_dir() and files_named(root, (cls.CAPTION_FILE,)) else None

    def __init__(self, config=None):
        super().__init__(config if config is not None else self.Config())
        self._captions: dict[str, list[str]] | None = None
        self._splits: dict[str, Split] = {}

    @property
    def root(self) -> str:
        return need_root(self.name, self.config.root, self.LAYOUT)

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
        lines = read_text(path, self.name, "caption file")
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
        root = self.root
        split_path = os.path.join(root, self.SPLIT_FILES[split])
        if not os.path.isfile(split_path):
            self._missing_split_file(split)
        ids: list[str] = []
        seen: set[str] = set()
        for line in read_text(split_path, self.name, "split file"):
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
            more = f" and {len(no_caps) - SHOW_MISSING} more" if len(no_caps) > SHOW_MISSING else ""
            raise DataError(f"Dataset '{self.name}': {len(no_caps)} of {len(ids)} images listed in "
                            f"{split_path} have no captions in {caps_path}: "
                            f"{', '.join(no_caps[:SHOW_MISSING])}{more}. Use the caption file that "
                            f"belongs to this split file, or remove those ids.")
        image_dir = self.image_dir()
        paths = [os.path.join(image_dir, i) for i in ids]
        check_images(self.name, split, paths, split_path,
                      f"Put the photos in {image_dir}/ (re-download or unpack the Flickr8k images).")
        source = (f"{self.name}:{root}|{stamp(caps_path)}|{stamp(split_path)}|images={image_dir}")
        out = Split(dataset=self.name, name=split, image_ids=ids, captions=[list(captions[i]) for i in ids],
                    loader=ImageFileLoader(self.name, paths), source=source)
        self._splits[split] = out
        return out

