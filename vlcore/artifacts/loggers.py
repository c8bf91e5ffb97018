"""Experiment tracking: logger components receive a run's scalars and figures.

A logger (a component of kind ``logger``, registered through ``register_loggers``) is told when a
run starts (:class:`LogRun`: its folder, name and resolved settings), gets scalars by step
(``loss/total``, ``loss/image``, ``loss/text``, ``step_size/image``, ``step_size/text``, and
``dev/tr_r1`` ... ``dev/rsum`` after each dev evaluation) and PNG figures (the image grid), and is
finished at the end.  The shared distillation loop (:mod:`vlcore.distill.recipe`) reports to every logger
of the run through :class:`Loggers`, which also keeps a failing logger (a tracking service that went
away) from stopping the run.  The bundled ``jsonl`` logger is always on: it writes
``OUT/log.jsonl``; ``tensorboard`` and ``wandb`` are chosen with ``--log``.
"""
from __future__ import annotations

import logging
import math
from abc import abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable

from vlcore.core.component import Component
from vlcore.core.errors import ConfigError
from vlcore.core.registry import PluginHost, get_host

log = logging.getLogger(__name__)

#: the logger every run has
ALWAYS = "jsonl"


@dataclass
class LogRun:
    """What a logger is told when a run starts."""

    #: the run folder (the artifact's --out); a logger writes its files there
    out: Path
    #: a short name of the run, e.g. ``bitraj-effnet-lite0-100``
    name: str
    #: the resolved settings of the run (method, config, model spec, dataset, seed)
    config: dict = field(default_factory=dict)
    #: whether the run continues an earlier one from its checkpoint (loggers append)
    resume: bool = False


class Logger(Component):
    """Base class: receives a run's scalars and figures (experiment tracking)."""

    def start(self, run: LogRun) -> None:
        """The run begins (or resumes): open files or connections."""

    @abstractmethod
    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        """Record finite float ``scalars`` (by name) at ``step`` (an outer iteration)."""

    def log_image(self, step: int, tag: str, path: Path) -> None:
        """Record the PNG figure at ``path`` under ``tag`` at ``step`` (default: ignore it)."""

    def finish(self) -> None:
        """The run ended (or was interrupted): flush and close."""


class Loggers:
    """Every logger of one run: reports to each, drops non-finite scalars, and turns a logger's
    failure during the run into one warning (it is dropped; the run goes on)."""

    def __init__(self, loggers: Iterable[Logger] = ()):
        self.loggers = list(loggers)

    @property
    def names(self) -> list[str]:
        return [lg.name for lg in self.loggers]

    def _each(self, what: str, call) -> None:
        for lg in list(self.loggers):
            try:
                call(lg)
            except Exception as exc:  # tracking must never stop a run
                log.warning("logger '%s' failed while %s (%s: %s); the run goes on without it.", lg.name, what,
                            type(exc).__name__, exc)
                self.loggers.remove(lg)

    def start(self, run: LogRun) -> None:
        """Start every logger; one that cannot start stops the run here, before its first iteration
        (it was asked for), after the others are finished again."""
        for i, lg in enumerate(self.loggers):
            try:
                lg.start(run)
            except BaseException:
                for done in self.loggers[:i]:
                    done.finish()
                raise

    def scalars(self, step: int, values: dict[str, Any]) -> None:
        clean = {k: float(v) for k, v in values.items() if isinstance(v, (int, float)) and math.isfinite(float(v))}
        if clean:
            self._each("logging scalars", lambda lg: lg.log_scalars(step, clean))

    def image(self, step: int, tag: str, path: Path) -> None:
        if Path(path).exists():
            self._each("logging an image", lambda lg: lg.log_image(step, tag, Path(path)))

    def finish(self) -> None:
        self._each("finishing", lambda lg: lg.finish())


def open_loggers(names: Iterable[str] = (), options: dict[str, dict] | None = None,
                 host: "PluginHost | None" = None) -> Loggers:
    """The loggers ``names`` (``jsonl`` always, first), each built strictly from ``options[name]``;
    an unknown name or option fails now, before the run."""
    host = host or get_host()
    options = dict(options or {})
    wanted = [ALWAYS] + [n.strip().lower() for n in names if n.strip() and n.strip().lower() != ALWAYS]
    unknown = set(options) - set(wanted)
    if unknown:
        raise ConfigError(f"--log-option for logger '{sorted(unknown)[0]}', which is not in --log "
                          f"(loggers of this run: {', '.join(wanted)}).")
    return Loggers(host.create("logger", n, options.get(n, {})) for n in dict.fromkeys(wanted))


def parse_names(value: str | Iterable[str] | None) -> list[str]:
    """``"tensorboard,wandb"`` (or a list of such) -> ``["tensorboard", "wandb"]``."""
    if value is None:
        return []
    parts = [value] if isinstance(value, str) else list(value)
    return [n.strip() for p in parts for n in str(p).split(",") if n.strip()]
