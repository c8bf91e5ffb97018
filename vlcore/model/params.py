"""The flat-parameter layout: a model's trainable parameters as one vector, one contiguous block per
modality (image side first).  The expert buffers store each modality's block per epoch
(:mod:`vlcore.training.buffer`, ``index.json`` ``layout``: :meth:`ParamLayout.record`), and the
unrolled student steps the whole vector (:mod:`vlcore.distill.unroll`): one layout for both."""
from __future__ import annotations

import torch

from vlcore.core.errors import IncompatibleError
from vlcore.model.encoder import DualEncoder

MODALITIES = ("img", "txt")


class ParamLayout:
    """Named parameter tensors laid out in one flat vector, one contiguous block per modality
    (image side first)."""

    def __init__(self, shapes: dict[str, torch.Size], modality: dict[str, str]):
        order = [n for m in MODALITIES for n in shapes if modality[n] == m]
        if len(order) != len(shapes):
            unknown = sorted({modality[n] for n in shapes} - set(MODALITIES))
            raise ValueError(f"unknown modalities {unknown}; expected {MODALITIES}")
        self.names = order
        self.shapes = [torch.Size(shapes[n]) for n in order]
        self.sizes = [s.numel() for s in self.shapes]
        self.modality = {n: modality[n] for n in order}
        self.blocks: dict[str, slice] = {}
        pos = 0
        for m in MODALITIES:
            n = sum(sz for name, sz in zip(order, self.sizes) if modality[name] == m)
            if n:
                self.blocks[m] = slice(pos, pos + n)
            pos += n
        self.numel = pos

    @classmethod
    def of(cls, params: dict[str, torch.Tensor], modality: dict[str, str]) -> "ParamLayout":
        return cls({n: p.shape for n, p in params.items()}, modality)

    def flatten(self, params: dict[str, torch.Tensor]) -> torch.Tensor:
        return torch.cat([params[n].reshape(-1) for n in self.names])

    def unflatten(self, flat: torch.Tensor) -> dict[str, torch.Tensor]:
        """Views of ``flat`` by name (differentiable: gradients flow back to ``flat``)."""
        return {n: t.view(s) for n, t, s in zip(self.names, torch.split(flat, self.sizes), self.shapes)}

    def lr_vector(self, lr: dict[str, torch.Tensor]) -> torch.Tensor:
        """Each parameter's step size, as one vector (differentiable in ``lr``)."""
        return torch.cat([lr[m].reshape(1).expand(b.stop - b.start) for m, b in self.blocks.items()])

    @classmethod
    def of_model(cls, model: DualEncoder) -> "ParamLayout":
        """The layout of ``model``'s trainable parameters."""
        named = model.trainable_named()
        return cls.of(named, {n: model.modality_of(n) for n in named})

    def record(self) -> dict[str, list[list]]:
        """modality -> ``[[name, shape], ...]`` in flattening order, every modality present (JSON: a
        buffer's ``index.json`` ``layout``)."""
        return {m: [[n, list(s)] for n, s in zip(self.names, self.shapes) if self.modality[n] == m]
                for m in MODALITIES}

    @classmethod
    def from_record(cls, record: dict[str, list[list]]) -> "ParamLayout":
        """The layout a :meth:`record` describes."""
        entries = [(m, n, s) for m in MODALITIES for n, s in record.get(m, [])]
        return cls({n: torch.Size(s) for _, n, s in entries}, {n: m for m, n, _ in entries})

    def snapshot(self, params: dict[str, torch.Tensor], modality: str) -> torch.Tensor:
        """One modality's block of ``params`` as a detached float32 CPU vector (empty without any)."""
        ps = [params[n] for n in self.names if self.modality[n] == modality]
        if not ps:
            return torch.empty(0)
        return torch.cat([p.detach().reshape(-1).float().cpu() for p in ps])

    def unflatten_block(self, vec: torch.Tensor, modality: str) -> dict[str, torch.Tensor]:
        """Views of one modality's block ``vec`` by name; IncompatibleError when its size is not the block's."""
        names = [n for n in self.names if self.modality[n] == modality]
        sizes = [sz for n, sz in zip(self.names, self.sizes) if self.modality[n] == modality]
        if sum(sizes) != vec.numel():
            raise IncompatibleError(f"parameter vector has {vec.numel()} values, layout needs {sum(sizes)}")
        return {n: t.view(self.shapes[self.names.index(n)]) for n, t in zip(names, torch.split(vec, sizes))}
