"""Output folders: what a folder holds, which command may write into it, and an advisory lock.

Every ``vl`` command that writes an artifact claims its ``--out`` folder with :class:`OutputFolder`
before any data work:

* the path must be a folder or creatable as one (not a file, not under a file, not under ``/proc``);
* a missing or empty folder is the command's; one holding an artifact (what :func:`describe`
  recognises) is refused, naming what is there, unless ``resume`` (continue the same kind of
  artifact: a distillation, a buffer) or ``overwrite`` (replace it: the files its record lists are
  deleted when the command is about to write, :meth:`OutputFolder.prepare`) is given;
* every file vlcore writes into a claimed folder is recorded first in the folder's
  ``.vl-files.jsonl`` (:class:`vlcore.artifacts.io.FileRecord`), and vlcore deletes only what such a record
  lists: never a file it did not record, never through a symbolic link, never a folder wholesale
  (a folder is removed only once it is empty).  A file no record lists is not vlcore's: a folder
  holding one is refused with ``overwrite`` (``resume`` leaves it alone), and so is an artifact of
  an older vlcore that kept no record;
* the folder must not be, or hold, one of the command's inputs (``vl eval PS --out PS``);
* an exclusive advisory lock (``fcntl.flock`` on the folder) is held until the command ends, so a
  second run into the same folder fails at once;
* a folder the claim created is removed again if the command ends without writing into it, so a
  refused command leaves nothing behind;
* temporary files of interrupted atomic writes (``kill -9``) are removed by :meth:`prepare`
  when the record lists them (their names carry a random part recorded before they are created).
"""
from __future__ import annotations

import fnmatch
import json
import logging
import os
import stat
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterable

from vlcore.artifacts.checkpoint import peek
from vlcore.artifacts.io import RECORD_NAME, FileRecord, RecordEntries, close_record, open_record
from vlcore.core.errors import BusyError, OutputError

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no advisory lock
    fcntl = None

log = logging.getLogger(__name__)

#: the artifact kind each command writes
COMMAND_KINDS = {"experts": "buffer", "distill": "distilled", "coreset": "coreset", "eval": "eval",
                 "train": "model", "run": "experiment", "demo": "experiment", "export": "export"}
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
    "export": ("an exported pair set (of `vl export`)", ("vlcore.json", "state.json", "dataset_info.json",
                                                          "data-*.arrow", "extra.safetensors", "README.md", "eval-*")),
}
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
    #: its entries (records and recorded temporary files of interrupted writes not counted)
    names: list[str] = field(default_factory=list)
    #: files (paths relative to the folder, nested ones included) that no vl command recorded writing
    foreign: list[str] = field(default_factory=list)
    #: why it cannot be continued with --resume (None: it can)
    not_resumable: str | None = None
    #: the folder's record of the files vl wrote there (None: it has none)
    record: RecordEntries | None = None

    @property
    def empty(self) -> bool:
        return not self.names


def describe(path: str | os.PathLike) -> Contents:
    """What the folder ``path`` holds (an empty Contents when it does not exist)."""
    path = Path(path)
    c = Contents(path)
    if not path.is_dir():
        return c
    c.record = rec = FileRecord.read(path)
    hidden = {STAGE_RECORD, RECORD_NAME} | (rec.temps if rec else set())
    c.names = sorted(e.name for e in path.iterdir() if e.name not in hidden and not _empty_tree(e))
    if not c.names:
        return c
    names = set(c.names)
    stages = sorted(n for n in c.names if (path / n / STAGE_RECORD).exists())
    meta = _read_json(path / "meta.json") if "meta.json" in names else None
    meta = meta if isinstance(meta, dict) else {}
    recorded_kind = rec.header.get("kind") if rec else None
    if "index.json" in names:
        index = _read_json(path / "index.json") or {}
        n = len(index.get("experts") or {}) if isinstance(index, dict) else 0
        enc = (index.get("spec") or {}).get("encoder", "?") if isinstance(index, dict) else "?"
        c.kind, c.what = "buffer", f"an expert buffer ({n} experts, encoder {enc})"
    elif meta.get("kind") == "distilled" or names & {"checkpoint.safetensors", "checkpoint.pt"} \
            or recorded_kind == "distilled":
        c.kind = "distilled"
        c.what = _distillation(path, meta, names)
    elif names & {"vlcore.json", "state.json"} and "meta.json" not in names:
        c.kind, c.what = "export", "an exported pair set (of `vl export`)"
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
    elif recorded_kind in KINDS:
        c.kind = recorded_kind
        c.what = f"the unfinished start of {KINDS[recorded_kind][0]} (`vl {rec.header.get('command', '?')}` stopped)"
    if rec is not None:
        c.foreign = _unrecorded(path, [("", rec)])
    else:  # an older vlcore's artifact (no record): judged by the names its command writes
        patterns = (KINDS[c.kind][1] if c.kind else ()) + COMMON
        c.foreign = [n for n in c.names if not any(fnmatch.fnmatchcase(n, p) for p in patterns)
                     and not (c.kind == "experiment" and n in stages)]
    if c.kind is None:
        c.what = ("files no vl command wrote: " + _listing(c.foreign)) if c.foreign else \
            f"the leftovers of a vl command ({_listing(c.names)})"
    if c.kind == "distilled" and "checkpoint.pt" in names and "checkpoint.safetensors" not in names:
        c.not_resumable = ("its checkpoint.pt is a pickle of an older vlcore, which vlcore never loads (loading a "
                           "pickle can run code)")
    return c


def _empty_tree(p: Path) -> bool:
    """A folder (not a link) holding no file at any depth, only empty folders: an interrupted command
    may leave one; it is nothing, neither an artifact nor anyone's file."""
    if p.is_symlink() or not p.is_dir():
        return False
    return not any(files or any((Path(d) / x).is_symlink() for x in dirs) for d, dirs, files in os.walk(p))


def _records(root: Path) -> list[tuple[str, RecordEntries]]:
    """Every record in the tree ``root`` (symbolic links not followed), as (folder prefix, entries)."""
    found = []
    top = FileRecord.read(root)
    if top is not None:
        found.append(("", top))
    for dirpath, dirnames, _ in os.walk(root):  # os.walk does not follow links by default
        for d in dirnames:
            sub = Path(dirpath) / d
            if sub.is_symlink():
                continue
            rec = FileRecord.read(sub)
            if rec is not None:
                found.append((sub.relative_to(root).as_posix() + "/", rec))
    return found


def _unrecorded(root: Path, chain: list[tuple[str, RecordEntries]]) -> list[str]:
    """The files under ``root`` (relative paths) that none of the records of ``root``, the folders
    above them in it and nested artifacts lists; a symbolic link is never vl's."""
    chain = chain + [r for r in _records(root) if r[0]]
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = Path(dirpath).relative_to(root).as_posix()
        rel_dir = "" if rel_dir == "." else rel_dir + "/"
        for d in list(dirnames):
            if (Path(dirpath) / d).is_symlink():
                out.append(rel_dir + d)
                dirnames.remove(d)
        for f in filenames:
            rel = rel_dir + f
            if f == RECORD_NAME and not (Path(dirpath) / f).is_symlink():
                continue
            if rel == STAGE_RECORD:  # the record `vl run` keeps of this folder (its own record lists it)
                continue
            if not any(rel.startswith(prefix) and (rel[len(prefix):] in r.files or rel[len(prefix):] in r.temps)
                       for prefix, r in chain):
                out.append(rel)
    return sorted(out)


def _distillation(path: Path, meta: dict, names: set[str]) -> str:
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
        #: where vlcore's writes into the folder are recorded while the command holds it
        self.record = FileRecord(self.path, {"command": command, "kind": self.kind}, before_first_write=self.prepare)
        self._prepared = False

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
        open_record(self.record)
        return self

    def __exit__(self, *exc) -> None:
        close_record(self.record)
        self._drop_empty_record()
        for d in reversed(self._created):  # while the lock is still held
            try:
                d.rmdir()  # only when still empty: the command wrote nothing
            except OSError:
                break
        self._created = []
        if self._fd is not None:
            os.close(self._fd)  # releases the lock
            self._fd = None

    def _drop_empty_record(self) -> None:
        """A record none of whose files exist (the command wrote and removed them, or only began) is
        removed, so a command that left nothing leaves no record either."""
        rec = FileRecord.read(self.path)
        if rec is None or self.record.path.is_symlink():
            return
        if not any(os.path.lexists(self.path / r) for r in (*rec.files, *rec.temps)):
            try:
                self.record.path.unlink()
            except OSError:
                pass

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
        if self.overwrite and c.record is None and not c.foreign:
            raise OutputError(f"{self._where()} holds {c.what}, made without a record of its files ({RECORD_NAME}: "
                              f"an older vlcore, or copied by hand), and vl deletes only files it recorded writing. "
                              f"Delete it yourself, or choose another {self.flag}.")
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
        """Called right before the command's first write (explicitly, or by the folder's record when
        vlcore first writes there): with ``overwrite`` the old artifact's recorded files are deleted;
        recorded temporary files of interrupted writes are removed.  Returns the folder."""
        if self._prepared:
            return self.path
        self._prepared = True
        if self.overwrite and not self.contents.empty:
            delete_recorded(self.path)
            log.info("replaced %s in %s", self.contents.what, self.path)
            self.contents = Contents(self.path)
        else:
            for p in remove_recorded_temps(self.path):
                log.info("removed %s, left by an interrupted write", p)
        return self.path


def _through_link(root: Path, rel: str) -> bool:
    """Whether ``root/rel`` is reached through a symbolic link (``rel`` itself included)."""
    p = root
    for part in rel.split("/"):
        p = p / part
        if p.is_symlink():
            return True
    return False


def _remove(root: Path, rels: Iterable[str]) -> list[Path]:
    """Unlink the regular files ``root/REL`` (never through a link); then remove the folders that
    held them once they are empty.  Returns what was removed."""
    removed, parents = [], set()
    for rel in sorted(set(rels)):
        p = root / rel
        if _through_link(root, rel):
            continue
        try:
            if not stat.S_ISREG(os.lstat(p).st_mode):
                continue
            p.unlink()
        except FileNotFoundError:
            continue
        removed.append(p)
        parents.update(root / "/".join(rel.split("/")[:i]) for i in range(1, rel.count("/") + 1))
    for d in sorted(parents, key=lambda x: len(x.parts), reverse=True):
        try:
            d.rmdir()  # only when empty: a file of someone else's keeps it
        except OSError:
            pass
    return removed


def delete_recorded(root: str | os.PathLike) -> list[Path]:
    """Delete what the records in ``root`` (its own and those of artifacts nested in it) list, the
    records included: every file vlcore wrote there and nothing else.  Returns what was removed."""
    root = Path(root)
    rels = []
    for prefix, rec in _records(root):
        rels += [prefix + r for r in (*rec.files, *rec.temps)] + [prefix + RECORD_NAME]
    return _remove(root, rels)


def remove_recorded_temps(root: str | os.PathLike) -> list[Path]:
    """Remove the temporary files of interrupted writes that ``root``'s record lists."""
    root = Path(root)
    rec = FileRecord.read(root)
    return _remove(root, rec.temps) if rec is not None else []


def claim(path: str | os.PathLike, command: str, **kw) -> OutputFolder:
    """``OutputFolder(path, command, **kw)`` entered; leave it with ``.__exit__`` (or use
    ``click.Context.with_resource(OutputFolder(...))`` in a command)."""
    return OutputFolder(path, command, **kw).__enter__()
