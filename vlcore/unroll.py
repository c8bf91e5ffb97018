"""The unrolled student and the bi-trajectory loss: the math of the method, in one place each.

A student starts from an expert's trainable parameters at epoch ``s`` and takes ``syn_steps``
differentiable SGD steps on minibatches of the synthetic set with the contrastive loss (step size
``lr_img`` for image-side parameters, ``lr_txt`` for text-side ones).  Its final parameters are
compared with the expert's at epoch ``s + M``; gradients reach the synthetic images, the synthetic
text embeddings and both step sizes.

How the model is run with substituted parameters is an *unroll backend* (a component): ``func``
(torch.func.functional_call, the default) or ``higher`` (higher.monkeypatch).
"""
from __future__ import annotations

from typing import Callable, ClassVar, Sequence

import torch

from .errors import VLError
from .model import DualEncoder, contrastive_loss

ForwardFn = Callable[..., tuple[torch.Tensor | None, torch.Tensor | None]]


class UnrollBackend:
    """Base class: ``prepare(model)`` returns ``forward(params, **inputs) -> (img_emb, txt_emb)``
    where ``params`` maps the model's trainable parameter names to (non-leaf) tensors."""

    name: ClassVar[str] = ""

    def __init__(self, config=None):
        self.config = config

    def prepare(self, model: DualEncoder) -> ForwardFn:
        raise NotImplementedError


class FuncBackend(UnrollBackend):
    """torch.func.functional_call: works with every timm model and with peft LoRA (default)."""

    name = "func"

    def prepare(self, model):
        from torch.func import functional_call

        def forward(params, **inputs):
            return functional_call(model, params, args=(), kwargs=inputs, strict=False)
        return forward


class HigherBackend(UnrollBackend):
    """higher.monkeypatch: the classic meta-learning library; refuses peft (LoRA) models."""

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


def unroll(forward: ForwardFn, start: dict[str, torch.Tensor], modality: dict[str, str], *,
           lr: dict[str, torch.Tensor], text: torch.Tensor, batches: Sequence[torch.Tensor],
           images: torch.Tensor | None = None, features: torch.Tensor | None = None,
           temperature: float | None = None) -> dict[str, torch.Tensor]:
    """Take one differentiable SGD step per minibatch in ``batches``; return the final parameters.

    ``images`` (pixels in [0, 1]) or ``features`` (frozen-backbone features of the images, carrying
    the graph back to the pixels) give the image side; ``text`` the caption embeddings.
    ``modality[name]`` is "img" or "txt" and picks the step size ``lr[modality]``.
    """
    names = list(start)
    params = dict(start)
    kw = {} if temperature is None else {"temperature": temperature}
    for idx in batches:
        if features is not None:
            img_emb, txt_emb = forward(params, features=features[idx], text=text[idx])
        else:
            img_emb, txt_emb = forward(params, images=images[idx], text=text[idx])
        loss = contrastive_loss(img_emb, txt_emb, **kw)
        grads = torch.autograd.grad(loss, [params[n] for n in names], create_graph=True)
        params = {n: params[n] - lr[modality[n]] * g for n, g in zip(names, grads)}
    return params


def trajectory_loss(student: dict[str, torch.Tensor], start: dict[str, torch.Tensor],
                    target: dict[str, torch.Tensor], modality: dict[str, str],
                    modalities: Sequence[str] = ("img", "txt")) -> tuple[torch.Tensor, dict[str, float]]:
    """Bi-trajectory matching loss: for each modality,
    ||student - target||^2 / ||start - target||^2, summed over the modalities.

    Each modality is normalised by its own expert displacement.  Returns the loss and the
    per-modality terms (as floats, for logging).
    """
    total = None
    parts: dict[str, float] = {}
    for m in modalities:
        keys = [n for n in student if modality[n] == m]
        if not keys:
            continue
        num = sum(((student[n] - target[n]) ** 2).sum() for n in keys)
        den = sum(((start[n] - target[n]) ** 2).sum() for n in keys)
        term = num / den.clamp_min(1e-12)
        parts[m] = float(term.detach())
        total = term if total is None else total + term
    if total is None:
        raise ValueError("no parameters to match")
    return total, parts
