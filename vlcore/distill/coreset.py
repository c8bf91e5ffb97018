"""Coresets: the selector kind (:class:`Selector`, its typed context :class:`SelectContext`, its
answer :class:`Selection`) and, as artifacts, :func:`run_selector`: a selector's choice turned into a
pair set (the artifact distillation writes too, so ``vl eval`` scores both alike)."""
from __future__ import annotations

import time
from abc import abstractmethod
from dataclasses import asdict, dataclass, field
from typing import Any

import torch

from vlcore.artifacts.io import versions
from vlcore.core.component import Component
from vlcore.core.errors import VLError
from vlcore.core.progress import NULL, Progress
from vlcore.core.registry import PluginHost
from vlcore.data.dataset import to_float
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import PairData
from vlcore.model.encoder import ModelSpec
from vlcore.training.buffer import Buffer


@dataclass
class SelectContext:
    """What a selector gets from ``vl coreset``."""

    train: PairData                 # the real training split
    spec: ModelSpec                 # the buffer's when a buffer is given
    budget: int = 100               # pairs to choose
    seed: int = 0
    buffer: Buffer | None = None
    device: str = "cpu"
    host: PluginHost | None = None
    progress: Progress = NULL
    dataset_info: dict = field(default_factory=dict)


@dataclass
class Selection:
    """Pair indices into ``ctx.train`` in the order chosen, JSON diagnostics (meta["selection"]) and
    a one-line summary of them for the console (e.g. ``mean error 0.012``)."""

    indices: Any                    # torch.LongTensor (budget,)
    info: dict = field(default_factory=dict)
    summary: str = ""


class Selector(Component):
    """Base class: chooses a budget of real pairs (a coreset)."""

    @abstractmethod
    def select(self, ctx: SelectContext) -> Selection:
        """Return ``ctx.budget`` distinct pair indices of ``ctx.train`` (a Selection, tensor or list);
        raise ConfigError for a budget < 1 or larger than the pairs (images with unique_images)."""



def as_selection(result: Any) -> Selection:
    """A third-party selector may return a Selection, a tensor or a sequence of pair indices."""
    if isinstance(result, Selection):
        return result
    return Selection(torch.as_tensor(result, dtype=torch.long).reshape(-1), {})


def run_selector(selector: Selector, ctx: SelectContext) -> PairSet:
    """Run ``selector`` and turn its choice into a pair-set artifact (not yet saved).

    Checks the answer: ``ctx.budget`` distinct pair indices of the training split, one per image
    when the selector's config has ``unique_images`` on.
    """
    t0 = time.time()
    budget, seed = ctx.budget, ctx.seed
    sel = as_selection(selector.select(ctx))
    idx = sel.indices.to(torch.long).cpu()
    train = ctx.train
    name = getattr(selector, "name", type(selector).__name__)
    if idx.numel() != budget:
        raise VLError(f"selector '{name}' returned {idx.numel()} pairs for a budget of {budget}.")
    if idx.numel() and (idx.min() < 0 or idx.max() >= train.num_pairs):
        raise VLError(f"selector '{name}' returned pair indices outside 0..{train.num_pairs - 1}.")
    if idx.unique().numel() != idx.numel():
        raise VLError(f"selector '{name}' returned the same pair twice.")
    cfg = getattr(selector, "config", None)
    if getattr(cfg, "unique_images", False) and train.pair_image[idx].unique().numel() != idx.numel():
        raise VLError(f"selector '{name}' returned two captions of one image although unique_images is on.")
    ps = coreset_pairset(train, idx, method=name, config=cfg, seed=seed, spec=ctx.spec,
                         dataset_info=ctx.dataset_info, selection=sel.info,
                         seconds=round(time.time() - t0, 2), buffer=ctx.buffer)
    ps.meta["summary"] = sel.summary
    return ps


def source_ids(train, idx: torch.Tensor) -> list[tuple[str, int]] | None:
    """(image id, caption index within that image) of each pair ``idx`` of ``train`` (PairData),
    when its split is known: what a coreset selected, or what a distilled set started from."""
    if train.split is None:
        return None
    pairs = train.split.pairs()
    return [(train.split.image_ids[int(pairs[i, 0])], int(pairs[i, 1])) for i in idx.tolist()]


def coreset_pairset(train, idx: torch.Tensor, *, method: str, config=None, seed: int = 0, spec=None,
                    dataset_info: dict | None = None, selection: dict | None = None,
                    seconds: float | None = None, buffer=None) -> PairSet:
    """The pairs ``idx`` of ``train`` as a pair set: real images (float [0, 1], at the split's size),
    their caption embeddings and captions, the source pair ids, and the full record in ``meta``."""
    idx = torch.as_tensor(idx, dtype=torch.long)
    images = to_float(train.images[train.pair_image[idx]]).clone()
    caps = [train.captions[i] for i in idx.tolist()] if train.captions else [f"pair #{i}" for i in idx.tolist()]
    cfg = asdict(config) if config is not None and hasattr(config, "__dataclass_fields__") else (config or {})
    meta = {"kind": "coreset", "method": method, "config": cfg, "budget": int(idx.numel()), "seed": int(seed),
            "spec": spec.as_dict() if spec is not None else None, "dataset": dataset_info or {},
            "pair_indices": idx.tolist(),
            "source_ids_are": "the selected real pairs: (image file, caption index within the image)",
            "selection": selection or {}, "versions": versions()}
    if buffer is not None:
        meta["buffer"] = {"path": str(buffer.path), "index": buffer.index.get("expert"),
                          "experts": buffer.num_experts}
    if seconds is not None:
        meta["seconds"] = seconds
    return PairSet(images=images, text=train.text[idx].detach().float().clone(), captions=caps, meta=meta,
                   source_ids=source_ids(train, idx))

