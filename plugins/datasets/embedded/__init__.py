"""The ``embedded`` dataset: deterministic captioned compositional scenes, no download.

:mod:`.scenes` makes the scene graphs and captions, :mod:`.render` draws them.
"""
from __future__ import annotations

from dataclasses import dataclass

from vlcore.data import Dataset, Split
from vlcore.errors import ConfigError, DataError

from .render import render_scene
from .scenes import GENERATOR_VERSION, make_captions, make_scene


class SceneLoader:
    """``loader(i)``: renders scene ``i`` (picklable; deterministic)."""

    def __init__(self, scenes: list[dict], size: int):
        self.scenes = scenes
        self.size = size

    def __call__(self, i: int):
        return render_scene(self.scenes[i], self.size)

    def __len__(self) -> int:
        return len(self.scenes)


class Embedded(Dataset):
    """Built-in synthetic captioned scenes (no download): 1-3 coloured shapes on textured backgrounds.

    Each image is a compositional scene: 1 to 3 objects, each with a shape (circle, square, triangle,
    star, diamond, ring, cross, hexagon), a colour (8), a size (small/large) and a position, on one of
    six backgrounds (sky, grass, sand, night, snow, sunset).  Its 5 captions are generated from the
    scene graph with varied templates, synonyms, counts and spatial relations; some mention only part
    of the scene.  Everything is deterministic in (seed, split, index); images are rendered on demand.
    """

    name = "embedded"
    SPLIT_SEEDS = ("train", "dev", "test")

    @dataclass(frozen=True)
    class Config:
        #: ignored (accepted so that --data works uniformly)
        root: str | None = None
        #: at most this many images per split (the first ones)
        limit: int | None = None
        #: hold this many training images out as the split "holdout" (for tuning; 0: none)
        holdout: int = 0
        #: generator seed; train/dev/test draw from disjoint streams derived from it
        seed: int = 0
        num_train: int = 2000
        num_dev: int = 500
        num_test: int = 500
        #: rendered image side in pixels
        image_size: int = 64

    def __init__(self, config=None):
        config = config if config is not None else self.Config()
        for field_name in ("num_train", "num_dev", "num_test"):
            if getattr(config, field_name) < 1:
                raise ConfigError(f"Option '{field_name}' of dataset 'embedded' must be at least 1 "
                                  f"(got {getattr(config, field_name)}).")
        if config.image_size < 16:
            raise ConfigError(f"Option 'image_size' of dataset 'embedded' must be at least 16 "
                              f"(got {config.image_size}).")
        super().__init__(config)
        self._splits: dict[str, Split] = {}

    def splits(self) -> list[str]:
        return list(self.SPLIT_SEEDS)

    def num_images(self, split: str) -> int:
        return getattr(self.config, f"num_{split}")

    def load_split(self, split: str) -> Split:
        if split in self._splits:
            return self._splits[split]
        if split not in self.SPLIT_SEEDS:
            raise DataError(f"Dataset 'embedded' has no split '{split}'. Available: train, dev, test.")
        cfg = self.config
        n = self.num_images(split)
        scenes = [make_scene(cfg.seed, split, i) for i in range(n)]
        captions = [make_captions(s, cfg.seed, split, i) for i, s in enumerate(scenes)]
        ids = [f"{split}-{i:05d}" for i in range(n)]
        source = (f"embedded:{GENERATOR_VERSION}:seed={cfg.seed}:split={split}:n={n}:"
                  f"size={cfg.image_size}")
        out = Split(dataset=self.name, name=split, image_ids=ids, captions=captions,
                    loader=SceneLoader(scenes, cfg.image_size), source=source)
        self._splits[split] = out
        return out

