"""The distillation contract: what a distiller is (:class:`Distiller`, a recipe of overridable
steps, and its :class:`RecipeConfig`), what it gets (:class:`DistillContext`), the run state the
steps share (:class:`RunState`) and what a step returns (:class:`StepResult`).  The loop that drives
them is :func:`vlcore.distill.recipe.run` (callers run ``run(distiller, ctx)``, as a selector is run
by :func:`vlcore.distill.coreset.run_selector`).
"""
from __future__ import annotations

import math
from abc import abstractmethod
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch

from vlcore.artifacts.checkpoint import load_state, save_state
from vlcore.core.component import Component
from vlcore.core.config import ranged
from vlcore.core.errors import DivergedError
from vlcore.core.progress import NULL, Progress
from vlcore.core.registry import PluginHost
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import PairData
from vlcore.distill.health import problems, read
from vlcore.model.encoder import ModelSpec
from vlcore.training.buffer import Buffer
from vlcore.training.evaluate import evaluate_pairs

log = logging.getLogger(__name__)


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
    #: as the recipe's own typed object (:class:`vlcore.distill.matching.MatchingRun`); the distiller instance
    #: holds no run state
    runtime: Any = None
    #: ``time.time()`` when this process took the run over, less the seconds of the processes before it
    #: (``info["seconds"]`` of the checkpoint it resumed), so ``time.time() - started`` is the run's
    #: distillation time so far; set by the loop, not checkpointed (the checkpoint keeps the seconds)
    started: float | None = None

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


@dataclass(frozen=True)
class PeriodicEval:
    """The quick evaluation a distillation runs every ``eval_every`` iterations (on --eval-split)."""

    #: Fresh models per periodic evaluation.
    seeds: int = ranged(1, 1)
    #: Epochs each periodic evaluation model trains.
    epochs: int = ranged(30, 1)


@dataclass
class DistillContext:
    """What a distiller gets from ``vl distill``."""

    spec: ModelSpec                 # the buffer's
    buffer: Buffer
    train: PairData                 # the real training split (images, caption embeddings, captions)
    out: Path
    eval_data: PairData | None = None   # the dev split for periodic evaluation (never test)
    dataset_info: dict = field(default_factory=dict)
    device: str = "cpu"
    seed: int = 0
    resume: bool = False
    host: PluginHost | None = None
    progress: Progress = NULL
    #: the periodic evaluation's models (``eval_data`` given)
    eval_options: PeriodicEval = field(default_factory=PeriodicEval)
    #: experiment tracking (:class:`vlcore.artifacts.loggers.Loggers`); None: the always-on ``jsonl`` logger only
    loggers: Any = None
    #: more records for the pair set's meta.json (e.g. the defaults `vl distill` picked)
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeConfig:
    """The options the shared recipe loop (:func:`vlcore.distill.recipe.run`) reads: every distiller's
    ``Config`` inherits it (``class Config(RecipeConfig): ...``) and adds its own fields; a subclass
    may give these another default (its range stays) but not remove them."""

    #: synthetic pairs to distil
    pairs: int = ranged(100, 2)
    #: outer iterations (at least 1: zero would save the initialisation as a distilled set)
    iterations: int = ranged(500, 1)
    #: save a checkpoint every N iterations (0: only at the end; always on Ctrl-C and SIGTERM)
    checkpoint_every: int = ranged(25, 0)
    #: evaluate on the dev split every N iterations (0: only at the end)
    eval_every: int = ranged(0, 0)
    #: stop after this many failed iterations in a row (non-finite, or rolled back)
    max_failures: int = ranged(5, 1)


#: the :class:`RecipeConfig` fields a resumed run may change (``iterations`` may grow: resuming
#: extends a run); a run key leaves them out
VOLATILE = ("iterations", "eval_every", "checkpoint_every", "max_failures")


class Distiller(Component):
    """Base class: synthesises a small pair set, as a *recipe* of overridable steps.

    The shared loop runs it (``run(distiller, ctx)``, :func:`vlcore.distill.recipe.run`); it owns resume, the
    non-finite guards (gradient and state), checkpoints, periodic dev evaluation, progress and
    figures, and calls, in order::

        state = setup(ctx)                      # validate, build what the run needs (state.runtime)
        init_synthetic(ctx, state)              # the initial learned tensors and their optimisers
        state = load_checkpoint(ctx, state, path)   # resuming: the saved values into them
        for each outer iteration:
            result = step(ctx, state)           # the outer loss and its gradients
            ... the loop applies them with state.optimizers, then check_state(state):
            ... an update it objects to is rolled back; the loop logs ...
            check_health(ctx, state)            # after an applied update: each problem warned once, recorded
            evaluate(ctx, state)                # every eval_every iterations
            save_checkpoint(ctx, state, path)   # every checkpoint_every iterations, and on Ctrl-C / SIGTERM
        diagnose(ctx, state)                    # warnings about the run
        return finalise(ctx, state)             # the pair set (the loop saves it into ctx.out)
        figures(ctx, state, pair_set)           # PNGs of the run

    Its ``Config`` subclasses :class:`RecipeConfig` (the fields the loop reads: ``pairs``,
    ``iterations``, ``checkpoint_every``, ``eval_every``, ``max_failures``).  Everything a run
    builds lives in the :class:`~vlcore.distill.contract.RunState` (``state.runtime`` for what no checkpoint
    holds: the model, caches), never on the distiller, so one instance can run again.  A method
    overrides the steps that differ and nothing else; trajectory-matching methods subclass
    :class:`vlcore.distill.matching.TrajectoryMatching` (``needs_unroll``), a method without an unrolled
    student (distribution matching) subclasses this class directly.
    """

    Config = RecipeConfig

    #: logged names of the step metrics (``StepResult.metrics`` keys), e.g. ``{"img": "loss/image"}``
    scalar_names: ClassVar[dict[str, str]] = {}
    #: whether it differentiates through an unrolled student with an unroll backend (then its Config
    #: names the backend in a field ``unroll`` with metadata ``{"kind": "unroll_backend"}``; without one
    #: it has no such field, and no --unroll flag)
    needs_unroll: ClassVar[bool] = False

    def __init__(self, config=None):
        super().__init__(config)
        if not isinstance(self.config, RecipeConfig):
            raise TypeError(f"distiller '{self.name}': its Config must subclass vlcore.components.RecipeConfig "
                            f"(the recipe loop reads pairs, iterations, checkpoint_every, eval_every, max_failures)")

    def expert_defaults(self) -> dict[str, Any]:
        """The Stage 1 settings (``vlcore.training.experts.ExpertConfig`` fields) `vl distill` uses when
        it trains the buffer itself (no ``--buffer``); default: ExpertConfig's own."""
        return {}

    def failure_hint(self) -> str:
        """What to change when ``max_failures`` iterations in a row failed (non-finite, or rolled
        back): the loop's :class:`~vlcore.distill.recipe.NonFiniteError` ends with it, so it names this
        method's own flags."""
        return "Lower the learning rates of the learned tensors."

    @abstractmethod
    def setup(self, ctx: DistillContext) -> RunState:
        """Validate the run and build what it needs; return an empty run state (what the run
        builds and no checkpoint holds, e.g. the model, in its ``runtime``)."""

    @abstractmethod
    def init_synthetic(self, ctx: DistillContext, state: RunState) -> None:
        """Fill ``state.learned`` (and its optimisers) with the initial synthetic set."""

    @abstractmethod
    def step(self, ctx: DistillContext, state: RunState) -> StepResult:
        """One outer iteration: the loss and the gradients of ``state.learned`` (not applied)."""

    def evaluate(self, ctx: DistillContext, state: RunState) -> dict | None:
        """Dev metrics of the current set: :meth:`snapshot` trained on by ``ctx.eval_options``'s fresh
        models and scored on ``ctx.eval_data`` (None: no evaluation data, or the evaluation models
        diverged; the run goes on and the evaluation is not recorded)."""
        if ctx.eval_data is None:
            return None
        try:
            return evaluate_pairs(self.snapshot(ctx, state), ctx.eval_data, ctx.spec,
                                  options=asdict(ctx.eval_options), device=ctx.device, host=ctx.host)
        except DivergedError as exc:
            log.warning("dev evaluation after iteration %d skipped: %s", state.iteration, exc)
            return None

    def save_checkpoint(self, ctx: DistillContext, state: RunState, path: Path) -> None:
        save_state(state, path)

    def load_checkpoint(self, ctx: DistillContext, state: RunState, path: Path) -> RunState:
        """The saved state of ``path``, into the freshly set-up ``state`` (its tensors give the shapes)."""
        return load_state(state, path)

    def check_state(self, state: RunState) -> str | None:
        """After an update: None when the learned tensors are acceptable (finite, within the
        method's documented bounds), else what is wrong (the loop then rolls the update back)."""
        return None

    def check_health(self, ctx: DistillContext, state: RunState) -> dict[str, str]:
        """After an applied update: what makes the current set unhealthy (the rule of
        :mod:`vlcore.distill.health`), by what (``"pixels"``, ``"text"``), each with its value and likely
        cause; the loop warns once per entry during the run and records it in the pair set's
        ``meta["warnings"]``.  Default: the rule on ``state.learned["images"]`` and ``["text"]``
        (text measured against ``state.info["text_norm0"]``, else 1), the cause their learning rates
        (the Config's ``lr_images`` / ``lr_text``, when it has them)."""
        L = state.learned
        if "images" not in L or "text" not in L:
            return {}
        found = problems(read(L["images"], L["text"], state.info.get("text_norm0") or 1.0))
        out = {}
        for what, message in found.items():
            option = "lr_images" if what == "pixels" else "lr_text"
            lr = getattr(self.config, option, None)
            flag = f"--{option.replace('_', '-')} {lr:g}" if lr is not None else "the learning rate"
            out[what] = (f"{message}. Likely cause: {flag} is too high for {ctx.spec.encoder} at "
                         f"{ctx.spec.image_size} px on this data; lower it.")
        return out

    def diagnose(self, ctx: DistillContext, state: RunState) -> list[str]:
        """After the last iteration: warnings about the run (a loss stuck at its trivial value,
        collapsed step sizes); the loop logs them and records them in the pair set's
        ``meta["warnings"]``.  Default: none."""
        return []

    def meta_record(self, ctx: DistillContext, state: RunState) -> dict[str, Any]:
        """The opening keys of a distilled set's meta.json, the same for every distiller: what made it
        (method, config, spec, dataset, seed, buffer), how far it ran and the pairs it started from."""
        return {"kind": "distilled", "method": self.name, "config": asdict(self.config),
                "spec": ctx.spec.as_dict(), "dataset": ctx.dataset_info, "seed": ctx.seed,
                "buffer": {"path": str(Path(ctx.buffer.path).resolve()), "index": ctx.buffer.index.get("expert"),
                           "experts": ctx.buffer.num_experts, "content": ctx.buffer.content_key()},
                "iterations_done": state.history["iteration"][-1] if state.history["iteration"] else 0,
                "source_ids_are": "the real pairs the synthetic set was initialised from",
                "init": state.info.get("init")}

    @abstractmethod
    def snapshot(self, ctx: DistillContext, state: RunState) -> PairSet:
        """The current synthetic set as a pair set (not saved)."""

    def finalise(self, ctx: DistillContext, state: RunState) -> PairSet:
        """The final pair set (the loop saves it into ``ctx.out``); default: the last snapshot."""
        return self.snapshot(ctx, state)

    def figures(self, ctx: DistillContext, state: RunState, ps: PairSet) -> None:
        """PNGs of the run (default: none)."""
