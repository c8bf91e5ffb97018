"""Reading and writing the TOML files of vlcore (``--config`` files, resolved configs, recipes).

Reading uses the standard library's :mod:`tomllib` (``tomli`` on Python 3.10) and turns syntax
errors into a :class:`vlcore.core.errors.ConfigError` naming the file and line.  Writing covers what
vlcore writes: tables of strings, numbers, booleans and lists of them.
"""
from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

from vlcore.core.errors import ConfigError

try:
    import tomllib
except ModuleNotFoundError:  # pragma: no cover - Python 3.10
    import tomli as tomllib

_BARE = re.compile(r"^[A-Za-z0-9_-]+$")


def load(path: str | Path, what: str = "config file") -> dict[str, Any]:
    """The TOML file ``path`` as a dict; ConfigError when it is missing or not valid TOML."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"The {what} {path} does not exist{' (it is a folder)' if path.is_dir() else ''}. "
                          f"Pass the path of a .toml file.")
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"The {what} {path} is not valid TOML: {exc}. Fix the line it names.") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"Cannot read the {what} {path}: {exc}.") from None


def _key(k: str) -> str:
    return k if _BARE.match(k) else json.dumps(k)


def _value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_value(x) for x in v) + "]"
    raise TypeError(f"cannot write {type(v).__name__} {v!r} as TOML")


def dumps(data: dict[str, Any], header: str = "") -> str:
    """``data`` as TOML: plain keys first, then one table per dict value (nested tables as
    ``[a.b]``).  None values are left out (TOML has no null)."""
    lines = [f"# {h}" if h else "#" for h in header.splitlines()] if header else []
    _emit(data, [], lines)
    return "\n".join(lines).strip() + "\n"


def _emit(data: dict, path: list[str], lines: list[str]) -> None:
    plain = {k: v for k, v in data.items() if not isinstance(v, dict) and v is not None}
    tables = {k: v for k, v in data.items() if isinstance(v, dict)}
    if path and (plain or not tables):
        lines.append("")
        lines.append("[" + ".".join(_key(p) for p in path) + "]")
    for k, v in plain.items():
        lines.append(f"{_key(k)} = {_value(v)}")
    for k, v in tables.items():
        _emit(v, path + [k], lines)
