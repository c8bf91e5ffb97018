"""``vl experts``: Stage 1, expert trajectories."""
from __future__ import annotations

import time
from pathlib import Path

import click

from vlcore.artifacts.io import atomic_path
from vlcore.artifacts.tomlfile import dumps
from vlcore.core.errors import ConfigError
from vlcore.requests import ExpertsRequest
from vlcore.training import distributed
from vlcore.training.buffer import Buffer
from vlcore.training.experts import ExpertConfig
from vlcore.training.shortcut import derive_shortcut_buffer

from .app import cli
from .command import save_config
from .common import BARS, claim_out, hold
from .options import (choices_given, dataset_options, device_option, handle_errors, model_options, overwrite_option,
                      report)
from .params import dataclass_options, flag_key, given, was_given


@cli.command("experts")
@dataset_options()
@model_options()
@dataclass_options(ExpertConfig, rename={"epochs": "--train-epochs"})
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train experts in parallel processes (they stop with this command, even on kill -9).")
@click.option("--resume", is_flag=True,
              help="Continue the buffer in OUT: train the experts it lacks (its settings must match, and so must "
                   "every expert file found there).")
@click.option("--shortcut", "shortcut", type=click.IntRange(min=1), default=None, show_default="off: train experts",
              help="Derive PTM-ST's shortcut buffer from --from instead of training: each expert's epochs 0..K, every "
                   "layer on the chord from epoch 0 to epoch K, re-timed by its arc length (endpoints kept).")
@click.option("--from", "source", type=click.Path(), default=None, show_default="none",
              help="With --shortcut: the buffer to derive from (it is only read).")
@overwrite_option
@click.option("--out", "out", type=click.Path(), default=None,
              show_default="runs/buffer-DATASET-ENCODER; with --shortcut K: BUFFER-shortcut-K",
              help="Buffer folder.")
@device_option
@handle_errors
def experts_cmd(workers, resume, overwrite, out, device, config, shortcut, source, **kw):
    """Train expert trajectories on the full training split: --num-experts SGD runs of
    --train-epochs epochs each, parameters saved after every epoch.

    Across processes or machines: `torchrun --nproc-per-node N vl experts ...` (expert i on rank
    i mod N; the buffer equals a one-process run's).

    Resumable: after an interrupt (Ctrl-C, SIGTERM, kill), the same command with --resume trains
    only the experts that are missing; --overwrite replaces the buffer in OUT instead.  --resume
    takes an expert file found in OUT only if its recorded settings (seed, epochs, lr, model, data)
    are the buffer's; another file named like an expert is refused, naming it, and nothing changes.

    With --shortcut K --from BUFFER it trains nothing: it derives from BUFFER a new buffer (its own
    index.json and checksums, recording that it is BUFFER's shortcut) whose experts hold epochs
    0..K on their shortcut trajectories (PTM-ST); --resume continues an interrupted derivation.
    """
    ctx = click.get_current_context()
    if shortcut is not None or source is not None:
        return _shortcut(ctx, shortcut, source, out, resume, overwrite)
    ds, model = choices_given(ctx, kw)
    result = ExpertsRequest(ds, model, given(ctx, kw, ExpertConfig), workers, resume, overwrite, out,
                            device).run(report(), hold())
    if result.made is None:  # rank 0 reports
        return
    save_config(ctx, result.out, result.settings)
    buf, n = result.made, result.made.index["num_params"]
    click.echo(f"buffer {result.out}: {buf.num_experts} experts x {result.facts['epochs'] + 1} snapshots; matched "
               f"parameters: image {n['img']:,}, text {n['txt']:,} ({result.seconds:.0f} s)")


#: the parameters of `vl experts` that a shortcut derivation uses (every other one trains experts)
SHORTCUT_PARAMS = {"shortcut", "source", "out", "resume", "overwrite", "config"}


def _shortcut(ctx: click.Context, k: int | None, source: str | None, out: str | None, resume: bool,
              overwrite: bool) -> None:
    """``vl experts --shortcut K --from BUFFER``: derive the shortcut buffer (vlcore.training.shortcut)."""

    if k is None or source is None:
        raise ConfigError("--shortcut K and --from BUFFER go together: the shortcut buffer is derived from the "
                          "epochs 0..K of BUFFER's experts.")
    params = {p.name: p for p in ctx.command.get_params(ctx)}
    extra = sorted("--" + flag_key(params[n]) for n in ctx.params if n not in SHORTCUT_PARAMS and was_given(ctx, n))
    if extra:
        raise ConfigError(f"--shortcut derives a buffer from --from {source} and trains nothing, so {', '.join(extra)} "
                          f"{'does' if len(extra) == 1 else 'do'} not apply (the source buffer's settings are kept). "
                          f"Drop {'it' if len(extra) == 1 else 'them'}.")
    if distributed.launched():
        raise ConfigError("--shortcut runs in one process (it only reads and writes files): run it without torchrun.")
    src = Buffer(source)  # refused (not a buffer, damaged) before anything is created
    if not 1 <= k <= src.epochs:
        raise ConfigError(f"--shortcut {k}: buffer '{source}' holds epochs 0..{src.epochs}, so K must be between 1 "
                          f"and {src.epochs}.")
    out = out or f"{str(source).rstrip('/')}-shortcut-{k}"
    folder = claim_out(out, "experts", resume=resume, overwrite=overwrite, inputs=[source])
    folder.prepare()
    t0 = time.time()
    buf = derive_shortcut_buffer(src, out, k, progress=BARS)
    path = Path(out) / "config.toml"
    with atomic_path(path) as tmp:
        tmp.write_text(dumps({"shortcut": k, "from": str(Path(source).resolve())},
                             header=f"vl experts: the settings of this run. Repeat it with\n"
                                    f"  vl experts --config {path} --out NEW_FOLDER"))
    click.echo(f"buffer {out}: the shortcut of {source} over epochs 0..{k}, {buf.num_experts} experts x {k + 1} "
               f"snapshots ({time.time() - t0:.1f} s)")
