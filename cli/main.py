"""The ``vl`` console script: the group of :mod:`.app` with every command module's commands, and
the commands plugins add (``register_commands``)."""
from __future__ import annotations

import sys

import click

from vlcore.core.registry import get_host

from . import coreset, demo, distill, eval, experts, export, info, run, train  # noqa: F401  (they add their commands)
from .app import cli

__all__ = ["cli", "main"]


def _add_plugin_commands() -> None:
    try:
        get_host().add_commands(cli)
    except Exception as exc:  # a plugin's command must not stop vl
        click.echo(f"Error adding plugin commands: {exc}", err=True)


_add_plugin_commands()


def main(argv=None):
    cli.main(args=argv, prog_name="vl")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
