"""``vl eval``: score any pair set by training fresh models on it."""
from __future__ import annotations

import time
from dataclasses import asdict
from pathlib import Path

import click

from vlcore.errors import DataError, VLError
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
@click.option("--out", type=click.Path(), default=None,
              show_default="PAIRSET/eval-SPLIT; beside an exported set: PAIRSET-eval-SPLIT",
              help="Output folder (metrics.json, details.json, recall.png).")
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
    from vlcore.export import is_hf_export
    from vlcore.pairset import PairSet
    from vlcore.viz import recall_curves

    ctx = click.get_current_context()
    opts = {**component_values(ctx), **parse_kv(eval_opts, "--eval-option")}
    ds, model_opts = DatasetOptions.pop(kw), ModelOptions.pop(kw)
    device = resolve_device(device)  # (launched as a rank: refused first)
    check_pairset_path(pairset)
    if out:
        out = Path(out)
    elif is_hf_export(pairset):  # a shareable folder stays as exported: the results go beside it
        out = Path(pairset).parent / f"{Path(pairset).resolve().name}-eval-{split}"
    else:
        out = Path(pairset) / f"eval-{split}"
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
    for w in m.get("warnings") or []:
        click.echo(f"warning: {w}", err=True)
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


def check_pairset_path(pairset: str) -> None:
    """A PAIRSET that does not exist is said to be missing (with the folders of that name nearby),
    before any folder is claimed or any record read."""
    import difflib

    path = Path(pairset)
    if path.exists():
        return
    parent = path.parent if str(path.parent) else Path(".")
    near = []
    if parent.is_dir():
        try:
            names = [p.name for p in parent.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            names = []
        near = [str(parent / n) if str(path.parent) not in ("", ".") else n
                for n in difflib.get_close_matches(path.name, names, n=3, cutoff=0.6)]
    if near:
        where = f" Did you mean {' or '.join(near)}?"
    else:
        where = f" ({parent} {'holds no folder of a similar name' if parent.is_dir() else 'does not exist either'}.)"
    raise DataError(f"Pair set {pairset} does not exist: no such folder.{where} Give the folder of a pair set: the "
                    f"--out of `vl distill` or `vl coreset`, or a `vl export` folder.")
