"""Cross-architecture table (benchmarks/cross_arch.py): CROSS_ARCH.md and the heat map cross_arch.png,
written from the log of cells (``cross_arch_cells``), with what is left to run and its commands."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cross_arch_cells import (BACKBONES, COST, IMAGE_SIZE, Config, cell_state, done, full_command,  # noqa: E402
                              pairset_path, plural, reference, row_label, share, shown)


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

    labels = [", ".join(row_label(k, pairset_path(cfg, k), log)) + " pairs" for k in cfg.rows]
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
        label, n = row_label(key, pairset_path(cfg, key), log)
        L.append(f"| {label} | {n} | " + " | ".join(rel_cell(key, b) for b in cfg.backbones) + " |")
    L += what_is_left(cfg, log, me)
    L += ["", "## TR@1 / IR@1 (percent, mean±std over the evaluation seeds)", "", head, rule]
    for key in cfg.rows:
        label, n = row_label(key, pairset_path(cfg, key), log)
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
