"""Errors raised by vlcore.  Every message names the problem and how to fix it."""
from __future__ import annotations

import difflib
from typing import Iterable


class VLError(Exception):
    """Base class: a user-facing error.  The CLI prints its message without a traceback."""


class ConfigError(VLError):
    """An option had an unknown name or a value of the wrong type."""


class ImageSizeError(ConfigError, ValueError):
    """An image encoder cannot take the image size asked for."""


class UnknownComponentError(VLError):
    """A component name was not found in the registry."""


class DataError(VLError):
    """A dataset file is missing, malformed or empty."""


class WeightsError(VLError):
    """Pretrained weights could not be obtained."""


class IncompatibleError(VLError):
    """Two artifacts (a buffer, a pair set, an encoder) do not fit together."""


def suggest(name: str, choices: Iterable[str]) -> str:
    """Return " Did you mean 'x'?" for the closest choice, or ""."""
    close = difflib.get_close_matches(name, list(choices), n=1, cutoff=0.5)
    return f" Did you mean '{close[0]}'?" if close else ""
