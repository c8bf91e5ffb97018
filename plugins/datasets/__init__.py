"""Bundled datasets (installed as ``vlcore.plugins.datasets``; on disk ``plugins/datasets/``):
Flickr8k, Flickr30k and COCO (Karpathy splits) from their distributed files, ``embedded``, a
deterministic synthetic dataset of captioned compositional scenes that needs no download, and the
user's own data (``captions``, ``hf``).

One module per dataset family: :mod:`.flickr8k`, :mod:`.karpathy` (flickr30k, coco),
:mod:`.embedded` (scenes and renderer), :mod:`.captions` (your own folder of images with a CSV, TSV
or JSON Lines file of captions), :mod:`.hf` (a Hugging Face ``datasets`` dataset); :mod:`._files`
holds the readers they share, :mod:`._table` the rows-to-splits logic of the last two.

Every dataset reads its caption files lazily (in :meth:`load_split`) and caches what it parsed on
the instance.  Problems with the files raise :class:`vlcore.core.errors.DataError` naming the file, what
was expected and how to fix it.  Image loaders are small picklable objects (so they survive being
sent to worker processes) that return RGB ``PIL.Image`` objects.
"""
from __future__ import annotations

from vlcore import hookimpl

from .captions import Captions
from .embedded import Embedded
from .flickr8k import Flickr8k
from .hf import HFDataset
from .karpathy import Coco, Flickr30k

DATASETS = (Flickr8k, Flickr30k, Coco, Embedded, Captions, HFDataset)


@hookimpl
def register_datasets(register):
    for cls in DATASETS:
        register(cls)
