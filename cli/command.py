"""The ``vl`` command class: ``--config FILE.toml`` on every command, and the flags of a chosen
component (``--distiller``, ``--method``) derived from its Config.

* ``--config FILE`` holds the same keys as the command's flags (``syn-steps = 8`` or
  ``syn_steps = 8``); flags given on the command line override it; an unknown key is an error with a
  suggestion.  Commands that write an artifact save their resolved settings in the same format as
  ``OUT/config.toml``, so ``vl distill --config OUT/config.toml --out NEW`` repeats a run.
* A command declared with a :class:`ComponentFlags` gets one flag per field of the chosen
  component's Config (``pairs`` -> ``--pairs``, ``distill_images`` -> ``--distill-images/
  --no-distill-images``), typed from the annotation, with the field's ``#:`` comment as its help and
  its default shown.  A plugin's distiller gets its flags this way for free.
"""
from __future__ import annotations

import contextlib
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from vlcore.artifacts import tomlfile
from vlcore.artifacts.io import atomic_path
from vlcore.core.config import describe_options
from vlcore.core.errors import ConfigError, VLError, suggest
from vlcore.core.registry import get_host

from .params import (ComponentOption, alias_map, aliases, config_keys, describe_default, describe_range, field_option, flag_key, name_flags,
                     was_given)
from .texts import JSON_STDOUT, component_flags_section, help_for_component, one_spelling
from .values import check_given_values, toml_value, wrong_type

#: command-line values that are not settings of the run (never saved in config.toml)
NOT_SAVED = {"config", "out", "resume", "overwrite", "as_json"}


@dataclass(frozen=True)
class ComponentFlags:
    """Derive flags from the Config of the component named by the option ``flag``."""

    flag: str                      # e.g. "--distiller"
    param: str                     # the callback argument of that option, e.g. "distiller"
    kind: str                      # e.g. "distiller"
    default: str | None = None     # the component when the option is not given
    #: Config fields that get no flag (set them with the KEY=VALUE option)
    exclude: frozenset[str] = field(default_factory=frozenset)
    #: a word put before the flags of ``prefixed`` fields, so that a concept has one name across
    #: commands (``eval`` -> ``--eval-epochs``: the epochs of the evaluation models); the plain
    #: spelling stays as a hidden alias for one release
    prefix: str = ""
    #: the fields ``prefix`` applies to (None: all of them)
    prefixed: frozenset[str] | None = None
    #: the help of the option ``flag`` itself (the command declares it: the first of its options)
    help: str = ""
    #: whether the option ``flag`` must be given
    required: bool = False

    def option(self) -> click.Option:
        """The option ``flag`` naming the component: its help lists the installed ones."""
        return ComponentOption([self.flag, self.param], kind=self.kind, default=self.default, help=self.help,
                               show_default=True if self.default is not None else None, required=self.required)

    def flag_of(self, field_name: str) -> tuple[str, tuple[str, ...]]:
        """(the flag of a Config field, its hidden old spellings)."""
        plain = "--" + field_name.replace("_", "-")
        if self.prefix and (self.prefixed is None or field_name in self.prefixed):
            return f"--{self.prefix}-{plain[2:]}", (plain,)
        return plain, ()

    def field_of(self, key: str) -> str:
        """The Config field a flag name (without dashes, underscores for dashes) sets."""
        head = self.prefix.replace("-", "_") + "_"
        if self.prefix and key.startswith(head) and (self.prefixed is None or key[len(head):] in self.prefixed):
            return key[len(head):]
        return key


def _peek(args: list[str], flags: tuple[str, ...]) -> str | None:
    """The value of the last ``--flag VALUE`` / ``--flag=VALUE`` in ``args`` (before ``--``)."""
    found = None
    for i, a in enumerate(args):
        if a == "--":
            break
        for f in flags:
            if a == f and i + 1 < len(args):
                found = args[i + 1]
            elif a.startswith(f + "="):
                found = a[len(f) + 1:]
    return found


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
    """A ``vl`` command: ``--config`` support, and derived component flags when ``component`` is set."""

    context_class = VLContext

    def __init__(self, *args, component: ComponentFlags | None = None, **kw):
        self.component = component
        self._derived: dict[str, list[click.Option]] = {}
        self._static_only = False
        super().__init__(*args, **kw)
        if component is not None:
            self._static.insert(0, component.option())
        self._static.append(click.Option(["--config", "config"], type=click.Path(dir_okay=False), default=None,
                                        metavar="FILE.toml", is_eager=False, expose_value=True,
                                        help="Settings from a TOML file with the same keys as the flags "
                                             "(flags given here override it); OUT/config.toml of a run "
                                             "repeats that run."))
        for p in self._static:
            describe_default(p)
            describe_range(p)

    @property
    def params(self) -> list[click.Parameter]:
        """The command's own parameters, and the derived flags of the default component."""
        if self._static_only:
            return self._static
        return [*self._static, *self.derived(self.component.default if self.component else None)]

    def get_help_option(self, ctx: click.Context):
        self._static_only = True  # click appends its help option to self.params and pops it again
        try:
            return super().get_help_option(ctx)
        finally:
            self._static_only = False

    @params.setter
    def params(self, value: list[click.Parameter]) -> None:
        self._static = list(value)

    # ---------------------------------------------------------------- derived flags
    def component_name(self, ctx: click.Context) -> str | None:
        return ctx.meta.get("vl.component", self.component.default if self.component else None)

    def derived(self, name: str | None) -> list[click.Option]:
        """The flags of component ``name``'s Config (cached per name)."""
        if not self.component or not name:
            return []
        if name not in self._derived:

            try:
                cls = get_host().get(self.component.kind, name)
            except VLError:
                return []
            taken = {p.name for p in self._static} | {o for p in self._static for o in p.opts}
            opts = []
            for info in describe_options(cls.Config):
                if info.name in self.component.exclude:
                    continue
                opt = field_option(info, taken, *self.component.flag_of(info.name))
                if opt is not None:
                    opts.append(opt)
            name_flags(opts)
            self._derived[name] = opts
        return self._derived[name]

    def get_params(self, ctx: click.Context) -> list[click.Parameter]:
        rv = [*self._static, *self.derived(self.component_name(ctx))]
        help_option = self.get_help_option(ctx)
        return [*rv, help_option] if help_option is not None else rv

    def format_help_text(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The command's text; with a component chosen, without the paragraphs about flags of other
        components that it lacks (`vl coreset --method random --help` does not explain --space)."""
        whole = self.help
        self.help = help_for_component(self, ctx)
        try:
            super().format_help_text(ctx, formatter)
        finally:
            self.help = whole

    def format_options(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        """The options without their hidden old spellings."""
        params = self.get_params(ctx)
        saved = [(p, p.opts, p.secondary_opts) for p in params if aliases(p)]
        for p, opts, secondary in saved:
            p.opts = [o for o in opts if o not in aliases(p)]
            p.secondary_opts = [o for o in secondary if o not in aliases(p)]
        try:
            super().format_options(ctx, formatter)
        finally:
            for p, opts, secondary in saved:
                p.opts, p.secondary_opts = opts, secondary
        if self.component and not self.component_name(ctx):
            component_flags_section(self, ctx, formatter)

    def invoke(self, ctx: click.Context):
        """With ``--json`` stdout carries one JSON document (:func:`print_json`) and nothing else:
        everything else the command prints (defaults lines, progress, notes, a recipe's stages) goes to
        stderr."""
        if not ctx.params.get("as_json"):
            return super().invoke(ctx)
        ctx.meta[JSON_STDOUT] = sys.stdout
        with contextlib.redirect_stdout(sys.stderr):
            return super().invoke(ctx)

    # ---------------------------------------------------------------- parsing
    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        self._note_old_spellings(ctx, args)
        flags = tuple(o for p in self._static if self.component and p.name == self.component.param for o in p.opts)
        self._prepare(ctx, _peek(args, flags) if flags else None, _peek(args, ("--config",)))
        try:
            rest = super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            raise self._unknown_option(ctx, exc) from None
        if not ctx.resilient_parsing:
            check_given_values(ctx, self.get_params(ctx))
        return rest

    def context_for(self, given: dict[str, Any], info_name: str) -> click.Context:
        """The context this command runs in with the parameter values ``given`` (parameter name -> the
        text of its value, a list of them for a repeatable option, a bool for a flag), made as parsing
        a command line that gives them makes it, with no command line: `vl run` runs its stages so.
        A bad value is a usage error, as on the command line."""
        ctx = self.context_class(self, info_name=info_name, **self.context_settings)
        with ctx.scope(cleanup=False):
            named = given.get(self.component.param) if self.component else None
            self._prepare(ctx, str(named) if named is not None else None, given.get("config"))
            params = self.get_params(ctx)
            for p in click.core.iter_params_for_processing([], params):
                p.handle_parse_result(ctx, dict(given), [])
            check_given_values(ctx, params)
        return ctx

    def _prepare(self, ctx: click.Context, named: str | None, path: str | None) -> None:
        """Before the values are read: the --config file ``path`` as the defaults, and the component
        the command runs (``named`` on the command line, else the file's, else the default)."""
        try:
            data, spelled = self._config_file(path)
            if self.component:
                chosen = data.get(self.component.param)
                if chosen is not None and not isinstance(chosen, str):
                    raise ConfigError(wrong_type(path, spelled.get(self.component.param, self.component.param),
                                                 chosen, self.component.flag, "a component name (a string)",
                                                 self.component.default or "NAME"))
                name = named or chosen or self.component.default
                if name:
                    name = str(name).strip().lower()
                    get_host().get(self.component.kind, name)  # an unknown name fails here, with a suggestion
                    ctx.meta["vl.component"] = name
            if data:
                ctx.default_map = self._defaults(ctx, data, path, spelled)
        except VLError as exc:
            raise click.UsageError(str(exc), ctx) from None

    def _note_old_spellings(self, ctx: click.Context, args: list[str]) -> None:
        """Name the new spelling of every old one used (they work for one more release); an option given
        in both spellings (``--pairs 20 --budget 10``) is a usage error, since one would silently win."""
        flags = args[:args.index("--")] if "--" in args else args
        old = {a for a in flags if a.startswith("--")}
        if not old or ctx.resilient_parsing:
            return
        derived = self.derived(_peek_component(self, args))
        for p in [*self._static, *derived]:
            if aliases(p):
                one_spelling(ctx, p, flags)
        renamed = {**alias_map(self._static), **alias_map(derived)}
        for a in sorted({a.split("=", 1)[0] for a in old} & set(renamed)):
            click.echo(f"note: `vl {self.name} {a}` is now `{renamed[a]}`; the old spelling works until the next "
                       f"release.", err=True)

    def _unknown_option(self, ctx: click.Context, exc: click.NoSuchOption) -> click.UsageError:
        """For a flag the chosen component does not have: say so as its config builder would
        (``Unknown option 'space' for selector 'random'. Valid options: ...``)."""
        name = self.component_name(ctx)
        if self.component and name and exc.option_name.startswith("--"):
            key = exc.option_name[2:].split("=", 1)[0].replace("-", "_")
            if key.startswith("no_"):
                key = key[3:]
            key = self.component.field_of(key)
            try:
                get_host().config(self.component.kind, name, {key: None})
            except VLError as err:
                return click.UsageError(f"{err} Flags of `vl {self.name} {self.component.flag} {name}`: see "
                                        f"`vl {self.name} {self.component.flag} {name} --help`.", ctx)
        return exc

    def _config_file(self, path: str | None) -> tuple[dict[str, Any], dict[str, str]]:
        """The keys of the --config file (underscores for dashes) -> their values, and -> the key as
        the file spells it."""
        if not path:
            return {}, {}
        data = tomlfile.load(path)
        bad = [k for k, v in data.items() if isinstance(v, dict)]
        if bad:
            raise ConfigError(f"{path}: tables ([{bad[0]}]) belong in recipe files (`vl run`); a --config file "
                              f"holds the flags of `vl {self.name}` as top-level keys.")
        return {k.replace("-", "_"): v for k, v in data.items()}, {k.replace("-", "_"): k for k in data}

    def _defaults(self, ctx: click.Context, data: dict[str, Any], path: str | None = None,
                  spelled: dict[str, str] | None = None) -> dict[str, Any]:
        keys = config_keys(self.get_params(ctx))
        out = {}
        for key, value in data.items():
            p = keys.get(key)
            if p is None:
                raise ConfigError(f"Unknown key '{key.replace('_', '-')}' in the --config file for `vl {self.name}`."
                                  f"{suggest(key, keys)} Valid keys: the command's flags (vl {self.name} --help).")
            if isinstance(p, click.Argument):
                raise ConfigError(f"'{key}' is an argument of `vl {self.name}`, not a flag: give it on the command line.")
            out[p.name] = toml_value(p, (spelled or {}).get(key, key), value, path)
        return out


# ---------------------------------------------------------------- value checks


def _peek_component(cmd: "VLCommand", args: list[str]) -> str | None:
    if not cmd.component:
        return None
    flags = tuple(o for p in cmd._static if p.name == cmd.component.param for o in p.opts)
    name = _peek(args, flags) or cmd.component.default
    return str(name).strip().lower() if name else None


def component_values(ctx: click.Context, kw: dict | None = None) -> dict[str, Any]:
    """The derived component flags the user set (on the command line or in --config), by field name;
    ``kw``: a callback's keyword arguments, from which the derived flags are popped."""
    cmd = ctx.command
    if not isinstance(cmd, VLCommand):
        return {}
    derived = cmd.derived(cmd.component_name(ctx))
    for p in derived if kw is not None else ():
        kw.pop(p.name, None)
    return {p.field_name: ctx.params[p.name] for p in derived if was_given(ctx, p.name)}


def save_config(ctx: click.Context, out: str | Path, resolved: dict[str, Any] | None = None) -> Path:
    """Write the command's settings, as ``--config`` reads them, to ``OUT/config.toml``: the values
    of its flags (``resolved`` overrides them with what the run actually used)."""

    values: dict[str, Any] = {}
    cmd = ctx.command
    for p in cmd.get_params(ctx):
        if not p.name or p.name in NOT_SAVED or p.name.startswith("_") or isinstance(p, click.Argument):
            continue
        v = ctx.params.get(p.name)
        if isinstance(v, tuple):
            v = list(v)
        if v is not None and v != []:
            values[flag_key(p)] = v
    params = {p.name: p for p in cmd.get_params(ctx)}
    for k, v in (resolved or {}).items():  # what the run used, for the flags the command has
        if v is not None and v != [] and k in params and k not in NOT_SAVED:
            values[flag_key(params[k])] = list(v) if isinstance(v, tuple) else v
    path = Path(out) / "config.toml"
    with atomic_path(path) as tmp:
        tmp.write_text(tomlfile.dumps(values, header=f"vl {cmd.name}: the settings of this run. Repeat it with\n"
                                                      f"  vl {cmd.name} --config {path} --out NEW_FOLDER"))
    return path
