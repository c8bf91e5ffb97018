"""The ``retrieval`` evaluator (installed as ``vlcore.plugins.evaluators``; on disk
``plugins/evaluators.py``): train fresh models on a pair set, report image-text retrieval."""
from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import torch

from vlcore import hookimpl
from vlcore.components import EvalContext, Evaluator
from vlcore.core.config import MAX_LR, ranged
from vlcore.core.errors import ConfigError, DivergedError
from vlcore.data.pipeline import PairData, build_backbone, build_model, features_for
from vlcore.model.metrics import aggregate, mean_curve, recall_curve, recall_from_ranks, retrieval_ranks
from vlcore.training.train import SGDConfig, embed_split, param_groups, train_model

log = logging.getLogger(__name__)


def train_phased(model, data: PairData, phases, cfg: SGDConfig, *, seed: int = 0, lr_img: float, lr_txt: float,
                 features: torch.Tensor | None = None, device="cpu", on_batch=None):
    """Train ``model`` on a phased set (PTM-ST) as published: on the pairs ``phases[0]`` (a range
    [lo, hi)) for ``cfg.epochs`` epochs, then on ``phases[1]`` for as many, ..., one SGD optimiser
    throughout (its momentum carried over); phase p shuffles with seed ``seed + p``.  ``on_batch``
    gets the pairs' indices in ``data``.  A set of one phase trains exactly as on the union."""
    opt = torch.optim.SGD(param_groups(model, lr_img, lr_txt), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    for p, (lo, hi) in enumerate(phases):
        sub = PairData(data.images[lo:hi], data.text[lo:hi], torch.arange(hi - lo), None,
                       data.captions[lo:hi] if data.captions is not None else None, None,
                       data.similarity[lo:hi, lo:hi] if data.similarity is not None else None)
        hook = (lambda idx, i, t, lo=lo: on_batch(idx + lo, i, t)) if on_batch else None
        train_model(model, sub, cfg, seed=seed + p, lr_img=lr_img, lr_txt=lr_txt, device=device, on_batch=hook,
                    features=features[lo:hi] if features is not None else None, optimizer=opt)
    return model


class RetrievalEvaluator(Evaluator):
    """Train fresh models (several seeds) on the pairs; TR/IR R@1/5/10 on the evaluation split."""

    name = "retrieval"

    @dataclass(frozen=True)
    class Config(SGDConfig):
        #: fresh models trained, one per seed (the metrics are their mean and std)
        seeds: int = ranged(3, 1)
        #: first seed; seeds are seed0, seed0+1, ...
        seed0: int = 0
        #: learning rate for both modalities; None: the pair set's learned step sizes, else --eval-default-lr
        lr: float | None = None
        #: learning rate of the evaluation models when --eval-lr is not given and the set has no learned step
        #: sizes (coresets, MDM sets); chosen on Flickr8k dev with random coresets of 100 and 1000 pairs
        #: (benchmarks/RESULTS.md)
        default_lr: float = ranged(0.03, 0, MAX_LR, lo_open=True)
        #: maximum K of the saved recall curve
        curve_k: int = ranged(50, 1)
        #: a phased set (PTM-ST): train on its subsets one after the other, epochs each, as published;
        #: off: on their union at once
        phased: bool = True

    def evaluate(self, ctx: EvalContext) -> dict:
        cfg = self.config
        if cfg.seeds < 1:
            raise ConfigError(f"the retrieval evaluator needs seeds >= 1 (got {cfg.seeds}).")
        li = cfg.lr if cfg.lr is not None else (ctx.lr_img if ctx.lr_img is not None else cfg.default_lr)
        lt = cfg.lr if cfg.lr is not None else (ctx.lr_txt if ctx.lr_txt is not None else cfg.default_lr)
        sgd = replace(cfg, lr=float(li))
        sgd.check(f"evaluator '{self.name}'")
        backbone = build_backbone(ctx.spec, ctx.host) if ctx.spec.frozen else None
        train_feats = features_for(ctx.spec, ctx.train, device=ctx.device, backbone=backbone)
        eval_feats = features_for(ctx.spec, ctx.eval_data, device=ctx.device, backbone=backbone)
        del backbone
        runs, curves = [], []
        phases = ctx.phases if cfg.phased and ctx.phases and len(ctx.phases) > 1 else None
        with ctx.progress.task(f"evaluating {ctx.train.num_pairs} pairs", cfg.seeds, unit="model") as task:
            for i in range(cfg.seeds):
                seed = cfg.seed0 + i
                model = build_model(ctx.spec, ctx.train.text.shape[1], seed=seed, host=ctx.host, device=ctx.device)
                fix = (f"lower --eval-lr (it is {cfg.lr:g})" if cfg.lr is not None else
                       f"evaluate with a fixed step size, e.g. --eval-lr {cfg.default_lr:g}")
                why = (f"The pairs are finite and within the documented ranges, so the step sizes used "
                       f"({float(li):g} image, {float(lt):g} text) are too large for this model: {fix}.")
                try:
                    if phases:
                        train_phased(model, ctx.train, phases, sgd, seed=seed, lr_img=float(li), lr_txt=float(lt),
                                     features=train_feats, device=ctx.device)
                    else:
                        train_model(model, ctx.train, sgd, seed=seed, lr_img=float(li), lr_txt=float(lt),
                                    features=train_feats, device=ctx.device)
                except DivergedError as exc:
                    raise DivergedError(f"Training a fresh model on the {ctx.train.num_pairs} pairs diverged "
                                        f"(seed {seed}: loss {exc.loss} at epoch {exc.epoch}). {why}",
                                        loss=exc.loss, epoch=exc.epoch) from None
                img, txt = embed_split(model, ctx.eval_data, features=eval_feats, device=ctx.device)
                if not (bool(torch.isfinite(img).all()) and bool(torch.isfinite(txt).all())):
                    raise DivergedError(f"A fresh model trained on the {ctx.train.num_pairs} pairs (seed {seed}) "
                                        f"gives non-finite embeddings: its training diverged. {why}")
                tr, ir = retrieval_ranks(img, txt, ctx.eval_data.pair_image)
                runs.append(recall_from_ranks(tr, ir))
                curves.append(recall_curve(tr, ir, cfg.curve_k))
                task.update(1)
        out = aggregate(runs)
        out["seeds"] = [cfg.seed0 + i for i in range(cfg.seeds)]
        out["lr_img"], out["lr_txt"] = float(li), float(lt)
        out["runs"] = runs
        out["training"] = {"phased": [list(r) for r in phases]} if phases else "union"
        out["curve"] = mean_curve(curves)
        return out


@hookimpl
def register_evaluators(register):
    register(RetrievalEvaluator)
