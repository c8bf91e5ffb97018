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

Documented value ranges (:func:`value_problems`; ``vl eval`` refuses a set outside them): every
tensor is finite; coresets hold real images in [0, 1]; a distilled set's pixels are optimised freely
(``--clamp-images`` keeps them in [0, 1]) but stay within +-:data:`PIXEL_LIMIT`; each text embedding's
norm is at most :data:`TEXT_LIMIT`; learned step sizes are positive and at most
:data:`vlcore.config.MAX_LR`.  The distillation loop rolls back any update that leaves these ranges.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import DataError
from .io import atomic_path, read_json, sha256_file, versions, write_json

FORMAT = "vlcore.pairset/1"
#: the largest absolute pixel value of a pair set (real images are in [0, 1]).  Unclamped
#: distillation moves pixels far: about +-700 after 60 iterations at the paper's learning rate 1000
#: on the embedded scenes; an update that exploded (--lr-images 1e12: +-6e11) lands far beyond
PIXEL_LIMIT = 1e6
#: the largest norm of a text embedding of a pair set (real caption embeddings: about 1 to 20; about
#: 4e3 after 60 iterations at the paper's learning rate 1000)
TEXT_LIMIT = 1e6
#: the files of a pair set
FILES = ("pairs.safetensors", "captions.json", "meta.json")
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
        sim = lowrank_similarity(self.extra["similarity.diag"], self.extra["similarity.left"],
                                 self.extra["similarity.right"], float(spec["alpha"])).detach()
        return sim.clamp(0, 1) if spec.get("clamp") else sim  # (targets as the distiller used them)

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
            meta["pairs_sha256"] = sha256_file(tmp)
        write_json(path / "captions.json", self.captions)
        write_json(path / "meta.json", meta)
        return path

    @classmethod
    def load(cls, path: str | Path, *, check_values: bool = True) -> "PairSet":
        """Read the pair set in folder ``path``; DataError (naming the file and the fix) when it is
        incomplete, damaged, changed since it was written, or (``check_values``) outside the
        documented value ranges."""
        from safetensors.torch import load

        path = Path(path)
        redo = _redo(path)
        if not path.is_dir():
            raise DataError(f"Pair set '{path}' does not exist or is not a folder. Pass the --out folder "
                            f"of `vl distill` or `vl coreset`.")
        from .export import is_hf_export, load_hf

        if not (path / "pairs.safetensors").exists() and is_hf_export(path):
            return load_hf(path)  # a `vl export --format hf` folder
        for name in FILES:
            if not (path / name).is_file():
                raise DataError(f"Pair set '{path}' has no {name}; it is incomplete or not a pair set "
                                f"(expected {', '.join(FILES)}). {redo}")
        meta = _json(path / "meta.json", redo)
        redo = _redo(path, meta)
        if not isinstance(meta, dict) or meta.get("format") != FORMAT:
            got = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
            raise DataError(f"{path / 'meta.json'}: format {got!r}, expected {FORMAT!r}; it is not the meta.json "
                            f"of a pair set. {redo}")
        digest = meta.get("pairs_sha256")
        if not digest:
            raise DataError(f"{path / 'meta.json'} records no pairs_sha256 (the checksum of pairs.safetensors), so "
                            f"the set cannot be checked for damage: it was written by an older vlcore or edited. "
                            f"{redo}")
        data = (path / "pairs.safetensors").read_bytes()
        if hashlib.sha256(data).hexdigest() != digest:
            raise DataError(f"{path / 'pairs.safetensors'} does not match the checksum in meta.json: the file was "
                            f"changed, truncated, or a write was interrupted. {redo}")
        try:
            tensors = load(data)
            images, text = tensors.pop("images"), tensors.pop("text")
        except Exception as exc:
            raise DataError(f"{path / 'pairs.safetensors'} is not a pair-set tensor file ({type(exc).__name__}: "
                            f"{exc}). {redo}") from None
        captions = _json(path / "captions.json", redo)
        ids = meta.get("source_ids")
        try:
            if not (isinstance(captions, list) and all(isinstance(c, str) for c in captions)):
                raise ValueError("captions.json must be a list of strings")
            ps = cls(images=images, text=text, captions=captions, meta=meta, lr_img=meta.get("lr_img"),
                     lr_txt=meta.get("lr_txt"),
                     source_ids=[(str(a), int(b)) for a, b in ids] if ids is not None else None, extra=tensors)
        except (ValueError, TypeError, IndexError) as exc:
            raise DataError(f"Pair set '{path}' is inconsistent: {exc}. {redo}") from None
        if check_values:
            problems = value_problems(ps)
            if problems:
                raise DataError(f"Pair set '{path}' is outside the documented value ranges: {'; '.join(problems)}. "
                                f"Models cannot be trained on it meaningfully: the set is damaged, or the run that "
                                f"made it diverged. {redo} For a distillation, `--clamp-images` keeps pixels in "
                                f"[0, 1].")
        return ps


def value_problems(ps: PairSet) -> list[str]:
    """What is outside the documented value ranges of a pair set (see the module docstring)."""
    from .config import MAX_LR

    out = []
    for name, t in (("images", ps.images), ("text", ps.text), *ps.extra.items()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            rows = (~torch.isfinite(t.reshape(t.shape[0], -1))).any(1).sum() if t.dim() else 1
            out.append(f"{name} hold NaN or infinite values ({int(rows)} of {t.shape[0] if t.dim() else 1} rows)")
    if not out:
        img = ps.images.float()
        if img.numel() and float(img.abs().max()) > PIXEL_LIMIT:
            out.append(f"pixels range over [{float(img.min()):.3g}, {float(img.max()):.3g}], beyond the allowed "
                       f"+-{PIXEL_LIMIT:g}")
        norm = ps.text.float().norm(dim=-1).max() if ps.text.numel() else torch.tensor(0.0)
        if float(norm) > TEXT_LIMIT:
            out.append(f"a text embedding has norm {float(norm):.3g}, beyond the allowed {TEXT_LIMIT:g}")
    for side in ("lr_img", "lr_txt"):
        v = getattr(ps, side)
        if v is not None and not (isinstance(v, (int, float)) and 0 < v <= MAX_LR):
            out.append(f"the learned step size {side}={v} is not a positive finite number")
    return out


def _redo(path: Path, meta=None) -> str:
    """How to make a damaged pair set again."""
    kind = meta.get("kind") if isinstance(meta, dict) else None
    cmd = {"distilled": "distill", "coreset": "coreset"}.get(kind, "distill|coreset")
    cont = "" if kind == "coreset" else " (an interrupted distillation continues with --resume instead)"
    return (f"Re-create it: `vl {cmd} --config {path / 'config.toml'} --out NEW_FOLDER` repeats the run that made "
            f"it{cont}.")


def _json(path: Path, redo: str):
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); it is truncated or damaged. "
                        f"{redo}") from None
