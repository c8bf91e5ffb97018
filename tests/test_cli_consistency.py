"""A consistent CLI (issue 13): every option of every command (including the flags derived from
each registered component's Config) has help text and shows its default; one name per concept
across commands, with the old spellings kept as hidden aliases; files follow the user's umask."""
from __future__ import annotations

import json
import os
import stat

import click
import pytest

from vlcore.cli.command import VLCommand, aliases
from vlcore.cli.main import cli
from vlcore.core.registry import get_host
from vlcore.testing.cli import invoke_vl as vl

TINY = ["--dataset", "embedded", "--dataset-option", "num_train=24", "--dataset-option", "num_dev=12",
        "--encoder", "convnet", "--encoder-option", "width=8", "--image-size", "16"]




def walk():
    """(label, command, context) for every command, and for each component its component flag
    can name (their derived flags differ)."""
    yield "vl", cli, click.Context(cli, info_name="vl")
    for name, cmd in sorted(cli.commands.items()):
        ctx = click.Context(cmd, info_name=name, parent=click.Context(cli, info_name="vl"))
        yield f"vl {name}", cmd, ctx
        comp = getattr(cmd, "component", None)
        if isinstance(cmd, VLCommand) and comp is not None:
            for component in get_host().names(comp.kind):
                c = click.Context(cmd, info_name=name)
                c.meta["vl.component"] = component
                yield f"vl {name} {comp.flag} {component}", cmd, c


def test_every_option_has_help_and_shows_its_default():
    missing_help, missing_default = [], []
    for label, cmd, ctx in walk():
        for p in cmd.get_params(ctx):
            if not isinstance(p, click.Option) or p.hidden or (p.is_eager and not p.expose_value):
                continue  # --help and --version
            record = p.get_help_record(ctx)
            if not (p.help or "").strip():
                missing_help.append(f"{label} {p.opts[0]}")
            if "[default:" not in " ".join(record[1].split()):
                missing_default.append(f"{label} {p.opts[0]}")
    assert not missing_help, f"options without help: {missing_help}"
    assert not missing_default, f"options that show no default: {missing_default}"


#: concept -> the one flag every command uses for it
ONE_NAME = {"pairs": "--pairs", "evaluation split": "--eval-split", "evaluation seeds": "--eval-seeds",
            "evaluation epochs": "--eval-epochs", "expert epochs": "--train-epochs"}
RETIRED = {("coreset", "--budget"), ("coreset", "--epochs"), ("eval", "--split"), ("eval", "--seeds"),
           ("eval", "--epochs"), ("train", "--split"), ("experts", "--epochs"), ("run", "--split")}


@pytest.mark.parametrize("command,flag", sorted(RETIRED))
def test_old_spellings_are_hidden(command, flag):
    component = {"coreset": ["--method", "herding"]}.get(command, [])
    text = vl(command, *component, "--help").output
    assert f"  {flag} " not in text and f"{flag}," not in text, f"vl {command} --help still shows {flag}"


def test_one_name_per_concept_across_commands():
    def flags(command, *component):
        out = vl(command, *component, "--help").output
        return {w.rstrip(",") for w in out.split() if w.startswith("--")}

    assert "--pairs" in flags("distill") & flags("coreset", "--method", "random") & flags("demo")
    assert "--eval-split" in flags("distill") & flags("eval") & flags("train") & flags("run")
    assert {"--eval-seeds", "--eval-epochs"} <= flags("distill") & flags("eval")
    assert "--train-epochs" in flags("experts") & flags("distill")
    assert "--proxy-epochs" in flags("coreset", "--method", "herding")
    assert "--epochs" not in flags("coreset", "--method", "herding") | flags("eval") | flags("experts")


def test_old_spellings_still_work_and_say_the_new_one(tmp_path):
    res = vl("coreset", "--method", "herding", *TINY, "--budget", 4, "--epochs", 1, "--out", tmp_path / "c")
    assert "`vl coreset --budget` is now `--pairs`" in res.output and "--epochs` is now `--proxy-epochs`" in res.output
    meta = json.loads((tmp_path / "c" / "meta.json").read_text())
    assert meta["budget"] == 4 and meta["config"]["epochs"] == 1
    res = vl("eval", tmp_path / "c", "--split", "dev", "--seeds", 1, "--epochs", 1, "--json")
    assert "`vl eval --split` is now `--eval-split`" in res.output
    assert json.loads((tmp_path / "c" / "eval-dev" / "details.json").read_text())["seeds"] == [0]
    # a --config file (and a recipe) may use either spelling
    cfg = tmp_path / "old.toml"
    cfg.write_text('method = "random"\nbudget = 3\n')
    vl("coreset", "--config", cfg, *TINY, "--out", tmp_path / "d")
    assert json.loads((tmp_path / "d" / "meta.json").read_text())["budget"] == 3
    assert "pairs = 3" in (tmp_path / "d" / "config.toml").read_text()


def test_aliases_are_declared_on_their_options():
    cmd = cli.commands["coreset"]
    ctx = click.Context(cmd, info_name="coreset")
    ctx.meta["vl.component"] = "herding"
    by_name = {p.name: p for p in cmd.get_params(ctx)}
    assert aliases(by_name["pairs"]) == ("--budget",) and aliases(by_name["epochs"]) == ("--epochs",)
    assert by_name["epochs"].opts[0] == "--proxy-epochs"


@pytest.mark.parametrize("mask,mode", [(0o022, 0o644), (0o002, 0o664)])
def test_files_follow_the_umask(tmp_path, mask, mode):
    old = os.umask(mask)
    try:
        vl("coreset", "--method", "random", *TINY, "--pairs", 4, "--out", tmp_path / "c")
    finally:
        os.umask(old)
    for name in ("pairs.safetensors", "meta.json", "captions.json", "config.toml", "grid.png"):
        assert stat.S_IMODE((tmp_path / "c" / name).stat().st_mode) == mode, name


def test_the_table_says_what_its_columns_mean(tmp_path):
    vl("coreset", "--method", "random", *TINY, "--pairs", 4, "--out", tmp_path / "c")
    out = vl("eval", tmp_path / "c", "--eval-seeds", 2, "--eval-epochs", 1).stdout
    assert "TR@1" in out and "TR: image->text" in out and "rsum: the sum of the six" in out and "±: std" in out
