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
import dataclasses
import math
import os
import re
import sys
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import click

from vlcore.errors import ConfigError, VLError, suggest

from .texts import (JSON_STDOUT, ChoiceOrEmpty, component_flags_section, describe_range, help_for_component, name_flags,
                    one_spelling)

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


def aliases(p: click.Parameter) -> tuple[str, ...]:
    """The hidden old spellings of parameter ``p`` (kept working for one release, not shown in help)."""
    return getattr(p, "vl_aliases", ())


def option(*decls: str, aliases: tuple[str, ...] = (), **kw):
    """``click.option`` with hidden old spellings ``aliases`` (``option("--pairs", "pairs",
    aliases=("--budget",))``): they keep working, are not shown in the help, and using one prints
    a note naming the new spelling."""
    def deco(f):
        f = click.option(*decls, *aliases, **kw)(f)
        f.__click_params__[-1].vl_aliases = tuple(aliases)
        return f
    return deco


def describe_default(p: click.Parameter) -> None:
    """Give every option a shown default: its value, or a word for the options whose default is
    "not given" (presence flags: off; repeatable options: none; no value: none)."""
    if not isinstance(p, click.Option) or p.hidden or (p.is_eager and not p.expose_value):
        return  # --help, --version
    if p.show_default not in (None, False):
        return
    default = None if type(p.default).__name__ == "Sentinel" else p.default  # click's UNSET: no default
    if p.is_flag and not p.secondary_opts:
        p.show_default = "on" if default else "off"
    elif p.multiple or default in (None, (), []):
        p.show_default = "none"
    else:
        p.show_default = True


class DerivedOption(click.Option):
    """A flag made from a component Config field; ``field_name`` is the field."""

    def __init__(self, *args, field_name: str, **kw):
        super().__init__(*args, **kw)
        self.field_name = field_name


def flag_key(p: click.Parameter) -> str:
    """The key of parameter ``p`` in a config file: its long flag without dashes (``syn-steps``)."""
    longs = [o for o in p.opts if o.startswith("--") and o not in aliases(p)]
    return max(longs, key=len)[2:] if longs else p.name.replace("_", "-")


def config_keys(params) -> dict[str, click.Parameter]:
    """Every key a config file may use for ``params`` (flag names, old spellings and parameter
    names, with underscores for dashes) -> the parameter."""
    out = {}
    for p in params:
        if not p.name or p.name == "config" or p.name.startswith("_"):
            continue
        out[p.name] = p
        for a in aliases(p):
            out.setdefault(a[2:].replace("-", "_"), p)
        out[flag_key(p).replace("-", "_")] = p
    return out


def alias_map(params) -> dict[str, str]:
    """Old spelling -> the flag it is now (``--budget`` -> ``--pairs``)."""
    return {a: "--" + flag_key(p) for p in params for a in aliases(p)}


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


def field_option(info, taken: set[str], flag: str | None = None, old: tuple[str, ...] = ()) -> click.Option | None:
    """A click option for one Config field (:class:`vlcore.config.OptionInfo`), or None when its
    flag would clash with one of the command's own (``taken``).  ``flag``: the flag (default: the
    field name), ``old``: hidden old spellings of it."""
    name = info.name
    flag = flag or "--" + name.replace("_", "-")
    if name in taken or flag in taken:
        return None
    old = tuple(a for a in old if a not in taken)
    opt = _field_option(info, name, flag, old)
    opt.vl_aliases = old + (tuple(f"--no-{a[2:]}" for a in old) if opt.secondary_opts else ())
    describe_default(opt)
    return opt


def _field_option(info, name: str, flag: str, old: tuple[str, ...]) -> click.Option:
    from .options import ComponentOption

    tp, help_ = info.type, (info.help[:1].upper() + info.help[1:]) if info.help else ""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType) and type(None) in args:
        rest = [a for a in args if a is not type(None)]
        tp = rest[0] if len(rest) == 1 else str
        origin, args = typing.get_origin(tp), typing.get_args(tp)
    kw: dict[str, Any] = dict(default=info.default, show_default=True if info.default is not None else "none",
                              help=help_, field_name=name)
    if info.kind:
        return ComponentOption([flag, *old, name], kind=info.kind, **kw)
    if tp is bool:
        return DerivedOption([f"{flag}/--no-{flag[2:]}", *[f"{a}/--no-{a[2:]}" for a in old], name], **kw)
    if origin is typing.Literal:
        choices = [str(a) for a in args]
        ctype = ChoiceOrEmpty(choices) if "" in choices else click.Choice(choices)
        return DerivedOption([flag, *old, name], type=ctype, **kw)
    if tp in (int, float):
        ctype = Number(tp, info.range)
        if info.range is not None:
            kw["help"] = f"{help_} [range: {info.range}]".strip()
        return DerivedOption([flag, *old, name], type=ctype, metavar=ctype.name.upper(), **kw)
    return DerivedOption([flag, *old, name], type=click.STRING, metavar="STRING", **kw)


class Number(click.ParamType):
    """An int or float flag that accepts only finite values in its option's range (checked when the
    command line is parsed, before any work: a usage error, exit code 2)."""

    def __init__(self, tp: type, range_=None):
        from vlcore.config import FINITE

        self.tp, self.range = tp, range_ or FINITE
        self.name = "integer" if tp is int else "float"

    def convert(self, value, param, ctx):
        base = click.INT if self.tp is int else click.FLOAT
        v = base.convert(value, param, ctx)
        why = self.range.problem(v)
        if why:
            self.fail(why, param, ctx)
        return v


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
            from vlcore.config import describe_options
            from vlcore.registry import get_host

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
        path = _peek(args, ("--config",))
        try:
            data, spelled = self._config_file(path)
            if self.component:
                flags = tuple(o for p in self._static if p.name == self.component.param for o in p.opts)
                chosen = data.get(self.component.param)
                if chosen is not None and not isinstance(chosen, str):
                    raise ConfigError(wrong_type(path, spelled.get(self.component.param, self.component.param),
                                                 chosen, self.component.flag, "a component name (a string)",
                                                 self.component.default or "NAME"))
                name = _peek(args, flags) or chosen or self.component.default
                if name:
                    from vlcore.registry import get_host

                    name = str(name).strip().lower()
                    get_host().get(self.component.kind, name)  # an unknown name fails here, with a suggestion
                    ctx.meta["vl.component"] = name
            if data:
                ctx.default_map = self._defaults(ctx, data, path, spelled)
        except VLError as exc:
            raise click.UsageError(str(exc), ctx) from None
        try:
            rest = super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            raise self._unknown_option(ctx, exc) from None
        if not ctx.resilient_parsing:
            check_given_values(ctx, self.get_params(ctx))
        return rest

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
            from vlcore.registry import get_host

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
        from vlcore import tomlfile

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
def _shown(value: Any) -> str:
    """``value`` as TOML writes it (for messages)."""
    from vlcore import tomlfile

    try:
        text = tomlfile._value(value)
    except TypeError:
        text = repr(value)
    return text if len(text) <= 60 else text[:28] + "..." + text[-28:]


def _kind(value: Any) -> str:
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int):
        return "an integer"
    if isinstance(value, float):
        return "a number with a fraction" if math.isfinite(value) and not value.is_integer() else "a float"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return f"a {type(value).__name__}"


def wrong_type(path: str | None, key: str, value: Any, flag: str, expected: str, example: Any) -> str:
    """The message of a --config value of the wrong type: the file, the key, the value, what it takes."""
    where = f"The --config file {path}" if path else "The --config file"
    return (f"{where}: '{key} = {_shown(value)}' is {_kind(value)}, but {flag} takes {expected}. Fix the value in "
            f"the file, e.g. {key} = {_shown(example)}.")


def _expects(p: click.Parameter) -> tuple[str, Any] | None:
    """(what a --config value of parameter ``p`` must be, an example), None: any value."""
    t = p.type
    default = None if type(p.default).__name__ == "Sentinel" or callable(p.default) else p.default
    if isinstance(t, click.types.BoolParamType):
        return "true or false", default if isinstance(default, bool) else True
    if isinstance(t, click.types.IntParamType) or (isinstance(t, Number) and t.tp is int):
        ok = isinstance(default, int) and not isinstance(default, bool)
        return "an integer (no fraction, not true/false)", default if ok else 8
    if isinstance(t, click.types.FloatParamType) or (isinstance(t, Number) and t.tp is float):
        ok = isinstance(default, (int, float)) and not isinstance(default, bool)
        return "a number (not true/false)", default if ok else 0.5
    from .options import ComponentOption, installed

    if isinstance(p, ComponentOption):
        names = installed(p.component_kind)
        example = default if isinstance(default, str) else (names[0] if names else "NAME")
        return "a component name (a string)", example
    if isinstance(t, (click.types.StringParamType, click.Path, click.Choice)):
        if isinstance(t, click.Choice):
            return f"one of {', '.join(map(str, t.choices))} (a string)", str(default or t.choices[0])
        meta = p.metavar if isinstance(p, click.Option) and p.metavar and p.metavar.isupper() else None
        return "a string (in quotes)", default if isinstance(default, str) else (meta or "text")
    return None


def toml_value(p: click.Parameter, key: str, value: Any, path: str | None = None) -> Any:
    """The value of ``key`` of a --config file for parameter ``p``, of the type the flag takes (an
    integer given as 8.0 becomes 8); ConfigError naming the file, key, value and the type otherwise.
    No silent coercion: ``true`` is not 1, ``1.7`` is not 1; an integer is fine for a float."""
    flag = "--" + flag_key(p)
    if p.multiple:
        items = list(value) if isinstance(value, (list, tuple)) else [value]  # one value: a one-item list
        return [_toml_scalar(p, key, v, path, flag, value) for v in items]
    return _toml_scalar(p, key, value, path, flag, value)


def _toml_scalar(p: click.Parameter, key: str, value: Any, path: str | None, flag: str, whole: Any) -> Any:
    want = _expects(p)
    if want is None:
        return value
    expected, example = want
    if p.multiple:
        expected, example = f"a list whose items are each {expected}", [example]
    t = p.type
    ok = False
    if isinstance(t, click.types.BoolParamType):
        ok = isinstance(value, bool)
    elif isinstance(t, click.types.IntParamType) or (isinstance(t, Number) and t.tp is int):
        if isinstance(value, float) and not isinstance(value, bool) and math.isfinite(value) and value.is_integer():
            value = int(value)
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif isinstance(t, click.types.FloatParamType) or (isinstance(t, Number) and t.tp is float):
        if isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError:
                raise ConfigError(f"The --config file {path or ''}: '{key} = {_shown(whole)}' is too large for {flag}, "
                                  f"which takes a finite number (at most {sys.float_info.max:.3g}). Fix the value "
                                  f"in the file.") from None
        ok = isinstance(value, float)
    else:
        ok = isinstance(value, str)
    if not ok:
        raise ConfigError(wrong_type(path, key, whole, flag, expected, example))
    return value


def _not_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def check_given_values(ctx: click.Context, params) -> None:
    """Checks every parsed value gets, whichever option it came from (a usage error, exit 2):

    * a number of a plain click type fits its range: 64-bit integers and finite floats, and the shared
      range of its name (``--seed``: [0, 2**63 - 1]; :data:`vlcore.config.SHARED_RANGES`);
    * text (a path, a name) is valid UTF-8: vl writes the paths and names it uses into its records
      (meta.json, config.toml: UTF-8 text) and prints them, so a file name of other bytes (e.g.
      ``b'out\\xff'``, arriving as a surrogate escape) is refused before any work rather than failing
      after it.
    """
    from vlcore.config import FINITE, SHARED_RANGES, Range

    for p in params:
        if not p.name or p.name not in ctx.params:
            continue
        v = ctx.params[p.name]
        for x in (v if isinstance(v, (list, tuple)) else (v,)):
            if isinstance(x, str) and _not_utf8(x):
                try:
                    shown = os.fsencode(x)  # the bytes the command line had
                except UnicodeEncodeError:
                    shown = x.encode("utf-8", "backslashreplace")
                raise click.BadParameter(
                    f"the name {shown!r} is not valid UTF-8. vl records the paths and names it uses in UTF-8 "
                    f"files (meta.json, config.toml) and prints them, so it takes only UTF-8 names: choose another "
                    f"name (an existing file or folder: rename it, e.g. with mv).", ctx=ctx, param=p)
            if isinstance(x, bool) or not isinstance(x, (int, float)) or isinstance(p.type, Number):
                continue
            if isinstance(p.type, (click.types.IntParamType, click.types.FloatParamType)):
                r = SHARED_RANGES.get(p.name, FINITE) if isinstance(x, int) else FINITE
                if isinstance(p.type, (click.IntRange, click.FloatRange)):  # their own bounds
                    r = Range(p.type.min, p.type.max, p.type.min_open, p.type.max_open)
                why = r.problem(x)
                if why:
                    raise click.BadParameter(why, ctx=ctx, param=p)


def _peek_component(cmd: "VLCommand", args: list[str]) -> str | None:
    if not cmd.component:
        return None
    flags = tuple(o for p in cmd._static if p.name == cmd.component.param for o in p.opts)
    name = _peek(args, flags) or cmd.component.default
    return str(name).strip().lower() if name else None


def dataclass_options(cls: type, *, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None,
                      rename: dict[str, str] | None = None, only: tuple[str, ...] | None = None):
    """A decorator adding one flag per field of the dataclass ``cls`` (its settings written once,
    in ``cls``); the callback receives them by field name, None when not given.  ``defaults``
    overrides the default shown for a field; ``rename`` gives a field another flag (its plain
    spelling stays a hidden alias); ``only`` keeps just those fields."""
    from vlcore.config import describe_options

    def deco(f):
        for info in reversed(describe_options(cls)):
            if info.name in exclude or (only is not None and info.name not in only):
                continue
            if defaults and info.name in defaults:
                info = dataclasses.replace(info, default=defaults[info.name])
            plain = "--" + info.name.replace("_", "-")
            new = (rename or {}).get(info.name)
            opt = field_option(info, set(), new, (plain,) if new else ())
            f.__click_params__ = [*getattr(f, "__click_params__", []), opt]
        name_flags([p for p in f.__click_params__ if isinstance(p, DerivedOption)])
        return f
    return deco


def was_given(ctx: click.Context, name: str) -> bool:
    """Whether the user set parameter ``name`` (on the command line, in --config or the environment)."""
    src = ctx.get_parameter_source(name)
    return src is not None and src not in (click.core.ParameterSource.DEFAULT,)


def given(ctx: click.Context, kw: dict, cls: type) -> dict[str, Any]:
    """Pop the fields of dataclass ``cls`` (flags of :func:`dataclass_options`) from a callback's
    ``kw``; return those the user set."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = {n: kw.pop(n) for n in names if n in kw}
    return {n: v for n, v in values.items() if was_given(ctx, n)}


def component_values(ctx: click.Context) -> dict[str, Any]:
    """The derived component flags the user set (on the command line or in --config), by field name."""
    cmd = ctx.command
    if not isinstance(cmd, VLCommand):
        return {}
    return {p.field_name: ctx.params[p.name] for p in cmd.derived(cmd.component_name(ctx)) if was_given(ctx, p.name)}


def save_config(ctx: click.Context, out: str | Path, resolved: dict[str, Any] | None = None) -> Path:
    """Write the command's settings, as ``--config`` reads them, to ``OUT/config.toml``: the values
    of its flags (``resolved`` overrides them with what the run actually used)."""
    from vlcore import tomlfile
    from vlcore.io import atomic_path

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
