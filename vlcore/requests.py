"""Requests: what one run of an application command asks of the core, as a dataclass with
``resolve()`` (every name, option and artifact checked, the defaults picked; nothing written) and
``run()`` (claim the output folder, load the data, build the context, run, write the artifact).

The ``vl`` commands parse their flags into a request, run it and print its result; ``vl run`` makes
the same requests from a recipe's stages.  A request speaks through a :class:`Report` (lines of
output, warnings, progress) and claims its output folder through ``hold`` (the CLI ties the folder's
lock to the running command), so it never prints or exits by itself.
"""
from __future__ import annotations

import os
import time
from abc import ABC, abstractmethod
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, ClassVar

import torch

from vlcore.artifacts.checkpoint import NAME as CHECKPOINT
from vlcore.artifacts.io import FileRecord, close_record, open_record, write_json
from vlcore.artifacts.loggers import open_loggers, parse_names
from vlcore.artifacts.outdir import COMMAND_KINDS, OutputFolder
from vlcore.choices import DatasetChoice, ModelChoice, check_pairs, check_pairset_path, other_data
from vlcore.core.errors import ConfigError, VLError
from vlcore.core.progress import NULL, Progress
from vlcore.core.registry import get_host
from vlcore.data.checks import check_spec
from vlcore.data.export import is_hf_export
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import build_text_encoder
from vlcore.data.viz import pair_grid, recall_curves
from vlcore.distill import recipe
from vlcore.distill.contract import DistillContext, PeriodicEval
from vlcore.distill.coreset import SelectContext, run_selector
from vlcore.model.encoder import ModelSpec
from vlcore.model.metrics import KEYS, small_split_warning
from vlcore.training import distributed
from vlcore.training.buffer import Buffer
from vlcore.training.evaluate import evaluate_pairs
from vlcore.training.experts import ExpertConfig, train_experts


def _quiet(message: str) -> None:
    pass


@dataclass
class Report:
    """How a request speaks: ``say`` a line of output, ``warn`` a warning or note, ``progress``."""

    say: Callable[[str], None] = _quiet
    warn: Callable[[str], None] = _quiet
    progress: Progress = NULL


# =========================================================================== output folders
#: the commands every rank runs under torchrun (the others run on rank 0 alone, inside `vl run`)
ACROSS_RANKS = ("experts", "distill", "run")


class Follower:
    """The output folder as a rank other than 0 sees it: claimed (checked, locked, prepared) by
    rank 0; what this rank writes there (its experts) is recorded in the folder's record too."""

    def __init__(self, path: Path, command: str, resuming: bool):

        self.path, self.resuming = path, resuming
        self.record = FileRecord(path, {"command": command, "kind": COMMAND_KINDS[command]})

    def __enter__(self) -> "Follower":
        open_record(self.record)
        return self

    def __exit__(self, *exc) -> None:
        close_record(self.record)

    def prepare(self) -> Path:
        return self.path


def claim(out, command: str, *, hold: Callable, resume: bool = False, overwrite: bool = False, inputs=(),
          flag: str = "--out"):
    """Claim the output folder of ``command`` (:class:`vlcore.artifacts.outdir.OutputFolder`: checked, created,
    locked while ``hold`` keeps it: ``hold(folder)`` enters it, e.g. ``ExitStack.enter_context``);
    call ``.prepare()`` on the result right before writing."""
    across = command in ACROSS_RANKS  # under torchrun: rank 0 claims the folder; the others follow its answer
    if across and not distributed.is_main():
        return hold(Follower(Path(out), command, distributed.broadcast()))
    folder = hold(OutputFolder(out, command, resume=resume, overwrite=overwrite, inputs=inputs, flag=flag))
    if across:
        if distributed.launched():
            folder.prepare()  # before another rank writes there (an --overwrite clears the folder now)
        distributed.broadcast(folder.resuming)
    return folder


def resolve_device(device: str, *, command: str, across: bool = False) -> str:
    """The device to run on; under torchrun (``across``: ``command`` runs across ranks) the process
    group is joined and each rank gets ``cuda:LOCAL_RANK`` for ``cuda``."""
    if distributed.launched() and not across and not distributed.active():  # (in `vl run`: rank 0 runs it)
        raise VLError(f"`vl {command}` runs in one process, but this one was launched as one of several ranks "
                      f"(WORLD_SIZE={os.environ.get('WORLD_SIZE')}). Run it without torchrun; `vl experts`, "
                      f"`vl distill` and `vl run` are the commands that run across ranks.")
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else ("mps" if torch.backends.mps.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise VLError(f"--device {device} was asked for but CUDA is not available here "
                      f"(torch {torch.__version__}). Use --device cpu.")
    return distributed.init(device) if across else device


def default_out(method: str, encoder: str, pairs: int) -> Path:
    """The folder a run writes to when none is given: ``runs/METHOD-ENCODER-PAIRS``."""
    return Path("runs") / f"{method}-{encoder}-{pairs}"


# =========================================================================== shared steps
def picked_defaults(command: str, values: dict, given, report: Report, notes: dict | None = None) -> dict:
    """The settings of ``values`` (name -> the value the run uses) that were not ``given``: said on one
    line before any work, and returned by flag name for the artifact (meta["defaults"]).  ``notes``:
    name -> how its value was chosen, said beside it (``--dataset captions (inferred from ...)``)."""
    picked = {k.replace("_", "-"): v for k, v in values.items() if v is not None and k not in given}
    said = {k.replace("_", "-"): n for k, n in (notes or {}).items() if n}
    if picked:
        report.say(f"vl {command}: defaults used: " +
                   ", ".join(f"--{k} {v}" + (f" ({said[k]})" if k in said else "") for k, v in picked.items()) +
                   " (every setting: OUT/config.toml)")
    return picked


def public_metrics(m: dict) -> dict:
    """The public metrics object: means and stds of the six recalls (percent), plus rsum."""
    out = {k: round(m[k], 4) for k in KEYS}
    out.update({f"{k}_std": round(m.get(f"{k}_std", 0.0), 4) for k in KEYS})
    if "rsum" in m:
        out["rsum"] = round(m["rsum"], 4)
    if isinstance(m.get("candidates"), dict):  # what the recalls rank: beside them
        out["candidates"] = dict(m["candidates"])
    return out


@dataclass
class Result:
    """What a request made: its output folder, the artifact (a pair set, a buffer, metrics), the
    settings it ran with (by flag parameter name, for OUT/config.toml) and more facts to report."""

    out: Path
    made: Any = None
    settings: dict = field(default_factory=dict)
    seconds: float = 0.0
    facts: dict = field(default_factory=dict)


class Request(ABC):
    """The base of the requests: ``COMMAND`` (the command whose folder it claims), :meth:`resolve`
    (everything checked and picked, nothing written: the plan) and :meth:`run`."""

    COMMAND: ClassVar[str] = ""

    @abstractmethod
    def resolve(self) -> dict:
        """The plan of the run: every name, option and artifact checked, the defaults picked."""

    def run(self, report: Report | None = None, hold: Callable | None = None) -> Result:
        """Resolve, then claim the folder (held by ``hold``, else until this call returns) and do the work;
        ``report``: how to speak (None: silently)."""
        plan, report = self.resolve(), report or Report()
        if hold is not None:
            return self._run(plan, report, hold)
        with ExitStack() as stack:
            return self._run(plan, report, stack.enter_context)

    @abstractmethod
    def _run(self, plan: dict, report: Report, hold: Callable) -> Result:
        """Claim the output folder, load the data, run, write the artifact."""


def _buffer_and_spec(buffer: str | None, model: ModelChoice, dataset: DatasetChoice):
    """(the buffer or None, the spec, the buffer's dataset record, the dataset): the spec and the
    dataset default to the buffer's, and the buffer must fit the spec."""

    buf = Buffer(buffer) if buffer else None
    spec = model.spec(base=buf.spec if buf else None)  # names, image size and weights checked now
    if buf is not None:
        buf.check_compatible(spec, build_text_encoder(spec).dim)
    src = (buf.index.get("dataset") or {}) if buf else {}
    return buf, spec, src, dataset.inherit(src, default="embedded")


# =========================================================================== vl distill
@dataclass
class DistillRequest(Request):
    """Distil a pair set with ``distiller`` from ``buffer`` (Stage 1 first into OUT/buffer without one)."""

    COMMAND: ClassVar[str] = "distill"
    distiller: str = "bitraj"
    options: dict = field(default_factory=dict)
    buffer: str | None = None
    num_experts: int | None = None
    train_epochs: int | None = None
    dataset: DatasetChoice = field(default_factory=DatasetChoice)
    model: ModelChoice = field(default_factory=ModelChoice)
    eval_split: str = "dev"
    periodic: PeriodicEval = field(default_factory=PeriodicEval)
    no_eval: bool = False
    seed: int = 0
    log: tuple[str, ...] = ()
    log_options: dict = field(default_factory=dict)
    resume: bool = False
    overwrite: bool = False
    out: str | None = None
    device: str = "cpu"
    given: frozenset = frozenset()

    def resolve(self) -> dict:

        host = get_host()
        device = resolve_device(self.device, command="distill", across=True)
        if self.eval_split == "test":
            raise ConfigError("--eval-split test would select on the test split; use dev (report test once, with "
                              "vl eval).")
        dist = host.create("distiller", self.distiller, self.options)  # bad options fail before any data work
        for kind, name in dist.named_components():  # e.g. its unroll backend (none for a distiller without one)
            host.get(kind, name)
        loggers = open_loggers(parse_names(self.log), self.log_options)
        buf, spec, src, ds = _buffer_and_spec(self.buffer, self.model, self.dataset)
        pairs = dist.config.pairs
        out = Path(self.out or default_out(dist.name, spec.encoder, pairs))
        return dict(host=host, dist=dist, loggers=loggers, buf=buf, spec=spec, src=src, ds=ds, pairs=pairs, out=out,
                    device=device)

    def experts(self, dist, spec):
        """The Stage 1 a distillation without a buffer runs: the distiller's expert defaults, with
        ``num_experts`` and ``train_epochs`` when given."""
        cfg = ExpertConfig(**{**dist.expert_defaults(), **({"num_experts": self.num_experts} if self.num_experts else {}),
                              **({"epochs": self.train_epochs} if self.train_epochs else {})}).resolved(spec)
        cfg.check("vl distill (Stage 1)")
        return cfg

    def _run(self, p: dict, report: Report, hold: Callable) -> Result:

        dist, buf, spec, ds, out, pairs = p["dist"], p["buf"], p["spec"], p["ds"], p["out"], p["pairs"]
        if buf is not None:
            for name in ("num_experts", "train_epochs"):
                if name in self.given:
                    report.warn(f"note: --{name.replace('_', '-')} is ignored: --buffer {self.buffer} is used as it is.")
        folder = claim(out, "distill", hold=hold, resume=self.resume, overwrite=self.overwrite, inputs=[self.buffer])
        experts = self.experts(dist, spec) if buf is None else None
        picked = picked_defaults("distill", {
            "dataset": ds.dataset, "encoder": spec.encoder,
            "pretrained": spec.encoder_options.get("pretrained", "auto"), "text_encoder": spec.text_encoder,
            "image_size": spec.image_size, "trainable": spec.trainable, "pairs": pairs,
            "iterations": dist.config.iterations, "seed": self.seed,
            "buffer": f"{out / 'buffer'} ({experts.num_experts} experts x {experts.epochs} epochs)" if experts else None,
            "num_experts": experts.num_experts if experts else None,
            "train_epochs": experts.epochs if experts else None,
            "out": out, "device": p["device"]}, self.given, report, notes={"dataset": ds.inferred})
        report.say(f"distilling {pairs} pairs with {dist.name} into {out}")
        train = ds.load("train", spec, progress=report.progress,
                        check=lambda part: check_pairs(pairs, part, ds, dist.name))
        info = ds.record(train)
        eval_data = None if self.no_eval else ds.load(self.eval_split, spec, progress=report.progress)
        small = eval_data is not None and small_split_warning(eval_data.num_images, eval_data.num_pairs,
                                                              f"The {self.eval_split} split of {ds.dataset}")
        if small:
            report.warn(f"warning: {small} (Its dev evaluations during the run choose best/.)")
        folder.prepare()  # before Stage 1 writes OUT/buffer (an --overwrite replaces that buffer too)
        if buf is None:
            report.say(f"Stage 1: {experts.num_experts} experts x {experts.epochs} epochs into {out / 'buffer'} "
                       f"(finished experts there are reused)")
            buf = train_experts(spec, train, experts, out / "buffer", dataset_info=info, device=p["device"],
                                progress=report.progress)
        warning = other_data(p["src"], info)
        if warning:
            report.warn(warning)
        resumed = folder.resuming and (out / CHECKPOINT).exists()
        progress = ResumeNote(report, out / CHECKPOINT) if resumed else report.progress
        run = DistillContext(spec=spec, buffer=buf, train=train, out=out, eval_data=eval_data, dataset_info=info,
                             device=p["device"], seed=self.seed, resume=folder.resuming, host=p["host"],
                             progress=progress, eval_options=self.periodic, loggers=p["loggers"],
                             meta={"defaults": {k: str(v) for k, v in picked.items()}, "run_name": out.name})
        t0 = time.time()
        ps = recipe.run(dist, run)
        # a buffer made by this run is not saved as --buffer: `--config OUT/config.toml --out NEW` makes its own
        settings = {**ModelChoice.of(spec), **asdict(dist.config), "dataset": ds.dataset}
        if experts is not None:
            settings.update(num_experts=experts.num_experts, train_epochs=experts.epochs)
        return Result(out, ps if distributed.is_main() else None, settings, time.time() - t0,
                      {"eval_data": eval_data, "loggers": p["loggers"]})


class ResumeNote(Progress):
    """``progress`` that, when the distillation loop starts (its task counts iterations), says where a
    resumed run continues: ``resuming from iteration 40 of 60``."""

    def __init__(self, report: Report, checkpoint: Path):
        self.report, self.checkpoint, self.said = report, checkpoint, False

    def task(self, desc: str, total: int | None = None, *, unit: str = "it", initial: int = 0):
        if unit == "it" and not self.said:
            self.said = True
            self.report.say(f"resuming from iteration {initial} of {total} ({self.checkpoint})")
        return self.report.progress.task(desc, total, unit=unit, initial=initial)


# =========================================================================== vl coreset
@dataclass
class CoresetRequest(Request):
    """Select ``pairs`` real pairs of the training split with the selector ``method``."""

    COMMAND: ClassVar[str] = "coreset"
    method: str = "random"
    options: dict = field(default_factory=dict)
    pairs: int = 100
    buffer: str | None = None
    dataset: DatasetChoice = field(default_factory=DatasetChoice)
    model: ModelChoice = field(default_factory=ModelChoice)
    seed: int = 0
    overwrite: bool = False
    out: str | None = None
    device: str = "cpu"
    given: frozenset = frozenset()

    def resolve(self) -> dict:
        device = resolve_device(self.device, command="coreset")
        host = get_host()
        if self.pairs < 1:
            raise ConfigError(f"--pairs must be at least 1 pair (got {self.pairs}).")
        sel = host.create("selector", self.method, self.options)  # unknown method or option: fail now
        buf, spec, src, ds = _buffer_and_spec(self.buffer, self.model, self.dataset)
        out = Path(self.out or default_out(sel.name, spec.encoder, self.pairs))
        return dict(host=host, sel=sel, buf=buf, spec=spec, src=src, ds=ds, out=out, device=device)

    def _run(self, p: dict, report: Report, hold: Callable) -> Result:

        sel, spec, ds, out, pairs = p["sel"], p["spec"], p["ds"], p["out"], self.pairs
        folder = claim(out, "coreset", hold=hold, overwrite=self.overwrite, inputs=[self.buffer])
        picked = picked_defaults("coreset", {"dataset": ds.dataset, "encoder": spec.encoder,
                                             "text_encoder": spec.text_encoder, "image_size": spec.image_size,
                                             "trainable": spec.trainable, "pairs": pairs, "seed": self.seed,
                                             "out": out, "device": p["device"]}, self.given, report,
                                 notes={"dataset": ds.inferred})
        report.say(f"selecting {pairs} pairs with {sel.name} into {out}")
        unique = bool(getattr(sel.config, "unique_images", False))
        train = ds.load("train", spec, progress=report.progress,
                        check=lambda part: check_pairs(pairs, part, ds, sel.name, unique_images=unique))
        info = ds.record(train)
        warning = other_data(p["src"], info)
        if warning:
            report.warn(warning)
        run = SelectContext(train=train, spec=spec, budget=pairs, seed=self.seed, buffer=p["buf"], device=p["device"],
                            host=p["host"], progress=report.progress, dataset_info=info)
        t0 = time.time()
        ps = run_selector(sel, run)
        seconds = time.time() - t0
        ps.meta["seconds"] = round(seconds, 2)
        ps.meta["defaults"] = {k: str(v) for k, v in picked.items()}
        folder.prepare()
        ps.save(out)
        pair_grid(ps.images, ps.captions, out / "grid.png", max_pairs=24, cols=6,
                  title=f"{sel.name}: first {min(24, len(ps))} of {len(ps)} selected pairs "
                        f"({ds.dataset}/train, seed {self.seed})")
        images = len({i for i, _ in ps.source_ids}) if ps.source_ids else len(ps)
        return Result(out, ps, {**ModelChoice.of(spec), **asdict(sel.config), "dataset": ds.dataset}, seconds,
                      {"images": images, "of": train.num_pairs, "name": sel.name})


# =========================================================================== vl experts
@dataclass
class ExpertsRequest(Request):
    """Train an expert buffer (Stage 1) on the training split."""

    COMMAND: ClassVar[str] = "experts"
    dataset: DatasetChoice = field(default_factory=DatasetChoice)
    model: ModelChoice = field(default_factory=ModelChoice)
    #: the given fields of :class:`vlcore.training.experts.ExpertConfig`
    expert: dict = field(default_factory=dict)
    workers: int = 1
    resume: bool = False
    overwrite: bool = False
    out: str | None = None
    device: str = "cpu"

    def resolve(self) -> dict:
        if self.workers > 1 and distributed.launched():
            raise ConfigError("--workers starts local processes, and torchrun has already started this one as a "
                              "rank: use one of them (torchrun --nproc-per-node N, or --workers N without torchrun).")
        device = resolve_device(self.device, command="experts", across=True)
        spec = self.model.spec()
        cfg = ExpertConfig(**self.expert).resolved(spec)
        cfg.check("vl experts")
        return dict(spec=spec, cfg=cfg, device=device, out=Path(self.out or Path("runs") / f"buffer-{self.dataset.dataset}-{spec.encoder}"))

    def _run(self, p: dict, report: Report, hold: Callable) -> Result:
        spec, cfg, out = p["spec"], p["cfg"], p["out"]
        folder = claim(out, "experts", hold=hold, resume=self.resume, overwrite=self.overwrite)
        data = self.dataset.load("train", spec, progress=report.progress)
        folder.prepare()
        t0 = time.time()
        buf = train_experts(spec, data, cfg, out, dataset_info=self.dataset.record(data), device=p["device"],
                            workers=self.workers, progress=report.progress)
        return Result(out, buf if distributed.is_main() else None, {**ModelChoice.of(spec), **cfg.__dict__},
                      time.time() - t0, {"epochs": cfg.epochs})


# =========================================================================== vl eval
@dataclass
class EvalRequest(Request):
    """Score the pair set ``pairset`` with ``evaluator`` on the split ``split``."""

    COMMAND: ClassVar[str] = "eval"
    pairset: str = ""
    split: str = "dev"
    evaluator: str = "retrieval"
    options: dict = field(default_factory=dict)
    dataset: DatasetChoice = field(default_factory=DatasetChoice)
    model: ModelChoice = field(default_factory=ModelChoice)
    out: str | None = None
    overwrite: bool = False
    device: str = "cpu"

    def resolve(self) -> dict:
        device = resolve_device(self.device, command="eval")  # (launched as a rank: refused first)
        check_pairset_path(self.pairset)
        if self.out:
            out = Path(self.out)
        elif is_hf_export(self.pairset):  # a shareable folder stays as exported: the results go beside it
            out = Path(self.pairset).parent / f"{Path(self.pairset).resolve().name}-eval-{self.split}"
        else:
            out = Path(self.pairset) / f"eval-{self.split}"
        return dict(out=out, device=device)

    def _run(self, p: dict, report: Report, hold: Callable) -> Result:

        out, pairset, split = p["out"], self.pairset, self.split
        folder = claim(out, "eval", hold=hold, overwrite=self.overwrite, inputs=[pairset])
        ps = PairSet.load(pairset)
        for w in ps.meta.get("warnings") or []:
            report.warn(f"warning: the distillation that made {pairset} reported: {w}")
        spec = self.model.spec(base=ModelSpec.from_dict(ps.meta.get("spec") or {}))
        check_spec(ps, spec)  # --image-size / --text-encoder that do not fit the set: a usage error
        ds = self.dataset.inherit(ps.meta.get("dataset") or {})
        if not ds.dataset:
            raise VLError(f"{pairset} records no source dataset; pass --dataset and --data.")
        ev_cfg = get_host().config("evaluator", self.evaluator, self.options)  # bad options fail before data work
        evald = ds.load(split, spec, progress=report.progress)
        t0 = time.time()
        m = evaluate_pairs(ps, evald, spec, evaluator=self.evaluator, options=self.options, device=p["device"],
                           progress=report.progress)
        for w in m.get("warnings") or []:
            report.warn(f"warning: {w}")
        folder.prepare()
        storage = ps.storage()
        write_json(out / "metrics.json", public_metrics(m))
        write_json(out / "details.json", {"pairset": str(Path(pairset).resolve()), "spec": spec.as_dict(),
                                          "dataset": ds.dataset, "split": split, "evaluator": self.evaluator,
                                          "options": self.options, "storage": storage,
                                          "seconds": round(time.time() - t0, 1), **m})
        label = f"{ps.meta.get('method', 'pairs')} ({len(ps)})"
        if "curve" in m:
            recall_curves({label: m["curve"]}, out / "recall.png",
                          title=f"{ds.dataset}/{split} retrieval, models trained on {pairset}")
        return Result(out, m, {**ModelChoice.of(spec), **asdict(ev_cfg)}, time.time() - t0,
                      {"label": f"{ps.meta.get('method', 'pairs')} ({len(ps)} pairs)", "storage": storage})
