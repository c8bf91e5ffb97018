"""``vl train``: the full-data model, the upper bound every small set is compared with."""
from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import click
from safetensors.torch import save_file

from vlcore.artifacts.io import atomic_path, versions, write_json
from vlcore.choices import ModelChoice
from vlcore.data.pipeline import build_backbone, build_model, features_for
from vlcore.data.viz import recall_curves
from vlcore.model.metrics import candidates, recall_curve, recall_from_ranks, retrieval_ranks, small_split_warning
from vlcore.requests import public_metrics
from vlcore.training.train import FullDataConfig, embed_split, select_epochs, train_model

from .app import cli
from .command import save_config
from .common import BARS, claim_out, emit
from .options import (choices_given, dataset_options, device_option, eval_split_option, handle_errors, json_option,
                      model_options, overwrite_option, resolve_device)
from .params import dataclass_options, given


@cli.command("train")
@dataset_options()
@model_options()
@eval_split_option("split")
@dataclass_options(FullDataConfig)
@click.option("--out", type=click.Path(), default=None, show_default="runs/train-DATASET-ENCODER",
              help="Output folder (an occupied one is refused unless --overwrite).")
@overwrite_option
@device_option
@json_option
@handle_errors
def train_cmd(split, out, overwrite, device, as_json, config, **kw):
    """Train on the full training split; report retrieval on --eval-split (the upper bound)."""

    ctx = click.get_current_context()
    ds, model_opts = choices_given(ctx, kw)
    cfg = FullDataConfig(**given(ctx, kw, FullDataConfig))
    cfg.check("vl train")
    device = resolve_device(device)
    spec = model_opts.spec()
    out = Path(out or f"runs/train-{ds.dataset}-{spec.encoder}")
    folder = claim_out(out, "train", overwrite=overwrite)
    t0 = time.time()
    train = ds.load("train", spec, progress=BARS)
    evald = ds.load(split, spec, progress=BARS)
    small = small_split_warning(evald.num_images, evald.num_pairs, f"The evaluation split {ds.dataset}/{split}")
    if small:
        click.echo(f"warning: {small}", err=True)
    backbone = build_backbone(spec) if spec.frozen else None
    tf = features_for(spec, train, device=device, progress=BARS, backbone=backbone)
    ef = features_for(spec, evald, device=device, progress=BARS, backbone=backbone)

    def build():
        return build_model(spec, train.text.shape[1], seed=cfg.seed, device=device)

    chosen = None
    if cfg.select_epochs:
        chosen = select_epochs(build, train, cfg, features=tf, device=device, progress=BARS)
        click.echo(f"epochs chosen on {chosen['held_out_images']} held-out training images: {chosen['epochs']} "
                   f"(of at most {cfg.epochs}); retraining on the whole training split", err=True)
    final = replace(cfg, epochs=chosen["epochs"]) if chosen else cfg
    model = build()
    train_model(model, train, final, seed=cfg.seed, features=tf, device=device, progress=BARS,
                desc=f"train {spec.encoder} on {ds.dataset}/train ({train.num_pairs} pairs)")
    img, txt = embed_split(model, evald, features=ef, device=device)
    tr, ir = retrieval_ranks(img, txt, evald.pair_image)
    m = {**recall_from_ranks(tr, ir), "candidates": candidates(evald.num_images, evald.num_pairs)}
    elapsed = time.time() - t0
    folder.prepare()
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if k in model.trainable_named() or not spec.frozen}
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    pub = public_metrics(m)
    write_json(out / "metrics.json", pub)
    write_json(out / "meta.json", {
        "kind": "full-data model", "spec": spec.as_dict(),
        "dataset": {"name": ds.dataset, "root": str(Path(ds.data_dir).resolve()) if ds.data_dir else None,
                    "options": ds.options(), "limit": ds.limit, "train_pairs": train.num_pairs, "eval_split": split},
        "train": cfg.__dict__, "epochs_trained": final.epochs, "epoch_selection": chosen, "seed": cfg.seed,
        "device": device, "seconds": round(elapsed, 1),
        "metrics": pub, "versions": versions()})
    save_config(ctx, out, {**ModelChoice.of(spec), **cfg.__dict__})
    recall_curves({"full data": recall_curve(tr, ir)}, out / "recall.png",
                  title=f"{spec.encoder} trained on all of {ds.dataset}/train, {split} retrieval")
    emit(m, as_json, f"full data ({train.num_pairs} pairs)")
    if not as_json:
        click.echo(f"wrote {out}/metrics.json, recall.png, model.safetensors ({elapsed:.0f} s)")
