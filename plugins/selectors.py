"""Coreset selectors: the paper's four baselines (random, herding, k-center, forgetting) adapted to
image-caption pairs, which have no classes.

A selector chooses ``budget`` real training pairs; ``vl coreset`` saves them as the same pair-set
artifact that distillation writes, so ``vl eval`` scores both alike.

**Pairs, not images.**  A budget of N is N image-caption pairs.  With ``unique_images=True`` (the
default) a coreset holds at most one caption per image, so N pairs are N distinct images -- the
fair comparison with a distilled set of N (image, text) pairs.  With ``unique_images=False`` several
captions of one image may be chosen.  The budget may not exceed the number of pairs (of images when
``unique_images`` is on).

**The embedding space** (option ``space`` of herding and k-center):

* ``expert`` (default): the concatenation ``[normalise(image embedding), normalise(text
  embedding)]`` of a trained dual encoder, one row per pair (the image half is shared by the
  captions of one image).  With ``--buffer`` the model is the buffer's expert ``expert`` (default 0)
  at its *final* epoch, built with the buffer's model spec.  Without a buffer, a quick model is
  trained on the training split exactly like an expert (SGD lr 0.1, no momentum or weight decay,
  batch 128, ``epochs`` epochs, default 5; the backbone's features are cached and only the heads
  train when the spec's backbone is frozen), seeded with the selection seed.
* ``raw``: ``[normalise(backbone features), normalise(caption embedding)]`` -- the image encoder's
  *initial* (pretrained) global features and the frozen text encoder's output, no training.  This
  only makes sense for a pretrained encoder (e.g. ``effnet-lite0``); the ``convnet`` has no
  pretrained weights, so its raw features are those of a random network and mean little.

**The methods.**

* ``random``: a seeded uniformly random order of the pairs, taken in order (skipping pairs whose
  image is already chosen when ``unique_images``).
* ``herding`` (Welling 2009; Chen et al. 2010): greedy; at step t it adds the pair x minimising
  ``||mu - (s + x) / t||`` where mu is the mean of *all* training pairs and s the sum of those
  chosen so far, so the running mean of the coreset tracks the data mean.  Deterministic given the
  space (the seed only enters through the quick model, if one is trained).
* ``kcenter``: greedy farthest-point (k-center greedy, Gonzalez 1985; Sener & Savarese 2018): each
  new center is the pair farthest from its nearest chosen center.  Its covering radius is at most
  twice the optimal one (without the unique-images constraint).  The first center is drawn at
  random with the seed (``first="random"``, default) or is the pair nearest the mean
  (``first="mean"``).
* ``forgetting`` (Toneva et al., ICLR 2019): a fresh model trains ``epochs`` epochs (default 10) on
  the training split with the experts' SGD.  After every forward pass each pair of the minibatch is
  *learned* when it is retrieved top-1 within its batch in either direction: its image's row of the
  batch similarity matrix peaks at its caption (image -> text), or its caption's column peaks at its
  image (text -> image); a retrieved pair of the *same image* counts as correct, since several
  captions of one image can share a batch.  A *forgetting event* is a change from learned to not
  learned between two consecutive presentations of the pair.  The pairs with the most events are
  chosen; pairs never learned rank above all others (as in Toneva et al., they count as forgotten
  infinitely often); remaining ties are broken at random with the seed.  With ``unique_images`` the
  ranking is walked down skipping pairs whose image is already taken.  Forgetting always trains
  its own model (``--buffer`` only sets the default model spec and dataset).

Large datasets: herding and k-center never build an N x N matrix.  Herding keeps the running sum
and scores every candidate with one matrix-vector product per step, k-center keeps each pair's
squared distance to its nearest center and updates it with one matrix-vector product per new
center: O(N d) time and memory per step, float32.

The pure algorithms (:func:`herding`, :func:`kcenter_greedy`, :class:`ForgettingTracker`,
:func:`take_in_order`) work on plain tensors and are tested against brute-force references.

**Writing a selector.**  Subclass :class:`vlcore.components.Selector`; ``select(ctx, budget, seed)``
gets a :class:`SelectContext` and returns a :class:`Selection` (or just a tensor / list of pair
indices into ``ctx.train``, in the order chosen).  :func:`run_selector` checks the answer (budget
distinct pairs, one per image when the config has ``unique_images`` on) and builds the artifact.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F

from vlcore import hookimpl
from vlcore.components import SelectContext, Selection, Selector  # noqa: F401 (re-exported)
from vlcore.data import to_float
from vlcore.errors import ConfigError, VLError
from vlcore.io import versions
from vlcore.pairset import PairSet

log = logging.getLogger(__name__)


# =========================================================================== context and result
# =========================================================================== pure algorithms
def check_budget(budget: int, num_pairs: int, num_images: int | None = None) -> None:
    """Raise ConfigError unless 1 <= budget <= pairs (<= images when ``num_images`` is given, i.e.
    with unique images)."""
    if not isinstance(budget, int) or isinstance(budget, bool):
        raise ConfigError(f"The budget must be a whole number of pairs (got {budget!r}).")
    if budget < 1:
        raise ConfigError(f"The budget must be at least 1 pair (got {budget}).")
    if budget > num_pairs:
        raise ConfigError(f"A budget of {budget} pairs exceeds the {num_pairs} pairs of the training split; "
                          f"choose --budget {num_pairs} or less.")
    if num_images is not None and budget > num_images:
        raise ConfigError(
            f"A budget of {budget} pairs with unique images (at most one caption per image) exceeds the "
            f"{num_images} images of the training split; choose --budget {num_images} or less, or allow "
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


def _steps(n: int, progress: bool | str, desc: str):
    if not progress:
        return range(n)
    from tqdm.auto import tqdm

    return tqdm(range(n), desc=desc if isinstance(progress, bool) else progress, unit="pair", leave=False)


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
            progress: bool | str = False) -> torch.Tensor:
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
                   progress: bool | str = False, return_distances: bool = False):
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


# =========================================================================== embedding spaces
def _expert_train_config(cfg) -> Any:
    from vlcore.train import TrainConfig

    return TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr_img=cfg.lr, lr_txt=cfg.lr,
                       momentum=cfg.momentum, weight_decay=cfg.weight_decay)


def _random_init(spec) -> bool:
    """Whether the spec's image encoder starts from random weights (no pretrained ones)."""
    p = str((spec.encoder_options or {}).get("pretrained", "auto")).strip().lower()
    return p == "none" or (spec.encoder == "convnet" and p == "auto")


def _backbone_features(ctx: SelectContext, spec, backbone) -> torch.Tensor:
    """Features of ``ctx.train``'s images through ``backbone`` (eval mode, no gradient); cached on
    disk for pretrained encoders only (the cache is keyed by the spec, not by a random init)."""
    from vlcore.pipeline import cached_features, compute_features

    backbone = backbone.to(ctx.device)
    if _random_init(spec):
        return compute_features(backbone, ctx.train.images, device=ctx.device, progress=ctx.progress)
    return cached_features(spec, backbone, ctx.train, device=ctx.device, progress=ctx.progress)


def _epoch_bar(ctx: SelectContext, total: int, desc: str):
    if not ctx.progress:
        return None
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="epoch", leave=False)


def train_quick_model(ctx: SelectContext, cfg, seed: int, *, on_batch: Callable | None = None,
                      desc: str = "quick model"):
    """A dual encoder trained on ``ctx.train`` like an expert (SGD, ``cfg.epochs`` epochs, seeded).

    Returns (model, backbone features or None).
    """
    from vlcore.pipeline import build_model
    from vlcore.train import train_model

    text_dim = int(ctx.train.text.shape[1])
    model = build_model(ctx.spec, text_dim, seed=seed, host=ctx.host, device=ctx.device)
    feats = _backbone_features(ctx, ctx.spec, model.backbone) if model.frozen else None
    bar = _epoch_bar(ctx, cfg.epochs, f"{desc} ({ctx.train.num_pairs} pairs)")
    try:
        train_model(model, ctx.train, _expert_train_config(cfg), seed=seed, features=feats, device=ctx.device,
                    on_batch=on_batch, progress=(lambda e: bar.update(1)) if bar is not None else None)
    finally:
        if bar is not None:
            bar.close()
    return model, feats


def _expert_model(ctx: SelectContext, expert: int):
    """The buffer's expert ``expert`` at its final epoch, built with the buffer's spec."""
    from vlcore.pipeline import build_model

    buf = ctx.buffer
    text_dim = int(ctx.train.text.shape[1])
    buf.check_compatible(ctx.spec, text_dim)
    n = buf.num_experts
    if n == 0:
        raise VLError(f"Buffer '{buf.path}' holds no finished expert yet. Run `vl experts` (it resumes).")
    if not 0 <= expert < n:
        raise ConfigError(f"Option 'expert' is {expert} but buffer '{buf.path}' holds {n} experts "
                          f"(0..{n - 1}).")
    model = build_model(buf.spec, text_dim, seed=0, host=ctx.host, device=ctx.device)
    params = buf.params(buf.load(expert), buf.epochs)
    _, unexpected = model.load_state_dict(params, strict=False)
    trainable = set(model.trainable_named())
    if unexpected or trainable - set(params):
        raise VLError(f"Buffer '{buf.path}' does not hold the trainable parameters of the model its spec "
                      f"builds now (missing: {sorted(trainable - set(params))[:3]}, unexpected: "
                      f"{sorted(unexpected)[:3]}); retrain it with `vl experts`.")
    model.eval()
    feats = _backbone_features(ctx, buf.spec, model.backbone) if model.frozen else None
    return model, feats


def joint_space(ctx: SelectContext, cfg, seed: int) -> tuple[torch.Tensor, dict]:
    """(P, D) float32 joint embedding of every training pair and a description of the space."""
    from vlcore.train import embed_split

    train = ctx.train
    if cfg.expert != 0 and (ctx.buffer is None or cfg.space != "expert"):
        raise ConfigError(f"Option expert={cfg.expert} picks an expert of --buffer for space='expert'; "
                          f"pass --buffer (or drop the option).")
    if cfg.space == "raw":
        from vlcore.pipeline import build_backbone

        if _random_init(ctx.spec):
            log.warning("space='raw' with a randomly initialised image encoder (%s): its features are those "
                        "of a random network (seeded); prefer space='expert' or a pretrained encoder.",
                        ctx.spec.encoder)
        torch.manual_seed(seed)  # a random init is seeded as build_model(spec, seed=seed) seeds it
        feats = _backbone_features(ctx, ctx.spec, build_backbone(ctx.spec, ctx.host))
        img = F.normalize(feats.float(), dim=-1)
        txt = F.normalize(train.text.float(), dim=-1)
        info = {"space": "raw", "image": f"{ctx.spec.encoder} backbone features (initial weights)",
                "text": f"{ctx.spec.text_encoder} caption embeddings"}
    elif cfg.space == "expert":
        if ctx.buffer is not None:
            model, feats = _expert_model(ctx, cfg.expert)
            info = {"space": "expert", "model": "buffer expert", "buffer": str(ctx.buffer.path),
                    "expert": cfg.expert, "epoch": ctx.buffer.epochs}
        else:
            model, feats = train_quick_model(ctx, cfg, seed, desc="embedding model")
            info = {"space": "expert", "model": "quick model trained on the training split", "seed": seed,
                    "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size}
        img, txt = embed_split(model, train, features=feats, device=ctx.device)
        img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
    else:  # pragma: no cover - the Literal type rejects it first
        raise ConfigError(f"unknown space {cfg.space!r}; use 'expert' or 'raw'")
    joint = torch.cat([img[train.pair_image], txt], dim=1).contiguous()
    info["dim"] = int(joint.shape[1])
    return joint, info


# =========================================================================== components
class PairSelector(Selector):
    """Base of the bundled selectors: the budget check and the unique-images rule."""

    @dataclass(frozen=True)
    class Config:
        #: at most one caption per image (N pairs = N distinct images)
        unique_images: bool = True

    def _check(self, ctx: SelectContext, budget: int) -> torch.Tensor | None:
        train = ctx.train
        unique = self.config.unique_images
        check_budget(budget, train.num_pairs, train.num_images if unique else None)
        return train.pair_image if unique else None

    def select(self, ctx: SelectContext, budget: int, seed: int) -> Selection:
        raise NotImplementedError


@dataclass(frozen=True)
class _TrainOptions(PairSelector.Config):
    #: epochs of the model trained for the embedding space / forgetting statistics
    epochs: int = 10
    #: SGD of that model, as the experts' (vl experts defaults)
    lr: float = 0.1
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 128


@dataclass(frozen=True)
class _SpaceOptions(_TrainOptions):
    #: epochs of the quick embedding model (without --buffer)
    epochs: int = 5
    #: joint embedding space: expert (trained model) or raw (initial backbone + text features)
    space: Literal["expert", "raw"] = "expert"
    #: with --buffer: which expert's final-epoch parameters embed the pairs
    expert: int = 0


def _check_train_options(cfg, name: str) -> None:
    if cfg.epochs < 1:
        raise ConfigError(f"Option 'epochs' of selector '{name}' must be at least 1 (got {cfg.epochs}).")
    if cfg.batch_size < 2:
        raise ConfigError(f"Option 'batch_size' of selector '{name}' must be at least 2 (got {cfg.batch_size}).")
    if not cfg.lr > 0:
        raise ConfigError(f"Option 'lr' of selector '{name}' must be positive (got {cfg.lr}).")


class _TrainingSelector(PairSelector):
    """Base of the selectors that train a model (embedding space or forgetting statistics)."""

    def __init__(self, config=None):
        super().__init__(config)
        _check_train_options(self.config, self.name)


class RandomSelector(PairSelector):
    """Random: uniformly random real pairs (seeded)."""

    name = "random"

    def select(self, ctx: SelectContext, budget: int, seed: int) -> Selection:
        groups = self._check(ctx, budget)
        order = torch.randperm(ctx.train.num_pairs, generator=torch.Generator().manual_seed(int(seed)))
        return Selection(take_in_order(order, budget, groups), {})


class HerdingSelector(_TrainingSelector):
    """Herding: greedy pairs whose running mean tracks the data mean in a joint image-text space."""

    name = "herding"

    @dataclass(frozen=True)
    class Config(_SpaceOptions):
        pass

    def select(self, ctx: SelectContext, budget: int, seed: int) -> Selection:
        groups = self._check(ctx, budget)
        X, info = joint_space(ctx, self.config, seed)
        idx = herding(X, budget, groups=groups, progress="herding" if ctx.progress else False)
        info["mean_error"] = round(mean_error(X, idx), 6)
        return Selection(idx, info)


class KCenterSelector(_TrainingSelector):
    """K-center: greedy farthest-point pairs in a joint image-text space (covers it evenly)."""

    name = "kcenter"

    @dataclass(frozen=True)
    class Config(_SpaceOptions):
        #: first center: a random pair (seeded) or the pair nearest the mean
        first: Literal["random", "mean"] = "random"

    def select(self, ctx: SelectContext, budget: int, seed: int) -> Selection:
        groups = self._check(ctx, budget)
        X, info = joint_space(ctx, self.config, seed)
        if self.config.first == "mean":
            mu = X.mean(0)  # nearest the mean: argmin ||x||^2 - 2 x.mu, without an N x D temporary
            first = int(torch.argmin((X * X).sum(1) - 2.0 * (X @ mu)))
        else:
            first = int(torch.randint(X.shape[0], (1,), generator=torch.Generator().manual_seed(int(seed))))
        idx, dist = kcenter_greedy(X, budget, first, groups=groups, progress="k-center" if ctx.progress else False,
                                   return_distances=True)
        info.update({"first": first, "covering_radius": round(float(dist.max()), 6)})
        return Selection(idx, info)


class ForgettingSelector(_TrainingSelector):
    """Forgetting: the pairs most often forgotten (top-1 in-batch retrieval lost) while a model trains."""

    name = "forgetting"

    @dataclass(frozen=True)
    class Config(_TrainOptions):
        pass

    def select(self, ctx: SelectContext, budget: int, seed: int) -> Selection:
        groups = self._check(ctx, budget)
        tracker = ForgettingTracker(ctx.train.num_pairs, ctx.train.pair_image)
        train_quick_model(ctx, self.config, seed, on_batch=tracker.update, desc="forgetting statistics")
        order = tracker.ranking(seed)
        idx = take_in_order(order, budget, groups)
        scores = tracker.scores()[idx]
        info = {"events": tracker.summary(),
                "selected_never_learned": int(torch.isinf(scores).sum()),
                "selected_min_events": (None if torch.isinf(scores).all()
                                        else int(scores[~torch.isinf(scores)].min()))}
        return Selection(idx, info)


# =========================================================================== the artifact
def as_selection(result: Any) -> Selection:
    """A third-party selector may return a Selection, a tensor or a sequence of pair indices."""
    if isinstance(result, Selection):
        return result
    return Selection(torch.as_tensor(result, dtype=torch.long).reshape(-1), {})


def run_selector(selector: Selector, ctx: SelectContext, budget: int, seed: int) -> PairSet:
    """Run ``selector`` and turn its choice into a pair-set artifact (not yet saved).

    Checks the answer: ``budget`` distinct pair indices of the training split, one per image when
    the selector's config has ``unique_images`` on.
    """
    t0 = time.time()
    sel = as_selection(selector.select(ctx, budget, seed))
    idx = sel.indices.to(torch.long).cpu()
    train = ctx.train
    name = getattr(selector, "name", type(selector).__name__)
    if idx.numel() != budget:
        raise VLError(f"selector '{name}' returned {idx.numel()} pairs for a budget of {budget}.")
    if idx.numel() and (idx.min() < 0 or idx.max() >= train.num_pairs):
        raise VLError(f"selector '{name}' returned pair indices outside 0..{train.num_pairs - 1}.")
    if idx.unique().numel() != idx.numel():
        raise VLError(f"selector '{name}' returned the same pair twice.")
    cfg = getattr(selector, "config", None)
    if getattr(cfg, "unique_images", False) and train.pair_image[idx].unique().numel() != idx.numel():
        raise VLError(f"selector '{name}' returned two captions of one image although unique_images is on.")
    return coreset_pairset(train, idx, method=name, config=cfg, seed=seed, spec=ctx.spec,
                           dataset_info=ctx.dataset_info, selection=sel.info,
                           seconds=round(time.time() - t0, 2), buffer=ctx.buffer)


def source_ids(train, idx: torch.Tensor) -> list[tuple[str, int]] | None:
    """(image id, caption index within that image) of each pair, when the split is known."""
    if train.split is None:
        return None
    pairs = train.split.pairs()
    return [(train.split.image_ids[int(pairs[i, 0])], int(pairs[i, 1])) for i in idx.tolist()]


def coreset_pairset(train, idx: torch.Tensor, *, method: str, config=None, seed: int = 0, spec=None,
                    dataset_info: dict | None = None, selection: dict | None = None,
                    seconds: float | None = None, buffer=None) -> PairSet:
    """The pairs ``idx`` of ``train`` as a pair set: real images (float [0, 1], at the split's size),
    their caption embeddings and captions, the source pair ids, and the full record in ``meta``."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    images = to_float(train.images[train.pair_image[idx]]).clone()
    caps = [train.captions[i] for i in idx.tolist()] if train.captions else [f"pair #{i}" for i in idx.tolist()]
    cfg = asdict(config) if config is not None and hasattr(config, "__dataclass_fields__") else (config or {})
    meta = {"kind": "coreset", "method": method, "config": cfg, "budget": int(idx.numel()), "seed": int(seed),
            "spec": spec.as_dict() if spec is not None else None, "dataset": dataset_info or {},
            "pair_indices": idx.tolist(),
            "source_ids_are": "the selected real pairs: (image file, caption index within the image)",
            "selection": selection or {}, "versions": versions()}
    if buffer is not None:
        meta["buffer"] = {"path": str(buffer.path), "index": buffer.index.get("expert"),
                          "experts": buffer.num_experts}
    if seconds is not None:
        meta["seconds"] = seconds
    return PairSet(images=images, text=train.text[idx].detach().float().clone(), captions=caps, meta=meta,
                   source_ids=source_ids(train, idx))


@hookimpl
def register_selectors(register):
    register(RandomSelector)
    register(HerdingSelector)
    register(KCenterSelector)
    register(ForgettingSelector)
