"""The checks every value a ``vl`` command gets goes through, whichever way it came: a ``--config``
value of the type its flag takes (:func:`toml_value`, no silent coercion), numbers within their
range, text valid UTF-8 (:func:`check_given_values`); each failure a usage error naming the fix."""
from __future__ import annotations

import math
import os
import sys
from typing import Any

import click

from vlcore.artifacts import tomlfile
from vlcore.core.config import FINITE, Range, SHARED_RANGES
from vlcore.core.errors import ConfigError

from .params import ComponentOption, Number, flag_key, installed


def _shown(value: Any) -> str:
    """``value`` as TOML writes it (for messages)."""
    try:
        text = tomlfile._value(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction" if math.isfinite(value) and not value.is_integer() else "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def wrong_type(path: str | None, key: str, value: Any, flag: str, expected: str, example: Any) -> str:
    """The message of a --config value of the wrong type: the file, the key, the value, what it takes."""
    where = f"The --config file {path}" if path else "The --config file"
    return (f"{where}: '{key} = {_shown(value)}' is {_kind(value)}, but {flag} takes {expected}. Fix the value in "
            f"the file, e.g. {key} = {_shown(example)}.")


def _expects(p: click.Parameter) -> tuple[str, Any] | None:
    """(what a --config value of parameter ``p`` must be, an example), None: any value."""
    t = p.type
    default = None if type(p.default).__name__ == "Sentinel" or callable(p.default) else p.default
    if isinstance(t, click.types.BoolParamType):
        return "true or false", default if isinstance(default, bool) else True
    if isinstance(t, click.types.IntParamType) or (isinstance(t, Number) and t.tp is int):
        ok = isinstance(default, int) and not isinstance(default, bool)
        return "an integer (no fraction, not true/false)", default if ok else 8
    if isinstance(t, click.types.FloatParamType) or (isinstance(t, Number) and t.tp is float):
        ok = isinstance(default, (int, float)) and not isinstance(default, bool)
        return "a number (not true/false)", default if ok else 0.5
    if isinstance(p, ComponentOption):
        names = installed(p.component_kind)
        example = default if isinstance(default, str) else (names[0] if names else "NAME")
        return "a component name (a string)", example
    if isinstance(t, (click.types.StringParamType, click.Path, click.Choice)):
        if isinstance(t, click.Choice):
            return f"one of {', '.join(map(str, t.choices))} (a string)", str(default or t.choices[0])
        meta = p.metavar if isinstance(p, click.Option) and p.metavar and p.metavar.isupper() else None
        return "a string (in quotes)", default if isinstance(default, str) else (meta or "text")
    return None


def toml_value(p: click.Parameter, key: str, value: Any, path: str | None = None) -> Any:
    """The value of ``key`` of a --config file for parameter ``p``, of the type the flag takes (an
    integer given as 8.0 becomes 8); ConfigError naming the file, key, value and the type otherwise.
    No silent coercion: ``true`` is not 1, ``1.7`` is not 1; an integer is fine for a float."""
    flag = "--" + flag_key(p)
    if p.multiple:
        items = list(value) if isinstance(value, (list, tuple)) else [value]  # one value: a one-item list
        return [_toml_scalar(p, key, v, path, flag, value) for v in items]
    return _toml_scalar(p, key, value, path, flag, value)


def _toml_scalar(p: click.Parameter, key: str, value: Any, path: str | None, flag: str, whole: Any) -> Any:
    want = _expects(p)
    if want is None:
        return value
    expected, example = want
    if p.multiple:
        expected, example = f"a list whose items are each {expected}", [example]
    t = p.type
    ok = False
    if isinstance(t, click.types.BoolParamType):
        ok = isinstance(value, bool)
    elif isinstance(t, click.types.IntParamType) or (isinstance(t, Number) and t.tp is int):
        if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(t, click.types.FloatParamType) or (isinstance(t, Number) and t.tp is float):
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise ConfigError(f"The --config file {path or ''}: '{key} = {_shown(whole)}' is too large for {flag}, "
                                  f"which takes a finite number (at most {sys.float_info.max:.3g}). Fix the value "
                                  f"in the file.") from None
        ok = isinstance(value, float)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(wrong_type(path, key, whole, flag, expected, example))
    return value


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_given_values(ctx: click.Context, params) -> None:
    """Checks every parsed value gets, whichever option it came from (a usage error, exit 2):

    * a number of a plain click type fits its range: 64-bit integers and finite floats, and the shared
      range of its name (``--seed``: [0, 2**63 - 1]; :data:`vlcore.core.config.SHARED_RANGES`);
    * text (a path, a name) is valid UTF-8: vl writes the paths and names it uses into its records
      (meta.json, config.toml: UTF-8 text) and prints them, so a file name of other bytes (e.g.
      ``b'out\\xff'``, arriving as a surrogate escape) is refused before any work rather than failing
      after it.
    """
    for p in params:
        if not p.name or p.name not in ctx.params:
            continue
        v = ctx.params[p.name]
        for x in (v if isinstance(v, (list, tuple)) else (v,)):
            if isinstance(x, str) and _not_utf8(x):
                try:
                    shown = os.fsencode(x)  # the bytes the command line had
                except UnicodeEncodeError:
                    shown = x.encode("utf-8", "backslashreplace")
                raise click.BadParameter(
                    f"the name {shown!r} is not valid UTF-8. vl records the paths and names it uses in UTF-8 "
                    f"files (meta.json, config.toml) and prints them, so it takes only UTF-8 names: choose another "
                    f"name (an existing file or folder: rename it, e.g. with mv).", ctx=ctx, param=p)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or isinstance(p.type, Number):
                continue
            if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
                r = SHARED_RANGES.get(p.name, FINITE) if isinstance(x, int) else FINITE
                if isinstance(p.type, (click.IntRange, click.FloatRange)):  # their own bounds
                    r = Range(p.type.min, p.type.max, p.type.min_open, p.type.max_open)
                why = r.problem(x)
                if why:
                    raise click.BadParameter(why, ctx=ctx, param=p)
