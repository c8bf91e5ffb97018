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
cells done with the same command on the same set (an interrupted cell is rerun with --overwrite; a
cell records which run made its set, so rerunning a row of the Flickr8k table makes its cells stale).  The
table goes to benchmarks/CROSS_ARCH.md and the heat map to benchmarks/cross_arch.png, rewritten
after every cell.

    python benchmarks/cross_arch.py                          # everything (CPU hours: convnet)
    python benchmarks/cross_arch.py --plan                   # only write the table of what would run
    python benchmarks/cross_arch.py --rows lors-100 --backbones effnet-lite1
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
# table: the Flickr8k table driver, re-exported (the tests patch its RUNS)
from cross_arch_cells import (BACKBONES, RUNS, ROOT, CellFailed, Config, default_rows,  # noqa: E402,F401
                              done, eval_command, eval_out, full_command, full_out, load_log, make_set_command,
                              pairset_path, save_log, set_id, shown, table)
from cross_arch_report import write_outputs  # noqa: E402


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


def run_cell(cfg: Config, log: dict, name: str, cmd: list[str], out: Path,
             runner: Callable[[list[str], Path], dict], record: dict | None = None) -> None:
    """Run one cell unless the log has it done with this command (on the set ``record["set"]``
    names); record it either way, with ``record`` (the set's digest and its pairs)."""
    record = record or {}
    if done(log.get(name), cmd, record.get("set")):
        return
    print(f"$ {shown(cmd)}", flush=True)
    t0, c0 = time.time(), os.times()
    entry: dict = {"command": shown(cmd), **record}
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
        pairs = json.loads((ps / "meta.json").read_text()).get("num_pairs")
        record = {"set": set_id(cfg, key, ps), "pairs": pairs}
        for b in cfg.backbones:
            run_cell(cfg, log, f"{key}/{b}", eval_command(cfg, key, b, ps), eval_out(cfg, key, b), runner, record)
            write_outputs(cfg, log)
    write_outputs(cfg, log)
    return log


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
