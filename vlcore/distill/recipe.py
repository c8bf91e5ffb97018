"""The shared loop of distillation recipes (after torchtune's recipes).

A distiller (:class:`vlcore.components.Distiller`) is a recipe: a small run state
(:class:`RunState`) and methods with one job each.  :func:`run` drives them and owns everything
around the method itself: resume from ``OUT/checkpoint.safetensors``, the non-finite guard on the
loss and gradients, the guard on the state after each update (the update is rolled back when the
recipe's :meth:`check_state` objects), the health watch (a set that leaves :mod:`vlcore.health`'s
bounds is warned about once, during the run, and recorded in ``meta["warnings"]``), checkpoints
(also on Ctrl-C / SIGTERM), periodic dev evaluation with the best-on-dev set kept, progress (through
``ctx.progress``), experiment tracking (through ``ctx.loggers``, see :mod:`vlcore.loggers`) and
figures.  It reads the recipe's
:class:`vlcore.components.RecipeConfig` fields (``pairs``, ``iterations``, ``checkpoint_every``,
``eval_every``, ``max_failures``), takes the advice of a stopped run from its ``failure_hint()``
and records the retrieval metrics of :data:`vlcore.metrics.KEYS`; it knows nothing of how a step is
computed (an unrolled student or none).
"""
from __future__ import annotations

import copy
import logging
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from . import distributed
from .checkpoint import NAME as CHECKPOINT
from .errors import VLError
from .interrupt import shielded, sigterm_as_interrupt
from .metrics import KEYS

if TYPE_CHECKING:  # pragma: no cover
    from .components import DistillContext, Distiller
    from .pairset import PairSet

log = logging.getLogger(__name__)


class NonFiniteError(VLError):
    """Too many outer iterations in a row gave a non-finite loss or gradient, or an unusable state."""


@dataclass
class RunState:
    """What a recipe run is, between two iterations: everything a checkpoint holds."""

    #: the leaf tensors the outer loop optimises, by name (synthetic images and texts, step sizes,
    #: and any method-specific ones: LoRS's similarity factors)
    learned: dict[str, torch.Tensor]
    #: the optimisers of ``learned`` (each over some of them), by name
    optimizers: dict[str, torch.optim.Optimizer]
    #: the run's seeded random stream (experts, start epochs, minibatches, ...)
    generator: torch.Generator
    #: what must not change across a resume (config, model, buffer, data, seed)
    run_key: str = ""
    #: what the run key is made of (method, config, model, buffer content, seed, data), to say what differs
    run_record: dict = field(default_factory=dict)
    #: outer iterations done (applied or skipped)
    iteration: int = 0
    #: iterations in a row that were skipped or rolled back
    failures: int = 0
    #: the dev evaluation after the last iteration is due but not done (an interrupt cut it short)
    eval_pending: bool = False
    #: per-iteration records: "iteration", "loss" and the step's metrics; "eval": dev evaluations
    history: dict[str, list] = field(default_factory=lambda: {"iteration": [], "loss": [], "eval": []})
    #: the best dev evaluation so far ({"iteration", "rsum"})
    best: dict | None = None
    #: other tensors to keep (e.g. the initial images, for figures)
    saved: dict[str, torch.Tensor] = field(default_factory=dict)
    #: other JSON to keep (e.g. the source pair ids of the initialisation)
    info: dict = field(default_factory=dict)
    #: what ``setup`` built for this run that no checkpoint holds (the model, an unroll backend, caches),
    #: as the recipe's own typed object (:class:`vlcore.matching.MatchingRun`); the distiller instance
    #: holds no run state
    runtime: Any = None

    def add_learned(self, name: str, tensor: torch.Tensor, optimizer: str, lr: float, momentum: float) -> torch.Tensor:
        """Register a learned tensor with its own SGD optimiser group ``optimizer``."""
        t = tensor.detach().clone().requires_grad_(True)
        self.learned[name] = t
        if optimizer in self.optimizers:
            self.optimizers[optimizer].add_param_group({"params": [t], "lr": lr, "momentum": momentum})
        else:
            self.optimizers[optimizer] = torch.optim.SGD([t], lr=lr, momentum=momentum)
        return t


@dataclass
class StepResult:
    """One outer iteration's loss, the gradients of the learned tensors (by name; None: no
    gradient reached it) and metrics to record (floats: per-modality matching terms, step sizes)."""

    loss: float
    grads: dict[str, torch.Tensor | None]
    metrics: dict[str, float] = field(default_factory=dict)

    def finite(self) -> bool:
        return math.isfinite(self.loss) and all(g is None or bool(torch.isfinite(g).all()) for g in self.grads.values())


def run(recipe: "Distiller", ctx: "DistillContext") -> "PairSet":
    """Run ``recipe`` on ``ctx`` to the end; return the final pair set (saved in ``ctx.out``).

    Ctrl-C and SIGTERM write a checkpoint before the interrupt propagates; the run state is
    checkpointed as it was at the end of the last whole iteration (an update and its bookkeeping
    happen entirely or not at all, and the random streams an interrupted iteration or evaluation
    had used are put back), so ``--resume`` reaches the result of an uninterrupted run.

    Every logger of ``ctx.loggers`` (the ``jsonl`` one at least) gets each iteration's scalars
    (``loss/total`` and the recipe's :attr:`~vlcore.components.Distiller.scalar_names`), the
    metrics of each dev evaluation (``dev/rsum``, ...) and the image grid at the end.
    """
    with sigterm_as_interrupt():
        return _run(recipe, ctx)


def _run(recipe, ctx) -> "PairSet":
    from dataclasses import asdict

    from .loggers import LogRun, open_loggers

    c = recipe.config
    out = Path(ctx.out)
    path = out / CHECKPOINT
    if not distributed.is_main():  # under torchrun rank 0 alone evaluates, logs and writes
        from dataclasses import replace

        from .loggers import Loggers
        from .progress import NULL

        ctx = replace(ctx, eval_data=None, progress=NULL, loggers=Loggers())
    state = recipe.setup(ctx)
    if distributed.is_main():
        out.mkdir(parents=True, exist_ok=True)
    recipe.init_synthetic(ctx, state)  # on resume too: it makes the tensors and optimisers the checkpoint fills
    resumed = ctx.resume and path.exists()
    if resumed:
        state = recipe.load_checkpoint(ctx, state, path)
        log.info("resumed %s at iteration %d", path, state.iteration)
    loggers = ctx.loggers if ctx.loggers is not None else open_loggers(host=ctx.host)
    loggers.start(LogRun(out, str(ctx.meta.get("run_name") or out.name),
                         {"method": recipe.name, "config": asdict(c), "spec": ctx.spec.as_dict(),
                          "dataset": ctx.dataset_info, "seed": ctx.seed, **ctx.meta}, resume=resumed))
    try:
        ps = _loop(recipe, ctx, state, path, loggers)
        loggers.image(state.iteration, "grid", out / "grid.png")
    finally:
        loggers.finish()
    return ps


def _loop(recipe, ctx, state: RunState, path: Path, loggers) -> "PairSet":
    c, out = recipe.config, Path(ctx.out)
    t_start = time.time()
    desc = f"{recipe.name} {c.pairs} pairs"
    task = ctx.progress.task(desc, c.iterations, unit="it", initial=state.iteration)
    try:
        if state.eval_pending:
            _evaluate(recipe, ctx, state, loggers)  # the one an interrupt cut short
        while state.iteration < c.iterations:
            _iterate(recipe, ctx, state, path, task, loggers)
        if ctx.eval_data is not None and not _evaluated(state, c.iterations):
            _evaluate(recipe, ctx, state, loggers)
    except KeyboardInterrupt:
        with shielded(deliver=False):
            _checkpoint(recipe, ctx, state, path)
        log.warning("interrupted: the run state after iteration %d is saved in %s (continue with --resume)",
                    state.iteration, path)
        raise
    finally:
        task.close()
    diagnosed = recipe.diagnose(ctx, state)
    for w in diagnosed:
        log.warning("%s", w)
    warnings = [*_health_warnings(recipe, ctx, state), *diagnosed]  # the health ones were logged during the run
    with shielded():
        _checkpoint(recipe, ctx, state, path)
        ps = recipe.finalise(ctx, state)
        ps.meta["seconds"] = round(time.time() - t_start, 1)
        _save(ctx, ps, out, warnings)
    if distributed.is_main():
        recipe.figures(ctx, state, ps)
    return ps


def _checkpoint(recipe, ctx, state: RunState, path: Path) -> None:
    if distributed.is_main():
        recipe.save_checkpoint(ctx, state, path)


def _save(ctx, ps: "PairSet", folder: Path, warnings: list[str] | None = None) -> None:
    """Save a pair set of the run with the run's own records (``ctx.meta``) and ``warnings`` (its
    ``meta["warnings"]``, which `vl eval` repeats); rank 0 alone."""
    if not distributed.is_main():
        return
    ps.meta.update(ctx.meta)
    if warnings:
        ps.meta["warnings"] = [*ps.meta.get("warnings", []), *warnings]
    ps.save(folder)


def _watch_health(recipe, ctx, state: RunState) -> None:
    """After an applied update: each problem :meth:`check_health` reports (an unhealthy set,
    :mod:`vlcore.health`) is logged as a warning the first time only, and kept in ``state.info``
    (so the checkpoint holds it: a resumed run does not warn again, and still records it)."""
    seen = state.info.setdefault("health", {})
    for what, message in (recipe.check_health(ctx, state) or {}).items():
        if what not in seen:
            seen[what] = {"iteration": state.iteration, "message": message}
            log.warning("iteration %d: %s", state.iteration, message)


def _health_warnings(recipe, ctx, state: RunState) -> list[str]:
    """The warnings a saved set records for the health problems seen so far: the current reading
    where the set is still beyond the bounds, else what was seen (and that it came back)."""
    seen = state.info.get("health") or {}
    if not seen:
        return []
    now = recipe.check_health(ctx, state) or {}
    out = []
    for what, first in seen.items():
        if what in now:
            out.append(f"after iteration {state.iteration} (first at iteration {first['iteration']}): {now[what]}")
        else:
            out.append(f"at iteration {first['iteration']} (within the bounds again by iteration {state.iteration}): "
                       f"{first['message']}")
    return out


def _eval_due(c, done: int) -> bool:
    return bool(c.eval_every) and 0 < done < c.iterations and done % c.eval_every == 0


def _evaluated(state: RunState, it: int) -> bool:
    return bool(state.history["eval"]) and state.history["eval"][-1]["iteration"] == it


def _rng(state: RunState):
    return state.generator.get_state(), torch.get_rng_state()


def _put_back(state: RunState, mark) -> None:
    state.generator.set_state(mark[0])
    torch.set_rng_state(mark[1])


def _iterate(recipe, ctx, state: RunState, path: Path, task, loggers) -> None:
    c = recipe.config
    it = state.iteration
    mark = _rng(state)
    try:
        result = recipe.step(ctx, state)
    except KeyboardInterrupt:
        _put_back(state, mark)  # the iteration did not happen: its random draws are put back
        raise
    with shielded():  # the update and its bookkeeping happen entirely or not at all
        problem = _update(recipe, state, result)
        if problem is not None:
            state.failures += 1
            log.warning("iteration %d: %s (%d in a row)", it + 1, problem, state.failures)
            state.iteration += 1
            task.update(1)
            if state.failures >= c.max_failures:
                _checkpoint(recipe, ctx, state, path)
                _save(ctx, recipe.finalise(ctx, state), Path(ctx.out), _health_warnings(recipe, ctx, state))
                raise NonFiniteError(
                    f"{state.failures} iterations in a row failed (the last: {problem}); stopped at iteration "
                    f"{it + 1} with the last good set saved in {ctx.out}. {recipe.failure_hint()}")
            return
        state.failures = 0
        state.iteration += 1
        _watch_health(recipe, ctx, state)
        done = state.iteration
        state.history["iteration"].append(done)
        state.history["loss"].append(result.loss)
        for k, v in result.metrics.items():
            state.history.setdefault(k, []).append(v)
        task.update(1, loss=f"{result.loss:.3f}", **{k: f"{v:.3g}" for k, v in result.metrics.items()
                                                      if k.startswith("lr")})
    loggers.scalars(done, {"loss/total": result.loss,
                           **{recipe.scalar_names.get(k, k): v for k, v in result.metrics.items()}})
    if _eval_due(c, done):
        state.eval_pending = True
        _evaluate(recipe, ctx, state, loggers)
    if c.checkpoint_every and done % c.checkpoint_every == 0:
        with shielded():
            _checkpoint(recipe, ctx, state, path)
            _save(ctx, recipe.snapshot(ctx, state), Path(ctx.out), _health_warnings(recipe, ctx, state))


def _update(recipe, state: RunState, result: StepResult) -> str | None:
    """Apply ``result``; None, or what was wrong (then nothing was applied, or it was rolled back)."""
    if not result.finite():
        return f"non-finite loss or gradient (loss {result.loss})"
    backup = _backup(state)
    _apply(state, result)
    problem = recipe.check_state(state)
    if problem is not None:
        _restore(state, backup)
        return f"the update was rolled back: {problem}"
    return None


def _apply(state: RunState, result: StepResult) -> None:
    for name, t in state.learned.items():
        if t.requires_grad:
            g = result.grads.get(name)
            t.grad = g.detach() if g is not None else torch.zeros_like(t)
    for opt in state.optimizers.values():
        opt.step()
        opt.zero_grad(set_to_none=True)


def _backup(state: RunState):
    return ({k: v.detach().clone() for k, v in state.learned.items()},
            {k: copy.deepcopy(o.state_dict()) for k, o in state.optimizers.items()})


def _restore(state: RunState, backup) -> None:
    tensors, opts = backup
    with torch.no_grad():
        for k, v in tensors.items():
            state.learned[k].copy_(v)
    for k, sd in opts.items():
        state.optimizers[k].load_state_dict(sd)


def _evaluate(recipe, ctx, state: RunState, loggers) -> None:
    mark = _rng(state)
    try:
        m = recipe.evaluate(ctx, state)
    except KeyboardInterrupt:
        _put_back(state, mark)  # a resumed run repeats this evaluation from the same random state
        raise
    if m is None:
        state.eval_pending = False
        return
    it = state.iteration
    record = {k: m[k] for k in (*KEYS, "rsum")}
    with shielded():
        state.eval_pending = False
        state.history["eval"].append({"iteration": it, **record})
        if state.best is None or m["rsum"] > state.best["rsum"]:
            state.best = {"iteration": it, "rsum": m["rsum"]}
            ps = recipe.snapshot(ctx, state)
            ps.meta["selected"] = {"by": "dev rsum", "iteration": it, "rsum": m["rsum"]}
            _save(ctx, ps, Path(ctx.out) / "best", _health_warnings(recipe, ctx, state))
    split = ctx.eval_data.split.name if getattr(ctx.eval_data, "split", None) is not None else "dev"
    loggers.scalars(it, {f"{split}/{k}": v for k, v in record.items()})
