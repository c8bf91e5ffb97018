"""Training a dual encoder on pair data with SGD (experts, evaluation models, the full-data model).

With a frozen backbone, features are computed once and only the heads train.
"""
from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Callable

import torch

from .data import to_float
from .model import DualEncoder, contrastive_loss
from .pipeline import PairData

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 50
    batch_size: int = 64
    lr_img: float = 0.1
    lr_txt: float = 0.1
    momentum: float = 0.9
    weight_decay: float = 5e-4
    #: drop the last incomplete batch when it has fewer than this many pairs
    min_batch: int = 2


def param_groups(model: DualEncoder, cfg: TrainConfig) -> list[dict]:
    groups = []
    for modality, lr in ((model.IMG, cfg.lr_img), (model.TXT, cfg.lr_txt)):
        params = list(model.trainable_named(modality).values())
        if params:
            groups.append({"params": params, "lr": lr, "name": modality})
    return groups


def train_model(model: DualEncoder, data: PairData, cfg: TrainConfig, *, seed: int = 0,
                features: torch.Tensor | None = None, device: str | torch.device = "cpu",
                on_epoch: Callable[[int, DualEncoder], None] | None = None,
                on_batch: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], None] | None = None,
                progress: Callable[[int], None] | None = None) -> DualEncoder:
    """Train ``model`` on ``data`` for ``cfg.epochs`` epochs of shuffled pair minibatches.

    ``features``: precomputed backbone features of ``data.images`` (required for a frozen backbone,
    where only the heads train).  ``on_epoch(e, model)`` is called before the first epoch (e=0) and
    after each epoch e=1..T; ``on_batch(pair_idx, img_emb, txt_emb)`` after each forward pass.
    """
    if model.frozen and features is None:
        raise ValueError("a frozen-backbone model trains on precomputed features; pass features=")
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)  # dropout
    opt = torch.optim.SGD(param_groups(model, cfg), momentum=cfg.momentum, weight_decay=cfg.weight_decay)
    text = data.text.to(device)
    pair_image = data.pair_image
    feats = features.to(device) if features is not None else None
    model.train()
    if on_epoch:
        on_epoch(0, model)
    n = data.num_pairs
    for epoch in range(1, cfg.epochs + 1):
        order = torch.randperm(n, generator=gen)
        for s in range(0, n, cfg.batch_size):
            idx = order[s:s + cfg.batch_size]
            if len(idx) < cfg.min_batch:
                continue
            img_idx = pair_image[idx]
            if feats is not None:
                img_emb = model.embed_image_features(feats[img_idx.to(device)])
            else:
                img_emb = model.encode_image(to_float(data.images[img_idx]).to(device))
            txt_emb = model.encode_text(text[idx.to(device)])
            loss = contrastive_loss(img_emb, txt_emb)
            if on_batch:
                on_batch(idx, img_emb.detach(), txt_emb.detach())
            if not math.isfinite(loss.item()):
                raise FloatingPointError(f"training loss became {loss.item()} at epoch {epoch}; "
                                         f"lower the learning rate")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if on_epoch:
            on_epoch(epoch, model)
        if progress:
            progress(epoch)
    model.eval()
    return model


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
