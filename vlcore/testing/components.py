"""Tiny, fast, download-free components for tests: an image encoder, a text encoder and a selector.

They are real components (name, docstring, frozen ``Config``), so tests can register them like any
plugin's (``register_plugin(vlcore.testing.plugin)``) and the contract checks use them to build the
models, buffers and pair data that selectors, distillers, evaluators and unroll backends run on.
"""
from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlcore.core.errors import ConfigError
from vlcore.distill.coreset import Selector
from vlcore.model.encoder import ImageEncoder
from vlcore.model.text import TextEncoder


class TinyImageEncoder(ImageEncoder):
    """Tiny CNN for tests (two conv layers, GroupNorm, GELU, a linear projection); random init."""

    name = "tiny-cnn"
    mean = std = (0.5, 0.5, 0.5)
    #: trained from scratch: ``vl`` trains all of its weights unless told otherwise
    default_trainable = "full"
    default_image_size = 16
    has_pretrained = False
    #: LoRA may adapt the final projection (so LoRA matching can be tested with it)
    lora_targets = ("proj",)

    @dataclass(frozen=True)
    class Config:
        #: channels of both conv layers
        width: int = 8
        #: size of the output features
        out_dim: int = 16

    def __init__(self, config, image_size: int):
        super().__init__(config, image_size)
        if config.width < 1 or config.out_dim < 1:
            raise ValueError(f"image encoder 'tiny-cnn': width and out_dim must be positive "
                             f"(got width={config.width}, out_dim={config.out_dim}).")
        if image_size < 2:
            raise ValueError(f"image encoder 'tiny-cnn': image_size must be at least 2 (got {image_size}).")
        w = config.width
        self.conv1 = nn.Conv2d(3, w, 3, padding=1)
        self.norm1 = nn.GroupNorm(1, w)
        self.conv2 = nn.Conv2d(w, w, 3, padding=1, stride=2)
        self.norm2 = nn.GroupNorm(1, w)
        self.proj = nn.Linear(w, config.out_dim)
        self.feature_dim = config.out_dim

    def features(self, x: torch.Tensor) -> torch.Tensor:
        h = F.gelu(self.norm1(self.conv1(x)))
        h = F.gelu(self.norm2(self.conv2(h)))
        return self.proj(h.mean(dim=(2, 3)))


_TOKEN = re.compile(r"[a-z0-9]+")


class HashedTextEncoder(TextEncoder):
    """Hashed bag of words and bigrams (no model, no download); deterministic across processes."""

    name = "hashed-bow"

    @dataclass(frozen=True)
    class Config:
        #: embedding size (hash buckets)
        dim: int = 32
        #: hash seed: another seed gives another (equally good) embedding
        seed: int = 0
        #: include word bigrams, so word order matters a little
        bigrams: bool = True
        #: L2-normalise the embeddings
        normalize: bool = True

    def __init__(self, config=None):
        super().__init__(config if config is not None else self.Config())
        if self.config.dim < 1:
            raise ValueError(f"text encoder 'hashed-bow': dim must be positive (got {self.config.dim}).")

    @property
    def dim(self) -> int:
        return int(self.config.dim)

    def identity(self) -> str:
        c = self.config
        return f"hashed-bow/1|dim={c.dim}|seed={c.seed}|bigrams={c.bigrams}|normalize={c.normalize}"

    def _bucket(self, token: str) -> tuple[int, float]:
        h = hashlib.blake2b(f"{self.config.seed}\0{token}".encode(), digest_size=8).digest()
        v = int.from_bytes(h, "little")
        return v % self.dim, (1.0 if (v >> 63) & 1 else -1.0)

    def encode(self, texts: Sequence[str], *, batch_size: int = 256, progress=None) -> torch.Tensor:
        out = torch.zeros(len(texts), self.dim, dtype=torch.float32)
        for i, text in enumerate(texts):
            words = _TOKEN.findall(str(text).lower())
            tokens = list(words)
            if self.config.bigrams:
                tokens += [f"{a} {b}" for a, b in zip(words, words[1:])]
            for tok in tokens:
                j, sign = self._bucket(tok)
                out[i, j] += sign
        if self.config.normalize:
            out = F.normalize(out, dim=1)
        return out


TEST_COMPONENTS = {"image_encoder": TinyImageEncoder, "text_encoder": HashedTextEncoder}


class FirstPairs(Selector):
    """First pairs: the first pair of each of the first BUDGET images (a selector for tests)."""

    name = "first-pairs"

    @dataclass(frozen=True)
    class Config:
        #: at most one pair per image
        unique_images: bool = True

    def select(self, ctx):
        budget = ctx.budget
        if budget > ctx.train.num_images:
            raise ConfigError(f"budget {budget} > {ctx.train.num_images} images")
        first: dict[int, int] = {}
        for p, i in enumerate(ctx.train.pair_image.tolist()):
            first.setdefault(i, p)
        return list(first.values())[:budget]
