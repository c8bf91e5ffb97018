"""``vl coreset``: select a coreset of real pairs (the baselines) and save it as a pair set."""
from __future__ import annotations

import dataclasses

import click

from vlcore.choices import parse_kv
from vlcore.requests import CoresetRequest
from vlcore.training.train import SGDConfig

from .app import cli
from .command import ComponentFlags, component_values, save_config
from .common import hold
from .options import (choices_given, dataset_options, device_option, given_names, handle_errors, model_options,
                      overwrite_option, report, seed_option)
from .params import option

#: the fields of a selector's Config that configure the model it trains (its proxy model): their
#: flags are --proxy-epochs, --proxy-lr, ... (one name per concept: --epochs of `vl train` is another model)
PROXY_FIELDS = frozenset(f.name for f in dataclasses.fields(SGDConfig))

HELP = """Select --pairs real image-caption pairs (100 by default) of the training split with a coreset
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


@cli.command("coreset", help=HELP, component=ComponentFlags(
    "--method", "method", "selector", prefix="proxy", prefixed=PROXY_FIELDS,
    help="Coreset selector (its options follow as flags).", required=True))
@option("--pairs", "pairs", type=int, default=100, show_default=True, aliases=("--budget",),
        help="Number of image-caption pairs to select (distinct images unless --no-unique-images) [range: >= 1; "
             "not vl distill's >= 2, which its matching of a contrastive student needs: a coreset is real pairs, "
             "and any number of them is a set]")
@click.option("--buffer", type=click.Path(), default=None, show_default="none: a proxy model is trained",
              help="Expert buffer from `vl experts`: its final-epoch expert defines the embedding space "
                   "(and the default model and dataset). Without one, herding/k-center train a quick model.")
@dataset_options(fresh=False, shown="the buffer's, else embedded")
@model_options("buffer", fallback=True)
@click.option("--selector-option", "selector_opts", multiple=True, metavar="KEY=VALUE",
              help="Any selector option (repeatable), e.g. first=mean, expert=2, lr=0.05.")
@seed_option
@overwrite_option
@click.option("--out", type=click.Path(), default=None, show_default="runs/METHOD-ENCODER-PAIRS",
              help="Output pair-set folder (printed at the start and the end).")
@device_option
@handle_errors
def coreset_cmd(method, selector_opts, config, **kw):
    ctx = click.get_current_context()
    ds, model = choices_given(ctx, kw, announce=False)
    options = {**component_values(ctx, kw), **parse_kv(selector_opts, "--selector-option")}
    request = CoresetRequest(method, options, dataset=ds, model=model, given=given_names(ctx), **kw)
    result = request.run(report(), hold())
    save_config(ctx, result.out, result.settings)
    ps, out, facts = result.made, result.out, result.facts
    summary = ps.meta.get("summary")
    click.echo(f"{facts['name']}: selected {len(ps)} pairs ({facts['images']} images) of {facts['of']} into {out} "
               f"({result.seconds:.1f} s{'; ' + summary if summary else ''})")
    click.echo(f"figure: {out}/grid.png; evaluate with `vl eval {out}`")
