"""Datasets: images with several captions each, in named splits.

A *pair* is (image, one of its captions).  A :class:`Split` holds the image ids, the captions of
every image and a loader for the pixels; :func:`load_images` turns a split into a uint8 tensor at a
chosen size (cached on disk).
"""
from __future__ import annotations

import logging
from abc import abstractmethod
from dataclasses import dataclass, field
from typing import Callable, ClassVar

import numpy as np
import torch

from vlcore.artifacts.io import atomic_path, cache_dir, fingerprint
from vlcore.core.component import Component
from vlcore.core.errors import DataError, suggest
from vlcore.core.progress import NULL, Progress

log = logging.getLogger(__name__)


@dataclass
class Split:
    """One split of a dataset."""

    dataset: str
    name: str
    image_ids: list[str]
    captions: list[list[str]]
    #: ``loader(i)`` returns image ``i`` as an RGB ``PIL.Image``; raises DataError naming the file.
    loader: Callable[[int], "object"] = field(repr=False)
    #: identifies the exact content (source, ids, captions) for cache keys
    source: str = ""
    #: what artifacts record about where the split came from: the dataset's resolved ``config`` and
    #: its ``license`` (filled in by :meth:`Dataset.split`)
    about: dict = field(default_factory=dict)

    def __post_init__(self):
        if len(self.image_ids) != len(self.captions):
            raise DataError(f"{self.dataset}/{self.name}: {len(self.image_ids)} images but "
                            f"{len(self.captions)} caption lists.")
        if not self.image_ids:
            raise DataError(f"{self.dataset}: split '{self.name}' is empty (no images). Check the "
                            f"split file and the data folder ({self.source or 'unknown source'}).")
        for iid, caps in zip(self.image_ids, self.captions):
            if not caps:
                raise DataError(f"{self.dataset}/{self.name}: image '{iid}' has no captions.")

    @property
    def num_images(self) -> int:
        return len(self.image_ids)

    @property
    def num_pairs(self) -> int:
        return sum(len(c) for c in self.captions)

    def pairs(self) -> np.ndarray:
        """(P, 2) int array of (image index, caption index), image-major."""
        return np.array([(i, k) for i, caps in enumerate(self.captions) for k in range(len(caps))],
                        dtype=np.int64).reshape(-1, 2)

    def flat_captions(self) -> list[str]:
        return [c for caps in self.captions for c in caps]

    def caption_image(self) -> torch.Tensor:
        """For each flat caption, the index of its image."""
        return torch.as_tensor(self.pairs()[:, 0])

    @property
    def fingerprint(self) -> str:
        return fingerprint(self.dataset, self.name, self.source, self.image_ids, self.captions)

    def subset(self, n: int | None) -> "Split":
        """The first ``n`` images (all when ``n`` is None)."""
        if n is None or n >= self.num_images:
            return self
        loader = self.loader
        return Split(self.dataset, self.name, self.image_ids[:n], self.captions[:n], loader,
                     f"{self.source}[:{n}]", dict(self.about))

    def take(self, indices: list[int], name: str, tag: str) -> "Split":
        """The images ``indices`` (in that order) as the split ``name``; ``tag`` marks the source."""
        return Split(self.dataset, name, [self.image_ids[i] for i in indices], [self.captions[i] for i in indices],
                     _Subset(self.loader, list(indices)), f"{self.source}|{tag}")


class _Subset:
    """``loader(i)`` of a split made of some images of another (picklable)."""

    def __init__(self, loader, indices: list[int]):
        self.loader, self.indices = loader, indices

    def __call__(self, i: int):
        return self.loader(self.indices[i])


#: the split carved out of ``train`` by a dataset's ``holdout`` option, for tuning without dev or test
HOLDOUT = "holdout"
#: the fixed seed of that draw (the same images for every run)
HOLDOUT_SEED = 1234


class Dataset(Component):
    """Base class of dataset components.

    Subclasses set ``name``, a ``Config`` dataclass (with at least ``root`` and ``limit``) and
    implement :meth:`splits` and :meth:`load_split`.
    """

    #: the split used for evaluation during development when none is named
    default_eval_split: ClassVar[str] = "dev"
    #: the terms of the data, as an artifact made from it records them (a dataset card states them)
    license: ClassVar[str] = "unknown: check the terms of the data before sharing anything made from it"

    def data_license(self) -> str:
        """The licence of this dataset's data (a ``license`` option, when it has one, wins)."""
        return getattr(self.config, "license", None) or self.license

    @abstractmethod
    def splits(self) -> list[str]:
        """The names of the splits this dataset has (e.g. train, dev, test)."""

    @abstractmethod
    def load_split(self, split: str) -> Split:
        """The split ``split`` (its name already checked); raise DataError naming any bad file."""

    def split(self, split: str) -> Split:
        """:meth:`load_split` with the name checked and ``config.limit`` applied.

        A dataset whose Config has a ``holdout`` field set to N > 0 also has the split ``holdout``:
        N training images drawn with a fixed seed, which ``train`` then leaves out (tune on it, report
        on dev or test)."""
        holdout = int(getattr(self.config, "holdout", 0) or 0)
        names = self.splits() + ([HOLDOUT] if holdout else [])
        if split not in names:
            hint = (" (set the dataset option holdout=N to carve it out of train)"
                    if split == HOLDOUT and hasattr(self.config, "holdout") else "")
            raise DataError(f"Dataset '{self.name}' has no split '{split}'.{suggest(split, names)} "
                            f"Available: {', '.join(names)}{hint}.")
        from dataclasses import asdict

        if holdout and split in ("train", HOLDOUT):
            s = self._holdout(split, holdout)
        else:
            s = self.load_split(split)
        s.about = {"config": asdict(self.config), "license": self.data_license()}
        return s.subset(getattr(self.config, "limit", None))

    def _holdout(self, split: str, n: int) -> Split:
        train = self.load_split("train")
        if not 0 < n < train.num_images:
            raise DataError(f"Dataset '{self.name}': holdout={n} must be between 1 and {train.num_images - 1} "
                            f"(the train split has {train.num_images} images).")
        order = torch.randperm(train.num_images, generator=torch.Generator().manual_seed(HOLDOUT_SEED)).tolist()
        held = sorted(order[:n])
        if split == HOLDOUT:
            return train.take(held, HOLDOUT, f"holdout={n}")
        kept = sorted(set(range(train.num_images)) - set(held))
        return train.take(kept, "train", f"minus-holdout={n}")


def pil_to_uint8(img, size: int) -> torch.Tensor:
    from PIL import Image

    img = img.convert("RGB")
    if img.size != (size, size):
        img = img.resize((size, size), Image.BICUBIC)
    arr = np.asarray(img, dtype=np.uint8)
    return torch.from_numpy(arr.copy()).permute(2, 0, 1)


def load_images(split: Split, size: int, *, progress: Progress = NULL, use_cache: bool = True) -> torch.Tensor:
    """All images of ``split`` as a (N, 3, size, size) uint8 tensor, cached on disk."""
    from safetensors.torch import load_file, save_file

    key = fingerprint("images", split.fingerprint, size)
    path = cache_dir() / "images" / f"{split.dataset}-{split.name}-{size}px-{key}.safetensors"
    if use_cache and path.exists():
        try:
            return load_file(str(path))["images"]
        except Exception:  # a corrupt cache entry is rebuilt
            log.warning("ignoring unreadable cache file %s", path)
    out = torch.empty((split.num_images, 3, size, size), dtype=torch.uint8)
    with progress.task(f"loading {split.dataset}/{split.name} images", split.num_images, unit="img") as task:
        for i in range(split.num_images):
            out[i] = pil_to_uint8(split.loader(i), size)
            task.update(1)
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"images": out}, str(tmp))
    return out


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 [0, 255] -> float [0, 1]; float input is returned as is."""
    return images.float().div_(255.0) if images.dtype == torch.uint8 else images
