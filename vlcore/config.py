"""One strict builder from loose options (CLI strings, JSON values) to a component's frozen dataclass."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping

from .errors import ConfigError, suggest

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}

#: the largest learning rate any option accepts: float32 must hold the update's scale (a larger one
#: overflows inside the optimiser); anything near it explodes, which the distillation's state guard catches
MAX_LR = 1e30


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric option accepts (always finite): ``lo``/``hi`` bounds, None for none."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v) -> bool:
        if isinstance(v, float) and not math.isfinite(v):
            return False
        if self.lo is not None and (v <= self.lo if self.lo_open else v < self.lo):
            return False
        return not (self.hi is not None and (v >= self.hi if self.hi_open else v > self.hi))

    def __str__(self) -> str:
        def num(x):
            return f"{x:g}" if isinstance(x, float) else str(x)
        if self.lo is not None and self.hi is not None:
            return f"{'(' if self.lo_open else '['}{num(self.lo)}, {num(self.hi)}{')' if self.hi_open else ']'}"
        if self.lo is not None:
            return f"{'>' if self.lo_open else '>='} {num(self.lo)}"
        if self.hi is not None:
            return f"{'<' if self.hi_open else '<='} {num(self.hi)}"
        return "finite"

    def problem(self, v) -> str | None:
        """Why ``v`` is not accepted (None: it is)."""
        if v is None or isinstance(v, bool) or v in self:
            return None
        what = "is not a finite number" if isinstance(v, float) and not math.isfinite(v) else "is out of range"
        if self.lo is None and self.hi is None:
            want = "a finite number"
        else:
            want = f"a number {'in ' if self.lo is not None and self.hi is not None else ''}{self}"
        return f"{v} {what}; give {want}"


def ranged(default, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, **metadata):
    """A dataclass field for a numeric option that accepts only finite values in a range (its
    command-line flag and the config builder check it before any work)."""
    return dataclasses.field(default=default, metadata={**metadata, "range": Range(lo, hi, lo_open, hi_open)})


#: every float option accepts only finite numbers, also without a declared range
FINITE = Range()


def option_range(cls: type, name: str) -> Range | None:
    """The range of field ``name`` of the Config dataclass ``cls``, declared with :func:`ranged` on
    it or on a base class (a subclass that only changes a default keeps its base's range)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "range" in f.metadata:
            return f.metadata["range"]
    return None


def check_ranges(cfg: Any, owner: str) -> None:
    """ConfigError naming the first option of the dataclass instance ``cfg`` outside its range."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        r = option_range(type(cfg), f.name) or (FINITE if isinstance(v, float) else None)
        why = r.problem(v) if r is not None else None
        if why:
            raise ConfigError(f"{owner}: option '{f.name}' (--{f.name.replace('_', '-')}): {why}.")


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
            out = float(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: expected a number, got {value!r}") from None
        if not math.isfinite(out):
            raise ConfigError(f"{where}: expected a finite number, got {value!r}")
        return out
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
        r = option_range(cls, name)
        why = r.problem(kwargs[name]) if r is not None else None
        if why:
            raise ConfigError(f"Option '{key}' of {label}: {why}.")
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
    #: the values a numeric option accepts (:func:`ranged`); None: any finite number
    range: Range | None = None


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
                              f.metadata.get("kind"), option_range(cls, f.name)))
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
