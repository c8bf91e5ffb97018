"""PTM-ST's shortcut trajectories (REFERENCE.md, "2026 methods", PTM-ST), in one place.

An expert's path through parameter space between its epoch-0 weights and its weights after epoch
``K`` is replaced, layer by layer, by the chord between the two, walked at the pace the expert
walked its own path::

    theta_l(t) = (1 - b_l(t)) theta_l(0) + b_l(t) theta_l(K)
    b_l(t)     = P_l(t) / P_l(K),   P_l(t) = sum_{s=1..t} || theta_l(s) - theta_l(s-1) ||_2

``b_l`` is the layer's cumulative path length (arc length) up to epoch ``t`` over its total, so it
rises monotonically from 0 to 1.  The choices made here (REFERENCE.md leaves them open):

* **A layer** is one entry of the buffer's parameter layout: one named parameter tensor
  (``text_head.proj.weight`` and ``text_head.proj.bias`` are two layers), as a state dict names
  them.
* **A layer that never moved** (total path length 0): ``b_l(t) = t / K``.  Its parameters are the
  same at every epoch then, so the timing changes nothing in the result (its parameters are copied
  from epoch 0 bit for bit); ``t / K`` keeps ``b`` monotonic, in [0, 1] and defined everywhere.
* **Arithmetic**: float64 (numpy: single-threaded, fixed summation order, so the derived files are
  byte-identical however many threads run), rounded to float32 once.  The endpoints are copied
  from the expert bit for bit (``theta(0)`` and ``theta(K)`` are the expert's own tensors, a
  ``-0.0`` included).

:func:`derive_shortcut_buffer` turns a whole buffer (epochs 0..T) into a new buffer folder of the
format :class:`vlcore.training.buffer.Buffer` reads (epochs 0..K, K <= T): one ``expert_NNN``
file per source expert (same name, seed and settings, the shortcut recorded in its metadata) and
its own ``index.json`` with the files' checksums and a ``shortcut`` record of the source (its
path, content fingerprint, the checksums of its expert files, K).  Its ``expert`` settings carry
``shortcut: K``, so the derived buffer's content key, and every distillation's run key made from
it, differ from the source's, and ``vl experts --resume`` (training) refuses to adopt its files.
``vl experts --shortcut K --from BUFFER --out NEW`` runs it (see ``cli/experts.py``).
"""
from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import numpy as np
import torch

from vlcore.artifacts.io import atomic_path, fingerprint, read_json, versions, write_json
from vlcore.core.errors import ConfigError, DataError, IncompatibleError
from vlcore.core.progress import NULL, Progress
from vlcore.model.params import MODALITIES
from vlcore.training.buffer import FORMAT, Buffer, buffer_settings, file_record

log = logging.getLogger(__name__)

#: what the ``shortcut`` record of a derived buffer's index.json says the rule is
RULE = ("per layer (each named parameter tensor of the layout): theta(t) = (1 - b(t)) theta(0) + b(t) theta(K), "
        "b(t) = cumulative L2 path length up to t / total path length (t / K for a layer that never moved); "
        "float64, rounded to float32; endpoints copied")


# ------------------------------------------------------------------------------ the maths
def layer_slices(layout: list[list]) -> list[tuple[str, slice]]:
    """``[[name, shape], ...]`` (one modality's layout, in flattening order) -> ``[(name, slice of
    the flat vector), ...]``."""
    out, off = [], 0
    for name, shape in layout:
        n = int(np.prod(shape, dtype=np.int64)) if len(shape) else 1
        out.append((str(name), slice(off, off + n)))
        off += n
    return out


def _as_array(snapshots) -> np.ndarray:
    if isinstance(snapshots, torch.Tensor):
        return snapshots.detach().cpu().double().numpy()
    return np.asarray(snapshots, dtype=np.float64)


def _timing(x: np.ndarray, slices: list[tuple[str, slice]]) -> tuple[np.ndarray, np.ndarray]:
    """(b, total): ``b`` (L, K+1) as :func:`arc_length_timing` returns it, ``total`` (L,) each
    layer's path length."""
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"snapshots must be (K+1, P) with K >= 1, got shape {tuple(x.shape)}")
    k = x.shape[0] - 1
    b = np.empty((len(slices), k + 1), dtype=np.float64)
    totals = np.empty(len(slices), dtype=np.float64)
    uniform = np.arange(k + 1, dtype=np.float64) / k
    for li, (name, s) in enumerate(slices):
        d = np.diff(x[:, s], axis=0)  # (K, n): the step of each epoch
        steps = np.sqrt(np.sum(d * d, axis=1))  # numpy's pairwise sum: one fixed order, any thread count
        cum = np.concatenate([[0.0], np.cumsum(steps)])
        total = cum[-1]
        if not np.isfinite(total):
            raise DataError(f"layer {name}: its parameters are not finite, so neither is its path length")
        totals[li] = total
        if total > 0:
            b[li] = np.minimum(cum / total, 1.0)
            b[li, -1] = 1.0
        else:
            b[li] = uniform
    return b, totals


def arc_length_timing(snapshots, slices: list[tuple[str, slice]]) -> np.ndarray:
    """``b_l(t)`` for every layer and epoch: a float64 array (L, K+1), from ``snapshots`` (K+1, P),
    the flat parameters at epochs 0..K (tensor or array), and the layers' ``slices``
    (:func:`layer_slices`).  Row ``l`` rises monotonically from ``b_l(0) = 0`` to ``b_l(K) = 1``;
    it is ``t / K`` for a layer whose path length is 0."""
    return _timing(_as_array(snapshots), slices)[0]


def shortcut_snapshots(snapshots, layout: list[list]) -> torch.Tensor:
    """The shortcut of one modality's trajectory: ``snapshots`` (K+1, P) at epochs 0..K (a tensor or
    array) -> float32 (K+1, P), each layer of ``layout`` on its chord, re-timed by arc length; rows
    0 and K are the input's bit for bit, and so is every row of a layer that never moved.  See the
    module docstring for the rule and its choices."""
    src = snapshots.detach().cpu().float() if isinstance(snapshots, torch.Tensor) else \
        torch.from_numpy(np.asarray(snapshots, dtype=np.float32))
    slices = layer_slices(layout)
    width = slices[-1][1].stop if slices else 0
    if src.ndim != 2 or src.shape[1] != width:
        raise IncompatibleError(f"snapshots of shape {tuple(src.shape)} do not fit the layout ({width} values each)")
    x = src.double().numpy()
    b, totals = _timing(x, slices)
    out = np.empty_like(x)
    for li, (_, s) in enumerate(slices):
        bl = b[li][:, None]
        out[:, s] = (1.0 - bl) * x[0, s] + bl * x[-1, s]
    res = torch.from_numpy(out.astype(np.float32))
    res[0], res[-1] = src[0], src[-1]
    for li, (_, s) in enumerate(slices):
        if totals[li] == 0:  # never moved: epoch 0's bits at every epoch
            res[:, s] = src[0, s]
    return res


def shortcut_expert(expert: dict[str, torch.Tensor], layout: dict[str, list[list]], k: int) -> dict[str, torch.Tensor]:
    """An expert's trajectory (``{"img.t": vector, "txt.t": vector}``, as
    :meth:`vlcore.training.buffer.Buffer.load` returns it) -> its shortcut over epochs 0..``k``, in the
    same form (epochs 0..k only).  Needs ``k >= 1`` and the expert's snapshots 0..k."""
    if k < 1:
        raise ConfigError(f"a shortcut needs K >= 1 (epochs 0..K), got {k}")
    out = {}
    for m in MODALITIES:
        keys = [f"{m}.{t}" for t in range(k + 1)]
        if not any(key in expert for key in keys):
            continue  # this modality trains nothing (no parameters)
        missing = [key for key in keys if key not in expert]
        if missing:
            raise DataError(f"the expert has no snapshot {missing[0]} (a shortcut over epochs 0..{k} needs them "
                            f"all)")
        path = shortcut_snapshots(torch.stack([expert[key] for key in keys]), layout[m])
        out.update({key: path[t].clone() for t, key in enumerate(keys)})
    return out


# ------------------------------------------------------------------------------ a derived buffer
def source_record(source: Buffer, k: int) -> dict:
    """What a derived buffer's index.json records of its source (and what ``--resume`` compares)."""
    return {"of": str(Path(source.path).resolve()), "k": int(k), "source_epochs": int(source.epochs),
            "source_content": fingerprint(source.content_key()), "source_experts": dict(source.experts),
            "rule": RULE}


def shortcut_index(source: Buffer, k: int) -> dict:
    """The index.json of the shortcut over epochs 0..``k`` of ``source`` (no experts listed yet)."""
    idx = source.index
    expert = {**idx["expert"], "epochs": int(k), "shortcut": int(k)}
    keep = {key: v for key, v in idx.items() if key not in ("experts", "expert", "shortcut", "versions", "format")}
    return {"format": FORMAT, **keep, "expert": expert, "shortcut": source_record(source, k),
            "versions": versions(), "experts": {}}


def _expert_bytes(source: Buffer, i: int, name: str, k: int, settings: dict, record: dict) -> bytes:
    """The bytes of the derived buffer's file ``name`` (from source expert ``i``): deterministic."""
    from safetensors import safe_open
    from safetensors.torch import save

    with safe_open(str(source.path / name), framework="pt") as f:
        info = json.loads((f.metadata() or {})["vlcore"])
    tensors = shortcut_expert(source.load(i), source.layout, k)
    meta = {"expert": info["expert"], "seed": info["seed"], "epochs": int(k), "settings": settings,
            "shortcut": _file_shortcut(source, name, k, record)}
    return save({key: tensors[key].contiguous() for key in sorted(tensors)},
                metadata={"vlcore": json.dumps(meta, sort_keys=True)})


def _file_shortcut(source: Buffer, name: str, k: int, record: dict) -> dict:
    """What a derived expert file records of its source in its metadata."""
    return {"k": int(k), "source_sha256": source.experts[name]["sha256"], "source_content": record["source_content"]}


def _foreign(path: Path, want: dict) -> bool:
    """Whether the file ``path`` is not (by its header) the derived file whose metadata records the
    shortcut ``want``: refused before anything is written."""
    from safetensors import safe_open

    if path.is_symlink() or not path.is_file():
        return True
    try:
        with safe_open(str(path), framework="pt") as f:
            info = json.loads((f.metadata() or {})["vlcore"])
        return not isinstance(info, dict) or info.get("shortcut") != want
    except Exception:
        return True


def derive_shortcut_buffer(source: Buffer | str | os.PathLike, out: str | os.PathLike, k: int, *,
                           progress: Progress = NULL) -> Buffer:
    """Write the shortcut over epochs 0..``k`` of every expert of ``source`` into the buffer folder
    ``out`` and return it as a :class:`~vlcore.training.buffer.Buffer`.

    One expert at a time (memory: one expert's trajectory), each file written atomically and then
    listed in index.json with its checksum.  Resumable: ``out`` may hold what an interrupted
    derivation of the same source and ``k`` left (its index.json and some expert files); each file
    already there is kept when its bytes are the ones this derivation writes (it is deterministic),
    and the others are derived.  An index.json of another buffer, or a file under an expert's name
    that is not this derivation's, is refused before anything is written; replacing them is the
    output folder's business (``vl experts --overwrite``).  Call it inside a claimed output folder
    (:class:`vlcore.artifacts.outdir.OutputFolder`) so that every write is recorded."""
    source = source if isinstance(source, Buffer) else Buffer(source)
    out = Path(out)
    if not 1 <= int(k) <= source.epochs:
        raise ConfigError(f"--shortcut {k}: buffer '{source.path}' holds epochs 0..{source.epochs}, so K must be "
                          f"between 1 and {source.epochs}.")
    if source.num_experts == 0:
        raise DataError(f"Buffer '{source.path}' holds no finished expert yet. Run `vl experts` (it resumes).")
    k = int(k)
    index = shortcut_index(source, k)
    record = index["shortcut"]
    settings = buffer_settings(index)
    idx_path = out / "index.json"
    if idx_path.exists():
        try:
            old = read_json(idx_path)
        except (OSError, ValueError):
            old = None
        rec = old.get("shortcut") if isinstance(old, dict) else None
        if not isinstance(rec, dict) or rec.get("source_content") != record["source_content"] or rec.get("k") != k:
            what = ("the shortcut of another buffer or over other epochs" if isinstance(rec, dict)
                    else "a buffer that is not a shortcut" if isinstance(old, dict) else "an unreadable index.json")
            raise IncompatibleError(f"'{out}' holds {what}, not the shortcut over epochs 0..{k} of '{source.path}'. "
                                    f"Nothing was changed. Choose another --out, or pass --overwrite to replace it.")
    for name in source.experts:
        p = out / name
        if os.path.lexists(p) and _foreign(p, _file_shortcut(source, name, k, record)):
            raise IncompatibleError(f"{p} is not the shortcut of {source.path / name} over epochs 0..{k} (another file "
                                    f"under its name). Nothing was changed. Move it out of {out}, or pass --overwrite "
                                    f"to derive the whole buffer again.")
    out.mkdir(parents=True, exist_ok=True)
    write_json(idx_path, index)
    with progress.task(f"shortcut over epochs 0..{k} of {source.path}", source.num_experts, unit="expert") as task:
        for i, name in enumerate(source.experts):
            data = _expert_bytes(source, i, name, k, settings, record)
            p = out / name
            if p.exists():  # left by an interrupted derivation: kept when it is this one's, byte for byte
                if p.read_bytes() != data:
                    raise DataError(f"{p} records the shortcut of {source.path / name} but its bytes differ from "
                                    f"what this derivation writes (damaged?). Move it out of {out} (this command "
                                    f"then derives it again), or pass --overwrite.")
            else:
                with atomic_path(p) as tmp:
                    tmp.write_bytes(data)
            index["experts"] = dict(sorted({**index["experts"], name: file_record(p)}.items()))
            write_json(idx_path, index)
            task.update(1)
    return Buffer(out)


def is_shortcut(buffer: Buffer) -> bool:
    """Whether ``buffer`` was derived by :func:`derive_shortcut_buffer`."""
    return isinstance(buffer.index.get("shortcut"), dict)
