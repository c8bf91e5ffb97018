"""The pure algorithms of the bundled selectors, on plain tensors (tested against brute force):
budget checks, herding, k-center greedy and forgetting statistics."""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from vlcore.core.errors import ConfigError
from vlcore.core.progress import NULL, Progress


def check_budget(budget: int, num_pairs: int, num_images: int | None = None) -> None:
    """Raise ConfigError unless 1 <= budget <= pairs (<= images when ``num_images`` is given, i.e.
    with unique images)."""
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise ConfigError(f"The budget must be a whole number of pairs (got {budget!r}).")
    if budget < 1:
        raise ConfigError(f"The budget must be at least 1 pair (got {budget}).")
    if budget > num_pairs:
        raise ConfigError(f"A budget of {budget} pairs exceeds the {num_pairs} pairs of the training split; "
                          f"choose --pairs {num_pairs} or less.")
    if num_images is not None and budget > num_images:
        raise ConfigError(
            f"A budget of {budget} pairs with unique images (at most one caption per image) exceeds the "
            f"{num_images} images of the training split; choose --pairs {num_images} or less, or allow "
            f"several captions per image with --no-unique-images.")


def _groups_count(groups: torch.Tensor | None, n: int) -> int | None:
    return None if groups is None else int(torch.unique(groups).numel())


def _check_groups(groups: torch.Tensor | None, n: int) -> torch.Tensor | None:
    if groups is None:
        return None
    groups = torch.as_tensor(groups, dtype=torch.long).reshape(-1)
    if groups.numel() != n:
        raise ValueError(f"groups has {groups.numel()} entries for {n} points")
    return groups


def _steps(n: int, progress: Progress, desc: str):
    with progress.task(desc, n, unit="pair") as task:
        for i in range(n):
            yield i
            task.update(1)


def take_in_order(order: torch.Tensor, budget: int, groups: torch.Tensor | None = None) -> torch.Tensor:
    """The first ``budget`` entries of ``order``; with ``groups`` (the image of each pair), skip an
    entry whose group was already taken."""
    order = torch.as_tensor(order, dtype=torch.long).reshape(-1)
    if groups is None:
        if budget > order.numel():
            raise ConfigError(f"cannot take {budget} of {order.numel()} entries")
        return order[:budget].clone()
    groups = torch.as_tensor(groups, dtype=torch.long)
    taken: set[int] = set()
    out: list[int] = []
    for i, g in zip(order.tolist(), groups[order].tolist()):
        if g in taken:
            continue
        taken.add(g)
        out.append(i)
        if len(out) == budget:
            break
    if len(out) < budget:
        raise ConfigError(f"only {len(out)} distinct images available for a budget of {budget}")
    return torch.tensor(out, dtype=torch.long)


@torch.no_grad()
def herding(features: torch.Tensor, budget: int, *, groups: torch.Tensor | None = None,
            progress: Progress = NULL) -> torch.Tensor:
    """Greedy herding: step t picks the unchosen row x minimising ``||mu - (s + x) / t||``.

    ``mu`` is the mean of all rows, ``s`` the sum of the rows chosen so far.  Since
    ``||mu - (s + x)/t||^2 = ||w - x||^2 / t^2`` with ``w = t mu - s``, each step is one
    matrix-vector product: ``argmin ||x||^2 - 2 x.w``.  With ``groups``, at most one row per group.
    Returns the chosen row indices in order.  Ties go to the lowest index.
    """
    X = features if features.dtype in (torch.float32, torch.float64) else features.float()
    n = X.shape[0]
    groups = _check_groups(groups, n)
    check_budget(budget, n, _groups_count(groups, n))
    mu = X.mean(0)
    sq = (X * X).sum(1)
    blocked = torch.zeros(n, dtype=torch.bool)
    s = torch.zeros_like(mu)
    inf = torch.tensor(float("inf"), dtype=X.dtype)
    chosen: list[int] = []
    for t in _steps(budget, progress, "herding"):
        w = (t + 1) * mu - s
        score = torch.where(blocked, inf, sq - 2.0 * (X @ w))
        i = int(torch.argmin(score))
        chosen.append(i)
        s += X[i]
        blocked[i] = True
        if groups is not None:
            blocked |= groups == groups[i]
    return torch.tensor(chosen, dtype=torch.long)


def mean_error(features: torch.Tensor, indices: torch.Tensor) -> float:
    """``||mean(all rows) - mean(chosen rows)||``: what herding minimises greedily."""
    return float(torch.linalg.vector_norm(features.mean(0) - features[indices].mean(0)))


@torch.no_grad()
def kcenter_greedy(features: torch.Tensor, budget: int, first: int, *, groups: torch.Tensor | None = None,
                   progress: Progress = NULL, return_distances: bool = False):
    """Greedy farthest-point selection starting from row ``first``.

    Keeps each row's squared distance to its nearest chosen center, updated with one
    matrix-vector product per new center (``||x||^2 - 2 x.c + ||c||^2``); the next center is the
    eligible row with the largest such distance (ties: lowest index).  With ``groups``, rows sharing
    a chosen row's group become ineligible as centers (they still count for coverage).  Returns the
    chosen indices in order, and with ``return_distances`` also the final distance (not squared) of
    every row to its nearest center.
    """
    X = features if features.dtype in (torch.float32, torch.float64) else features.float()
    n = X.shape[0]
    groups = _check_groups(groups, n)
    check_budget(budget, n, _groups_count(groups, n))
    if not 0 <= int(first) < n:
        raise ValueError(f"first center {first} is out of range for {n} points")
    sq = (X * X).sum(1)

    def dist2(c: int) -> torch.Tensor:
        return (sq - 2.0 * (X @ X[c]) + sq[c]).clamp_min_(0.0)

    blocked = torch.zeros(n, dtype=torch.bool)
    neg = torch.tensor(-1.0, dtype=X.dtype)
    chosen: list[int] = []
    min_d = None
    i = int(first)
    for _ in _steps(budget, progress, "k-center"):
        if min_d is not None:
            i = int(torch.argmax(torch.where(blocked, neg, min_d)))
        chosen.append(i)
        d = dist2(i)
        d[i] = 0.0
        min_d = d if min_d is None else torch.minimum(min_d, d)
        blocked[i] = True
        if groups is not None:
            blocked |= groups == groups[i]
    idx = torch.tensor(chosen, dtype=torch.long)
    if return_distances:
        return idx, min_d.sqrt()
    return idx


@torch.no_grad()
def covering_radius(features: torch.Tensor, centers: torch.Tensor, chunk: int = 4096) -> float:
    """``max_x min_c ||x - c||``, in row chunks (never an N x N matrix)."""
    C = features[centers]
    out = 0.0
    for s in range(0, features.shape[0], chunk):
        out = max(out, float(torch.cdist(features[s:s + chunk], C).min(1).values.max()))
    return out


@torch.no_grad()
def batch_learned(img_emb: torch.Tensor, txt_emb: torch.Tensor,
                  groups: torch.Tensor | None = None) -> torch.Tensor:
    """Which pairs of a batch are retrieved top-1 within the batch in either direction.

    Pair i is learned when the argmax of row i of the cosine-similarity matrix (image -> text) or
    of column i (text -> image) is i -- or, with ``groups`` (the batch's image ids), any pair of the
    same image as i.  Ties go to the lowest index (``torch.argmax``).
    """
    sim = F.normalize(img_emb.float(), dim=-1) @ F.normalize(txt_emb.float(), dim=-1).t()
    i2t, t2i = sim.argmax(1), sim.argmax(0)
    if groups is None:
        me = torch.arange(sim.shape[0], device=sim.device)
        return ((i2t == me) | (t2i == me)).cpu()
    g = torch.as_tensor(groups, device=sim.device)
    return ((g[i2t] == g) | (g[t2i] == g)).cpu()


class ForgettingTracker:
    """Counts forgetting events per pair (Toneva et al. 2019); usable as ``train_model``'s
    ``on_batch`` callback.

    ``update(pair_idx, img_emb, txt_emb)`` marks each pair of the batch learned or not
    (:func:`batch_learned`); a learned -> not-learned change between two consecutive presentations
    of a pair is one forgetting event.  ``pair_image`` (the image of every pair) makes a retrieved
    caption or image of the same picture count as correct.
    """

    def __init__(self, num_pairs: int, pair_image: torch.Tensor | None = None):
        self.num_pairs = int(num_pairs)
        self.pair_image = None if pair_image is None else torch.as_tensor(pair_image, dtype=torch.long)
        #: -1: never presented, 0: not learned at the last presentation, 1: learned
        self.last = torch.full((self.num_pairs,), -1, dtype=torch.int8)
        self.forgotten = torch.zeros(self.num_pairs, dtype=torch.long)
        self.ever_learned = torch.zeros(self.num_pairs, dtype=torch.bool)
        self.presentations = torch.zeros(self.num_pairs, dtype=torch.long)

    @torch.no_grad()
    def update(self, pair_idx, img_emb: torch.Tensor, txt_emb: torch.Tensor) -> torch.Tensor:
        idx = torch.as_tensor(pair_idx, dtype=torch.long).reshape(-1).cpu()
        if idx.numel() != img_emb.shape[0] or idx.numel() != txt_emb.shape[0]:
            raise ValueError(f"batch of {idx.numel()} pair ids but {img_emb.shape[0]} image and "
                             f"{txt_emb.shape[0]} text embeddings")
        if idx.unique().numel() != idx.numel():
            raise ValueError("a batch must not present the same pair twice")
        groups = self.pair_image[idx] if self.pair_image is not None else None
        learned = batch_learned(img_emb, txt_emb, groups)
        self.forgotten[idx] += ((self.last[idx] == 1) & ~learned).long()
        self.last[idx] = learned.to(torch.int8)
        self.ever_learned[idx] |= learned
        self.presentations[idx] += 1
        return learned

    __call__ = update

    def scores(self) -> torch.Tensor:
        """Forgetting events per pair as floats; +inf for pairs never learned (or never seen)."""
        s = self.forgotten.double()
        s[~self.ever_learned] = math.inf
        return s

    def ranking(self, seed: int) -> torch.Tensor:
        """All pairs, most forgotten first; ties in random order drawn with ``seed``."""
        perm = torch.randperm(self.num_pairs, generator=torch.Generator().manual_seed(int(seed)))
        key = -self.scores()[perm]
        return perm[torch.argsort(key, stable=True)]

    def summary(self) -> dict:
        learned = self.ever_learned
        f = self.forgotten[learned]
        return {"pairs": self.num_pairs, "never_learned": int((~learned).sum()),
                "unforgettable": int((f == 0).sum()) if f.numel() else 0,
                "max_events": int(f.max()) if f.numel() else 0,
                "mean_events": round(float(f.float().mean()), 4) if f.numel() else 0.0,
                "mean_presentations": round(float(self.presentations.float().mean()), 3)}

