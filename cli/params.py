"""The parameters of the ``vl`` commands, below every command module: flags with hidden old
spellings (:func:`option`), shown defaults and ranges, options naming registered components
(:class:`ComponentOption`), and flags derived from a dataclass's fields (:func:`field_option`,
:func:`dataclass_options`; the model and dataset flags from :mod:`vlcore.choices`, a component's
from its Config).  It imports no other module of the CLI."""
from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

import click

from vlcore.core.config import FINITE, Range, describe_options
from vlcore.core.errors import VLError
from vlcore.core.registry import get_host


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


def field_option(info, taken: set[str], flag: str | None = None, old: tuple[str, ...] = ()) -> click.Option | None:
    """A click option for one Config field (:class:`vlcore.core.config.OptionInfo`), or None when its
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
        self.tp, self.range = tp, range_ or FINITE
        self.name = "integer" if tp is int else "float"

    def convert(self, value, param, ctx):
        base = click.INT if self.tp is int else click.FLOAT
        v = base.convert(value, param, ctx)
        why = self.range.problem(v)
        if why:
            self.fail(why, param, ctx)
        return v


def dataclass_options(cls: type, *, exclude: tuple[str, ...] = (), defaults: dict[str, Any] | None = None,
                      rename: dict[str, str] | None = None, only: tuple[str, ...] | None = None,
                      prefix: str = ""):
    """A decorator adding one flag per field of the dataclass ``cls`` (its settings written once,
    in ``cls``); the callback receives them by field name, None when not given.  ``defaults``
    overrides the default shown for a field; ``rename`` gives a field another flag (its plain
    spelling stays a hidden alias); ``only`` keeps just those fields; ``prefix`` names every flag
    ``--PREFIX-FIELD`` (parameter ``PREFIX_FIELD``: :func:`prefixed` pops them)."""
    def deco(f):
        for info in reversed(describe_options(cls)):
            if info.name in exclude or (only is not None and info.name not in only):
                continue
            if defaults and info.name in defaults:
                info = dataclasses.replace(info, default=defaults[info.name])
            if prefix:
                info = dataclasses.replace(info, name=f"{prefix}_{info.name}")
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


def prefixed(kw: dict, cls: type, prefix: str) -> dict[str, Any]:
    """Pop the flags of :func:`dataclass_options` with ``prefix`` from a callback's ``kw``: the values
    of the fields of ``cls``, by field name."""
    return {f.name: kw.pop(f"{prefix}_{f.name}") for f in dataclasses.fields(cls)}


def given(ctx: click.Context, kw: dict, cls: type) -> dict[str, Any]:
    """Pop the fields of dataclass ``cls`` (flags of :func:`dataclass_options`) from a callback's
    ``kw``; return those the user set."""
    names = [f.name for f in dataclasses.fields(cls)]
    values = {n: kw.pop(n) for n in names if n in kw}
    return {n: v for n, v in values.items() if was_given(ctx, n)}


def installed(kind: str) -> list[str]:
    try:
        return get_host().names(kind)
    except Exception:  # help must render even when the registry cannot be built
        return []


def registry_problem() -> str | None:
    """Why the installed components cannot be listed (a broken plugin), or None."""
    try:
        get_host().registry
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def installed_listing(kind: str) -> str:
    """" Installed: a, b." for help texts, read from the registry when the help is shown."""
    names = installed(kind)
    if names:
        return f" Installed: {', '.join(names)}."
    problem = registry_problem()
    if problem:
        return f" (Installed components cannot be listed: {problem.splitlines()[0]})"
    return " Installed: (none)."


def _complete(kind: str):
    def complete(ctx, param, incomplete):
        return [click.shell_completion.CompletionItem(n) for n in installed(kind) if n.startswith(incomplete)]
    return complete


def _check_name(kind: str):
    """A click callback refusing a name the registry does not know, when the command line is parsed
    (a usage error with the closest names, before any line of the command's own output; ``vl run``
    parses every stage's command line before the first stage runs)."""
    def check(ctx, param, value):
        if value is None or ctx.resilient_parsing:
            return value
        for name in value if isinstance(value, (list, tuple)) else (value,):
            try:
                get_host().get(kind, str(name))
            except VLError as exc:
                raise click.UsageError(str(exc), ctx) from None
            except Exception:  # a registry that cannot be built: the command says so when it runs
                return value
        return value
    return check


class ComponentOption(click.Option):
    """An option naming a registered component of ``kind``: its help lists the installed
    components when the help is rendered (so plugins registered after import show up too), shell
    completion offers them, and an unknown name is a usage error when the command line is parsed.
    ``field_name``: the Config field it sets, when derived from one."""

    def __init__(self, *args, kind: str, field_name: str | None = None, **kw):
        kw.setdefault("shell_complete", _complete(kind))
        kw.setdefault("metavar", "NAME")
        kw.setdefault("callback", _check_name(kind))
        super().__init__(*args, **kw)
        self.component_kind = kind
        self.field_name = field_name

    def get_help_record(self, ctx):
        base = self.help
        self.help = (base or "") + installed_listing(self.component_kind)
        try:
            return super().get_help_record(ctx)
        finally:
            self.help = base


def component_option(flag: str, kind: str, default: str | None, help: str, **kw):
    """An option naming a registered component; help lists the installed ones."""
    kw.setdefault("show_default", True if default is not None else None)
    return click.option(flag, cls=ComponentOption, kind=kind, default=default, help=help, **kw)


class ComponentListOption(ComponentOption):
    """A comma-separated list of registered components (``--log tensorboard,wandb``)."""

    def __init__(self, *args, kind: str, **kw):
        def complete(ctx, param, incomplete):
            head, _, last = incomplete.rpartition(",")
            prefix = head + "," if head else ""
            return [click.shell_completion.CompletionItem(prefix + n) for n in installed(kind) if n.startswith(last)]

        kw["shell_complete"] = complete
        kw.setdefault("metavar", "NAME[,NAME]")
        kw.setdefault("callback", None)  # checked by vlcore.artifacts.loggers.parse_names, before any work
        super().__init__(*args, kind=kind, **kw)


class _RangeInHelp(click.Option):
    """An option of a click range type whose range its help text states, in the style of every other
    numeric flag (``[range: >= 1]``, :func:`describe_range`), instead of click's own (``x>=1``)."""

    def get_help_extra(self, ctx):
        extra = super().get_help_extra(ctx)
        extra.pop("range", None)
        return extra


def describe_range(p: click.Parameter) -> None:
    """State the range of an option of a click range type (``click.IntRange(min=1)``) in its help as the
    derived flags do (``[range: >= 1]``: one range style in every help text)."""
    t = p.type
    if type(p) is not click.Option or p.count or not isinstance(t, click.types._NumberRangeBase):
        return
    p.help = f"{p.help or ''} [range: {Range(t.min, t.max, t.min_open, t.max_open)}]".strip()
    if p.metavar is None:
        p.metavar = "INTEGER" if isinstance(t, click.IntRange) else "FLOAT"
    p.__class__ = _RangeInHelp


#: a field name in a Config's help text (``default_lr``): shown as its flag (``--eval-default-lr``)
_FIELD_WORD = re.compile(r"(?<![\w-])([a-z][a-z0-9]*(?:_[a-z0-9]+)+)(?![\w-])")


def name_flags(options: list[click.Option]) -> None:
    """Put the flags of the Config fields these options derive from in place of the fields' names in
    their help (no internal names in help: ``else default_lr`` -> ``else --eval-default-lr``); a help
    that begins "None: ..." (the field's None) says "not given: ..."."""
    flags = {getattr(o, "field_name", None): max((x for x in o.opts if x not in aliases(o)), key=len)
             for o in options if getattr(o, "field_name", None)}
    for o in options:
        if o.help:
            o.help = _FIELD_WORD.sub(lambda m: flags.get(m.group(1), m.group(1)), o.help)
            o.help = re.sub(r"(?<![\w-])None:", "not given:", o.help)


class ChoiceOrEmpty(click.Choice):
    """The choices of a Literal field with an empty member (``""``: "as it is"): the empty string is
    accepted (as a default, in --config files) but not listed among the choices."""

    def __init__(self, choices, case_sensitive: bool = True):
        super().__init__([c for c in choices if c != ""], case_sensitive)

    def convert(self, value, param, ctx):
        if value == "":
            return ""
        return super().convert(value, param, ctx)


def choice_options(cls: type, *, fresh: bool, shown: dict[str, str] | None = None, exclude: tuple[str, ...] = ()):
    """A decorator adding one flag per field of ``cls``, a dataclass of :mod:`vlcore.choices` (a model
    or a dataset choice; the callback receives the values by field name).  The field's ``#:`` comment
    is the help; its metadata gives the flag (``flag``, else the field name), a ``metavar``, the
    component ``kind`` the value names, whether it is a ``path``, the default a fresh run uses
    (``fresh``: with ``fresh``, that is the flag's default; else every default is None: "as the
    artifact has it") and the default shown (``shown``, which the ``shown`` argument overrides)."""
    fields = {f.name: f.metadata for f in dataclasses.fields(cls)}

    def deco(f):
        for info in reversed(describe_options(cls)):
            if info.name in exclude:
                continue
            meta = fields[info.name]
            flag = meta.get("flag") or "--" + info.name.replace("_", "-")
            kw: dict[str, Any] = {"default": meta.get("fresh") if fresh else None, "help": info.help}
            show = (shown or {}).get(info.name, meta.get("shown"))
            if show is not None:
                kw["show_default"] = show
            f.__click_params__ = [*getattr(f, "__click_params__", []), _choice_option(info, flag, meta, kw)]
        return f
    return deco


def _choice_option(info, flag: str, meta, kw: dict) -> click.Option:
    tp = info.type
    args = [a for a in typing.get_args(tp) if a is not type(None)]
    if typing.get_origin(tp) in (typing.Union, types.UnionType) and len(args) == 1:
        tp = args[0]
    decls = [flag, info.name]
    if info.kind:
        kw.setdefault("show_default", True if kw["default"] is not None else None)
        return ComponentOption(decls, kind=info.kind, **kw)
    if typing.get_origin(tp) is tuple:
        return click.Option(decls, multiple=True, metavar=meta.get("metavar", "KEY=VALUE"), **kw)
    if tp is bool:
        return click.Option([f"{flag}/--no-{flag[2:]}", info.name], **kw)
    if typing.get_origin(tp) is typing.Literal:
        return click.Option(decls, type=click.Choice([str(a) for a in typing.get_args(tp)]), **kw)
    if tp is int:  # click's own range type: its messages ("0 is not in the range x>=1")
        r = info.range
        return click.Option(decls, type=click.IntRange(min=r.lo, max=r.hi, min_open=r.lo_open, max_open=r.hi_open)
                            if r is not None else click.INT, **kw)
    return click.Option(decls, type=click.Path() if meta.get("path") else click.STRING, metavar=meta.get("metavar"),
                        **kw)
