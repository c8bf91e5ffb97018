"""What every ``vl`` command's help and output have in common: one range style (``[range: >= 1]``),
flags rather than Config field names in help texts, no empty choice, one spelling per option on a
command line, component messages in the command's own flags, log lines without logger names, and
the one JSON document of ``--json`` on stdout."""
from __future__ import annotations

import json
import logging
import re
import sys
from typing import Any

import click

from .params import alias_map, aliases, flag_key, installed


def one_spelling(ctx: click.Context, p: click.Parameter, args: list[str]) -> None:
    """Refuse a parameter set by its old spelling and its new one (or two old ones) on one command line."""
    spellings = [*p.opts, *p.secondary_opts]
    used: dict[str, str] = {}  # spelling -> how it was given ("--budget 10")
    for i, a in enumerate(args):
        name, eq, value = a.partition("=")
        if name in spellings and name not in used:
            takes_value = not (p.is_flag or p.count)
            shown = value if eq else (args[i + 1] if takes_value and i + 1 < len(args) else "")
            used[name] = f"{name} {shown}".strip()
    old = [s for s in used if s in aliases(p) or s in {f"--no-{a[2:]}" for a in aliases(p)}]
    if old and len(used) > 1:
        now = "--" + flag_key(p)
        raise click.UsageError(f"{' and '.join(used.values())} both set {now} ({', '.join(old)} "
                               f"{'is its old spelling' if len(old) == 1 else 'are its old spellings'}); give it "
                               f"once, as {now}.", ctx)


JSON_STDOUT = "vl.json-stdout"


def print_json(obj: Any, **dumps) -> None:
    """Print the one JSON document of a ``--json`` command on stdout (the real one: the rest of the
    command's output goes to stderr, :meth:`VLCommand.invoke`)."""
    ctx = click.get_current_context(silent=True)
    stream = ctx.meta.get(JSON_STDOUT) if ctx is not None else None
    click.echo(json.dumps(obj, **dumps), file=stream or sys.stdout)


class LogFormat(logging.Formatter):
    """``warning: MESSAGE`` (as the CLI's own warnings read); with -v the logger's name too
    (``info vlcore.distill.recipe: MESSAGE``)."""

    def __init__(self, named: bool):
        super().__init__()
        self.named = named

    def format(self, record: logging.LogRecord) -> str:
        head = record.levelname.lower() + (f" {record.name}" if self.named else "")
        return f"{head}: {super().format(record)}"


def current_flags(message: str) -> str:
    """``message`` with the old spellings of the running command's flags (``--budget``) and the plain
    names of its prefixed component flags (a selector's ``--epochs``, an evaluator's ``--lr``) put as
    the command spells them now (``--pairs``, ``--proxy-epochs``, ``--eval-lr``): a component's message
    names its own fields, the user types the command's flags."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return message
    renamed = alias_map(ctx.command.get_params(ctx))
    if not renamed:
        return message
    pattern = re.compile(r"(?<![\w-])(" + "|".join(re.escape(a) for a in sorted(renamed, key=len, reverse=True)) +
                         r")(?![\w-])")
    return pattern.sub(lambda m: renamed[m.group(1)], message)


def help_for_component(cmd, ctx: click.Context) -> str | None:
    """The help text of ``cmd`` (a VLCommand) for the component ``ctx`` chose: without the paragraphs
    naming flags that other components have and this one lacks."""
    name = cmd.component_name(ctx)
    if not (cmd.component and name and cmd.help):
        return cmd.help
    mine = {o for p in cmd.get_params(ctx) for o in [*p.opts, *getattr(p, "secondary_opts", [])]}
    others = {o for n in installed(cmd.component.kind) for p in cmd.derived(n) for o in [*p.opts, *p.secondary_opts]}
    others -= mine
    kept = [para for para in re.split(r"\n[ \t]*\n", cmd.help)
            if not set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", para)) & others]
    return "\n\n".join(kept)


def component_flags_section(cmd, ctx: click.Context, formatter: click.HelpFormatter) -> None:
    """Without a chosen component (``vl coreset --help``): the flags of every registered one, each
    with the components that take it, so that the help shows every option its text names."""
    rows: dict[tuple[str, str], list[str]] = {}
    for name in installed(cmd.component.kind):
        for p in cmd.derived(name):
            kept = (p.opts, p.secondary_opts)
            p.opts = [o for o in p.opts if o not in aliases(p)]
            p.secondary_opts = [o for o in p.secondary_opts if o not in aliases(p)]
            try:
                record = p.get_help_record(ctx)
            finally:
                p.opts, p.secondary_opts = kept
            if record:
                rows.setdefault(record, []).append(name)
    if rows:
        flag = cmd.component.flag
        with formatter.section(f"Options of each {flag} (`vl {cmd.name} {flag} NAME --help` shows one's)"):
            formatter.write_dl([(spec, f"{text} ({', '.join(names)})") for (spec, text), names in rows.items()])
