"""SIGTERM handled like Ctrl-C, so that what runs on the way out runs for both.

Python turns Ctrl-C (SIGINT) into :class:`KeyboardInterrupt`; SIGTERM (``kill``, a job scheduler's
time limit) kills the process outright.  Inside :func:`sigterm_as_interrupt`, SIGTERM raises
:class:`Terminated`, a :class:`KeyboardInterrupt`, instead: the distillation loop writes its
checkpoint, :func:`vlcore.artifacts.io.atomic_path` removes its temporary file, and the CLI exits with 143.
:func:`shielded` holds both signals back while something must not be cut short (an update, a
multi-file save, the checkpoint written on the way out).
"""
from __future__ import annotations

import contextlib
import signal
import threading
from typing import Iterator


class Terminated(KeyboardInterrupt):
    """The process received SIGTERM."""


#: the exit status of a command stopped by Ctrl-C, and by SIGTERM (128 + the signal number)
EXIT_INTERRUPTED = 130
EXIT_TERMINATED = 143


def _raise_terminated(signum, frame):
    raise Terminated()


def _main_thread() -> bool:
    return threading.current_thread() is threading.main_thread()


@contextlib.contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """Within this block SIGTERM raises :class:`Terminated` (nested use and other threads: no-op)."""
    if not _main_thread() or signal.getsignal(signal.SIGTERM) is _raise_terminated:
        yield
        return
    old = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


@contextlib.contextmanager
def shielded(deliver: bool = True) -> Iterator[None]:
    """Within this block Ctrl-C and SIGTERM are held back, so that it runs entirely or not at all
    (an update and its bookkeeping, a multi-file save).  A signal that arrived meanwhile is raised
    when the block ends (``deliver``), or dropped (the process is already on its way out, writing
    the checkpoint of an interrupted run)."""
    if not _main_thread():
        yield
        return
    noted: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: noted.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)
    if deliver and noted:
        raise Terminated() if noted[0] == signal.SIGTERM else KeyboardInterrupt()
