"""Helpers shared by the command implementations: loading data and printing metric tables."""
from __future__ import annotations

import json
from pathlib import Path

import click

from vlcore.errors import VLError
from vlcore.metrics import KEYS
from vlcore.model import ModelSpec
from vlcore.pipeline import PairData, build_dataset, build_text_encoder, split_data


def load_split_data(dataset: str, data_dir, limit, dataset_opts: dict, split: str, spec: ModelSpec,
                    *, progress: bool = True) -> PairData:
    ds = build_dataset(dataset, data_dir, limit, dataset_opts)
    return split_data(ds.split(split), spec, build_text_encoder(spec), progress=progress)


def inherit_dataset(src: dict, dataset, data_dir, dataset_opts: tuple, limit, *, default: str | None = None):
    """Dataset name, folder, options and limit for a command reading an artifact: what the user
    passed, else what the artifact (a pair set or buffer, whose dataset record is ``src``) was made
    from.  The artifact's folder/options/limit apply only when the dataset is the same."""
    from .options import parse_kv

    dataset = dataset or src.get("name") or default
    same = dataset == src.get("name")
    if data_dir is None and same:
        data_dir = src.get("root")
    dopts = parse_kv(dataset_opts, "--dataset-option")
    if not dopts and same:
        dopts = dict(src.get("options") or {})
    if limit is None and same:
        limit = src.get("limit")
    return dataset, data_dir, dopts, limit


def metric_keys_json(m: dict) -> dict:
    """The public metrics object: means and stds of the six recalls (percent), plus rsum."""
    out = {k: round(m[k], 4) for k in KEYS}
    out.update({f"{k}_std": round(m.get(f"{k}_std", 0.0), 4) for k in KEYS})
    if "rsum" in m:
        out["rsum"] = round(m["rsum"], 4)
    return out


def format_table(rows: list[tuple[str, dict]], *, std: bool = True) -> str:
    """A plain-text table: one row per (label, metrics)."""
    head = ["", "TR@1", "TR@5", "TR@10", "IR@1", "IR@5", "IR@10", "rsum"]
    lines = []
    width = max([len(r[0]) for r in rows] + [4])
    for label, m in rows:
        cells = []
        for k in KEYS:
            s = f"{m[k]:.1f}"
            if std and f"{k}_std" in m:
                s += f"±{m[f'{k}_std']:.1f}"
            cells.append(s)
        cells.append(f"{m.get('rsum', sum(m[k] for k in KEYS)):.1f}")
        lines.append([label.ljust(width)] + cells)
    colw = [max(len(head[i]), *(len(l[i]) for l in lines)) for i in range(1, len(head))]
    out = ["  ".join([" " * width] + [h.rjust(w) for h, w in zip(head[1:], colw)])]
    for l in lines:
        out.append("  ".join([l[0]] + [c.rjust(w) for c, w in zip(l[1:], colw)]))
    return "\n".join(out)


def emit(metrics: dict, as_json: bool, label: str) -> None:
    if as_json:
        click.echo(json.dumps(metric_keys_json(metrics)))
    else:
        click.echo(format_table([(label, metrics)]))


def ensure_out(path) -> Path:
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise VLError(f"--out {p} exists and is not a folder.")
    return p
