"""``vl demo``: the whole pipeline on the embedded default dataset, no download, no flags."""
from __future__ import annotations

import time
from pathlib import Path

import click

from .common import format_table, metric_keys_json
from .main import cli
from .options import device_option, handle_errors, resolve_device

#: the demo's recipe: small enough for a few minutes on 2 CPU cores, chosen on the embedded dev split
DEMO = {
    "dataset": {"num_train": 2000, "num_dev": 500},
    "spec": {"encoder": "effnet-lite0", "image_size": 64, "trainable": "frozen"},
    "experts": {"num_experts": 6, "epochs": 3, "lr": 0.01},
    "distill": {"iterations": 60, "syn_steps": 8, "expert_epochs": 1, "max_start_epoch": 2,
                "lr_images": 100.0, "lr_text": 100.0, "lr_lr": 1e-3},
    "eval": {"seeds": 3},
}


@cli.command("demo")
@click.option("--out", type=click.Path(), default="vl-demo", show_default=True, help="Output folder.")
@click.option("--pairs", type=int, default=50, show_default=True, help="Distilled pairs and coreset budget.")
@click.option("--iterations", type=int, default=None, help="Distillation iterations (default: the recipe's).")
@click.option("--seed", type=int, default=0, show_default=True)
@device_option
@handle_errors
def demo_cmd(out, pairs, iterations, seed, device):
    """Run the whole pipeline on the embedded dataset: experts, bitraj distillation, a random
    coreset of the same size, evaluation of both, a comparison table and PNGs.

    Everything is resumable: run it again and finished steps are reused.
    """
    from tqdm.auto import tqdm

    from vlcore.components import DistillContext
    from vlcore.evaluate import evaluate_pairs
    from vlcore.io import fingerprint, write_json
    from vlcore.model import ModelSpec
    from vlcore.pipeline import build_dataset, build_text_encoder, split_data
    from vlcore.registry import get_host
    from vlcore.trajectories import ExpertConfig, train_experts
    from vlcore.viz import recall_curves

    device = resolve_device(device)
    host = get_host()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    spec = ModelSpec(**DEMO["spec"])
    t_all = time.time()
    click.echo(f"[1/5] data: embedded scenes ({DEMO['dataset']['num_train']} train / {DEMO['dataset']['num_dev']} dev "
               f"images, 5 captions each), text encoder {spec.text_encoder}, image encoder {spec.encoder} "
               f"({spec.trainable}, {spec.image_size} px)")
    ds = build_dataset("embedded", options=DEMO["dataset"], host=host)
    te = build_text_encoder(spec, host)
    train = split_data(ds.split("train"), spec, te, progress=True)
    dev = split_data(ds.split("dev"), spec, te, progress=True)
    info = {"name": "embedded", "root": None, "options": DEMO["dataset"], "limit": None, "split": "train",
            "pairs": train.num_pairs, "images": train.num_images, "fingerprint": fingerprint(train.key)}

    ecfg = ExpertConfig(seed=seed, **DEMO["experts"])
    click.echo(f"[2/5] {ecfg.num_experts} experts x {ecfg.epochs} epochs on {train.num_pairs} pairs")
    bar = tqdm(total=ecfg.num_experts, desc="experts", unit="expert")
    buf = train_experts(spec, train, ecfg, out / "buffer", dataset_info=info, device=device, progress=bar.update)
    bar.close()

    dopts = {**DEMO["distill"], "pairs": pairs}
    if iterations is not None:
        dopts["iterations"] = iterations
    click.echo(f"[3/5] bitraj: distilling {pairs} pairs ({dopts['iterations']} iterations)")
    distiller = host.create("distiller", "bitraj", dopts)
    ps_dir = out / "distilled"
    resume = (ps_dir / "checkpoint.pt").exists()
    distilled = distiller.distill(DistillContext(spec=spec, buffer=buf, train=train, out=ps_dir, dataset_info=info,
                                                 device=device, seed=seed, resume=resume, host=host))

    click.echo(f"[4/5] random coreset of {pairs} real pairs")
    from vlcore.components import SelectContext
    from vlcore.coreset import run_selector
    rnd = run_selector(host.create("selector", "random", {}),
                       SelectContext(train=train, spec=spec, device=device, host=host, progress=False,
                                     dataset_info=info), pairs, seed)
    rnd.save(out / "random")

    click.echo(f"[5/5] evaluation: {DEMO['eval']['seeds']} fresh models per set, retrieval on embedded/dev")
    results = {}
    bar = tqdm(total=2 * DEMO["eval"]["seeds"], desc="evaluate", unit="model")
    for label, ps in ((f"random {pairs}", rnd), (f"bitraj {pairs}", distilled)):
        results[label] = evaluate_pairs(ps, dev, spec, options=DEMO["eval"], device=device, host=host,
                                        progress=lambda i: bar.update(1))
    bar.close()
    table = format_table(list(results.items()))
    recall_curves({k: v["curve"] for k, v in results.items()}, out / "recall.png",
                  title=f"embedded/dev retrieval: models trained on {pairs} pairs")
    write_json(out / "results.json", {k: {**metric_keys_json(v), "lr_img": v["lr_img"], "lr_txt": v["lr_txt"]}
                                      for k, v in results.items()})
    (out / "results.md").write_text("Dev retrieval (%), mean±std over seeds, models trained from scratch on "
                                    f"{pairs} pairs\n\n```\n{table}\n```\n")
    click.echo("")
    click.echo(table)
    click.echo("")
    click.echo(f"done in {time.time() - t_all:.0f} s. Figures: {ps_dir}/grid.png (distilled pairs with their "
               f"nearest captions), {out}/recall.png, {ps_dir}/loss.png; tables: {out}/results.md")
