"""The bundled selector components and the joint image-text embedding spaces they select in."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Callable, Literal

import torch
import torch.nn.functional as F

from vlcore.components import SelectContext, Selection, Selector
from vlcore.errors import ConfigError, VLError

from .algorithms import ForgettingTracker, check_budget, herding, kcenter_greedy, mean_error, take_in_order

log = logging.getLogger(__name__)


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

