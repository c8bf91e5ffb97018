"""AMD (ICLR 2026): LoRS with asynchronous per-modality start epochs, k-means initialisation and an
unsquared matching loss (REFERENCE.md, "2026 methods"; no public code: written from the rules).

* Start epochs (``--start-sampling async``, the option every trajectory-matching distiller has):
  the image and the text start are drawn independently from ``0..R_V`` and ``0..R_L``, ranges set
  once per run from the buffer's per-modality displacements (:mod:`vlcore.distill.initial`,
  :func:`vlcore.distill.distribution.start_ranges`), recorded in meta.json ``starts``.  The formulas as
  written give R_V < R_L on vlcore's buffers (epoch 1's ratio sits above the median);
  ``--start-reading last-above`` gives R_V > R_L, as the paper says.  The default stays the literal
  reading; with ``max_start_epoch`` 2 (LoRS's, kept here) both ranges clamp to 1, so only the
  independence of the two draws remains: raise ``--max-start-epoch`` (and train experts that long)
  for the ranges to matter.
* Initialisation: ``--init kmeans`` by default (AMD's "SPM").
* Matching loss: per modality the *unsquared* distance ``||student - target|| / ||start - target||``,
  summed over the modalities (:func:`unsquared_trajectory_loss`); the default
  :func:`vlcore.distill.unroll.trajectory_loss` sums the squared ratios.  It is supplied through the
  contract's ``Unroll.match``, so every unroll backend uses it.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Literal

import torch

from .lors import LoRS


def unsquared_trajectory_loss(student: torch.Tensor, start: torch.Tensor, target: torch.Tensor,
                              layout) -> tuple[torch.Tensor, dict[str, float]]:
    """AMD's matching loss of flat parameter vectors: for each modality ``||student - target|| /
    ||start - target||`` (unsquared), summed.  1 per modality at the student's start, as the
    squared loss; the gradient of the norm at 0 is held finite (``sqrt`` of at least 1e-24)."""
    total, parts = None, {}
    for m, b in layout.blocks.items():
        num = ((student[b] - target[b]) ** 2).sum().clamp_min(1e-24).sqrt()
        den = ((start[b] - target[b]) ** 2).sum().sqrt().clamp_min(1e-12)
        term = num / den
        parts[m] = float(term.detach())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no parameters to match")
    return total, parts


class AMD(LoRS):
    """AMD (ICLR 2026): LoRS + asynchronous image/text start epochs, k-means init, unsquared matching loss."""

    name = "amd"

    @dataclass(frozen=True)
    class Config(LoRS.Config):
        #: initial synthetic pairs (AMD: k-means, its "SPM")
        init: Literal["real", "kmeans", "noise"] = "kmeans"
        #: start epochs: image and text drawn independently from their own ranges (async, AMD), or shared
        start_sampling: Literal["shared", "async"] = "async"
        #: match with AMD's unsquared normalised distances (off: the squared ones of LoRS)
        unsquared: bool = True

    def build_unroll(self, ctx, state, plan):
        u, inputs = super().build_unroll(ctx, state, plan)
        if self.config.unsquared:
            u = dataclasses.replace(u, match=unsquared_trajectory_loss)
        return u, inputs
