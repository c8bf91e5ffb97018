"""``vl eval``: score any pair set by training fresh models on it."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import click

from vlcore.errors import VLError
from vlcore.io import write_json
from vlcore.model import ModelSpec
from vlcore.pairset import check_spec
from vlcore.registry import get_host

from .app import cli
from .command import ComponentFlags, component_values, save_config
from .common import BARS, claim_out, emit, load_split_data, metric_keys_json
from .options import (DatasetOptions, ModelOptions, component_option, dataset_options, device_option,
                      eval_split_option, handle_errors, json_option, model_options, overwrite_option, parse_kv,
                      resolve_device, spec_values)


@cli.command("eval", component=ComponentFlags("--evaluator", "evaluator", "evaluator", "retrieval", prefix="eval"))
@click.argument("pairset", type=click.Path())
@dataset_options(default_dataset=None, shown="the pair set's")
@model_options("pair set")
@eval_split_option("split")
@component_option("--evaluator", "evaluator", "retrieval", "Evaluator (its options follow as flags).")
@click.option("--eval-option", "eval_opts", multiple=True, metavar="KEY=VALUE",
              help="Any evaluator option (repeatable).")
@click.option("--out", type=click.Path(), default=None, show_default="PAIRSET/eval-SPLIT", help="Output folder.")
@overwrite_option
@device_option
@json_option
@handle_errors
def eval_cmd(pairset, split, evaluator, eval_opts, out, overwrite, device, as_json, config, **kw):
    """Train fresh models on PAIRSET (distilled or coreset, or its `vl export --format hf` folder)
    and report retrieval on --eval-split.

    Model, dataset and data folder default to those recorded in the pair set; a distilled set's
    learned step sizes (and a LoRS set's learned similarity) are used for training.  The
    evaluator's options are --eval-seeds, --eval-epochs, --eval-lr, ...  A set that is damaged or
    outside the documented value ranges (non-finite values, exploded pixels) is refused; warnings
    its distillation recorded are repeated.
    """
    from vlcore.evaluate import evaluate_pairs
    from vlcore.pairset import PairSet
    from vlcore.viz import recall_curves

    ctx = click.get_current_context()
    opts = {**component_values(ctx), **parse_kv(eval_opts, "--eval-option")}
    ds, model_opts = DatasetOptions.pop(kw), ModelOptions.pop(kw)
    device = resolve_device(device)
    out = Path(out) if out else Path(pairset) / f"eval-{split}"
    folder = claim_out(out, "eval", overwrite=overwrite, inputs=[pairset])
    ps = PairSet.load(pairset)
    for w in ps.meta.get("warnings") or []:
        click.echo(f"warning: the distillation that made {pairset} reported: {w}", err=True)
    spec = model_opts.spec(base=ModelSpec.from_dict(ps.meta.get("spec") or {}))
    check_spec(ps, spec)  # --image-size / --text-encoder that do not fit the set: a usage error
    ds = ds.inherit(ps.meta.get("dataset") or {})
    if not ds.dataset:
        raise VLError(f"{pairset} records no source dataset; pass --dataset and --data.")
    ev_cfg = get_host().config("evaluator", evaluator, opts)  # unknown or mistyped options fail before any data work
    evald = load_split_data(ds, split, spec)
    t0 = time.time()
    m = evaluate_pairs(ps, evald, spec, evaluator=evaluator, options=opts, device=device, progress=BARS)
    folder.prepare()
    pub = metric_keys_json(m)
    storage = ps.storage()
    write_json(out / "metrics.json", pub)
    write_json(out / "details.json", {"pairset": str(Path(pairset).resolve()), "spec": spec.as_dict(),
                                      "dataset": ds.dataset, "split": split, "evaluator": evaluator,
                                      "options": opts, "storage": storage, "seconds": round(time.time() - t0, 1), **m})
    save_config(ctx, out, {**spec_values(spec), **asdict(ev_cfg)})
    if "curve" in m:
        recall_curves({f"{ps.meta.get('method', 'pairs')} ({len(ps)})": m["curve"]}, out / "recall.png",
                      title=f"{ds.dataset}/{split} retrieval, models trained on {pairset}")
    emit(m, as_json, f"{ps.meta.get('method', 'pairs')} ({len(ps)} pairs)")
    if not as_json:
        click.echo(f"storage: {storage['pairs']} pairs, {storage['floats']:,} floats ({storage['bytes'] / 1e6:.2f} MB)")
        click.echo(f"wrote {out}/metrics.json")
