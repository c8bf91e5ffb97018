"""``vl plugins`` and ``vl list``: what is installed."""
from __future__ import annotations


import click

from vlcore.core.config import describe_options
from vlcore.core.kinds import KINDS, normalise_kind, spellings
from vlcore.core.registry import get_host

from .app import cli
from .texts import print_json
from .options import handle_errors


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin in a list.")
@handle_errors
def plugins_cmd(as_json, config=None):
    """List installed plugins, their packages and what they register."""
    host = get_host()
    infos = host.plugin_table()
    if as_json:
        print_json([i.as_dict() for i in infos], indent=2)
        return
    for info in infos:
        tag = "bundled" if info.bundled else "third-party"
        click.echo(f"{info.name}  ({info.package or '?'} {info.version or ''}, {tag})")
        if info.error:
            click.echo(f"    FAILED TO IMPORT: {info.error}")
        for kind, names in info.components.items():
            click.echo(f"    {kind.replace('_', ' ')}s: {', '.join(names)}")


@cli.command("list")
@click.argument("kind", type=click.Choice(spellings(), case_sensitive=False), metavar="[KIND]", required=False)
@click.option("--json", "as_json", is_flag=True,
              help="One JSON object per component in a list (without KIND: one per kind).")
@handle_errors
def list_cmd(kind, as_json, config=None):
    """List the components of one KIND with their options; without KIND, the kinds (one line each).

    KIND: image_encoders, text_encoders, datasets, distillers, selectors, evaluators, unroll_backends,
    loggers (singular forms accepted).
    """

    host = get_host()
    if kind is None:
        kinds = [{"kind": k.plural.replace(" ", "_"), "components": host.names(name)} for name, k in KINDS.items()]
        if as_json:
            print_json(kinds, indent=2)
            return
        width = max(len(k["kind"]) for k in kinds)
        for k in kinds:
            click.echo(f"{k['kind']:<{width}}  {', '.join(k['components']) or '(none installed)'}")
        click.echo("\n`vl list KIND` shows the components of one kind with their options, e.g. `vl list datasets`.")
        return
    k = normalise_kind(kind)
    items = []
    for name in host.names(k):
        cls = host.get(k, name)
        opts = describe_options(cls.Config)
        items.append({"name": name, "plugin": host.owner(k, name), "help": cls.summary(),
                      "options": {o.name: o.default for o in opts},
                      "option_help": {o.name: o.help for o in opts if o.help}})
    if as_json:
        print_json(items, indent=2, default=str)
        return
    for it in items:
        click.echo(f"{it['name']:<20} {it['help']}  [{it['plugin']}]")
        if it["options"]:
            click.echo("    options: " + ", ".join(f"{k}={v!r}" for k, v in it["options"].items()))
