"""Shared click options of the ``vl`` commands.

Component choices are read from the plugin registry, so help texts and shell completion list
whatever is installed, third-party plugins included.
"""
from __future__ import annotations

import functools
import json
import logging
from typing import Any

import click

from vlcore.errors import ConfigError, VLError
from vlcore.model import ModelSpec
from vlcore.registry import get_host


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


class ComponentOption(click.Option):
    """An option naming a registered component of ``kind``: its help lists the installed
    components when the help is rendered (so plugins registered after import show up too), and
    shell completion offers them."""

    def __init__(self, *args, kind: str, **kw):
        kw.setdefault("shell_complete", _complete(kind))
        kw.setdefault("metavar", "NAME")
        super().__init__(*args, **kw)
        self.component_kind = kind

    def get_help_record(self, ctx):
        base = self.help
        self.help = (base or "") + installed_listing(self.component_kind)
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = base


def component_option(flag: str, kind: str, default: str | None, help: str, **kw):
    """An option naming a registered component; help lists the installed ones."""
    return click.option(flag, cls=ComponentOption, kind=kind, default=default, show_default=default is not None,
                        help=help, **kw)


def parse_kv(items: tuple[str, ...], what: str) -> dict[str, Any]:
    """KEY=VALUE pairs; values are parsed as JSON when they can be, else kept as strings (the
    component's config builder coerces them by type)."""
    out: dict[str, Any] = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{what} '{item}' is not KEY=VALUE (for example {what} width=32).")
        k, v = item.split("=", 1)
        try:
            out[k.strip()] = json.loads(v)
        except ValueError:
            out[k.strip()] = v
    return out


def dataset_options(default_dataset: str | None = "embedded", data_required: bool = False):
    def deco(f):
        f = click.option("--dataset-option", "dataset_opts", multiple=True, metavar="KEY=VALUE",
                         help="Dataset option (repeatable), e.g. num_train=1000.")(f)
        f = click.option("--limit", type=int, default=None,
                         help="Use only the first N images of each split (quick runs).")(f)
        f = click.option("--data", "data_dir", type=click.Path(), default=None,
                         help="Data folder of the dataset (not needed for 'embedded').")(f)
        f = component_option("--dataset", "dataset", default_dataset, "Dataset.")(f)
        return f
    return deco


def model_options(defaults_from_artifact: bool = False):
    """Options that make a :class:`ModelSpec`.  With ``defaults_from_artifact`` every default is
    None, meaning "as recorded in the artifact"."""
    d = (lambda v: None) if defaults_from_artifact else (lambda v: v)

    def deco(f):
        f = click.option("--embed-dim", type=int, default=None,
                         help="Joint embedding size when there is an image head (default 256).")(f)
        f = click.option("--image-head", type=click.Choice(["auto", "none", "linear"]), default=d("auto"),
                         show_default=not defaults_from_artifact,
                         help="Image projection head; auto = none for full, linear for frozen.")(f)
        f = click.option("--trainable", type=click.Choice(["full", "frozen", "lora"]), default=None,
                         help="Train all image-encoder weights (full), only the heads on a frozen "
                              "backbone (frozen), or LoRA adapters (lora). Default: full for convnet, "
                              "frozen for pretrained encoders.")(f)
        f = click.option("--image-size", type=int, default=None,
                         help="Image side in pixels (default 32 for convnet, 112 otherwise).")(f)
        f = click.option("--text-option", "text_opts", multiple=True, metavar="KEY=VALUE",
                         help="Text encoder option (repeatable), e.g. model=/path/to/bert.")(f)
        f = component_option("--text-encoder", "text_encoder", d("minilm"), "Frozen text encoder.")(f)
        f = click.option("--pretrained", default=None, metavar="auto|none|hub|PATH",
                         help="Image encoder weights: bundled/hub (auto), random init (none), or a "
                              "local weights file.")(f)
        f = click.option("--encoder-option", "encoder_opts", multiple=True, metavar="KEY=VALUE",
                         help="Image encoder option (repeatable), e.g. width=32.")(f)
        f = component_option("--encoder", "image_encoder", d("convnet"), "Image encoder.")(f)
        return f
    return deco


def make_spec(encoder, encoder_opts, pretrained, text_encoder, text_opts, image_size, trainable,
              image_head, embed_dim, base: ModelSpec | None = None) -> ModelSpec:
    """Build a ModelSpec from CLI values; None values fall back to ``base`` (an artifact's spec)."""
    enc_opts = parse_kv(encoder_opts, "--encoder-option")
    if pretrained is not None:
        enc_opts["pretrained"] = pretrained
    txt_opts = parse_kv(text_opts, "--text-option")
    if base is not None:
        same_enc = encoder is None or encoder == base.encoder
        same_txt = text_encoder is None or text_encoder == base.text_encoder
        spec = ModelSpec(
            encoder=encoder or base.encoder,
            encoder_options={**(base.encoder_options if same_enc else {}), **enc_opts},
            text_encoder=text_encoder or base.text_encoder,
            text_options={**(base.text_options if same_txt else {}), **txt_opts},
            image_size=image_size or base.image_size,
            trainable=trainable or (base.trainable if same_enc else default_trainable(encoder)),
            image_head=image_head or (base.image_head if same_enc else "auto"),
            embed_dim=embed_dim if embed_dim is not None else base.embed_dim,
            dropout=base.dropout)
    else:
        encoder = encoder or "convnet"
        spec = ModelSpec(encoder=encoder, encoder_options=enc_opts, text_encoder=text_encoder or "minilm",
                         text_options=txt_opts, image_size=image_size or default_image_size(encoder),
                         trainable=trainable or default_trainable(encoder, enc_opts),
                         image_head=image_head or "auto", embed_dim=embed_dim or 0)
    # validate names and options now, not deep inside a run
    host = get_host()
    from vlcore.config import build_config
    cls = host.get("image_encoder", spec.encoder)
    build_config(cls.Config, spec.encoder_options, owner=f"image encoder '{cls.name}'")
    tcls = host.get("text_encoder", spec.text_encoder)
    build_config(tcls.Config, spec.text_options, owner=f"text encoder '{tcls.name}'")
    return spec


def default_image_size(encoder: str) -> int:
    return 32 if encoder == "convnet" else 112


def default_trainable(encoder: str, opts: dict | None = None) -> str:
    cls = get_host().get("image_encoder", encoder)
    return getattr(cls, "default_trainable", "full" if encoder == "convnet" else "frozen")


def device_option(f):
    return click.option("--device", default="cpu", show_default=True,
                        help="Torch device: cpu, cuda, cuda:1, mps, or auto.")(f)


def resolve_device(device: str) -> str:
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VLError(f"--device {device} was asked for but CUDA is not available here "
                      f"(torch {torch.__version__}). Use --device cpu.")
    return device


def json_option(f):
    return click.option("--json", "as_json", is_flag=True,
                        help="Print one JSON object of the metrics on stdout.")(f)


def setup_logging(verbose: int) -> None:
    level = logging.WARNING if verbose == 0 else (logging.INFO if verbose == 1 else logging.DEBUG)
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")


def handle_errors(f):
    """Turn VLError (and a few common library errors) into a clean one-line message, exit 2."""
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except VLError as exc:
            raise click.ClickException(str(exc)) from None
        except KeyboardInterrupt:
            click.echo("Interrupted; artifacts written so far are complete (writes are atomic).", err=True)
            raise SystemExit(130)
    return wrapper
