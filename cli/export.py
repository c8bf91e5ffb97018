"""``vl export``: a pair set in a format others use (a Hugging Face ``datasets`` dataset with a card)."""
from __future__ import annotations

from pathlib import Path

import click

from vlcore.core.errors import VLError
from vlcore.core.registry import get_host
from vlcore.data.export import export_hf
from vlcore.data.pairset import PairSet

from .app import cli
from .common import claim_out
from .options import handle_errors, overwrite_option


@cli.command("export")
@click.argument("pairset", type=click.Path())
@click.argument("out", type=click.Path())
@click.option("--format", "fmt", type=click.Choice(["hf"]), default="hf", show_default=True,
              help="hf: a Hugging Face `datasets` dataset (save_to_disk folder) with a dataset card README.md.")
@overwrite_option
@handle_errors
def export_cmd(pairset, out, fmt, overwrite, config):
    """Export PAIRSET (a distilled set or coreset) to OUT as a shareable dataset.

    OUT holds the pairs (PNG previews, exact pixels, text embeddings, nearest real captions), the
    full record (vlcore.json: method, config, model spec, learned step sizes) and a dataset card
    stating the method, the model, the source dataset and its licence and the recorded dev/test
    numbers (run `vl eval PAIRSET --eval-split test` first to have them).  `vl eval OUT` gives the
    same numbers as `vl eval PAIRSET`; online, push it with `datasets.load_from_disk(OUT).push_to_hub(REPO)`.
    """

    out = Path(out)
    method = PairSet.load(pairset).meta.get("method", "")  # a damaged or missing set fails before OUT is touched
    folder = claim_out(out, "export", overwrite=overwrite, inputs=[pairset], flag="OUT")
    try:
        host = get_host()
        kind = "distiller" if method in host.names("distiller") else "selector"
        help_ = host.get(kind, method).summary()
    except VLError:
        help_ = ""
    folder.prepare()
    export_hf(pairset, out, method_help=help_)
    click.echo(f"exported {pairset} to {out} ({fmt}): the dataset, vlcore.json and the card {out}/README.md; "
               f"`vl eval {out}` scores it")
