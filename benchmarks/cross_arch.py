"""Cross-architecture evaluation (issue 20, item 3): the Flickr8k table's pair sets, all made with the
frozen EfficientNet-Lite0, evaluated with other image backbones.

Rows: each 100-pair set of the Flickr8k table (every distiller and coreset) and the 1000-pair
coresets; the sets are the ones ``benchmarks/flickr8k.py`` made (``runs/f8k/ROW/distilled`` or
``.../coreset``), and a row whose set is missing says so (``--make-sets`` makes it by running that
table's row).  Columns: evaluation backbones, each at the sets' 112 px: effnet-lite0 (what the
sets were made with), effnet-lite1, effnet-lite2 (frozen ImageNet backbones, heads trained) and
convnet (ConvNet-3 trained from scratch, with a linear image head).  A cell trains fresh models on
the set with that backbone (`vl eval SET --encoder NAME`: the features are recomputed from the
set's pixels) and is reported as TR@1 / IR@1 in % of that backbone's own full-data model (`vl train`
with the same flags on the whole training split), so the columns are comparable.

Every cell is one `vl` command, its output folder under runs/f8k-xarch/ and its result in
benchmarks/cross_arch.json (committed, so a lost runs/ folder loses no cell; with --runs elsewhere,
RUNS/log.json), written after each cell: the driver resumes after any interruption, skipping the
cells done with the same command (an interrupted cell is rerun with --overwrite).  The
table goes to benchmarks/CROSS_ARCH.md and the heat map to benchmarks/cross_arch.png, rewritten
after every cell.

    python benchmarks/cross_arch.py                          # everything (CPU hours: convnet)
    python benchmarks/cross_arch.py --plan                   # only write the table of what would run
    python benchmarks/cross_arch.py --rows lors-100 --backbones effnet-lite1
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
import flickr8k as table  # noqa: E402  (the Flickr8k table driver: its rows, runs and commands)

RUNS = Path("runs") / "f8k-xarch"  # relative to ROOT, as the commands show it
IMAGE_SIZE = 112

#: evaluation backbone -> (what it is, the model flags of `vl eval` and `vl train`)
BACKBONES: dict[str, tuple[str, list[str]]] = {
    "effnet-lite0": ("EfficientNet-Lite0, frozen ImageNet (the sets' own)", ["--encoder", "effnet-lite0"]),
    "effnet-lite1": ("EfficientNet-Lite1, frozen ImageNet", ["--encoder", "effnet-lite1"]),
    "effnet-lite2": ("EfficientNet-Lite2, frozen ImageNet", ["--encoder", "effnet-lite2"]),
    # from scratch, all weights trained; a linear head to 256-d (with no head the joint space would be
    # the 12,544-d flattened feature map, and the text head 384 -> 12,544 -> 12,544)
    "convnet": ("ConvNet-3 (width 64) from scratch, linear head",
                ["--encoder", "convnet", "--trainable", "full", "--image-head", "linear"]),
}


#: what a backbone's column costs, where that decides whether it can run on this machine (measured
#: 2026-12-02 on the 2-core machine of FLICKR8K.md: ConvNet-3 forward + backward, one torch thread,
#: 0.09 s per 112-px image with the other core busy)
COST = {"convnet": "about 0.09 CPU-s per image and epoch (forward + backward at 112 px, one thread): the "
                   "full-data model is 30,000 pairs x up to 10 epochs x 3 seeds, about 20 CPU-hours, and a "
                   "cell 100 (or 1,000) pairs x 50 epochs x 3 seeds, about 0.4 (or 4) CPU-hours, so the "
                   "column is about 30 CPU-hours on this 2-core machine: a GPU's work (`--backbones convnet` "
                   "on a GPU machine; nothing else changes)"}


def default_rows() -> list[str]:
    """Each 100-pair row of the Flickr8k table and its 1000-pair coresets (its methods, as they land)."""
    return ([f"{m}-100" for m in table.DISTILLERS + table.CORESETS] + [f"{m}-1000" for m in table.CORESETS])


def plural(n: int, word: str) -> str:
    return f"{n} {word}{'' if n == 1 else 's'}"


def row_label(key: str, pairset: Path | None = None) -> tuple[str, str]:
    """(label, pairs) of a row key such as ``lors-100`` (the pairs its set holds, when it is there)."""
    method, _, n = key.rpartition("-")
    try:
        n = str(json.loads((pairset / "meta.json").read_text())["num_pairs"]) if pairset else n
    except (OSError, ValueError, KeyError, TypeError):
        pass
    kind = "distilled" if method in table.DISTILLERS else "coreset" if method in table.CORESETS else "set"
    return f"{method} ({kind})", n


@dataclass
class Config:
    rows: list[str]
    backbones: list[str]
    data: str = "../shared/data/flickr8k-dev"
    runs: Path = ROOT / RUNS
    #: evaluation seeds per cell (fresh models), as the Flickr8k table
    seeds: int = 3
    #: evaluation epochs (None: the evaluator's, 50, as the Flickr8k table)
    eval_epochs: int | None = None
    #: full-data models per backbone (seeds 0..n-1) and their epochs (the most; chosen on held-out images)
    full_seeds: int = 3
    full_epochs: int = 10
    #: --limit for every command (quick runs; None: the whole splits)
    limit: int | None = None
    #: row -> pair set folder, overriding where the Flickr8k table put it
    pairsets: dict[str, str] = field(default_factory=dict)
    make_sets: bool = False
    md: Path = HERE / "CROSS_ARCH.md"
    #: where the cells' results are kept (None: RUNS/log.json)
    log: Path | None = None
    png: Path = HERE / "cross_arch.png"


# ------------------------------------------------------------------------------------- commands
def rel(p: Path | str) -> str:
    p = Path(p)
    try:
        return str(p.resolve().relative_to(ROOT))
    except ValueError:
        return str(p)


def shown(cmd: list[str]) -> str:
    return shlex.join(cmd).replace(str(ROOT) + "/", "").replace(str(ROOT.parent / "shared"), "../shared")


def pairset_path(cfg: Config, key: str) -> Path | None:
    """The row's pair set folder, or None when it has not been made."""
    if key in cfg.pairsets:
        p = Path(cfg.pairsets[key])
        p = p if p.is_absolute() else ROOT / p
        return p if (p / "meta.json").exists() else None
    for stage in ("distilled", "coreset"):
        p = ROOT / table.RUNS / key / stage
        if (p / "meta.json").exists():
            return p
    return None


def make_set_command(cfg: Config, key: str) -> list[str]:
    # --rerun: the row may be in the table's results while its set is gone (runs/ is not kept)
    return [sys.executable, "benchmarks/flickr8k.py", "--only", key, "--exact", "--rerun", "--data", cfg.data]


def common_flags(cfg: Config) -> list[str]:
    return ["--data", cfg.data] + (["--limit", str(cfg.limit)] if cfg.limit else [])


def full_out(cfg: Config, backbone: str, seed: int) -> Path:
    return cfg.runs / f"full-{backbone}-{seed}"


def full_command(cfg: Config, backbone: str, seed: int) -> list[str]:
    return (["vl", "train", "--dataset", "flickr8k", *common_flags(cfg), *BACKBONES[backbone][1],
             "--text-encoder", "minilm", "--image-size", str(IMAGE_SIZE), "--eval-split", "dev",
             "--epochs", str(cfg.full_epochs), "--seed", str(seed)] +
            ["--out", rel(full_out(cfg, backbone, seed)), "--json"])


def eval_out(cfg: Config, key: str, backbone: str) -> Path:
    return cfg.runs / key / f"eval-{backbone}"


def eval_command(cfg: Config, key: str, backbone: str, pairset: Path) -> list[str]:
    return (["vl", "eval", rel(pairset), *common_flags(cfg), *BACKBONES[backbone][1], "--eval-split", "dev",
             "--eval-seeds", str(cfg.seeds)] +
            (["--eval-epochs", str(cfg.eval_epochs)] if cfg.eval_epochs else []) +
            ["--out", rel(eval_out(cfg, key, backbone)), "--json"])


class CellFailed(Exception):
    """A command that exited with an error (its message: the last lines it printed)."""


def run_vl(cmd: list[str], out: Path) -> dict:
    """Run one cell's command (from ROOT) and return its metrics; an output folder left by an
    interrupted run is replaced (--overwrite)."""
    from vlcore.testing.cli import vl_command

    full = (vl_command() + cmd[1:] if cmd[0] == "vl" else cmd) + (["--overwrite"] if out.exists() else [])
    proc = subprocess.run(full, cwd=ROOT, capture_output=True, text=True)
    if proc.returncode != 0:
        lines = [ln for ln in (proc.stderr or proc.stdout).strip().splitlines() if ln.strip()]
        raise CellFailed(" ".join(lines[-3:])[-600:] or f"exit status {proc.returncode}")
    metrics = out / "metrics.json"
    if metrics.exists():
        return json.loads(metrics.read_text())
    return json.loads(proc.stdout.strip().splitlines()[-1])


# ------------------------------------------------------------------------------------- the log
def log_path(cfg: Config) -> Path:
    return cfg.log or cfg.runs / "log.json"


def load_log(cfg: Config) -> dict:
    p = log_path(cfg)
    return json.loads(p.read_text()) if p.exists() else {}


def save_log(cfg: Config, log: dict) -> None:
    p = log_path(cfg)
    p.parent.mkdir(parents=True, exist_ok=True)
    log.update({k: v for k, v in load_log(cfg).items() if k not in log})  # cells another process kept meanwhile
    tmp = p.with_name(f".{p.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(log, indent=1, sort_keys=True))
    os.replace(tmp, p)


def done(entry: dict | None, cmd: list[str]) -> bool:
    return bool(entry) and "metrics" in entry and entry.get("command") == shown(cmd)


def run_cell(cfg: Config, log: dict, name: str, cmd: list[str], out: Path,
             runner: Callable[[list[str], Path], dict]) -> None:
    """Run one cell unless the log has it done with this command; record it either way."""
    if done(log.get(name), cmd):
        return
    print(f"$ {shown(cmd)}", flush=True)
    t0, c0 = time.time(), os.times()
    entry: dict = {"command": shown(cmd)}
    try:
        entry["metrics"] = runner(cmd, out)
    except CellFailed as exc:
        entry["error"] = str(exc)
        print(f"  failed: {exc}", file=sys.stderr, flush=True)
    c1 = os.times()
    entry["wall_s"] = round(time.time() - t0, 1)
    entry["cpu_s"] = round(c1.children_user + c1.children_system - c0.children_user - c0.children_system, 1)
    log[name] = entry
    save_log(cfg, log)


def fill(cfg: Config, runner: Callable[[list[str], Path], dict] = run_vl, *, plan: bool = False) -> dict:
    """Run every cell not done yet (none with ``plan``), writing the table after each; the log."""
    log = load_log(cfg)
    if not plan:
        for b in cfg.backbones:  # the references first: each backbone's full-data model
            for s in range(cfg.full_seeds):
                run_cell(cfg, log, f"full/{b}/{s}", full_command(cfg, b, s), full_out(cfg, b, s), runner)
                write_outputs(cfg, log)
    for key in cfg.rows:
        ps = pairset_path(cfg, key)
        if ps is None and cfg.make_sets and not plan:
            print(f"$ {shown(make_set_command(cfg, key))}", flush=True)
            subprocess.run(make_set_command(cfg, key), cwd=ROOT, check=False)
            ps = pairset_path(cfg, key)
        if ps is None or plan:
            continue
        for b in cfg.backbones:
            run_cell(cfg, log, f"{key}/{b}", eval_command(cfg, key, b, ps), eval_out(cfg, key, b), runner)
            write_outputs(cfg, log)
    write_outputs(cfg, log)
    return log


# ------------------------------------------------------------------------------------- results
def reference(cfg: Config, log: dict, backbone: str) -> dict | None:
    """Mean TR@1 / IR@1 of the backbone's full-data models (the seeds done with this config)."""
    runs = [e["metrics"] for s in range(cfg.full_seeds)
            if done(e := log.get(f"full/{backbone}/{s}"), full_command(cfg, backbone, s))]
    if not runs:
        return None
    return {k: sum(r[k] for r in runs) / len(runs) for k in ("tr_r1", "ir_r1")} | {"seeds": len(runs)}


def cell_state(cfg: Config, log: dict, key: str, backbone: str) -> tuple[str, dict | None]:
    """("done", entry) / ("failed", entry) / ("missing", None: no pair set) / ("todo", None)."""
    ps = pairset_path(cfg, key)
    if ps is None:
        return "missing", None
    cmd = eval_command(cfg, key, backbone, ps)
    e = log.get(f"{key}/{backbone}")
    if done(e, cmd):
        return "done", e
    if e and e.get("command") == shown(cmd) and "error" in e:
        return "failed", e
    return "todo", None


def share(value: float, ref: float | None) -> float:
    return 100.0 * value / ref if ref else math.nan


def matrix(cfg: Config, log: dict) -> dict[str, list[list[float]]]:
    """TR@1 and IR@1 of every cell as % of its backbone's full-data model (NaN: not available)."""
    out = {}
    for k in ("tr_r1", "ir_r1"):
        rows = []
        for key in cfg.rows:
            row = []
            for b in cfg.backbones:
                state, e = cell_state(cfg, log, key, b)
                ref = reference(cfg, log, b)
                row.append(share(e["metrics"][k], ref and ref[k]) if state == "done" else math.nan)
            rows.append(row)
        out[k] = rows
    return out


def heat_map(cfg: Config, log: dict) -> Path | None:
    """The cross-architecture table as two heat maps (TR@1, IR@1 in % of each backbone's full-data
    model); None when no cell is done."""
    mats = matrix(cfg, log)
    if all(math.isnan(v) for rows in mats.values() for row in rows for v in row):
        return None
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    import numpy as np

    labels = [f"{row_label(k)[0]}, {row_label(k)[1]} pairs" for k in cfg.rows]
    fig, axes = plt.subplots(1, 2, figsize=(4.5 + 2.2 * len(cfg.backbones), 2.2 + 0.45 * len(cfg.rows)),
                             squeeze=False, layout="constrained")
    for ax, (k, name) in zip(axes[0], (("tr_r1", "TR@1"), ("ir_r1", "IR@1"))):
        m = np.array(mats[k], dtype=float)
        shown_m = np.ma.masked_invalid(m)
        cmap = plt.get_cmap("viridis").with_extremes(bad="#dddddd")
        finite = m[np.isfinite(m)]
        im = ax.imshow(shown_m, cmap=cmap, aspect="auto", vmin=0, vmax=max(100.0, float(finite.max())))
        for i in range(m.shape[0]):
            for j in range(m.shape[1]):
                ax.text(j, i, "n/a" if not np.isfinite(m[i, j]) else f"{m[i, j]:.0f}%", ha="center", va="center",
                        fontsize=8, color="black" if not np.isfinite(m[i, j]) or m[i, j] > 55 else "white")
        ax.set_xticks(range(len(cfg.backbones)), cfg.backbones, rotation=20, ha="right")
        ax.set_yticks(range(len(cfg.rows)), labels if ax is axes[0][0] else [""] * len(cfg.rows))
        ax.set_xlabel("evaluation backbone (112 px)")
        if ax is axes[0][0]:
            ax.set_ylabel("training set\n(made with the frozen EfficientNet-Lite0)")
        ax.set_title(f"{name} (% of each backbone's full-data model)")
        fig.colorbar(im, ax=ax, label=f"{name} (% of full-data {name})")
    fig.suptitle("Flickr8k dev: sets made with EfficientNet-Lite0, evaluated with other backbones")
    cfg.png.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.png.with_name(f".{cfg.png.name}.{os.getpid()}.tmp")
    fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    os.replace(tmp, cfg.png)
    return cfg.png


def write_table(cfg: Config, log: dict) -> Path:
    machine = f"{platform.machine()} Linux, {os.cpu_count()} CPU cores, Python {platform.python_version()}"
    me = "python benchmarks/cross_arch.py"
    L = ["# Cross-architecture evaluation (Flickr8k dev)", "",
         f"Produced by `{me}` ({machine}, {time.strftime('%Y-%m-%d')}). Every training set of a row was made with "
         f"the frozen ImageNet EfficientNet-Lite0 at {IMAGE_SIZE} px (benchmarks/FLICKR8K.md: the rows of "
         f"`benchmarks/flickr8k.py`); a cell trains fresh models on that set with the column's backbone "
         f"(`vl eval SET --encoder NAME`: features recomputed from the set's pixels; {plural(cfg.seeds, 'seed')}, "
         f"{cfg.eval_epochs or 50} epochs, lr = the set's learned step sizes for distilled sets, 0.03 for "
         f"coresets, as the Flickr8k table) and is reported as TR@1 / IR@1 in % of that backbone's own "
         f"full-data model (`vl train` on the whole training split with the same flags, up to "
         f"{cfg.full_epochs} epochs chosen on held-out training images, mean of {plural(cfg.full_seeds, 'seed')})."
         + (f" **Quick run: every command with --limit {cfg.limit}.**" if cfg.limit else ""), "",
         "Backbones: " + "; ".join(f"`{b}`: {BACKBONES[b][0]} (`{' '.join(BACKBONES[b][1])}`)"
                                    for b in cfg.backbones) + ".", ""]
    refs = {b: reference(cfg, log, b) for b in cfg.backbones}

    def ref_cell(b):
        r = refs[b]
        if r:
            return f"{r['tr_r1']:.1f} / {r['ir_r1']:.1f}" + (f" ({r['seeds']} of {cfg.full_seeds} seeds)"
                                                             if r["seeds"] < cfg.full_seeds else "")
        failed = [s for s in range(cfg.full_seeds) if "error" in (e := log.get(f"full/{b}/{s}") or {})
                  and e.get("command") == shown(full_command(cfg, b, s))]
        return "failed (below)" if failed else "not run"

    def rel_cell(key, b):
        state, e = cell_state(cfg, log, key, b)
        if state == "missing":
            return "no pair set"
        if state == "failed":
            return "failed (below)"
        if state == "todo":
            return "not run"
        m, r = e["metrics"], refs[b]
        if not r:
            return f"{m['tr_r1']:.1f} / {m['ir_r1']:.1f} (no reference yet)"
        return f"{share(m['tr_r1'], r['tr_r1']):.0f}% / {share(m['ir_r1'], r['ir_r1']):.0f}%"

    def abs_cell(key, b):
        state, e = cell_state(cfg, log, key, b)
        if state != "done":
            return "-"
        m = e["metrics"]
        return f"{m['tr_r1']:.1f}±{m.get('tr_r1_std', 0):.1f} / {m['ir_r1']:.1f}±{m.get('ir_r1_std', 0):.1f}"

    n_full = sum(done(log.get(f"full/{b}/{s}"), full_command(cfg, b, s)) for b in cfg.backbones
                 for s in range(cfg.full_seeds))
    n_cells = sum(cell_state(cfg, log, k, b)[0] == "done" for k in cfg.rows for b in cfg.backbones)
    L += [f"Done: {n_cells} of {len(cfg.rows) * len(cfg.backbones)} cells, {n_full} of "
          f"{len(cfg.backbones) * cfg.full_seeds} full-data models." +
          (" Nothing has run yet: `python benchmarks/cross_arch.py` fills it (CPU hours; the convnet column "
           "trains from scratch), `--plan` rewrites this file without running anything." if not n_full + n_cells
           else ""), ""]
    head = "| training set | pairs | " + " | ".join(cfg.backbones) + " |"
    rule = "|---|---|" + "---|" * len(cfg.backbones)
    L += ["## TR@1 / IR@1 as % of each backbone's full-data model", "", head, rule,
          "| full-data model (TR@1 / IR@1, the 100%) | all | " + " | ".join(ref_cell(b) for b in cfg.backbones) + " |"]
    for key in cfg.rows:
        label, n = row_label(key, pairset_path(cfg, key))
        L.append(f"| {label} | {n} | " + " | ".join(rel_cell(key, b) for b in cfg.backbones) + " |")
    L += what_is_left(cfg, log, me)
    L += ["", "## TR@1 / IR@1 (percent, mean±std over the evaluation seeds)", "", head, rule]
    for key in cfg.rows:
        label, n = row_label(key, pairset_path(cfg, key))
        L.append(f"| {label} | {n} | " + " | ".join(abs_cell(key, b) for b in cfg.backbones) + " |")
    if cfg.png.exists():
        L += ["", f"Heat map: [{cfg.png.name}]({cfg.png.name})."]
    L += ["", "## CPU per row", "",
          "CPU seconds of the row's commands (all cells done so far; a row whose set is missing costs its "
          "Flickr8k-table row first, see FLICKR8K.md).", "", "| row | " + " | ".join(cfg.backbones) + " | total |",
          "|---|" + "---|" * (len(cfg.backbones) + 1)]
    names = [("full-data models", [[f"full/{b}/{s}" for s in range(cfg.full_seeds)] for b in cfg.backbones])]
    names += [(key, [[f"{key}/{b}"] for b in cfg.backbones]) for key in cfg.rows]
    for label, cells in names:
        per = [sum(log.get(c, {}).get("cpu_s", 0.0) for c in cs if "metrics" in log.get(c, {})) for cs in cells]
        L.append(f"| {label} | " + " | ".join(f"{v:.0f}" if v else "-" for v in per) + f" | {sum(per):.0f} |")
    L += ["", "## Commands", "", "| cell | command | wall (s) | CPU (s) |", "|---|---|---|---|"]
    for name, e in sorted(log.items()):
        if "metrics" in e:
            L.append(f"| {name} | `{e['command']}` | {e.get('wall_s', '')} | {e.get('cpu_s', '')} |")
    cfg.md.parent.mkdir(parents=True, exist_ok=True)
    tmp = cfg.md.with_name(f".{cfg.md.name}.{os.getpid()}.tmp")
    tmp.write_text("\n".join(L) + "\n")
    os.replace(tmp, cfg.md)
    return cfg.md


def what_is_left(cfg: Config, log: dict, me: str) -> list[str]:
    """Lines saying, for every cell not done, why and the command that does it."""
    out = []
    for b in cfg.backbones:
        for s in range(cfg.full_seeds):
            e = log.get(f"full/{b}/{s}") or {}
            if e.get("command") == shown(full_command(cfg, b, s)) and "error" in e:
                out.append(f"- full-data model of {b} (seed {s}) failed: {e['error'][:300]} (`{e['command']}`)")
        if reference(cfg, log, b) is None or reference(cfg, log, b)["seeds"] < cfg.full_seeds:
            out.append(f"- full-data model of {b} not complete: `{me} --backbones {b}` (runs its column too)"
                       + (f"; cost: {COST[b]}" if b in COST else ""))
    for key in cfg.rows:
        todo = []
        for b in cfg.backbones:
            state, e = cell_state(cfg, log, key, b)
            if state == "missing":
                out.append(f"- {key}: no pair set (`runs/f8k/{key}`); make it with `python benchmarks/flickr8k.py "
                           f"--only {key} --exact --rerun` (or pass --make-sets), or name one with --pairset {key}=PATH")
                break
            if state == "failed":
                out.append(f"- {key} with {b} failed: {e['error'][:300]} (`{e['command']}`)")
            if state in ("failed", "todo"):
                todo.append(b)
        if todo:
            out.append(f"- {key} with {', '.join(todo)}: `{me} --rows {key} --backbones {','.join(todo)}`")
    return ["", "Not done yet:", "", *out] if out else []


def write_outputs(cfg: Config, log: dict) -> None:
    heat_map(cfg, log)
    write_table(cfg, log)


# ------------------------------------------------------------------------------------- main
def parse(argv=None) -> tuple[Config, bool]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="../shared/data/flickr8k-dev")
    ap.add_argument("--rows", help=f"comma-separated row keys (default: {','.join(default_rows())})")
    ap.add_argument("--backbones", help=f"comma-separated (default: {','.join(BACKBONES)})")
    ap.add_argument("--seeds", type=int, default=3, help="evaluation seeds per cell")
    ap.add_argument("--eval-epochs", type=int, default=None)
    ap.add_argument("--full-seeds", type=int, default=3)
    ap.add_argument("--full-epochs", type=int, default=10)
    ap.add_argument("--limit", type=int, default=None, help="--limit of every command (quick runs)")
    ap.add_argument("--pairset", action="append", default=[], metavar="ROW=PATH",
                    help="the pair set of a row, instead of the Flickr8k table's (repeatable)")
    ap.add_argument("--make-sets", action="store_true",
                    help="make a row's missing set by running its Flickr8k-table row (benchmarks/flickr8k.py)")
    ap.add_argument("--runs", default=str(RUNS), help="where the cells' outputs and log.json go")
    ap.add_argument("--log", default=None,
                    help="the cells' results (default: benchmarks/cross_arch.json; with --runs: RUNS/log.json)")
    ap.add_argument("--md", default=str(HERE / "CROSS_ARCH.md"))
    ap.add_argument("--png", default=str(HERE / "cross_arch.png"))
    ap.add_argument("--plan", action="store_true",
                    help="run nothing: write the table of what is done and what would run")
    a = ap.parse_args(argv)
    rows = a.rows.split(",") if a.rows else default_rows()
    backbones = a.backbones.split(",") if a.backbones else list(BACKBONES)
    unknown = [b for b in backbones if b not in BACKBONES]
    if unknown:
        ap.error(f"unknown backbone(s) {', '.join(unknown)}; known: {', '.join(BACKBONES)}")
    pairsets = {}
    for item in a.pairset:
        k, sep, v = item.partition("=")
        if not sep:
            ap.error(f"--pairset {item}: expected ROW=PATH")
        pairsets[k] = v
    runs = Path(a.runs)
    log = Path(a.log) if a.log else (HERE / "cross_arch.json" if a.runs == str(RUNS) else None)
    cfg = Config(rows=rows, backbones=backbones, data=a.data, runs=runs if runs.is_absolute() else ROOT / runs,
                 seeds=a.seeds, eval_epochs=a.eval_epochs, full_seeds=a.full_seeds, full_epochs=a.full_epochs,
                 limit=a.limit, pairsets=pairsets, make_sets=a.make_sets, md=Path(a.md), png=Path(a.png),
                 log=log)
    return cfg, a.plan


def main(argv=None, runner: Callable[[list[str], Path], dict] = run_vl) -> int:
    cfg, plan = parse(argv)
    fill(cfg, runner, plan=plan)
    print(f"wrote {cfg.md}" + (f" and {cfg.png}" if cfg.png.exists() else ""))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
