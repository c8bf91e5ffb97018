"""``vl train`` and ``vl eval``."""
from __future__ import annotations

import time
from pathlib import Path

import click

from vlcore.errors import VLError
from vlcore.io import versions, write_json
from vlcore.model import ModelSpec

from .common import emit, ensure_out, inherit_dataset, load_split_data, metric_keys_json
from .main import cli
from .options import (component_option, dataset_options, device_option, handle_errors, json_option,
                      make_spec, model_options, parse_kv, resolve_device)


@cli.command("train")
@dataset_options()
@model_options()
@click.option("--split", default="dev", show_default=True, help="Evaluation split (never tune on test).")
@click.option("--epochs", type=int, default=10, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--lr", type=float, default=0.1, show_default=True, help="SGD learning rate (both modalities).")
@click.option("--momentum", type=float, default=0.9, show_default=True)
@click.option("--weight-decay", type=float, default=5e-4, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), default=None, help="Output folder (default runs/train-DATASET-ENCODER).")
@device_option
@json_option
@handle_errors
def train_cmd(dataset, data_dir, limit, dataset_opts, encoder, encoder_opts, pretrained, text_encoder,
              text_opts, image_size, trainable, image_head, embed_dim, split, epochs, batch_size, lr,
              momentum, weight_decay, seed, out, device, as_json):
    """Train on the full training split; report retrieval on --split (the upper bound)."""
    from safetensors.torch import save_file
    from tqdm.auto import tqdm

    from vlcore.metrics import recall_curve, recall_from_ranks, retrieval_ranks
    from vlcore.pipeline import build_model, build_backbone, cached_features
    from vlcore.train import TrainConfig, embed_split, train_model
    from vlcore.viz import recall_curves

    device = resolve_device(device)
    spec = make_spec(encoder, encoder_opts, pretrained, text_encoder, text_opts, image_size, trainable,
                     image_head, embed_dim)
    dopts = parse_kv(dataset_opts, "--dataset-option")
    out = ensure_out(out or f"runs/train-{dataset}-{spec.encoder}")
    t0 = time.time()
    train = load_split_data(dataset, data_dir, limit, dopts, "train", spec)
    evald = load_split_data(dataset, data_dir, limit, dopts, split, spec)
    tcfg = TrainConfig(epochs=epochs, batch_size=batch_size, lr_img=lr, lr_txt=lr, momentum=momentum,
                       weight_decay=weight_decay)
    model = build_model(spec, train.text.shape[1], seed=seed, device=device)
    tf = ef = None
    if spec.trainable == "frozen":
        bb = build_backbone(spec).to(device)
        tf = cached_features(spec, bb, train, device=device, progress=True)
        ef = cached_features(spec, bb, evald, device=device, progress=True)
    bar = tqdm(total=epochs, desc=f"train {spec.encoder} on {dataset}/train ({train.num_pairs} pairs)",
               unit="epoch")
    train_model(model, train, tcfg, seed=seed, features=tf, device=device, progress=lambda e: bar.update(1))
    bar.close()
    img, txt = embed_split(model, evald, features=ef, device=device)
    tr, ir = retrieval_ranks(img, txt, evald.pair_image)
    m = recall_from_ranks(tr, ir)
    elapsed = time.time() - t0
    out.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()
             if k in model.trainable_named() or not spec.trainable == "frozen"}
    from vlcore.io import atomic_path
    with atomic_path(out / "model.safetensors") as tmp:
        save_file(state, str(tmp))
    pub = metric_keys_json(m)
    write_json(out / "metrics.json", pub)
    write_json(out / "meta.json", {
        "kind": "full-data model", "spec": spec.as_dict(),
        "dataset": {"name": dataset, "root": str(Path(data_dir).resolve()) if data_dir else None,
                    "options": dopts, "limit": limit, "train_pairs": train.num_pairs, "eval_split": split},
        "train": tcfg.__dict__, "seed": seed, "device": device, "seconds": round(elapsed, 1),
        "metrics": pub, "versions": versions()})
    recall_curves({"full data": recall_curve(tr, ir)}, out / "recall.png",
                  title=f"{spec.encoder} trained on all of {dataset}/train, {split} retrieval")
    emit(m, as_json, f"full data ({train.num_pairs} pairs)")
    if not as_json:
        click.echo(f"wrote {out}/metrics.json, recall.png, model.safetensors ({elapsed:.0f} s)")


@cli.command("eval")
@click.argument("pairset", type=click.Path())
@dataset_options(default_dataset=None)
@model_options(defaults_from_artifact=True)
@click.option("--split", default="dev", show_default=True, help="Evaluation split (never tune on test).")
@click.option("--seeds", type=int, default=3, show_default=True, help="Fresh models trained (one per seed).")
@click.option("--epochs", type=int, default=None, help="Training epochs per model (evaluator default 50).")
@click.option("--lr", type=float, default=None,
              help="Learning rate; default: the pair set's learned step sizes, else the evaluator's.")
@component_option("--evaluator", "evaluator", "retrieval", "Evaluator.")
@click.option("--eval-option", "eval_opts", multiple=True, metavar="KEY=VALUE", help="Evaluator option.")
@click.option("--out", type=click.Path(), default=None, help="Output folder (default PAIRSET/eval-SPLIT).")
@device_option
@json_option
@handle_errors
def eval_cmd(pairset, dataset, data_dir, limit, dataset_opts, encoder, encoder_opts, pretrained,
             text_encoder, text_opts, image_size, trainable, image_head, embed_dim, split, seeds, epochs,
             lr, evaluator, eval_opts, out, device, as_json):
    """Train fresh models on PAIRSET (distilled or coreset) and report retrieval on --split.

    Model, dataset and data folder default to those recorded in the pair set.
    """
    from tqdm.auto import tqdm

    from vlcore.evaluate import evaluate_pairs
    from vlcore.pairset import PairSet
    from vlcore.viz import recall_curves

    device = resolve_device(device)
    ps = PairSet.load(pairset)
    base = ModelSpec.from_dict(ps.meta.get("spec") or {})
    spec = make_spec(encoder, encoder_opts, pretrained, text_encoder, text_opts, image_size, trainable,
                     image_head, embed_dim, base=base)
    src = ps.meta.get("dataset") or {}
    dataset, data_dir, dopts, limit = inherit_dataset(src, dataset, data_dir, dataset_opts, limit)
    if not dataset:
        raise VLError(f"{pairset} records no source dataset; pass --dataset and --data.")
    evald = load_split_data(dataset, data_dir, limit, dopts, split, spec)
    opts = parse_kv(eval_opts, "--eval-option")
    opts.setdefault("seeds", seeds)
    if epochs is not None:
        opts.setdefault("epochs", epochs)
    if lr is not None:
        opts.setdefault("lr", lr)
    t0 = time.time()
    bar = tqdm(total=opts["seeds"], desc=f"eval {len(ps)} pairs on {dataset}/{split}", unit="seed")
    m = evaluate_pairs(ps, evald, spec, evaluator=evaluator, options=opts, device=device,
                       progress=lambda i: bar.update(1))
    bar.close()
    out = ensure_out(out or Path(pairset) / f"eval-{split}")
    out.mkdir(parents=True, exist_ok=True)
    pub = metric_keys_json(m)
    write_json(out / "metrics.json", pub)
    write_json(out / "details.json", {"pairset": str(Path(pairset).resolve()), "spec": spec.as_dict(),
                                      "dataset": dataset, "split": split, "evaluator": evaluator,
                                      "options": opts, "seconds": round(time.time() - t0, 1), **m})
    if "curve" in m:
        recall_curves({f"{ps.meta.get('method', 'pairs')} ({len(ps)})": m["curve"]}, out / "recall.png",
                      title=f"{dataset}/{split} retrieval, models trained on {pairset}")
    emit(m, as_json, f"{ps.meta.get('method', 'pairs')} ({len(ps)} pairs)")
    if not as_json:
        click.echo(f"wrote {out}/metrics.json")
