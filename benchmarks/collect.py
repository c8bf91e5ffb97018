"""Assemble benchmarks/RESULTS.md, the one results file, from the tables the benchmark scripts
write (FLICKR8K.md, TUNING.md, CROSS_ARCH.md, BACKBONE.md, KMEANS.md, UNROLL.md, DISTRIBUTED.md) and the
demo's results
(vl-demo/results.md).

    python benchmarks/collect.py [--demo vl-demo] [--demo-seconds S]
"""
from __future__ import annotations

import argparse
import os
import platform
import re
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

INTRO = """# Results

Every number here comes with the command (or recipe file) that produced it and the machine it
ran on (a 2-core x86_64 CPU without a GPU: no number here is a GPU run, and none is on Flickr30K or
COCO, whose published numbers are in `../shared/REFERENCE.md`). No test split was used for anything.
Regenerate this file with `python benchmarks/collect.py` after running the scripts named in each
section.

## In short (Flickr8k dev, frozen EfficientNet-Lite0 112 px + MiniLM; the table below)
- The full-data model: TR@1 15.0 / IR@1 11.0. At the storage of 100 pairs (TR@1 / IR@1, share of
  it): RepBlend 9.3 / 5.4 (62% / 49%), AMD 8.5 / 5.9 (56% / 54%), LoRS 7.5 / 5.2 (50% / 47%), bitraj
  7.2 / 4.2 (48% / 38%), MDM 6.6 / 6.1 (44% / 55%), PTM-ST 6.5 / 5.0 (43% / 45%); the best coreset of
  1000 pairs (random) 4.8 / 4.3, which every distilled 100-pair set but bitraj beats on both with a
  tenth of its storage.
- **The aim of 60% of the full-data model on both TR@1 and IR@1 at 100 pairs is not reached**: no set
  is above 55% on IR@1 (MDM; RepBlend is the one above 60% on TR@1). AMD's gain over LoRS (rsum 117.1
  vs 111.4) comes from its asynchronous start epochs: LoRS with async starts alone reads 117.4, with
  k-means initial pairs alone 112.4 (the same as LoRS, within the seeds' spread; on bitraj 101.0
  against 101.6: k-means initialisation does not help on Flickr8k at 100 pairs). LoRS without its
  similarity matrix falls to 31.9. PTM-ST, on LoRS's settings with two phases of 50 / 49 pairs,
  does not help here (104.0); its own tuning is not run yet.
- **MDM** (no unroll) reaches rsum 109.2 against LoRS's 111.4 with 230 CPU-seconds for the whole row
  against LoRS's 627 (the distillation alone 203 s on one core against LoRS's 600 s on one core for
  its async ablation): about a third of LoRS's CPU time, not the fifth the issue asks for, and 2 rsum
  below it. Its kernel terms add 2 rsum (107.1 without them). The published learning rate (1000)
  turned the set into noise on these [0, 1] pixels; lr 1 was chosen on held-out training images.

## Where each choice was made
- **Distillers (bitraj, LoRS, RepBlend): on held-out training images**, never on the split the
  table reports. `--dataset-option holdout=1000` moves 1,000 Flickr8k training images (5,000
  pairs) out of the training split into a `holdout` split: experts, distillation and evaluation
  models of a tuning run see only the rest, and the tuning runs are scored on `holdout`
  (benchmarks/TUNING.md, with each run's command). The Flickr8k table (FLICKR8K.md) then trains on
  the whole training split and reports on `dev`, with the settings chosen there.
- **The full-data model: epochs chosen on 10% of the training images**, held out by `vl train`
  itself, then retrained on all of them (`select_epochs`, the default). The old `vl train`
  (batch 64, lr 0.1, 10 epochs) under-reported the upper bound (Flickr8k dev TR@1 9.9 / IR@1 8.5):
  the frozen-backbone heads overfit Flickr8k within 2-3 epochs (held-out rsum 171 after epoch 1,
  138 after epoch 30 with the old settings). Batch 512, lr 0.03 and the chosen epochs give TR@1
  15.0 / IR@1 11.0 on dev (3 seeds), in line with an independent quick script (about 15 / 12).
- **Choices made earlier on dev** (of Flickr8k or the embedded dataset), before the held-out split
  existed; they favour no method over another:
  - expert learning rate for a frozen backbone 0.01, not the paper's 0.1: with 0.1 the heads
    converge within one epoch and two experts from the same initialisation that differ only in
    batch order end an epoch farther apart than the epoch's own displacement (normalised distance
    0.89 at start epoch 1, 1.5 at 2, embedded dataset): nothing to match after epoch 1. At 0.01 the
    same "noise floor" is 0.06 / 0.20 / 0.46 for start epochs 0 / 1 / 2;
  - learned step sizes start at the experts' learning rate and are learned in log space (a raw
    step size collapsed to 0 within a few iterations);
  - the evaluation learning rate of coresets (which have no learned step size): 0.03, chosen on
    Flickr8k dev for random coresets of 100 (rsum 34.0 / 39.6 / 41.6 / 42.8 at lr 0.003 / 0.01 /
    0.03 / 0.1, 2 seeds) and 1000 pairs (85.0 / 82.7 / 80.5 at 0.01 / 0.03 / 0.1). This favours
    the coresets on dev, so it makes the distilled-vs-coreset comparison harder, not easier.
- **Storage** is counted in floats for every pair set (pixels, text embeddings, step sizes, LoRS's
  similarity factors); LoRS and RepBlend store N - 1 pairs to pay for S, so each budget is the
  same storage for every method.
"""


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--demo", default=str(HERE.parent / "vl-demo"))
    ap.add_argument("--demo-seconds", type=float, default=None,
                    help="wall time of the demo run, as measured with `time vl demo`")
    args = ap.parse_args()
    parts = [INTRO]
    demo = Path(args.demo) / "results.md"
    if demo.exists():
        machine = f"{platform.machine()} Linux, {os.cpu_count()} CPU cores, no GPU"
        parts.append("## The main demo (`vl demo`, embedded dataset)\n\n"
                     f"Command: `vl demo` (no flags; the embedded recipe `vlcore/recipes/demo.toml`), on {machine}, "
                     f"{time.strftime('%Y-%m-%d', time.localtime(demo.stat().st_mtime))}. Evaluation split: "
                     "embedded dev." +
                     (f" Wall time {args.demo_seconds:.0f} s with an empty cache (VL_CACHE_DIR pointing at an "
                      "empty folder: caption encoding, image rendering and backbone features included)."
                      if args.demo_seconds else "") + "\n\n" + demo.read_text())
    else:  # no demo run here: the section measured last time is kept as it was
        old = (HERE / "RESULTS.md").read_text() if (HERE / "RESULTS.md").exists() else ""
        m = re.search(r"^## The main demo.*?(?=^## )", old, flags=re.M | re.S)
        if m:
            parts.append(m.group(0).rstrip("\n") + "\n")
    for name in ("FLICKR8K.md", "TUNING.md", "CROSS_ARCH.md", "BACKBONE.md", "KMEANS.md", "UNROLL.md",
                 "DISTRIBUTED.md"):
        p = HERE / name
        if p.exists():
            text = p.read_text()
            if not text.startswith("## "):
                text = re.sub(r"^(#+) ", r"#\1 ", text, flags=re.M)  # one heading level down
            parts.append(text)
    (HERE / "RESULTS.md").write_text("\n".join(parts))
    print(f"wrote {HERE / 'RESULTS.md'}")


if __name__ == "__main__":
    main()
