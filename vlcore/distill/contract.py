"""One component model for every kind, and the bases and typed contexts of the algorithmic kinds.

Every component class (image and text encoders, datasets, distillers, selectors, evaluators,
unroll backends, loggers) subclasses :class:`Component`: a lowercase ``name``, a docstring whose first line
is its help text, a nested frozen dataclass ``Config`` holding its options, built as
``cls(config)`` (image encoders also take ``image_size``), and the ``@abstractmethod``\\ s of its
kind.  The kinds themselves are declared once, in :data:`vlcore.kinds.KINDS`.

An algorithmic kind takes one typed context object: ``Distiller.distill(ctx)`` (a recipe, see
:class:`Distiller`), ``Selector.select(ctx)``, ``Evaluator.evaluate(ctx)``; a new field in a
context changes no signature.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

from .config import ranged
from .progress import NULL, Progress

if TYPE_CHECKING:  # pragma: no cover
    import torch

    from .model import ModelSpec
    from .pairset import PairSet
    from .pipeline import PairData
    from .recipe import RunState, StepResult
    from .registry import PluginHost
    from .trajectories import Buffer


class Component(ABC):
    """Base of every component kind."""

    name: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def summary(cls) -> str:
        """The first line of the class docstring (its help text)."""
        doc = (cls.__doc__ or "").strip()
        return doc.splitlines()[0] if doc else ""

    def named_components(self) -> list[tuple[str, str]]:
        """(kind, name) of every component its Config names (the fields declared with metadata
        ``{"kind": ...}``, e.g. a distiller's unroll backend), so a command checks they exist before
        any work; none for a Config that names none."""
        from dataclasses import fields

        return [(f.metadata["kind"], getattr(self.config, f.name)) for f in fields(self.config)
                if f.metadata.get("kind") and getattr(self.config, f.name) is not None]


# =========================================================================== selectors
@dataclass
class SelectContext:
    """What a selector gets from ``vl coreset``."""

    train: PairData                 # the real training split
    spec: ModelSpec                 # the buffer's when a buffer is given
    budget: int = 100               # pairs to choose
    seed: int = 0
    buffer: Buffer | None = None
    device: str = "cpu"
    host: PluginHost | None = None
    progress: Progress = NULL
    dataset_info: dict = field(default_factory=dict)


@dataclass
class Selection:
    """Pair indices into ``ctx.train`` in the order chosen, JSON diagnostics (meta["selection"]) and
    a one-line summary of them for the console (e.g. ``mean error 0.012``)."""

    indices: Any                    # torch.LongTensor (budget,)
    info: dict = field(default_factory=dict)
    summary: str = ""


class Selector(Component):
    """Base class: chooses a budget of real pairs (a coreset)."""

    @abstractmethod
    def select(self, ctx: SelectContext) -> Selection:
        """Return ``ctx.budget`` distinct pair indices of ``ctx.train`` (a Selection, tensor or list);
        raise ConfigError for a budget < 1 or larger than the pairs (images with unique_images)."""


# =========================================================================== evaluators
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


# =========================================================================== distillers
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
    eval_options: dict = field(default_factory=dict)
    #: experiment tracking (:class:`vlcore.loggers.Loggers`); None: the always-on ``jsonl`` logger only
    loggers: Any = None
    #: more records for the pair set's meta.json (e.g. the defaults `vl distill` picked)
    meta: dict = field(default_factory=dict)


@dataclass(frozen=True)
class RecipeConfig:
    """The options the shared recipe loop (:func:`vlcore.recipe.run`) reads: every distiller's
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

    :meth:`distill` runs the shared loop (:func:`vlcore.recipe.run`), which owns resume, the
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
    builds lives in the :class:`~vlcore.recipe.RunState` (``state.runtime`` for what no checkpoint
    holds: the model, caches), never on the distiller, so one instance can run again.  A method
    overrides the steps that differ and nothing else; trajectory-matching methods subclass
    :class:`vlcore.matching.TrajectoryMatching` (``needs_unroll``), a method without an unrolled
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
        """The Stage 1 settings (``vlcore.trajectories.ExpertConfig`` fields) `vl distill` uses when
        it trains the buffer itself (no ``--buffer``); default: ExpertConfig's own."""
        return {}

    def failure_hint(self) -> str:
        """What to change when ``max_failures`` iterations in a row failed (non-finite, or rolled
        back): the loop's :class:`~vlcore.recipe.NonFiniteError` ends with it, so it names this
        method's own flags."""
        return "Lower the learning rates of the learned tensors."

    def distill(self, ctx: DistillContext) -> PairSet:
        """Run the recipe; return the pair set (also saved into ``ctx.out``)."""
        from .recipe import run

        return run(self, ctx)

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
        """Dev metrics of the current set (None: no evaluation)."""
        return None

    def save_checkpoint(self, ctx: DistillContext, state: RunState, path: Path) -> None:
        from .checkpoint import save_state

        save_state(state, path)

    def load_checkpoint(self, ctx: DistillContext, state: RunState, path: Path) -> RunState:
        """The saved state of ``path``, into the freshly set-up ``state`` (its tensors give the shapes)."""
        from .checkpoint import load_state

        return load_state(state, path)

    def check_state(self, state: RunState) -> str | None:
        """After an update: None when the learned tensors are acceptable (finite, within the
        method's documented bounds), else what is wrong (the loop then rolls the update back)."""
        return None

    def check_health(self, ctx: DistillContext, state: RunState) -> dict[str, str]:
        """After an applied update: what makes the current set unhealthy (the rule of
        :mod:`vlcore.health`), by what (``"pixels"``, ``"text"``), each with its value and likely
        cause; the loop warns once per entry during the run and records it in the pair set's
        ``meta["warnings"]``.  Default: the rule on ``state.learned["images"]`` and ``["text"]``
        (text measured against ``state.info["text_norm0"]``, else 1), the cause their learning rates
        (the Config's ``lr_images`` / ``lr_text``, when it has them)."""
        from .health import problems, read

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

    @abstractmethod
    def snapshot(self, ctx: DistillContext, state: RunState) -> PairSet:
        """The current synthetic set as a pair set (not saved)."""

    def finalise(self, ctx: DistillContext, state: RunState) -> PairSet:
        """The final pair set (the loop saves it into ``ctx.out``); default: the last snapshot."""
        return self.snapshot(ctx, state)

    def figures(self, ctx: DistillContext, state: RunState, ps: PairSet) -> None:
        """PNGs of the run (default: none)."""
