"""Atomic writes, cache locations and fingerprints."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import secrets
import threading
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


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it replaces ``path`` atomically.

    The temporary file is created with mode 0o666 less the user's umask (as ``open()`` would), so
    artifacts can be shared as any other file the user writes (``tempfile.mkstemp`` would make
    every artifact 0o600).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    while True:
        tmp_path = path.parent / f".{path.name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:  # pragma: no cover - 48 random bits
            continue
        os.close(fd)
        break
    try:
        yield tmp_path
        os.chmod(tmp_path, 0o666 & ~_umask())  # writers that recreate the file (safetensors) made it 0o600
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


_UMASK_LOCK = threading.Lock()


def _umask() -> int:
    """The process's umask (read by setting and restoring it, under a lock)."""
    with _UMASK_LOCK:
        old = os.umask(0o022)
        os.umask(old)
    return old


def write_json(path: str | os.PathLike, obj: Any) -> None:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=False, default=str) + "\n")


def read_json(path: str | os.PathLike) -> Any:
    return json.loads(Path(path).read_text())


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
