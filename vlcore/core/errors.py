"""Errors raised by vlcore.  Every message names the problem and how to fix it.

``exit_code`` is the status the ``vl`` command exits with: 2 for usage errors (a bad option, value
or output folder: the command line must change), 1 for everything else (data, artifacts).
"""
from __future__ import annotations

import difflib
from typing import ClassVar, Iterable


class VLError(Exception):
    """Base class: a user-facing error.  The CLI prints its message without a traceback."""

    exit_code: ClassVar[int] = 1


class ConfigError(VLError):
    """An option had an unknown name or a value of the wrong type or out of its range."""

    exit_code = 2


class ImageSizeError(ConfigError, ValueError):
    """An image encoder cannot take the image size asked for."""


class UnknownComponentError(VLError):
    """A component name was not found in the registry."""

    exit_code = 2


class OutputError(VLError):
    """An output folder cannot be used: it is a file, cannot be created, or holds another artifact."""

    exit_code = 2


class BusyError(VLError):
    """Another command is writing the same output folder (it holds the folder's lock)."""


class DataError(VLError):
    """A dataset file is missing, malformed or empty."""


class WeightsError(VLError):
    """Pretrained weights could not be obtained."""


class DivergedError(VLError):
    """Training a model diverged: its loss became ``loss`` (non-finite) at epoch ``epoch``."""

    def __init__(self, message: str, *, loss: float | None = None, epoch: int | None = None):
        super().__init__(message)
        self.loss, self.epoch = loss, epoch


class IncompatibleError(VLError):
    """Two artifacts (a buffer, a pair set, an encoder) do not fit together."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or ""."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""
