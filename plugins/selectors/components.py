"""The bundled selector components and the joint image-text embedding spaces they select in."""
from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from vlcore.components import SelectContext, Selection, Selector
from vlcore.core.errors import ConfigError, VLError
from vlcore.data.pipeline import build_backbone, build_model, features_for, image_features
from vlcore.training.train import SGDConfig, embed_split, train_model

from .algorithms import ForgettingTracker, check_budget, herding, kcenter_greedy, mean_error, take_in_order

log = logging.getLogger(__name__)


# =========================================================================== options
class PairSelector(Selector):
    """Base of the bundled selectors: the budget check and the unique-images rule."""

    @dataclass(frozen=True)
    class Config:
        #: at most one caption per image (N pairs = N distinct images)
        unique_images: bool = True

    def _check(self, ctx: SelectContext) -> torch.Tensor | None:
        train = ctx.train
        unique = self.config.unique_images
        check_budget(ctx.budget, train.num_pairs, train.num_images if unique else None)
        return train.pair_image if unique else None


@dataclass(frozen=True)
class _TrainOptions(SGDConfig, PairSelector.Config):
    """SGD of the model a selector trains (embedding space / forgetting statistics): the experts'."""

    epochs: int = 10
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


class _TrainingSelector(PairSelector):
    """Base of the selectors that train a model (embedding space or forgetting statistics)."""

    def __init__(self, config=None):
        super().__init__(config)
        self.config.check(f"selector '{self.name}'")


# =========================================================================== embedding spaces
def train_quick_model(ctx: SelectContext, cfg: SGDConfig, *, on_batch: Callable | None = None,
                      desc: str = "quick model"):
    """A dual encoder trained on ``ctx.train`` like an expert (SGD, ``cfg.epochs`` epochs, seeded
    with ``ctx.seed``).  Returns (model, backbone features or None)."""
    text_dim = int(ctx.train.text.shape[1])
    model = build_model(ctx.spec, text_dim, seed=ctx.seed, host=ctx.host, device=ctx.device)
    feats = features_for(ctx.spec, ctx.train, device=ctx.device, progress=ctx.progress, backbone=model.backbone)
    train_model(model, ctx.train, cfg, seed=ctx.seed, features=feats, device=ctx.device, on_batch=on_batch,
                progress=ctx.progress, desc=f"{desc} ({ctx.train.num_pairs} pairs)")
    return model, feats


def _expert_model(ctx: SelectContext, expert: int):
    """The buffer's expert ``expert`` at its final epoch, built with the buffer's spec."""
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
    feats = features_for(buf.spec, ctx.train, device=ctx.device, progress=ctx.progress, backbone=model.backbone)
    return model, feats


def joint_space(ctx: SelectContext, cfg) -> tuple[torch.Tensor, dict]:
    """(P, D) float32 joint embedding of every training pair and a description of the space."""
    train = ctx.train
    if cfg.expert != 0 and (ctx.buffer is None or cfg.space != "expert"):
        raise ConfigError(f"Option expert={cfg.expert} picks an expert of --buffer for space='expert'; "
                          f"pass --buffer (or drop the option).")
    if cfg.space == "raw":
        backbone = build_backbone(ctx.spec, ctx.host)
        if backbone.random_init(ctx.spec.encoder_options):
            log.warning("space='raw' with a randomly initialised image encoder (%s): its features are those "
                        "of a random network (seed 0); prefer space='expert' or a pretrained encoder.",
                        ctx.spec.encoder)
        feats = image_features(ctx.spec, train, device=ctx.device, progress=ctx.progress, backbone=backbone)
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
            model, feats = train_quick_model(ctx, cfg, desc="embedding model")
            info = {"space": "expert", "model": "quick model trained on the training split", "seed": ctx.seed,
                    "epochs": cfg.epochs, "lr": cfg.lr, "batch_size": cfg.batch_size}
        img, txt = embed_split(model, train, features=feats, device=ctx.device)
        img, txt = F.normalize(img.float(), dim=-1), F.normalize(txt.float(), dim=-1)
    else:  # pragma: no cover - the Literal type rejects it first
        raise ConfigError(f"unknown space {cfg.space!r}; use 'expert' or 'raw'")
    joint = torch.cat([img[train.pair_image], txt], dim=1).contiguous()
    info["dim"] = int(joint.shape[1])
    return joint, info


# =========================================================================== components
class RandomSelector(PairSelector):
    """Random: uniformly random real pairs (seeded)."""

    name = "random"

    def select(self, ctx: SelectContext) -> Selection:
        groups = self._check(ctx)
        budget, seed = ctx.budget, ctx.seed
        order = torch.randperm(ctx.train.num_pairs, generator=torch.Generator().manual_seed(int(seed)))
        return Selection(take_in_order(order, budget, groups), {})


class HerdingSelector(_TrainingSelector):
    """Herding: greedy pairs whose running mean tracks the data mean in a joint image-text space."""

    name = "herding"
    Config = _SpaceOptions

    def select(self, ctx: SelectContext) -> Selection:
        groups = self._check(ctx)
        X, info = joint_space(ctx, self.config)
        idx = herding(X, ctx.budget, groups=groups, progress=ctx.progress)
        info["mean_error"] = round(mean_error(X, idx), 6)
        return Selection(idx, info, f"mean error {info['mean_error']:.4g}")


class KCenterSelector(_TrainingSelector):
    """K-center: greedy farthest-point pairs in a joint image-text space (covers it evenly)."""

    name = "kcenter"

    @dataclass(frozen=True)
    class Config(_SpaceOptions):
        #: first center: a random pair (seeded) or the pair nearest the mean
        first: Literal["random", "mean"] = "random"

    def select(self, ctx: SelectContext) -> Selection:
        groups = self._check(ctx)
        budget, seed = ctx.budget, ctx.seed
        X, info = joint_space(ctx, self.config)
        if self.config.first == "mean":
            mu = X.mean(0)  # nearest the mean: argmin ||x||^2 - 2 x.mu, without an N x D temporary
            first = int(torch.argmin((X * X).sum(1) - 2.0 * (X @ mu)))
        else:
            first = int(torch.randint(X.shape[0], (1,), generator=torch.Generator().manual_seed(int(seed))))
        idx, dist = kcenter_greedy(X, budget, first, groups=groups, progress=ctx.progress,
                                   return_distances=True)
        info.update({"first": first, "covering_radius": round(float(dist.max()), 6)})
        return Selection(idx, info, f"covering radius {info['covering_radius']:.4g}")


class ForgettingSelector(_TrainingSelector):
    """Forgetting: the pairs most often forgotten (top-1 in-batch retrieval lost) while a model trains."""

    name = "forgetting"
    Config = _TrainOptions

    def select(self, ctx: SelectContext) -> Selection:
        groups = self._check(ctx)
        budget, seed = ctx.budget, ctx.seed
        tracker = ForgettingTracker(ctx.train.num_pairs, ctx.train.pair_image)
        train_quick_model(ctx, self.config, on_batch=tracker.update, desc="forgetting statistics")
        order = tracker.ranking(seed)
        idx = take_in_order(order, budget, groups)
        scores = tracker.scores()[idx]
        info = {"events": tracker.summary(),
                "selected_never_learned": int(torch.isinf(scores).sum()),
                "selected_min_events": (None if torch.isinf(scores).all()
                                        else int(scores[~torch.isinf(scores)].min()))}
        ev = info["events"]
        return Selection(idx, info, f"forgetting events: max {ev['max_events']}, {ev['never_learned']} pairs never "
                                    f"learned, {info['selected_never_learned']} of them selected")

