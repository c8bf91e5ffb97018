"""Atomic writes, cache locations and fingerprints."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
from pathlib import Path
from typing import Any, Iterator

from vlcore.core.errors import DataError


def cache_dir() -> Path:
    """Where caption embeddings, image tensors and backbone features are cached.

    ``VL_CACHE_DIR`` overrides the default ``~/.cache/vlcore``.
    """
    root = os.environ.get("VL_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "vlcore")
    path = Path(root)
    path.mkdir(parents=True, exist_ok=True)
    return path


def fingerprint(*parts: Any) -> str:
    """A stable sha256 (hex, 20 chars) of JSON-serialisable parts."""
    h = hashlib.sha256()
    for p in parts:
        h.update(json.dumps(p, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()[:20]


#: temporary files of :func:`atomic_path` are named ``.NAME.XXXXXXXX.tmp`` beside their target
TEMP_PREFIX, TEMP_SUFFIX = ".", ".tmp"
#: the record of the files vl wrote into an output folder (see :class:`FileRecord`)
RECORD_NAME = ".vl-files.jsonl"


class FileRecord:
    """The record of every file ``vl`` wrote into one output folder: ``FOLDER/.vl-files.jsonl``, an
    append-only JSON-lines file (a torn last line of a ``kill -9`` is ignored when read).

    Lines: ``{"vlcore": 1, "command": ..., "kind": ...}`` (the header, written with the first
    entry), ``{"file": REL}`` (a file vl writes, recorded *before* it appears), ``{"temp": REL}``
    (a temporary file of :func:`atomic_path`, recorded before it is created: its random name makes
    it unambiguous) and ``{"gone": REL}`` (vl removed it).  ``REL`` is the path relative to the
    folder, with ``/``.  :mod:`vlcore.artifacts.outdir` deletes only what a record lists (``--overwrite``,
    temporary files of interrupted writes), never through a link.

    While a command holds a folder (:class:`vlcore.artifacts.outdir.OutputFolder`), every write of vlcore
    into it is recorded by :func:`atomic_path` and :func:`note_written` (the folder is found by
    :func:`record_for`; the deepest claimed folder holding the path wins).
    """

    def __init__(self, folder: str | os.PathLike, header: dict | None = None, before_first_write=None):
        self.folder = Path(os.path.abspath(folder))
        self.path = self.folder / RECORD_NAME
        self.header = {"vlcore": 1, **(header or {})}
        #: called once, right before the first entry is written (an overwrite clears the folder then)
        self.before_first_write = before_first_write

    def rel(self, path: str | os.PathLike) -> str:
        p = Path(os.path.abspath(path))
        return p.relative_to(self.folder).as_posix()

    def add(self, what: str, path: str | os.PathLike) -> None:
        """Record ``path`` (inside the folder) as a ``file``, ``temp`` or ``gone`` entry."""
        if self.before_first_write is not None:
            hook, self.before_first_write = self.before_first_write, None
            hook()
        lines = []
        if not os.path.lexists(self.path):
            lines.append(json.dumps(self.header, sort_keys=True))
        lines.append(json.dumps({what: self.rel(path)}))
        self.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
        try:
            os.write(fd, ("\n".join(lines) + "\n").encode())
            os.fsync(fd)
        finally:
            os.close(fd)

    @staticmethod
    def read(folder: str | os.PathLike) -> "RecordEntries | None":
        """What the record in ``folder`` lists (None: the folder has no record)."""
        path = Path(folder) / RECORD_NAME
        if path.is_symlink() or not path.is_file():
            return None
        entries = RecordEntries()
        try:
            text = path.read_bytes().decode("utf-8", errors="replace")
        except OSError:
            return entries
        for line in text.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue  # a torn line of an interrupted append
            if not isinstance(obj, dict):
                continue
            if "vlcore" in obj:
                entries.header = obj
                continue
            for what in ("file", "temp", "gone"):
                rel = obj.get(what)
                if isinstance(rel, str) and _safe_rel(rel):
                    if what == "gone":
                        entries.files.discard(rel)
                        entries.temps.discard(rel)
                    else:
                        (entries.files if what == "file" else entries.temps).add(rel)
        return entries


class RecordEntries:
    """The entries of a :class:`FileRecord` as read back."""

    def __init__(self):
        self.header: dict = {}
        self.files: set[str] = set()
        self.temps: set[str] = set()


def _safe_rel(rel: str) -> bool:
    """A relative path inside the folder: no absolute path, no ``..``, no empty part."""
    parts = rel.split("/")
    return bool(rel) and not rel.startswith("/") and all(p not in ("", ".", "..") for p in parts)


_RECORDS: dict[str, FileRecord] = {}


def _umask() -> int:
    """The process's umask, read without changing it where the system tells (Linux), since setting
    it, even briefly, would race with other threads creating files."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def open_record(record: FileRecord) -> None:
    """Record vlcore's writes under ``record.folder`` from now on (until :func:`close_record`)."""
    _RECORDS[str(record.folder)] = record


def close_record(record: FileRecord) -> None:
    if _RECORDS.get(str(record.folder)) is record:
        del _RECORDS[str(record.folder)]


def record_for(path: str | os.PathLike) -> FileRecord | None:
    """The record of the deepest open output folder holding ``path`` (None: not inside one)."""
    p = Path(os.path.abspath(path))
    for d in p.parents:
        rec = _RECORDS.get(str(d))
        if rec is not None:
            return rec
    return None


def note_written(path: str | os.PathLike) -> None:
    """Record that vlcore is about to write ``path`` (call it before creating the file) when it lies
    in an open output folder: for files written other than through :func:`atomic_path` (an appended
    log, a library's event files)."""
    rec = record_for(path)
    if rec is not None:
        rec.add("file", path)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file is flushed to disk (fsync) before the rename and the folder after it, so a
    crash or power loss leaves either the old file or the complete new one; it gets the permissions
    of a newly created file (not :func:`tempfile.mkstemp`'s 0600).  On any exception, Ctrl-C and
    SIGTERM included (see :mod:`vlcore.artifacts.interrupt`), the temporary file is removed; inside an output
    folder it is recorded (:class:`FileRecord`) before it is created, so one left by a ``kill -9`` is
    removed by the next command that claims the folder (:mod:`vlcore.artifacts.outdir`), and no file of
    someone else's that happens to look like one ever is.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rec = record_for(path)
    tmp_path = path.parent / f"{TEMP_PREFIX}{path.name}.{secrets.token_hex(4)}{TEMP_SUFFIX}"
    if rec is not None:
        rec.add("temp", tmp_path)
    fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    os.close(fd)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        fsync_file(tmp_path)
        if rec is not None:
            rec.add("file", path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()
        if rec is not None:
            rec.add("gone", tmp_path)


def fsync_file(path: str | os.PathLike) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def fsync_dir(path: str | os.PathLike) -> None:
    """Flush a folder's entries (a rename into it) to disk, where the platform allows it."""
    try:
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    except OSError:  # pragma: no cover - e.g. Windows
        return
    try:
        os.fsync(fd)
    except OSError:  # pragma: no cover - some file systems refuse fsync on folders
        pass
    finally:
        os.close(fd)


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def load_checked_tensors(path: str | os.PathLike, sha256: Any, *, changed: str, unreadable) -> dict:
    """The tensors of a safetensors file that must hash to ``sha256`` (None: not checked): a
    :class:`~vlcore.core.errors.DataError` with ``changed`` when the bytes do not match, with
    ``unreadable(reason)`` when they are not a tensor file (every artifact reader's one path)."""
    from safetensors.torch import load  # torch-backed: loaded when a tensor file is read

    data = Path(path).read_bytes()
    if sha256 is not None and (not isinstance(sha256, str) or hashlib.sha256(data).hexdigest() != sha256):
        raise DataError(changed)
    try:
        return load(data)
    except Exception as exc:
        raise DataError(unreadable(f"{type(exc).__name__}: {exc}")) from None


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


def write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)


def versions() -> dict[str, str]:
    import importlib.metadata as md
    out = {}
    for pkg in ("vlcore", "torch", "timm", "sentence-transformers", "peft", "numpy"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            pass
    import platform
    out["python"] = platform.python_version()
    return out
