"""``vl eval``: score any pair set by training fresh models on it."""
from __future__ import annotations

import click

from vlcore.choices import parse_kv
from vlcore.requests import EvalRequest

from .app import cli
from .command import ComponentFlags, component_values, save_config
from .common import emit, hold
from .options import (choices_given, dataset_options, device_option, eval_split_option, handle_errors, json_option,
                      model_options, overwrite_option, report)


@cli.command("eval", component=ComponentFlags("--evaluator", "evaluator", "evaluator", "retrieval", prefix="eval",
                                              help="Evaluator (its options follow as flags)."))
@click.argument("pairset", type=click.Path())
@dataset_options(fresh=False, shown="the pair set's")
@model_options("pair set")
@eval_split_option("split")
@click.option("--eval-option", "eval_opts", multiple=True, metavar="KEY=VALUE",
              help="Any evaluator option (repeatable).")
@click.option("--out", type=click.Path(), default=None,
              show_default="PAIRSET/eval-SPLIT; beside an exported set: PAIRSET-eval-SPLIT",
              help="Output folder (metrics.json, details.json, recall.png).")
@overwrite_option
@device_option
@json_option
@handle_errors
def eval_cmd(pairset, split, evaluator, eval_opts, as_json, config, **kw):
    """Train fresh models on PAIRSET (distilled or coreset, or its `vl export --format hf` folder)
    and report retrieval on --eval-split.

    Model, dataset and data folder default to those recorded in the pair set; a distilled set's
    learned step sizes (and a LoRS set's learned similarity) are used for training.  The
    evaluator's options are --eval-seeds, --eval-epochs, --eval-lr, ...  A set that is damaged or
    outside the documented value ranges (non-finite values, exploded pixels) is refused; warnings
    its distillation recorded are repeated.
    """
    ctx = click.get_current_context()
    options = {**component_values(ctx, kw), **parse_kv(eval_opts, "--eval-option")}
    ds, model = choices_given(ctx, kw)
    result = EvalRequest(pairset, split, evaluator, options, dataset=ds, model=model, **kw).run(report(), hold())
    save_config(ctx, result.out, result.settings)
    emit(result.made, as_json, result.facts["label"])
    if not as_json:
        storage = result.facts["storage"]
        click.echo(f"storage: {storage['pairs']} pairs, {storage['floats']:,} floats ({storage['bytes'] / 1e6:.2f} MB)")
        click.echo(f"wrote {result.out}/metrics.json")
