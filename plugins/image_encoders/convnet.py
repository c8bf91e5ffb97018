"""ConvNet-D of the dataset-distillation literature, trained from scratch."""
from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn as nn

from vlcore.core.errors import ConfigError, ImageSizeError, WeightsError
from vlcore.model.encoder import ImageEncoder

from .weights import load_state_dict_file, load_strict, pretrained_mode


# --------------------------------------------------------------------------- ConvNet
class ConvNet(ImageEncoder):
    """ConvNet-D of dataset distillation (conv3x3-norm-ReLU-avgpool blocks), trained from scratch."""

    name = "convnet"
    mean, std = (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)
    default_trainable = "full"
    default_image_size = 32
    has_pretrained = False

    @dataclass(frozen=True)
    class Config:
        #: 'auto'/'none': random init (there are no pretrained ConvNet weights); or a state dict path
        pretrained: str = "auto"
        #: number of conv-norm-relu-pool blocks
        depth: int = 3
        #: channels of every block
        width: int = 64
        #: 'instance': GroupNorm(width, width) as in the MTT code; 'batch': BatchNorm2d; 'none'
        norm: Literal["instance", "none", "batch"] = "instance"

    @classmethod
    def check_size(cls, config, image_size: int) -> None:
        if config.depth < 1 or config.width < 1:
            raise ConfigError(f"image encoder 'convnet': depth and width must be positive "
                              f"(got depth={config.depth}, width={config.width}).")
        if image_size // 2 ** config.depth < 1:
            need = 2 ** config.depth
            raise ImageSizeError(
                f"image encoder 'convnet': image_size {image_size} is too small for depth {config.depth} "
                f"(each block halves the size; at least {need} px is needed). Use a larger --image-size or "
                f"--encoder-option depth={max(1, int(math.log2(max(image_size, 2))))}.")

    @classmethod
    def check_weights(cls, config) -> None:
        mode = pretrained_mode(config.pretrained)
        if mode == "hub":
            raise WeightsError("image encoder 'convnet' has no hub weights: use pretrained=auto or none "
                               "(random init) or pretrained=/path/to/state_dict.safetensors.")
        if mode == "path" and not Path(config.pretrained).expanduser().is_file():
            load_state_dict_file(config.pretrained)  # raises, saying what the option takes

    def __init__(self, config, image_size: int):
        super().__init__(config, image_size)
        self.check_size(config, image_size)
        side = image_size // 2 ** config.depth
        layers: list[nn.Module] = []
        c = 3
        for _ in range(config.depth):
            layers.append(nn.Conv2d(c, config.width, kernel_size=3, padding=1))
            if config.norm == "instance":
                layers.append(nn.GroupNorm(config.width, config.width, affine=True))
            elif config.norm == "batch":
                layers.append(nn.BatchNorm2d(config.width))
            layers += [nn.ReLU(inplace=False), nn.AvgPool2d(kernel_size=2, stride=2)]
            c = config.width
        self.layers = nn.Sequential(*layers)
        self.feature_dim = config.width * side * side
        self.check_weights(config)
        if pretrained_mode(config.pretrained) == "path":
            path = str(Path(config.pretrained).expanduser())
            sd = load_state_dict_file(path)
            if all(k.startswith("model.layers.") for k in sd):
                sd = {k[len("model."):]: v for k, v in sd.items()}
            load_strict(self, sd, path)
            self.weights_source = f"file {path}"
        else:
            self.weights_source = "random init"

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x).flatten(1)

