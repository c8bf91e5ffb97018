"""The contract of evaluators: :func:`check_evaluator`."""
from __future__ import annotations

import torch

from ..data import TINY_SPEC, tiny_pairs
from ..host import contract_host, use_host
from ._common import _begin, _require, _step
from vlcore.model.metrics import KEYS
from vlcore.training.evaluate import EvalContext

def check_evaluator(cls: type, options: dict | None = None, *, train=None, eval_data=None, host=None) -> dict:
    """An evaluator, ``evaluate(ctx)`` with a :class:`vlcore.training.evaluate.EvalContext` (the pairs,
    the evaluation split, the spec, learned step sizes or None, device, host, progress):

    * returns a dict with the six recalls ``tr_r1 tr_r5 tr_r10 ir_r1 ir_r5 ir_r10`` as finite
      percentages in [0, 100] (and ``rsum``, if present, their sum);
    * gives the same numbers twice, and works with given step sizes too.

    ``train`` defaults to 8 tiny pairs (a pair set: one caption per image), ``eval_data`` to
    8 other images with 2 captions each; the model is ``tiny-cnn`` with ``hashed-bow``
    embeddings.  ``options`` should keep it fast (e.g. one seed, a few epochs).  Returns the metrics.
    """
    label, cfg = _begin(cls, "evaluator", options)
    train = train if train is not None else tiny_pairs(8, 1, seed=0).select(torch.arange(8))
    eval_data = eval_data if eval_data is not None else tiny_pairs(8, 2, seed=1)
    host = contract_host(host)
    with use_host(host):
        runs = []
        for lr in (None, None, 0.05):
            ctx = EvalContext(train=train, eval_data=eval_data, spec=TINY_SPEC, lr_img=lr, lr_txt=lr, device="cpu",
                              host=host)
            with _step(label, f"evaluating with {cfg!r} (lr_img=lr_txt={lr})"):
                runs.append(cls(cfg).evaluate(ctx))
    m = runs[0]
    _require(isinstance(m, dict), label, f"evaluate() must return a dict (got {type(m).__name__})")
    for r in runs:
        for k in KEYS:
            v = r.get(k)
            _require(isinstance(v, (int, float)) and not isinstance(v, bool) and 0.0 <= float(v) <= 100.0, label,
                     f"metric {k!r} must be a percentage in [0, 100] (got {v!r})")
        if "rsum" in r:
            _require(abs(float(r["rsum"]) - sum(float(r[k]) for k in KEYS)) < 1e-3, label,
                     "rsum must be the sum of the six recalls")
    _require(all(abs(float(runs[0][k]) - float(runs[1][k])) < 1e-6 for k in KEYS), label,
             "two evaluations of the same pairs gave different recalls")
    return m


