"""``vl coreset``: select a coreset of real pairs (the baselines) and save it as a pair set."""
from __future__ import annotations

import dataclasses
import time
from dataclasses import asdict
from pathlib import Path

import click

from .app import cli
from vlcore.train import SGDConfig

from .command import ComponentFlags, component_values, option, save_config
from .common import (BARS, check_pairs, claim_out, dataset_info, default_out, load_split_data, picked_defaults,
                     warn_other_data)
from .options import (DatasetOptions, ModelOptions, component_option, dataset_options, device_option, handle_errors,
                      model_options, overwrite_option, parse_kv, resolve_device, seed_option, spec_values)


#: the fields of a selector's Config that configure the model it trains (its proxy model): their
#: flags are --proxy-epochs, --proxy-lr, ... (one name per concept: --epochs of `vl train` is another model)
PROXY_FIELDS = frozenset(f.name for f in dataclasses.fields(SGDConfig))


@cli.command("coreset", component=ComponentFlags("--method", "method", "selector", prefix="proxy",
                                                 prefixed=PROXY_FIELDS))
@component_option("--method", "selector", None, "Coreset selector (its options follow as flags).", required=True)
@option("--pairs", "pairs", type=int, default=100, show_default=True, aliases=("--budget",),
        help="Number of image-caption pairs to select (distinct images unless --no-unique-images) [range: >= 1; "
             "not vl distill's >= 2, which its matching of a contrastive student needs: a coreset is real pairs, "
             "and any number of them is a set]")
@click.option("--buffer", type=click.Path(), default=None, show_default="none: a proxy model is trained",
              help="Expert buffer from `vl experts`: its final-epoch expert defines the embedding space "
                   "(and the default model and dataset). Without one, herding/k-center train a quick model.")
@dataset_options(default_dataset=None, shown="the buffer's, else embedded")
@model_options("buffer", fallback=True)
@click.option("--selector-option", "selector_opts", multiple=True, metavar="KEY=VALUE",
              help="Any selector option (repeatable), e.g. first=mean, expert=2, lr=0.05.")
@seed_option
@overwrite_option
@click.option("--out", type=click.Path(), default=None, show_default="runs/METHOD-ENCODER-PAIRS",
              help="Output pair-set folder (printed at the start and the end).")
@device_option
@handle_errors
def coreset_cmd(method, pairs, buffer, selector_opts, seed, overwrite, out, device, config, **kw):
    """Select --pairs real image-caption pairs (100 by default) of the training split with a coreset
    method and save them as a pair set (evaluate it with `vl eval OUT`).  `vl coreset --method
    herding` runs as typed, on the default model and dataset of `vl distill` and `vl demo`.

    \b
    Methods (pairs have no classes, so they work in a joint image-text space):
      random      uniformly random pairs (seeded)
      herding     greedy: the running mean of the chosen pairs tracks the mean of all pairs
      kcenter     greedy farthest-point; first center random (seeded) or nearest the mean (first=mean)
      forgetting  pairs most often forgotten (lost top-1 in-batch retrieval, either direction) while
                  a fresh model trains; never-learned pairs first, ties random (seeded)
    The options of each --method follow as flags: `vl coreset --help` lists them all, under "Options
    of each --method", and `vl coreset --method NAME --help` those of one method.

    \b
    Pairs vs images: --pairs counts image-caption pairs. By default at most one caption per
    image is taken, so N pairs are N distinct images, as in a distilled set of N pairs;
    --no-unique-images lets several captions of one image in.

    \b
    Embedding space (herding, kcenter): --space expert (default) concatenates the L2-normalised
    image and text embeddings of a trained model: the --buffer's expert 0 at its final epoch, or
    without a buffer a quick (proxy) model trained like an expert on the training split (SGD lr 0.1,
    batch 128, --proxy-epochs, seeded by --seed). --space raw uses the initial backbone features and
    the caption embeddings instead (meaningless for the randomly initialised convnet).

    An OUT that already holds an artifact is refused unless --overwrite.  The output folder holds
    pairs.safetensors, captions.json, meta.json (method, full config, seed,
    model spec, dataset, the selected (image file, caption index) pairs, versions) and grid.png.
    """
    from vlcore.components import SelectContext
    from vlcore.coreset import run_selector
    from vlcore.errors import ConfigError
    from vlcore.pipeline import build_text_encoder
    from vlcore.registry import get_host
    from vlcore.trajectories import Buffer
    from vlcore.viz import pair_grid

    ctx = click.get_current_context()
    device = resolve_device(device)
    host = get_host()
    if pairs < 1:
        raise ConfigError(f"--pairs must be at least 1 pair (got {pairs}).")
    opts = {**component_values(ctx), **parse_kv(selector_opts, "--selector-option")}
    sel = host.create("selector", method, opts)  # unknown method or option: fail now, with a suggestion
    ds, model_opts = DatasetOptions.pop(kw, announce=False), ModelOptions.pop(kw)
    buf = Buffer(buffer) if buffer else None
    spec = model_opts.spec(base=buf.spec if buf else None)
    src = (buf.index.get("dataset") or {}) if buf else {}
    ds = ds.inherit(src, default="embedded")
    if buf is not None:
        buf.check_compatible(spec, build_text_encoder(spec).dim)
    out = Path(out or default_out(sel.name, spec.encoder, pairs))
    folder = claim_out(out, "coreset", overwrite=overwrite, inputs=[buffer])
    picked = picked_defaults(ctx, {"dataset": ds.dataset, "encoder": spec.encoder,
                                   "text_encoder": spec.text_encoder, "image_size": spec.image_size,
                                   "trainable": spec.trainable, "pairs": pairs, "seed": seed, "out": out,
                                   "device": device}, notes={"dataset": ds.inferred})
    click.echo(f"selecting {pairs} pairs with {sel.name} into {out}")
    unique = bool(getattr(sel.config, "unique_images", False))
    train = load_split_data(ds, "train", spec, check=lambda part: check_pairs(pairs, part, ds, sel.name,
                                                                                    unique_images=unique))
    info = dataset_info(ds, train)
    warn_other_data(src, info)
    run = SelectContext(train=train, spec=spec, budget=pairs, seed=seed, buffer=buf, device=device, host=host,
                        progress=BARS, dataset_info=info)
    t0 = time.time()
    ps = run_selector(sel, run)
    seconds = time.time() - t0
    ps.meta["seconds"] = round(seconds, 2)
    ps.meta["defaults"] = {k: str(v) for k, v in picked.items()}
    folder.prepare()
    ps.save(out)
    save_config(ctx, out, {**spec_values(spec), **asdict(sel.config), "dataset": ds.dataset})
    n_img = len({i for i, _ in ps.source_ids}) if ps.source_ids else len(ps)
    pair_grid(ps.images, ps.captions, Path(out) / "grid.png", max_pairs=24, cols=6,
              title=f"{sel.name}: first {min(24, len(ps))} of {len(ps)} selected pairs "
                    f"({ds.dataset}/train, seed {seed})")
    summary = ps.meta.get("summary")
    click.echo(f"{sel.name}: selected {len(ps)} pairs ({n_img} images) of {train.num_pairs} into {out} "
               f"({seconds:.1f} s{'; ' + summary if summary else ''})")
    click.echo(f"figure: {out}/grid.png; evaluate with `vl eval {out}`")
