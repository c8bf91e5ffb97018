"""Runs across processes, GPUs and machines on ``torch.distributed`` (launched by ``torchrun``).

``torchrun --nproc-per-node N vl experts ...`` and ``torchrun ... vl distill ...``: torchrun sets
``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR`` and ``MASTER_PORT`` for every process;
:func:`init` joins the process group (``gloo`` on the CPU, ``nccl`` with ``--device cuda``, each
rank on ``cuda:LOCAL_RANK``).  Without those variables (or with ``WORLD_SIZE=1``) everything here
is a no-op for one process, so the same code path serves both.

What each command does with the ranks:

- ``vl experts``: expert ``i`` is trained by rank ``i mod WORLD_SIZE`` and written atomically into
  the shared buffer folder; rank 0 claims (checks, locks) the folder, writes ``index.json`` before
  and after, and the buffer equals a one-process run with the same seed.
- ``vl distill``: every rank unrolls its own trajectories of each outer iteration (the plans of all
  ranks are drawn from the run's one seeded generator, and rank ``r`` takes the ``r``-th share), the
  gradients of the learned tensors are averaged with ``all_reduce`` and every rank applies the same
  update; rank 0 alone writes checkpoints, evaluations, logs and the pair set.

A failing rank fails the run: torchrun stops the other ranks when one exits with an error, and a
collective that waits longer than ``VL_DIST_TIMEOUT`` seconds (default 1800) raises instead of
hanging.
"""
from __future__ import annotations

import datetime
import os

import torch

from vlcore.core.errors import ConfigError, VLError


def launched() -> bool:
    """Whether this process was started as one of several ranks (``WORLD_SIZE`` > 1)."""
    try:
        return int(os.environ.get("WORLD_SIZE", "1")) > 1
    except ValueError:
        raise ConfigError(f"WORLD_SIZE={os.environ['WORLD_SIZE']!r} is not a number; launch with torchrun, "
                          "which sets it.") from None


def active() -> bool:
    """Whether a process group of more than one rank is running."""
    import torch.distributed as dist

    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    import torch.distributed as dist

    return dist.get_rank() if active() else 0


def world_size() -> int:
    import torch.distributed as dist

    return dist.get_world_size() if active() else 1


def is_main() -> bool:
    """Rank 0 (or the only process): the one that writes files and prints."""
    return rank() == 0


def init(device: str = "cpu") -> str:
    """Join the process group when launched by torchrun; return the device of this rank."""
    if not launched():
        return device
    import torch.distributed as dist

    if not dist.is_available():  # pragma: no cover (every PyPI build has it)
        raise ConfigError("This PyTorch build has no torch.distributed; run in one process (without torchrun).")
    missing = [v for v in ("RANK", "MASTER_ADDR", "MASTER_PORT") if v not in os.environ]
    if missing:
        raise ConfigError(f"WORLD_SIZE is set but {', '.join(missing)} are not: launch with torchrun "
                          f"(`torchrun --nproc-per-node N vl ...`), which sets all of them.")
    cuda = device.startswith("cuda")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        if local >= torch.cuda.device_count():
            raise ConfigError(f"LOCAL_RANK {local} but this machine has {torch.cuda.device_count()} GPUs: launch at "
                              f"most that many processes per node (--nproc-per-node).")
        device = f"cuda:{local}"
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        timeout = datetime.timedelta(seconds=float(os.environ.get("VL_DIST_TIMEOUT", "1800")))
        dist.init_process_group("nccl" if cuda else "gloo", timeout=timeout)
    return device


def peer_stopped() -> str:
    """What a rank says when it stops because another rank of its run failed or was stopped: when a
    collective sees the peer's connection close, or when torchrun stops it first (SIGTERM)."""
    return (f"rank {rank()} of {world_size()} stops: another rank of this run failed or was stopped "
            f"(its own error is printed above; torchrun reports which rank).")


def _collective(call, *args, **kw):
    """Run a collective; a peer that died (its error is printed by that rank, and torchrun stops the
    run) ends this rank with a one-line error instead of a backend traceback."""
    try:
        return call(*args, **kw)
    except RuntimeError as exc:  # gloo: "Connection closed by peer"; nccl: DistBackendError (a RuntimeError)
        raise VLError(f"{peer_stopped()} [{str(exc).splitlines()[0][:200]}]") from None


def barrier() -> None:
    if active():
        import torch.distributed as dist

        _collective(dist.barrier)


def broadcast(obj=None):
    """Rank 0's ``obj`` on every rank (a picklable object; the other ranks' ``obj`` is ignored).
    Also a barrier: no rank passes it before rank 0 reaches it."""
    if not active():
        return obj
    import torch.distributed as dist

    box = [obj if is_main() else None]
    _collective(dist.broadcast_object_list, box, src=0)
    return box[0]


def mean(tensors: list[torch.Tensor]) -> list[torch.Tensor]:
    """The element-wise mean over the ranks of each tensor (one ``all_reduce`` of their
    concatenation); the tensors themselves on one process."""
    if not active() or not tensors:
        return tensors
    import torch.distributed as dist

    flat = torch.cat([t.detach().reshape(-1).to(tensors[0].dtype) for t in tensors])
    _collective(dist.all_reduce, flat)
    flat /= world_size()
    out, pos = [], 0
    for t in tensors:
        out.append(flat[pos:pos + t.numel()].view_as(t).to(t.dtype))
        pos += t.numel()
    return out
