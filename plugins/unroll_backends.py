"""Bundled unroll backends (installed as ``vlcore.plugins.unroll_backends``; on disk
``plugins/unroll_backends.py``): how a distiller differentiates the matching loss through the
student's steps.

=============  ===========================================================  =========================
backend        gradient                                                     memory
=============  ===========================================================  =========================
``func``       exact: the whole graph of every step is kept (the reference)  grows with the steps
``higher``     exact, the same with ``higher.monkeypatch`` (no peft models)  grows with the steps
``checkpoint`` exact: stores each step's parameters (P floats a step) and    activations of one step
               recomputes one step's graph at a time in the backward pass
``tesla``      TESLA's approximation (Cui et al. 2023): each step's          activations of one step
               gradient is backpropagated alone; the terms that flow
               through later steps' parameters are dropped
=============  ===========================================================  =========================

``checkpoint`` is reverse-mode differentiation through the unroll with recomputation: with
``theta_{k+1} = theta_k - lr * g_k(theta_k, X)`` and ``a_K = dL/dtheta_K``, each step backwards
recomputes ``g_k`` with its graph and takes one vector-Jacobian product of ``theta_{k+1}`` with
``a_{k+1}``, giving ``a_k = a_{k+1} - H_k (lr * a_{k+1})`` and the step's contribution to the
gradients of the synthetic set ``X`` and of the step sizes.  The random draws of each step
(dropout) are replayed from the RNG state saved before it, so the gradient is the full unroll's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Sequence

import torch

from vlcore import hookimpl
from vlcore.core.errors import VLError
from vlcore.distill.unroll import FuncBackend, Unroll, UnrollBackend, UnrollResult

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


class HigherBackend(UnrollBackend):
    """higher.monkeypatch, the full graph: the classic meta-learning library; refuses peft (LoRA) models."""

    name = "higher"

    def prepare(self, model):
        try:
            import higher
        except ImportError as exc:  # pragma: no cover - it is a dependency
            raise VLError("the 'higher' unroll backend needs the package 'higher' (pip install higher)") from exc
        if any("lora_" in n for n, _ in model.named_parameters()):
            raise VLError("The 'higher' unroll backend cannot run peft (LoRA) models: higher fails with "
                          "'Cannot create a consistent method resolution order' on peft-wrapped modules. "
                          "Use --unroll func.")
        try:
            fmodel = higher.monkeypatch(model, copy_initial_weights=False, track_higher_grads=True)
        except TypeError as exc:
            raise VLError(f"The 'higher' unroll backend cannot handle this model ({exc}). Use --unroll func.") from exc
        names = [n for n, _ in model.named_parameters()]
        originals = dict(model.named_parameters())

        def forward(params, **inputs):
            return fmodel(params=[params.get(n, originals[n]) for n in names], **inputs)
        return forward


class _RecomputingBackend(FuncBackend):
    """Shared by ``checkpoint`` and ``tesla``: a forward pass without graph that stores each step's
    parameters and RNG state, then a backward pass recomputing one step at a time."""


    @dataclass(frozen=True)
    class Config:
        #: where the per-step parameters are kept ("": the device they are on; e.g. "cpu" on a GPU run)
        store_device: str = ""
        #: precision of the stored per-step parameters ("": their own; lower saves memory and
        #: approximates the gradient: benchmarks/UNROLL.md measures how much)
        store_dtype: Literal["", "float32", "bfloat16", "float16"] = ""

    def run(self, u: Unroll, wrt: Sequence[torch.Tensor]) -> UnrollResult:
        wrt = list(wrt)
        device = u.start.device
        store = torch.device(self.config.store_device) if self.config.store_device else device
        dtype = _DTYPES[self.config.store_dtype] if self.config.store_dtype else u.start.dtype
        stored: list[torch.Tensor] = []
        rng: list[tuple] = []
        theta = u.start.detach()
        for k in range(u.steps):
            stored.append(theta.to(store, dtype, copy=True))
            rng.append(_rng_state(device))
            with torch.enable_grad():
                theta = u.update(theta.detach().requires_grad_(True), k, create_graph=False).detach()
        final = theta.requires_grad_(True)
        with torch.enable_grad():
            loss, parts = u.loss(final)
            (adjoint,) = torch.autograd.grad(loss, final)
        grads: list[torch.Tensor | None] = [None] * len(wrt)
        a = adjoint
        for k in reversed(range(u.steps)):
            theta_k = stored.pop().to(device, u.start.dtype).requires_grad_(True)
            with torch.enable_grad(), _replay_rng(rng[k], device):
                nxt = u.update(theta_k, k, create_graph=True)
                inputs = [theta_k, *wrt] if self.exact else wrt
                outs = torch.autograd.grad(nxt, inputs, grad_outputs=a, allow_unused=True)
            if self.exact:
                a, outs = outs[0], outs[1:]
            grads = [g if o is None else (o if g is None else g + o) for g, o in zip(grads, outs)]
        return UnrollResult(float(loss.detach()), parts, grads)


class CheckpointBackend(_RecomputingBackend):
    """The exact gradient with the activation memory of one step: stores each step's parameters, recomputes its graph backwards."""

    name = "checkpoint"


class TeslaBackend(_RecomputingBackend):
    """TESLA's approximate gradient (Cui et al. 2023): each step's term alone, no Hessian chain; for comparison."""

    name = "tesla"
    exact = False


def _rng_state(device: torch.device):
    cuda = torch.cuda.get_rng_state(device) if device.type == "cuda" else None
    return torch.get_rng_state(), cuda


class _replay_rng:
    """Run a block with the RNG state saved before a step, then restore the current one."""

    def __init__(self, state, device: torch.device):
        self.state, self.device = state, device

    def __enter__(self):
        self.saved = _rng_state(self.device)
        torch.set_rng_state(self.state[0])
        if self.state[1] is not None:
            torch.cuda.set_rng_state(self.state[1], self.device)

    def __exit__(self, *exc):
        torch.set_rng_state(self.saved[0])
        if self.saved[1] is not None:
            torch.cuda.set_rng_state(self.saved[1], self.device)


BACKENDS = (FuncBackend, HigherBackend, CheckpointBackend, TeslaBackend)


@hookimpl
def register_unroll_backends(register):
    for cls in BACKENDS:
        register(cls)
