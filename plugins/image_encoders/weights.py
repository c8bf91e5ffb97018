"""Loading image-encoder weights: the ``pretrained`` option, state-dict files, strict loading and
the Hugging Face cache.  Nothing here unpickles arbitrary objects (``weights_only=True``)."""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from vlcore.core.errors import WeightsError

WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".ckpt")
_KEYWORDS = ("auto", "hub", "none")


# --------------------------------------------------------------------------- weights helpers
def pretrained_mode(value: str) -> str:
    """'auto', 'hub', 'none' or 'path' for a ``pretrained`` option value."""
    v = str(value).strip()
    if v.lower() in _KEYWORDS:
        return v.lower()
    if v.lower() in ("", "false", "random", "no", "0", "true", "yes", "1"):
        raise WeightsError(
            f"pretrained={value!r} is ambiguous: use pretrained=auto (bundled or hub weights), "
            f"pretrained=hub, pretrained=none (random init) or pretrained=/path/to/weights.safetensors.")
    return "path"


def offline_fix(model_name: str, *, what: str = "timm checkpoint") -> str:
    return (f"To fix: run once with internet access so the Hugging Face cache holds them, or download "
            f"the {what} for '{model_name}' (model.safetensors or pytorch_model.bin) and pass "
            f"--pretrained /path/to/file.safetensors (--encoder-option pretrained=/path/to/file.safetensors; "
            f".pth/.bin also work), or pass --pretrained none (--encoder-option pretrained=none) for a random "
            f"initialisation.")


def load_state_dict_file(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """Read a state dict from a .safetensors / .pth / .pt / .bin / .ckpt file.

    Nested checkpoints (``{"state_dict": ...}``, ``{"model": ...}``, EMA variants) are unwrapped and
    a DataParallel ``module.`` prefix is stripped.  Non-tensor entries are dropped.
    """
    p = Path(path).expanduser()
    if not p.is_file():
        raise WeightsError(
            f"Weights file not found: {p}. The pretrained option takes 'auto', 'hub', 'none' or the "
            f"path of an existing {'/'.join(WEIGHT_SUFFIXES)} file.")
    if p.suffix.lower() == ".safetensors":
        from safetensors.torch import load_file
        try:
            obj: Any = load_file(str(p), device="cpu")
        except Exception as exc:
            raise WeightsError(f"Could not read safetensors file {p}: {exc}") from None
    else:
        try:
            obj = torch.load(str(p), map_location="cpu", weights_only=True)
        except Exception as exc:
            raise WeightsError(
                f"Could not read {p} as a PyTorch state dict ({type(exc).__name__}: "
                f"{str(exc).splitlines()[0] if str(exc) else ''}). Only plain tensor checkpoints are "
                f"loaded (no arbitrary pickled objects). If you trust the file, convert it once: "
                f"python -c \"import torch; from safetensors.torch import save_file; "
                f"c = torch.load('{p}', weights_only=False); c = c.get('state_dict', c.get('model', c)); "
                f"save_file({{k: v.contiguous() for k, v in c.items()}}, 'weights.safetensors')\"") from None
    for _ in range(3):
        if not isinstance(obj, dict):
            break
        if obj and all(isinstance(v, torch.Tensor) for v in obj.values()):
            break
        for key in ("state_dict", "model", "state_dict_ema", "model_ema", "module", "net"):
            if isinstance(obj.get(key), dict):
                obj = obj[key]
                break
        else:
            break
    if not isinstance(obj, dict):
        raise WeightsError(f"{p} does not hold a state dict (found {type(obj).__name__}).")
    sd = {str(k): v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if not sd:
        raise WeightsError(f"{p} holds no tensors (top-level keys: {', '.join(map(str, list(obj)[:8]))}).")
    if all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    return sd


def _few(keys, n: int = 6) -> str:
    keys = sorted(keys)
    more = f" (+{len(keys) - n} more)" if len(keys) > n else ""
    return ", ".join(keys[:n]) + more


def load_strict(module: nn.Module, sd: dict[str, torch.Tensor], source: str,
                drop_prefixes: tuple[str, ...] = ()) -> None:
    """Load ``sd`` into ``module``; missing, unexpected or mis-shaped keys raise WeightsError.

    Keys under ``drop_prefixes`` (a classifier the feature extractor does not have) are ignored.
    """
    own = module.state_dict()
    sd = {k: v for k, v in sd.items()
          if not (k not in own and any(k == p or k.startswith(p + ".") for p in drop_prefixes))}
    missing = set(own) - set(sd)
    unexpected = set(sd) - set(own)
    # BatchNorm counters are bookkeeping, not weights
    missing = {k for k in missing if not k.endswith("num_batches_tracked")}
    unexpected = {k for k in unexpected if not k.endswith("num_batches_tracked")}
    problems = []
    if missing:
        problems.append(f"{len(missing)} missing key(s): {_few(missing)}")
    if unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_few(unexpected)}")
    shapes = [f"{k} {tuple(sd[k].shape)} vs model {tuple(own[k].shape)}"
              for k in sorted(set(sd) & set(own)) if sd[k].shape != own[k].shape]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatch(es): {'; '.join(shapes[:4])}")
    if problems:
        raise WeightsError(
            f"The weights in {source} do not fit this encoder: {'; '.join(problems)}. Check that the "
            f"file is a checkpoint of the same architecture (the 'model' option), or pass "
            f"pretrained=none for a random initialisation.")
    sd = {k: v for k, v in sd.items() if k in own}
    module.load_state_dict(sd, strict=False)



def hf_cached_file(hub_id: str, filename: str | None) -> str | None:
    """The path of timm weights already in the Hugging Face cache, or None."""
    try:
        from huggingface_hub import try_to_load_from_cache
    except Exception:  # pragma: no cover
        return None
    repo, _, revision = hub_id.partition("@")
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        try:
            hit = try_to_load_from_cache(repo, name, revision=revision or None)
        except Exception:
            hit = None
        if isinstance(hit, str) and os.path.isfile(hit):
            return hit
    return None

