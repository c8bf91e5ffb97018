"""The shared loop of distillation recipes (after torchtune's recipes).

A distiller (:class:`vlcore.distill.contract.Distiller`) is a recipe: a small run state
(:class:`~vlcore.distill.contract.RunState`) and methods with one job each.  :func:`run` drives them and owns everything
around the method itself: resume from ``OUT/checkpoint.safetensors``, the non-finite guard on the
loss and gradients, the guard on the state after each update (the update is rolled back when the
recipe's :meth:`check_state` objects), the health watch (a set that leaves :mod:`vlcore.distill.health`'s
bounds is warned about once, during the run, and recorded in ``meta["warnings"]``), checkpoints
(also on Ctrl-C / SIGTERM), periodic dev evaluation with the best-on-dev set kept, progress (through
``ctx.progress``), experiment tracking (through ``ctx.loggers``, see :mod:`vlcore.artifacts.loggers`) and
figures.  It reads the recipe's
:class:`vlcore.distill.contract.RecipeConfig` fields (``pairs``, ``iterations``, ``checkpoint_every``,
``eval_every``, ``max_failures``), takes the advice of a stopped run from its ``failure_hint()``
and records the retrieval metrics of :data:`vlcore.model.metrics.KEYS`; it knows nothing of how a step is
computed (an unrolled student or none).
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from vlcore.artifacts.checkpoint import NAME as CHECKPOINT
from vlcore.artifacts.interrupt import shielded, sigterm_as_interrupt
from vlcore.artifacts.loggers import LogRun, Loggers, open_loggers
from vlcore.core.errors import VLError
from vlcore.core.progress import NULL
from vlcore.data.pairset import PairSet
from vlcore.distill.contract import DistillContext, Distiller, RunState, StepResult
from vlcore.model.metrics import KEYS
from vlcore.training import distributed

log = logging.getLogger(__name__)


class NonFiniteError(VLError):
    """Too many outer iterations in a row gave a non-finite loss or gradient, or an unusable state."""


def run(recipe: Distiller, ctx: DistillContext) -> PairSet:
    """Run ``recipe`` on ``ctx`` to the end; return the final pair set (saved in ``ctx.out``).

    Ctrl-C and SIGTERM write a checkpoint before the interrupt propagates; the run state is
    checkpointed as it was at the end of the last whole iteration (an update and its bookkeeping
    happen entirely or not at all, and the random streams an interrupted iteration or evaluation
    had used are put back), so ``--resume`` reaches the result of an uninterrupted run.

    Every logger of ``ctx.loggers`` (the ``jsonl`` one at least) gets each iteration's scalars
    (``loss/total`` and the recipe's :attr:`~vlcore.distill.contract.Distiller.scalar_names`), the
    metrics of each dev evaluation (``dev/rsum``, ...) and the image grid at the end.
    """
    with sigterm_as_interrupt():
        return _run(recipe, ctx)


def _run(recipe, ctx) -> PairSet:
    c = recipe.config
    out = Path(ctx.out)
    path = out / CHECKPOINT
    if not distributed.is_main():  # under torchrun rank 0 alone evaluates, logs and writes
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


def _seconds(state: RunState) -> float:
    """The run's distillation seconds so far, every process that worked on it included (a resumed run
    adds its own to the checkpoint's)."""
    return round(time.time() - state.started, 1)


def _loop(recipe, ctx, state: RunState, path: Path, loggers) -> PairSet:
    state.started = time.time() - float(state.info.get("seconds") or 0.0)
    c, out = recipe.config, Path(ctx.out)
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
        ps.meta["seconds"] = _seconds(state)
        _save(ctx, ps, out, warnings)
    if distributed.is_main():
        recipe.figures(ctx, state, ps)
    return ps


def _checkpoint(recipe, ctx, state: RunState, path: Path) -> None:
    if state.started is not None:
        state.info["seconds"] = _seconds(state)  # so that a resumed run's time counts this one's
    if distributed.is_main():
        recipe.save_checkpoint(ctx, state, path)


def _save(ctx, ps: PairSet, folder: Path, warnings: list[str] | None = None) -> None:
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
    :mod:`vlcore.distill.health`) is logged as a warning the first time only, and kept in ``state.info``
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
