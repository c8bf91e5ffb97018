"""The ``vl`` command."""
from __future__ import annotations

import json
import re
import sys

import click

from vlcore import __version__
from vlcore.registry import KINDS, get_host, normalise_kind

from .options import handle_errors, installed, registry_problem, setup_logging


class VLHelpFormatter(click.HelpFormatter):
    """Never wraps a line at a hyphen inside a word, so component names (``effnet-lite0``) and
    flags (``--no-unique-images``) stay whole in the help, ready to copy."""

    _HYPHEN = re.compile(r"(?<=\w)-(?=\w)")
    _KEEP = "\u2011"  # a non-breaking hyphen stands in while click wraps, then is put back

    def _restore(self, start: int) -> None:
        self.buffer[start:] = [s.replace(self._KEEP, "-") for s in self.buffer[start:]]

    def write_dl(self, rows, col_max: int = 30, col_spacing: int = 2) -> None:
        start = len(self.buffer)
        super().write_dl([(a, self._HYPHEN.sub(self._KEEP, b)) for a, b in rows], col_max, col_spacing)
        self._restore(start)

    def write_text(self, text: str) -> None:
        start = len(self.buffer)
        super().write_text(self._HYPHEN.sub(self._KEEP, text))
        self._restore(start)


class VLContext(click.Context):
    formatter_class = VLHelpFormatter


class VLCommand(click.Command):
    context_class = VLContext


class VLGroup(click.Group):
    """Adds the installed components to ``vl --help``."""

    context_class = VLContext
    command_class = VLCommand
    group_class = type  # subgroups are VLGroups too

    def format_epilog(self, ctx, formatter):
        with formatter.section("Installed components"):
            problem = registry_problem()
            if problem:
                formatter.write_text(f"(cannot be listed: {problem}) Run `vl plugins`, or set VL_LOAD_PLUGINS "
                                     f"to the packages to load (e.g. VL_LOAD_PLUGINS=vlcore).")
            else:
                rows = []
                for kind in KINDS:
                    names = installed(kind)
                    rows.append((kind.replace("_", " ") + "s", ", ".join(names) or "(none)"))
                formatter.write_dl(rows)
        formatter.write_paragraph()
        formatter.write_text("Start with `vl demo` (no flags, no download). `vl COMMAND --help` for details.")


@click.group(cls=VLGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="vl")
@click.option("-v", "--verbose", count=True, help="More log output (-v info, -vv debug).")
def cli(verbose):
    """vlcore: vision-language dataset distillation.

    Distil an image-caption dataset into a few synthetic pairs (bi-trajectory matching, LoRA
    matching), select coresets of real pairs, and evaluate either by training fresh CLIP-style
    models on them and measuring image-text retrieval.
    """
    setup_logging(verbose)


@cli.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per plugin in a list.")
@handle_errors
def plugins_cmd(as_json):
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
@click.argument("kind", type=click.Choice(sorted(list(KINDS) + [k + "s" for k in KINDS] + ["encoders", "methods"]),
                                          case_sensitive=False), metavar="KIND")
@click.option("--json", "as_json", is_flag=True)
@handle_errors
def list_cmd(kind, as_json):
    """List the components of one KIND with their options.

    KIND: image_encoder, text_encoder, dataset, distiller, selector, evaluator, unroll_backend
    (plural forms accepted).
    """
    from vlcore.config import describe_options

    host = get_host()
    k = normalise_kind(kind)
    items = []
    for name in host.names(k):
        cls = host.get(k, name)
        doc = (cls.__doc__ or "").strip().splitlines()
        opts = describe_options(cls.Config) if hasattr(cls, "Config") else []
        items.append({"name": name, "plugin": host.owner(k, name), "help": doc[0] if doc else "",
                      "options": {o[0]: o[2] for o in opts}})
    if as_json:
        click.echo(json.dumps(items, indent=2, default=str))
        return
    for it in items:
        click.echo(f"{it['name']:<20} {it['help']}  [{it['plugin']}]")
        if it["options"]:
            click.echo("    options: " + ", ".join(f"{k}={v!r}" for k, v in it["options"].items()))


def _add_commands():
    from . import commands  # noqa: F401  (defines train / eval / demo on `cli`)

    for mod in ("experts", "distill", "coreset", "demo"):
        try:
            __import__(f"{__package__}.{mod}")
        except ModuleNotFoundError as exc:
            if exc.name != f"{__package__}.{mod}":
                raise
    try:
        get_host().add_commands(cli)
    except Exception as exc:  # a plugin's command must not stop vl
        click.echo(f"Error adding plugin commands: {exc}", err=True)


_add_commands()


def main(argv=None):
    cli.main(args=argv, prog_name="vl")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
