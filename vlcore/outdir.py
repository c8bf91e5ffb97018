"""Output folders: what a folder holds, which command may write into it, and an advisory lock.

Every ``vl`` command that writes an artifact claims its ``--out`` folder with :class:`OutputFolder`
before any data work:

* the path must be a folder or creatable as one (not a file, not under a file, not under ``/proc``);
* a missing or empty folder is the command's; one holding an artifact (what :func:`describe`
  recognises) is refused, naming what is there, unless ``resume`` (continue the same kind of
  artifact: a distillation, a buffer) or ``overwrite`` (replace it: its files are deleted when the
  command is about to write, :meth:`OutputFolder.prepare`) is given;
* files no ``vl`` command writes are never deleted: a folder holding them is refused, also with
  ``overwrite`` (``resume`` leaves them alone);
* the folder must not be, or hold, one of the command's inputs (``vl eval PS --out PS``);
* an exclusive advisory lock (``fcntl.flock`` on the folder) is held until the command ends, so a
  second run into the same folder fails at once;
* a folder the claim created is removed again if the command ends without writing into it, so a
  refused command leaves nothing behind;
* temporary files of interrupted atomic writes (``kill -9``) are removed by :meth:`prepare`.
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from .errors import BusyError, OutputError
from .io import is_temp_file, remove_temp_files

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None

log = logging.getLogger(__name__)

#: the artifact kind each command writes
COMMAND_KINDS = {"experts": "buffer", "distill": "distilled", "coreset": "coreset", "eval": "eval",
                 "train": "model", "run": "experiment", "demo": "experiment"}
#: kinds a command can continue (``--resume``; ``vl run`` and ``vl demo`` always continue theirs)
RESUMABLE = frozenset({"buffer", "distilled", "experiment"})
#: kind -> (what it is called, the names its folder holds: fnmatch patterns)
KINDS = {
    "buffer": ("an expert buffer", ("index.json", "expert_*.safetensors")),
    "distilled": ("a distillation", ("pairs.safetensors", "captions.json", "meta.json", "checkpoint.safetensors",
                                     "checkpoint.pt", "best", "grid.png", "loss.png", "dev_recall.png", "eval-*",
                                     "log.jsonl", "buffer", "tensorboard", "wandb")),
    "coreset": ("a coreset", ("pairs.safetensors", "captions.json", "meta.json", "grid.png", "eval-*")),
    "eval": ("evaluation results", ("metrics.json", "details.json", "recall.png")),
    "model": ("a full-data model", ("model.safetensors", "metrics.json", "meta.json", "recall.png")),
    "experiment": ("an experiment of `vl run`", ("results.json", "results.md", "recall.png")),
}
#: subfolders an artifact writes itself (others, like eval-dev/, belong to other commands)
OWN_SUBFOLDERS = {"distilled": ("best", "buffer", "tensorboard", "wandb")}
#: names any artifact folder holds
COMMON = ("config.toml",)
#: the record `vl run` keeps in each stage folder (it does not make the folder another artifact)
STAGE_RECORD = ".vl-stage.json"


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


@dataclass
class Contents:
    """What a folder holds."""

    path: Path
    #: the artifact kind (a key of :data:`KINDS`), or None: empty, or nothing vlcore recognises
    kind: str | None = None
    #: for people: "a distillation (bitraj, 8 pairs, finished after 6 iterations)"
    what: str = "nothing"
    #: its entries (stage records and temporary files of interrupted writes not counted)
    names: list[str] = field(default_factory=list)
    #: entries that the artifact's command does not write
    foreign: list[str] = field(default_factory=list)
    #: why it cannot be continued with --resume (None: it can)
    not_resumable: str | None = None

    @property
    def empty(self) -> bool:
        return not self.names


def describe(path: str | os.PathLike) -> Contents:
    """What the folder ``path`` holds (an empty Contents when it does not exist)."""
    path = Path(path)
    c = Contents(path)
    if not path.is_dir():
        return c
    c.names = sorted(e.name for e in path.iterdir() if e.name != STAGE_RECORD and not is_temp_file(e.name))
    if not c.names:
        return c
    names = set(c.names)
    stages = sorted(n for n in c.names if (path / n / STAGE_RECORD).exists())
    meta = _read_json(path / "meta.json") if "meta.json" in names else None
    meta = meta if isinstance(meta, dict) else {}
    if "index.json" in names:
        index = _read_json(path / "index.json") or {}
        n = len(index.get("experts") or {}) if isinstance(index, dict) else 0
        enc = (index.get("spec") or {}).get("encoder", "?") if isinstance(index, dict) else "?"
        c.kind, c.what = "buffer", f"an expert buffer ({n} experts, encoder {enc})"
    elif meta.get("kind") == "distilled" or names & {"checkpoint.safetensors", "checkpoint.pt"}:
        c.kind = "distilled"
        c.what = _distillation(path, meta, names)
    elif meta.get("kind") == "full-data model" or "model.safetensors" in names:
        c.kind, c.what = "model", "a full-data model (of `vl train`)"
    elif "pairs.safetensors" in names or "meta.json" in names:
        c.kind = "coreset"
        c.what = (f"a coreset ({meta.get('method', '?')}, {meta.get('num_pairs', '?')} pairs)" if meta
                  else "a damaged pair set (its meta.json is missing or unreadable)")
    elif names & {"metrics.json", "details.json"}:
        c.kind, c.what = "eval", "evaluation results (of `vl eval`)"
    elif stages or names & {"results.json", "results.md"}:
        c.kind, c.what = "experiment", f"an experiment of `vl run` (stages: {', '.join(stages) or 'none'})"
    patterns = (KINDS[c.kind][1] if c.kind else ()) + COMMON
    c.foreign = [n for n in c.names if not any(fnmatch.fnmatchcase(n, p) for p in patterns)
                 and not (c.kind == "experiment" and n in stages)]
    if c.kind is None:
        c.what = ("files no vl command wrote: " + _listing(c.foreign)) if c.foreign else \
            f"the leftovers of a vl command ({_listing(c.names)})"
    if c.kind == "distilled" and "checkpoint.safetensors" not in names:
        c.not_resumable = ("its checkpoint.pt is a pickle of an older vlcore, which vlcore never loads (loading a "
                           "pickle can run code)" if "checkpoint.pt" in names else "it holds no checkpoint.safetensors")
    return c


def _distillation(path: Path, meta: dict, names: set[str]) -> str:
    from .checkpoint import peek

    head = f"{meta.get('method', '?')}, {meta.get('num_pairs', '?')} pairs" if meta else ""
    ck = peek(path / "checkpoint.safetensors") if "checkpoint.safetensors" in names else None
    if ck is not None:
        state = f"checkpoint at iteration {ck.get('iteration', '?')}"
    elif "checkpoint.safetensors" in names:
        state = "an unreadable checkpoint.safetensors"
    elif "checkpoint.pt" in names:
        state = "an old-format checkpoint.pt"
    else:
        state = "no checkpoint"
    if meta and ck is not None and meta.get("iterations_done") == ck.get("iteration") \
            and meta.get("config", {}).get("iterations") == ck.get("iteration"):
        return f"a finished distillation ({head}, {ck.get('iteration')} iterations)"
    return f"a distillation ({head + '; ' if head else ''}{state})"


def _listing(names: list[str], most: int = 5) -> str:
    more = f" and {len(names) - most} more" if len(names) > most else ""
    return ", ".join(names[:most]) + more


class OutputFolder:
    """Claim the output folder of ``vl COMMAND`` (see the module docstring): a context manager that
    checks the folder, creates and locks it; :meth:`prepare` right before the first write."""

    def __init__(self, path: str | os.PathLike, command: str, *, resume: bool = False, overwrite: bool = False,
                 inputs: Iterable[str | os.PathLike | None] = (), flag: str = "--out"):
        if resume and overwrite:
            raise OutputError("--resume continues the artifact in the output folder and --overwrite replaces it; "
                              "pass one of them, not both.")
        self.path = Path(path)
        self.command, self.kind, self.flag = command, COMMAND_KINDS[command], flag
        self.resume, self.overwrite = resume, overwrite
        self.inputs = [Path(p) for p in inputs if p is not None]
        self.contents = Contents(self.path)
        #: whether the command continues an artifact already in the folder
        self.resuming = False
        self._created: list[Path] = []
        self._fd: int | None = None

    # ------------------------------------------------------------------ claim
    def __enter__(self) -> "OutputFolder":
        self._check_path()
        self._check_inputs()
        self._create()
        try:
            self._lock()
            self.contents = describe(self.path)
            self._check_contents()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def __exit__(self, *exc) -> None:
        for d in reversed(self._created):  # while the lock is still held
            try:
                d.rmdir()  # only when still empty: the command wrote nothing
            except OSError:
                break
        self._created = []
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def _where(self) -> str:
        return f"{self.flag} {self.path}"

    def _check_path(self) -> None:
        p = Path(os.path.abspath(self.path))
        if p.exists() and not p.is_dir():
            raise OutputError(f"{self._where()} is {'a file' if p.is_file() else 'not a folder'}. Pass the path of a "
                              f"folder (a new one is created).")
        for parent in p.parents:
            if parent.exists():
                if not parent.is_dir():
                    raise OutputError(f"{self._where()} is under {parent}, which is a file, not a folder. Choose a "
                                      f"path whose parents are folders.")
                break

    def _check_inputs(self) -> None:
        out = self.path.resolve()
        for inp in self.inputs:
            src = inp.resolve()
            if src == out or out in src.parents:
                where = "the same folder as" if src == out else "a folder above"
                raise OutputError(f"{self._where()} is {where} {inp}, an input of this command; writing there would "
                                  f"damage it. Choose another {self.flag}.")

    def _create(self) -> None:
        missing = []
        for d in [self.path, *self.path.parents]:
            if d.exists():
                break
            missing.append(d)
        try:
            self.path.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=self.path):
                pass
        except OSError as exc:
            self._created = [d for d in reversed(missing) if d.exists()]
            self.__exit__(None, None, None)
            raise OutputError(f"Cannot use {self._where()}: {exc.strerror or exc}. Choose a folder you can "
                              f"create and write (for example under your home folder or the current one).") from None
        self._created = list(reversed(missing))

    def _lock(self) -> None:
        if fcntl is None:  # pragma: no cover
            return
        fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            self._created = []  # the other command uses it: never remove it
            raise BusyError(f"Another vl command is writing {self.path} (it holds the folder's lock). Wait for it "
                            f"to finish, or choose another {self.flag}.") from None
        except OSError as exc:  # a file system without locks (some network mounts): go on unlocked
            log.warning("cannot lock %s (%s); a second command writing there at the same time would not be "
                        "stopped", self.path, exc.strerror or exc)
        self._fd = fd

    def _check_contents(self) -> None:
        c, name = self.contents, KINDS[self.kind][0]
        if c.empty:
            return
        if c.kind is None and c.foreign:
            raise OutputError(f"{self._where()} holds {c.what}. `vl {self.command}` writes only into a new or empty "
                              f"folder or one holding a vlcore artifact; choose another {self.flag}.")
        keep = (f" Its other files ({_listing(c.foreign)}) are not vlcore's, so it cannot be replaced either; "
                f"choose another {self.flag}." if c.foreign else "")
        if c.kind != self.kind:
            if self.overwrite and not c.foreign:
                return
            fix = keep or f" Choose another {self.flag}, or pass --overwrite to replace it (its files are deleted)."
            raise OutputError(f"{self._where()} holds {c.what}, and `vl {self.command}` writes {name}.{fix}")
        if self.resume:
            if c.not_resumable:
                raise OutputError(f"{self._where()} holds {c.what}, which cannot be resumed: {c.not_resumable}. "
                                  f"Pass --overwrite to start over, or choose another {self.flag}.")
            self.resuming = True
            return
        if self.overwrite:
            if c.foreign:
                raise OutputError(f"{self._where()} holds {c.what}.{keep}")
            return
        cont = "--resume to continue it, " if self.kind in RESUMABLE else ""
        raise OutputError(f"{self._where()} already holds {c.what}. Pass {cont}--overwrite to replace it, or choose "
                          f"another {self.flag}.")

    # ------------------------------------------------------------------ writing
    def prepare(self) -> Path:
        """Call right before the command's first write: with ``overwrite`` the old artifact's files
        are deleted; temporary files of interrupted writes are removed.  Returns the folder."""
        if self.overwrite and not self.contents.empty:
            for n in self.contents.names:
                p = self.path / n
                if p.is_dir() and not p.is_symlink():
                    shutil.rmtree(p)
                else:
                    p.unlink()
            log.info("replaced %s in %s", self.contents.what, self.path)
            self.contents = Contents(self.path)
        for d in (self.path, *(self.path / n for n in OWN_SUBFOLDERS.get(self.kind, ()))):
            for p in remove_temp_files(d, recursive=False):
                log.info("removed %s, left by an interrupted write", p)
        return self.path


def claim(path: str | os.PathLike, command: str, **kw) -> OutputFolder:
    """``OutputFolder(path, command, **kw)`` entered; leave it with ``.__exit__`` (or use
    ``click.Context.with_resource(OutputFolder(...))`` in a command)."""
    return OutputFolder(path, command, **kw).__enter__()
