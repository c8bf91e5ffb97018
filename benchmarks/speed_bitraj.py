"""Seconds per outer iteration and peak memory of the bitraj distiller, for several encoders,
trainable modes and syn_steps.  Each configuration runs in its own process (so peak RSS is its own)
on tiny embedded data; the table is written to benchmarks/SPEED.md.

    python benchmarks/speed_bitraj.py            # all configurations (about 10-20 minutes on 2 CPU cores)
    python benchmarks/speed_bitraj.py --quick    # two small ones
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent

CONFIGS = [
    # label, spec, pairs
    ("convnet w32 full 32px", {"encoder": "convnet", "encoder_options": {"width": 32}, "image_size": 32,
                               "trainable": "full"}, 50),
    ("effnet-lite0 frozen 64px", {"encoder": "effnet-lite0", "image_size": 64, "trainable": "frozen"}, 50),
    ("effnet-lite0 frozen 112px", {"encoder": "effnet-lite0", "image_size": 112, "trainable": "frozen"}, 100),
    # 64 tokens per image: memory grows with syn_steps x pairs x tokens (the whole unroll is kept)
    ("vit (random init, patch 4) lora 32px", {"encoder": "vit", "encoder_options": {"pretrained": "none",
                                              "patch_size": 4}, "image_size": 32, "trainable": "lora"}, 50),
    ("nfnet (random init) frozen 64px", {"encoder": "nfnet", "encoder_options": {"pretrained": "none"},
                                         "image_size": 64, "trainable": "frozen"}, 50),
]
STEPS = [2, 8, 20]
#: configurations whose full unroll would not fit in 24 GB at 20 steps (vit lora: 13.4 GB at 8 steps)
MAX_STEPS = {"vit (random init, patch 4) lora 32px": 8}


def child(spec_d: dict, pairs: int, steps: int) -> dict:
    import resource
    import tempfile

    import torch

    from vlcore.components import DistillContext
    from vlcore.model import ModelSpec
    from vlcore.pipeline import build_dataset, build_text_encoder, split_data
    from vlcore.registry import get_host
    from vlcore.trajectories import ExpertConfig, train_experts

    torch.set_num_threads(min(2, os.cpu_count() or 1))
    host = get_host()
    spec = ModelSpec(**spec_d)
    ds = build_dataset("embedded", options={"num_train": max(200, pairs), "num_dev": 20}, host=host)
    train = split_data(ds.split("train"), spec, build_text_encoder(spec, host))
    tmp = Path(tempfile.mkdtemp())
    buf = train_experts(spec, train, ExpertConfig(num_experts=1, epochs=2, lr=0.01), tmp / "buf",
                        dataset_info={"name": "embedded"})
    base_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    # one outer iteration = the time between two successive trajectory-loss evaluations
    import vlcore.plugins.distillers.bitraj as bt

    stamps, real = [], bt.trajectory_loss

    def timed(*a, **k):
        stamps.append(time.perf_counter())
        return real(*a, **k)

    bt.trajectory_loss = timed
    iters = 5
    d = host.create("distiller", "bitraj", {"pairs": pairs, "iterations": iters, "syn_steps": steps,
                                            "max_start_epoch": 1, "checkpoint_every": 0})
    d.distill(DistillContext(spec=spec, buffer=buf, train=train, out=tmp / "ps", host=host, progress=False))
    per_it = (stamps[-1] - stamps[0]) / (len(stamps) - 1)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"s_per_it": per_it, "peak_mb": peak, "setup_mb": base_rss}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", help="run only configurations whose label contains this text")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        spec_d, pairs, steps = json.loads(args.child)
        print("RESULT " + json.dumps(child(spec_d, pairs, steps)))
        return
    configs = CONFIGS[:2] if args.quick else CONFIGS
    if args.only:
        configs = [c for c in configs if args.only in c[0]]
    steps_list = [2, 8] if args.quick else STEPS
    rows = []
    for label, spec_d, pairs in configs:
        for steps in steps_list:
            if steps > MAX_STEPS.get(label, steps):
                continue
            cmd = [sys.executable, __file__, "--child", json.dumps([spec_d, pairs, steps])]
            p = subprocess.run(cmd, capture_output=True, text=True)
            line = [l for l in p.stdout.splitlines() if l.startswith("RESULT ")]
            if p.returncode != 0 or not line:
                print(f"{label} steps={steps}: FAILED\n{p.stderr[-2000:]}", file=sys.stderr)
                rows.append((label, pairs, steps, None))
                continue
            r = json.loads(line[0][7:])
            print(f"{label:34s} pairs={pairs:4d} syn_steps={steps:3d}  {r['s_per_it']:.2f} s/it  peak {r['peak_mb']:.0f} MB",
                  flush=True)
            rows.append((label, pairs, steps, r))
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, torch threads 2, {platform.python_version()}"
    out = ["# bitraj speed and memory", "",
           f"Produced by `python benchmarks/speed_bitraj.py{' --quick' if args.quick else ''}` on {machine} "
           f"({time.strftime('%Y-%m-%d')}). One outer iteration = syn_steps differentiable student steps on the "
           "whole synthetic set plus the backward pass to pixels, texts and step sizes. Peak memory is the "
           "process's peak RSS (setup included: data, text encoder, one expert). Timings on a shared 2-core "
           "machine vary by about +-30%.", "",
           "Configurations are not run past their entry in MAX_STEPS: the vit LoRA unroll keeps every step's graph (memory grows linearly with syn_steps), and at 20 steps it would need about 30 GB, more than this machine has. A constant-memory unroll (TESLA) is not implemented yet.", "",
           "| configuration | pairs | syn_steps | s / iteration | peak RSS (MB) |", "|---|---|---|---|---|"]
    for label, pairs, steps, r in rows:
        out.append(f"| {label} | {pairs} | {steps} | " +
                   (f"{r['s_per_it']:.2f} | {r['peak_mb']:.0f} |" if r else "failed | - |"))
    (HERE / "SPEED.md").write_text("\n".join(out) + "\n")
    print(f"wrote {HERE / 'SPEED.md'}")


if __name__ == "__main__":
    main()
