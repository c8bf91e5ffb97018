"""``vl demo``: the whole pipeline on the embedded default dataset, no download, no flags: the
embedded recipe ``demo`` (``vlcore/recipes/demo.toml``) run by ``vl run``, and a comparison table."""
from __future__ import annotations

import time
from pathlib import Path

import click

from vlcore.artifacts.experiment import load, override

from .app import cli
from .common import LEGEND
from .options import device_option, handle_errors
from .common import claim_out
from .run import report, run_experiment


@cli.command("demo")
@click.option("--out", type=click.Path(file_okay=False), default="vl-demo", show_default=True, help="Output folder.")
@click.option("--pairs", type=click.IntRange(min=2), default=50, show_default=True,
              help="Distilled pairs and coreset budget.")
@click.option("--iterations", type=click.IntRange(min=1), default=None, show_default="the recipe's (40)",
              help="Distillation iterations.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of every stage.")
@click.option("--log", default=None, show_default="jsonl only", metavar="NAME[,NAME]",
              help="Experiment tracking of the distillation besides its log.jsonl, e.g. --log tensorboard,wandb.")
@device_option
@handle_errors
def demo_cmd(out, pairs, iterations, seed, log, device, config):
    """Run the whole pipeline on the embedded dataset: experts, bitraj and LoRS distillation, a
    random coreset of the same storage, evaluation of the three, a comparison table and PNGs.

    Everything is resumable: run it again and finished steps are reused.  The same run is
    `vl run demo --out vl-demo` (the recipe is vlcore/recipes/demo.toml).
    """
    exp = load("demo")
    override(exp, f"distilled.pairs={pairs}")
    override(exp, f"lors.pairs={pairs}")
    override(exp, f"random.pairs={pairs}")
    override(exp, f"common.seed={seed}")
    if iterations is not None:
        override(exp, f"distilled.iterations={iterations}")
        override(exp, f"lors.iterations={iterations}")
    if log:
        for name in ("distilled", "lors"):
            exp.stage(name).settings["log"] = [log]
    out = Path(out)
    claim_out(out, "demo", resume=True).prepare()
    t0 = time.time()
    results = run_experiment(exp, out, device=device)
    labels = {"eval-random": f"random {pairs}", "eval-distilled": f"bitraj {pairs}",
              "eval-lors": f"lors {pairs - 1} + S"}
    table = report(results, out, labels, title=f"embedded/dev retrieval: models trained on {pairs} pairs")
    click.echo("")
    click.echo(table)
    click.echo(f"\n{LEGEND}")
    d = out / "distilled"
    click.echo(f"done in {time.time() - t0:.0f} s. Figures: {d}/grid.png (distilled pairs with their nearest "
               f"captions), {out}/recall.png, {d}/loss.png, {d}/dev_recall.png (dev recall during distillation; "
               f"the best set on dev is in {d}/best/); tables: {out}/results.md")
