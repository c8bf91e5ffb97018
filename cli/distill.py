"""``vl distill``: Stage 2, distillation from an expert buffer."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import click

from vlcore.errors import ConfigError

from .app import cli
from .command import ComponentFlags, component_values, save_config
from .common import BARS, claim_out, dataset_info, load_split_data, warn_other_data
from .options import (DatasetOptions, ModelOptions, component_option, dataset_options, device_option, handle_errors,
                      model_options, overwrite_option, parse_kv, resolve_device, seed_option, spec_values)


@cli.command("distill", component=ComponentFlags("--distiller", "distiller", "distiller", "bitraj"))
@component_option("--distiller", "distiller", "bitraj", "Distillation method (its options follow as flags).")
@click.option("--buffer", type=click.Path(), required=True, help="Expert buffer from `vl experts`.")
@dataset_options(default_dataset=None)
@model_options(defaults_from_artifact=True)
@click.option("--eval-split", default="dev", show_default=True, help="Split for periodic evaluation (never test).")
@click.option("--eval-seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fresh models per periodic evaluation.")
@click.option("--no-eval", is_flag=True, help="Skip evaluation during and after distillation.")
@click.option("--distiller-option", "distiller_opts", multiple=True, metavar="KEY=VALUE",
              help="Any distiller option (repeatable).")
@seed_option
@click.option("--resume", is_flag=True,
              help="Continue the interrupted (or extend the finished) distillation in OUT from its checkpoint.")
@overwrite_option
@click.option("--out", type=click.Path(), required=True, help="Output pair-set folder.")
@device_option
@handle_errors
def distill_cmd(distiller, buffer, eval_split, eval_seeds, no_eval, distiller_opts, seed, resume, overwrite, out,
                device, config, **kw):
    """Distil a small synthetic pair set by matching expert trajectories.

    The encoder, text encoder, image size and dataset default to the buffer's.  The options of
    the chosen --distiller follow as flags (`vl distill --distiller NAME --help` lists them).

    An OUT that holds a distillation is continued with --resume (Ctrl-C and SIGTERM write a
    checkpoint first) or replaced with --overwrite; anything else there is refused.
    """
    from vlcore.components import DistillContext
    from vlcore.pipeline import build_text_encoder
    from vlcore.registry import get_host
    from vlcore.trajectories import Buffer

    ctx = click.get_current_context()
    opts = {**component_values(ctx), **parse_kv(distiller_opts, "--distiller-option")}
    ds, model_opts = DatasetOptions.pop(kw), ModelOptions.pop(kw)
    device = resolve_device(device)
    host = get_host()
    if eval_split == "test":
        raise ConfigError("--eval-split test would select on the test split; use dev (report test once, with "
                          "vl eval).")
    dist = host.create("distiller", distiller, opts)  # unknown, mistyped or out-of-range options fail now
    unroll = getattr(dist.config, "unroll", None)
    if unroll is not None:
        host.get("unroll_backend", unroll)
    folder = claim_out(out, "distill", resume=resume, overwrite=overwrite, inputs=[buffer])
    buf = Buffer(buffer)
    spec = model_opts.spec(base=buf.spec)
    buf.check_compatible(spec, build_text_encoder(spec).dim)
    src = buf.index.get("dataset") or {}
    ds = ds.inherit(src)
    train = load_split_data(ds, "train", spec)
    info = dataset_info(ds, train)
    warn_other_data(src, info)
    eval_data = None if no_eval else load_split_data(ds, eval_split, spec)
    folder.prepare()
    run = DistillContext(spec=spec, buffer=buf, train=train, out=Path(out), eval_data=eval_data, dataset_info=info,
                         device=device, seed=seed, resume=folder.resuming, host=host, progress=BARS,
                         eval_options={"seeds": eval_seeds})
    t0 = time.time()
    ps = dist.distill(run)
    save_config(ctx, out, {**spec_values(spec), **asdict(dist.config)})
    click.echo(f"distilled {len(ps)} pairs into {out} ({time.time() - t0:.0f} s); learned step sizes "
               f"lr_img={ps.lr_img:.4g} lr_txt={ps.lr_txt:.4g}")
    hist = ps.meta.get("history", {}).get("eval") or []
    if hist:
        last = hist[-1]
        click.echo(f"{eval_split} retrieval of the last set (1 quick model): TR@1 {last['tr_r1']:.1f}  "
                   f"IR@1 {last['ir_r1']:.1f}  rsum {last['rsum']:.1f}; evaluate properly with `vl eval {out}`")
    click.echo(f"figures: {out}/grid.png, {out}/loss.png" + (f", {out}/dev_recall.png" if hist else ""))
