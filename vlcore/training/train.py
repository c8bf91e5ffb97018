"""Training a dual encoder on pair data with SGD (experts, evaluation models, selectors' quick
models, the full-data model).

One :class:`SGDConfig` describes the optimisation everywhere; the configs that train a model
(experts, the evaluator, the selectors) extend it with their own defaults.  With a frozen backbone,
features are computed once and only the heads train.  Pair data carrying learned similarity targets
(a LoRS set) trains with :func:`vlcore.model.losses.similarity_bce_loss` on them, anything else with the
contrastive loss.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

from vlcore.core.config import MAX_LR, check_ranges, ranged
from vlcore.core.errors import ConfigError, DivergedError
from vlcore.core.progress import NULL, Progress
from vlcore.data.dataset import to_float
from vlcore.data.pipeline import PairData
from vlcore.model.encoder import DualEncoder
from vlcore.model.losses import contrastive_loss, similarity_bce_loss
from vlcore.model.metrics import recall_from_ranks, retrieval_ranks

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class SGDConfig:
    """Minibatch SGD of a dual encoder's trainable parameters."""

    #: passes over the training pairs
    epochs: int = ranged(50, 1)
    #: pairs per SGD step
    batch_size: int = ranged(64, 2)
    #: SGD learning rate (both modalities)
    lr: float = ranged(0.1, 0, MAX_LR, lo_open=True)
    #: SGD momentum
    momentum: float = ranged(0.9, 0, 1, hi_open=True)
    #: SGD weight decay (L2)
    weight_decay: float = ranged(5e-4, 0, 1)

    def check(self, owner: str = "training") -> None:
        """Raise ConfigError for values no training can use (outside the options' ranges)."""
        check_ranges(self, owner)


@dataclass(frozen=True)
class FullDataConfig(SGDConfig):
    """The full-data model of ``vl train``: the upper bound every small set is compared with.

    The heads overfit a split like Flickr8k's within a few epochs, so by default the number of
    epochs is chosen on images held out of the training split and the model then retrained on all
    of it for that many epochs (benchmarks/RESULTS.md, "The full-data model")."""

    #: epochs (the most that are tried, with select_epochs)
    epochs: int = 20
    #: pairs per SGD step: more negatives per contrastive batch
    batch_size: int = 512
    lr: float = 0.03
    #: choose the epochs on images held out of the training split, then retrain on all of it
    select_epochs: bool = True
    #: training images held out to choose the epochs (0: 10% of them)
    select_images: int = ranged(0, 0)
    #: seed of the model's initialisation, the batch order and the held-out images
    seed: int = 0


#: drop the last incomplete batch when it has fewer than this many pairs
MIN_BATCH = 2


def param_groups(model: DualEncoder, lr_img: float, lr_txt: float) -> list[dict]:
    groups = []
    for modality, lr in ((model.IMG, lr_img), (model.TXT, lr_txt)):
        params = list(model.trainable_named(modality).values())
        if params:
            groups.append({"params": params, "lr": lr, "name": modality})
    return groups


def train_model(model: DualEncoder, data: PairData, cfg: SGDConfig, *, seed: int = 0,
                lr_img: float | None = None, lr_txt: float | None = None,
                features: torch.Tensor | None = None, device: str | torch.device = "cpu",
                on_epoch: Callable[[int, DualEncoder], None] | None = None,
                on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
                progress: Progress = NULL, desc: str = "training",
                optimizer: torch.optim.Optimizer | None = None) -> DualEncoder:
    """Train ``model`` on ``data`` for ``cfg.epochs`` epochs of shuffled pair minibatches.

    ``lr_img`` / ``lr_txt`` override ``cfg.lr`` per modality (a distilled set's learned step sizes).
    ``features``: precomputed backbone features of ``data.images`` (required for a frozen backbone,
    where only the heads train).  ``on_epoch(e, model)`` is called before the first epoch (e=0) and
    after each epoch e=1..T; ``on_batch(pair_idx, img_emb, txt_emb)`` after each forward pass.
    ``optimizer``: an SGD optimiser over ``model``'s parameters to continue (its state carried over:
    a phased set trained subset by subset); None: a new one.
    """
    if model.frozen and features is None:
        raise ValueError("a frozen-backbone model trains on precomputed features; pass features=")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    li = cfg.lr if lr_img is None else lr_img
    lt = cfg.lr if lr_txt is None else lr_txt
    opt = optimizer or torch.optim.SGD(param_groups(model, li, lt), momentum=cfg.momentum,
                                       weight_decay=cfg.weight_decay)
    text = data.text.to(device)
    pair_image = data.pair_image
    feats = features.to(device) if features is not None else None
    similarity = data.similarity.to(device) if data.similarity is not None else None
    model.train()
    if on_epoch:
        on_epoch(0, model)
    n = data.num_pairs
    with progress.task(desc, cfg.epochs, unit="epoch") as task:
        for epoch in range(1, cfg.epochs + 1):
            order = torch.randperm(n, generator=gen)
            for s in range(0, n, cfg.batch_size):
                idx = order[s:s + cfg.batch_size]
                if len(idx) < MIN_BATCH:
                    continue
                img_idx = pair_image[idx]
                if feats is not None:
                    img_emb = model.embed_image_features(feats[img_idx.to(device)])
                else:
                    img_emb = model.encode_image(to_float(data.images[img_idx]).to(device))
                txt_emb = model.encode_text(text[idx.to(device)])
                if similarity is not None:
                    i = idx.to(device)
                    loss = similarity_bce_loss(img_emb, txt_emb, similarity[i][:, i])
                else:
                    loss = contrastive_loss(img_emb, txt_emb)
                if on_batch:
                    on_batch(idx, img_emb.detach(), txt_emb.detach())
                if not math.isfinite(loss.item()):
                    raise DivergedError(f"{desc}: the training loss became {loss.item()} at epoch {epoch} with "
                                        f"learning rates {li:g} (image) / {lt:g} (text). Lower the learning rate "
                                        f"(--lr).", loss=loss.item(), epoch=epoch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            bad = [n for n, p in model.trainable_named().items() if not bool(torch.isfinite(p).all())]
            if bad:
                raise DivergedError(f"{desc}: parameters became non-finite ({', '.join(bad[:3])}) in epoch {epoch} "
                                    f"with learning rates {li:g} (image) / {lt:g} (text). Lower the learning rate "
                                    f"(--lr).", loss=float("nan"), epoch=epoch)
            if on_epoch:
                on_epoch(epoch, model)
            task.update(1)
    model.eval()
    return model


def select_epochs(build, data: PairData, cfg: FullDataConfig, *, features: torch.Tensor | None = None,
                  device: str | torch.device = "cpu", progress: Progress = NULL) -> dict:
    """Choose the number of epochs: train ``build()`` (a fresh model) on the training images but a
    held-out share, measure retrieval on that share after every epoch, and return the epoch with
    the best rsum and the curve."""
    n = data.num_images
    held = cfg.select_images or max(1, n // 10)
    if not 0 < held < n:
        raise ConfigError(f"select_images={held} must be between 1 and {n - 1} (the training images).")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(cfg.seed))
    inner, outer = order[held:].sort().values, order[:held].sort().values
    train, hold = data.images_subset(inner), data.images_subset(outer)
    f_train = features[inner] if features is not None else None
    f_hold = features[outer] if features is not None else None
    curve: list[dict] = []

    def on_epoch(e, model):
        if e == 0:
            return
        img, txt = embed_split(model, hold, features=f_hold, device=device)
        m = recall_from_ranks(*retrieval_ranks(img, txt, hold.pair_image))
        curve.append({"epoch": e, **{k: round(v, 3) for k, v in m.items()}})
        model.train()

    train_model(build(), train, cfg, seed=cfg.seed, features=f_train, device=device, on_epoch=on_epoch,
                progress=progress, desc=f"choosing epochs ({held} of {n} images held out)")
    best = max(curve, key=lambda c: c["rsum"])
    return {"epochs": best["epoch"], "held_out_images": held, "curve": curve}


@torch.no_grad()
def embed_split(model: DualEncoder, data: PairData, *, features: torch.Tensor | None = None,
                device: str | torch.device = "cpu", batch_size: int = 256) -> tuple[torch.Tensor, torch.Tensor]:
    """(image embeddings, text embeddings) of an evaluation split."""
    model.eval()
    img = []
    for s in range(0, data.num_images, batch_size):
        if features is not None:
            img.append(model.embed_image_features(features[s:s + batch_size].to(device)).cpu())
        else:
            img.append(model.encode_image(to_float(data.images[s:s + batch_size]).to(device)).cpu())
    txt = [model.encode_text(data.text[s:s + batch_size].to(device)).cpu()
           for s in range(0, data.num_pairs, batch_size)]
    return torch.cat(img), torch.cat(txt)
