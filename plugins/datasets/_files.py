"""Readers shared by the file-based datasets: the options of a data folder, data folders, text files,
image-file checks and the picklable image loader.  Problems raise :class:`vlcore.core.errors.DataError`
naming the file and the fix."""
from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

from vlcore.core.errors import DataError

log = logging.getLogger(__name__)

#: how many missing files an error message lists before summarising the rest as a count
SHOW_MISSING = 5


@dataclass(frozen=True)
class FolderConfig:
    """The options of a dataset read from a data folder (the Config of ``flickr8k``, ``flickr30k``
    and ``coco`` is or extends it)."""

    #: the data folder (``--data DIR``)
    root: str | None = None
    #: at most this many images per split (the first ones), for tests and quick runs
    limit: int | None = None
    #: hold this many training images out as the split "holdout" (for tuning; 0: none)
    holdout: int = 0


# ============================================================================ shared file helpers
#: (path, size, mtime) -> digest of the file's bytes, so that a process hashes each file once
_DIGESTS: dict[tuple[str, int, int], str] = {}


def stamp(path: str) -> str:
    """``path`` with its size and a digest of its bytes: changes whenever the file's content does,
    and not when a copy of the same file gets new modification times (a data folder copied to a new
    machine or restored from a backup keeps its fingerprint, so its caches and buffers still match and
    its interrupted runs still resume).  For the small text files a dataset is described by (captions,
    split lists); the images are read by path."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{os.path.abspath(path)}(missing)"
    key = (os.path.abspath(path), st.st_size, st.st_mtime_ns)
    if key not in _DIGESTS:
        h = hashlib.sha256()
        try:
            with open(path, "rb") as f:
                for block in iter(lambda: f.read(1 << 20), b""):
                    h.update(block)
        except OSError:
            return f"{key[0]}(unreadable)"
        _DIGESTS[key] = h.hexdigest()[:20]
    return f"{key[0]}({st.st_size}b,sha256:{_DIGESTS[key]})"


def time_stamp(path: str) -> str:
    """``path`` with its size and modification time, for a data source too large to hash on every
    run (a local Hugging Face dataset, images included): changes whenever the file does, and also when
    an identical copy gets new times."""
    try:
        st = os.stat(path)
    except OSError:
        return f"{os.path.abspath(path)}(missing)"
    return f"{os.path.abspath(path)}({st.st_size}b,{st.st_mtime_ns})"


def need_root(name: str, root: str | None, what: str) -> str:
    """The absolute data folder, or a DataError saying how to pass one."""
    if root is None or str(root).strip() == "":
        raise DataError(f"Dataset '{name}' needs its data folder: pass --data DIR pointing at {what}.")
    root = os.path.abspath(os.path.expanduser(str(root)))
    if not os.path.isdir(root):
        kind = "is not a folder" if os.path.exists(root) else "does not exist"
        raise DataError(f"Dataset '{name}': data folder {root} {kind}. Pass --data DIR pointing at {what}.")
    return root


def read_text(path: str, name: str, what: str) -> list[str]:
    """The lines of a text file (without line endings), or a DataError naming the file.

    Lines that are not valid UTF-8 are read with U+FFFD replacement characters and a warning names
    the file, the lines and the fix (:func:`decode_text`)."""
    return decode_text(read_bytes(path, name, what), path, name, what).splitlines()


def read_bytes(path: str, name: str, what: str) -> bytes:
    """The bytes of a file, or a DataError naming it (not found, unreadable)."""
    if not os.path.isfile(path):
        raise DataError(f"Dataset '{name}': {what} {path} not found.")
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError as exc:
        raise DataError(f"Dataset '{name}': cannot read {what} {path}: {exc}.") from None


def decode_text(raw: bytes, path: str, name: str, what: str, *, bom: bool = False) -> str:
    """The text of a caption file's bytes: UTF-8 (``bom``: a leading byte-order mark is dropped).

    The rule of every caption file (README, "Bad inputs"): lines that are not valid UTF-8 are read with
    U+FFFD replacement characters and a warning names the file, the lines and the fix, since their text
    would otherwise change silently; the file is still used."""
    if bom and raw.startswith(b"\xef\xbb\xbf"):
        raw = raw[3:]
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    lines, bad = [], []
    for n, line in enumerate(raw.splitlines(keepends=True), 1):
        try:
            lines.append(line.decode("utf-8"))
        except UnicodeDecodeError as exc:
            lines.append(line.decode("utf-8", errors="replace"))
            bad.append(f"line {n} (byte {line[exc.start:exc.start + 1]!r} at column {exc.start + 1})")
    more = f" and {len(bad) - SHOW_MISSING} more" if len(bad) > SHOW_MISSING else ""
    log.warning("Dataset '%s': %s %s is not valid UTF-8 at %s%s; those lines were read with replacement "
                "characters (U+FFFD). Convert the file to UTF-8 (e.g. `iconv -f latin1 -t utf-8`) to keep their "
                "text.", name, what, path, ", ".join(bad[:SHOW_MISSING]), more)
    return "".join(lines)


def missing_message(missing: list[str], total: int) -> str:
    shown = ", ".join(missing[:SHOW_MISSING])
    more = f" and {len(missing) - SHOW_MISSING} more" if len(missing) > SHOW_MISSING else ""
    return f"{len(missing)} of {total} image files are missing: {shown}{more}"


class _DirListing:
    """Cached directory listings, so checking thousands of image paths costs one scandir per folder."""

    def __init__(self):
        self._cache: dict[str, set[str] | None] = {}

    def exists(self, path: str) -> bool:
        folder, base = os.path.split(path)
        if folder not in self._cache:
            try:
                self._cache[folder] = {e.name for e in os.scandir(folder)}
            except OSError:
                self._cache[folder] = None
        names = self._cache[folder]
        if names is None:
            return False
        return base in names or os.path.exists(path)  # exists(): case-insensitive file systems


def check_images(name: str, split: str, paths: list[str], listed_in: str, fix: str) -> None:
    listing = _DirListing()
    missing = [p for p in paths if not listing.exists(p)]
    if missing:
        raise DataError(f"Dataset '{name}', split '{split}': {missing_message(missing, len(paths))} "
                        f"(listed in {listed_in}). {fix}")


class ImageFileLoader:
    """``loader(i)``: image file ``paths[i]`` as an RGB ``PIL.Image`` (picklable)."""

    def __init__(self, dataset: str, paths: list[str]):
        self.dataset = dataset
        self.paths = paths

    def __call__(self, i: int):
        from PIL import Image, UnidentifiedImageError

        path = self.paths[i]
        try:
            with Image.open(path) as img:
                img.load()
                return img.convert("RGB")
        except FileNotFoundError:
            raise DataError(f"Dataset '{self.dataset}': image file {path} not found (it was listed "
                            f"in the split; was it moved or deleted?). Restore the file or re-download "
                            f"the dataset.") from None
        except (UnidentifiedImageError, OSError, SyntaxError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"Dataset '{self.dataset}': cannot read image file {path}: "
                            f"{type(exc).__name__}: {exc}. The file is corrupt or not an image; "
                            f"replace it with a good copy (re-download the dataset).") from None

    def __len__(self) -> int:
        return len(self.paths)

