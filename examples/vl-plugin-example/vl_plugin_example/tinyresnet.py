"""The ``tinyresnet`` image encoder: a small residual CNN in plain PyTorch, trained from scratch.

stem conv3x3 -> ``stages`` stages of ``blocks`` basic residual blocks (the first block of every
stage after the first halves the resolution and doubles the channels) -> global average pool.
Features: ``width * 2 ** (stages - 1)``.  GroupNorm by default, so an image's features never
depend on the rest of its batch, and the network is differentiable twice through
``torch.func.functional_call`` (what bi-trajectory matching needs in full training mode).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn
import torch.nn.functional as F

from vlcore.core.errors import ConfigError, WeightsError
from vlcore.model.encoder import ImageEncoder


def _norm(kind: str, channels: int) -> nn.Module:
    if kind == "group":
        return nn.GroupNorm(math.gcd(8, channels), channels)
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    return nn.Identity()


class BasicBlock(nn.Module):
    """conv3x3-norm-relu-conv3x3-norm plus a (projected when the shape changes) shortcut."""

    def __init__(self, cin: int, cout: int, stride: int, norm: str):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=norm == "none")
        self.norm1 = _norm(norm, cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=norm == "none")
        self.norm2 = _norm(norm, cout)
        self.shortcut = nn.Identity()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride=stride, bias=norm == "none"),
                                          _norm(norm, cout))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.norm1(self.conv1(x)))
        out = self.norm2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class TinyResNet(ImageEncoder):
    """TinyResNet: a small residual CNN (basic blocks, GroupNorm) trained from scratch; plain torch."""

    name = "tinyresnet"
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    #: no pretrained weights exist, so `vl` trains all of it by default (--trainable full)
    default_trainable = "full"

    @dataclass(frozen=True)
    class Config:
        #: channels of the first stage (doubled at every further stage)
        width: int = 16
        #: number of stages; every stage after the first halves the resolution
        stages: int = 3
        #: basic blocks per stage
        blocks: int = 1
        #: normalisation: group (GroupNorm), batch (BatchNorm2d) or none
        norm: Literal["group", "batch", "none"] = "group"
        #: 'none'/'auto': random init (there are no published weights); or a state-dict file
        pretrained: str = "none"

    def __init__(self, config, image_size: int):
        super().__init__(config, image_size)
        c = config
        if c.width < 1 or c.stages < 1 or c.blocks < 1:
            raise ConfigError(f"image encoder 'tinyresnet': width, stages and blocks must be at least 1 "
                              f"(got width={c.width}, stages={c.stages}, blocks={c.blocks}).")
        need = 2 ** (c.stages - 1)
        if image_size < need:
            raise ConfigError(f"image encoder 'tinyresnet': {c.stages} stages halve the image {c.stages - 1} "
                              f"times; image_size must be at least {need} (got {image_size}). Use a larger "
                              f"--image-size or fewer stages (--encoder-option stages=...).")
        self.stem = nn.Sequential(nn.Conv2d(3, c.width, 3, padding=1, bias=c.norm == "none"),
                                  _norm(c.norm, c.width), nn.ReLU())
        layers, cin = [], c.width
        for s in range(c.stages):
            cout = c.width * 2 ** s
            for b in range(c.blocks):
                layers.append(BasicBlock(cin, cout, 2 if (s > 0 and b == 0) else 1, c.norm))
                cin = cout
        self.blocks = nn.Sequential(*layers)
        self.feature_dim = cin
        self._load(c.pretrained)

    def _load(self, pretrained: str) -> None:
        mode = str(pretrained).strip()
        if mode.lower() in ("none", "auto"):
            self.weights_source = "random init"
            return
        if mode.lower() == "hub":
            raise WeightsError("image encoder 'tinyresnet' has no hub weights: use pretrained=none (random "
                               "init) or pretrained=/path/to/state_dict.safetensors.")
        path = Path(mode).expanduser()
        if not path.is_file():
            raise WeightsError(f"image encoder 'tinyresnet': weights file {path} not found.")
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            sd = load_file(str(path))
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
        try:
            self.load_state_dict(sd, strict=True)
        except RuntimeError as exc:
            raise WeightsError(f"image encoder 'tinyresnet': {path} does not fit this configuration "
                               f"({str(exc).splitlines()[0]}).") from None
        self.weights_source = f"file {path}"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x)).mean(dim=(2, 3))
