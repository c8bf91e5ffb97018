"""The contract of text encoders: :func:`check_text_encoder`."""
from __future__ import annotations

from typing import Any

import torch

from ._common import _begin, _close, _finite, _require, _step
from vlcore.model.text import embed_texts

_TEXTS = ("a red circle on green grass", "two small blue squares in the snow",
          "A dog runs across the grass.", "the stock market fell sharply today")


def check_text_encoder(cls: type, options: dict | None = None, *, texts: tuple[str, ...] = _TEXTS) -> Any:
    """A text encoder:

    * is built as ``cls(config)``; ``dim`` is a positive int and does not change when it loads;
    * ``identity()`` is a non-empty string, the same for equal configs;
    * ``encode(texts)`` returns finite float32 CPU embeddings of shape (len(texts), dim), the same
      twice, each text's independent of the rest of the batch (and of ``batch_size``), different
      texts differently; ``encode([])`` is (0, dim);
    * works with the pipeline's cached :func:`vlcore.model.text.embed_texts`.

    Returns the built encoder.
    """
    label, cfg = _begin(cls, "text_encoder", options)
    with _step(label, f"building it with {cfg!r}"):
        enc = cls(cfg)
        twin = cls(cfg)
    dim = enc.dim
    _require(isinstance(dim, int) and not isinstance(dim, bool) and dim > 0, label,
             f"dim must be a positive int (got {dim!r})")
    ident = enc.identity()
    _require(isinstance(ident, str) and ident.strip(), label, "identity() must be a non-empty string")
    _require(twin.identity() == ident, label, "identity() differs between two encoders with the same config")
    texts = list(texts)
    with _step(label, f"encoding {len(texts)} texts"):
        emb = enc.encode(texts)
        again = enc.encode(texts)
        one = enc.encode(texts[1:2])
        small = enc.encode(texts, batch_size=1)
        empty = enc.encode([])
    _require(isinstance(emb, torch.Tensor) and emb.shape == (len(texts), dim), label,
             f"encode must return ({len(texts)}, dim={dim}), got "
             f"{tuple(emb.shape) if isinstance(emb, torch.Tensor) else type(emb).__name__}")
    _require(emb.dtype == torch.float32 and emb.device.type == "cpu", label,
             f"embeddings must be float32 on the CPU (got {emb.dtype} on {emb.device})")
    _require(_finite(emb), label, "embeddings contain NaN or inf")
    _require(enc.dim == dim, label, f"dim changed from {dim} to {enc.dim} when the model loaded")
    _require(_close(again, emb, atol=1e-5), label, "encode is not deterministic")
    _require(_close(one[0], emb[1]), label, "a text's embedding depends on the other texts of the batch")
    _require(_close(small, emb), label, "embeddings depend on batch_size")
    _require(not _close(emb[0], emb[3], rtol=0, atol=1e-6), label, "different texts get the same embedding")
    _require(isinstance(empty, torch.Tensor) and tuple(empty.shape) == (0, dim), label,
             f"encode([]) must return shape (0, {dim}) (got {tuple(getattr(empty, 'shape', ()))})")
    with _step(label, "embedding through vlcore.model.text.embed_texts"):
        cached = embed_texts(enc, texts, use_cache=False)
    _require(_close(cached, emb), label, "embed_texts disagrees with encode")
    return enc


