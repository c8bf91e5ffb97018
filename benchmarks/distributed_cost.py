"""What torchrun costs and buys on this machine: s/iteration and peak memory per rank of `vl distill`
in one process (1 and 2 trajectories per iteration) and in 2 gloo ranks (1 trajectory each: the
same work as one process with 2), on the Flickr8k table's model (frozen EfficientNet-Lite0 112 px +
MiniLM, bitraj, 100 pairs) and its expert buffer (benchmarks/flickr8k.py makes it).

    python benchmarks/distributed_cost.py [--data ../shared/data/flickr8k-dev] [--iterations 20]

Writes benchmarks/DISTRIBUTED.md (included in RESULTS.md).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: run argv[1:], exit with its status, print the largest resident set (KiB) of any process it ran
PEAK = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
        "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")
OUT = ROOT / "runs" / "distributed-cost"


def run(label: str, launcher: list[str], args: list[str], threads: int, out: Path) -> dict:
    shutil.rmtree(out, ignore_errors=True)
    cmd = launcher + ["vl", "distill", *args, "--out", str(out.relative_to(ROOT))]
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.time()
    print(f"$ OMP_NUM_THREADS={threads} {shlex.join(cmd)}", flush=True)
    # through a fresh Python process: its children's peak resident set is this run's alone
    proc = subprocess.run([sys.executable, "-c", PEAK, *cmd], cwd=ROOT, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{label} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-3000:]}")
    wall = time.time() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    peak_kb = int(proc.stdout.strip().splitlines()[-1])
    meta = json.loads((out / "meta.json").read_text())
    its = meta["iterations_done"]
    return {"label": label, "command": f"OMP_NUM_THREADS={threads} {shlex.join(cmd)}", "wall": wall,
            "cpu": after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime,
            "s_it": meta["seconds"] / its, "iterations": its,
            "peak_mb": peak_kb / 1024}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/flickr8k-dev")
    ap.add_argument("--buffer", default="runs/f8k/buffer-linear")
    ap.add_argument("--iterations", type=int, default=20)
    a = ap.parse_args()
    if not (ROOT / a.buffer / "index.json").exists():
        raise SystemExit(f"no buffer at {a.buffer}: run `python benchmarks/flickr8k.py --only bitraj-100` first")
    base = ["--buffer", a.buffer, "--dataset", "flickr8k", "--data", a.data, "--pairs", "100", "--iterations",
            str(a.iterations), "--syn-steps", "8", "--batch-syn", "0", "--max-start-epoch", "2", "--no-eval",
            "--checkpoint-every", "0", "--seed", "0"]
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python"]
    ncpu = os.cpu_count() or 1
    rows = []
    rows.append(run("1 process, 1 trajectory / iteration", [], base, ncpu, OUT / "one-k1"))
    rows.append(run("1 process, 2 trajectories / iteration", [], base + ["--trajectories", "2"], ncpu, OUT / "one-k2"))
    rows.append(run("2 ranks (gloo), 1 trajectory each", torchrun, base, max(1, ncpu // 2), OUT / "two-k1"))
    machine = f"{platform.machine()} Linux, {ncpu} CPU cores, no GPU, Python {platform.python_version()}"
    L = ["# torchrun on this CPU: what 2 ranks cost and buy", "",
         f"Produced by `python benchmarks/distributed_cost.py --iterations {a.iterations}` on {machine}, "
         f"{time.strftime('%Y-%m-%d')}. bitraj, 100 pairs, 8 inner steps, whole synthetic set per step, frozen "
         "EfficientNet-Lite0 112 px + MiniLM, the Flickr8k table's buffer. The 2-rank run does the work of the "
         "1-process 2-trajectory run (the same plans, gradients averaged by all_reduce; tests/test_distributed.py "
         "checks the results agree) with the machine's cores split between the ranks. Peak memory: the "
         "largest resident set of one process of the run (a rank, under torchrun).", "",
         "| run | s / iteration | trajectories / s | wall (s) | CPU (s) | peak memory per process (MB) |",
         "|---|---|---|---|---|---|"]
    for r in rows:
        k = 1 if r["label"].startswith("1 process, 1") else 2
        L.append(f"| {r['label']} | {r['s_it']:.2f} | {k / r['s_it']:.2f} | {r['wall']:.0f} | {r['cpu']:.0f} | "
                 f"{r['peak_mb']:.0f} |")
    L += ["", "On 2 cores the ranks share the cores the single process uses, so 2 ranks buy no speed here: "
          "their value is on machines with a GPU (or a node) per rank, where each rank's unroll runs in "
          "parallel at the cost of one all_reduce of the learned tensors per iteration (100 pairs at 112 px: "
          "about 3.8 M floats).", "", "## Commands", ""]
    L += [f"- {r['label']}: `{r['command']}`" for r in rows]
    (ROOT / "benchmarks" / "DISTRIBUTED.md").write_text("\n".join(L) + "\n")
    print("wrote benchmarks/DISTRIBUTED.md")


if __name__ == "__main__":
    main()
