"""The ``retrieval`` evaluator: train fresh models on a pair set, report image-text retrieval."""
from __future__ import annotations

import logging
from dataclasses import dataclass


from vlcore import hookimpl
from vlcore.components import Evaluator
from vlcore.metrics import aggregate, recall_curve, recall_from_ranks, retrieval_ranks
from vlcore.pipeline import PairData, build_model, cached_features, build_backbone
from vlcore.train import TrainConfig, embed_split, train_model

log = logging.getLogger(__name__)


class RetrievalEvaluator(Evaluator):
    """Train fresh models (several seeds) on the pairs; TR/IR R@1/5/10 on the evaluation split."""

    name = "retrieval"

    @dataclass(frozen=True)
    class Config:
        seeds: int = 3
        #: first seed; seeds are seed0, seed0+1, ...
        seed0: int = 0
        epochs: int = 50
        batch_size: int = 64
        momentum: float = 0.9
        weight_decay: float = 5e-4
        #: learning rate for both modalities; None: the pair set's learned step sizes, else default_lr
        lr: float | None = None
        #: chosen on Flickr8k dev with random coresets of 100 and 1000 pairs (benchmarks/RESULTS.md)
        default_lr: float = 0.03
        #: maximum K of the saved recall curve
        curve_k: int = 50

    def evaluate(self, train: PairData, eval_data: PairData, spec, *, lr_img=None, lr_txt=None,
                 device="cpu", host=None, progress=None) -> dict:
        cfg = self.config
        if cfg.seeds < 1:
            raise ValueError("the retrieval evaluator needs seeds >= 1")
        li = cfg.lr if cfg.lr is not None else (lr_img if lr_img is not None else cfg.default_lr)
        lt = cfg.lr if cfg.lr is not None else (lr_txt if lr_txt is not None else cfg.default_lr)
        tcfg = TrainConfig(epochs=cfg.epochs, batch_size=cfg.batch_size, lr_img=float(li), lr_txt=float(lt),
                           momentum=cfg.momentum, weight_decay=cfg.weight_decay)
        train_feats = eval_feats = None
        if spec.trainable == "frozen":
            backbone = build_backbone(spec, host).to(device)
            train_feats = cached_features(spec, backbone, train, device=device)
            eval_feats = cached_features(spec, backbone, eval_data, device=device)
            del backbone
        runs, curves = [], []
        for i in range(cfg.seeds):
            seed = cfg.seed0 + i
            model = build_model(spec, train.text.shape[1], seed=seed, host=host, device=device)
            train_model(model, train, tcfg, seed=seed, features=train_feats, device=device)
            img, txt = embed_split(model, eval_data, features=eval_feats, device=device)
            tr, ir = retrieval_ranks(img, txt, eval_data.pair_image)
            m = recall_from_ranks(tr, ir)
            runs.append(m)
            curves.append(recall_curve(tr, ir, cfg.curve_k))
            if progress:
                progress(i + 1)
        out = aggregate(runs)
        out["seeds"] = [cfg.seed0 + i for i in range(cfg.seeds)]
        out["lr_img"], out["lr_txt"] = tcfg.lr_img, tcfg.lr_txt
        out["runs"] = runs
        n = len(curves)
        out["curve"] = {"k": curves[0]["k"],
                        "tr": [sum(c["tr"][j] for c in curves) / n for j in range(len(curves[0]["k"]))],
                        "ir": [sum(c["ir"][j] for c in curves) / n for j in range(len(curves[0]["k"]))]}
        return out


@hookimpl
def register_evaluators(register):
    register(RetrievalEvaluator)
