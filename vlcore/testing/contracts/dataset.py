"""The contract of datasets: :func:`check_dataset`."""
from __future__ import annotations

import dataclasses
import pickle
from typing import Any

import torch

from vlcore.core.config import build_config

from ._common import _label, _refuses, _require, _step, check_class, check_config
from vlcore.data.dataset import Split, load_images

def check_dataset(cls: type, options: dict | None = None, *, image_size: int = 16, splits: list[str] | None = None,
                  max_images: int = 3) -> Any:
    """A dataset:

    * its Config has ``root`` and ``limit`` (``--data`` and ``--limit`` set them);
    * ``splits()`` lists distinct names including ``train`` and ``default_eval_split``;
    * each split (or those in ``splits``) is a :class:`vlcore.data.dataset.Split` named after it and the
      dataset, with distinct string image ids and non-empty captions; its loader returns images
      that :func:`vlcore.data.dataset.load_images` turns into uint8 tensors, and it survives pickling
      (worker processes); a second instance gives the same ids, captions and fingerprint;
    * ``limit=1`` gives one train image; an unknown split raises a :class:`vlcore.core.errors.VLError`.

    ``options`` must make it loadable (e.g. ``{"root": DIR}``, or small sizes for generators).
    Returns the built dataset.
    """
    kind = "dataset"
    check_class(cls, kind)
    label = _label(kind, cls)
    fields = {f.name for f in dataclasses.fields(cls.Config)}
    _require({"root", "limit"} <= fields, label,
             f"Config needs `root` (the --data folder) and `limit` (--limit) fields (has {sorted(fields)})")
    options = dict(options or {})
    cfg = check_config(cls, options, kind=kind)
    with _step(label, f"building it with {cfg!r}"):
        ds = cls(cfg)
        names = ds.splits()
    _require(isinstance(names, list) and names and all(isinstance(n, str) for n in names), label,
             f"splits() must return a non-empty list of names (got {names!r})")
    _require(len(set(names)) == len(names), label, f"splits() lists a name twice: {names}")
    _require("train" in names, label, f"needs a 'train' split (has {names})")
    _require(cls.default_eval_split in names, label,
             f"default_eval_split {cls.default_eval_split!r} is not one of its splits {names}")
    twin = cls(build_config(cls.Config, options))
    for name in splits or names:
        with _step(label, f"loading split {name!r}"):
            s = ds.split(name)
        _require(isinstance(s, Split), label, f"split({name!r}) must return a vlcore.data.dataset.Split")
        _require(s.name == name and s.dataset == cls.name, label,
                 f"split {name!r} says it is {s.dataset}/{s.name}")
        _require(s.num_images >= 1, label, f"split {name!r} is empty")
        _require(all(isinstance(i, str) for i in s.image_ids) and len(set(s.image_ids)) == s.num_images, label,
                 f"split {name!r}: image ids must be distinct strings")
        _require(all(isinstance(c, str) and c.strip() for caps in s.captions for c in caps), label,
                 f"split {name!r}: every caption must be a non-empty string")
        n = min(max_images, s.num_images)
        with _step(label, f"loading {n} images of split {name!r}"):
            imgs = load_images(s.subset(n), image_size, use_cache=False)
            loader = pickle.loads(pickle.dumps(s.loader))
            reloaded = load_images(Split(s.dataset, s.name, s.image_ids[:1], s.captions[:1], loader, s.source),
                                   image_size, use_cache=False)
        _require(imgs.shape == (n, 3, image_size, image_size) and imgs.dtype == torch.uint8, label,
                 f"split {name!r}: images did not load as RGB")
        _require(torch.equal(reloaded[0], imgs[0]), label, f"split {name!r}: the unpickled loader gives other images")
        other = twin.split(name)
        _require(other.image_ids == s.image_ids and other.captions == s.captions, label,
                 f"split {name!r}: a second instance with the same config gives other images or captions")
        _require(other.fingerprint == s.fingerprint, label,
                 f"split {name!r}: the fingerprint (cache key) is not stable")
    limited = cls(build_config(cls.Config, {**options, "limit": 1}))
    with _step(label, "loading the train split with limit=1"):
        n1 = limited.split("train").num_images
    _require(n1 == 1, label, f"limit=1 must give 1 train image (got {n1})")
    _refuses(label, lambda: ds.split("no-such-split"),
             "an unknown split must raise a VLError (e.g. DataError) with the available splits",
             "split('no-such-split') did not raise")
    return ds


