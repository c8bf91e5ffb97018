"""The contract of unroll backends: :func:`check_unroll_backend`."""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from vlcore.core.errors import VLError

from ..data import TINY_SPEC
from ..host import contract_host, use_host
from ._common import _begin, _close, _finite, _require, _step
from vlcore.data.pipeline import build_model
from vlcore.distill.unroll import FuncBackend, Unroll, contrastive_step_loss
from vlcore.model.params import ParamLayout

def check_unroll_backend(cls: type, options: dict | None = None, *, host=None, rtol: float | None = 1e-3) -> Any:
    """An unroll backend, ``prepare(model) -> forward(params, **inputs)`` and
    ``run(unroll, wrt) -> UnrollResult``:

    * ``forward(params, images=..., text=...)`` with the model's own parameters equals the model's
      output, and with other parameters gives other outputs (they are substituted, not ignored);
      the frozen-backbone path ``forward(params, features=..., text=...)`` works too;
    * ``run`` of a three-step unroll gives the loss of the ``func`` reference (the whole graph) and
      finite gradients reaching the pixels (or features), the text embeddings and both step sizes,
      equal to the reference's within ``rtol`` when the backend declares itself ``exact`` (an
      approximate one, such as ``tesla``, is held to finite, non-zero gradients only);
    * the RNG state after ``run`` is the reference's (later draws are unaffected by the backend);
    * a LoRA (peft) model either works the same way or is refused with a :class:`VLError`.

    Returns the built backend.
    """
    label, cfg = _begin(cls, "unroll_backend", options)
    backend = cls(cfg)
    if not getattr(cls, "exact", True):
        rtol = None
    host = contract_host(host)
    text_dim = 32
    g = torch.Generator().manual_seed(0)
    x = torch.rand(4, 3, TINY_SPEC.image_size, TINY_SPEC.image_size, generator=g)
    t = torch.randn(4, text_dim, generator=g)

    def run(b, trainable: str):
        spec = dataclasses.replace(TINY_SPEC, trainable=trainable)
        model = build_model(spec, text_dim, seed=0, host=host).eval()
        named = {n: p.detach().clone() for n, p in model.trainable_named().items()}
        layout = ParamLayout.of(named, {n: model.modality_of(n) for n in named})
        xi, ti = x.clone().requires_grad_(True), t.clone().requires_grad_(True)
        lr = {"img": torch.tensor(0.05, requires_grad=True), "txt": torch.tensor(0.05, requires_grad=True)}
        inputs = {"features": model.image_features(xi)} if model.frozen else {"images": xi}
        forward = b.prepare(model)
        out = forward(named, **inputs, text=ti)
        ref = model(**inputs, text=ti)
        shifted = forward({n: v + 0.5 for n, v in named.items()}, **inputs, text=ti)
        forward = b.prepare(model.train())  # the unroll runs in train mode (dropout), as distillation does
        start = layout.flatten(named)
        target = start + 0.01 * torch.randn(start.shape, generator=torch.Generator().manual_seed(1))
        batches = [torch.arange(4), torch.tensor([0, 2, 1, 3]), torch.tensor([3, 1, 2, 0])]
        u = Unroll(layout, start, target, lr, 3, contrastive_step_loss(forward, text=ti, batches=batches, **inputs))
        wrt = [next(iter(inputs.values())), ti, lr["img"], lr["txt"]]
        torch.manual_seed(7)
        result = b.run(u, wrt)
        after = torch.rand(1)
        grads = list(result.grads)
        if model.frozen:  # back to the pixels through the frozen backbone
            (grads[0],) = torch.autograd.grad(wrt[0], xi, grad_outputs=grads[0])
        return out, ref, shifted, result, grads, after

    with use_host(host):
        for trainable in ("full", "frozen"):
            with _step(label, f"unrolling a tiny {trainable} model"):
                out, ref, shifted, res, grads, after = run(backend, trainable)
                _, _, _, ref_res, ref_grads, ref_after = run(FuncBackend(), trainable)
            _require(isinstance(out, tuple) and len(out) == 2, label,
                     "forward(params, **inputs) must return (image embeddings, text embeddings)")
            _require(_close(out[0], ref[0]) and _close(out[1], ref[1]), label,
                     f"{trainable} model: forward with the model's own parameters differs from the model")
            _require(not _close(shifted[0], out[0], rtol=0, atol=1e-6), label,
                     f"{trainable} model: forward ignores the parameters it is given")
            _require(math.isfinite(res.loss) and abs(res.loss - ref_res.loss) <= 1e-4 * max(1.0, abs(ref_res.loss)),
                     label, f"{trainable} model: the trajectory loss differs from the func reference "
                            f"({res.loss:.6g} vs {ref_res.loss:.6g})")
            _require(torch.equal(after, ref_after), label,
                     f"{trainable} model: the RNG state after run() differs from the reference's")
            for what, gr, rg in zip(("pixels", "text embeddings", "image step size", "text step size"),
                                    grads, ref_grads):
                _require(gr is not None and _finite(gr) and gr.abs().sum() > 0, label,
                         f"{trainable} model: no gradient reaches the {what} through the unroll")
                if rtol is not None:
                    _require(_close(gr, rg, rtol=rtol, atol=1e-6), label,
                             f"{trainable} model: the gradient of the {what} differs from the func reference")
        try:
            out, ref, *_ = run(backend, "lora")
        except VLError:
            pass  # refusing a peft model with a clear message is allowed
        else:
            _require(_close(out[0], ref[0]) and _close(out[1], ref[1]), label,
                     "lora model: forward with the model's own parameters differs from the model")
    return backend


