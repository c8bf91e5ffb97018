"""Evaluate pair sets (distilled or coreset) and the full training split alike."""
from __future__ import annotations

from typing import Callable

import torch

from .model import ModelSpec
from .pairset import PairSet
from .pipeline import PairData, check_text_dim, build_text_encoder
from .registry import PluginHost, get_host


def pairset_data(ps: PairSet) -> PairData:
    return PairData(ps.images, ps.text, torch.arange(len(ps)), None, list(ps.captions))


def evaluate_pairs(train: PairData | PairSet, eval_data: PairData, spec: ModelSpec, *,
                   evaluator: str = "retrieval", options: dict | None = None,
                   lr_img: float | None = None, lr_txt: float | None = None,
                   device: str = "cpu", host: PluginHost | None = None,
                   progress: Callable[[int], None] | None = None) -> dict:
    """Score ``train`` (a pair set or pair data) with an evaluator component on ``eval_data``."""
    host = host or get_host()
    if isinstance(train, PairSet):
        lr_img = train.lr_img if lr_img is None else lr_img
        lr_txt = train.lr_txt if lr_txt is None else lr_txt
        train = pairset_data(train)
    check_text_dim("The pair set", int(train.text.shape[1]), build_text_encoder(spec, host), spec)
    ev = host.create("evaluator", evaluator, options or {})
    return ev.evaluate(train, eval_data, spec, lr_img=lr_img, lr_txt=lr_txt, device=device, host=host,
                       progress=progress)
