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
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from . import distributed
from .config import ranged
from .errors import DataError, IncompatibleError
from .interrupt import EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, shielded, sigterm_as_interrupt
from .io import atomic_path, fingerprint, read_json, sha256_file, versions, write_json
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
    return d


def train_one_expert(spec: ModelSpec, data: PairData, cfg: ExpertConfig, index: int, path: Path,
                     features: torch.Tensor | None, device: str = "cpu") -> Path:
    """Train expert ``index`` and write its trajectory file atomically."""
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
    info = json.dumps({"expert": index, "seed": seed, "epochs": cfg.epochs}, sort_keys=True)
    with atomic_path(path) as tmp:
        save_file(snaps, str(tmp), metadata={"vlcore": info})
    return path


def _worker(args):
    spec_d, data, cfg_d, index, path, features, device, threads = args
    torch.set_num_threads(threads)
    try:
        with sigterm_as_interrupt():  # a terminated worker removes its temporary file...
            train_one_expert(ModelSpec.from_dict(spec_d), data, ExpertConfig(**cfg_d), index, Path(path), features,
                             device)
    except KeyboardInterrupt as exc:  # ...and stops (the pool would go on with the next queued expert)
        os._exit(EXIT_TERMINATED if isinstance(exc, Terminated) else EXIT_INTERRUPTED)
    return index


def file_record(path: Path) -> dict:
    """What index.json records of an expert file: its sha256 and size."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _retrain(path: Path) -> str:
    return (f"Restore it, or delete it and retrain it: `vl experts --config {path / 'config.toml'} --out {path} "
            f"--resume` trains the experts a buffer lacks.")


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
            return load(data)
        except Exception as exc:
            raise DataError(f"Expert file {p} is not a readable trajectory file ({type(exc).__name__}: {exc}). "
                            f"{_retrain(self.path)}") from None

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
        index["experts"] = _check_existing(out, index)
        write_json(idx_path, index)
    # under torchrun: the other ranks start once rank 0 has checked the folder and written the index
    index = distributed.broadcast(index)
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
                train_one_expert(spec, data, cfg, i, out / f"expert_{i:03d}.safetensors", features, device)
                done(i)
        else:
            _train_parallel(spec, data, cfg, out, todo, features, device, workers, done)
    except BaseException:  # Ctrl-C, SIGTERM, an error: no temporary file of ours stays behind...
        for i in todo:
            for p in out.glob(f".expert_{i:03d}.safetensors.*.tmp"):
                p.unlink(missing_ok=True)
        if distributed.is_main():  # ...and an expert file written just before it is recorded
            with shielded(deliver=False), contextlib.suppress(DataError, OSError):
                index["experts"] = _finished(out, index["experts"])
                write_json(idx_path, index)
        raise
    finally:
        task.close()
    if world > 1:
        distributed.barrier()  # every rank's experts are written
        if distributed.is_main():
            index["experts"] = _finished(out, index["experts"])
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
    return _finished(out, recorded)


def _train_parallel(spec, data, cfg, out: Path, todo: list[int], features, device, workers: int, done) -> None:
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    import torch.multiprocessing  # noqa: F401  (shares tensors with workers)

    threads = max(1, torch.get_num_threads() // workers)
    jobs = [(spec.as_dict(), data, asdict(cfg), i, str(out / f"expert_{i:03d}.safetensors"), features, device,
             threads) for i in todo]
    with ProcessPoolExecutor(max_workers=workers, mp_context=mp.get_context("spawn")) as ex:
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


def _finished(out: Path, recorded: dict) -> dict[str, dict]:
    """The expert files of ``out`` that count as finished: those index.json lists (checked against
    their record) and unlisted ones (written just before an interrupt, or by an older vlcore; each
    written atomically, so complete) once they read as safetensors."""
    from safetensors import safe_open

    found = {}
    for p in sorted(out.glob("expert_*.safetensors")):
        rec = file_record(p)
        if p.name in recorded and recorded[p.name] != rec:
            raise DataError(f"Expert file {p} does not match its record in index.json (changed or damaged); delete "
                            f"it, and this command trains it again.")
        if p.name not in recorded:
            try:
                with safe_open(str(p), framework="pt"):
                    pass
            except Exception:
                raise DataError(f"Expert file {p} is not readable (damaged); delete it, and this command trains it "
                                f"again.") from None
        found[p.name] = rec
    return found


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
