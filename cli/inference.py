"""Defaults are never picked against what the user gave: a ``--data`` folder without ``--dataset`` is
read as the dataset whose layout it has (``detect_layout`` of each installed dataset,
plugins/datasets/layout.py), and options given for a component that was not named must be the
default component's own; otherwise the command stops with the candidates (a usage error)."""
from __future__ import annotations

import os
from pathlib import Path

import click

from vlcore.errors import ConfigError
from vlcore.registry import get_host


def user_gave(name: str) -> bool | None:
    """Whether the user set the parameter ``name`` of the running command (None: no such parameter,
    or no command is running)."""
    from .command import was_given

    ctx = click.get_current_context(silent=True)
    if ctx is None or name not in ctx.params:
        return None
    return was_given(ctx, name)


def dataset_classes() -> list[type]:
    host = get_host()
    return [host.get("dataset", n) for n in host.names("dataset")]


def detect_datasets(data_dir: str) -> list[tuple[str, str]]:
    """(dataset, what shows it) for each installed dataset whose layout (its ``detect_layout``,
    plugins/datasets/layout.py) the folder ``data_dir`` has."""
    path = Path(os.path.expanduser(str(data_dir)))
    found = []
    for cls in dataset_classes():
        probe = getattr(cls, "detect_layout", None)
        try:
            evidence = probe(path) if probe is not None else None
        except OSError:
            evidence = None
        if evidence:
            found.append((cls.name, str(evidence)))
    return found


def layouts() -> str:
    """Each installed dataset that can be recognised, with its layout (for messages)."""
    return "; ".join(f"{c.name}: {c.layout_hint}" for c in dataset_classes() if getattr(c, "layout_hint", None))


def infer_dataset(data_dir: str) -> tuple[str, str]:
    """The dataset of the folder ``data_dir`` (``--data`` without ``--dataset``), from its layout, and
    what showed it; ConfigError naming the candidates when no layout, or several, match."""
    path = Path(os.path.expanduser(str(data_dir)))
    if not path.exists():
        raise ConfigError(f"--data {data_dir}: no such file or folder. Pass the folder of your data (or name its "
                          f"dataset with --dataset).")
    found = detect_datasets(data_dir)
    if len(found) == 1:
        return found[0]
    if not found and path.is_file():
        raise ConfigError(f"--data {data_dir} is a file; pass the folder of your data (with a caption file of "
                          f"another name: --data DIR --dataset-option file=NAME), or name its dataset with --dataset.")
    if not found:
        raise ConfigError(f"--data {data_dir} was given without --dataset, and the folder has the layout of no "
                          f"installed dataset, so vl cannot tell how to read it. The layouts it knows: {layouts()}. "
                          f"Arrange the folder like one of them, or name its dataset with --dataset NAME "
                          f"(`vl list datasets` shows them).")
    shown = "; ".join(f"{name} ({evidence})" for name, evidence in found)
    raise ConfigError(f"--data {data_dir} was given without --dataset, and the folder has the layout of several "
                      f"datasets: {shown}. Choose one: " +
                      " or ".join(f"--dataset {name}" for name, _ in found) + ".")


def config_fields(cls: type) -> set[str]:
    """The option names of a component class's Config."""
    import dataclasses

    return {f.name for f in dataclasses.fields(cls.Config)} if dataclasses.is_dataclass(getattr(cls, "Config", None)) \
        else set()


def fits_default(kind: str, name: str, options: dict, value: str | None, param: str, flag: str) -> None:
    """When the component of ``kind`` was not named (``param``: its flag's parameter) and the default
    ``name`` is used, options given for it (``flag``) must be its own: else a usage error naming the
    default and the components that take them (a default is never picked against the options given)."""
    if not options or not (value is None or user_gave(param) is False):
        return
    host = get_host()
    unknown = sorted(set(options) - config_fields(host.get(kind, name)))
    if not unknown:
        return
    from vlcore.kinds import KINDS

    noun, option = KINDS[kind].noun, "--" + param.replace("_", "-")
    takes = [n for n in host.names(kind) if set(options) <= config_fields(host.get(kind, n))]
    given = ", ".join(f"'{k}'" for k in unknown)
    if takes:
        fix = (f"{'It belongs' if len(unknown) == 1 else 'They belong'} to {' and '.join(takes)}: name "
               f"{'it' if len(takes) == 1 else 'one'} with {option} {takes[0] if len(takes) == 1 else 'NAME'}.")
    else:
        fix = f"`vl list {kind}s` shows each one's options."
    raise ConfigError(f"{flag} {given} is not an option of the {noun} '{name}', which is used because {option} was "
                      f"not given. {fix}")


def refuse_ignored_folder(cls: type, data_dir: str | None) -> None:
    """A ``--data`` folder for a dataset that reads none (``embedded``: generated) would be ignored:
    a usage error naming the datasets whose layout the folder has."""
    if data_dir is None or getattr(cls, "reads_data_folder", True) is not False:
        return
    found = detect_datasets(data_dir) if Path(os.path.expanduser(str(data_dir))).exists() else []
    which = (" (its layout is that of " + " or ".join(f"--dataset {n}" for n, _ in found) + ")") if found else ""
    raise ConfigError(f"Dataset '{cls.name}' reads no data folder (it is generated), so --data {data_dir} would be "
                      f"ignored. Drop --data to use {cls.name}, or name the dataset of {data_dir} with --dataset"
                      f"{which}.")


def default_dataset_note(dataset: str, options: dict) -> str:
    """For an option the dataset does not take, when --dataset was not given: that the default was
    used, and which datasets take the options given ("" when --dataset was given)."""
    if user_gave("dataset") is not False:
        return ""
    takes = [c.name for c in dataset_classes() if options and set(options) <= config_fields(c)]
    note = f" --dataset was not given, so the default '{dataset}' is used"
    if takes:
        note += (f"; the options given belong to {' and '.join(takes)}: name {'it' if len(takes) == 1 else 'one'} "
                 f"with --dataset {takes[0] if len(takes) == 1 else 'NAME'}")
    return note + "."
