"""The losses of the dual encoder, each in one place.

* :func:`contrastive_loss`: symmetric InfoNCE with identity targets, T = 0.07, used by experts,
  the distillation inner loop and evaluation alike (the public code's inner loop used log(1/T)).
* :func:`similarity_bce_loss`: LoRS's weighted binary cross-entropy against soft similarity
  targets, with :func:`lowrank_similarity` building those targets from their learned factors.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

TEMPERATURE = 0.07


def logits(img: torch.Tensor, txt: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Cosine similarities of L2-normalised embeddings divided by ``temperature``: (n_img, n_txt)."""
    return F.normalize(img, dim=-1) @ F.normalize(txt, dim=-1).t() / temperature


def contrastive_loss(img: torch.Tensor, txt: torch.Tensor, temperature: float = TEMPERATURE) -> torch.Tensor:
    """Symmetric InfoNCE with identity targets: pair i matches pair i.

    Both sides are L2-normalised; logits are cosine similarities divided by ``temperature``.
    """
    z = logits(img, txt, temperature)
    target = torch.arange(z.shape[0], device=z.device)
    return 0.5 * (F.cross_entropy(z, target) + F.cross_entropy(z.t(), target))


def similarity_bce_loss(img: torch.Tensor, txt: torch.Tensor, target: torch.Tensor,
                        temperature: float = TEMPERATURE) -> torch.Tensor:
    """LoRS's student loss: binary cross-entropy of ``sigmoid(cos / T)`` against the soft targets
    ``target`` (entry s: ``-s log p - (1 - s) log(1 - p)``), averaged separately over the positives
    (s > 0.5) and the negatives, and the two means halved.  A side with no entries counts 0.
    """
    z = logits(img, txt, temperature)
    if target.shape != z.shape:
        raise ValueError(f"similarity targets {tuple(target.shape)} do not match the logits {tuple(z.shape)}")
    target = target.to(z.dtype)
    # -s log sigmoid(z) - (1 - s) log(1 - sigmoid(z)), computed stably
    per = F.binary_cross_entropy_with_logits(z, target, reduction="none")
    pos = target > 0.5
    n_pos, n_neg = pos.sum(), (~pos).sum()
    zero = per.new_zeros(())
    mean_pos = per[pos].sum() / n_pos if n_pos > 0 else zero
    mean_neg = per[~pos].sum() / n_neg if n_neg > 0 else zero
    return 0.5 * (mean_pos + mean_neg)


def lowrank_similarity(diag: torch.Tensor, left: torch.Tensor, right: torch.Tensor, alpha: float) -> torch.Tensor:
    """LoRS's similarity matrix S = diag(a) + (alpha / r) L R^T, for a: (N,), L, R: (N, r)."""
    r = left.shape[1]
    scale = alpha / r if r else 0.0
    return torch.diag(diag) + scale * left @ right.t()


def clamp_targets(sim: torch.Tensor) -> torch.Tensor:
    """Similarity targets clamped to [0, 1]: an entry outside is replaced by the bound (and gets no
    gradient); an entry inside *or on* a bound keeps its gradient (``torch.clamp`` gives none at a
    bound, which would freeze S at its identity start)."""
    outside = (sim < 0) | (sim > 1)
    return torch.where(outside, sim.detach().clamp(0, 1), sim)
