"""Which dataset a data folder holds, from its layout alone (no file is parsed): ``vl COMMAND --data
DIR`` without ``--dataset`` reads DIR as the one dataset whose layout it has
(:func:`vlcore.cli.options.infer_dataset`; no match, or several, stop with the candidates).

A dataset class declares what it recognises with class attributes, read by the CLI through the
registry (a plugin's dataset may declare them too):

* ``detect_layout(root: Path) -> str | None`` (a classmethod): what in ``root`` shows the layout
  (e.g. ``"captions.csv"``), or None;
* ``layout_hint``: the layout in a few words, for the message when no dataset matches a folder.

A dataset that reads no folder at all (``embedded``, generated) sets ``reads_data_folder = False``.
"""
from __future__ import annotations

import os
from pathlib import Path

#: how deep below the folder parquet files are looked for (``data/train-*.parquet`` is 1 deep)
PARQUET_DEPTH = 2


def files_named(root: Path, names: tuple[str, ...]) -> list[str]:
    """Those of ``names`` that are files in ``root``."""
    return [n for n in names if (root / n).is_file()]


def parquet_files(root: Path, depth: int = PARQUET_DEPTH) -> list[Path]:
    """The parquet files in ``root`` and its folders down to ``depth`` levels (hidden ones skipped);
    ``root`` itself when it is one."""
    if root.is_file():
        return [root] if root.suffix == ".parquet" else []
    found, level = [], [root]
    for _ in range(depth + 1):
        below = []
        for folder in level:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for e in entries:
                if e.name.startswith("."):
                    continue
                if e.is_file() and e.name.endswith(".parquet"):
                    found.append(Path(e.path))
                elif e.is_dir(follow_symlinks=False):
                    below.append(Path(e.path))
        level = below
    return sorted(found)

