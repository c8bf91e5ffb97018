"""Stage 1: expert trajectories.

A *buffer* is a folder:

    index.json                 format, model spec, text dim, per-modality parameter names and
                               shapes, dataset, expert config, base seed, versions, and the finished
                               experts: each file's sha256 and size
    expert_000.safetensors     for every epoch e = 0..T: ``img.e`` and ``txt.e``, the flat vector of
                               that modality's trainable parameters after epoch e (e = 0: the start)

Each expert file is written atomically, then recorded in index.json, so an interrupted run resumes
at the next unfinished expert.  A buffer whose files do not match index.json (deleted, truncated,
changed) is refused, and a distillation's run key holds the experts' checksums, so a checkpoint
never resumes against another buffer.  The same seed gives byte-identical expert files.  Experts
are independent and can be trained in parallel worker processes.

Each expert file carries what made it in its safetensors metadata (``vlcore``: the expert's index,
seed and epochs, and the buffer's settings: model spec, text dim, parameter layout, expert config
but the number of experts, the training data's fingerprint).  ``--resume`` adopts an expert file it
finds on disk only if those match the buffer's and its tensors fit the buffer's layout; any other
file named like an expert (another seed, other epochs or learning rate, another dataset, another
expert's file renamed, a damaged or unreadable one) is refused, naming the file, and the buffer is
left as it was.  vl never leaves a partial file under an expert's name (an interrupted write leaves
only its temporary file, which the next command removes), so an unreadable ``expert_NNN`` file is
not vl's interrupted write and is not deleted or retrained over: moving it away is the fix.  A file
of an older vlcore, whose metadata records only index, seed and epochs, is checked on those and on
its layout.  A distillation reading a buffer checks the same (an older vlcore's ``--resume`` could
adopt a foreign file) and refuses the buffer with a :class:`~vlcore.errors.DataError`.

Worker processes (``workers > 1``) die with the process that started them (Linux: a parent-death
signal; everywhere: a thread that watches the parent), and check right before each write that it
is still alive: a worker whose parent is gone (``kill -9``) writes nothing.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import distributed
from .config import ranged
from .errors import DataError, IncompatibleError, VLError
from .interrupt import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, shielded, sigterm_as_interrupt
from .io import (RECORD_NAME, FileRecord, atomic_path, fingerprint, fsync_file, open_record, read_json, record_for,
                 sha256_file, versions, write_json)
from .model import DualEncoder, ModelSpec
from .pipeline import PairData, build_model, features_for
from .progress import NULL, Progress
from .train import SGDConfig, train_model

log = logging.getLogger(__name__)

FORMAT = "vlcore.buffer/1"
MODALITIES = ("img", "txt")


#: the paper's expert learning rate, for backbones whose weights train (full, lora)
PAPER_LR = 0.1
#: for a frozen backbone: at 0.1 the heads converge within one epoch and later epochs are SGD
#: noise with nothing to match (benchmarks/RESULTS.md, "Choices made on dev")
FROZEN_LR = 0.01


@dataclass(frozen=True)
class ExpertConfig(SGDConfig):
    """Stage 1: ``num_experts`` SGD runs on the full training split (REFERENCE.md: lr 0.1, no
    momentum or weight decay, batch 128), parameters saved after every epoch."""

    #: experts to train (each from its own seed)
    num_experts: int = ranged(5, 1)
    #: epochs per expert (its parameters are saved after each)
    epochs: int = 10
    #: expert SGD learning rate; none: 0.1 (the paper's) when backbone weights train (full, lora), 0.01
    #: for a frozen backbone, whose heads converge within one epoch at 0.1 so that later epochs are SGD
    #: noise with nothing to match (see benchmarks/RESULTS.md)
    lr: float | None = None
    momentum: float = 0.0
    weight_decay: float = 0.0
    batch_size: int = 128
    #: base seed (expert i uses seed + 1000 i)
    seed: int = 0

    def resolved(self, spec: ModelSpec) -> "ExpertConfig":
        """This config with ``lr`` filled in for ``spec`` (what the buffer records)."""
        from dataclasses import replace

        return self if self.lr is not None else replace(self, lr=default_lr(spec))


def default_lr(spec: ModelSpec) -> float:
    """The expert learning rate when none is given: the paper's 0.1, or 0.01 for a frozen backbone."""
    return FROZEN_LR if spec.frozen else PAPER_LR


def flat(model: DualEncoder, modality: str) -> torch.Tensor:
    ps = list(model.trainable_named(modality).values())
    if not ps:
        return torch.empty(0)
    return torch.cat([p.detach().reshape(-1).float().cpu() for p in ps])


def param_layout(model: DualEncoder) -> dict[str, list[list]]:
    """modality -> [[name, shape], ...] in flattening order."""
    return {m: [[n, list(p.shape)] for n, p in model.trainable_named(m).items()] for m in MODALITIES}


def unflatten(vec: torch.Tensor, layout: list[list]) -> dict[str, torch.Tensor]:
    out, off = {}, 0
    for name, shape in layout:
        n = 1
        for s in shape:
            n *= s
        out[name] = vec[off:off + n].view(*shape)
        off += n
    if off != vec.numel():
        raise IncompatibleError(f"parameter vector has {vec.numel()} values, layout needs {off}")
    return out


def _spec_for_compare(spec: dict) -> dict:
    d = dict(spec)
    d.pop("dropout", None)
    for k in ModelSpec.EXECUTION_FIELDS:  # how the backbone runs, not which experts fit
        d.pop(k, None)
    return d


def train_one_expert(spec: ModelSpec, data: PairData, cfg: ExpertConfig, index: int, path: Path,
                     features: torch.Tensor | None, device: str = "cpu", settings: dict | None = None) -> Path:
    """Train expert ``index`` and write its trajectory file atomically; ``settings``
    (:func:`buffer_settings` of the buffer's index) is recorded in the file's metadata.  In a worker
    process whose parent has gone, raise :class:`ParentGone` instead of writing."""
    from safetensors.torch import save_file

    seed = cfg.seed + 1000 * index
    model = build_model(spec, int(data.text.shape[1]), seed=seed, device=device)
    snaps: dict[str, torch.Tensor] = {}

    def on_epoch(e, m):
        for mod in MODALITIES:
            v = flat(m, mod)
            if v.numel():
                snaps[f"{mod}.{e}"] = v.clone()

    train_model(model, data, cfg.resolved(spec), seed=seed, features=features, device=device, on_epoch=on_epoch)
    # one metadata entry: safetensors keeps metadata in a hash map, whose order (and so the file's
    # bytes) would vary between runs
    info = {"expert": index, "seed": seed, "epochs": cfg.epochs}
    if settings is not None:
        info["settings"] = settings
    with atomic_path(path) as tmp:
        save_file(snaps, str(tmp), metadata={"vlcore": json.dumps(info, sort_keys=True)})
        if _PARENT is not None:
            fsync_file(tmp)  # on disk now: what is left of the write after the check below is a rename
        if not parent_alive():  # checked last, right before the file appears under its name
            raise ParentGone(f"the process that started this worker is gone: {path} is not written")
    return path


# ------------------------------------------------------------------------------ worker processes
#: in a worker process of :func:`train_experts`: the pid of the process that started it (else None)
_PARENT: int | None = None
#: Linux prctl(2) option: the signal a process gets when its parent dies
PR_SET_PDEATHSIG = 1


class ParentGone(BaseException):
    """A worker's parent process is gone (killed): the worker must write nothing and exit."""


def parent_alive() -> bool:
    """False in a worker process whose parent has died (it was re-parented); True elsewhere."""
    return _PARENT is None or os.getppid() == _PARENT


def _set_parent_death_signal(sig: int = signal.SIGTERM) -> bool:
    """Linux: have the kernel send ``sig`` to this process when its parent dies (SIGTERM: the worker's
    handler removes its temporary file, see :func:`_worker`).  False where it cannot be set."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        return libc.prctl(PR_SET_PDEATHSIG, int(sig), 0, 0, 0) == 0
    except (OSError, AttributeError):  # pragma: no cover  (no libc prctl)
        return False


def _watch_parent(parent: int, every: float = 0.25, grace: float = 5.0) -> None:
    """Everywhere (and should the parent-death signal be lost): once the parent is gone, stop this
    worker as SIGTERM would (its temporary file removed), and for good after ``grace`` seconds."""
    while os.getppid() == parent:
        time.sleep(every)
    with contextlib.suppress(OSError):
        os.kill(os.getpid(), signal.SIGTERM)
    time.sleep(grace)
    os._exit(EXIT_TERMINATED)


def _worker_init(parent: int, threads: int, record_folder: str | None = None) -> None:
    """Start of a worker process: die with ``parent`` (the pid of the process that started it)."""
    global _PARENT
    _PARENT = parent
    _set_parent_death_signal()
    if os.getppid() != parent:  # the parent died before the signal was set: it would never come
        os._exit(EXIT_TERMINATED)
    threading.Thread(target=_watch_parent, args=(parent,), name="vl-watch-parent", daemon=True).start()
    torch.set_num_threads(threads)
    if record_folder is not None:
        _join_record(Path(record_folder))


def _join_record(out: Path) -> bool:
    """In a process that writes expert files into a folder another process of this run claimed (a
    worker, a torchrun rank but 0): record those writes in the folder's record of the files vl wrote
    (:class:`vlcore.io.FileRecord`), as the claiming process does.  True if joined."""
    if record_for(out / "index.json") is not None or not (out / RECORD_NAME).is_file():
        return False
    open_record(FileRecord(out))
    return True


def _record_open(out: Path) -> bool:
    """Whether this process records its writes into ``out`` (it claimed the folder)."""
    return record_for(out / "index.json") is not None


def _worker(args):
    spec_d, data, cfg_d, index, path, features, device, settings = args
    try:
        with sigterm_as_interrupt():  # a terminated worker removes its temporary file...
            if not parent_alive():
                raise ParentGone()
            train_one_expert(ModelSpec.from_dict(spec_d), data, ExpertConfig(**cfg_d), index, Path(path), features,
                             device, settings=settings)
    except ParentGone:  # ...a worker whose parent is gone writes nothing and stops...
        os._exit(EXIT_TERMINATED)
    except KeyboardInterrupt as exc:  # ...and stops (the pool would go on with the next queued expert)
        os._exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
    return index


# ------------------------------------------------------------------------------ what an expert file is
EXPERT_NAME = re.compile(r"expert_(\d{3,})\.safetensors")


def buffer_settings(index: dict) -> dict:
    """What every expert file of the buffer ``index`` describes was made with (recorded in each
    file's metadata): model spec, text dim, parameter layout (its fingerprint), expert config but the
    number of experts, and the training data's fingerprint."""
    expert = {k: v for k, v in (index.get("expert") or {}).items() if k != "num_experts"}
    return json.loads(json.dumps({"spec": index.get("spec"), "text_dim": index.get("text_dim"),
                                  "layout": fingerprint(index.get("layout")), "expert": expert,
                                  "data": (index.get("dataset") or {}).get("fingerprint")}, sort_keys=True))


def _settings_diff(have: dict, want: dict) -> list[str]:
    what = {"spec": "model spec", "text_dim": "text dim", "layout": "parameter layout",
            "data": "training data (dataset fingerprint)"}
    diffs = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if a == b:
            continue
        if k == "expert" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{f}: file has {a.get(f)!r}, buffer {b.get(f)!r}" for f in sorted(set(a) | set(b))
                      if a.get(f) != b.get(f)]
        elif k == "spec" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"model {f}: file has {a.get(f)!r}, buffer {b.get(f)!r}" for f in sorted(set(a) | set(b))
                      if a.get(f) != b.get(f)]
        else:
            diffs.append(f"{what.get(k, k)}: file has {a!r}, buffer {b!r}")
    return diffs


def _expected_tensors(index: dict) -> dict[str, list[int]]:
    """The tensors an expert file of the buffer ``index`` describes holds: name -> shape."""
    epochs = int(index["expert"]["epochs"])
    sizes = {m: sum(_numel(shape) for _, shape in index["layout"][m]) for m in MODALITIES}
    return {f"{m}.{e}": [sizes[m]] for m in MODALITIES if sizes[m] for e in range(epochs + 1)}


def _tensors_problem(shapes: dict[str, tuple[list[int], str]], index: dict) -> str | None:
    """Why tensors ``name -> (shape, dtype)`` are not an expert trajectory of buffer ``index``."""
    want = _expected_tensors(index)
    missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
    if missing or extra:
        parts = ([f"lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"] if missing else []) + \
                ([f"has {', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''} besides"] if extra else [])
        return f"its tensors do not fit the buffer ({'; '.join(parts)})"
    for name, (shape, dtype) in sorted(shapes.items()):
        if list(shape) != want[name] or dtype not in ("F32", "float32", "torch.float32"):
            return (f"its tensor {name} is {dtype} of shape {list(shape)}, the buffer's parameter layout needs "
                    f"F32 of shape {want[name]}")
    return None


def expert_problem(path: Path, index: dict) -> str | None:
    """Why the file ``path`` is not an expert of the buffer ``index`` describes (None: it is one):
    unreadable, another expert's (renamed), another seed, other epochs, other settings, tensors that
    do not fit.  Reads the file's header only."""
    from safetensors import safe_open

    m = EXPERT_NAME.fullmatch(path.name)
    if m is None:
        return "its name is not one vl gives an expert file (expert_NNN.safetensors)"
    i = int(m.group(1))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as exc:
        return f"it is not a readable trajectory file (damaged or truncated: {type(exc).__name__}: {exc})"
    try:
        info = json.loads(meta["vlcore"])
        if not isinstance(info, dict):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        return "it records no settings of `vl experts` in its metadata (vl did not write it)"
    expert = index.get("expert") or {}
    problems = []
    if info.get("expert") != i:
        problems.append(f"it holds expert {info.get('expert')!r}'s trajectory, not expert {i}'s (renamed?)")
    if info.get("epochs") != expert.get("epochs"):
        problems.append(f"it holds {info.get('epochs')!r} epochs, the buffer {expert.get('epochs')!r}")
    want_seed = expert.get("seed", 0) + 1000 * i if isinstance(expert.get("seed", 0), int) else None
    if info.get("seed") != want_seed:
        problems.append(f"it was trained from seed {info.get('seed')!r}, expert {i} of this buffer from seed "
                        f"{want_seed!r} (--seed {expert.get('seed')!r} + 1000 x {i})")
    if "settings" in info:  # an older vlcore's file records index, seed and epochs only
        diffs = [d for d in _settings_diff(info["settings"] if isinstance(info["settings"], dict) else {},
                                           buffer_settings(index))
                 if not d.startswith(("seed:", "epochs:"))]  # already said
        if diffs:
            problems.append("it was made with other settings (" + "; ".join(diffs) + ")")
    if not problems:
        t = _tensors_problem(shapes, index)
        if t:
            problems.append(t)
    return "; ".join(problems) or None


def file_record(path: Path) -> dict:
    """What index.json records of an expert file: its sha256 and size."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _retrain(path: Path) -> str:
    return (f"Restore it, or delete it and retrain it: `vl experts --config {path / 'config.toml'} --out {path} "
            f"--resume` trains the experts a buffer lacks.")


class LoadsExperts:
    """For a run's runtime object with ``buffer`` and an ``experts`` dict: the experts' flat
    parameters by ``"{modality}.{epoch}"`` (``img.0``, ``txt.3``), loaded once and cached (at most
    65 experts kept)."""

    def expert(self, e: int) -> dict[str, torch.Tensor]:
        if e not in self.experts:
            if len(self.experts) > 64:
                self.experts.pop(next(iter(self.experts)))
            self.experts[e] = self.buffer.load(e)
        return self.experts[e]


class Buffer:
    """A folder of expert trajectories."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "index.json").exists():
            raise DataError(f"'{self.path}' is not an expert buffer (no index.json). Create one with "
                            f"`vl experts ... --out {self.path}`.")
        self.index = _read_index(self.path / "index.json")
        try:
            self.spec = ModelSpec.from_dict(self.index["spec"])
            self.layout: dict[str, list[list]] = self.index["layout"]
            self.epochs: int = int(self.index["expert"]["epochs"])
            experts = self.index["experts"]
            if not isinstance(experts, dict):
                raise TypeError("experts is not a mapping")
            _expected_tensors(self.index)  # what each expert file must hold: the layout and epochs make sense
        except (KeyError, TypeError, ValueError) as exc:
            legacy = isinstance(exc, KeyError) and exc.args == ("experts",)
            what = ("records no checksums of its expert files (a buffer of an older vlcore)" if legacy
                    else f"is damaged ({type(exc).__name__}: {exc})")
            raise DataError(f"{self.path / 'index.json'} {what}. `vl experts --config {self.path / 'config.toml'} "
                            f"--out {self.path} --resume` checks the expert files and records them.") from None
        #: expert file name -> {"sha256", "bytes"}, as index.json records them
        self.experts: dict[str, dict] = dict(sorted(experts.items()))
        for name, rec in self.experts.items():
            p = self.path / name
            if not p.is_file():
                raise DataError(f"Expert file {p}, listed in {self.path / 'index.json'}, is missing: the buffer was "
                                f"changed. {_retrain(self.path)}")
            if p.stat().st_size != rec.get("bytes"):
                raise DataError(f"Expert file {p} has {p.stat().st_size} bytes but index.json records "
                                f"{rec.get('bytes')}: it was truncated or changed. {_retrain(self.path)}")
        for name in self.experts:  # the headers only: what made each file (its bytes are checked in load())
            problem = expert_problem(self.path / name, self.index)
            if problem:
                raise DataError(f"Expert file {self.path / name}, listed in {self.path / 'index.json'}, is not an "
                                f"expert of this buffer: {problem}. It cannot be used (an older vlcore's --resume "
                                f"could record a file of another buffer). Move it out of {self.path}; "
                                f"`vl experts --config {self.path / 'config.toml'} --out {self.path} --resume` then "
                                f"trains it again.")
        unlisted = sorted(p.name for p in self.path.glob("expert_*.safetensors") if p.name not in self.experts)
        if unlisted:
            log.warning("buffer %s: %s not listed in index.json (an interrupted `vl experts`?) and not used; "
                        "`vl experts ... --resume` records it", self.path, ", ".join(unlisted))

    def content_key(self) -> dict:
        """What the trajectories are, independent of where the folder is (a copied or moved buffer
        has the same key, a changed one another): spec, text dim, parameter layout, expert config
        (but the number of experts), the training data's fingerprint, and the experts' checksums."""
        idx = self.index
        return {"spec": idx["spec"], "text_dim": idx["text_dim"], "layout": fingerprint(idx["layout"]),
                "expert": {k: v for k, v in (idx.get("expert") or {}).items() if k != "num_experts"},
                "data": (idx.get("dataset") or {}).get("fingerprint"),
                "experts": fingerprint({n: r.get("sha256") for n, r in self.experts.items()})}

    def expert_files(self) -> list[Path]:
        return [self.path / n for n in self.experts]

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def load(self, i: int) -> dict[str, torch.Tensor]:
        """Expert ``i``'s snapshots, after checking the file against its checksum in index.json."""
        from safetensors.torch import load

        files = self.expert_files()
        if not files:
            raise DataError(f"Buffer '{self.path}' holds no finished expert yet. Run `vl experts` (it resumes).")
        p = files[i]
        data = p.read_bytes()
        if hashlib.sha256(data).hexdigest() != self.experts[p.name].get("sha256"):
            raise DataError(f"Expert file {p} does not match its checksum in index.json: it was changed or damaged "
                            f"since `vl experts` wrote it. {_retrain(self.path)}")
        try:
            tensors = load(data)
        except Exception as exc:
            raise DataError(f"Expert file {p} is not a readable trajectory file ({type(exc).__name__}: {exc}). "
                            f"{_retrain(self.path)}") from None
        problem = _tensors_problem({k: (list(v.shape), str(v.dtype)) for k, v in tensors.items()}, self.index)
        if problem:
            raise DataError(f"Expert file {p} is not an expert of this buffer: {problem}. {_retrain(self.path)}")
        return tensors

    def params(self, expert: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        """Named parameters of both modalities at ``epoch``."""
        out = {}
        for m in MODALITIES:
            key = f"{m}.{epoch}"
            if key in expert:
                out.update(unflatten(expert[key], self.layout[m]))
        return out

    def check_compatible(self, spec: ModelSpec, text_dim: int, model: DualEncoder | None = None) -> None:
        """Refuse a buffer that does not fit ``spec``: say what differs."""
        want, have = _spec_for_compare(spec.as_dict()), _spec_for_compare(self.index["spec"])
        diffs = [f"{k}: buffer has {have.get(k)!r}, asked for {want.get(k)!r}"
                 for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        if int(self.index["text_dim"]) != int(text_dim):
            diffs.append(f"text dim: buffer has {self.index['text_dim']}, the text encoder gives {text_dim}")
        if model is not None and not diffs:
            lay = param_layout(model)
            if lay != self.layout:
                diffs.append("trainable parameter names/shapes differ from the model built now")
        if diffs:
            raise IncompatibleError(
                f"Expert buffer '{self.path}' does not fit the model asked for:\n  " + "\n  ".join(diffs) +
                "\nDistil with the buffer's settings (omit --encoder/--text-encoder/--image-size to use them), "
                "or train a matching buffer with `vl experts`.")


def train_experts(spec: ModelSpec, data: PairData, cfg: ExpertConfig, out: str | os.PathLike, *,
                  dataset_info: dict, device: str = "cpu", workers: int = 1, progress: Progress = NULL) -> Buffer:
    """Train ``cfg.num_experts`` experts into the buffer ``out``, skipping finished ones."""
    cfg = cfg.resolved(spec)
    cfg.check("experts")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text_dim = int(data.text.shape[1])
    probe = build_model(spec, text_dim, seed=cfg.seed)
    layout = param_layout(probe)
    index = {"format": FORMAT, "spec": spec.as_dict(), "text_dim": text_dim, "layout": layout,
             "num_params": {m: sum(_numel(s) for _, s in layout[m]) for m in MODALITIES},
             "dataset": dataset_info, "expert": asdict(cfg), "versions": versions()}
    idx_path = out / "index.json"
    if distributed.is_main():
        index["experts"] = _check_existing(out, index)  # refused: index.json is left as it was
        write_json(idx_path, index)
    # under torchrun: the other ranks start once rank 0 has checked the folder and written the index
    index = distributed.broadcast(index)
    settings = buffer_settings(index)
    joined = not distributed.is_main() and _join_record(out)  # another rank's files are recorded too
    features = features_for(spec, data, device=device, progress=progress)
    rank, world = distributed.rank(), distributed.world_size()
    mine = [i for i in range(cfg.num_experts) if i % world == rank]  # expert i on rank i mod world size
    todo = [i for i in mine if f"expert_{i:03d}.safetensors" not in index["experts"]]
    shard = f", rank {rank} of {world}" if world > 1 else ""
    task = progress.task(f"experts ({spec.encoder}, {spec.trainable}, {data.num_pairs} pairs{shard})", len(mine),
                         unit="expert", initial=len(mine) - len(todo))

    def done(i: int) -> None:  # record the expert file just written (rank 0: the others' at the end)
        name = f"expert_{i:03d}.safetensors"
        if distributed.is_main():
            index["experts"] = dict(sorted({**index["experts"], name: file_record(out / name)}.items()))
            write_json(idx_path, index)
        task.update(1)

    try:
        if workers <= 1 or len(todo) <= 1:
            for i in todo:
                train_one_expert(spec, data, cfg, i, out / f"expert_{i:03d}.safetensors", features, device,
                                 settings=settings)
                done(i)
        else:
            _train_parallel(spec, data, cfg, out, todo, features, device, workers, done, settings)
    except BaseException:  # Ctrl-C, SIGTERM, an error: no temporary file of ours stays behind...
        rec = FileRecord.read(out)  # only temporary files vl recorded creating: never a file of someone else's
        names = {f"expert_{i:03d}.safetensors" for i in todo}
        for rel in (rec.temps if rec is not None else ()):
            p = out / rel
            if "/" not in rel and rel[1:].rsplit(".", 2)[0] in names and p.is_file() and not p.is_symlink():
                p.unlink(missing_ok=True)
        if distributed.is_main():  # ...and an expert file written just before it is recorded
            with shielded(deliver=False), contextlib.suppress(VLError, OSError):
                index["experts"] = _finished(out, index["experts"], index)
                write_json(idx_path, index)
        raise
    finally:
        task.close()
        if joined:
            from .io import close_record, record_for

            rec = record_for(idx_path)
            if rec is not None:
                close_record(rec)
    if world > 1:
        distributed.barrier()  # every rank's experts are written
        if distributed.is_main():
            index["experts"] = _finished(out, index["experts"], index)
            write_json(idx_path, index)
        distributed.barrier()  # the index lists them all
    return Buffer(out)


def _check_existing(out: Path, index: dict) -> dict[str, dict]:
    """The finished experts of the buffer already in ``out`` (none for a new folder); refuse a
    buffer made with other settings."""
    idx_path = out / "index.json"
    recorded: dict = {}
    if idx_path.exists():
        old = _read_index(idx_path)
        recorded = old.get("experts") if isinstance(old.get("experts"), dict) else {}
        same = (old.get("spec") == index["spec"] and old.get("layout") == index["layout"]
                and old.get("text_dim") == index["text_dim"]
                and {k: v for k, v in old.get("expert", {}).items() if k != "num_experts"}
                == {k: v for k, v in index["expert"].items() if k != "num_experts"}
                and old.get("dataset", {}).get("fingerprint") == (index.get("dataset") or {}).get("fingerprint"))
        if not same:
            raise IncompatibleError(f"'{out}' already holds a buffer made with other settings (model, data or "
                                    f"expert config). Choose another --out or delete it.")
    return _finished(out, recorded, index)


def _train_parallel(spec, data, cfg, out: Path, todo: list[int], features, device, workers: int, done,
                    settings: dict | None = None) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch.multiprocessing  # noqa: F401  (shares tensors with workers)

    threads = max(1, torch.get_num_threads() // workers)
    jobs = [(spec.as_dict(), data, asdict(cfg), i, str(out / f"expert_{i:03d}.safetensors"), features, device,
             settings) for i in todo]
    # each worker dies with this process and writes nothing once it is gone (see _worker_init); it
    # records its files in the folder's record when this process records its own
    record = os.path.abspath(out) if _record_open(out) else None
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn"), initializer=_worker_init,
                             initargs=(os.getpid(), threads, record)) as ex:
        try:
            for fut in as_completed([ex.submit(_worker, j) for j in jobs]):
                done(fut.result())
        except BaseException:
            procs = list((getattr(ex, "_processes", None) or {}).values())  # shutdown() forgets them
            ex.shutdown(wait=False, cancel_futures=True)
            for proc in procs:
                proc.terminate()  # SIGTERM: each worker removes its temporary file and exits (see _worker)
            raise


def _read_index(path: Path) -> dict:
    try:
        index = read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); the buffer's index is damaged. "
                        f"Restore it, or train the buffer again into a new folder with `vl experts`.") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        got = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise DataError(f"{path}: format {got!r}, expected {FORMAT!r}; it is not the index of an expert buffer.")
    return index


def _finished(out: Path, recorded: dict, index: dict) -> dict[str, dict]:
    """The expert files of ``out`` that count as finished: those index.json lists (checked against
    their record) and unlisted ones (written just before an interrupt, or by an older vlcore; each
    written atomically, so complete), each once it proves an expert of the buffer ``index``
    describes (:func:`expert_problem`: readable, this expert's seed, the buffer's epochs and
    settings).  Any other file named like an expert is refused (IncompatibleError, DataError when
    unreadable), naming it; nothing is changed."""
    found = {}
    for p in sorted(out.glob("expert_*.safetensors")):
        rec = file_record(p)
        if p.name in recorded and recorded[p.name] != rec:
            raise DataError(f"Expert file {p} does not match its record in index.json (changed or damaged). Move it "
                            f"out of {out} (this command then trains it again), or pass --overwrite instead of "
                            f"--resume to train the whole buffer again.")
        problem = expert_problem(p, index)
        if problem:
            what = "was recorded in index.json but " if p.name in recorded else ""
            err = DataError if problem.startswith("it is not a readable") else IncompatibleError
            raise err(f"Expert file {p} {what}is not an expert of the buffer in {out}: {problem}. `vl experts "
                      f"--resume` continues a buffer only with expert files made with its own settings, and has "
                      f"changed nothing. Move {p.name} out of {out} (this command then trains "
                      f"{'that expert' if EXPERT_NAME.fullmatch(p.name) else 'the experts it lacks'} itself), or "
                      f"pass --overwrite instead of --resume to train the whole buffer again (or choose another "
                      f"--out).")
        found[p.name] = rec
    return found


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
