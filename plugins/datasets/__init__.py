"""Bundled datasets (installed as ``vlcore.plugins.datasets``; on disk ``plugins/datasets/``):
Flickr8k, Flickr30k and COCO (Karpathy splits) from their distributed files, and ``embedded``, a
deterministic synthetic dataset of captioned compositional scenes that needs no download.

One module per dataset family: :mod:`.flickr8k`, :mod:`.karpathy` (flickr30k, coco),
:mod:`.embedded` (scenes and renderer); :mod:`._files` holds the readers they share.

Every dataset reads its caption files lazily (in :meth:`load_split`) and caches what it parsed on
the instance.  Problems with the files raise :class:`vlcore.errors.DataError` naming the file, what
was expected and how to fix it.  Image loaders are small picklable objects (so they survive being
sent to worker processes) that return RGB ``PIL.Image`` objects.
"""
from __future__ import annotations

from vlcore import hookimpl

from .embedded import Embedded
from .flickr8k import Flickr8k
from .karpathy import Coco, Flickr30k

DATASETS = (Flickr8k, Flickr30k, Coco, Embedded)


@hookimpl
def register_datasets(register):
    for cls in DATASETS:
        register(cls)
