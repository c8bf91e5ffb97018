"""The Flickr8k table: the full-data model, bitraj / LoRS / RepBlend at 100-500 pairs, the four
coresets at 100-1000 pairs and the ablations, all on one protocol, evaluated on the dev split.

Every row is a shipped recipe run by `vl run` (the buffer stages shared between rows: they are the
same experts); a row's command is in the table, so it can be rerun alone.  Outputs go to
runs/f8k/ and are reused when present (a row's stages resume), the tables to
benchmarks/FLICKR8K.md, which RESULTS.md includes.

    python benchmarks/flickr8k.py [--data ../shared/data/flickr8k-dev] [--only lors]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shlex
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RUNS = Path("runs") / "f8k"  # relative to ROOT (the commands run there), as the table shows them
KEYS = ["tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"]
DISTILLERS = ["bitraj", "lors", "repblend"]
CORESETS = ["random", "herding", "kcenter", "forgetting"]
#: the buffer each recipe's experts stage is shared as
BUFFER = {"repblend": "buffer-mlp"}
#: (key, recipe, overrides, label)
ROWS = ([(f"full-{s}", "flickr8k-full", {"full.seed": s}, "full training split") for s in (0, 1, 2)] +
        [(f"{m}-{n}", f"flickr8k-{m}-{n}", {}, m) for m in DISTILLERS for n in (100, 200, 500)] +
        [(f"{m}-{n}", f"flickr8k-{m}-{n}", {}, m) for m in CORESETS for n in (100, 200, 500, 1000)] +
        [("repblend-100-noblend", "flickr8k-repblend-100", {"distilled.blend": "false"}, "RepBlend without blending"),
         ("lors-100-nosim", "flickr8k-lors-100", {"distilled.learn-similarity": "false"}, "LoRS without S")])


def command(key: str, recipe: str, sets: dict, data: str) -> list[str]:
    method = recipe.split("-")[1]
    sets = dict(sets)
    if method in DISTILLERS + ["herding", "kcenter"]:
        sets["buffer.out"] = str(RUNS / BUFFER.get(method, "buffer-linear"))
    cmd = ["vl", "run", f"recipes/{recipe}.toml", "--data", data, "--out", str(RUNS / key), "--json"]
    for k, v in sets.items():
        cmd += ["--set", f"{k}={v}"]
    return cmd


def shown(cmd: list[str]) -> str:
    return shlex.join(cmd).replace(str(ROOT) + "/", "").replace(str(ROOT.parent / "shared"), "../shared")


def run_row(key, recipe, sets, data, log) -> dict:
    cmd = command(key, recipe, sets, data)
    t0, c0 = time.time(), os.times()
    print(f"$ {shown(cmd)}", flush=True)
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        raise SystemExit(f"{key} failed:\n{proc.stderr[-3000:]}")
    c1 = os.times()
    entry = log.setdefault(key, {})
    entry["command"] = shown(cmd)
    if re.search(r"\] \S+: vl ", proc.stderr + proc.stdout) or "wall_s" not in entry:  # a stage ran: measured
        entry["wall_s"] = round(time.time() - t0, 1)
        entry["cpu_s"] = round(c1.children_user + c1.children_system - c0.children_user - c0.children_system, 1)
    metrics = ROOT / RUNS / key / "full" / "metrics.json"  # a train stage: its metrics file (no eval stage)
    if metrics.exists():
        return json.loads(metrics.read_text())
    return json.loads(proc.stdout.strip().splitlines()[-1])


def details(key: str) -> dict:
    out = ROOT / RUNS / key
    p = out / "eval" / "details.json"
    found = json.loads(p.read_text()) if p.exists() else {}
    meta = out / "distilled" / "meta.json"
    if meta.exists():
        m = json.loads(meta.read_text())
        found["distill_s"] = m.get("seconds")
        found["iterations"] = m.get("iterations_done")
    return found


def cell(m, k):
    return f"{m[k]:.1f}±{m.get(k + '_std', 0):.1f}"


def mean_std(runs: list[dict]) -> dict:
    import statistics

    out = {}
    for k in KEYS + ["rsum"]:
        vals = [r[k] for r in runs]
        out[k] = statistics.fmean(vals)
        out[k + "_std"] = statistics.pstdev(vals)
    return out


def write_tables(results: dict, log: dict, data: str) -> None:
    machine = f"{platform.machine()} Linux, {os.cpu_count()} CPU cores, no GPU, Python {platform.python_version()}"
    full = mean_std([results[f"full-{s}"] for s in (0, 1, 2)])
    L = ["# Flickr8k (dev split): distillation, coresets and the full data on one protocol", "",
         f"Produced by `python benchmarks/flickr8k.py` on {machine}, {time.strftime('%Y-%m-%d')}; every row is a "
         "recipe of `recipes/` run by `vl run` (its command below). Model: frozen ImageNet EfficientNet-Lite0 at "
         "112 px with trainable heads (image: Linear 1280->256; RepBlend: its MLP head 1280->256, as the "
         "text head), text encoder all-MiniLM-L6-v2 (frozen, 384-d). Each pair set is evaluated by training "
         "fresh models on it (3 seeds, SGD momentum 0.9, weight decay 5e-4, batch 64, 50 epochs, fixed in "
         "advance; lr = the learned step size for distilled sets, 0.03 for coresets; LoRS and RepBlend sets "
         "train on their learned similarity) and measuring retrieval on Flickr8k dev (1,000 images x 5 "
         "captions). Mean±std over the seeds, percent. Distilled rows are the *last* set of each run "
         "(nothing selected on dev); their settings were tuned on held-out training images "
         "(benchmarks/TUNING.md), not on dev. Storage counts every float a set holds (pixels, text "
         "embeddings, step sizes, LoRS's similarity factors): LoRS and RepBlend store one pair fewer to "
         "pay for their similarity matrix, so each budget is the same storage for every method.", ""]
    L += ["## The table", "",
          "| training set | pairs | storage (floats) | TR@1 | TR@5 | TR@10 | IR@1 | IR@5 | IR@10 | rsum | "
          "distillation wall (s) | s / iteration | CPU (s) |", "|---|---|---|---|---|---|---|---|---|---|---|---|---|"]

    def line(label, key, m, n, storage):
        if m is None:
            return f"| {label} | {n} | | not run in this table (time): `python benchmarks/flickr8k.py --only {key}` |" + " |" * 9
        e = log.get(key, {})
        d = results.get(key, {})
        its = d.get("iterations")
        sit = f"{d['distill_s'] / its:.2f}" if d.get("distill_s") and its else ""
        return (f"| {label} | {n} | {storage} | " + " | ".join(cell(m, k) for k in KEYS) +
                f" | {m['rsum']:.1f} | {d.get('distill_s', '') or ''} | {sit} | {e.get('cpu_s', '')} |")

    L.append(line("full training split (3 seeds)", "full-0", full, "30,000", "-"))
    for m in DISTILLERS:
        for n in (100, 200, 500):
            key = f"{m}-{n}"
            st = results.get(key, {}).get("storage") or {}
            L.append(line(f"{m} (distilled)", key, results.get(key), st.get("pairs", n), f"{st.get('floats', 0):,}"))
    for m in CORESETS:
        for n in (100, 200, 500, 1000):
            key = f"{m}-{n}"
            st = results.get(key, {}).get("storage") or {}
            L.append(line(f"{m} (coreset)", key, results.get(key), n, f"{st.get('floats', 0):,}"))
    for key, label in (("repblend-100-noblend", "RepBlend without blending"), ("lors-100-nosim", "LoRS without S")):
        st = results.get(key, {}).get("storage") or {}
        L.append(line(f"{label} (ablation)", key, results.get(key), st.get("pairs", 100), f"{st.get('floats', 0):,}"))
    done100 = [m for m in DISTILLERS if f"{m}-100" in results]
    best_core = max((m for m in CORESETS if f"{m}-1000" in results), key=lambda m: results[f"{m}-1000"]["rsum"])
    c = results[f"{best_core}-1000"]
    L += ["", f"Full-data model: TR@1 {full['tr_r1']:.1f} / IR@1 {full['ir_r1']:.1f} (50%: {full['tr_r1'] / 2:.2f} / "
          f"{full['ir_r1'] / 2:.2f}). Best coreset of 1000 pairs (by rsum): {best_core}, {c['tr_r1']:.1f} / "
          f"{c['ir_r1']:.1f}. Distilled 100-pair sets (TR@1 / IR@1, share of the full-data model, and whether "
          "they beat that coreset on both with a tenth of its pairs):", ""]
    for m in done100:
        b = results[f"{m}-100"]
        beats = b["tr_r1"] > c["tr_r1"] and b["ir_r1"] > c["ir_r1"]
        L.append(f"- {m}: {b['tr_r1']:.1f} / {b['ir_r1']:.1f} = {100 * b['tr_r1'] / full['tr_r1']:.0f}% / "
                 f"{100 * b['ir_r1'] / full['ir_r1']:.0f}%; {'beats' if beats else 'does not beat'} the coreset")
    L += ["", "Distillation wall time includes the run's periodic dev evaluations (one quick model every "
          "`eval-every` iterations) and, for some rows, other work on the machine; CPU seconds are the whole "
          "`vl run` (all stages not reused).", ""]
    L += ["## The paper's Table 1 layout (R@1 / R@5 / R@10)", ""]
    for side, keys in (("TR (image -> text)", KEYS[:3]), ("IR (text -> image)", KEYS[3:])):
        L += [f"### {side}", "", "| pairs | " + " | ".join(CORESETS + DISTILLERS) + " |",
              "|---" * (len(CORESETS) + len(DISTILLERS) + 1) + "|"]
        for n in (100, 200, 500, 1000):
            row = []
            for m in CORESETS + DISTILLERS:
                r = results.get(f"{m}-{n}")
                row.append(" / ".join(f"{r[k]:.1f}" for k in keys) if r else "-")
            L.append(f"| {n} | " + " | ".join(row) + " |")
        L.append("")
    L += ["## Commands", "", f"Data: `{data}` (any folder in the Flickr8k layout). Buffers are shared between "
          "rows with `--set buffer.out=...`; without it a row trains the same experts itself.", "",
          "| row | command | wall (s) | CPU (s) |", "|---|---|---|---|"]
    for key, *_ in ROWS:
        if key not in results:
            continue
        e = log.get(key, {})
        L.append(f"| {key} | `{e.get('command', '')}` | {e.get('wall_s', '')} | {e.get('cpu_s', '')} |")
    (ROOT / "benchmarks" / "FLICKR8K.md").write_text("\n".join(L) + "\n")
    print(f"wrote {ROOT / 'benchmarks' / 'FLICKR8K.md'}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", default="../shared/data/flickr8k-dev")
    ap.add_argument("--only", help="rows whose key contains one of these (comma-separated)")
    ap.add_argument("--exact", action="store_true", help="--only names whole keys")
    args = ap.parse_args()
    (ROOT / RUNS).mkdir(parents=True, exist_ok=True)
    log_path = ROOT / RUNS / "log.json"
    log = json.loads(log_path.read_text()) if log_path.exists() else {}
    results = {}
    for key, recipe, sets, _ in ROWS:
        wanted = args.only.split(",") if args.only else []
        if wanted and not any((o == key) if args.exact else (o in key) for o in wanted):
            done = log.get(key, {}).get("metrics")  # a row run before: in the table, not rerun
            if done:
                results[key] = {**done, **details(key)}
            continue
        metrics = run_row(key, recipe, sets, args.data, log)
        log[key]["metrics"] = metrics
        log_path.write_text(json.dumps(log, indent=1))
        results[key] = {**metrics, **details(key)}
    if all(f"full-{s}" in results for s in (0, 1, 2)) and any(k.endswith("-100") for k in results):
        write_tables(results, log, args.data)  # rows not run are listed with the command that runs them


if __name__ == "__main__":
    main()
