"""Contract checks: what every component of a kind must do, whichever plugin it comes from.

Each ``check_<kind>(cls, options=None, ...)`` builds the component class ``cls`` the way ``vl``
does (its ``Config`` built strictly from ``options``) and runs it on tiny data on the CPU, raising
:class:`ContractError` (an ``AssertionError``) that names the component and the broken promise.
Exceptions raised by the component itself propagate unchanged (with a note saying which step
raised them), so a test can, e.g., skip on :class:`vlcore.core.errors.WeightsError`.

Every kind:

* is a subclass of its base class (``vlcore.model.encoder.ImageEncoder``, ``vlcore.model.text.TextEncoder``,
  ``vlcore.data.dataset.Dataset``, ``vlcore.distill.coreset.Selector`` / ``Distiller`` / ``Evaluator``,
  ``vlcore.distill.unroll.UnrollBackend``, ``vlcore.artifacts.loggers.Logger``);
* sets its own lowercase ``name`` (``[a-z][a-z0-9_.-]*``) and its own docstring, whose first line
  is its help text;
* has a nested ``Config``: a frozen dataclass whose every field has a default, built from no
  options at all, whose values are plain JSON (artifacts record it).  Unroll backends may have none.

Then, per kind, see each function's docstring.  Use them from a plugin's tests::

    from vlcore.testing.contracts import check_selector
    from my_plugin import MySelector

    def test_contract():
        check_selector(MySelector, {"iterations": 5})

or :func:`check_component` with a kind name.  The checks that need a model, a buffer or pair
data use the test components of :mod:`vlcore.testing.plugin` (``tiny-cnn``, ``hashed-bow``),
registered on a host of their own that is made the process-wide host while they run.
"""
from __future__ import annotations

from typing import Any, Callable

from ._common import NAME_RE, ContractError, check_class, check_config  # noqa: F401 (NAME_RE stays importable)
from .dataset import check_dataset
from .distiller import check_distiller
from .evaluator import check_evaluator
from .image_encoder import check_image_encoder
from .logger import check_logger
from .selector import check_selector, selector_context
from .text_encoder import check_text_encoder
from .unroll_backend import check_unroll_backend
from vlcore.core.kinds import KINDS
from vlcore.core.registry import normalise_kind

__all__ = ["ContractError", "check_class", "check_config", "check_image_encoder", "check_text_encoder",
           "check_dataset", "check_selector", "check_distiller", "check_evaluator", "check_unroll_backend",
           "check_logger",
           "check_component", "CHECKS", "selector_context"]


def _checks() -> dict[str, Callable[..., Any]]:
    out = {}
    for name, kind in KINDS.items():
        module, _, attr = kind.contract.partition(":")
        if module != __name__:
            raise ValueError(f"the contract of kind {name!r} ({kind.contract}) is not in {__name__}")
        out[name] = globals()[attr]
    return out


#: kind -> its contract check (from :data:`vlcore.core.kinds.KINDS`)
CHECKS: dict[str, Callable[..., Any]] = _checks()


def check_component(kind: str, cls: type, options: dict | None = None, **kwargs) -> Any:
    """Run the contract of ``kind`` (``vl list`` kind names and aliases accepted) on ``cls``."""
    return CHECKS[normalise_kind(kind)](cls, options, **kwargs)
