"""The shared preamble of the contract checks: :class:`ContractError`, the checks every kind
passes (:func:`check_class`, :func:`check_config`), and the helpers each kind's module uses."""
from __future__ import annotations

import contextlib
import dataclasses
import json
import re
import tempfile
import typing
from pathlib import Path
from typing import Any, Callable, Iterator

import torch

from vlcore.core.config import build_config
from vlcore.core.errors import VLError
from vlcore.core.kinds import KINDS

NAME_RE = re.compile(r"^[a-z][a-z0-9_.\-]*$")
_JSON_TYPES = (str, int, float, bool, type(None))


class ContractError(AssertionError):
    """A component broke its kind's contract."""


# ============================================================================= helpers
def _bases() -> dict[str, type]:
    return {name: kind.base_class() for name, kind in KINDS.items()}


def _label(kind: str, cls: Any) -> str:
    name = getattr(cls, "name", None) or getattr(cls, "__name__", repr(cls))
    where = f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', '?')}"
    return f"{kind.replace('_', ' ')} '{name}' ({where})"


def _require(cond: Any, label: str, message: str) -> None:
    if not cond:
        raise ContractError(f"{label}: {message}")


@contextlib.contextmanager
def _step(label: str, what: str) -> Iterator[None]:
    """Annotate an exception raised by the component with the step that raised it."""
    try:
        yield
    except ContractError:
        raise
    except Exception as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(f"(contract check of {label}: while {what})")
        raise


def _close(a: torch.Tensor, b: torch.Tensor, rtol: float = 1e-3, atol: float = 1e-4) -> bool:
    a, b = a.detach().double(), b.detach().double()
    if a.shape != b.shape:
        return False
    return bool((a - b).abs().max() <= atol + rtol * b.abs().max()) if a.numel() else True


def _finite(t: torch.Tensor) -> bool:
    return bool(torch.isfinite(t.detach()).all())


def _json_plain(value: Any) -> bool:
    if isinstance(value, _JSON_TYPES):
        return not (isinstance(value, float) and value != value)  # NaN is not JSON
    if isinstance(value, (list, tuple)):
        return all(_json_plain(v) for v in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _json_plain(v) for k, v in value.items())
    return False


def _config_json(cfg: Any) -> Any:
    return json.loads(json.dumps(dataclasses.asdict(cfg)))


# ============================================================================= every kind
def check_config(cls: type, options: dict | None = None, *, kind: str = "component") -> Any:
    """``cls.Config`` is a frozen dataclass, every field has a default and a resolvable type, the
    defaults are plain JSON values; returns ``Config`` built from ``options``."""
    label = _label(kind, cls)
    cfg_cls = getattr(cls, "Config", None)
    _require(isinstance(cfg_cls, type) and dataclasses.is_dataclass(cfg_cls), label,
             "needs a nested Config dataclass holding its options (use an empty "
             "@dataclass(frozen=True) class Config: pass when it has none)")
    _require(cfg_cls.__dataclass_params__.frozen, label,
             "Config must be frozen (@dataclass(frozen=True)): configs are recorded and compared, never mutated")
    try:
        typing.get_type_hints(cfg_cls)
    except Exception as exc:
        raise ContractError(f"{label}: the type annotations of Config cannot be resolved ({exc}); the "
                            f"strict config builder coerces CLI strings by them") from None
    missing = [f.name for f in dataclasses.fields(cfg_cls) if f.init and f.default is dataclasses.MISSING
               and f.default_factory is dataclasses.MISSING]
    _require(not missing, label, f"every Config field needs a default (missing: {', '.join(missing)}); "
                                 f"`vl` builds a component from no options at all")
    default = build_config(cfg_cls, {}, owner=label)
    bad = {k: v for k, v in dataclasses.asdict(default).items() if not _json_plain(v)}
    _require(not bad, label, f"Config defaults must be plain JSON values (str, int, float, bool, None, lists, "
                             f"dicts) so artifacts can record them; got {bad!r}")
    with contextlib.suppress(dataclasses.FrozenInstanceError):
        fields = dataclasses.fields(default)
        if fields:
            setattr(default, fields[0].name, getattr(default, fields[0].name))
            raise ContractError(f"{label}: Config instances must be immutable")
    return build_config(cfg_cls, options or {}, owner=label)


def check_class(cls: type, kind: str, *, config_required: bool = True) -> None:
    """Base class, own lowercase ``name``, own docstring with a first line, and a valid ``Config``."""
    bases = _bases()
    if kind not in bases:
        raise ValueError(f"unknown component kind {kind!r}; one of {', '.join(bases)}")
    label = _label(kind, cls)
    _require(isinstance(cls, type), label, "register classes, not instances (they are built when used)")
    _require(issubclass(cls, bases[kind]), label,
             f"must subclass {bases[kind].__module__}.{bases[kind].__qualname__}")
    name = cls.__dict__.get("name")
    _require(isinstance(name, str) and NAME_RE.match(name), label,
             f"must set its own lowercase `name` class attribute matching {NAME_RE.pattern} (got {name!r})")
    doc = cls.__dict__.get("__doc__")
    _require(isinstance(doc, str) and doc.strip() and doc.strip().splitlines()[0].strip(), label,
             "needs its own docstring; its first line is the help text `vl list` and `vl --help` show")
    if config_required or getattr(cls, "Config", None) is not None:
        check_config(cls, kind=kind)


def _begin(cls: type, kind: str, options: dict | None) -> tuple[str, Any]:
    """What every check starts with: :func:`check_class`, the component's label for messages, and
    its ``Config`` built from ``options``."""
    check_class(cls, kind)
    label = _label(kind, cls)
    return label, check_config(cls, options, kind=kind)


def _refuses(label: str, call: Callable[[], Any], wrong: str, silent: str) -> None:
    """``call()`` must raise a :class:`vlcore.core.errors.VLError`: another exception fails with
    ``wrong`` (what it should have raised), none with ``silent``."""
    try:
        call()
    except VLError:
        pass
    except Exception as exc:
        raise ContractError(f"{label}: {wrong}, not {type(exc).__name__}: {exc}") from None
    else:
        raise ContractError(f"{label}: {silent}")


def _workdir(stack: contextlib.ExitStack, workdir: str | Path | None) -> Path:
    """``workdir``, or a temporary folder removed when ``stack`` closes."""
    return Path(workdir) if workdir is not None else Path(stack.enter_context(tempfile.TemporaryDirectory()))
