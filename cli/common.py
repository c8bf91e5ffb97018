"""Helpers shared by the command implementations: progress bars, metric tables, the output folder."""
from __future__ import annotations

import sys
from typing import Callable

import click

from vlcore.core.progress import Progress, Task
from vlcore.model.metrics import KEYS
from vlcore.requests import claim, public_metrics

from .texts import print_json


class _TqdmTask(Task):
    def __init__(self, bar):
        self.bar = bar

    def update(self, n: int = 1, **postfix) -> None:
        if postfix:
            self.bar.set_postfix(postfix, refresh=False)
        self.bar.update(n)

    def close(self) -> None:
        self.bar.close()


class TqdmProgress(Progress):
    """Progress bars on stderr (the library reports, the CLI draws)."""

    def task(self, desc: str, total: int | None = None, *, unit: str = "it", initial: int = 0) -> Task:
        from tqdm.auto import tqdm  # (loaded only when a bar is drawn)

        # on a terminal, live bars; in a log file, a line every 30 s at most
        live = sys.stderr.isatty()
        return _TqdmTask(tqdm(total=total, initial=initial, desc=desc, unit=unit, leave=not live,
                              mininterval=0.1 if live else 30.0))


BARS = TqdmProgress()


def candidates_line(m: dict) -> str | None:
    """``evaluated on 500 images and 2,500 captions (IR ranks the images, TR the captions)``."""
    c = m.get("candidates")
    if not isinstance(c, dict):
        return None
    return (f"candidates: {c['images']:,} images and {c['captions']:,} captions (IR ranks the images, TR the "
            f"captions)")


#: what the columns of :func:`format_table` mean
LEGEND = ("TR: image->text retrieval, IR: text->image; R@K (TR@1 ...): % of queries whose match ranks in the top "
          "K; rsum: the sum of the six; ±: std over the evaluation seeds (models trained from scratch).")


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
        print_json(public_metrics(metrics))
    else:
        click.echo(format_table([(label, metrics)]))
        line = candidates_line(metrics)
        if line:
            click.echo(line)
        click.echo(LEGEND)


def claim_out(out, command: str, *, resume: bool = False, overwrite: bool = False, inputs=(), flag: str = "--out"):
    """Claim the output folder of this command (:func:`vlcore.requests.claim`: checked, created,
    locked until the command ends); call ``.prepare()`` on the result right before writing."""
    return claim(out, command, hold=click.get_current_context().with_resource, resume=resume, overwrite=overwrite,
                 inputs=inputs, flag=flag)


def hold() -> Callable:
    """What keeps a request's output folder claimed until the running command ends."""
    return click.get_current_context().with_resource


