"""Tuning the distillers' learning rates and iterations without touching dev or test: every run
trains on Flickr8k's train split less 1000 held-out images (the dataset option holdout=1000) and is
scored on those 1000 images (the split ``holdout``).  Each variant is the method's shipped recipe
with a few settings overridden (``vl run --set``); the table goes to benchmarks/TUNING.md.

    python benchmarks/tune_flickr8k.py [--data ../shared/data/flickr8k-dev] [--only lors]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
HERE = ROOT / "benchmarks"
RUNS = Path("runs") / "tune"  # relative to ROOT (the commands run there), as the table shows them
HOLDOUT = 1000
#: method -> (recipe, buffer stage's head, variants: tag -> overrides of the distilled stage)
GRID = {
    "bitraj": ("flickr8k-bitraj.toml", "linear", {
        "lr100": {},
        "lr1000": {"lr-images": 1000.0, "lr-text": 1000.0},
    }),
    "lors": ("flickr8k-lors.toml", "linear", {
        "lr100-sim10": {},
        "lr1000-sim10": {"lr-images": 1000.0, "lr-text": 1000.0},
        "lr100-sim1": {"lr-similarity": 1.0},
    }),
    "repblend": ("flickr8k-repblend.toml", "mlp", {
        "lr100-sim10": {},
        "lr1000-sim10": {"lr-images": 1000.0, "lr-text": 1000.0},
        "lr100-sim1": {"lr-similarity": 1.0},
    }),
}


def run(method: str, tag: str, data: str, iterations: int) -> dict:
    recipe, head, variants = GRID[method]
    out = RUNS / f"{method}-{tag}-{iterations}"
    sets = {"common.dataset-option": f'["holdout={HOLDOUT}"]', "buffer.out": str(RUNS / f"buffer-{head}"),
            "distilled.iterations": str(iterations), "distilled.no-eval": "true",
            **{f"distilled.{k}": str(v) for k, v in variants[tag].items()}}
    cmd = ["vl", "run", f"recipes/{recipe}", "--data", data, "--eval-split", "holdout", "--out", str(out), "--json"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    print("$ " + shlex.join(cmd), flush=True)
    t0, c0 = time.time(), os.times()
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    c1 = os.times()
    if proc.returncode != 0:
        raise SystemExit(f"failed:\n{proc.stderr[-3000:]}")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    meta = json.loads((ROOT / out / "distilled" / "meta.json").read_text())
    return {"method": method, "tag": tag, "iterations": iterations, "overrides": variants[tag], **metrics,
            "distill_s": meta.get("seconds"), "wall_s": round(time.time() - t0, 1),
            "cpu_s": round((c1.children_user + c1.children_system) - (c0.children_user + c0.children_system), 1),
            "command": shlex.join(cmd)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/flickr8k-dev")
    ap.add_argument("--only", help="methods (comma-separated)")
    ap.add_argument("--tags", help="variants (comma-separated)")
    ap.add_argument("--iterations", type=int, default=300)
    args = ap.parse_args()
    log = HERE / "tuning.json"
    rows = json.loads(log.read_text()) if log.exists() else []
    for method in (args.only.split(",") if args.only else GRID):
        for tag in GRID[method][2]:
            if args.tags and tag not in args.tags.split(","):
                continue
            if any(r["method"] == method and r["tag"] == tag and r["iterations"] == args.iterations for r in rows):
                continue
            r = run(method, tag, args.data, args.iterations)
            print(f"  {method} {tag}: TR@1 {r['tr_r1']:.1f} IR@1 {r['ir_r1']:.1f} rsum {r['rsum']:.1f} "
                  f"({r['distill_s']} s distillation)", flush=True)
            rows.append(r)
            log.write_text(json.dumps(rows, indent=1))
    machine = f"{platform.machine()}, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    lines = ["## Tuning on held-out training images (not dev, not test)", "",
             f"Produced by `python benchmarks/tune_flickr8k.py` on {machine}, {time.strftime('%Y-%m-%d')}. "
             f"Every run trains on Flickr8k train minus {HOLDOUT} held-out images (`--dataset-option "
             f"holdout={HOLDOUT}`: experts and distillation alike) and is scored on those {HOLDOUT} images "
             "(`--split holdout`; 3 evaluation seeds, the protocol of the final table). 100 pairs of storage; "
             "each row is the method's recipe with the settings shown overridden.", "",
             "| method | variant | overrides | iterations | TR@1 | TR@5 | IR@1 | IR@5 | rsum | distillation (s) |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["method"], -r["rsum"])):
        ov = ", ".join(f"{k}={v}" for k, v in r["overrides"].items()) or "(recipe)"
        lines.append(f"| {r['method']} | {r['tag']} | {ov} | {r['iterations']} | {r['tr_r1']:.1f}±{r['tr_r1_std']:.1f} | "
                     f"{r['tr_r5']:.1f} | {r['ir_r1']:.1f}±{r['ir_r1_std']:.1f} | {r['ir_r5']:.1f} | {r['rsum']:.1f} | "
                     f"{r['distill_s']} |")
    (HERE / "TUNING.md").write_text("\n".join(lines) + "\n")
    print(f"wrote {HERE / 'TUNING.md'}")


if __name__ == "__main__":
    main()
