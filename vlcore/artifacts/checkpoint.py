"""A recipe's run state on disk, in a format that cannot execute code.

One ``checkpoint.safetensors`` file, written atomically: every tensor of the state (learned
tensors, their optimisers' buffers, the run's random generators) as a safetensors tensor, and
everything else (iteration, history, best-on-dev record, run key, optimiser hyper-parameters) as
JSON in the file's metadata.  Nothing is unpickled on load; a file that is not such a checkpoint,
or is torn, is refused with a message.
"""
from __future__ import annotations

import json
from pathlib import Path
import torch

from vlcore.artifacts.io import atomic_path
from vlcore.core.errors import DataError

FORMAT = "vlcore.checkpoint/1"
NAME = "checkpoint.safetensors"


def _optimizer_tensors(name: str, opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict]:
    sd = opt.state_dict()
    tensors, state_keys = {}, {}
    for pid, st in sd["state"].items():
        keys = []
        for k, v in st.items():
            if isinstance(v, torch.Tensor):
                tensors[f"opt.{name}.{pid}.{k}"] = v.detach().cpu().contiguous()
                keys.append(k)
            elif v is not None:
                raise TypeError(f"optimizer '{name}' state {k!r} is not a tensor ({type(v).__name__})")
        state_keys[str(pid)] = keys
    return tensors, {"param_groups": sd["param_groups"], "state": state_keys}


def save_state(state, path: str | Path) -> None:
    """Write ``state`` (a :class:`vlcore.distill.contract.RunState`) to ``path`` atomically."""
    from safetensors.torch import save_file

    tensors: dict[str, torch.Tensor] = {}
    for k, v in state.learned.items():
        tensors[f"learned.{k}"] = v.detach().cpu().contiguous()
    for k, v in state.saved.items():
        tensors[f"saved.{k}"] = v.detach().cpu().contiguous()
    opts = {}
    for name, opt in state.optimizers.items():
        t, meta = _optimizer_tensors(name, opt)
        tensors.update(t)
        opts[name] = meta
    tensors["rng.generator"] = state.generator.get_state()
    tensors["rng.torch"] = torch.get_rng_state()
    meta = {"format": FORMAT, "run_key": state.run_key, "run_record": state.run_record,
            "iteration": state.iteration, "failures": state.failures, "eval_pending": state.eval_pending,
            "history": state.history, "best": state.best, "info": state.info, "optimizers": opts}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"vlcore": json.dumps(meta, sort_keys=True)})


def read_state(path: str | Path) -> tuple[dict, dict[str, torch.Tensor]]:
    """(metadata, tensors) of a checkpoint file; DataError if it is not a readable checkpoint."""
    from safetensors import safe_open

    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as f:
            raw = (f.metadata() or {}).get("vlcore")
            tensors = {k: f.get_tensor(k) for k in f.keys()}
        meta = json.loads(raw) if raw else None
    except Exception as exc:
        raise DataError(f"{path} is not a readable vlcore checkpoint ({type(exc).__name__}: {exc}); it is damaged "
                        f"or was not written by vlcore (nothing in it was run). Start over with --overwrite or another "
                        f"--out.") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise DataError(f"{path} is not a vlcore checkpoint (format {FORMAT}). Start over with --overwrite or "
                        f"another --out.")
    return meta, tensors


#: what each part of a run record is, for the message when a checkpoint belongs to another run
PARTS = {"config": "the distiller's settings", "spec": "the model", "buffer": "the expert buffer",
         "seed": "the seed", "data": "the training data", "method": "the method"}


def load_state(state, path: str | Path):
    """Fill the freshly set-up ``state`` (its learned tensors and optimisers built, which gives the
    names and shapes to expect) from the checkpoint at ``path``."""
    meta, tensors = read_state(path)
    if meta.get("run_key") != state.run_key:
        diffs = differences(meta.get("run_record") or {}, state.run_record) if meta.get("run_record") else []
        parts = sorted({PARTS.get(d.split(".")[0].split(":")[0], d.split(":")[0]) for d in diffs})
        what = (f" ({', '.join(parts)}); what differs: " + "; ".join(diffs[:8]) +
                (f" (and {len(diffs) - 8} more)" if len(diffs) > 8 else "")
                if diffs else " (config, buffer, model, data or seed)")
        raise DataError(f"{path} belongs to a run with other settings{what}. Resume with the same settings and "
                        f"inputs, or start over with --overwrite or another --out.")
    try:
        _fill(state, meta, tensors, path)
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        raise DataError(f"{path} does not hold the state of this run ({type(exc).__name__}: {exc}); it is damaged or "
                        f"from another version. Start over with --overwrite or another --out.") from None
    return state


def _fill(state, meta: dict, tensors: dict[str, torch.Tensor], path) -> None:
    with torch.no_grad():
        for k, v in state.learned.items():
            saved = tensors.get(f"learned.{k}")
            if saved is None or saved.shape != v.shape:
                raise DataError(f"{path} holds no tensor '{k}' of shape {tuple(v.shape)}; it is from another run.")
            v.copy_(saved)
    state.saved = {k[len("saved."):]: v for k, v in tensors.items() if k.startswith("saved.")}
    for name, opt in state.optimizers.items():
        om = meta["optimizers"].get(name)
        if om is None:
            raise DataError(f"{path} holds no state of optimiser '{name}'; it is from another run.")
        st = {int(pid): {k: tensors[f"opt.{name}.{pid}.{k}"] for k in keys} for pid, keys in om["state"].items()}
        opt.load_state_dict({"state": st, "param_groups": om["param_groups"]})
    state.generator.set_state(tensors["rng.generator"])
    torch.set_rng_state(tensors["rng.torch"])
    state.iteration, state.failures = int(meta["iteration"]), int(meta["failures"])
    state.eval_pending = bool(meta.get("eval_pending", False))
    state.history, state.best, state.info = meta["history"], meta["best"], meta["info"]

def peek(path: str | Path) -> dict | None:
    """The JSON part of the checkpoint at ``path`` (no tensors read), or None when it is unreadable."""
    from safetensors import safe_open

    try:
        with safe_open(str(path), framework="pt") as f:
            meta = json.loads((f.metadata() or {}).get("vlcore") or "null")
    except Exception:
        return None
    return meta if isinstance(meta, dict) and meta.get("format") == FORMAT else None


def differences(old: dict, new: dict, prefix: str = "") -> list[str]:
    """``key: checkpoint X, now Y`` for every leaf that differs between two run records."""
    out = []
    for k in sorted(set(old) | set(new), key=str):
        a, b, name = old.get(k), new.get(k), f"{prefix}{k}"
        if isinstance(a, dict) and isinstance(b, dict):
            out += differences(a, b, name + ".")
        elif a != b:
            out.append(f"{name}: checkpoint {_short(a)}, now {_short(b)}")
    return out


def _short(v) -> str:
    text = json.dumps(v, default=str)
    return text if len(text) <= 60 else text[:57] + "..."
