"""Atomic writes, cache locations and fingerprints."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, Iterator


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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file is flushed to disk (fsync) before the rename and the folder after it, so a
    crash or power loss leaves either the old file or the complete new one; it gets the permissions
    of a newly created file (not :func:`tempfile.mkstemp`'s 0600).  On any exception, Ctrl-C and
    SIGTERM included (see :mod:`vlcore.interrupt`), the temporary file is removed; one left by a
    ``kill -9`` is removed by the next command that claims the folder (:mod:`vlcore.outdir`).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{path.name}.", suffix=TEMP_SUFFIX, dir=path.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())
        fsync_file(tmp_path)
        os.replace(tmp_path, path)
        fsync_dir(path.parent)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


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


def is_temp_file(name: str) -> bool:
    """Whether ``name`` is a temporary file of :func:`atomic_path`."""
    return name.startswith(TEMP_PREFIX) and name.endswith(TEMP_SUFFIX) and name.count(".") >= 3


def remove_temp_files(folder: str | os.PathLike, recursive: bool = True) -> list[Path]:
    """Remove the temporary files interrupted writes left in ``folder`` (call it only while no other
    process writes there: :mod:`vlcore.outdir` holds the folder's lock); return what was removed."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    found = folder.rglob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}") if recursive else folder.glob(f"{TEMP_PREFIX}*{TEMP_SUFFIX}")
    removed = []
    for p in found:
        if p.is_file() and is_temp_file(p.name):
            p.unlink()
            removed.append(p)
    return removed


def sha256_file(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


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
