"""The evaluator kind (:class:`Evaluator` and its typed context :class:`EvalContext`), and
:func:`evaluate_pairs`: pair sets (distilled or coreset) and the full training split evaluated alike."""
from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

from vlcore.core.component import Component
from vlcore.core.progress import NULL, Progress
from vlcore.core.registry import PluginHost, get_host
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import PairData, build_text_encoder, check_text_dim
from vlcore.model.encoder import ModelSpec
from vlcore.model.metrics import candidates, small_split_warning


@dataclass
class EvalContext:
    """What an evaluator gets: the pairs to train on and the split to measure on."""

    train: PairData                 # a pair set (or a real split) as pair data
    eval_data: PairData             # the evaluation split
    spec: ModelSpec
    #: learned step sizes of a distilled set (None: the evaluator's default)
    lr_img: float | None = None
    lr_txt: float | None = None
    device: str = "cpu"
    host: PluginHost | None = None
    progress: Progress = NULL
    #: a phased set's pair ranges [lo, hi), in the order it is trained on them (PTM-ST); None: all at once
    phases: list[tuple[int, int]] | None = None


class Evaluator(Component):
    """Base class: scores a pair set by training fresh models on it."""

    @abstractmethod
    def evaluate(self, ctx: EvalContext) -> dict[str, Any]:
        """Train on ``ctx.train``, test on ``ctx.eval_data``; return metrics (the six recalls in %)."""



def evaluate_pairs(train: PairData | PairSet, eval_data: PairData, spec: ModelSpec, *,
                   evaluator: str = "retrieval", options: dict | None = None,
                   lr_img: float | None = None, lr_txt: float | None = None,
                   device: str = "cpu", host: PluginHost | None = None, progress: Progress = NULL) -> dict:
    """Score ``train`` (a pair set, with its learned step sizes and similarity, or pair data) with
    an evaluator component on ``eval_data``.  The result also holds ``candidates`` (the images and
    captions ranked) and, when ``eval_data`` is so small that some recalls are 100% whatever the
    model, ``warnings`` saying so (:func:`vlcore.model.metrics.small_split_warning`)."""
    host = host or get_host()
    phases = None
    if isinstance(train, PairSet):
        phases = [tuple(p["pairs"]) for p in train.meta.get("phases") or []] or None  # a phased set (PTM-ST)
        lr_img = train.lr_img if lr_img is None else lr_img
        lr_txt = train.lr_txt if lr_txt is None else lr_txt
        train = train.data()
    check_text_dim("The pair set", int(train.text.shape[1]), build_text_encoder(spec, host), spec)
    ev = host.create("evaluator", evaluator, options or {})
    out = ev.evaluate(EvalContext(train=train, eval_data=eval_data, spec=spec, lr_img=lr_img, lr_txt=lr_txt,
                                  device=device, host=host, progress=progress, phases=phases))
    out.setdefault("candidates", candidates(eval_data.num_images, eval_data.num_pairs))
    split = eval_data.split
    where = f"The evaluation split {split.dataset}/{split.name}" if split is not None else "The evaluation split"
    warning = small_split_warning(eval_data.num_images, eval_data.num_pairs, where)
    if warning:
        out["warnings"] = [*out.get("warnings", []), warning]
    return out
