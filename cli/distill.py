"""``vl distill``: Stage 2, distillation from an expert buffer (Stage 1 first when none is given)."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import click

from vlcore.errors import ConfigError

from .app import cli
from .command import ComponentFlags, component_values, option, save_config, was_given
from .common import (BARS, ResumeNote, check_pairs, claim_out, dataset_info, default_out, load_split_data,
                     picked_defaults, warn_other_data)
from .options import (DatasetOptions, ModelOptions, component_option, dataset_options, device_option,
                      eval_split_option, handle_errors, log_options, loggers_from, model_options, overwrite_option,
                      parse_kv,
                      resolve_device, seed_option, spec_values)


@cli.command("distill", component=ComponentFlags("--distiller", "distiller", "distiller", "bitraj"))
@component_option("--distiller", "distiller", "bitraj", "Distillation method (its options follow as flags).")
@click.option("--buffer", type=click.Path(), default=None, show_default="OUT/buffer, made now or reused",
              help="Expert buffer from `vl experts`. Without one, Stage 1 runs first into OUT/buffer with the "
                   "distiller's expert defaults (a matching buffer already there is reused).")
@option("--num-experts", type=click.IntRange(min=1), default=None, show_default="5, the distiller's",
        help="Without --buffer: experts Stage 1 trains.")
@option("--train-epochs", type=click.IntRange(min=1), default=None,
        show_default="max-start-epoch - 1 + expert-epochs",
        help="Without --buffer: epochs each expert trains (by default exactly what the matching reaches).")
@dataset_options(default_dataset=None, shown="the buffer's, else embedded")
@model_options("buffer", fallback=True)
@eval_split_option("eval_split", help="Split for periodic evaluation (never test).")
@click.option("--eval-seeds", type=click.IntRange(min=1), default=1, show_default=True,
              help="Fresh models per periodic evaluation.")
@click.option("--eval-epochs", type=click.IntRange(min=1), default=30, show_default=True,
              help="Epochs each periodic evaluation model trains.")
@click.option("--no-eval", is_flag=True, help="Skip evaluation during and after distillation.")
@click.option("--distiller-option", "distiller_opts", multiple=True, metavar="KEY=VALUE",
              help="Any distiller option (repeatable).")
@seed_option
@log_options
@click.option("--resume", is_flag=True,
              help="Continue the interrupted (or extend the finished) distillation in OUT from its checkpoint.")
@overwrite_option
@click.option("--out", type=click.Path(), default=None, show_default="runs/DISTILLER-ENCODER-PAIRS",
              help="Output pair-set folder (printed at the start and the end).")
@device_option
@handle_errors
def distill_cmd(distiller, buffer, num_experts, train_epochs, eval_split, eval_seeds, eval_epochs, no_eval,
                distiller_opts, seed, log, log_opts, resume, overwrite, out, device, config, **kw):
    """Distil a small synthetic pair set by matching expert trajectories.

    `vl distill --distiller bitraj --encoder nfnet` runs as typed: without --buffer, Stage 1 (the
    experts) runs first into OUT/buffer; with one, the encoder, text encoder, image size and
    dataset default to the buffer's.  Every default picked is printed before any work and recorded
    in meta.json.  The options of the chosen --distiller follow as flags (`vl distill --distiller
    NAME --help` lists them).

    Across processes or machines: `torchrun --nproc-per-node N vl distill ...` (each rank unrolls
    --trajectories of its own per iteration, gradients averaged; rank 0 writes).

    An OUT that holds a distillation is continued with --resume (Ctrl-C and SIGTERM write a
    checkpoint first) or replaced with --overwrite; anything else there is refused.
    """
    from vlcore import distributed
    from vlcore.components import DistillContext
    from vlcore.metrics import small_split_warning
    from vlcore.pipeline import build_text_encoder
    from vlcore.registry import get_host
    from vlcore.trajectories import Buffer

    ctx = click.get_current_context()
    opts = {**component_values(ctx), **parse_kv(distiller_opts, "--distiller-option")}
    ds, model_opts = DatasetOptions.pop(kw, announce=False), ModelOptions.pop(kw)
    device = resolve_device(device, distributed=True)
    host = get_host()
    if eval_split == "test":
        raise ConfigError("--eval-split test would select on the test split; use dev (report test once, with "
                          "vl eval).")
    dist = host.create("distiller", distiller, opts)  # unknown, mistyped or bad options fail before any data work
    for kind, name in dist.named_components():  # e.g. its unroll backend (none for a distiller without one)
        host.get(kind, name)
    loggers = loggers_from(log, log_opts)
    buf = Buffer(buffer) if buffer else None
    spec = model_opts.spec(base=buf.spec if buf else None)  # names, image size and weights checked now
    if buf is not None:
        buf.check_compatible(spec, build_text_encoder(spec).dim)
        for name in ("num_experts", "train_epochs"):
            if was_given(ctx, name):
                click.echo(f"note: --{name.replace('_', '-')} is ignored: --buffer {buffer} is used as it is.",
                           err=True)
    src = (buf.index.get("dataset") or {}) if buf else {}
    ds = ds.inherit(src, default="embedded")
    pairs = getattr(dist.config, "pairs", None)
    out = Path(out or default_out(dist.name, spec.encoder, pairs))
    folder = claim_out(out, "distill", resume=resume, overwrite=overwrite, inputs=[buffer])
    experts = None
    if buf is None:
        from vlcore.trajectories import ExpertConfig

        experts = ExpertConfig(**{**dist.expert_defaults(), **({"num_experts": num_experts} if num_experts else {}),
                                  **({"epochs": train_epochs} if train_epochs else {})}).resolved(spec)
        experts.check("vl distill (Stage 1)")
    picked = picked_defaults(ctx, {
        "dataset": ds.dataset, "encoder": spec.encoder,
        "pretrained": spec.encoder_options.get("pretrained", "auto"), "text_encoder": spec.text_encoder,
        "image_size": spec.image_size, "trainable": spec.trainable, "pairs": pairs,
        "iterations": getattr(dist.config, "iterations", None), "seed": seed,
        "buffer": f"{out / 'buffer'} ({experts.num_experts} experts x {experts.epochs} epochs)" if experts else None,
        "num_experts": experts.num_experts if experts else None, "train_epochs": experts.epochs if experts else None,
        "out": out, "device": device}, notes={"dataset": ds.inferred})
    click.echo(f"distilling {pairs} pairs with {dist.name} into {out}")
    train = load_split_data(ds, "train", spec, check=lambda part: check_pairs(pairs, part, ds, dist.name))
    info = dataset_info(ds, train)
    eval_data = None if no_eval else load_split_data(ds, eval_split, spec)
    small = eval_data is not None and small_split_warning(eval_data.num_images, eval_data.num_pairs,
                                                          f"The {eval_split} split of {ds.dataset}")
    if small:
        click.echo(f"warning: {small} (Its dev evaluations during the run choose best/.)", err=True)
    folder.prepare()  # before Stage 1 writes OUT/buffer (an --overwrite replaces that buffer too)
    if buf is None:
        from vlcore.trajectories import train_experts

        click.echo(f"Stage 1: {experts.num_experts} experts x {experts.epochs} epochs into {out / 'buffer'} "
                   f"(finished experts there are reused)")
        buf = train_experts(spec, train, experts, out / "buffer", dataset_info=info, device=device, progress=BARS)
    warn_other_data(src, info)
    from vlcore.checkpoint import NAME as CHECKPOINT

    resumed = folder.resuming and (out / CHECKPOINT).exists()
    run = DistillContext(spec=spec, buffer=buf, train=train, out=out, eval_data=eval_data, dataset_info=info,
                         device=device, seed=seed, resume=folder.resuming, host=host,
                         progress=ResumeNote(BARS, out / CHECKPOINT) if resumed else BARS,
                         eval_options={"seeds": eval_seeds, "epochs": eval_epochs}, loggers=loggers,
                         meta={"defaults": {k: str(v) for k, v in picked.items()}, "run_name": out.name})
    t0 = time.time()
    ps = dist.distill(run)
    if not distributed.is_main():  # rank 0 writes and reports
        return
    # a buffer made by this run is not saved as --buffer: `--config OUT/config.toml --out NEW` makes its own
    resolved = {**spec_values(spec), **asdict(dist.config), "dataset": ds.dataset}
    if experts is not None:
        resolved.update(num_experts=experts.num_experts, train_epochs=experts.epochs)
    save_config(ctx, out, resolved)
    steps = (f"learned step sizes lr_img={ps.lr_img:.4g} lr_txt={ps.lr_txt:.4g}" if ps.lr_img is not None
             and ps.lr_txt is not None else "no learned step sizes (vl eval uses its default lr, as for a coreset)")
    click.echo(f"distilled {len(ps)} pairs into {out} ({time.time() - t0:.0f} s); {steps}")
    hist = ps.meta.get("history", {}).get("eval") or []
    if hist:
        last = hist[-1]
        size = f"; {eval_data.num_images:,} images, {eval_data.num_pairs:,} captions" if eval_data is not None else ""
        click.echo(f"{eval_split} retrieval of the last set (1 quick model{size}): TR@1 {last['tr_r1']:.1f}  "
                   f"IR@1 {last['ir_r1']:.1f}  rsum {last['rsum']:.1f}; evaluate properly with `vl eval {out}`")
    made = [f for f in ("grid.png", "loss.png", "dev_recall.png", "best") if (out / f).exists()]
    from vlcore.plugins.loggers import jsonl_file

    click.echo(f"figures and files: {', '.join(f'{out}/{f}' for f in made)}; log: {jsonl_file(loggers, out)}")
