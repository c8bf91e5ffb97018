"""``vl distill``: Stage 2, distillation from an expert buffer (Stage 1 first when none is given)."""
from __future__ import annotations

import click

from vlcore.choices import parse_kv
from vlcore.plugins.loggers import jsonl_file
from vlcore.requests import DistillRequest, PeriodicEval, Result

from .app import cli
from .command import ComponentFlags, component_values, save_config
from .common import hold
from .options import (choices_given, dataset_options, device_option, eval_split_option, given_names, handle_errors,
                      log_options, log_settings, model_options, overwrite_option, report, seed_option)
from .params import dataclass_options, option, prefixed


@cli.command("distill", component=ComponentFlags("--distiller", "distiller", "distiller", "bitraj",
                                                 help="Distillation method (its options follow as flags)."))
@click.option("--buffer", type=click.Path(), default=None, show_default="OUT/buffer, made now or reused",
              help="Expert buffer from `vl experts`. Without one, Stage 1 runs first into OUT/buffer with the "
                   "distiller's expert defaults (a matching buffer already there is reused).")
@option("--num-experts", type=click.IntRange(min=1), default=None, show_default="5, the distiller's",
        help="Without --buffer: experts Stage 1 trains.")
@option("--train-epochs", type=click.IntRange(min=1), default=None,
        show_default="max-start-epoch - 1 + expert-epochs",
        help="Without --buffer: epochs each expert trains (by default exactly what the matching reaches).")
@dataset_options(fresh=False, shown="the buffer's, else embedded")
@model_options("buffer", fallback=True)
@eval_split_option("eval_split", help="Split for periodic evaluation (never test).")
@dataclass_options(PeriodicEval, prefix="eval")
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
def distill_cmd(distiller, distiller_opts, log, log_opts, config, **kw):
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
    ctx = click.get_current_context()
    ds, model = choices_given(ctx, kw, announce=False)
    options = {**component_values(ctx, kw), **parse_kv(distiller_opts, "--distiller-option")}
    request = DistillRequest(distiller, options, dataset=ds, model=model, periodic=PeriodicEval(**prefixed(
        kw, PeriodicEval, "eval")), log=log, log_options=log_settings(log_opts), given=given_names(ctx), **kw)
    result = request.run(report(), hold())
    if result.made is not None:  # rank 0 writes and reports
        save_config(ctx, result.out, result.settings)
        summary(result, request.eval_split)


def summary(result: Result, eval_split: str) -> None:
    """What a distillation made: its pairs and step sizes, its last dev evaluation, its files."""
    ps, out, eval_data = result.made, result.out, result.facts["eval_data"]
    steps = (f"learned step sizes lr_img={ps.lr_img:.4g} lr_txt={ps.lr_txt:.4g}" if ps.lr_img is not None
             and ps.lr_txt is not None else "no learned step sizes (vl eval uses its default lr, as for a coreset)")
    click.echo(f"distilled {len(ps)} pairs into {out} ({result.seconds:.0f} s); {steps}")
    hist = ps.meta.get("history", {}).get("eval") or []
    if hist:
        last = hist[-1]
        size = f"; {eval_data.num_images:,} images, {eval_data.num_pairs:,} captions" if eval_data is not None else ""
        click.echo(f"{eval_split} retrieval of the last set (1 quick model{size}): TR@1 {last['tr_r1']:.1f}  "
                   f"IR@1 {last['ir_r1']:.1f}  rsum {last['rsum']:.1f}; evaluate properly with `vl eval {out}`")
    made = [f for f in ("grid.png", "loss.png", "dev_recall.png", "best") if (out / f).exists()]
    click.echo(f"figures and files: {', '.join(f'{out}/{f}' for f in made)}; log: "
               f"{jsonl_file(result.facts['loggers'], out)}")
