"""The pair-set artifact: what a distiller or a coreset selector produces and ``vl eval`` reads.

A folder holding

    pairs.safetensors   images (N, 3, H, W) float32 in pixel space [0, 1] (the encoder normalises),
                        text (N, d_txt) caption embeddings of the frozen text encoder, and any
                        method-specific learned tensors (``extra``: LoRS's similarity factors)
    captions.json       for each pair, the real caption it came from (coresets) or the nearest real
                        training caption of its embedding (distilled sets), for people
    meta.json           kind, method, the full resolved config, model spec, seeds, source dataset,
                        learned step sizes, source pair ids, storage, versions

each file written atomically, meta.json last with a checksum of the tensors (``pairs_sha256``:
a set without it, or whose tensors do not match it, is refused).

Every reader (this folder, a ``vl export --format hf`` folder) hands what it read to
:func:`vlcore.data.checks.assemble`, the one validation path.
"""
from __future__ import annotations

import datetime as _dt
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import torch

from vlcore.artifacts.io import atomic_path, load_checked_tensors, sha256_file, versions, write_json
from vlcore.core.errors import DataError
from vlcore.data.checks import _CORE, _json_type, _shown, assemble, folder_origin, read_record
from vlcore.data.pipeline import PairData
from vlcore.model.losses import lowrank_similarity

FORMAT = "vlcore.pairset/1"
#: the files of a pair set
FILES = ("pairs.safetensors", "captions.json", "meta.json")


@dataclass
class PairSet:
    images: torch.Tensor
    text: torch.Tensor
    captions: list[str]
    meta: dict[str, Any] = field(default_factory=dict)
    #: learned step sizes (distilled sets), used by the evaluator
    lr_img: float | None = None
    lr_txt: float | None = None
    #: (image id, caption index) of each pair when the pairs are real (coresets, initialisation)
    source_ids: list[tuple[str, int]] | None = None
    #: method-specific learned tensors stored beside the pairs (e.g. ``similarity.diag``)
    extra: dict[str, torch.Tensor] = field(default_factory=dict)

    def __post_init__(self):
        n = self.images.shape[0]
        if self.text.shape[0] != n or len(self.captions) != n:
            raise ValueError(f"pair set has {n} images, {self.text.shape[0]} text embeddings and "
                             f"{len(self.captions)} captions; they must match")
        clash = set(self.extra) & set(_CORE)
        if clash:
            raise ValueError(f"extra tensors may not be named {sorted(clash)}")

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def text_dim(self) -> int:
        return int(self.text.shape[1])

    def storage(self) -> dict[str, int]:
        """What the set stores, in floats (and bytes at float32): pixels, text embeddings, the
        learned step sizes and any extra tensors; "100 pairs" costs the same for every method
        only when this does."""
        floats = self.images.numel() + self.text.numel() + sum(t.numel() for t in self.extra.values())
        floats += sum(v is not None for v in (self.lr_img, self.lr_txt))
        return {"pairs": len(self), "floats": int(floats), "bytes": int(floats) * 4}

    def similarity(self) -> torch.Tensor | None:
        """The (N, N) learned similarity targets of a LoRS-style set, or None."""
        spec = self.meta.get("similarity")
        if not spec:
            return None

        if spec.get("form") == "identity":
            return torch.eye(len(self))
        if spec.get("form") != "lowrank":
            raise DataError(f"pair set similarity form {spec.get('form')!r} is not known (expected 'lowrank' or "
                            f"'identity'); the set was made by a newer vlcore or by hand.")
        sim = lowrank_similarity(self.extra["similarity.diag"], self.extra["similarity.left"],
                                 self.extra["similarity.right"], float(spec["alpha"])).detach()
        return sim.clamp(0, 1) if spec.get("clamp") else sim  # (targets as the distiller used them)

    def data(self):
        """The pairs as :class:`vlcore.data.pipeline.PairData` (one image per pair), with the learned
        similarity targets when the set has them."""
        return PairData(self.images, self.text, torch.arange(len(self)), None, list(self.captions),
                        similarity=self.similarity())

    def save(self, path: str | Path) -> Path:
        from safetensors.torch import save_file

        path = Path(path)
        meta = dict(self.meta)
        meta.update({
            "format": FORMAT,
            "num_pairs": len(self),
            "image_shape": list(self.images.shape[1:]),
            "text_dim": self.text_dim,
            "lr_img": self.lr_img,
            "lr_txt": self.lr_txt,
            "storage": self.storage(),
            "source_ids": [list(x) for x in self.source_ids] if self.source_ids is not None else None,
        })
        meta.setdefault("versions", versions())
        meta.setdefault("created", _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
        path.mkdir(parents=True, exist_ok=True)
        # Each file is replaced atomically, meta.json last; meta records the checksum of the tensors,
        # so a reader never mistakes a torn update for a pair set.  Other files in the folder (a
        # distiller's checkpoint, figures, the best-on-dev set) are left alone.
        tensors = {"images": self.images, "text": self.text, **self.extra}
        with atomic_path(path / "pairs.safetensors") as tmp:
            save_file({k: v.detach().float().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
            meta["pairs_sha256"] = sha256_file(tmp)
        write_json(path / "captions.json", self.captions)
        write_json(path / "meta.json", meta)
        return path

    @classmethod
    def load(cls, path: str | Path, *, check_values: bool = True) -> "PairSet":
        """Read the pair set in folder ``path``: a vlcore pair-set folder or a ``vl export --format hf``
        folder.  Whatever the format, the parts read go through :func:`assemble` (the one validation
        path: the record's schema, shapes consistent with the record and the model spec, and with
        ``check_values`` the documented value ranges); DataError naming the file, the field and the
        fix when it is incomplete, damaged, changed since it was written or outside those ranges."""
        path = Path(path)
        if not path.is_dir():
            raise DataError(f"Pair set '{path}' does not exist or is not a folder. Pass the --out folder "
                            f"of `vl distill` or `vl coreset` (or of `vl export`).")
        if not (path / "pairs.safetensors").exists():
            for detect, read in READERS.values():
                if detect(path):
                    return read(path, check_values=check_values)  # e.g. a `vl export --format hf` folder
        return _load_folder(cls, path, check_values)


#: readers of the other pair-set formats, by name: (detect(folder) -> bool, read(folder, check_values)
#: -> PairSet); each format's module registers its own (:mod:`vlcore.data.export`: ``hf``), so this
#: module imports none of them
READERS: dict[str, tuple[Callable[[Path], bool], Callable[..., PairSet]]] = {}


def register_reader(name: str, detect: Callable[[Path], bool], read: Callable[..., PairSet]) -> None:
    """Let :meth:`PairSet.load` read folders of format ``name`` (those ``detect`` accepts)."""
    READERS[name] = (detect, read)


def _load_folder(cls, path: Path, check_values: bool) -> PairSet:
    origin = folder_origin(path)
    for name in FILES:
        if not (path / name).is_file():
            raise DataError(f"Pair set '{path}' has no {name}; it is incomplete or not a pair set "
                            f"(expected {', '.join(FILES)}). {origin.redo}")
    meta = read_record(path / "meta.json", origin.redo)
    origin = folder_origin(path, meta)
    if not isinstance(meta, dict):
        raise DataError(f"{path / 'meta.json'} holds a JSON {_json_type(meta)}, expected an object (the record of a "
                        f"pair set); it was edited or is not the meta.json of a pair set. {origin.redo}")
    if meta.get("format") != FORMAT:
        raise DataError(f"{path / 'meta.json'} field 'format' is {_shown(meta.get('format'))}, expected {FORMAT!r}; "
                        f"it is not the meta.json of a pair set. {origin.redo}")
    digest = meta.get("pairs_sha256")
    if not digest:
        raise DataError(f"{path / 'meta.json'} records no pairs_sha256 (the checksum of pairs.safetensors), so "
                        f"the set cannot be checked for damage: it was written by an older vlcore or edited. "
                        f"{origin.redo}")
    tensors = load_checked_tensors(
        path / "pairs.safetensors", digest,
        changed=f"{path / 'pairs.safetensors'} does not match the checksum in meta.json (pairs_sha256): "
                f"the file was changed, truncated, or a write was interrupted. {origin.redo}",
        unreadable=lambda why: f"{path / 'pairs.safetensors'} is not a pair-set tensor file ({why}). {origin.redo}")
    missing = [k for k in _CORE if k not in tensors]
    if missing:
        raise DataError(f"{path / 'pairs.safetensors'} has no tensor {' or '.join(map(repr, missing))}; it is not a "
                        f"pair-set tensor file. {origin.redo}")
    images, text = tensors.pop("images"), tensors.pop("text")
    captions = read_record(path / "captions.json", origin.redo)
    return assemble(cls, origin, meta, images, text, captions, tensors, check_values=check_values)
