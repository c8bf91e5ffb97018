"""Bundled loggers (installed as ``vlcore.plugins.loggers``; on disk ``plugins/loggers.py``):
``jsonl`` (always on: ``OUT/log.jsonl``), ``tensorboard`` (``OUT/tensorboard/`` event files) and
``wandb`` (a Weights & Biases run; ``WANDB_MODE=offline`` writes it under ``OUT/wandb/`` only).

The optional libraries are imported when a logger starts, so ``--log tensorboard`` without
TensorBoard installed fails with the ``pip install`` that fixes it, before any data work.

Every path a bundled logger writes lies inside the run folder OUT: a path option (``jsonl.file``,
``tensorboard.dir``) is checked by :func:`run_path` when the options are read (an absolute path, a
``..``, a hidden name or a name another part of the artifact writes is a usage error naming the
fix), and by :func:`inside` when the run starts (a path that resolves outside OUT through a
symbolic link is refused before anything is written).
"""
from __future__ import annotations

import json
import os
import secrets
import time
from dataclasses import dataclass
from pathlib import Path, PurePath

from vlcore import hookimpl
from vlcore.artifacts.io import note_written, write_text
from vlcore.artifacts.loggers import LogRun, Logger
from vlcore.core.errors import ConfigError, VLError


def _need(module: str, extra: str, logger: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise VLError(f"logger '{logger}' needs the package '{module.split('.')[0]}' ({exc}). Install it with "
                      f"pip install 'vlcore[{extra}]', or drop '{logger}' from --log.") from None


def _artifact_names(own: str) -> tuple[str, ...]:
    """fnmatch patterns of the names the artifacts of vl write in their folder, ``own`` (the
    logger's own default) excepted: a logger must not write over them."""
    try:
        from vlcore.artifacts.outdir import COMMON, KINDS
    except ImportError:  # pragma: no cover
        return ()
    return tuple(p for _, names in KINDS.values() for p in names if p != own) + tuple(COMMON)


def run_path(logger: str, option: str, value, default: str) -> str:
    """The path option ``option`` of ``logger`` (``--log-option LOGGER.OPTION=VALUE``), checked to
    name a place inside the run folder OUT: relative to it, with no ``..`` and no hidden part (the
    records of vl start with a dot), and not a name another part of the artifact writes
    (``meta.json``, ``best``, ...).  Returns it normalised; a ConfigError naming the option and the
    fix otherwise.  ``default``: the option's default (shown in the fix)."""
    import fnmatch

    text = str(value)
    where = f"--log-option {logger}.{option}={text}"
    fix = (f"Give a path relative to the run folder, inside it (e.g. --log-option {logger}.{option}={default}); "
           f"to keep the files elsewhere, copy or link them after the run.")
    p = PurePath(text)
    if not text.strip() or not p.parts or p.parts == (".",):
        why = "names no file or folder"
    elif p.is_absolute() or p.anchor or text.startswith("~"):
        what = "a home-folder path (~ is not expanded)" if text.startswith("~") else "an absolute path"
        why = f"is {what}, outside the run folder OUT"
    elif ".." in p.parts:
        why = "goes up out of the run folder OUT ('..')"
    elif any(part.startswith(".") for part in p.parts):
        why = "has a hidden part (a name starting with '.'); vl keeps its own records under such names"
    elif any(ord(ch) < 32 for ch in text):
        why = "holds a control character"
    elif any(fnmatch.fnmatchcase(p.parts[0], pat) for pat in _artifact_names(default)):
        why = f"names '{p.parts[0]}', which another part of the run's artifact writes in OUT"
    else:
        return str(p)
    raise ConfigError(f"{where}: a logger writes only inside the run folder OUT, and this path {why}. {fix}")


def inside(run: LogRun, rel: str, logger: str, option: str | None = None) -> Path:
    """``run.out / rel``, refused (ConfigError) when it resolves outside the run folder (a symbolic
    link in OUT to another place): the check of a logger's paths when the run starts, before it
    writes."""
    target = run.out / rel
    root = os.path.realpath(run.out)
    real = os.path.realpath(target)
    if real != root and not real.startswith(root.rstrip(os.sep) + os.sep):
        what = f"--log-option {logger}.{option}={rel}" if option else f"logger '{logger}': {rel}"
        raise ConfigError(f"{what}: {target} leads to {real}, outside the run folder {run.out} (through a symbolic "
                          f"link); a logger writes only inside OUT. Remove the link, or choose another --out.")
    return target


def _note_written(path: Path) -> None:
    """Record in the run folder's record of vl's files that ``path`` is about to be written (a file
    written other than atomically: the appended log), so the folder's commands know it is vl's."""
    note_written(path)


class JsonlLogger(Logger):
    """JSON Lines in the run folder (always on): one object per step, figure and start/finish.

    The file is opened with the first record after the start, so a run that fails before its first
    iteration leaves no log behind (a refused command changes nothing)."""

    name = "jsonl"

    @dataclass(frozen=True)
    class Config:
        #: file inside the run folder (a path relative to it)
        file: str = "log.jsonl"

        def __post_init__(self):
            object.__setattr__(self, "file", run_path("jsonl", "file", self.file, "log.jsonl"))

    def __init__(self, config=None):
        super().__init__(config)
        self._f = None
        self._run: LogRun | None = None

    def _write(self, record: dict) -> None:
        if self._f is None:
            run = self._run
            self.path = inside(run, self.config.file, self.name, "file")  # checked again: nothing written yet
            self.path.parent.mkdir(parents=True, exist_ok=True)
            _note_written(self.path)
            self._f = open(self.path, "a" if run.resume else "w", encoding="utf-8")
            self._f.write(json.dumps({"event": "resume" if run.resume else "start", "time": self._started,
                                      "name": run.name, "config": run.config}, default=str) + "\n")
        self._f.write(json.dumps(record, default=str) + "\n")
        self._f.flush()

    def start(self, run: LogRun) -> None:
        self._run, self._started = run, time.time()
        self.path = inside(run, self.config.file, self.name, "file")

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self._write({"step": step, **scalars})

    def log_image(self, step: int, tag: str, path: Path) -> None:
        self._write({"step": step, "image": tag, "path": str(path)})

    def finish(self) -> None:
        if self._f is not None:  # nothing was logged: no file
            self._write({"event": "finish", "time": time.time()})
            self._f.close()
            self._f = None


def jsonl_file(loggers, out) -> Path:
    """The file the ``jsonl`` logger of ``loggers`` (a :class:`vlcore.artifacts.loggers.Loggers`, or a list of
    loggers) writes for the run folder ``out``: what a command's summary names."""
    for lg in getattr(loggers, "loggers", loggers) or ():
        if isinstance(lg, JsonlLogger):
            return Path(out) / lg.config.file
    return Path(out) / JsonlLogger.Config().file


class TensorBoardLogger(Logger):
    """TensorBoard event files in the run folder (scalars, the image grid, the settings as text)."""

    name = "tensorboard"

    @dataclass(frozen=True)
    class Config:
        #: folder inside the run folder, relative to it (point `tensorboard --logdir` at it, or at a parent of
        #: many runs)
        dir: str = "tensorboard"
        #: seconds between flushes to disk
        flush_secs: int = 10

        def __post_init__(self):
            object.__setattr__(self, "dir", run_path("tensorboard", "dir", self.dir, "tensorboard"))

    def __init__(self, config=None):
        super().__init__(config)
        _need("tensorboard", "tensorboard", self.name)  # when --log is read: before any data work

    def start(self, run: LogRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        folder = inside(run, self.config.dir, self.name, "dir")
        before = set(folder.iterdir()) if folder.is_dir() else set()
        self.writer = SummaryWriter(log_dir=str(folder), flush_secs=self.config.flush_secs)
        for f in sorted(set(folder.iterdir()) - before):  # the event file it opened (its name is TensorBoard's)
            _note_written(f)
        self.writer.add_text("config", "```\n" + json.dumps(run.config, indent=2, default=str) + "\n```")

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        for k, v in scalars.items():
            self.writer.add_scalar(k, v, global_step=step)

    def log_image(self, step: int, tag: str, path: Path) -> None:
        import numpy as np
        from PIL import Image

        with Image.open(path) as img:
            arr = np.asarray(img.convert("RGB"))
        self.writer.add_image(tag, arr, global_step=step, dataformats="HWC")

    def finish(self) -> None:
        self.writer.close()


class WandbLogger(Logger):
    """A Weights & Biases run (scalars, the image grid, the settings); WANDB_MODE=offline keeps it local."""

    name = "wandb"

    @dataclass(frozen=True)
    class Config:
        #: W&B project (none: $WANDB_PROJECT, else "vlcore")
        project: str | None = None
        #: W&B entity (team or user; none: your default)
        entity: str | None = None
        #: online, offline or disabled (none: $WANDB_MODE, else online)
        mode: str | None = None

    ID_FILE = ".wandb-run-id"

    def __init__(self, config=None):
        super().__init__(config)
        if self.config.mode not in (None, "online", "offline", "disabled"):
            raise ConfigError(f"logger 'wandb': mode must be online, offline or disabled (got {self.config.mode!r}).")
        _need("wandb", "wandb", self.name)  # when --log is read: before any data work

    def start(self, run: LogRun) -> None:
        import os

        import wandb

        c = self.config
        inside(run, "wandb", self.name)  # wandb writes OUT/wandb/ (and OUT/.wandb-run-id): both inside OUT
        id_file = inside(run, self.ID_FILE, self.name)
        run_id = id_file.read_text().strip() if run.resume and id_file.exists() else secrets.token_hex(4)
        # the mode is read here, not left to wandb: its settings outlive a run in the process, so an earlier
        # run's mode would otherwise win over $WANDB_MODE
        mode = c.mode or os.environ.get("WANDB_MODE") or "online"
        self.run = wandb.init(project=c.project or os.environ.get("WANDB_PROJECT") or "vlcore", entity=c.entity,
                              name=run.name, dir=str(run.out), config=run.config, mode=mode, id=run_id,
                              resume="allow")

        write_text(id_file, run_id + "\n")  # atomic, and recorded as vl's
        self._wandb_dir = run.out / "wandb"
        self._note_wandb_files()

    def _note_wandb_files(self) -> None:
        """Record the files wandb wrote under OUT/wandb/ as vl's (so --overwrite may delete them; a
        file wandb writes after the last call, e.g. before a kill -9, is not recorded and so kept)."""
        root = getattr(self, "_wandb_dir", None)
        if root is None or root.is_symlink() or not root.is_dir():
            return
        for dirpath, _, files in os.walk(root):  # links are not followed
            for f in files:
                p = Path(dirpath) / f
                if not p.is_symlink():
                    _note_written(p)

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def log_image(self, step: int, tag: str, path: Path) -> None:
        import wandb

        self.run.log({tag: wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        self.run.finish()
        self._note_wandb_files()


LOGGERS = (JsonlLogger, TensorBoardLogger, WandbLogger)


@hookimpl
def register_loggers(register):
    for cls in LOGGERS:
        register(cls)
