"""Stage 1: training the experts of a buffer (:mod:`vlcore.training.buffer`).

Experts are written one file at a time, atomically, and adopted on ``--resume`` only when their
metadata match the buffer's; the rules (checksums, foreign files, older vlcore files) are in
:mod:`vlcore.training.buffer`, which every reader shares.  Experts are independent and can be
trained in parallel worker processes.

Worker processes (``workers > 1``) die with the process that started them (Linux: a parent-death
signal; everywhere: a thread that watches the parent), and check right before each write that it
is still alive: a worker whose parent is gone (``kill -9``) writes nothing.
"""
from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import sys
import threading
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from vlcore.artifacts.interrupt import (
    EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, shielded, sigterm_as_interrupt
)
from vlcore.artifacts.io import (
    RECORD_NAME, FileRecord, atomic_path, close_record, fsync_file, open_record, record_for, versions,
    write_json
)
from vlcore.core.config import ranged
from vlcore.core.errors import DataError, IncompatibleError, VLError
from vlcore.core.progress import NULL, Progress
from vlcore.data.pipeline import PairData, build_model, features_for
from vlcore.model.encoder import ModelSpec
from vlcore.training import distributed
from vlcore.model.params import MODALITIES, ParamLayout
from vlcore.training.buffer import (
    EXPERT_NAME, FORMAT, Buffer, _numel, _read_index, buffer_settings, expert_problem, file_record
)
from vlcore.training.train import SGDConfig, train_model

log = logging.getLogger(__name__)

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
        layout = ParamLayout.of_model(m)
        for mod in MODALITIES:
            v = layout.snapshot(m.trainable_named(), mod)
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
    (:class:`vlcore.artifacts.io.FileRecord`), as the claiming process does.  True if joined."""
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


def train_experts(spec: ModelSpec, data: PairData, cfg: ExpertConfig, out: str | os.PathLike, *,
                  dataset_info: dict, device: str = "cpu", workers: int = 1, progress: Progress = NULL) -> Buffer:
    """Train ``cfg.num_experts`` experts into the buffer ``out``, skipping finished ones."""
    cfg = cfg.resolved(spec)
    cfg.check("experts")
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    text_dim = int(data.text.shape[1])
    probe = build_model(spec, text_dim, seed=cfg.seed)
    layout = ParamLayout.of_model(probe).record()
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


