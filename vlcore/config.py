"""One strict builder from loose options (CLI strings, JSON values) to a component's frozen dataclass."""
from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, Mapping

from .errors import ConfigError, suggest

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}


def _coerce(value: Any, tp: Any, where: str) -> Any:
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        args = typing.get_args(tp)
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null") and type(None) in args):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot use {value!r}")
    if origin is typing.Literal:
        allowed = typing.get_args(tp)
        if value in allowed:
            return value
        raise ConfigError(f"{where}: {value!r} is not one of {', '.join(map(str, allowed))}.{suggest(str(value), map(str, allowed))}")
    if origin in (tuple, list):
        args = typing.get_args(tp)
        if isinstance(value, str):
            value = [v for v in value.split(",") if v.strip()]
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: expected a list, got {value!r}")
        inner = args[0] if args else str
        out = [_coerce(v, inner, where) for v in value]
        return tuple(out) if origin is tuple else out
    if tp is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        if isinstance(value, int) and value in (0, 1):
            return bool(value)
        raise ConfigError(f"{where}: expected a boolean (true/false), got {value!r}")
    if tp is int:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected an integer, got {value!r}")
        if isinstance(value, int):
            return value
        if isinstance(value, float) and value.is_integer():
            return int(value)
        try:
            return int(str(value).strip())
        except ValueError:
            raise ConfigError(f"{where}: expected an integer, got {value!r}") from None
    if tp is float:
        if isinstance(value, bool):
            raise ConfigError(f"{where}: expected a number, got {value!r}")
        try:
            return float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
    if tp is str:
        if isinstance(value, (str, int, float)) and not isinstance(value, bool):
            return str(value)
        raise ConfigError(f"{where}: expected a string, got {value!r}")
    return value


def build_config(cls: type, options: Mapping[str, Any] | None = None, *, owner: str = "") -> Any:
    """Build the frozen dataclass ``cls`` from ``options``.

    Keys may use dashes or underscores.  Unknown keys are rejected with a suggestion; values are
    coerced by the field's annotated type (booleans accept true/false/yes/no/1/0, never truthiness).
    ``None`` values are treated as "not given" and leave the default.
    """
    options = dict(options or {})
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a dataclass")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    label = owner or cls.__qualname__
    kwargs = {}
    for key, value in options.items():
        name = key.replace("-", "_")
        if name not in fields:
            raise ConfigError(
                f"Unknown option '{key}' for {label}.{suggest(name, fields)} "
                f"Valid options: {', '.join(sorted(fields)) or '(none)'}."
            )
        if value is None:
            continue
        kwargs[name] = _coerce(value, hints[name], f"Option '{key}' of {label}")
    try:
        return cls(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"{label}: {exc}") from None


@dataclasses.dataclass(frozen=True)
class OptionInfo:
    """One option of a component's Config, for help texts and derived command-line flags."""

    name: str
    type: Any
    default: Any
    help: str
    #: the component kind a string option names (field metadata ``{"kind": ...}``), e.g. an unroll backend
    kind: str | None = None


def describe_options(cls: type) -> list[OptionInfo]:
    """Every option of the Config dataclass ``cls``: name, annotated type, default and help (the
    field's ``metadata["help"]``, else the ``#:`` comment above it in the class body, searched
    through the base classes too)."""
    hints = typing.get_type_hints(cls)
    comments = field_comments(cls)
    out = []
    for f in dataclasses.fields(cls):
        if not f.init:
            continue
        default = f.default if f.default is not dataclasses.MISSING else (
            f.default_factory() if f.default_factory is not dataclasses.MISSING else None)
        out.append(OptionInfo(f.name, hints[f.name], default, f.metadata.get("help") or comments.get(f.name, ""),
                              f.metadata.get("kind")))
    return out


def field_comments(cls: type) -> dict[str, str]:
    """``#:`` comments directly above each field assignment in the source of ``cls`` and its bases
    (Sphinx's convention); the most derived class wins.  Classes without source give none."""
    out: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        if klass is object or not dataclasses.is_dataclass(klass):
            continue
        out.update(_class_comments(klass))
    return out


def _class_comments(klass: type) -> dict[str, str]:
    import inspect
    import re
    import textwrap

    try:
        src = textwrap.dedent(inspect.getsource(klass))
    except (OSError, TypeError):
        return {}
    found, pending = {}, []
    field_re = re.compile(r"^\s+(\w+)\s*:[^=]*(=|$)")
    for line in src.splitlines()[1:]:
        stripped = line.strip()
        if stripped.startswith("#:"):
            pending.append(stripped[2:].strip())
            continue
        m = field_re.match(line)
        if m and pending:
            found[m.group(1)] = " ".join(pending)
        if stripped:
            pending = []
    return found
