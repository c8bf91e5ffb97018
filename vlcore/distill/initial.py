"""Where a run starts, in one place: the initial synthetic pairs of every distiller
(``--init real|kmeans|noise``) and the student's start epochs of the trajectory-matching ones
(``--start-sampling shared|async``, AMD).

* ``real`` (the default of the trajectory-matching distillers): ``n`` random real training pairs, a
  ``torch.randperm`` of the run's generator (the same draw, so the same pairs, as before the option
  existed);
* ``kmeans``: the real pairs nearest the ``n`` centroids of mini-batch k-means on each pair's
  ``norm([norm(image feature); norm(caption embedding)])`` (:func:`vlcore.distill.kmeans_init.kmeans_init`,
  seeded with the run's seed; it draws nothing from the run's generator).  The image features are
  :func:`vlcore.distill.kmeans_init.init_features`: a frozen backbone's cached features, a trainable
  backbone's as the buffer's expert 0 has it at epoch 0.  One pair per image when the training split
  has at least ``n`` images (a second caption of a chosen image would spend the budget on it);
* ``noise``: pixels uniform in the training images' value range, text embeddings random unit vectors
  (normal draws, L2-normalised), both from the run's generator; no source pairs.

What was chosen is recorded (:attr:`Initial.info`, a distiller's meta.json ``init``): the method, the
chosen pair ids (``[image id, caption index]``), and for k-means its settings and timings.

Start epochs: ``shared`` (default) draws one start epoch for both modalities from
``[0, max_start_epoch)`` (as before the option existed: no other draw).  ``async`` (AMD) draws the
image and the text start independently, from ``0..R_V`` and ``0..R_L`` (inclusive), the ranges
:func:`vlcore.distill.distribution.start_ranges` computes once per run from the buffer's per-modality
displacements (:func:`vlcore.distill.distribution.displacements`, mean of each expert's step lengths),
clamped to ``max_start_epoch - 1``; ``start_reading`` chooses how R_V is read (``as-written``:
``min{t : r(t) > median}``, the default, as REFERENCE.md writes it; ``last-above``:
``max{t : r(t) > median}``).  On vlcore's buffers the literal reading gives R_V < R_L (the first
epoch sits above the median), the other R_V > R_L, as the paper says; with ``max_start_epoch`` 2
(LoRS's) both clamp to 1.  The ranges, the ratios and the reading are recorded (meta.json ``starts``).
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
import torch.nn.functional as F

from vlcore.data.dataset import to_float
from vlcore.distill.contract import DistillContext, RecipeConfig
from vlcore.distill.coreset import source_ids
from vlcore.distill.distribution import displacements, start_ranges
from vlcore.distill.kmeans_init import init_features, kmeans_init

INITS = ("real", "kmeans", "noise")


@dataclass(frozen=True)
class InitConfig(RecipeConfig):
    """The Config fields every bundled distiller's initialisation reads (a distiller's Config inherits them)."""

    #: initial synthetic pairs: random real pairs (real), the real pair nearest each k-means centroid of
    #: the pairs' joint image-text features (kmeans), or noise (pixels uniform in the data's range,
    #: random unit text embeddings)
    init: Literal["real", "kmeans", "noise"] = "real"


@dataclass(frozen=True)
class StartConfig(InitConfig):
    """The start-epoch fields of the trajectory-matching distillers."""

    #: start epochs: one for both modalities (shared), or image and text drawn independently from
    #: ranges set by the buffer's per-modality displacements (async, AMD)
    start_sampling: Literal["shared", "async"] = "shared"
    #: async: how AMD's R_V = min{t : r(t) > median} is read: as written, or the last such t (last-above)
    start_reading: Literal["as-written", "last-above"] = "as-written"


def start_info(config, buffer) -> dict:
    """``{"start_ranges": ...}`` for a run's ``state.info`` (async), else ``{}``: computed once per run."""
    if getattr(config, "start_sampling", "shared") != "async":
        return {}

    d = displacements(buffer)
    r = start_ranges(d["img"], d["txt"], config.max_start_epoch - 1, reading=config.start_reading)
    return {"start_ranges": {"sampling": "async", **r.as_dict()}}


def draw_starts(config, state) -> dict[str, int]:
    """This iteration's per-modality start epochs (``Plan.starts``): ``{}`` for shared starts (no
    draw), else image and text each drawn from its own range, inclusive."""
    ranges = state.info.get("start_ranges")
    if getattr(config, "start_sampling", "shared") != "async" or not ranges:
        return {}
    g = state.generator
    return {m: int(torch.randint(int(ranges[m]) + 1, (1,), generator=g)) for m in ("img", "txt")}


@dataclass
class Initial:
    """The initial synthetic set: ``images`` (n, 3, H, W) float, ``text`` (n, D) float, ``idx`` the
    training pairs they are (None for noise), ``info`` for meta.json."""

    images: torch.Tensor
    text: torch.Tensor
    idx: torch.Tensor | None
    info: dict = field(default_factory=dict)
    #: the chosen pairs' ``[image id, caption index]`` (None: noise, or a split without ids)
    ids: list | None = None


def initial_pairs(ctx: "DistillContext", n: int, generator: torch.Generator, method: str = "real") -> Initial:
    """``n`` initial synthetic pairs of ``ctx.train`` by ``method`` (see the module docstring)."""
    train = ctx.train
    if method not in INITS:
        raise ValueError(f"init must be one of {', '.join(INITS)}, got {method!r}")
    if method == "noise":
        lo, hi = (float(to_float(v.reshape(1))) for v in (train.images.amin(), train.images.amax()))
        shape = (n, *train.images.shape[1:])
        images = lo + (hi - lo) * torch.rand(shape, generator=generator)
        text = F.normalize(torch.randn(n, int(train.text.shape[1]), generator=generator), dim=1)
        return Initial(images, text, None, {"method": "noise", "pixel_range": [lo, hi], "text": "random unit vectors"})
    info: dict = {"method": method}
    if method == "real":
        idx = torch.randperm(train.num_pairs, generator=generator)[:n]
    else:
        feats = init_features(ctx.spec, train, buffer=None if ctx.spec.frozen else ctx.buffer, expert=0, epoch=0,
                              seed=ctx.seed, host=ctx.host, device=ctx.device, progress=ctx.progress)
        km = kmeans_init(feats, train.text, n, ctx.seed, pair_image=train.pair_image,
                         distinct_images=train.num_images >= n)
        idx = km.indices
        info.update(km.info, image_features="frozen backbone (cached)" if ctx.spec.frozen else
                    "the buffer's expert 0 at epoch 0")
    images = to_float(train.images[train.pair_image[idx]]).clone()
    text = train.text[idx].clone().float()
    ids = source_ids(train, idx)
    ids = [list(x) for x in ids] if ids is not None else None
    info.update(pair_ids=ids, indices=[int(i) for i in idx])
    return Initial(images, text, idx, info, ids)
