"""One strict builder from loose options (CLI strings, JSON values) to a component's frozen dataclass."""
from __future__ import annotations

import dataclasses
import math
import types
import typing
from typing import Any, Mapping

from vlcore.core.errors import ConfigError, suggest

_TRUE = {"1", "true", "yes", "y", "on"}
_FALSE = {"0", "false", "no", "n", "off"}

#: the largest learning rate any option accepts: float32 must hold the update's scale (a larger one
#: overflows inside the optimiser); anything near it explodes, which the distillation's state guard catches
MAX_LR = 1e30

#: the smallest non-zero magnitude any float option accepts: float32's smallest normal number.  vl
#: computes in float32, which flushes a smaller value towards 0 (``--lr-init 1e-320`` becomes a step size
#: of 0, a set `vl eval` refuses), so such a value is refused when the option is read, like a non-finite one
FLOAT32_TINY = 1.1754943508222875e-38

#: every integer option fits a signed 64-bit integer (TOML's integers, torch's and numpy's seeds)
INT64_MIN, INT64_MAX = -2 ** 63, 2 ** 63 - 1


@dataclasses.dataclass(frozen=True)
class Range:
    """The values a numeric option accepts (always finite): ``lo``/``hi`` bounds, None for none."""

    lo: float | None = None
    hi: float | None = None
    lo_open: bool = False
    hi_open: bool = False

    def __contains__(self, v) -> bool:
        if isinstance(v, float) and (not math.isfinite(v) or 0 < abs(v) < FLOAT32_TINY):
            return False
        if isinstance(v, int) and not isinstance(v, bool) and not INT64_MIN <= v <= INT64_MAX:
            return False
        return self._in_bounds(v)

    def _in_bounds(self, v) -> bool:
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
        if self.lo is None and self.hi is None:
            want = "a finite number"
        else:
            want = f"a number {'in ' if self.lo is not None and self.hi is not None else ''}{self}"
        if isinstance(v, float) and not math.isfinite(v):
            return f"{v} is not a finite number; give {want}"
        if isinstance(v, float) and 0 < abs(v) < FLOAT32_TINY and self._in_bounds(v):
            zero = "0 or " if 0.0 in self else ""
            return (f"{v!r} is too small: vl computes in float32, where it would act as 0; give {zero}{want}, "
                    f"at least {FLOAT32_TINY:.3g} in magnitude")
        if isinstance(v, int) and self._in_bounds(v):
            lo = INT64_MIN if self.lo is None else max(INT64_MIN, math.floor(self.lo) + 1 if self.lo_open
                                                       else math.ceil(self.lo))
            hi = INT64_MAX if self.hi is None else min(INT64_MAX, math.ceil(self.hi) - 1 if self.hi_open
                                                       else math.floor(self.hi))
            return f"{v} does not fit a 64-bit integer; give an integer in [{lo}, {hi}]"
        return f"{v} is out of range; give {want}"


def ranged(default, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
           hi_open: bool = False, **metadata):
    """A dataclass field for a numeric option that accepts only finite values in a range (its
    command-line flag and the config builder check it before any work)."""
    return dataclasses.field(default=default, metadata={**metadata, "range": Range(lo, hi, lo_open, hi_open)})


#: every float option accepts only finite numbers (and no magnitude below :data:`FLOAT32_TINY` but 0),
#: every integer option only 64-bit integers, also without a declared range
FINITE = Range()

#: a random seed: numpy refuses negative seeds, and TOML (config.toml) holds 64-bit integers
SEED = Range(0, INT64_MAX)

#: options whose name means the same in every component, and so accept the same values wherever they
#: are declared without a range of their own (in any plugin too), and in the flags of the same name
#: (``--seed``, ``--limit``): a seed; a dataset's ``limit`` (at most N images per split) and ``holdout``
#: (training images held out)
SHARED_RANGES: dict[str, Range] = {"seed": SEED, "limit": Range(1), "holdout": Range(0)}


def _is_int_field(cls: type, name: str) -> bool:
    try:
        tp = typing.get_type_hints(cls).get(name)
    except Exception:  # an annotation that cannot be resolved: no shared range
        return False
    args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) else (tp,)
    return int in args and bool not in args


def option_range(cls: type, name: str) -> Range | None:
    """The range of field ``name`` of the Config dataclass ``cls``, declared with :func:`ranged` on
    it or on a base class (a subclass that only changes a default keeps its base's range); else the
    shared range of an integer option of that name (:data:`SHARED_RANGES`)."""
    for klass in cls.__mro__:
        f = getattr(klass, "__dataclass_fields__", {}).get(name)
        if f is not None and "range" in f.metadata:
            return f.metadata["range"]
    if name in SHARED_RANGES and _is_int_field(cls, name):
        return SHARED_RANGES[name]
    return None


def value_range(cls: type, name: str, value: Any) -> Range | None:
    """The range ``value`` of option ``name`` of ``cls`` must be in: its declared or shared range, else
    :data:`FINITE` for any number (finite floats, 64-bit integers)."""
    r = option_range(cls, name)
    if r is None and isinstance(value, (int, float)) and not isinstance(value, bool):
        r = FINITE
    return r


def check_ranges(cfg: Any, owner: str) -> None:
    """ConfigError naming the first option of the dataclass instance ``cfg`` outside its range."""
    for f in dataclasses.fields(cfg):
        v = getattr(cfg, f.name)
        r = value_range(type(cfg), f.name, v)
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
        r = value_range(cls, name, kwargs[name])
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
