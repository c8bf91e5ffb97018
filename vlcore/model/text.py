"""Frozen text encoders and the on-disk cache of caption embeddings."""
from __future__ import annotations

import logging
from abc import abstractmethod
from typing import Sequence

import torch

from vlcore.artifacts.io import atomic_path, cache_dir, fingerprint
from vlcore.core.component import Component
from vlcore.core.progress import NULL, Progress

log = logging.getLogger(__name__)


class TextEncoder(Component):
    """Base class of text encoder components: frozen, maps captions to fixed vectors.

    Subclasses set ``name`` and ``Config`` and implement :attr:`dim`, :meth:`identity` (a string that
    changes whenever the produced embeddings would: model path or name, pooling, revision) and
    :meth:`encode`.  Models are loaded lazily on the first :meth:`encode`.
    """

    @property
    @abstractmethod
    def dim(self) -> int:
        """The embedding size (known without loading the model where possible)."""

    @abstractmethod
    def identity(self) -> str:
        """A string that changes whenever the produced embeddings would."""

    @abstractmethod
    def encode(self, texts: Sequence[str], *, batch_size: int = 256, progress: Progress = NULL) -> torch.Tensor:
        """(len(texts), dim) float32 embeddings on the CPU; reports texts done to ``progress``."""


def embed_texts(encoder: TextEncoder, texts: Sequence[str], *, progress: Progress = NULL,
                use_cache: bool = True, label: str = "captions") -> torch.Tensor:
    """Encode ``texts`` with ``encoder``, caching the result on disk.

    The cache key covers the encoder's identity and every caption, so a changed encoder or caption
    set never reuses a stale entry.
    """
    from safetensors.torch import load_file, save_file

    texts = list(texts)
    key = fingerprint("text", encoder.name, encoder.identity(), texts)
    path = cache_dir() / "text" / f"{encoder.name}-{len(texts)}-{key}.safetensors"
    if use_cache and path.exists():
        try:
            emb = load_file(str(path))["embeddings"]
            if emb.shape == (len(texts), encoder.dim):
                return emb
        except Exception:
            log.warning("ignoring unreadable cache file %s", path)
    log.info("encoding %d %s with %s", len(texts), label, encoder.name)
    emb = encoder.encode(texts, progress=progress).float().contiguous()
    if emb.shape != (len(texts), encoder.dim):
        raise RuntimeError(f"text encoder '{encoder.name}' returned shape {tuple(emb.shape)}, "
                           f"expected {(len(texts), encoder.dim)}")
    if use_cache:
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path) as tmp:
            save_file({"embeddings": emb}, str(tmp))
    return emb
