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

The rules, checked when the recipe is loaded (a broken recipe is a usage error, exit 2, naming the
file, the key and the fix, before any stage runs):

* the top level holds only the tables ``[recipe]``, ``[common]`` and ``[stages.NAME]``;
  ``[recipe]`` holds only ``description`` (a string) and ``extends`` (one file, a string, relative
  to this recipe's folder; a chain of files extends one another);
* a key of ``[common]`` is given to every stage whose command has it, and one that no stage's
  command has is an error (with the closest key suggested), as is an unknown key of a stage;
  values are strings, numbers, booleans or lists of them;
* a stage NAME is a plain folder name: not empty, no ``/`` or ``\\``, not starting with ``.``
  (so no ``..``), and not one of the files ``vl run`` writes in OUT (``results.json``,
  ``results.md``, ``recall.png``);
* a stage writes its artifact to ``OUT/NAME`` (OUT: ``vl run --out``).  Only a stage whose ``out``
  is given explicitly writes elsewhere: ``out`` in a recipe file is relative to that file's folder
  (not to the current folder; ``~`` is the home folder), and ``--set NAME.out=PATH`` on the
  command line is relative to the current folder, like every path given there.
"""
from __future__ import annotations

import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from vlcore.artifacts import tomlfile
from vlcore.core.errors import ConfigError, suggest

#: recipes shipped inside the package, by name (``vl run demo``)
EMBEDDED = ("demo",)
_TOP = {"recipe", "common", "stages"}
#: the keys of the [recipe] table and their types
RECIPE_KEYS = {"description": str, "extends": str}
#: the files `vl run` writes in OUT itself: no stage may be named like them
RUN_FILES = ("results.json", "results.md", "recall.png")
_SCALARS = (str, int, float, bool)


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
    #: (table, key) -> the ``--set`` that gave it (table: "common" or a stage name), for messages
    overrides: dict[tuple[str, str], str] = field(default_factory=dict)

    def origin(self, table: str, key: str) -> str:
        """Where the setting ``key`` of ``table`` ("common" or a stage name) came from, for messages."""
        given = self.overrides.get((table, key)) or self.overrides.get((table, key.replace("_", "-"))) \
            or self.overrides.get((table, key.replace("-", "_")))
        if given:
            return f"--set {given}"
        return f"{self.source} [{'common' if table == 'common' else 'stages.' + table}]"

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


def _kind(value: Any) -> str:
    """A TOML value's type in the words of a recipe's rules."""
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def check_value(where: str, key: str, value: Any) -> None:
    """A setting (of [common], of a stage, or given with --set) is a string, number, boolean or a
    list of them: the values a flag takes."""
    ok = isinstance(value, _SCALARS) or (isinstance(value, list) and all(isinstance(v, _SCALARS) for v in value))
    if not ok:
        raise ConfigError(f"{where}: '{key}' is {_kind(value)} ({value!r}); a setting is a flag's value: a string, "
                          f"a number, a boolean or a list of them (e.g. {key} = 10, or {key} = [\"a=1\", \"b=2\"]).")


def check_stage_name(source: str, name: str) -> None:
    """A stage NAME is a plain folder name (the stage writes OUT/NAME)."""
    why = None
    if not name.strip():
        why = "it is empty"
    elif "/" in name or "\\" in name:
        why = "it holds a '/' or '\\', which would put the stage in another folder"
    elif name.startswith("."):
        why = "it starts with '.' ('..' would write beside OUT; hidden names are vl's records)"
    elif any(ord(ch) < 32 for ch in name):
        why = "it holds a control character"
    elif name in RUN_FILES:
        why = f"`vl run` writes OUT/{name} itself"
    if why:
        raise ConfigError(f"{source}: the stage name {name!r} is not a plain folder name: {why}. A stage writes "
                          f"OUT/NAME, so NAME must be one folder name (e.g. [stages.distilled]); rename the stage. "
                          f"To write a stage's artifact elsewhere, give it out = \"PATH\" (relative to the recipe "
                          f"file).")


def check_out(where: str, value: Any) -> None:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(f"{where}: 'out' is {_kind(value)} ({value!r}); a stage's out is the path of its folder, a "
                          f"non-empty string (leave it out and the stage writes OUT/NAME).")


def _check_file(path: Path, data: dict) -> None:
    """The shape of one recipe file: its tables, the keys of [recipe] and the type of every value."""
    unknown = set(data) - _TOP
    if unknown:
        k = sorted(unknown)[0]
        raise ConfigError(f"{path}: unknown table or key '{k}'.{suggest(k, _TOP)} A recipe has [recipe], "
                          f"[common] and [stages.NAME] tables.")
    for key in ("recipe", "common", "stages"):
        if key in data and not isinstance(data[key], dict):
            raise ConfigError(f"{path}: '{key}' is {_kind(data[key])} ({data[key]!r}), but it must be a table: write "
                              f"[{key if key != 'stages' else 'stages.NAME'}] with its keys below it (a recipe has "
                              f"[recipe], [common] and [stages.NAME] tables).")
    meta = data.get("recipe") or {}
    for key, value in meta.items():
        if key not in RECIPE_KEYS:
            raise ConfigError(f"{path}: unknown key '{key}' in [recipe].{suggest(key, RECIPE_KEYS)} [recipe] holds "
                              f"{' and '.join(RECIPE_KEYS)}; the flags of the stages go in [common] or "
                              f"[stages.NAME].")
        if not isinstance(value, RECIPE_KEYS[key]) or (key == "extends" and not value.strip()):
            what = ("the path of one recipe file, relative to this one (e.g. extends = \"base.toml\"; to build on "
                    "several, let each file extend the next)" if key == "extends" else "a string")
            raise ConfigError(f"{path}: [recipe] {key} is {_kind(value)} ({value!r}); it must be {what}.")
    for key, value in (data.get("common") or {}).items():
        check_value(f"{path} [common]", key, value)
    for name, table in (data.get("stages") or {}).items():
        check_stage_name(str(path), name)
        if not isinstance(table, dict):
            raise ConfigError(f"{path}: stages.{name} must be a table ([stages.{name}]), not {_kind(table)}.")
        for key, value in table.items():
            where = f"{path} [stages.{name}]"
            if key == "run":
                if not isinstance(value, str):
                    raise ConfigError(f"{where}: run is {_kind(value)} ({value!r}); it names the stage's command, "
                                      f"a string: run = \"experts\" (or distill, coreset, eval, train).")
            elif key == "out":
                check_out(where, value)
            else:
                check_value(where, key, value)


def _read(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    path = path.resolve()
    if path in seen:
        raise ConfigError(f"recipe {path} extends itself (through {' -> '.join(map(str, seen))}).")
    data = tomlfile.load(path, "recipe")
    _check_file(path, data)
    for table in (data.get("stages") or {}).values():  # a stage's own out: relative to the file that gives it
        if "out" in table:
            table["out"] = str((path.parent / os.path.expanduser(table["out"])).resolve())
    parent = (data.get("recipe") or {}).get("extends")
    if parent:
        base = _read(path.parent / os.path.expanduser(parent), seen + (path,))
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
    """Read a recipe file (or an embedded recipe by name), checked against the rules of the
    module docstring (the keys of each stage and of [common] are checked against the commands by
    ``vl run``, which knows them)."""
    path = resolve_path(recipe)
    data = _read(path)
    stages = []
    for name, table in (data.get("stages") or {}).items():
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
    return Experiment(str(path), str(meta.get("description") or ""), dict(data.get("common") or {}), stages)


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
    where, key = where.strip(), key.strip()
    table = exp.common if where == "common" else exp.stage(where).settings
    parsed = parse_value(value.strip())
    if where != "common" and key == "run":
        raise ConfigError(f"--set '{assignment}': a stage's command (run) is the recipe's; change the recipe file, "
                          f"or run the command itself (vl {exp.stage(where).command} ...).")
    if where != "common" and key == "out":
        check_out(f"--set '{assignment}'", parsed)  # relative to the current folder, like any command-line path
    else:
        check_value(f"--set '{assignment}'", key, parsed)
    table[key] = parsed
    exp.overrides[(where, key)] = assignment
