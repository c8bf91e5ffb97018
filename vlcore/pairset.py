"""The pair-set artifact: what a distiller or a coreset selector produces and ``vl eval`` reads.

A folder holding

    pairs.safetensors   images (N, 3, H, W) float32 in pixel space [0, 1] (the encoder normalises),
                        text (N, d_txt) caption embeddings of the frozen text encoder, and any
                        method-specific learned tensors (``extra``: LoRS's similarity factors)
    captions.json       for each pair, the real caption it came from (coresets) or the nearest real
                        training caption of its embedding (distilled sets), for people
    meta.json           kind, method, the full resolved config, model spec, seeds, source dataset,
                        learned step sizes, source pair ids, storage, versions

each file written atomically, meta.json last with a checksum of the tensors.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import DataError
from .io import atomic_path, read_json, versions, write_json

FORMAT = "vlcore.pairset/1"
#: tensors of pairs.safetensors that are not ``extra``
_CORE = ("images", "text")


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
        from .losses import lowrank_similarity

        if spec.get("form") == "identity":
            return torch.eye(len(self))
        if spec.get("form") != "lowrank":
            raise DataError(f"pair set similarity form {spec.get('form')!r} is not known (expected 'lowrank' or "
                            f"'identity'); the set was made by a newer vlcore or by hand.")
        return lowrank_similarity(self.extra["similarity.diag"], self.extra["similarity.left"],
                                  self.extra["similarity.right"], float(spec["alpha"])).detach()

    def data(self):
        """The pairs as :class:`vlcore.pipeline.PairData` (one image per pair), with the learned
        similarity targets when the set has them."""
        from .pipeline import PairData

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
            meta["pairs_sha256"] = _sha256(tmp)
        write_json(path / "captions.json", self.captions)
        write_json(path / "meta.json", meta)
        return path

    @classmethod
    def load(cls, path: str | Path) -> "PairSet":
        from safetensors.torch import load_file

        path = Path(path)
        if not path.is_dir():
            raise DataError(f"Pair set '{path}' does not exist or is not a folder. Pass the --out folder "
                            f"of `vl distill` or `vl coreset`.")
        from .export import is_hf_export, load_hf

        if not (path / "pairs.safetensors").exists() and is_hf_export(path):
            return load_hf(path)  # a `vl export --format hf` folder
        for name in ("pairs.safetensors", "captions.json", "meta.json"):
            if not (path / name).exists():
                raise DataError(f"Pair set '{path}' has no {name}; it is incomplete or not a pair set "
                                f"(expected pairs.safetensors, captions.json, meta.json).")
        meta = read_json(path / "meta.json")
        if meta.get("format") != FORMAT:
            raise DataError(f"{path / 'meta.json'}: format {meta.get('format')!r}, expected {FORMAT!r}.")
        digest = meta.get("pairs_sha256")
        if digest and _sha256(path / "pairs.safetensors") != digest:
            raise DataError(f"{path / 'pairs.safetensors'} does not match the checksum in meta.json: the "
                            f"folder was changed or a write was interrupted. Re-run the command that made it "
                            f"(distillation resumes with --resume).")
        tensors = load_file(str(path / "pairs.safetensors"))
        ids = meta.get("source_ids")
        return cls(images=tensors.pop("images"), text=tensors.pop("text"), captions=read_json(path / "captions.json"),
                   meta=meta, lr_img=meta.get("lr_img"), lr_txt=meta.get("lr_txt"),
                   source_ids=[(str(a), int(b)) for a, b in ids] if ids is not None else None, extra=tensors)


def _sha256(path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
