"""What a run is asked to use: the model (:class:`ModelChoice` -> a :class:`~vlcore.model.encoder.ModelSpec`)
and the dataset (:class:`DatasetChoice`), each a dataclass whose fields are the settings (the
``vl`` commands derive their model and dataset flags from them, as component flags are derived from
a Config), with the defaults resolved here, in the core.

Defaults are never picked against what was given: a data folder without a dataset is read as the
dataset whose layout it has (``detect_layout`` of each installed dataset, plugins/datasets/layout.py),
and options given for a component that was not named must be the default component's own; otherwise
a ConfigError names the candidates.  A field left None was not given.
"""
from __future__ import annotations

import dataclasses
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from vlcore.artifacts.io import fingerprint
from vlcore.core.config import ranged
from vlcore.core.errors import ConfigError, DataError
from vlcore.core.kinds import KINDS
from vlcore.core.progress import NULL, Progress
from vlcore.core.registry import get_host
from vlcore.data.pipeline import build_dataset, build_text_encoder, check_spec, split_data
from vlcore.model.encoder import DEFAULT_ENCODER, DEFAULT_TEXT_ENCODER, ModelSpec


def parse_kv(items, what: str) -> dict[str, Any]:
    """KEY=VALUE pairs; values are parsed as JSON when they can be, else kept as strings (the
    component's config builder coerces them by type).  ``what``: the flag, for the message."""
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


# =========================================================================== which dataset a folder holds
def dataset_classes() -> list[type]:
    host = get_host()
    return [host.get("dataset", n) for n in host.names("dataset")]


def detect_datasets(data_dir: str) -> list[tuple[str, str]]:
    """(dataset, what shows it) for each installed dataset whose layout (its ``detect_layout``,
    plugins/datasets/layout.py) the folder ``data_dir`` has."""
    path = Path(os.path.expanduser(str(data_dir)))
    found = []
    for cls in dataset_classes():
        probe = getattr(cls, "detect_layout", None)
        try:
            evidence = probe(path) if probe is not None else None
        except OSError:
            evidence = None
        if evidence:
            found.append((cls.name, str(evidence)))
    return found


def layouts() -> str:
    """Each installed dataset that can be recognised, with its layout (for messages)."""
    return "; ".join(f"{c.name}: {c.layout_hint}" for c in dataset_classes() if getattr(c, "layout_hint", None))


def infer_dataset(data_dir: str) -> tuple[str, str]:
    """The dataset of the folder ``data_dir`` (``--data`` without ``--dataset``), from its layout, and
    what showed it; ConfigError naming the candidates when no layout, or several, match."""
    path = Path(os.path.expanduser(str(data_dir)))
    if not path.exists():
        raise ConfigError(f"--data {data_dir}: no such file or folder. Pass the folder of your data (or name its "
                          f"dataset with --dataset).")
    found = detect_datasets(data_dir)
    if len(found) == 1:
        return found[0]
    if not found and path.is_file():
        raise ConfigError(f"--data {data_dir} is a file; pass the folder of your data (with a caption file of "
                          f"another name: --data DIR --dataset-option file=NAME), or name its dataset with --dataset.")
    if not found:
        raise ConfigError(f"--data {data_dir} was given without --dataset, and the folder has the layout of no "
                          f"installed dataset, so vl cannot tell how to read it. The layouts it knows: {layouts()}. "
                          f"Arrange the folder like one of them, or name its dataset with --dataset NAME "
                          f"(`vl list datasets` shows them).")
    shown = "; ".join(f"{name} ({evidence})" for name, evidence in found)
    raise ConfigError(f"--data {data_dir} was given without --dataset, and the folder has the layout of several "
                      f"datasets: {shown}. Choose one: " +
                      " or ".join(f"--dataset {name}" for name, _ in found) + ".")


def config_fields(cls: type) -> set[str]:
    """The option names of a component class's Config."""
    return {f.name for f in dataclasses.fields(cls.Config)} if dataclasses.is_dataclass(getattr(cls, "Config", None)) \
        else set()


def fits_default(kind: str, name: str, options: dict, named: bool, param: str, flag: str) -> None:
    """When the component of ``kind`` was not ``named`` (``param``: its flag's parameter) and the
    default ``name`` is used, options given for it (``flag``) must be its own: else a ConfigError
    naming the default and the components that take them (a default is never picked against the
    options given)."""
    if not options or named:
        return
    host = get_host()
    unknown = sorted(set(options) - config_fields(host.get(kind, name)))
    if not unknown:
        return
    noun, option = KINDS[kind].noun, "--" + param.replace("_", "-")
    takes = [n for n in host.names(kind) if set(options) <= config_fields(host.get(kind, n))]
    given = ", ".join(f"'{k}'" for k in unknown)
    if takes:
        fix = (f"{'It belongs' if len(unknown) == 1 else 'They belong'} to {' and '.join(takes)}: name "
               f"{'it' if len(takes) == 1 else 'one'} with {option} {takes[0] if len(takes) == 1 else 'NAME'}.")
    else:
        fix = f"`vl list {kind}s` shows each one's options."
    raise ConfigError(f"{flag} {given} is not an option of the {noun} '{name}', which is used because {option} was "
                      f"not given. {fix}")


def refuse_ignored_folder(cls: type, data_dir: str | None) -> None:
    """A ``--data`` folder for a dataset that reads none (``embedded``: generated) would be ignored:
    a ConfigError naming the datasets whose layout the folder has."""
    if data_dir is None or getattr(cls, "reads_data_folder", True) is not False:
        return
    found = detect_datasets(data_dir) if Path(os.path.expanduser(str(data_dir))).exists() else []
    which = (" (its layout is that of " + " or ".join(f"--dataset {n}" for n, _ in found) + ")") if found else ""
    raise ConfigError(f"Dataset '{cls.name}' reads no data folder (it is generated), so --data {data_dir} would be "
                      f"ignored. Drop --data to use {cls.name}, or name the dataset of {data_dir} with --dataset"
                      f"{which}.")


def default_dataset_note(dataset: str, options: dict) -> str:
    """For an option the dataset does not take, when the dataset was not named: that the default was
    used, and which datasets take the options given."""
    takes = [c.name for c in dataset_classes() if options and set(options) <= config_fields(c)]
    note = f" --dataset was not given, so the default '{dataset}' is used"
    if takes:
        note += (f"; the options given belong to {' and '.join(takes)}: name {'it' if len(takes) == 1 else 'one'} "
                 f"with --dataset {takes[0] if len(takes) == 1 else 'NAME'}")
    return note + "."


# =========================================================================== dataset
#: the fields of :class:`DatasetChoice` that are not settings (no flag): how the dataset was chosen
DATASET_STATE = ("inferred", "named")


@dataclass(frozen=True)
class DatasetChoice:
    """The dataset of a run: the dataset's name, its folder, a limit and its options.
    :meth:`resolved` names a dataset not given (by the layout of ``data_dir``, else a default),
    :meth:`inherit` takes what an artifact was made from."""

    #: Dataset.
    dataset: str | None = field(default=None, metadata={"kind": "dataset", "fresh": "embedded"})
    #: Data folder of the dataset (not needed for 'embedded').
    data_dir: str | None = field(default=None, metadata={"flag": "--data", "path": True, "shown": "none"})
    #: Use only the first N images of each split (quick runs).
    limit: int | None = ranged(None, 1, shown="all")
    #: Dataset option (repeatable), e.g. num_train=1000.
    dataset_opts: tuple[str, ...] = field(default=(), metadata={"flag": "--dataset-option"})
    #: how the dataset was chosen when a folder was given without it (for the defaults line)
    inferred: str | None = None
    #: whether the dataset was given (None: whether ``dataset`` is set); when it was not, a message
    #: about options it does not take says that the default was used
    named: bool | None = None

    def resolved(self, default: str | None = None) -> "DatasetChoice":
        """This choice with its dataset named and checked: a folder without a dataset is read by
        its layout (:func:`infer_dataset`; ``default`` is never used for it), else ``default``."""
        named = self.dataset is not None if self.named is None else self.named
        ds = dataclasses.replace(self, named=named)
        if not named and ds.data_dir is not None:
            name, evidence = infer_dataset(ds.data_dir)
            ds = dataclasses.replace(ds, dataset=name, inferred=f"inferred from the layout of {ds.data_dir}: {evidence}")
        elif ds.dataset is None and default is not None:
            ds = dataclasses.replace(ds, dataset=default)
        return ds.check()

    def options(self) -> dict[str, Any]:
        return parse_kv(self.dataset_opts, "--dataset-option")

    def check(self) -> "DatasetChoice":
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
            named = self.dataset is not None if self.named is None else self.named
            default = default_dataset_note(self.dataset, self.options()) if not (named or self.inferred) else ""
            raise ConfigError(f"{exc}{default} (--dataset-option KEY=VALUE sets them; `vl list datasets` shows each "
                              f"dataset's options.)") from None
        return self

    def inherit(self, src: dict, default: str | None = None) -> "DatasetChoice":
        """What was given, else what an artifact (a pair set or buffer, whose dataset record is
        ``src``) was made from.  The artifact's folder/options/limit apply only when the dataset is
        the same."""
        dataset = self.dataset or src.get("name") or default
        same = dataset == src.get("name")
        opts = self.options() or (dict(src.get("options") or {}) if same else {})
        return DatasetChoice(dataset, self.data_dir if self.data_dir is not None else (src.get("root") if same else None),
                             self.limit if self.limit is not None else (src.get("limit") if same else None),
                             tuple(kv_list(opts)), self.inferred if dataset == self.dataset else None,
                             self.dataset is not None if self.named is None else self.named).check()

    def split(self, name: str):
        """The split ``name`` of the dataset (counted, nothing loaded yet)."""
        return build_dataset(self.dataset, self.data_dir, self.limit, self.options()).split(name)

    def load(self, split: str, spec: ModelSpec, *, progress: Progress = NULL, check=None):
        """The pair data of ``split``.  ``check(split)``: called once the split is counted (its images and
        captions listed, none loaded or embedded yet), to refuse a run the split cannot take (e.g. more
        pairs than it has) before the costly work."""
        part = self.split(split)
        if check is not None:
            check(part)
        return split_data(part, spec, build_text_encoder(spec), progress=progress)

    def record(self, data) -> dict:
        """The dataset record of an artifact made from the training split ``data`` (PairData): what
        was asked for, the dataset's full resolved config (e.g. the sizes of a seeded split) and its
        licence."""
        about = data.split.about if data.split is not None else {}
        return {"name": self.dataset, "root": str(Path(self.data_dir).resolve()) if self.data_dir else None,
                "options": self.options(), "limit": self.limit, "split": "train", "pairs": data.num_pairs,
                "images": data.num_images, "fingerprint": fingerprint(data.key), **about}


def other_data(src: dict, info: dict) -> str | None:
    """The warning for an artifact (a buffer) made from other training data than the run's (its
    dataset record ``src``; the run's ``info``), or None."""
    if src.get("fingerprint") and src.get("fingerprint") != info["fingerprint"]:
        def about(d):
            return (f"{d.get('name')}, {d.get('pairs')} pairs, {d.get('root') or 'no folder'}, "
                    f"fingerprint {d.get('fingerprint')}")
        same = all(src.get(k) == info.get(k) for k in ("name", "pairs", "root"))
        why = (" The dataset, its size and folder are the same: its caption or split files differ from when "
               "the buffer was made (edited or replaced; rebuild the buffer with `vl experts` if so), or the "
               "buffer predates content fingerprints (vlcore until 2026-12-03 counted the files' modification "
               "times, so a copied folder differed; its experts still fit files whose content is unchanged)."
               if same else "")
        return (f"warning: the buffer was trained on other data ({about(src)}) than the training split used "
                f"now ({about(info)}).{why}")
    return None


def check_pairs(pairs: int, part, ds: "DatasetChoice", who: str, *, unique_images: bool = False) -> None:
    """Refuse ``--pairs`` larger than the training split ``part`` holds (image-caption pairs, or images
    with ``unique_images``: one caption per image), naming the split's size and the flags that fix it;
    ``who``: the method."""
    have = part.num_images if unique_images else part.num_pairs
    if pairs <= have:
        return
    what = f"{ds.dataset}" + (f" in {ds.data_dir}" if ds.data_dir else "")
    size = f"{part.num_images} images with {part.num_pairs} captions"
    if unique_images:
        more = (f", or let several captions of one image in with --no-unique-images (up to --pairs {part.num_pairs})"
                if part.num_pairs > part.num_images else "")
        need = (f"exceeds the {part.num_images} images of the training split of {what} ({size}), and {who} takes one "
                f"caption per image (--unique-images, the default)")
    else:
        more = ""
        need = (f"exceeds the {part.num_pairs} pairs of the training split of {what} ({size}: a pair per caption), "
                f"from which {who} takes its pairs")
    opts = part.about.get("config") if isinstance(part.about, dict) else None
    grow = ""
    if isinstance(opts, dict) and {"dev", "test"} <= set(opts):
        grow = (f"; or move images into the training split (--dataset-option dev=N and test=N set the held-out "
                f"images: now dev={opts['dev']:g}, test={opts['test']:g})")
    elif isinstance(opts, dict) and "num_train" in opts:
        grow = f"; or make more training images (--dataset-option num_train=N, now {opts['num_train']})"
    elif ds.limit is not None:
        grow = f"; or raise --limit (now {ds.limit})"
    raise ConfigError(f"--pairs {pairs} {need}. Choose --pairs {have} or less{more}{grow}.")


def check_pairset_path(pairset: str) -> None:
    """A pair set that does not exist is said to be missing (with the folders of that name nearby),
    before any folder is claimed or any record read."""
    path = Path(pairset)
    if path.exists():
        return
    parent = path.parent if str(path.parent) else Path(".")
    near = []
    if parent.is_dir():
        try:
            names = [p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            names = []
        near = [str(parent / n) if str(path.parent) not in ("", ".") else n
                for n in difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)]
    if near:
        where = f" Did you mean {' or '.join(near)}?"
    else:
        where = f" ({parent} {'holds no folder of a similar name' if parent.is_dir() else 'does not exist either'}.)"
    raise DataError(f"Pair set {pairset} does not exist: no such folder.{where} Give the folder of a pair set: the "
                    f"--out of `vl distill` or `vl coreset`, or a `vl export` folder.")


# =========================================================================== model
@dataclass(frozen=True)
class ModelChoice:
    """The model of a run (None: not given); :meth:`spec` makes the ModelSpec: what was given, else
    an artifact's spec, else the encoder's own defaults (:meth:`ModelSpec.for_encoder`)."""

    #: Image encoder.
    encoder: str | None = field(default=None, metadata={"kind": "image_encoder", "shown": DEFAULT_ENCODER,
                                                        "fresh": DEFAULT_ENCODER})
    #: Image encoder option (repeatable), e.g. width=32.
    encoder_opts: tuple[str, ...] = field(default=(), metadata={"flag": "--encoder-option"})
    #: Image encoder weights: bundled/hub (auto), random init (none), or a local weights file.
    pretrained: str | None = field(default=None, metadata={"metavar": "auto|none|hub|PATH", "shown": "auto"})
    #: Frozen text encoder.
    text_encoder: str | None = field(default=None, metadata={"kind": "text_encoder", "shown": DEFAULT_TEXT_ENCODER,
                                                             "fresh": DEFAULT_TEXT_ENCODER})
    #: Text encoder option (repeatable), e.g. model=/path/to/bert.
    text_opts: tuple[str, ...] = field(default=(), metadata={"flag": "--text-option"})
    #: Image side in pixels (the encoder's default: 32 for convnet, 112 otherwise).
    image_size: int | None = ranged(None, 1, shown="the encoder's")
    #: Train all image-encoder weights (full), only the heads on a frozen backbone (frozen), or LoRA
    #: adapters (lora). Default: what the encoder declares (full for convnet, frozen for pretrained encoders).
    trainable: Literal["full", "frozen", "lora"] | None = field(default=None, metadata={"shown": "the encoder's"})
    #: Image projection head; auto = none for full, linear for frozen; mlp = the text head's form (RepBlend).
    image_head: Literal["auto", "none", "linear", "mlp"] | None = field(default=None, metadata={"shown": "auto",
                                                                                                "fresh": "auto"})
    #: Joint embedding size when there is an image head.
    embed_dim: int | None = ranged(None, 0, shown="256")
    #: Run the image backbone in channels-last memory format (the same numbers up to float noise,
    #: faster on CPU; benchmarks/BACKBONE.md).
    channels_last: bool | None = field(default=None, metadata={"shown": "on"})
    #: Run the image backbone's pass in this dtype (features back in float32); changes results:
    #: benchmarks/BACKBONE.md.
    backbone_autocast: Literal["none", "bfloat16"] | None = field(default=None, metadata={"shown": "none"})

    @classmethod
    def of(cls, spec: ModelSpec) -> dict[str, Any]:
        """The settings (by field name) that give ``spec`` (for a resolved config.toml)."""
        return {"encoder": spec.encoder, "encoder_opts": kv_list(spec.encoder_options), "pretrained": None,
                "text_encoder": spec.text_encoder, "text_opts": kv_list(spec.text_options),
                "image_size": spec.image_size, "trainable": spec.trainable, "image_head": spec.image_head,
                "embed_dim": spec.embed_dim, "channels_last": spec.channels_last,
                "backbone_autocast": spec.backbone_autocast}

    def spec(self, base: ModelSpec | None = None) -> ModelSpec:
        """The ModelSpec asked for; settings not given fall back to ``base`` (an artifact's spec), else
        to the encoder's own defaults.  Names, options, image size and weights are checked now."""
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
            fits_default("image_encoder", enc_cls.name, enc_opts, self.encoder is not None, "encoder",
                         "--encoder-option")
            fits_default("text_encoder", self.text_encoder or DEFAULT_TEXT_ENCODER, txt_opts,
                         self.text_encoder is not None, "text_encoder", "--text-option")
            spec = ModelSpec.for_encoder(enc_cls, encoder_options=enc_opts, text_encoder=self.text_encoder,
                                         text_options=txt_opts, image_size=self.image_size, trainable=self.trainable,
                                         image_head=self.image_head, embed_dim=self.embed_dim)
        ex = base or ModelSpec()  # the backbone's execution options: the setting, else the artifact's
        spec.channels_last = ex.channels_last if self.channels_last is None else self.channels_last
        spec.backbone_autocast = self.backbone_autocast or ex.backbone_autocast
        check_spec(spec, host)  # names, options, image size and weights now, not deep inside a run
        return spec
