"""Progress reporting: library code reports long work through a :class:`Progress` callback; only
the CLI draws bars (it passes one that opens tqdm bars).

    with progress.task("experts", total=10, unit="expert") as task:
        for ...:
            task.update(1, loss=0.3)

The default, :data:`NULL`, reports nothing.
"""
from __future__ import annotations

from typing import Any


class Task:
    """One piece of long work: ``update(n, **postfix)`` after each unit, ``close()`` at the end."""

    def update(self, n: int = 1, **postfix: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def __enter__(self) -> "Task":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class Progress:
    """A factory of tasks.  Subclass it and override :meth:`task` to show progress somewhere."""

    def task(self, desc: str, total: int | None = None, *, unit: str = "it", initial: int = 0) -> Task:
        return Task()


NULL = Progress()


def as_progress(progress: Progress | None) -> Progress:
    return progress if progress is not None else NULL
