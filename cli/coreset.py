"""``vl coreset``: select a coreset of real pairs (the baselines) and save it as a pair set."""
from __future__ import annotations

import time
from pathlib import Path

import click

from vlcore.errors import ConfigError

from .common import ensure_out, inherit_dataset, load_split_data
from .main import cli
from .options import (component_option, dataset_options, device_option, handle_errors, make_spec,
                      model_options, parse_kv, resolve_device)


@cli.command("coreset")
@component_option("--method", "selector", None, "Coreset selector.", required=True)
@click.option("--budget", type=int, required=True,
              help="Number of image-caption pairs to select (distinct images unless --no-unique-images).")
@click.option("--buffer", type=click.Path(), default=None,
              help="Expert buffer from `vl experts`: its final-epoch expert defines the embedding space "
                   "(and the default model and dataset). Without one, herding/k-center train a quick model.")
@dataset_options(default_dataset=None)
@model_options(defaults_from_artifact=True)
@click.option("--unique-images/--no-unique-images", default=None,
              help="At most one caption per image (default: on, so N pairs are N distinct images).")
@click.option("--space", type=click.Choice(["expert", "raw"]), default=None,
              help="Embedding space of herding/k-center: expert (trained model, default) or raw (initial "
                   "backbone features + caption embeddings; needs a pretrained encoder).")
@click.option("--epochs", type=int, default=None,
              help="Epochs of the model a selector trains: forgetting (default 10), herding/kcenter "
                   "without --buffer (default 5).")
@click.option("--selector-option", "selector_opts", multiple=True, metavar="KEY=VALUE",
              help="Any selector option (repeatable), e.g. first=mean, expert=2, lr=0.05.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(), required=True, help="Output pair-set folder.")
@device_option
@handle_errors
def coreset_cmd(method, budget, buffer, dataset, data_dir, limit, dataset_opts, encoder, encoder_opts, pretrained,
                text_encoder, text_opts, image_size, trainable, image_head, embed_dim, unique_images, space,
                epochs, selector_opts, seed, out, device):
    """Select --budget real image-caption pairs of the training split with a coreset method and
    save them as a pair set (evaluate it with `vl eval OUT`).

    \b
    Methods (pairs have no classes, so they work in a joint image-text space):
      random      uniformly random pairs (seeded)
      herding     greedy: the running mean of the chosen pairs tracks the mean of all pairs
      kcenter     greedy farthest-point; first center random (seeded) or nearest the mean (first=mean)
      forgetting  pairs most often forgotten (lost top-1 in-batch retrieval, either direction) while
                  a fresh model trains; never-learned pairs first, ties random (seeded)

    \b
    Pairs vs images: the budget counts image-caption pairs. By default at most one caption per
    image is taken, so N pairs are N distinct images, as in a distilled set of N pairs;
    --no-unique-images lets several captions of one image in.

    \b
    Embedding space (herding, kcenter): --space expert (default) concatenates the L2-normalised
    image and text embeddings of a trained model: the --buffer's expert 0 at its final epoch, or
    without a buffer a quick model trained like an expert on the training split (SGD lr 0.1,
    batch 128, --epochs, seeded by --seed). --space raw uses the initial backbone features and
    the caption embeddings instead (meaningless for the randomly initialised convnet).

    The output folder holds pairs.safetensors, captions.json, meta.json (method, full config, seed,
    model spec, dataset, the selected (image file, caption index) pairs, versions) and grid.png.
    """
    from vlcore.pipeline import build_text_encoder
    from vlcore.registry import get_host
    from vlcore.trajectories import Buffer
    from vlcore.viz import pair_grid
    from vlcore.components import SelectContext
    from vlcore.coreset import run_selector

    from .experts import dataset_info

    device = resolve_device(device)
    host = get_host()
    if budget < 1:
        raise ConfigError(f"--budget must be at least 1 pair (got {budget}).")
    opts = {k: v for k, v in dict(unique_images=unique_images, space=space, epochs=epochs).items() if v is not None}
    opts.update(parse_kv(selector_opts, "--selector-option"))
    selector = host.create("selector", method, opts)  # unknown method or option: fail now, with a suggestion
    buf = Buffer(buffer) if buffer else None
    spec = make_spec(encoder, encoder_opts, pretrained, text_encoder, text_opts, image_size, trainable,
                     image_head, embed_dim, base=buf.spec if buf else None)
    src = (buf.index.get("dataset") or {}) if buf else {}
    dataset, data_dir, dopts, limit = inherit_dataset(src, dataset, data_dir, dataset_opts, limit, default="embedded")
    if buf is not None:
        buf.check_compatible(spec, build_text_encoder(spec).dim)
    out = ensure_out(out)
    train = load_split_data(dataset, data_dir, limit, dopts, "train", spec)
    info = dataset_info(dataset, data_dir, limit, dopts, train)
    if src.get("fingerprint") and src.get("fingerprint") != info["fingerprint"]:
        click.echo(f"warning: the buffer was trained on other data ({src.get('name')}, {src.get('pairs')} pairs) "
                   f"than the training split used now ({dataset}, {train.num_pairs} pairs).", err=True)
    ctx = SelectContext(train=train, spec=spec, buffer=buf, device=device, host=host, progress=True,
                        dataset_info=info)
    t0 = time.time()
    ps = run_selector(selector, ctx, budget, seed)
    seconds = time.time() - t0
    ps.meta["seconds"] = round(seconds, 2)
    ps.save(out)
    n_img = len({i for i, _ in ps.source_ids}) if ps.source_ids else len(ps)
    pair_grid(ps.images, ps.captions, Path(out) / "grid.png", max_pairs=24, cols=6,
              title=f"{selector.name}: first {min(24, len(ps))} of {len(ps)} selected pairs "
                    f"({dataset}/train, seed {seed})")
    sel = ps.meta.get("selection") or {}
    extra = ""
    if "mean_error" in sel:
        extra = f"; mean error {sel['mean_error']:.4g}"
    elif "covering_radius" in sel:
        extra = f"; covering radius {sel['covering_radius']:.4g}"
    elif "events" in sel:
        ev = sel["events"]
        extra = (f"; forgetting events: max {ev['max_events']}, {ev['never_learned']} pairs never learned, "
                 f"{sel['selected_never_learned']} of them selected")
    click.echo(f"{selector.name}: selected {len(ps)} pairs ({n_img} images) of {train.num_pairs} into {out} "
               f"({seconds:.1f} s{extra})")
    click.echo(f"figure: {out}/grid.png; evaluate with `vl eval {out}`")
