"""vlcore: vision-language dataset distillation."""
from __future__ import annotations

try:
    from importlib.metadata import version as _version

    __version__ = _version("vlcore")
except Exception:  # pragma: no cover - running from a source tree without install
    __version__ = "0.0.0"

from vlcore.core.hookspecs import hookimpl  # noqa: E402

__all__ = ["hookimpl", "__version__"]
