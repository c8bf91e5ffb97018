"""``vl plugins`` and ``vl list``: what is installed."""
from __future__ import annotations

import json

import click

from vlcore.kinds import normalise_kind, spellings
from vlcore.registry import get_host

from .app import cli
from .options import handle_errors


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin in a list.")
@handle_errors
def plugins_cmd(as_json, config=None):
    """List installed plugins, their packages and what they register."""
    host = get_host()
    infos = host.plugin_table()
    if as_json:
        click.echo(json.dumps([i.as_dict() for i in infos], indent=2))
        return
    for info in infos:
        tag = "bundled" if info.bundled else "third-party"
        click.echo(f"{info.name}  ({info.package or '?'} {info.version or ''}, {tag})")
        if info.error:
            click.echo(f"    FAILED TO IMPORT: {info.error}")
        for kind, names in info.components.items():
            click.echo(f"    {kind.replace('_', ' ')}s: {', '.join(names)}")


@cli.command("list")
@click.argument("kind", type=click.Choice(spellings(), case_sensitive=False), metavar="KIND")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per component in a list.")
@handle_errors
def list_cmd(kind, as_json, config=None):
    """List the components of one KIND with their options.

    KIND: image_encoder, text_encoder, dataset, distiller, selector, evaluator, unroll_backend, logger
    (plural forms accepted).
    """
    from vlcore.config import describe_options

    host = get_host()
    k = normalise_kind(kind)
    items = []
    for name in host.names(k):
        cls = host.get(k, name)
        opts = describe_options(cls.Config)
        items.append({"name": name, "plugin": host.owner(k, name), "help": cls.summary(),
                      "options": {o.name: o.default for o in opts},
                      "option_help": {o.name: o.help for o in opts if o.help}})
    if as_json:
        click.echo(json.dumps(items, indent=2, default=str))
        return
    for it in items:
        click.echo(f"{it['name']:<20} {it['help']}  [{it['plugin']}]")
        if it["options"]:
            click.echo("    options: " + ", ".join(f"{k}={v!r}" for k, v in it["options"].items()))
