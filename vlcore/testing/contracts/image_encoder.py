"""The contract of image encoders: :func:`check_image_encoder`."""
from __future__ import annotations

from typing import Any

import torch

from ._common import _begin, _close, _finite, _require, _step
from vlcore.model.encoder import ModelSpec, add_lora

def check_image_encoder(cls: type, options: dict | None = None, *, image_size: int = 32, batch: int = 2,
                        second_order: bool = True, lora: bool | None = None) -> Any:
    """An image encoder:

    * is built as ``cls(config, image_size=...)``, deterministically under a fixed seed;
    * has a positive integer ``feature_dim``, 3-channel ``mean``/``std``, string ``lora_targets``;
    * maps a (batch, 3, H, W) float batch in [0, 1] to finite float32 (batch, feature_dim) features,
      ``forward(x) == features(normalise(x))``, the same twice in eval mode, and each image's
      features independent of the rest of the batch in eval mode;
    * in train mode, every parameter receives a gradient (the distillation unroll differentiates
      with respect to all trainable parameters);
    * with ``second_order``: is differentiable twice through ``torch.func.functional_call`` (full
      training mode of bi-trajectory matching): gradients of a loss on parameter gradients reach
      the input pixels;
    * with ``lora`` (default: when it declares ``lora_targets``): each target names a module, and
      peft adapters injected there train.

    Returns the built encoder.
    """
    from torch.func import functional_call

    label, cfg = _begin(cls, "image_encoder", options)
    with _step(label, f"building it with {cfg!r} at image_size={image_size}"):
        torch.manual_seed(0)
        enc = cls(cfg, image_size=image_size)
        torch.manual_seed(0)
        twin = cls(cfg, image_size=image_size)
    _require(isinstance(enc, torch.nn.Module), label, "must be a torch.nn.Module")
    dim = enc.feature_dim
    _require(isinstance(dim, int) and not isinstance(dim, bool) and dim > 0, label,
             f"feature_dim must be a positive int after __init__ (got {dim!r})")
    for attr in ("mean", "std"):
        v = getattr(enc, attr)
        _require(isinstance(v, (tuple, list)) and len(v) == 3 and all(isinstance(x, (int, float)) for x in v), label,
                 f"`{attr}` must be 3 numbers, one per RGB channel (got {v!r})")
    _require(all(s > 0 for s in enc.std), label, f"std must be positive (got {enc.std!r})")
    targets = getattr(enc, "lora_targets", ())
    _require(isinstance(targets, (tuple, list)) and all(isinstance(t, str) for t in targets), label,
             f"lora_targets must be a tuple of module-name suffixes (got {targets!r})")
    trainable = getattr(cls, "default_trainable", None)
    _require(trainable in (None, "full", "frozen", "lora"), label,
             f"default_trainable must be 'full', 'frozen' or 'lora' (got {trainable!r})")
    sd, sd2 = enc.state_dict(), twin.state_dict()
    _require(sd.keys() == sd2.keys() and all(torch.equal(sd[k], sd2[k]) for k in sd), label,
             "two encoders built under the same torch seed differ: initialise from torch's global RNG only")

    g = torch.Generator().manual_seed(0)
    x = torch.rand(batch, 3, image_size, image_size, generator=g)
    enc.eval()
    with _step(label, f"running forward on a {tuple(x.shape)} batch"), torch.no_grad():
        y = enc(x)
        y_again = enc(x)
        y_one = enc(x[:1])
        y_feat = enc.features(enc.normalise(x))
    _require(isinstance(y, torch.Tensor) and y.shape == (batch, dim), label,
             f"forward must return ({batch}, feature_dim={dim}) features, got "
             f"{tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__}")
    _require(y.dtype == torch.float32, label, f"features must be float32 (got {y.dtype})")
    _require(_finite(y), label, "features contain NaN or inf")
    _require(torch.equal(y, y_again), label, "forward is not deterministic in eval mode")
    _require(_close(y_one, y[:1]), label, "in eval mode an image's features depend on the rest of the batch")
    _require(_close(y_feat, y), label, "forward(x) must equal features(normalise(x))")

    enc.train()
    params = dict(enc.named_parameters())
    _require(params, label, "has no parameters")
    with _step(label, "back-propagating through forward in train mode"):
        out = enc(x)
        grads = torch.autograd.grad(out.square().mean(), list(params.values()), allow_unused=True)
    unused = [n for n, gr in zip(params, grads) if gr is None]
    _require(not unused, label, f"parameters {unused[:5]} get no gradient: every parameter must be used by "
                                f"forward (delete unused modules, e.g. a classifier head)")

    if second_order:
        with _step(label, "differentiating twice through torch.func.functional_call"):
            p = {k: v.detach().clone().requires_grad_(True) for k, v in params.items()}
            xg = x.clone().requires_grad_(True)
            target = torch.randn(batch, dim, generator=g)
            inner = ((functional_call(enc, p, (xg,)) - target) ** 2).mean()
            gp = torch.autograd.grad(inner, list(p.values()), create_graph=True)
            stepped = {k: v - 0.1 * gv for (k, v), gv in zip(p.items(), gp)}
            outer = (functional_call(enc, stepped, (xg,)) ** 2).mean()
            (gx,) = torch.autograd.grad(outer, xg)
        _require(_finite(gx) and gx.abs().sum() > 0, label,
                 "the gradient of a loss after one functional SGD step does not reach the pixels "
                 "(needed for full-mode bi-trajectory matching)")

    if lora is None:
        lora = bool(targets)
    if lora:
        names = [n for n, _ in enc.named_modules()]
        for t in targets:
            _require(any(n == t or n.endswith("." + t) for n in names), label,
                     f"lora target {t!r} names no module (module names end with it, peft semantics)")
        with _step(label, "injecting LoRA adapters (peft) and training them"):
            torch.manual_seed(0)
            lenc = cls(cfg, image_size=image_size)
            add_lora(lenc, ModelSpec(encoder=cls.name, trainable="lora", image_size=image_size))
            lp = {n: q for n, q in lenc.named_parameters() if q.requires_grad}
            lout = lenc(x)
            lg = torch.autograd.grad(lout.square().mean(), list(lp.values()), allow_unused=True)
        _require(lp, label, "no LoRA parameters were injected")
        _require(lout.shape == (batch, dim), label, "LoRA changed the feature shape")
        _require(all(gr is not None for gr in lg), label, "some LoRA parameters get no gradient")
    enc.eval()
    return enc


