"""The ``medoid`` coreset selector: k-means on the caption embeddings, then, for each of the
``budget`` centroids, the real pair whose caption embedding is nearest to it.

It needs no model and no training: it only reads ``ctx.train.text`` (the frozen text encoder's
caption embeddings) and ``ctx.train.pair_image`` (which image each pair belongs to).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from vlcore.components import Selection, Selector
from vlcore.core.errors import ConfigError


def kmeans(x: torch.Tensor, k: int, *, iterations: int = 50, generator: torch.Generator | None = None,
           stats: dict | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means with k-means++ seeding.  Returns (centroids (k, d), assignment (n,)).

    An empty cluster keeps its previous centroid.  Deterministic given ``generator``.  ``stats``,
    if given, receives the Lloyd iterations run and whether the assignment converged.
    """
    n = x.shape[0]
    if not 1 <= k <= n:
        raise ValueError(f"k-means needs 1 <= k <= {n} points (got k={k})")
    first = int(torch.randint(n, (1,), generator=generator))
    centroids = [x[first]]
    d2 = ((x - x[first]) ** 2).sum(1)
    for _ in range(1, k):
        total = float(d2.sum())
        probs = d2 / total if total > 0 else torch.full_like(d2, 1.0 / n)
        i = int(torch.multinomial(probs, 1, generator=generator))
        centroids.append(x[i])
        d2 = torch.minimum(d2, ((x - x[i]) ** 2).sum(1))
    c = torch.stack(centroids)
    assign = torch.cdist(x, c).argmin(1)
    done, converged = 0, False
    for done in range(1, iterations + 1):
        sums = torch.zeros_like(c).index_add_(0, assign, x)
        counts = torch.bincount(assign, minlength=k).to(x.dtype).unsqueeze(1)
        new = torch.where(counts > 0, sums / counts.clamp_min(1), c)
        new_assign = torch.cdist(x, new).argmin(1)
        c = new
        if torch.equal(new_assign, assign):
            converged = True
            break
        assign = new_assign
    if stats is not None:
        stats.update(iterations=done, converged=converged)
    return c, assign


def nearest_to_centroids(x: torch.Tensor, centroids: torch.Tensor, assign: torch.Tensor,
                         groups: torch.Tensor | None = None) -> torch.Tensor:
    """For each centroid (largest cluster first), the nearest point not yet taken; with ``groups``,
    at most one point per group.  Returns the chosen point indices."""
    k = centroids.shape[0]
    dist = torch.cdist(centroids, x)  # (k, n)
    sizes = torch.bincount(assign, minlength=k)
    order = sorted(range(k), key=lambda j: (-int(sizes[j]), j))
    blocked = torch.zeros(x.shape[0], dtype=torch.bool)
    chosen = []
    for j in order:
        d = torch.where(blocked, torch.tensor(float("inf"), dtype=dist.dtype), dist[j])
        i = int(torch.argmin(d))
        if torch.isinf(d[i]):
            raise ValueError("no eligible point left")
        chosen.append(i)
        blocked[i] = True
        if groups is not None:
            blocked |= groups == groups[i]
    return torch.tensor(chosen, dtype=torch.long)


class MedoidSelector(Selector):
    """Medoid: the pairs whose caption embeddings are nearest to k-means centroids (no training)."""

    name = "medoid"

    @dataclass(frozen=True)
    class Config:
        #: at most one caption per image (N pairs = N distinct images), as the bundled selectors
        unique_images: bool = True
        #: maximum Lloyd iterations of k-means
        iterations: int = 50
        #: cluster L2-normalised embeddings (cosine geometry), as retrieval compares them
        normalize: bool = True

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.iterations < 1:
            raise ConfigError(f"Option 'iterations' of selector 'medoid' must be at least 1 "
                              f"(got {self.config.iterations}).")

    def select(self, ctx) -> Selection:
        train, budget, seed = ctx.train, ctx.budget, ctx.seed
        unique = self.config.unique_images
        limit = train.num_images if unique else train.num_pairs
        if isinstance(budget, bool) or not isinstance(budget, int) or budget < 1:
            raise ConfigError(f"The budget must be a whole number of pairs, at least 1 (got {budget!r}).")
        if budget > limit:
            what = f"{train.num_images} images" if unique else f"{train.num_pairs} pairs"
            raise ConfigError(f"A budget of {budget} pairs exceeds the {what} of the training split; choose "
                              f"--budget {limit} or less"
                              + (" (or allow several captions per image with --no-unique-images)." if unique else "."))
        x = train.text.detach().float().cpu()
        if self.config.normalize:
            x = F.normalize(x, dim=1)
        g = torch.Generator().manual_seed(int(seed))
        stats: dict = {}
        centroids, assign = kmeans(x, budget, iterations=self.config.iterations, generator=g, stats=stats)
        idx = nearest_to_centroids(x, centroids, assign, train.pair_image if unique else None)
        # diagnostics, recorded by `vl coreset` in the pair set's meta.json under "selection"
        inertia = float(((x - centroids[assign]) ** 2).sum())
        sizes = torch.bincount(assign, minlength=budget)
        info = {"space": "caption embeddings" + (" (L2-normalised)" if self.config.normalize else ""),
                "kmeans_iterations": stats["iterations"], "converged": stats["converged"],
                "inertia": round(inertia, 6), "largest_cluster": int(sizes.max()),
                "empty_clusters": int((sizes == 0).sum())}
        return Selection(idx, info, f"k-means inertia {inertia:.4g}, {stats['iterations']} iterations")
