"""``vl experts``: Stage 1, expert trajectories."""
from __future__ import annotations

import time
from pathlib import Path

import click

from vlcore.errors import ConfigError
from vlcore.trajectories import ExpertConfig

from .app import cli
from .command import dataclass_options, given, save_config
from .common import BARS, claim_out, dataset_info, load_split_data
from .options import (DatasetOptions, ModelOptions, dataset_options, device_option, handle_errors, model_options,
                      overwrite_option, resolve_device, spec_values)


@cli.command("experts")
@dataset_options()
@model_options()
@dataclass_options(ExpertConfig, rename={"epochs": "--train-epochs"})
@click.option("--workers", type=click.IntRange(min=1), default=1, show_default=True,
              help="Train experts in parallel processes (they stop with this command, even on kill -9).")
@click.option("--resume", is_flag=True,
              help="Continue the buffer in OUT: train the experts it lacks (its settings must match, and so must "
                   "every expert file found there).")
@overwrite_option
@click.option("--out", "out", type=click.Path(), default=None, show_default="runs/buffer-DATASET-ENCODER",
              help="Buffer folder.")
@device_option
@handle_errors
def experts_cmd(workers, resume, overwrite, out, device, config, **kw):
    """Train expert trajectories on the full training split: --num-experts SGD runs of
    --train-epochs epochs each, parameters saved after every epoch.

    Across processes or machines: `torchrun --nproc-per-node N vl experts ...` (expert i on rank
    i mod N; the buffer equals a one-process run's).

    Resumable: after an interrupt (Ctrl-C, SIGTERM, kill), the same command with --resume trains
    only the experts that are missing; --overwrite replaces the buffer in OUT instead.  --resume
    takes an expert file found in OUT only if its recorded settings (seed, epochs, lr, model, data)
    are the buffer's; another file named like an expert is refused, naming it, and nothing changes.
    """
    from vlcore import distributed
    from vlcore.trajectories import train_experts

    ctx = click.get_current_context()
    ds, model_opts = DatasetOptions.pop(kw), ModelOptions.pop(kw)
    if workers > 1 and distributed.launched():
        raise ConfigError("--workers starts local processes, and torchrun has already started this one as a rank: "
                          "use one of them (torchrun --nproc-per-node N, or --workers N without torchrun).")
    device = resolve_device(device, distributed=True)
    spec = model_opts.spec()
    cfg = ExpertConfig(**given(ctx, kw, ExpertConfig)).resolved(spec)
    cfg.check("vl experts")
    out = out or str(Path("runs") / f"buffer-{ds.dataset}-{spec.encoder}")
    folder = claim_out(out, "experts", resume=resume, overwrite=overwrite)
    data = load_split_data(ds, "train", spec)
    folder.prepare()
    t0 = time.time()
    buf = train_experts(spec, data, cfg, out, dataset_info=dataset_info(ds, data), device=device, workers=workers,
                        progress=BARS)
    if not distributed.is_main():
        return
    save_config(ctx, out, {**spec_values(spec), **cfg.__dict__})
    n = buf.index["num_params"]
    click.echo(f"buffer {out}: {buf.num_experts} experts x {cfg.epochs + 1} snapshots; matched parameters: "
               f"image {n['img']:,}, text {n['txt']:,} ({time.time() - t0:.0f} s)")
