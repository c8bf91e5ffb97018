"""``vl distill``: Stage 2, distillation from an expert buffer."""
from __future__ import annotations

import time
from pathlib import Path

import click

from vlcore.errors import VLError

from .common import inherit_dataset, load_split_data
from .main import cli
from .options import (component_option, dataset_options, device_option, handle_errors, make_spec,
                      model_options, parse_kv, resolve_device)


@cli.command("distill")
@component_option("--distiller", "distiller", "bitraj", "Distillation method.")
@click.option("--buffer", type=click.Path(), required=True, help="Expert buffer from `vl experts`.")
@dataset_options(default_dataset=None)
@model_options(defaults_from_artifact=True)
@click.option("--pairs", type=int, default=None, help="Synthetic pairs to distil (default 100).")
@click.option("--iterations", type=int, default=None, help="Outer iterations.")
@click.option("--syn-steps", type=int, default=None, help="Student steps per iteration.")
@click.option("--expert-epochs", type=int, default=None, help="Expert epochs the student must cover (M).")
@click.option("--max-start-epoch", type=int, default=None, help="Start epochs are drawn from [0, M0).")
@click.option("--batch-syn", type=int, default=None, help="Synthetic minibatch (0: all pairs).")
@click.option("--lr-images", type=float, default=None, help="Learning rate of the synthetic pixels.")
@click.option("--lr-text", type=float, default=None, help="Learning rate of the synthetic text embeddings.")
@click.option("--lr-lr", type=float, default=None, help="Learning rate of the learnable step sizes.")
@click.option("--lr-init", type=float, default=None, help="Initial student step size.")
@click.option("--init-images", type=click.Choice(["real", "noise"]), default=None)
@click.option("--init-text", type=click.Choice(["real", "noise"]), default=None)
@click.option("--distill-images/--no-distill-images", default=None, help="Optimise the images (off: stay real).")
@click.option("--distill-text/--no-distill-text", default=None, help="Optimise the texts (off: stay real).")
@component_option("--unroll", "unroll_backend", None, "Unroll backend (default func).")
@click.option("--eval-every", type=int, default=None, help="Evaluate on --eval-split every N iterations.")
@click.option("--eval-split", default="dev", show_default=True, help="Split for periodic evaluation (never test).")
@click.option("--eval-seeds", type=int, default=1, show_default=True)
@click.option("--no-eval", is_flag=True, help="Skip evaluation during and after distillation.")
@click.option("--distiller-option", "distiller_opts", multiple=True, metavar="KEY=VALUE", help="Any distiller option.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--resume", is_flag=True, help="Continue an interrupted run from OUT/checkpoint.pt.")
@click.option("--out", type=click.Path(), required=True, help="Output pair-set folder.")
@device_option
@handle_errors
def distill_cmd(distiller, buffer, dataset, data_dir, limit, dataset_opts, encoder, encoder_opts, pretrained,
                text_encoder, text_opts, image_size, trainable, image_head, embed_dim, pairs, iterations, syn_steps,
                expert_epochs, max_start_epoch, batch_syn, lr_images, lr_text, lr_lr, lr_init, init_images,
                init_text, distill_images, distill_text, unroll, eval_every, eval_split, eval_seeds, no_eval,
                distiller_opts, seed, resume, out, device):
    """Distil a small synthetic pair set by matching expert trajectories.

    The encoder, text encoder, image size and dataset default to the buffer's.
    """
    from vlcore.pipeline import build_text_encoder
    from vlcore.registry import get_host
    from vlcore.trajectories import Buffer

    device = resolve_device(device)
    host = get_host()
    buf = Buffer(buffer)
    spec = make_spec(encoder, encoder_opts, pretrained, text_encoder, text_opts, image_size, trainable,
                     image_head, embed_dim, base=buf.spec)
    text_enc = build_text_encoder(spec)
    buf.check_compatible(spec, text_enc.dim)
    src = buf.index.get("dataset") or {}
    dataset, data_dir, dopts, limit = inherit_dataset(src, dataset, data_dir, dataset_opts, limit)
    opts = {k: v for k, v in dict(pairs=pairs, iterations=iterations, syn_steps=syn_steps, expert_epochs=expert_epochs,
                                   max_start_epoch=max_start_epoch, batch_syn=batch_syn, lr_images=lr_images,
                                   lr_text=lr_text, lr_lr=lr_lr, lr_init=lr_init, init_images=init_images,
                                   init_text=init_text, distill_images=distill_images, distill_text=distill_text,
                                   unroll=unroll, eval_every=eval_every).items() if v is not None}
    opts.update(parse_kv(distiller_opts, "--distiller-option"))
    dist = host.create("distiller", distiller, opts)
    if getattr(dist.config, "unroll", None) is not None:
        host.get("unroll_backend", dist.config.unroll)  # unknown backend: fail now, with a suggestion
    if eval_split == "test":
        raise VLError("--eval-split test would select on the test split; use dev (report test once, with vl eval).")
    train = load_split_data(dataset, data_dir, limit, dopts, "train", spec)
    from .experts import dataset_info
    info = dataset_info(dataset, data_dir, limit, dopts, train)
    if src.get("fingerprint") and src.get("fingerprint") != info["fingerprint"]:
        click.echo(f"warning: the buffer was trained on other data ({src.get('name')}, {src.get('pairs')} pairs) "
                   f"than the training split used now ({dataset}, {train.num_pairs} pairs).", err=True)
    eval_data = None if no_eval else load_split_data(dataset, data_dir, limit, dopts, eval_split, spec)
    from vlcore.components import DistillContext
    ctx = DistillContext(spec=spec, buffer=buf, train=train, out=Path(out), eval_data=eval_data, dataset_info=info,
                         device=device, seed=seed, resume=resume, host=host, progress=True,
                         eval_options={"seeds": eval_seeds})
    t0 = time.time()
    ps = dist.distill(ctx)
    click.echo(f"distilled {len(ps)} pairs into {out} ({time.time() - t0:.0f} s); learned step sizes "
               f"lr_img={ps.lr_img:.4g} lr_txt={ps.lr_txt:.4g}")
    hist = ps.meta.get("history", {}).get("eval") or []
    if hist:
        last = hist[-1]
        click.echo(f"{eval_split} retrieval of the last set (1 quick model): TR@1 {last['tr_r1']:.1f}  "
                   f"IR@1 {last['ir_r1']:.1f}  rsum {last['rsum']:.1f}; evaluate properly with `vl eval {out}`")
    click.echo(f"figures: {out}/grid.png, {out}/loss.png" + (f", {out}/dev_recall.png" if hist else ""))
