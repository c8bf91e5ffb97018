"""Shared click options of the ``vl`` commands, and what turns them into the core's values: the
model and dataset flags derived from :class:`vlcore.choices.ModelChoice` and
:class:`vlcore.choices.DatasetChoice` (:func:`choices_given` makes them), how a request speaks in a
command (:func:`report`), and the error contract every command runs under (:func:`handle_errors`).
"""
from __future__ import annotations

import dataclasses
import errno
import functools
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import click

from vlcore import requests
from vlcore.artifacts.interrupt import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_as_interrupt
from vlcore.artifacts.io import cache_dir
from vlcore.choices import DATASET_STATE, DatasetChoice, ModelChoice, parse_kv
from vlcore.core.config import SEED
from vlcore.core.errors import ConfigError, VLError
from vlcore.training import distributed as ranks

from .common import BARS
from .params import ComponentListOption, Number, choice_options, given, option, was_given
from .texts import LogFormat, current_flags


# =========================================================================== model and dataset
def dataset_options(fresh: bool = True, shown: str | None = None):
    """The flags of :class:`vlcore.choices.DatasetChoice` (``--dataset``, ``--data``, ``--limit``,
    ``--dataset-option``); ``shown``: the default shown for ``--dataset`` when it comes from an
    artifact (``"the buffer's, else embedded"``; then ``--dataset`` has no default)."""
    return choice_options(DatasetChoice, fresh=fresh, shown={"dataset": shown} if shown else None,
                          exclude=DATASET_STATE)


def model_options(artifact: str | None = None, *, fallback: bool = False):
    """The flags of :class:`vlcore.choices.ModelChoice`, which make a ModelSpec.  With ``artifact``
    (``"buffer"``, ``"pair set"``) every default is None, meaning "as recorded in the artifact" (with
    ``fallback``: else the defaults of a fresh run, as shown)."""
    shown = None
    if artifact:
        shown = {f.name: (f"the {artifact}'s, else {f.metadata['shown']}" if fallback else f"the {artifact}'s")
                 for f in dataclasses.fields(ModelChoice) if "shown" in f.metadata}
    return choice_options(ModelChoice, fresh=artifact is None, shown=shown)


def choices_given(ctx: click.Context, kw: dict, *, announce: bool = True) -> tuple[DatasetChoice, ModelChoice]:
    """The dataset and model a command's flags ask for (those given; the others None), popped from
    its ``kw``.  The dataset is named now (:meth:`DatasetChoice.resolved`: by a folder's layout, else
    the default of the command's --dataset, if it has one) and checked; a dataset read from a folder's
    layout is said on a line of its own with ``announce`` (commands that print a defaults line put it
    there)."""
    default = next((p.default for p in ctx.command.params if p.name == "dataset"), None)
    ds = DatasetChoice(**given(ctx, kw, DatasetChoice)).resolved(default)
    if ds.inferred and announce:
        click.echo(f"vl {ctx.command.name}: --dataset {ds.dataset} ({ds.inferred})")
    return ds, ModelChoice(**given(ctx, kw, ModelChoice))


def given_names(ctx: click.Context) -> frozenset[str]:
    """The parameters the user set (on the command line, in --config or the environment)."""
    return frozenset(n for n in ctx.params if was_given(ctx, n))


def report() -> requests.Report:
    """How a request speaks in a command: lines on stdout, warnings on stderr, bars on stderr."""
    return requests.Report(say=click.echo, warn=lambda m: click.echo(m, err=True), progress=BARS)


# =========================================================================== shared flags
def eval_split_option(param: str, default: str | None = "dev", show_default: Any = True,
                      help: str = "Split to evaluate on (never tune on test)."):
    """``--eval-split``: the split a command evaluates on (``--split`` is its old spelling)."""
    return option("--eval-split", param, default=default, show_default=show_default, aliases=("--split",),
                  help=help)


def log_options(f):
    """``--log NAMES`` and ``--log-option NAME.KEY=VALUE``: experiment tracking (jsonl always)."""
    f = click.option("--log-option", "log_opts", multiple=True, metavar="LOGGER.KEY=VALUE",
                     help="Logger option (repeatable), e.g. wandb.project=my-project or tensorboard.dir=tb.")(f)
    f = click.option("--log", "log", cls=ComponentListOption, kind="logger", multiple=True, default=(),
                     show_default="jsonl only",
                     help="Experiment tracking besides OUT/log.jsonl (always written): comma-separated "
                          "loggers, e.g. --log tensorboard,wandb (pip install 'vlcore[tensorboard]', "
                          "'vlcore[wandb]').")(f)
    return f


def log_settings(log_opts: tuple[str, ...]) -> dict[str, dict]:
    """``--log-option NAME.KEY=VALUE`` items as {logger: {key: value}}."""
    options: dict[str, dict] = {}
    for k, v in parse_kv(log_opts, "--log-option").items():
        name, dot, key = k.partition(".")
        if not dot or not key:
            raise ConfigError(f"--log-option '{k}={v}' is not LOGGER.KEY=VALUE (e.g. --log-option wandb.project=demo).")
        options.setdefault(name, {})[key] = v
    return options


# =========================================================================== misc
def device_option(f):
    return click.option("--device", default="cpu", show_default=True,
                        help="Torch device: cpu, cuda, cuda:1, mps, or auto.")(f)


def resolve_device(device: str, *, distributed: bool = False) -> str:
    """The device the running command uses (:func:`vlcore.requests.resolve_device`; ``distributed``:
    the command runs across ranks under torchrun)."""
    return requests.resolve_device(device, command=click.get_current_context().command.name, across=distributed)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON object of the metrics on stdout.")(f)


def seed_option(f):
    return click.option("--seed", type=Number(int, SEED), default=0, show_default=True, metavar="INTEGER",
                        help=f"Seed of every random choice of the run (initialisation, sampling, models) "
                             f"[range: {SEED}]")(f)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else (logging.INFO if verbose == 1 else logging.DEBUG)
    root = logging.getLogger()
    if not root.handlers:
        handler = logging.StreamHandler()
        handler.setFormatter(LogFormat(named=verbose > 0))
        root.addHandler(handler)
    root.setLevel(level)


class Failure(click.ClickException):
    """A command's failure: "Error: MESSAGE" on stderr and ``exit_code``."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


def handle_errors(f):
    """Run a command under the CLI's error contract.

    A :class:`vlcore.core.errors.VLError` is printed as one paragraph, without a traceback, and the
    command exits with its ``exit_code``: 2 for usage errors (an unknown or out-of-range option, an
    unusable or occupied ``--out``: ConfigError, UnknownComponentError, OutputError; click's own
    usage errors exit 2 as well), 1 for the rest (data, artifacts, a busy folder).  An OSError (a
    file that cannot be read or written) exits 1 naming the file; a full disk or quota (ENOSPC,
    EDQUOT), a read-only file system (EROFS) and a permission refused (EACCES, EPERM) name the folder
    and the fix (:func:`disk_problem`), also when a library (safetensors, torch) reports them in an
    exception of its own.  Ctrl-C exits 130 and SIGTERM 143; both first let a distillation write its
    checkpoint and atomic writes remove their temporary files (:mod:`vlcore.artifacts.interrupt`).
    """
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            with sigterm_as_interrupt():
                return f(*args, **kwargs)
        except VLError as exc:  # one that a full disk caused, and says only that a write failed: add the fix
            disk = disk_problem(exc, kwargs.get("out"), space_only=True)
            text = current_flags(str(exc))
            raise Failure(f"{text} {disk}" if disk and "free space" not in text.lower() else text,
                          exc.exit_code) from None
        except OSError as exc:
            disk = disk_problem(exc, kwargs.get("out"))
            if disk:
                raise Failure(disk, 1) from None
            where = f" ({exc.filename})" if exc.filename else ""
            raise Failure(f"{exc.strerror or exc}{where}. Check that the path exists and can be read or written, "
                          f"and that the disk has space.", 1) from None
        except KeyboardInterrupt as exc:
            what = "Terminated (SIGTERM)" if isinstance(exc, Terminated) else "Interrupted"
            if isinstance(exc, Terminated) and ranks.active():
                # torchrun stops the other ranks when one fails, often before they see it themselves
                click.echo(ranks.peer_stopped(), err=True)
            click.echo(f"{what}. Every file written is complete (writes are atomic); a distillation saved its "
                       f"checkpoint and a buffer keeps its finished experts: continue with the same command and "
                       f"--resume (`vl run` and `vl demo`: the same command).", err=True)
            raise SystemExit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
        except Exception as exc:  # a library's own error for a full disk (safetensors, torch): said as one
            disk = disk_problem(exc, kwargs.get("out"))
            if disk:
                raise Failure(disk, 1) from None
            raise
    return wrapper


#: errno -> what a library's message for it says (safetensors: "IoError(Os { code: 28, kind:
#: StorageFull, ... })"; the C library's strerror)
_DISK_ERRNOS = {errno.ENOSPC: ("No space left on device", "StorageFull"),
                errno.EDQUOT: ("Disk quota exceeded", "QuotaExceeded", "FilesystemQuotaExceeded"),
                errno.EROFS: ("Read-only file system", "ReadOnlyFilesystem"),
                errno.EACCES: (), errno.EPERM: ()}


def _disk_errno(exc: BaseException, codes) -> tuple[int, str | None] | None:
    """(errno, file name) of the first disk problem in ``exc``'s chain (its causes and contexts)."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in codes:
            return exc.errno, exc.filename
        if not isinstance(exc, OSError):
            text = str(exc)
            for code, words in _DISK_ERRNOS.items():
                if code in (errno.EACCES, errno.EPERM) or code not in codes:
                    continue  # only an OSError says which file was refused
                if f"code: {code}," in text or any(w in text for w in words):
                    return code, None
        exc = exc.__cause__ or exc.__context__
    return None


def disk_problem(exc: BaseException, out: Any = None, *, space_only: bool = False) -> str | None:
    """The message for a write that the disk refused (``exc`` or an exception in its chain: an OSError
    with errno ENOSPC, EDQUOT, EROFS, EACCES or EPERM, or a library's error saying so), naming the
    folder (the file's, else ``out``, the command's --out) and the fix; None for any other error.
    ``space_only``: only a full disk or quota counts."""
    found = _disk_errno(exc, (errno.ENOSPC, errno.EDQUOT) if space_only else tuple(_DISK_ERRNOS))
    if found is None:
        return None
    code, filename = found
    if isinstance(filename, bytes):
        filename = os.fsdecode(filename)
    path = os.path.abspath(str(filename)) if filename else None
    if path:  # the file an atomic write was making, not its temporary name (.NAME.XXXXXXXX.tmp)
        m = re.fullmatch(r"\.(.+)\.[0-9a-f]{8}\.tmp", os.path.basename(path))
        path = os.path.join(os.path.dirname(path), m.group(1)) if m else path
    folder = os.path.dirname(path) if path else (os.path.abspath(str(out)) if out else None)
    shown = folder or "the output folder (--out)"
    writing = f" (writing {path})" if path else ""
    cache = ""
    try:
        if folder and Path(folder).resolve().is_relative_to(cache_dir().resolve()):
            cache = (f" {shown} is vlcore's cache (caption embeddings, image tensors): set VL_CACHE_DIR to a "
                     f"folder on a disk with room, or empty the cache.")
    except Exception:  # the cache folder cannot even be found: say nothing of it
        pass
    again = ("then run the same command again (`vl experts` and `vl distill` continue with --resume). Every "
             "file written is complete or absent (writes are atomic), so nothing corrupt is kept.")
    if code == errno.ENOSPC:
        free = ""
        try:
            probe = folder or os.getcwd()
            while probe and not os.path.exists(probe):
                probe = os.path.dirname(probe)
            free = f"; {shutil.disk_usage(probe).free / 2 ** 20:.0f} MiB free there now"
        except OSError:
            pass
        return (f"No space left on the disk holding {shown}{writing}{free}. Free space on it (`df -h {shown}` "
                f"shows how much), or choose an --out on a disk with room; {again}{cache}")
    if code == errno.EDQUOT:
        return (f"Your disk quota is exceeded on the disk holding {shown}{writing}. Free space within your quota "
                f"(`quota -s` shows it), or choose an --out on another disk; {again}{cache}")
    if code == errno.EROFS:
        return (f"{shown} is on a read-only file system{writing}. Choose an --out on a writable disk (or remount "
                f"it read-write); {again}{cache}")
    return (f"Permission denied: {path or shown}. Make it readable and writable for you (`ls -ld {shown}` shows "
            f"the owner and mode of its folder), or choose another path (--out: a folder you can write); then run "
            f"the same command again.{cache}")


def overwrite_option(f):
    return click.option("--overwrite", is_flag=True,
                        help="Replace the artifact OUT holds (its files are deleted when this command starts "
                             "writing). Without it an occupied OUT is refused.")(f)
