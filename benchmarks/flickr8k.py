"""The Flickr8k results table: full-data models, distilled sets and the four coreset baselines,
all evaluated on the dev split (never test).  Every step is a `vl` command; outputs go to runs/ and
are reused when present (the run resumes), and the tables are written to benchmarks/FLICKR8K.md,
which RESULTS.md includes.

    python benchmarks/flickr8k.py [--data ../shared/data/flickr8k-dev] [--seeds 3]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "runs"
MODEL = ["--encoder", "effnet-lite0", "--text-encoder", "minilm", "--image-size", "112", "--trainable", "frozen"]
BUDGETS = [100, 200, 500, 1000]
METHODS = ["random", "herding", "kcenter", "forgetting"]
KEYS = ["tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"]


def vl(args: list[str], log: dict, key: str, out: Path, done: Path, again: str = "--overwrite") -> None:
    """Run `vl ARGS` unless ``done`` exists; record the command and its wall time.  An ``out`` left by
    an interrupted run is continued (``again="--resume"``: experts, distill) or replaced (the others):
    a `vl` command refuses an occupied folder unless told which."""
    cmd = ["vl", *args]
    shown = " ".join(shlex.quote(a) for a in cmd).replace(str(ROOT) + "/", "").replace(
        str(ROOT.parent / "shared"), "../shared")
    if done.exists() and key in log:
        log[key]["command"] = shown
        return
    if out.is_dir() and any(out.iterdir()):
        cmd.append(again)  # not in the recorded command: the settings are the same
    print(f"$ {shown}", flush=True)
    t0 = time.time()
    subprocess.run(cmd, check=True, cwd=ROOT, stdout=subprocess.DEVNULL if "--json" not in args else None)
    log[key] = {"command": shown, "seconds": round(time.time() - t0, 1)}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "flickr8k-dev"))
    ap.add_argument("--seeds", type=int, default=3)
    ap.add_argument("--iterations", type=int, default=200)
    args = ap.parse_args()
    data = ["--dataset", "flickr8k", "--data", args.data]
    RUNS.mkdir(exist_ok=True)
    log_path = RUNS / "f8k-log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}

    def save():
        log_path.write_text(json.dumps(log, indent=1))

    # the full-data models (upper bounds)
    for name, model in (("full-effnet", MODEL), ("full-convnet", ["--encoder", "convnet", "--text-encoder", "minilm",
                                                                  "--image-size", "32", "--trainable", "full"])):
        out = RUNS / f"f8k-{name}"
        vl(["train", *data, *model, "--split", "dev", "--epochs", "10", "--out", str(out)], log, name, out,
           out / "metrics.json")
        save()
    # experts and distillation
    buf = RUNS / "f8k-buffer"
    vl(["experts", *data, *MODEL, "--num-experts", "10", "--epochs", "4", "--out", str(buf)], log, "experts", buf,
       buf / "expert_009.safetensors", again="--resume")
    save()
    sets = []
    for n in (100, 200):
        out = RUNS / f"f8k-bitraj-{n}"
        vl(["distill", "--distiller", "bitraj", "--buffer", str(buf), "--pairs", str(n), "--iterations",
            str(args.iterations), "--syn-steps", "8", "--expert-epochs", "1", "--max-start-epoch", "2",
            "--lr-images", "100", "--lr-text", "100", "--lr-lr", "0.01", "--eval-every", "50", "--seed", "0",
            "--out", str(out)], log, f"bitraj-{n}", out, out / "dev_recall.png", again="--resume")
        save()
        sets.append((f"bitraj-{n}", "bitraj", n, out))
    # coresets: herding and k-center in the joint space of the buffer's expert; forgetting trains its own model
    for method in METHODS:
        for n in BUDGETS:
            out = RUNS / f"f8k-{method}-{n}"
            extra = ["--buffer", str(buf)] if method in ("herding", "kcenter") else [*data, *MODEL]
            vl(["coreset", "--method", method, *extra, "--budget", str(n), "--seed", "0", "--out", str(out)], log,
               f"{method}-{n}", out, out / "meta.json")
            save()
            sets.append((f"{method}-{n}", method, n, out))
    # evaluation of every pair set
    results = {}
    for key, method, n, out in sets:
        ev = out / "eval-dev" / "metrics.json"
        vl(["eval", str(out), "--split", "dev", "--seeds", str(args.seeds), "--json"], log, f"eval-{key}", ev.parent,
           ev)
        save()
        results[key] = json.loads(ev.read_text())
    for name in ("full-effnet", "full-convnet"):
        results[name] = json.loads((RUNS / f"f8k-{name}" / "metrics.json").read_text())
    write_tables(results, log, args)


def cell(m, k):
    return f"{m[k]:.1f}±{m.get(k + '_std', 0):.1f}"


def write_tables(results, log, args):
    machine = f"{platform.machine()} Linux, {os.cpu_count()} CPU cores, no GPU, Python {platform.python_version()}"
    L = ["# Flickr8k (dev split) results", "",
         f"Produced by `python benchmarks/flickr8k.py --seeds {args.seeds} --iterations {args.iterations}` on "
         f"{machine}, {time.strftime('%Y-%m-%d')}. Model for every row but the last: frozen ImageNet "
         "EfficientNet-Lite0 at 112 px + trainable heads (image Linear 1280->256, text head 384->256), "
         "text encoder all-MiniLM-L6-v2 (frozen). Each pair set is evaluated by training fresh models "
         f"({args.seeds} seeds, SGD momentum 0.9, weight decay 5e-4, batch 64, 50 epochs; lr = the learned step "
         "size for distilled sets, 0.03 for coresets) and measuring retrieval on Flickr8k dev (1,000 images x "
         "5 captions). Mean±std over seeds, percent. Distilled rows are the *last* set of each run (no "
         "selection on dev).", ""]
    L += ["## Distilled vs random vs the full data (TR = image->text, IR = text->image)", "",
          "| training set | pairs | TR@1 | TR@5 | TR@10 | IR@1 | IR@5 | IR@10 | wall time (s) |",
          "|---|---|---|---|---|---|---|---|---|"]
    rows = [("random", "random-100", 100), ("random", "random-200", 200), ("random", "random-1000", 1000),
            ("bitraj (distilled)", "bitraj-100", 100), ("bitraj (distilled)", "bitraj-200", 200),
            ("full training split", "full-effnet", 30000),
            ("full, convnet from scratch (32 px)", "full-convnet", 30000)]
    for label, key, n in rows:
        m = results[key]
        secs = log.get(key, {}).get("seconds", "")
        L.append(f"| {label} | {n} | " + " | ".join(cell(m, k) for k in KEYS) + f" | {secs} |")
    L += ["", "## Coreset baselines (the paper's Table 1 layout) and distillation", ""]
    for side, keys in (("TR (image -> text)", KEYS[:3]), ("IR (text -> image)", KEYS[3:])):
        L += [f"### {side}: R@1 / R@5 / R@10", "",
              "| pairs | " + " | ".join(METHODS) + " | distilled (bitraj) |", "|---" * (len(METHODS) + 2) + "|"]
        for n in BUDGETS:
            row = [" / ".join(f"{results[f'{m}-{n}'][k]:.1f}" for k in keys) for m in METHODS]
            d = results.get(f"bitraj-{n}")
            row.append(" / ".join(f"{d[k]:.1f}" for k in keys) if d else "-")
            L.append(f"| {n} | " + " | ".join(row) + " |")
        L.append("")
    L += ["Standard deviations of every cell are in the `eval-dev/metrics.json` of each run; R@1 std:", ""]
    L += ["| pairs | " + " | ".join(METHODS) + " |", "|---" * (len(METHODS) + 1) + "|"]
    for n in BUDGETS:
        L.append(f"| {n} | " + " | ".join(f"TR {results[f'{m}-{n}']['tr_r1_std']:.1f}, IR "
                                          f"{results[f'{m}-{n}']['ir_r1_std']:.1f}" for m in METHODS) + " |")
    L += ["", "## Commands (in order) and wall time", "", "| step | command | wall time (s) |", "|---|---|---|"]
    for key, v in log.items():
        L.append(f"| {key} | `{v['command']}` | {v.get('seconds', '')} |")
    (ROOT / "benchmarks" / "FLICKR8K.md").write_text("\n".join(L) + "\n")
    print(f"wrote {ROOT / 'benchmarks' / 'FLICKR8K.md'}")


if __name__ == "__main__":
    main()
