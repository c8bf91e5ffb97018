"""`vl --help`, each command's help and shell completion list the installed components, read from
the plugin registry when they are shown (so a plugin registered later shows up too)."""
from __future__ import annotations

import re

import click
import pytest
from click.testing import CliRunner

from vlcore import hookimpl
from vlcore.cli.main import cli
from vlcore.cli.params import ComponentOption
from vlcore.components import Selector
from vlcore.core.registry import KINDS, PluginHost, get_host
from vlcore.testing.cli import run_vl
from vlcore.testing.components import TinyImageEncoder
from vlcore.testing.host import use_host

pytest_plugins = ["vlcore.testing.fixtures"]

#: (command, option, kind): every option of a `vl` command that names a component
COMPONENT_OPTIONS = [
    ("train", "--dataset", "dataset"), ("train", "--encoder", "image_encoder"),
    ("train", "--text-encoder", "text_encoder"),
    ("eval", "--dataset", "dataset"), ("eval", "--encoder", "image_encoder"),
    ("eval", "--text-encoder", "text_encoder"), ("eval", "--evaluator", "evaluator"),
    ("experts", "--dataset", "dataset"), ("experts", "--encoder", "image_encoder"),
    ("experts", "--text-encoder", "text_encoder"),
    ("distill", "--distiller", "distiller"), ("distill", "--dataset", "dataset"),
    ("distill", "--encoder", "image_encoder"), ("distill", "--text-encoder", "text_encoder"),
    ("distill", "--unroll", "unroll_backend"), ("distill", "--log", "logger"),
    ("coreset", "--method", "selector"), ("coreset", "--dataset", "dataset"),
    ("coreset", "--encoder", "image_encoder"), ("coreset", "--text-encoder", "text_encoder"),
]


def invoke(*args, **kw):
    result = CliRunner().invoke(cli, list(args), prog_name="vl", catch_exceptions=False, **kw)
    return result


def complete(words: str, cword: int) -> list[str]:
    """What bash completion offers for ``words`` (the word at index ``cword`` being completed)."""
    result = invoke(env={"_VL_COMPLETE": "bash_complete", "COMP_WORDS": words, "COMP_CWORD": str(cword)})
    return [line.split(",", 1)[1] for line in result.output.splitlines() if line.startswith("plain,")]


def option(command: str, flag: str) -> click.Option:
    cmd = cli.commands[command]
    for p in cmd.params:
        if isinstance(p, click.Option) and flag in p.opts:
            return p
    raise AssertionError(f"vl {command} has no option {flag}")


def listed(help_text: str) -> set[str]:
    m = re.search(r"Installed: (.*?)\.(?:\s|$)", " ".join(help_text.split()))
    assert m, f"no 'Installed: ...' in {help_text!r}"
    return {n.strip() for n in m.group(1).split(",")}


def epilog_rows(output: str) -> dict[str, set[str]]:
    section = output.split("Installed components:", 1)[1].split("\n\n", 1)[0]
    rows: dict[str, str] = {}
    current = None
    for line in section.splitlines():
        m = re.match(r"^  (\S.*?\S)\s{2,}(.*)$", line)
        if m:
            current = m.group(1)
            rows[current] = m.group(2)
        elif current and line.strip():
            rows[current] += " " + line.strip()
    return {k: {n.strip() for n in v.split(",")} for k, v in rows.items()}


# ------------------------------------------------------------------------------- help
def test_vl_help_lists_every_kind():
    host = get_host()
    rows = epilog_rows(invoke("--help").output)
    for kind in KINDS:
        assert rows[kind.replace("_", " ") + "s"] == set(host.names(kind)), kind


@pytest.mark.parametrize("command,flag,kind", COMPONENT_OPTIONS)
def test_command_help_lists_installed_components(command, flag, kind):
    opt = option(command, flag)
    assert isinstance(opt, ComponentOption) and opt.component_kind == kind
    names = set(get_host().names(kind))
    ctx = click.Context(cli.commands[command], info_name=command)
    assert listed(opt.get_help_record(ctx)[1]) == names
    out = invoke(command, "--help").output
    block = out.split(f"  {flag} ", 1)[1].split("\n  -", 1)[0]
    assert listed(block) == names
    for name in names:  # whole, never broken at a hyphen
        assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", block), (name, block)


def test_every_component_option_is_tested():
    found = {(name, p.opts[0]) for name, cmd in cli.commands.items() for p in cmd.params
             if isinstance(p, ComponentOption)}
    expected = {(c.values[0], c.values[1]) if hasattr(c, "values") else (c[0], c[1]) for c in COMPONENT_OPTIONS}
    assert found <= expected, f"component options without a help/completion test: {sorted(found - expected)}"


@pytest.mark.parametrize("width", [50, 60, 72, 80, 100])
def test_names_with_hyphens_are_never_split(width):
    out = invoke("--help", terminal_width=width).output + invoke("distill", "--help", terminal_width=width).output
    for name in get_host().names("image_encoder"):
        if "-" in name:
            assert name in out, (name, width)
    assert not re.search(r"\w-\n", out), "a line of the help ends inside a hyphenated word"


# ------------------------------------------------------------------------------- completion
@pytest.mark.parametrize("command,flag,kind", COMPONENT_OPTIONS)
def test_completion_offers_registry_names(command, flag, kind):
    words = f"vl {command} {flag} " if command != "eval" else f"vl eval PAIRSET {flag} "
    cword = len(words.split())
    assert complete(words, cword) == get_host().names(kind)


def test_completion_filters_by_prefix():
    assert complete("vl coreset --method her", 3) == ["herding"]
    assert complete("vl train --encoder nf_", 3) == ["nf_regnet", "nf_resnet50"]
    assert complete("vl distill --distiller zz", 3) == []


def test_completion_in_a_real_shell_call():
    """The documented way: the environment variables bash's completion function sets."""
    proc = run_vl(env={"_VL_COMPLETE": "bash_complete", "COMP_WORDS": "vl distill --encoder ", "COMP_CWORD": "3"})
    offered = [line.split(",", 1)[1] for line in proc.stdout.splitlines() if line.startswith("plain,")]
    assert offered == PluginHost().names("image_encoder")


# ------------------------------------------------------------------------------- plugins registered later
class LateSelector(Selector):
    """Late: a selector registered by a test."""

    name = "zz-late"


class LatePlugin:
    """A test plugin registered after the CLI was imported (a class works as a pluggy plugin)."""

    @staticmethod
    @hookimpl
    def register_selectors(register):
        register(LateSelector)

    @staticmethod
    @hookimpl
    def register_image_encoders(register):
        register(TinyImageEncoder)


def test_help_and_completion_follow_the_registry(register_plugin):
    register_plugin(LatePlugin, "late")
    assert "zz-late" in listed(invoke("coreset", "--help").output.split("  --method ", 1)[1].split("\n  -", 1)[0])
    assert "tiny-cnn" in epilog_rows(invoke("--help").output)["image encoders"]
    assert complete("vl coreset --method zz", 3) == ["zz-late"]
    assert "tiny-cnn" in complete("vl experts --encoder ", 3)


def test_help_says_why_components_cannot_be_listed():
    class One:
        @staticmethod
        @hookimpl
        def register_selectors(register):
            register(LateSelector)

    class Two(One):
        pass

    host = PluginHost(load_entrypoints=False)
    host.register(One, "one")
    host.register(Two(), "two")
    with use_host(host):
        out = invoke("--help").output
        assert "cannot be listed: DuplicateComponentError" in " ".join(out.split())
        method = invoke("coreset", "--help").output.split("  --method ", 1)[1].split("\n  -", 1)[0]
        assert "Installed components cannot be listed" in " ".join(method.split())
        assert complete("vl coreset --method ", 3) == []
