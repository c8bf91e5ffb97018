"""What a healthy distilled set is, in one place.

A distillation optimises pixels and caption embeddings freely, as published: they leave the range
of real data, and this module says how far is still a set and how far is noise.  A set is
*healthy* when

* **pixels**: each image's pixels lie, in root mean square, within :data:`PIXEL_FACTOR` times the
  data's range after normalisation.  Real pixels are in [0, 1]; an encoder normalises them per
  channel, ``(x - mean) / std``, which maps [0, 1] to an interval of half-width ``0.5 / std`` centred
  on ``(0.5 - mean) / std``, so a pixel ``x`` lies ``|x - 0.5| / 0.5`` half-widths from that centre
  whatever the encoder's mean and std: the rule reads the same for every encoder, and a real image
  reads at most 1 (:func:`pixel_spread`).
* **text**: each text embedding's norm is within :data:`TEXT_FACTOR` times its start (the initial
  embeddings' median norm; the bundled text encoders give unit-length caption embeddings).

Beyond either bound the distillation warns once, during the run, and records the warning in the
pair set's ``meta["warnings"]``, which ``vl eval`` repeats (:mod:`vlcore.distill.recipe`).  The bounds come
from what the bundled recipes produce (frozen EfficientNet-Lite0, the worst image / the largest
norm; nothing there warns):

=====================================================================  ===========  ==========
run                                                                    pixels       text norm
=====================================================================  ===========  ==========
real images                                                            <= 1         1
``vl demo`` bitraj (embedded, 64 px, lr 100, 40 iterations)            1.41         26.6
``vl demo`` LoRS (the same, 49 pairs + S)                              0.98         20.6
the demo's earlier recipe (2,000 scenes, 60 iterations): bitraj        1.58         35
Flickr8k recipe settings (bitraj 100 pairs, 112 px, lr 100, 200
iterations; 1,500 of its training photos)                              0.87         10.6
60 Flickr8k photos, 10 pairs, 6 iterations, lr 100 (issue 21)          16 to 49     3,000
the same at lr 10 (every image already static)                         2.1 to 5     300
the same at the default learning rates (scaled to the first gradient)  0.72         6.1
=====================================================================  ===========  ==========

Both bounds sit above every recipe with a margin (about 2x for pixels, 3x for text) and below the
runs whose images are static.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: an image's pixels may lie, in root mean square, this many times the data's range (after
#: normalisation) from its centre; a real image reads at most 1
PIXEL_FACTOR = 3.0
#: a text embedding's norm may grow to this factor of its start
TEXT_FACTOR = 100.0


def pixel_spread(images: torch.Tensor) -> torch.Tensor:
    """Per image (N, C, H, W) in pixel units: the root mean square of ``|x - 0.5| / 0.5``, how many
    half-widths of the data's range (after any per-channel normalisation) its pixels lie from the
    range's centre.  A real image (pixels in [0, 1]) reads at most 1."""
    z = (images.detach().float() - 0.5) / 0.5
    return z.flatten(1).pow(2).mean(1).sqrt()


@dataclass(frozen=True)
class Reading:
    """What the rule reads from a distilled set."""

    #: the worst image's :func:`pixel_spread`, and how many images exceed :data:`PIXEL_FACTOR`
    pixel_spread: float
    images_beyond: int
    images: int
    #: the smallest and largest pixel (pixel units: real images are in [0, 1])
    pixel_min: float
    pixel_max: float
    #: the largest text-embedding norm, the start it is measured against, how many exceed the bound
    text_norm: float
    text_start: float
    texts_beyond: int
    texts: int

    @property
    def text_factor(self) -> float:
        return self.text_norm / self.text_start


def read(images: torch.Tensor, text: torch.Tensor, text_start: float = 1.0) -> Reading:
    """The :class:`Reading` of a set: ``images`` (N, C, H, W) in pixel units, ``text`` (M, D), and
    the norm its text embeddings started at."""
    spread = pixel_spread(images)
    norms = text.detach().float().norm(dim=-1)
    start = float(text_start) if text_start and text_start > 0 else 1.0
    img = images.detach()
    return Reading(pixel_spread=float(spread.max()) if spread.numel() else 0.0,
                   images_beyond=int((spread > PIXEL_FACTOR).sum()), images=int(spread.numel()),
                   pixel_min=float(img.min()) if img.numel() else 0.0,
                   pixel_max=float(img.max()) if img.numel() else 0.0,
                   text_norm=float(norms.max()) if norms.numel() else 0.0, text_start=start,
                   texts_beyond=int((norms > TEXT_FACTOR * start).sum()), texts=int(norms.numel()))


def problems(r: Reading) -> dict[str, str]:
    """What lies beyond the healthy bounds, by what (``"pixels"``, ``"text"``), each with its value;
    empty for a healthy set."""
    out = {}
    if r.images_beyond:
        out["pixels"] = (f"{r.images_beyond} of {r.images} synthetic images are noise: their pixels lie up to "
                         f"{r.pixel_spread:.3g} times the data's range from its centre (root mean square, after "
                         f"normalisation; a real image reads at most 1, a healthy set at most {PIXEL_FACTOR:g}), "
                         f"pixels from {r.pixel_min:.3g} to {r.pixel_max:.3g} (real images: 0 to 1)")
    if r.texts_beyond:
        out["text"] = (f"{r.texts_beyond} of {r.texts} synthetic text embeddings grew to norm up to "
                       f"{r.text_norm:.3g}, {r.text_factor:.3g} times their start ({r.text_start:.3g}; a healthy set "
                       f"stays within {TEXT_FACTOR:g} times)")
    return out


def healthy(images: torch.Tensor, text: torch.Tensor, text_start: float = 1.0) -> bool:
    """Whether a set is within the healthy bounds."""
    return not problems(read(images, text, text_start))
