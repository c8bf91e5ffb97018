"""Cost of the k-means initialisation (vlcore.distill.kmeans_init.kmeans_init) at Flickr8k's size: 30,000
training pairs of 6,000 images (5 captions each), image features of 1280 dims (EfficientNet-Lite0)
and caption embeddings of 384 (MiniLM): points of 1,664 dims, K = 100, 200 and 500 synthetic pairs.

The data are random (Gaussian features and embeddings, seeded): no cluster structure, so the
mini-batch iterations stop on scikit-learn's no-improvement rule as they would on hard data; the
cost of the final nearest-pair assignment (one N x K distance matrix in float64) is the same as on
real features.  Wall and CPU seconds of each call (features to indices; the data are made outside
the timing), the load average before and after, written to benchmarks/KMEANS.md.

    python benchmarks/kmeans_init_cost.py            # once, on a quiet machine (see `uptime`)
    python benchmarks/kmeans_init_cost.py --k 100    # one size
"""
from __future__ import annotations

import argparse
import datetime
import os
import platform
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pairs", type=int, default=30_000)
    ap.add_argument("--captions", type=int, default=5, help="captions per image")
    ap.add_argument("--image-dim", type=int, default=1280)
    ap.add_argument("--text-dim", type=int, default=384)
    ap.add_argument("--k", default="100,200,500", help="comma-separated numbers of synthetic pairs")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(HERE / "KMEANS.md"))
    args = ap.parse_args()

    import torch

    from vlcore.distill.kmeans_init import BATCH_SIZE, MAX_ITER, N_INIT, THREADS, kmeans_init

    load_before = os.getloadavg()
    g = torch.Generator().manual_seed(args.seed)
    images = args.pairs // args.captions
    img = torch.randn(images, args.image_dim, generator=g)
    txt = torch.randn(args.pairs, args.text_dim, generator=g)
    pair_image = torch.arange(args.pairs) // args.captions
    rows = []
    for k in [int(x) for x in args.k.split(",") if x]:
        w0, c0 = time.perf_counter(), time.process_time()
        res = kmeans_init(img, txt, k, args.seed, pair_image=pair_image)
        wall, cpu = time.perf_counter() - w0, time.process_time() - c0
        assert res.indices.unique().numel() == k
        rows.append((k, wall, cpu, res.info))
        print(f"K={k}: {wall:.1f} s wall, {cpu:.1f} s CPU, {res.info['iterations']} passes, "
              f"{res.info['steps']} mini-batch steps, {res.info['shared_nearest']} shared nearest pairs", flush=True)
    load_after = os.getloadavg()

    lines = [
        "## k-means initialisation: cost at Flickr8k's size",
        "",
        f"Produced by `python benchmarks/kmeans_init_cost.py` on {platform.machine()} Linux, {os.cpu_count()} CPU "
        f"cores, {torch.get_num_threads()} torch threads, Python {platform.python_version()}, "
        f"{datetime.date.today().isoformat()}. Load average (1 / 5 / 15 min) before: "
        f"{' / '.join(f'{x:.2f}' for x in load_before)}, after: {' / '.join(f'{x:.2f}' for x in load_after)} "
        f"(the machine's 2 cores are shared; timings vary with other load, CPU seconds less than wall).",
        "",
        f"{args.pairs:,} pairs of {images:,} images ({args.captions} captions each), random image features "
        f"({args.image_dim} dims) and caption embeddings ({args.text_dim} dims): points of "
        f"{args.image_dim + args.text_dim:,} dims. `vlcore.distill.kmeans_init.kmeans_init`: L2-normalised "
        f"concatenation of the normalised feature and embedding, scikit-learn MiniBatchKMeans (k-means++, "
        f"n_init {N_INIT}, batch {BATCH_SIZE}, at most {MAX_ITER} passes, its no-improvement stop; {THREADS} BLAS "
        f"thread), then the "
        f"distinct nearest real pair per centroid (float64 distances). Random data have no clusters, so the "
        f"passes stop on the no-improvement rule; real features may take more mini-batch steps.",
        "",
        "| K (synthetic pairs) | wall (s) | CPU (s) | passes | mini-batch steps | centroids sharing a nearest pair |",
        "|---|---|---|---|---|---|",
    ]
    for k, wall, cpu, info in rows:
        lines.append(f"| {k} | {wall:.1f} | {cpu:.1f} | {info['iterations']} | {info['steps']} | "
                     f"{info['shared_nearest']} |")
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
