"""``vl export``: a pair set in a format others use (a Hugging Face ``datasets`` dataset with a card)."""
from __future__ import annotations

import shutil
from pathlib import Path

import click

from vlcore.errors import VLError

from .app import cli
from .options import handle_errors


@cli.command("export")
@click.argument("pairset", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["hf"]), default="hf", show_default=True,
              help="hf: a Hugging Face `datasets` dataset (save_to_disk folder) with a dataset card README.md.")
@click.option("--overwrite", is_flag=True, help="Replace OUT if it exists.")
@handle_errors
def export_cmd(pairset, out, fmt, overwrite, config):
    """Export PAIRSET (a distilled set or coreset) to OUT as a shareable dataset.

    OUT holds the pairs (PNG previews, exact pixels, text embeddings, nearest real captions), the
    full record (vlcore.json: method, config, model spec, learned step sizes) and a dataset card
    stating the method, the model, the source dataset and its licence and the recorded dev/test
    numbers (run `vl eval PAIRSET --eval-split test` first to have them).  `vl eval OUT` gives the
    same numbers as `vl eval PAIRSET`; online, push it with `datasets.load_from_disk(OUT).push_to_hub(REPO)`.
    """
    from vlcore.export import export_hf
    from vlcore.pairset import PairSet
    from vlcore.registry import get_host

    out = Path(out)
    if out.exists():
        if not overwrite:
            raise VLError(f"{out} exists; choose another OUT or pass --overwrite.")
        if Path(pairset).resolve() in (out.resolve(), *out.resolve().parents):
            raise VLError(f"OUT {out} would replace the pair set it exports; choose another folder.")
        shutil.rmtree(out)
    method = PairSet.load(pairset).meta.get("method", "")
    try:
        host = get_host()
        kind = "distiller" if method in host.names("distiller") else "selector"
        help_ = host.get(kind, method).summary()
    except VLError:
        help_ = ""
    export_hf(pairset, out, method_help=help_)
    click.echo(f"exported {pairset} to {out} ({fmt}): the dataset, vlcore.json and the card {out}/README.md; "
               f"`vl eval {out}` scores it")
