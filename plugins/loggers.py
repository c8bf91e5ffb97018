"""Bundled loggers (installed as ``vlcore.plugins.loggers``; on disk ``plugins/loggers.py``):
``jsonl`` (always on: ``OUT/log.jsonl``), ``tensorboard`` (``OUT/tensorboard/`` event files) and
``wandb`` (a Weights & Biases run; ``WANDB_MODE=offline`` writes it under ``OUT/wandb/`` only).

The optional libraries are imported when a logger starts, so ``--log tensorboard`` without
TensorBoard installed fails with the ``pip install`` that fixes it, before any data work.
"""
from __future__ import annotations

import json
import secrets
import time
from dataclasses import dataclass
from pathlib import Path

from vlcore import hookimpl
from vlcore.errors import ConfigError, VLError
from vlcore.loggers import Logger, LogRun


def _need(module: str, extra: str, logger: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise VLError(f"logger '{logger}' needs the package '{module.split('.')[0]}' ({exc}). Install it with "
                      f"pip install 'vlcore[{extra}]', or drop '{logger}' from --log.") from None


class JsonlLogger(Logger):
    """JSON Lines in the run folder (always on): one object per step, figure and start/finish.

    The file is opened with the first record after the start, so a run that fails before its first
    iteration leaves no log behind (a refused command changes nothing)."""

    name = "jsonl"

    @dataclass(frozen=True)
    class Config:
        #: file name inside the run folder
        file: str = "log.jsonl"

    def __init__(self, config=None):
        super().__init__(config)
        self._f = None
        self._run: LogRun | None = None

    def _write(self, record: dict) -> None:
        if self._f is None:
            run = self._run
            self._run.out.mkdir(parents=True, exist_ok=True)
            self._f = open(self.path, "a" if run.resume else "w", encoding="utf-8")
            self._f.write(json.dumps({"event": "resume" if run.resume else "start", "time": self._started,
                                      "name": run.name, "config": run.config}, default=str) + "\n")
        self._f.write(json.dumps(record, default=str) + "\n")
        self._f.flush()

    def start(self, run: LogRun) -> None:
        self._run, self._started = run, time.time()
        self.path = run.out / self.config.file

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self._write({"step": step, **scalars})

    def log_image(self, step: int, tag: str, path: Path) -> None:
        self._write({"step": step, "image": tag, "path": str(path)})

    def finish(self) -> None:
        if self._f is not None:  # nothing was logged: no file
            self._write({"event": "finish", "time": time.time()})
            self._f.close()
            self._f = None


class TensorBoardLogger(Logger):
    """TensorBoard event files in the run folder (scalars, the image grid, the settings as text)."""

    name = "tensorboard"

    @dataclass(frozen=True)
    class Config:
        #: folder inside the run folder (point `tensorboard --logdir` at it, or at a parent of many runs)
        dir: str = "tensorboard"
        #: seconds between flushes to disk
        flush_secs: int = 10

    def __init__(self, config=None):
        super().__init__(config)
        _need("tensorboard", "tensorboard", self.name)  # when --log is read: before any data work

    def start(self, run: LogRun) -> None:
        from torch.utils.tensorboard import SummaryWriter

        self.writer = SummaryWriter(log_dir=str(run.out / self.config.dir), flush_secs=self.config.flush_secs)
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
        id_file = run.out / self.ID_FILE
        run_id = id_file.read_text().strip() if run.resume and id_file.exists() else secrets.token_hex(4)
        # the mode is read here, not left to wandb: its settings outlive a run in the process, so an earlier
        # run's mode would otherwise win over $WANDB_MODE
        mode = c.mode or os.environ.get("WANDB_MODE") or "online"
        self.run = wandb.init(project=c.project or os.environ.get("WANDB_PROJECT") or "vlcore", entity=c.entity,
                              name=run.name, dir=str(run.out), config=run.config, mode=mode, id=run_id,
                              resume="allow")
        id_file.write_text(run_id + "\n")

    def log_scalars(self, step: int, scalars: dict[str, float]) -> None:
        self.run.log(dict(scalars), step=step)

    def log_image(self, step: int, tag: str, path: Path) -> None:
        import wandb

        self.run.log({tag: wandb.Image(str(path))}, step=step)

    def finish(self) -> None:
        self.run.finish()


LOGGERS = (JsonlLogger, TensorBoardLogger, WandbLogger)


@hookimpl
def register_loggers(register):
    for cls in LOGGERS:
        register(cls)
