"""Evaluate pair sets (distilled or coreset) and the full training split alike."""
from __future__ import annotations

from .components import EvalContext
from .model import ModelSpec
from .pairset import PairSet
from .pipeline import PairData, build_text_encoder, check_text_dim
from .progress import NULL, Progress
from .registry import PluginHost, get_host


def evaluate_pairs(train: PairData | PairSet, eval_data: PairData, spec: ModelSpec, *,
                   evaluator: str = "retrieval", options: dict | None = None,
                   lr_img: float | None = None, lr_txt: float | None = None,
                   device: str = "cpu", host: PluginHost | None = None, progress: Progress = NULL) -> dict:
    """Score ``train`` (a pair set, with its learned step sizes and similarity, or pair data) with
    an evaluator component on ``eval_data``."""
    host = host or get_host()
    if isinstance(train, PairSet):
        lr_img = train.lr_img if lr_img is None else lr_img
        lr_txt = train.lr_txt if lr_txt is None else lr_txt
        train = train.data()
    check_text_dim("The pair set", int(train.text.shape[1]), build_text_encoder(spec, host), spec)
    ev = host.create("evaluator", evaluator, options or {})
    return ev.evaluate(EvalContext(train=train, eval_data=eval_data, spec=spec, lr_img=lr_img, lr_txt=lr_txt,
                                   device=device, host=host, progress=progress))
