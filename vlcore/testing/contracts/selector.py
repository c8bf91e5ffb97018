"""The contract of coreset selectors: :func:`check_selector`, and :func:`selector_context`."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch

from ..data import TINY_SPEC, tiny_pairs
from ..host import contract_host, use_host
from ._common import ContractError, _begin, _refuses, _require, _step
from vlcore.distill.coreset import SelectContext

def selector_context(train, spec=TINY_SPEC, host=None, *, budget: int = 1, seed: int = 0, buffer=None,
                     dataset_info: dict | None = None):
    """The :class:`vlcore.distill.coreset.SelectContext` ``vl coreset`` hands a selector's
    ``select(ctx)``, over ``train`` (pair data)."""
    return SelectContext(train=train, spec=spec, budget=budget, seed=seed, buffer=buffer, device="cpu", host=host,
                         dataset_info=dataset_info or {"name": "tiny", "fingerprint": train.key})


def _indices(result: Any, label: str) -> torch.Tensor:
    idx = result if isinstance(result, torch.Tensor) else getattr(result, "indices", result)
    try:
        t = torch.as_tensor(idx)
    except Exception:
        raise ContractError(f"{label}: select() must return pair indices (a Selection, a tensor or a "
                            f"sequence of ints), got {type(result).__name__}") from None
    _require(t.dtype in (torch.int64, torch.int32, torch.int16, torch.uint8, torch.int8) or t.numel() == 0, label,
             f"select() must return integer pair indices (got dtype {t.dtype})")
    return t.to(torch.long).reshape(-1)


def check_selector(cls: type, options: dict | None = None, *, data=None, budgets: list[int] | None = None,
                   seed: int = 0, host=None) -> Any:
    """A coreset selector, ``select(ctx)`` (the budget and seed are ``ctx.budget``, ``ctx.seed``):

    * returns exactly ``budget`` distinct pair indices of ``ctx.train`` (a ``Selection``, a tensor
      or a list of ints), at most one per image when its config has ``unique_images`` on, for
      budgets 1 and the largest allowed (the number of images, or of pairs);
    * returns the same pairs for the same seed;
    * leaves the training data untouched;
    * refuses a budget larger than the training split with a :class:`vlcore.core.errors.VLError`.

    ``data``: pair data (default :func:`vlcore.testing.data.tiny_pairs`, 8 images x 2 captions);
    models are ``tiny-cnn`` with ``hashed-bow`` embeddings.  Returns the built selector.
    """
    label, cfg = _begin(cls, "selector", options)
    with _step(label, f"building it with {cfg!r}"):
        sel = cls(cfg)
    data = data if data is not None else tiny_pairs(8, 2)
    host = contract_host(host)
    ctx = selector_context(data, TINY_SPEC, host, seed=seed)
    unique = bool(getattr(sel.config, "unique_images", False))
    most = data.num_images if unique else data.num_pairs
    budgets = budgets or sorted({1, most})
    images, text = data.images.clone(), data.text.clone()
    with use_host(host):
        for b in budgets:
            bctx = dataclasses.replace(ctx, budget=b, seed=seed)
            with _step(label, f"selecting {b} of {data.num_pairs} pairs (seed {seed})"):
                idx = _indices(sel.select(bctx), label)
                # determinism is checked at the largest budget (a fresh instance, the same seed)
                again = _indices(cls(cfg).select(bctx), label) if b == max(budgets) else idx
            _require(idx.numel() == b, label, f"a budget of {b} returned {idx.numel()} pairs")
            _require(idx.unique().numel() == b, label, f"a budget of {b} returned the same pair twice: {idx.tolist()}")
            _require(bool((idx >= 0).all() and (idx < data.num_pairs).all()), label,
                     f"indices outside 0..{data.num_pairs - 1}: {idx.tolist()}")
            if unique:
                _require(data.pair_image[idx].unique().numel() == b, label,
                         "unique_images is on but two captions of one image were selected")
            _require(idx.tolist() == again.tolist(), label,
                     f"the same seed gave other pairs ({idx.tolist()} vs {again.tolist()})")
        _require(torch.equal(data.images, images) and torch.equal(data.text, text), label,
                 "select() modified the training data")
        _refuses(label, lambda: sel.select(dataclasses.replace(ctx, budget=data.num_pairs + 1, seed=seed)),
                 f"a budget above the {data.num_pairs} training pairs must raise a VLError (e.g. ConfigError) "
                 f"saying so", "a budget above the number of training pairs did not raise")
    return sel


