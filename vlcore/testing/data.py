"""Tiny data for tests: pair data built in memory, and the ``embedded`` dataset at toy size."""
from __future__ import annotations

import torch

from vlcore.artifacts.io import fingerprint
from vlcore.data.pipeline import PairData, build_dataset, split_data
from vlcore.model.encoder import ModelSpec

from .components import HashedTextEncoder

#: the model the contract checks train (test components of vlcore.testing.plugin)
TINY_SPEC = ModelSpec(encoder="tiny-cnn", encoder_options={}, text_encoder="hashed-bow", text_options={},
                      image_size=16, trainable="full")

_COLOURS = torch.tensor([[0.9, 0.1, 0.1], [0.1, 0.8, 0.2], [0.2, 0.3, 0.9], [0.9, 0.8, 0.1],
                         [0.6, 0.2, 0.8], [0.1, 0.8, 0.8], [0.5, 0.5, 0.5], [0.9, 0.5, 0.1]])


def tiny_pairs(num_images: int = 8, captions_per_image: int = 2, *, image_size: int = 16, text_dim: int = 32,
               clusters: int = 4, seed: int = 0) -> PairData:
    """Pair data in memory: ``num_images`` uint8 images with ``captions_per_image`` captions each.

    The images fall into ``clusters`` groups (image ``i`` is in group ``i % clusters``): a group
    colour plus noise, and its captions' embeddings are the group's direction plus noise, so a
    model can learn something and a selector can find structure.  Deterministic in ``seed``.
    """
    if num_images < 1 or captions_per_image < 1 or clusters < 1:
        raise ValueError("tiny_pairs needs num_images, captions_per_image and clusters >= 1")
    g = torch.Generator().manual_seed(seed)
    group = torch.arange(num_images) % clusters
    colour = _COLOURS[group % len(_COLOURS)].view(num_images, 3, 1, 1)
    pixels = (colour + 0.15 * torch.randn(num_images, 3, image_size, image_size, generator=g)).clamp(0, 1)
    images = (pixels * 255).round().to(torch.uint8)
    centres = torch.nn.functional.normalize(torch.randn(clusters, text_dim, generator=torch.Generator().manual_seed(1234)), dim=1)
    pair_image = torch.arange(num_images).repeat_interleave(captions_per_image)
    text = centres[group[pair_image]] + 0.3 * torch.randn(len(pair_image), text_dim, generator=g) / text_dim ** 0.5
    captions = [f"caption {k} of image {i} (group {int(group[i])})"
                for i in range(num_images) for k in range(captions_per_image)]
    key = fingerprint("vlcore.testing.tiny_pairs", num_images, captions_per_image, image_size, text_dim, clusters, seed)
    return PairData(images=images, text=text.float().contiguous(), pair_image=pair_image, key=key,
                    captions=captions)


def tiny_embedded(split: str = "train", *, num_train: int = 16, num_dev: int = 8, num_test: int = 8,
                  image_size: int = 16, text_encoder=None, host=None, seed: int = 0) -> PairData:
    """A split of the bundled ``embedded`` dataset (rendered scenes with real captions) at toy size,
    its captions embedded by ``text_encoder`` (default: a ``hashed-bow`` encoder, no download).

    Images and embeddings are cached under ``VL_CACHE_DIR`` like any split's.
    """
    # scenes are rendered at the dataset's default size and resized to ``image_size`` on loading
    ds = build_dataset("embedded", options={"num_train": num_train, "num_dev": num_dev, "num_test": num_test,
                                            "seed": seed}, host=host)
    enc = text_encoder if text_encoder is not None else HashedTextEncoder(HashedTextEncoder.Config())
    spec = ModelSpec(encoder="tiny-cnn", text_encoder=enc.name, image_size=image_size)
    return split_data(ds.split(split), spec, enc)
