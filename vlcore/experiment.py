"""Recipe files: an experiment as a TOML file naming its stages, run by ``vl run``.

::

    [recipe]
    description = "bitraj, 100 pairs, on Flickr8k (frozen EfficientNet-Lite0 112 px + MiniLM)"
    extends = "flickr8k-experts.toml"     # optional: a recipe this one refines (relative path)

    [common]                 # flags given to every stage whose command has them
    dataset = "flickr8k"
    encoder = "effnet-lite0"

    [stages.buffer]          # stages run in file order; each writes its artifact to OUT/NAME
    run = "experts"          # the vl command
    num-experts = 10         # its flags, as in a --config file

    [stages.distilled]
    run = "distill"
    buffer = "@buffer"       # "@NAME": the folder of an earlier stage

Keys are the command's flags (dashes or underscores).  ``extends`` merges this file over another,
table by table; the command line overrides any key (``vl run R --set distilled.pairs=200``).
Nothing in a recipe is executed: it is data, read with :mod:`tomllib`.
"""
from __future__ import annotations

import importlib.resources
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import tomlfile
from .errors import ConfigError, suggest

#: recipes shipped inside the package, by name (``vl run demo``)
EMBEDDED = ("demo",)
_TOP = {"recipe", "common", "stages"}


@dataclass
class Stage:
    name: str
    command: str
    settings: dict[str, Any]


@dataclass
class Experiment:
    source: str
    description: str = ""
    common: dict[str, Any] = field(default_factory=dict)
    stages: list[Stage] = field(default_factory=list)

    def stage(self, name: str) -> Stage:
        for s in self.stages:
            if s.name == name:
                return s
        raise ConfigError(f"{self.source} has no stage '{name}'.{suggest(name, [s.name for s in self.stages])} "
                          f"Stages: {', '.join(s.name for s in self.stages)}.")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"recipe {path} extends itself (through {' -> '.join(map(str, seen))}).")
    data = tomlfile.load(path, "recipe")
    unknown = set(data) - _TOP
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(f"{path}: unknown table or key '{k}'.{suggest(k, _TOP)} A recipe has [recipe], "
                          f"[common] and [stages.NAME] tables.")
    parent = (data.get("recipe") or {}).get("extends")
    if parent:
        base = _read(path.parent / parent, seen + (path,))
        data = _merge(base, data)
        data["recipe"] = {**data.get("recipe", {}), "extends": None}
    return data


def resolve_path(recipe: str) -> Path:
    """The file of ``recipe``: a path, or the name of an embedded recipe."""
    p = Path(recipe)
    if p.is_file() or recipe not in EMBEDDED:  # a folder named like an embedded recipe (vl-demo's out) is not one
        return p
    return Path(str(importlib.resources.files("vlcore") / "recipes" / f"{recipe}.toml"))


def load(recipe: str) -> Experiment:
    """Read a recipe file (or an embedded recipe by name)."""
    path = resolve_path(recipe)
    data = _read(path)
    stages = []
    for name, table in (data.get("stages") or {}).items():
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: stages.{name} must be a table ([stages.{name}]).")
        table = dict(table)
        command = table.pop("run", None)
        if not command:
            raise ConfigError(f"{path}: stage '{name}' names no command: add run = \"experts\" (or distill, "
                              f"coreset, eval, train).")
        stages.append(Stage(name, str(command), table))
    if not stages:
        raise ConfigError(f"{path} has no stages: add at least one [stages.NAME] table with run = \"...\".")
    for i, s in enumerate(stages):
        for k, v in s.settings.items():
            if isinstance(v, str) and v.startswith("@") and v[1:] not in {t.name for t in stages[:i]}:
                raise ConfigError(f"{path}: stage '{s.name}' refers to '{v}' ({k}), which is not an earlier stage "
                                  f"(earlier: {', '.join(t.name for t in stages[:i]) or 'none'}).")
    meta = data.get("recipe") or {}
    return Experiment(str(path), str(meta.get("description", "")), dict(data.get("common") or {}), stages)


def parse_value(text: str) -> Any:
    """A ``--set`` value: TOML syntax when it parses (``200``, ``true``, ``[1, 2]``), else the string."""
    try:
        return tomlfile.tomllib.loads(f"v = {text}")["v"]
    except Exception:
        return text


def override(exp: Experiment, assignment: str) -> None:
    """Apply ``STAGE.KEY=VALUE`` (or ``common.KEY=VALUE``) to ``exp``."""
    target, eq, value = assignment.partition("=")
    where, dot, key = target.strip().partition(".")
    if not eq or not dot or not key:
        raise ConfigError(f"--set '{assignment}' is not STAGE.KEY=VALUE (e.g. --set distilled.pairs=200, or "
                          f"--set common.device=cuda).")
    table = exp.common if where == "common" else exp.stage(where).settings
    table[key.strip()] = parse_value(value.strip())
