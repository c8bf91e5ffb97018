"""The contract of distillers: :func:`check_distiller`."""
from __future__ import annotations

import contextlib
import dataclasses
import typing
from pathlib import Path
from typing import Any

import torch

from vlcore.distill import recipe

from ..data import TINY_SPEC, tiny_pairs
from ..host import contract_host, use_host
from ._common import _begin, _close, _config_json, _finite, _require, _step, _workdir
from vlcore.data.pairset import PairSet
from vlcore.distill.contract import DistillContext, RecipeConfig
from vlcore.training.experts import ExpertConfig, train_experts


def _recipe_config(cls: type, label: str, cfg: Any) -> None:
    """The distiller's Config is a RecipeConfig, and it names an unroll backend exactly when it needs one."""
    cfg_cls = cls.Config
    _require(issubclass(cfg_cls, RecipeConfig), label,
             "its Config must subclass vlcore.components.RecipeConfig (class Config(RecipeConfig): ...): the recipe "
             "loop reads pairs, iterations, checkpoint_every, eval_every and max_failures from it")
    hints = typing.get_type_hints(cfg_cls)
    bad = [f.name for f in dataclasses.fields(RecipeConfig) if hints.get(f.name) is not int]
    _require(not bad, label, f"Config fields {bad} of RecipeConfig must stay integers (the loop counts with them)")
    needs = getattr(cls, "needs_unroll", None)
    _require(isinstance(needs, bool), label, f"needs_unroll must be a bool class attribute (got {needs!r})")
    unroll = [f.name for f in dataclasses.fields(cfg_cls) if f.metadata.get("kind") == "unroll_backend"]
    if needs:
        _require(unroll, label, "needs_unroll is True but no Config field names an unroll backend (declare "
                                "unroll: str = field(default=\"func\", metadata={\"kind\": \"unroll_backend\"}))")
    else:
        _require(not unroll, label, f"needs_unroll is False but Config fields {unroll} name an unroll backend: their "
                                    f"flags would do nothing (set needs_unroll = True, or drop them)")
    with _step(label, f"building it with {cfg!r}"):
        hint = cls(cfg).failure_hint()
    _require(isinstance(hint, str) and hint.strip(), label,
             "failure_hint() must return the advice (a non-empty string) a run stopped by max_failures ends with")


def check_distiller(cls: type, options: dict | None = None, *, data=None, trainable: str | None = None,
                    seed: int = 0, host=None, workdir: str | Path | None = None) -> Any:
    """A distiller, ``distill(ctx)`` with a :class:`vlcore.distill.contract.DistillContext`:

    * its ``Config`` subclasses :class:`vlcore.distill.contract.RecipeConfig` (the loop's fields stay
      integers); ``needs_unroll`` is a bool, True exactly when a Config field names an unroll
      backend (metadata ``{"kind": "unroll_backend"}``); ``failure_hint()`` is a non-empty string;
    * returns a :class:`vlcore.data.pairset.PairSet` of finite float images at the buffer's image size and
      text embeddings of the text encoder's size, and saves it into ``ctx.out``;
    * records in ``meta``: kind ``distilled``, method (its name), its full config, seed and spec;
    * holds no run state: ``distill`` adds or replaces no attribute of the instance (what a run
      builds lives in its ``RunState``), and the same instance run again gives the same pair set;
    * with ``iterations`` >= 2: a run of one iteration fewer, resumed (``ctx.resume``) with all of
      them, gives exactly (bitwise) the uninterrupted run's pair set.

    It runs on a buffer of 2 tiny experts (``tiny-cnn``, 2 epochs) trained on ``data`` (default
    :func:`vlcore.testing.data.tiny_pairs`) in the mode ``trainable`` (default: the class's
    ``requires_trainable`` attribute, else ``full``).  ``options`` should make it small and fast
    (e.g. ``{"pairs": 4, "iterations": 2}``).  Returns the pair set.
    """
    label, cfg = _begin(cls, "distiller", options)
    _recipe_config(cls, label, cfg)
    data = data if data is not None else tiny_pairs(8, 2)
    host = contract_host(host)
    trainable = trainable or getattr(cls, "requires_trainable", None) or "full"
    spec = dataclasses.replace(TINY_SPEC, trainable=trainable,
                               image_head=getattr(cls, "requires_image_head", None) or TINY_SPEC.image_head)
    info = {"name": "tiny", "fingerprint": data.key}
    with contextlib.ExitStack() as stack:
        root = _workdir(stack, workdir)
        stack.enter_context(use_host(host))
        buf = train_experts(spec, data, ExpertConfig(num_experts=2, epochs=2, batch_size=8, lr=0.05),
                            root / "buffer", dataset_info=info)

        def distill(d, run: str, resume: bool = False):
            ctx = DistillContext(spec=spec, buffer=buf, train=data, out=root / run, eval_data=None,
                                 dataset_info=info, device="cpu", seed=seed, resume=resume, host=host)
            before = dict(vars(d))
            with _step(label, f"distilling with {d.config!r} (run {run})"):
                ps = recipe.run(d, ctx)
            _require(isinstance(ps, PairSet), label, f"distill() must return a PairSet (got {type(ps).__name__})")
            after = vars(d)
            changed = sorted(k for k in set(after) | set(before)
                             if k not in after or k not in before or after[k] is not before[k])
            _require(not changed, label, f"distill() set {changed} on the distiller: keep what a run builds in its "
                                         f"RunState (state.runtime, a typed object setup makes), so one instance "
                                         f"can run again")
            with _step(label, f"loading the pair set it saved into {ctx.out}"):
                saved = PairSet.load(ctx.out)
            return ps, saved

        d = cls(cfg)
        ps, saved = distill(d, "a")
        other, _ = distill(d, "b")
        resumed = None
        if cfg.iterations >= 2:
            distill(cls(dataclasses.replace(cfg, iterations=cfg.iterations - 1)), "c")
            resumed, _ = distill(cls(cfg), "c", resume=True)
    n = len(ps)
    _require(n >= 1, label, "the pair set is empty")
    _require(ps.images.shape == (n, 3, spec.image_size, spec.image_size), label,
             f"images must be (N, 3, {spec.image_size}, {spec.image_size}), got {tuple(ps.images.shape)}")
    _require(ps.images.is_floating_point() and _finite(ps.images), label, "images must be finite floats")
    _require(ps.text.shape == (n, data.text.shape[1]) and _finite(ps.text), label,
             f"text must be finite ({n}, {data.text.shape[1]}) embeddings, got {tuple(ps.text.shape)}")
    _require(torch.equal(saved.images, ps.images.float()) and torch.equal(saved.text, ps.text.float()), label,
             "the pair set saved into ctx.out differs from the one returned")
    meta = saved.meta
    _require(meta.get("kind") == "distilled", label, f"meta['kind'] must be 'distilled' (got {meta.get('kind')!r})")
    _require(meta.get("method") == cls.name, label, f"meta['method'] must be {cls.name!r} (got {meta.get('method')!r})")
    _require(meta.get("config") == _config_json(cfg), label,
             "meta['config'] must record the full resolved config (dataclasses.asdict(self.config))")
    _require(meta.get("seed") == seed, label, f"meta['seed'] must record the seed {seed}")
    _require(isinstance(meta.get("spec"), dict), label, "meta['spec'] must record the model spec (spec.as_dict())")
    _require(len(other) == n and _close(other.images, ps.images, atol=1e-5) and _close(other.text, ps.text, atol=1e-5),
             label, "two runs with the same seed gave different pair sets")
    if resumed is not None:
        _require(torch.equal(resumed.images, ps.images) and torch.equal(resumed.text, ps.text)
                 and resumed.lr_img == ps.lr_img and resumed.lr_txt == ps.lr_txt, label,
                 f"a run of {cfg.iterations - 1} iterations resumed to {cfg.iterations} differs from an uninterrupted "
                 f"one: the checkpoint must hold the whole run state (learned tensors, optimisers, random streams)")
    return ps


