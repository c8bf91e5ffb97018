"""Base classes of the algorithmic component kinds: distillers, coreset selectors, evaluators.

(Image encoders, text encoders and datasets have theirs in ``model``, ``text`` and ``data``.)
Every component class has a lowercase ``name``, a docstring whose first line is its help text, and
a nested frozen dataclass ``Config``; it is built as ``cls(config)``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar


class Component:
    name: ClassVar[str] = ""

    @dataclass(frozen=True)
    class Config:
        pass

    def __init__(self, config=None):
        self.config = config if config is not None else self.Config()

    @classmethod
    def summary(cls) -> str:
        return (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""


class Evaluator(Component):
    """Base class: scores a pair set by training fresh models on it."""

    def evaluate(self, train, eval_data, spec, **kwargs) -> dict[str, Any]:
        """Train on ``train`` (PairData), test on ``eval_data`` (PairData); return metrics."""
        raise NotImplementedError


@dataclass
class DistillContext:
    """What a distiller gets from ``vl distill``."""

    spec: Any                      # ModelSpec (the buffer's)
    buffer: Any                    # vlcore.trajectories.Buffer
    train: Any                # the real training split (images, caption embeddings, captions)
    out: Path
    eval_data: Any | None = None   # the dev split for periodic evaluation (never test)
    dataset_info: dict | None = None
    device: str = "cpu"
    seed: int = 0
    resume: bool = False
    host: Any = None
    progress: bool = True
    eval_options: dict | None = None


class Distiller(Component):
    """Base class: synthesises a small pair set from a dataset (and expert trajectories)."""

    def distill(self, ctx: DistillContext) -> Any:
        """Return a :class:`vlcore.pairset.PairSet` (also saved into ``ctx.out``)."""
        raise NotImplementedError


@dataclass
class SelectContext:
    """What a selector gets from ``vl coreset``."""

    train: Any                      # PairData: the real training split
    spec: Any                       # ModelSpec (the buffer's when a buffer is given)
    buffer: Any | None = None       # vlcore.trajectories.Buffer, optional
    device: str = "cpu"
    host: Any = None
    progress: bool = True
    dataset_info: dict | None = None


@dataclass
class Selection:
    """Pair indices into ``ctx.train`` in the order chosen, plus JSON diagnostics (meta["selection"])."""

    indices: Any                    # torch.LongTensor (budget,)
    info: dict = field(default_factory=dict)


class Selector(Component):
    """Base class: chooses a budget of real pairs (a coreset)."""

    def select(self, ctx: SelectContext, budget: int, seed: int) -> "Selection":
        """Return ``budget`` distinct pair indices of ``ctx.train`` (a Selection, tensor or list);
        raise ConfigError for a budget < 1 or larger than the pairs (images with unique_images)."""
        raise NotImplementedError
