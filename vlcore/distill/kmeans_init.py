"""k-means initialisation of a synthetic set (AMD's "SPM", MDM's initialisation; issue 19), in one
place: the K real training pairs nearest the K centroids of mini-batch k-means on the pairs'
joint features.

The rule (REFERENCE.md, "2026 methods"):

* each training pair ``p`` is the vector ``x_p = norm([norm(f_img(p)); norm(e_txt(p))])``: its
  image's feature and its caption's embedding, each L2-normalised (so neither modality dominates by
  its scale or dimension), concatenated and L2-normalised again (every point on the unit sphere,
  where Euclidean nearness is cosine nearness);
* scikit-learn's :class:`~sklearn.cluster.MiniBatchKMeans` with ``K`` clusters, k-means++ seeding,
  ``n_init`` fixed (1), batches of 2048, ``random_state = seed``, on one BLAS thread: the same seed
  gives the same centroids wherever the same libraries run it;
* for each centroid the real pair nearest it (Euclidean, float64 scores).  Two centroids may share
  a nearest pair; duplicates are resolved greedily and deterministically: centroids are served in
  the order of their nearest distance (closest first, ties by centroid number), each taking the
  nearest pair not yet taken (ties by pair index).  With ``distinct_images`` a pair whose image
  another centroid took is skipped too (one caption per image, as a coreset's ``unique_images``).

The features (:func:`init_features`): a frozen backbone's (cached) features, which no expert
changes; for a backbone that trains (full, LoRA), the features of the buffer's expert at epoch 0
(its starting weights), or of the backbone a fresh model of that seed starts from when no buffer is
given.  The caption side is the frozen text encoder's embedding (:attr:`PairData.text`).
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from vlcore.core.errors import ConfigError, VLError
from vlcore.core.progress import NULL, Progress
from vlcore.data.pipeline import build_backbone, build_model, compute_features, image_features

log = logging.getLogger(__name__)

#: k-means++ seedings (each on scikit-learn's ``init_size`` sample, 3 x the batch; the best by
#: inertia is refined): fixed at 1, scikit-learn's own choice for k-means++ (``n_init="auto"``,
#: whose meaning changed between versions, is not used).  One seeding of K = 500 costs ~10 CPU s
#: here, so 3 would triple the dominant cost (benchmarks/KMEANS.md)
N_INIT = 1
#: points per mini-batch step
BATCH_SIZE = 2048
#: at most this many passes over the data; scikit-learn stops earlier when 10 mini-batches in a
#: row do not improve its smoothed inertia
MAX_ITER = 100
#: BLAS / OpenMP threads while clustering: 1.  On this 2-core machine shared with other work, two
#: threads made the same fit ~10x slower in wall time (threads spinning against other processes);
#: one fixed thread count also keeps the result the same wherever it runs with the same libraries
THREADS = 1


@dataclass
class KMeansInit:
    """What :func:`kmeans_init` chose: ``indices`` (K,) int64, the real pair per centroid in the
    order of the centroids, all distinct; ``info``: what to record in an artifact's meta.json."""

    indices: torch.Tensor
    centroids: torch.Tensor
    info: dict = field(default_factory=dict)


def joint_features(image_features: torch.Tensor, text: torch.Tensor,
                   pair_image: torch.Tensor | None = None) -> torch.Tensor:
    """The (N, F + D) float32 point of every pair: ``norm([norm(image feature); norm(text)])``.

    ``image_features`` is (num_images, F) with ``pair_image`` (N,) naming each pair's image, or
    (N, F), one row per pair, when ``pair_image`` is None; ``text`` is (N, D)."""
    img = image_features.detach().float().cpu()
    txt = text.detach().float().cpu()
    if pair_image is not None:
        img = img[torch.as_tensor(pair_image, dtype=torch.long).cpu()]
    if img.ndim != 2 or txt.ndim != 2 or img.shape[0] != txt.shape[0]:
        raise ValueError(f"image features {tuple(img.shape)} and text embeddings {tuple(txt.shape)} do not give one "
                         f"row per pair")
    x = torch.cat([F.normalize(img, dim=1), F.normalize(txt, dim=1)], dim=1)
    return F.normalize(x, dim=1)


def nearest_distinct(points: torch.Tensor | np.ndarray, centroids: torch.Tensor | np.ndarray,
                     groups: torch.Tensor | np.ndarray | None = None) -> torch.Tensor:
    """For each centroid (K, d) the index of the nearest point (N, d), all distinct (see the module
    docstring for the order in which duplicates are resolved).  ``groups`` (N,): at most one point
    per group (e.g. each pair's image).  Returns int64 (K,) in centroid order."""
    return _nearest_distinct(points, centroids, groups)[0]


def _nearest_distinct(points, centroids, groups=None) -> tuple[torch.Tensor, int]:
    """(:func:`nearest_distinct`'s answer, how many centroids did not get their own nearest point)."""
    x = np.asarray(points, dtype=np.float64)
    c = np.asarray(centroids, dtype=np.float64)
    n, k = x.shape[0], c.shape[0]
    g = None if groups is None else np.asarray(groups, dtype=np.int64)
    if k > (n if g is None else len(np.unique(g))):
        raise ConfigError(f"k-means initialisation: {k} synthetic pairs from {n} real pairs"
                          f"{'' if g is None else f' of {len(np.unique(g))} images'}: not enough to pick "
                          f"{k} distinct ones.")
    # squared Euclidean distance, up to the per-point constant |x|^2 that does not change who is nearest
    # a centroid: d(p, j) = |x_p|^2 - 2 x_p . c_j + |c_j|^2
    d = (x * x).sum(1)[:, None] - 2.0 * (x @ c.T) + (c * c).sum(1)[None, :]  # (N, K)
    m = min(n, 2 * k + 8)  # the nearest candidates of each centroid; more only if they run out
    if m < n:
        cand = np.argpartition(d, m - 1, axis=0)[:m]  # (m, K), unordered
    else:
        cand = np.broadcast_to(np.arange(n)[:, None], (n, k))
    order_in = np.empty_like(cand)
    for j in range(k):  # each centroid's candidates by distance, ties by pair index
        col = cand[:, j]
        order_in[:, j] = col[np.lexsort((col, d[col, j]))]
    first = d[order_in[0], np.arange(k)]
    serve = np.lexsort((np.arange(k), first))  # closest centroid first, ties by centroid number
    taken_pts, taken_groups = set(), set()
    out = np.empty(k, dtype=np.int64)
    for j in serve:
        pick = None
        for p in order_in[:, j]:
            if p not in taken_pts and (g is None or g[p] not in taken_groups):
                pick = int(p)
                break
        if pick is None:  # every candidate taken: all points of this centroid, by distance
            for p in np.lexsort((np.arange(n), d[:, j])):
                if p not in taken_pts and (g is None or g[p] not in taken_groups):
                    pick = int(p)
                    break
        out[j] = pick
        taken_pts.add(pick)
        if g is not None:
            taken_groups.add(int(g[pick]))
    return torch.from_numpy(out), int((out != order_in[0]).sum())


def kmeans_init(image_features: torch.Tensor, text: torch.Tensor, k: int, seed: int, *,
                pair_image: torch.Tensor | None = None, distinct_images: bool = False, n_init: int = N_INIT,
                batch_size: int = BATCH_SIZE, max_iter: int = MAX_ITER, threads: int = THREADS) -> KMeansInit:
    """The ``k`` real pairs nearest the ``k`` centroids of mini-batch k-means (seeded with ``seed``)
    on the pairs' :func:`joint_features`.

    ``image_features``: (num_images, F) with ``pair_image`` (N,) (as :class:`~vlcore.data.pipeline.PairData`
    keeps them: ``kmeans_init(feats, data.text, k, seed, pair_image=data.pair_image)``), or (N, F);
    ``text``: (N, D) caption embeddings.  ``distinct_images``: one pair per image at most.  Returns
    the pair indices (distinct, in centroid order), the centroids and ``info`` for meta.json.
    ``threads``: BLAS / OpenMP threads while it runs (see :data:`THREADS`).  scikit-learn takes
    32-bit seeds: ``seed`` is used modulo 2^32."""
    from sklearn.cluster import MiniBatchKMeans
    from threadpoolctl import threadpool_limits

    t0 = time.time()
    x = joint_features(image_features, text, pair_image)
    n = x.shape[0]
    if not 1 <= int(k) <= n:
        raise ConfigError(f"k-means initialisation: K = {k} synthetic pairs, but there are {n} real pairs "
                          f"(K must be between 1 and {n}).")
    if not torch.isfinite(x).all():
        raise VLError("k-means initialisation: the pair features are not finite (a diverged backbone?).")
    xn = x.numpy()
    km = MiniBatchKMeans(n_clusters=int(k), init="k-means++", n_init=int(n_init), batch_size=int(batch_size),
                         max_iter=int(max_iter), random_state=int(seed) % (2 ** 32), compute_labels=False)
    groups = None
    if distinct_images:
        if pair_image is None:
            raise ConfigError("k-means initialisation: distinct_images needs pair_image (which image each pair has).")
        groups = torch.as_tensor(pair_image, dtype=torch.long).cpu().numpy()
    with threadpool_limits(limits=int(threads)):
        km.fit(xn)
        centroids = km.cluster_centers_.astype(np.float64)
        idx, shared = _nearest_distinct(xn, centroids, groups)
    info = {"method": "kmeans", "k": int(k), "seed": int(seed), "points": int(n), "dims": int(x.shape[1]),
            "n_init": int(n_init), "batch_size": int(batch_size), "max_iter": int(max_iter), "threads": int(threads),
            "iterations": int(getattr(km, "n_iter_", 0)), "steps": int(getattr(km, "n_steps_", 0)),
            "distinct_images": bool(distinct_images), "shared_nearest": shared,
            "seconds": round(time.time() - t0, 3),
            "features": "norm([norm(image feature); norm(caption embedding)])"}
    return KMeansInit(idx, torch.from_numpy(centroids.astype(np.float32)), info)


# ------------------------------------------------------------------------------ the features
def model_with(buffer, params: dict[str, torch.Tensor], *, host=None, device="cpu", seed: int = 0):
    """A dual encoder of ``buffer``'s spec (built with ``seed``) holding ``params`` (named trainable
    parameters, e.g. ``buffer.params(buffer.load(i), epoch)`` or a merged teacher's), in eval mode.
    Refuses parameters that are not exactly the trainable ones of the model the spec builds now."""
    model = build_model(buffer.spec, int(buffer.index["text_dim"]), seed=seed, host=host, device=device)
    trainable = set(model.trainable_named())
    if set(params) != trainable:
        raise VLError(f"Buffer '{buffer.path}' does not hold the trainable parameters of the model its spec builds "
                      f"now (missing: {sorted(trainable - set(params))[:3]}, unexpected: "
                      f"{sorted(set(params) - trainable)[:3]}); retrain it with `vl experts`.")
    model.load_state_dict({n: p.to(device) for n, p in params.items()}, strict=False)
    return model.eval()


def expert_seed(buffer, expert: int) -> int:
    """The seed expert ``expert`` of ``buffer`` was built and trained with (``seed + 1000 i``)."""
    name = list(buffer.experts)[expert]
    return int(buffer.index["expert"].get("seed", 0)) + 1000 * int(name.split("_")[1].split(".")[0])


def init_features(spec, data, *, buffer=None, expert: int = 0, epoch: int = 0, seed: int = 0, host=None,
                  device="cpu", progress: Progress = NULL) -> torch.Tensor:
    """(num_images, F) float32 image features of ``data`` (a :class:`~vlcore.data.pipeline.PairData`) for
    :func:`kmeans_init`, on the CPU.

    * a frozen backbone (``spec.frozen``): its backbone features (cached on disk: the same ones
      experts and distillers use; the buffer's heads do not change them);
    * a backbone that trains, with ``buffer``: the backbone of expert ``expert`` at ``epoch``
      (default 0, its starting weights; a later epoch's BatchNorm statistics, which the buffer does
      not hold, would be the fresh model's);
    * a backbone that trains, without a buffer: the backbone a model built with ``seed`` starts from.
    """
    if spec.frozen:
        return image_features(spec, data, host=host, device=device, progress=progress).float().cpu()
    if buffer is None:
        backbone = build_backbone(spec, host, seed)
    else:
        if buffer.num_experts == 0:
            raise VLError(f"Buffer '{buffer.path}' holds no finished expert yet. Run `vl experts` (it resumes).")
        if not 0 <= expert < buffer.num_experts or not 0 <= epoch <= buffer.epochs:
            raise ConfigError(f"expert {expert}, epoch {epoch}: buffer '{buffer.path}' holds experts "
                              f"0..{buffer.num_experts - 1} with epochs 0..{buffer.epochs}.")
        buffer.check_compatible(spec, int(data.text.shape[1]))
        params = buffer.params(buffer.load(expert), epoch)
        backbone = model_with(buffer, params, host=host, device=device, seed=expert_seed(buffer, expert)).backbone
    return compute_features(backbone.to(device), data.images, device=device, progress=progress).float().cpu()
