"""Real photos for the encoder tests: Flickr8k development photos whose captions describe dogs, read
from ``../shared/data/flickr8k-dev/images`` beside the repository (a test using one skips without it)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

IMAGES = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k-dev" / "images"
#: Flickr8k dev photos whose captions describe dogs
DOG_PHOTOS = ["1001773457_577c3a7d70.jpg", "1009434119_febe49276a.jpg", "1015584366_dfcec3c85a.jpg"]
#: ImageNet-1k class indices of the dog breeds
IMAGENET_DOGS = range(151, 269)


def photo(name: str, size: int) -> torch.Tensor:
    """The photo ``name`` resized to ``size`` px: a (1, 3, size, size) float tensor in [0, 1]."""
    from PIL import Image

    path = IMAGES / name
    if not path.exists():
        pytest.skip(f"{path} is not available")
    im = Image.open(path).convert("RGB").resize((size, size), Image.BICUBIC)
    return torch.from_numpy(np.array(im)).permute(2, 0, 1).float().div(255).unsqueeze(0)
