"""``vl experts``: Stage 1, expert trajectories."""
from __future__ import annotations

import time
from pathlib import Path

import click

from vlcore.io import fingerprint

from .common import load_split_data
from .main import cli
from .options import (dataset_options, device_option, handle_errors, make_spec, model_options, parse_kv,
                      resolve_device)


def dataset_info(dataset, data_dir, limit, dopts, data) -> dict:
    return {"name": dataset, "root": str(Path(data_dir).resolve()) if data_dir else None, "options": dopts,
            "limit": limit, "split": "train", "pairs": data.num_pairs, "images": data.num_images,
            "fingerprint": fingerprint(data.key)}


@cli.command("experts")
@dataset_options()
@model_options()
@click.option("--num-experts", type=int, default=5, show_default=True)
@click.option("--epochs", type=int, default=10, show_default=True, help="Epochs per expert (parameters saved after each).")
@click.option("--lr", type=float, default=None,
              help="Expert SGD learning rate. Default 0.1 (the paper's) when backbone weights train (full, lora); "
                   "0.01 for a frozen backbone, whose heads converge within one epoch at 0.1 so that later epochs "
                   "are SGD noise with nothing to match (see benchmarks/RESULTS.md).")
@click.option("--momentum", type=float, default=0.0, show_default=True)
@click.option("--weight-decay", type=float, default=0.0, show_default=True)
@click.option("--batch-size", type=int, default=128, show_default=True)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--workers", type=int, default=1, show_default=True, help="Train experts in parallel processes.")
@click.option("--out", "out", type=click.Path(), required=True, help="Buffer folder (resumes if it exists).")
@device_option
@handle_errors
def experts_cmd(dataset, data_dir, limit, dataset_opts, encoder, encoder_opts, pretrained, text_encoder, text_opts,
                image_size, trainable, image_head, embed_dim, num_experts, epochs, lr, momentum, weight_decay,
                batch_size, seed, workers, out, device):
    """Train expert trajectories on the full training split (resumable)."""
    from tqdm.auto import tqdm

    from vlcore.trajectories import ExpertConfig, train_experts

    device = resolve_device(device)
    spec = make_spec(encoder, encoder_opts, pretrained, text_encoder, text_opts, image_size, trainable,
                     image_head, embed_dim)
    dopts = parse_kv(dataset_opts, "--dataset-option")
    data = load_split_data(dataset, data_dir, limit, dopts, "train", spec)
    if lr is None:
        lr = 0.01 if spec.trainable == "frozen" else 0.1
    cfg = ExpertConfig(num_experts=num_experts, epochs=epochs, lr=lr, momentum=momentum, weight_decay=weight_decay,
                       batch_size=batch_size, seed=seed)
    t0 = time.time()
    bar = tqdm(total=num_experts, desc=f"experts ({spec.encoder}, {spec.trainable}, {data.num_pairs} pairs)",
               unit="expert")
    buf = train_experts(spec, data, cfg, out, dataset_info=dataset_info(dataset, data_dir, limit, dopts, data),
                        device=device, workers=workers, progress=bar.update)
    bar.close()
    n = buf.index["num_params"]
    click.echo(f"buffer {out}: {buf.num_experts} experts x {epochs + 1} snapshots; matched parameters: "
               f"image {n['img']:,}, text {n['txt']:,} ({time.time() - t0:.0f} s)")
