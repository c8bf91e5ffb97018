"""Where vl writes, and what a refused stage leaves (issue 18, items 3, 4 and 6, and the recipe-file
checks of items 10/11): every path a logger writes lies inside the run folder OUT or is refused
before any work; a recipe's stage writes OUT/NAME (NAME a plain folder name) unless its `out` is
given, which is relative to the recipe file; a stage that did no work leaves nothing (its record
included) and keeps its usage-error exit status, so the corrected command runs; a broken recipe
file is a usage error naming the file, the key and the fix.  Every refusal: non-zero exit (2 for
usage), no traceback, and no file that existed before is changed."""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from vlcore.artifacts.loggers import LogRun
from vlcore.artifacts.outdir import describe
from vlcore.core.errors import ConfigError
from vlcore.core.registry import get_host
from vlcore.plugins.loggers import LOGGERS, JsonlLogger, TensorBoardLogger, WandbLogger, jsonl_file
from vlcore.testing.cli import invoke_vl as vl
from vlcore.testing.cli import refused_cleanly
from vlcore.testing.runs import TINY_DATA_ARGS as DATA
from vlcore.testing.runs import TINY_MODEL_ARGS as MODEL
from vlcore.testing.runs import tiny_recipe

DISTILL = [*DATA, *MODEL, "--pairs", "4", "--iterations", "1", "--syn-steps", "2", "--expert-epochs", "1",
           "--max-start-epoch", "1", "--no-eval", "--num-experts", "1", "--train-epochs", "2"]

COMMON = tiny_recipe({})
CORESET = tiny_recipe({"cs": {"run": "coreset", "method": "random", "pairs": 4}})


def snapshot(root: Path) -> dict[str, str]:
    """Every file under ``root`` (links not followed) -> its checksum; folders -> "dir"."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for d in dirnames:
            out[os.path.relpath(os.path.join(dirpath, d), root)] = "dir"
        for f in filenames:
            p = Path(dirpath) / f
            out[os.path.relpath(p, root)] = "link" if p.is_symlink() else hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def refused(res, code: int = 2, *fragments: str) -> str:
    return refused_cleanly(res, code, fragments)


# ============================================================================== 3. logger paths
BAD_PATHS = {
    "absolute": ("USER", "an absolute path"),
    "up": ("../x.jsonl", "'..'"),
    "up-nested": ("logs/../../x", "'..'"),
    "home": ("~/x.jsonl", "~ is not expanded"),
    "hidden": (".vl-stage.json", "hidden part"),
    "artifact-file": ("meta.json", "another part of the run's artifact"),
    "artifact-folder": ("best/log", "another part of the run's artifact"),
    "empty": ("", "names no file or folder"),
    "out-itself": (".", "names no file or folder"),
}


@pytest.mark.parametrize("option", ["jsonl.file", "tensorboard.dir"])
@pytest.mark.parametrize("case", sorted(BAD_PATHS))
def test_a_logger_path_outside_out_is_refused_before_any_work(tmp_path, monkeypatch, option, case):
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "user" / "file.txt"
    user.parent.mkdir()
    user.write_bytes(b"the user's own file\n")
    value, why = BAD_PATHS[case]
    value = value.replace("USER", str(user))
    before = snapshot(tmp_path)
    log = ["--log", "tensorboard"] if option.startswith("tensorboard") else []
    res = vl("distill", *DISTILL, *log, "--log-option", f"{option}={value}", "--out", tmp_path / "run", ok=False)
    refused(res, 2, f"--log-option {option}={value}", "a logger writes only inside the run folder OUT", why,
            "Give a path relative to the run folder")
    assert "distilling" not in res.output  # refused when the options are read: before any data work
    assert snapshot(tmp_path) == before  # the user's file is byte-identical, and no OUT was made


@pytest.mark.parametrize("cls", LOGGERS, ids=lambda c: c.name)
def test_every_bundled_logger_checks_each_of_its_path_options(cls):
    """The rule is one function (:func:`vlcore.plugins.loggers.run_path`) in each logger's Config:
    every string option naming a file or folder is refused outside OUT when the Config is built."""
    paths = [f.name for f in cls.Config.__dataclass_fields__.values() if f.name in ("file", "dir", "folder", "path")]
    for name in paths:
        for bad in ("/abs/x", "../x", "a/../../x"):
            with pytest.raises(ConfigError, match=f"{cls.name}.{name}="):
                get_host().create("logger", cls.name, {name: bad})
    if cls is WandbLogger:
        assert not paths  # it writes OUT/wandb/ and OUT/.wandb-run-id only, checked when it starts


def test_a_logger_path_leading_out_of_out_through_a_link_is_refused(tmp_path):
    outside = tmp_path / "outside"
    outside.mkdir()
    victim = outside / "log.jsonl"
    victim.write_bytes(b"keep me\n")
    out = tmp_path / "run"
    out.mkdir()
    (out / "logs").symlink_to(outside, target_is_directory=True)
    (out / "log.jsonl").symlink_to(victim)
    (out / ".wandb-run-id").symlink_to(outside / "id")
    before = snapshot(tmp_path)
    for cfg in (JsonlLogger.Config(file="logs/log.jsonl"), JsonlLogger.Config()):
        for resume in (False, True):
            with pytest.raises(ConfigError, match="outside the run folder"):
                JsonlLogger(cfg).start(LogRun(out, "t", resume=resume))
    try:
        tb = TensorBoardLogger(TensorBoardLogger.Config(dir="logs"))
    except Exception:  # TensorBoard not installed: its constructor says so
        tb = None
    if tb is not None:
        with pytest.raises(ConfigError, match="outside the run folder"):
            tb.start(LogRun(out, "t"))
    try:
        wb = WandbLogger(WandbLogger.Config(mode="offline"))
    except Exception:  # wandb not installed
        wb = None
    if wb is not None:
        with pytest.raises(ConfigError, match="outside the run folder"):
            wb.start(LogRun(out, "t"))
    assert snapshot(tmp_path) == before and victim.read_bytes() == b"keep me\n"


@pytest.fixture(scope="module")
def nested_log(tmp_path_factory):
    root = tmp_path_factory.mktemp("nested")
    out = root / "run"
    res = vl("distill", *DISTILL, "--log-option", "jsonl.file=logs/run.jsonl", "--out", out)
    return root, out, res


def test_a_log_file_inside_out_is_written_there(nested_log):
    root, out, _ = nested_log
    records = [json.loads(line) for line in (out / "logs" / "run.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[-1]["event"] == "finish"
    assert not (out / "log.jsonl").exists() and sorted(p.name for p in root.iterdir()) == ["run"]
    assert describe(out).kind == "distilled" and not describe(out).foreign  # vl's own file: --resume/--overwrite
    loggers = get_host().create("logger", "jsonl", {"file": "logs/run.jsonl"})
    assert jsonl_file([loggers], out) == out / "logs" / "run.jsonl"
    assert jsonl_file([], out) == out / "log.jsonl"


def test_the_summary_names_the_real_log_file(nested_log):
    _, out, res = nested_log
    assert f"log: {out / 'logs' / 'run.jsonl'}" in res.output


# ============================================================================== 4. stage paths
@pytest.mark.parametrize("name", ["../escaped", "a/b", "..", ".", ".hidden", "", "a\\\\b", "results.json"])
def test_a_stage_name_that_is_not_a_plain_folder_name_is_refused_on_load(tmp_path, name):
    recipe = tmp_path / "recipes" / "r.toml"
    recipe.parent.mkdir()
    recipe.write_text(CORESET.replace("[stages.cs]", f'[stages."{name}"]'))
    before = snapshot(tmp_path)
    for extra in ([], ["--dry-run"]):
        res = vl("run", recipe, "--out", tmp_path / "exp", *extra, ok=False)
        refused(res, 2, str(recipe), "is not a plain folder name", "rename the stage")
    assert snapshot(tmp_path) == before  # nothing beside OUT, no OUT


def test_a_stage_out_is_relative_to_the_recipe_file_not_the_current_folder(tmp_path, monkeypatch):
    """a/b/r.toml with out = "../victim" writes a/victim, wherever `vl run` is started; a stage
    without `out` writes OUT/NAME; --set NAME.out=PATH (a command-line path) is relative to the
    current folder; an `out` inherited through `extends` is relative to the file that gives it."""
    recipe = tmp_path / "a" / "b" / "r.toml"
    recipe.parent.mkdir(parents=True)
    recipe.write_text(CORESET + 'out = "../victim"\n\n[stages.plain]\nrun = "coreset"\nmethod = "random"\n'
                                'pairs = 4\n')
    cwd = tmp_path / "c" / "d"
    cwd.mkdir(parents=True)
    monkeypatch.chdir(cwd)
    dry = vl("run", recipe, "--out", "exp", "--dry-run").output
    assert f"--out {tmp_path / 'a' / 'victim'}\n" in dry and "--out exp/plain\n" in dry
    assert "--out here/cs\n" in vl("run", recipe, "--out", "exp", "--dry-run", "--set", "cs.out=here/cs").output
    child = tmp_path / "x" / "child.toml"
    child.parent.mkdir()
    child.write_text('[recipe]\nextends = "../a/b/r.toml"\n\n[stages.cs]\npairs = 3\n')
    assert f"--out {tmp_path / 'a' / 'victim'}\n" in vl("run", child, "--out", "exp", "--dry-run").output
    vl("run", recipe, "--out", "exp")
    assert (tmp_path / "a" / "victim" / "pairs.safetensors").is_file()
    assert (cwd / "exp" / "plain" / "pairs.safetensors").is_file()
    assert not (tmp_path / "c" / "victim").exists() and not (cwd / "exp" / "cs").exists()
    res = vl("run", recipe, "--out", "exp")  # the same command reuses both
    assert res.output.count("done earlier, reused") == 2


@pytest.mark.parametrize("value,message", [("5", "'out' is a number"), ('""', "'out' is a string ('')"),
                                           ("[1]", "'out' is a list")])
def test_a_stage_out_that_is_not_a_path_is_refused(tmp_path, value, message):
    recipe = tmp_path / "r.toml"
    recipe.write_text(CORESET + f"out = {value}\n")
    before = snapshot(tmp_path)
    refused(vl("run", recipe, "--out", tmp_path / "exp", ok=False), 2, str(recipe), message, "non-empty string")
    recipe.write_text(CORESET)
    refused(vl("run", recipe, "--out", tmp_path / "exp", "--set", f"cs.out={value}", ok=False), 2,
            f"--set 'cs.out={value}'", message)
    recipe.write_text(CORESET + f"out = {value}\n")
    assert snapshot(tmp_path) == before


# ============================================================================== 6. a refused stage leaves nothing
def test_a_bad_set_value_is_a_usage_error_before_any_stage_and_the_fix_runs(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(CORESET)
    out = tmp_path / "exp"
    before = snapshot(tmp_path)
    for bad in ("cs.pairs=abc", "common.image-size=big", "common.image-size=0", "cs.seed=1.5"):
        res = vl("run", recipe, "--out", out, "--set", bad, ok=False)
        refused(res, 2, "stage 'cs'", "Invalid value for", "no stage has run")
        assert f"--set {bad}" in res.output
        assert "[1/1]" not in res.output and snapshot(tmp_path) == before  # no OUT, no stage record
    # a value the command itself refuses when it runs (not when its flags are parsed): exit 2 all the same
    res = vl("run", recipe, "--out", out, "--set", "cs.pairs=0", ok=False)
    refused(res, 2, "stage 'cs'", "--pairs must be at least 1")
    assert not (out / "cs").exists() and describe(out).empty
    vl("run", recipe, "--out", out, "--set", "cs.pairs=4")
    assert json.loads((out / "cs" / ".vl-stage.json").read_text())["done"]


def test_a_stage_that_fails_before_writing_leaves_nothing_and_keeps_its_exit_status(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(CORESET + '\n[stages.big]\nrun = "coreset"\nmethod = "random"\npairs = 4\n')
    out = tmp_path / "exp"
    # the second stage's command refuses its budget (a usage error) when it runs: exit 2, as `vl coreset`
    res = vl("run", recipe, "--out", out, "--set", "big.pairs=1000", ok=False)
    refused(res, 2, "stage 'big'", "exceeds")
    assert not (out / "big").exists() and json.loads((out / "cs" / ".vl-stage.json").read_text())["done"]
    kept = snapshot(out / "cs")
    res = vl("run", recipe, "--out", out, "--set", "big.pairs=1000", ok=False)  # the same again: the same error
    refused(res, 2, "exceeds")
    assert "other settings" not in res.output and not (out / "big").exists()
    # the corrected command runs the stage (the finished one is reused, byte for byte)
    res = vl("run", recipe, "--out", out)
    assert "[1/2] cs: done earlier, reused" in res.output and (out / "big" / "pairs.safetensors").is_file()
    assert snapshot(out / "cs") == kept
    # a failure that is not a usage error keeps its exit status 1, and leaves nothing either
    recipe.write_text(CORESET + '\n[stages.ev]\nrun = "eval"\npairset = "nowhere"\n')
    before = snapshot(out)
    res = vl("run", recipe, "--out", out, ok=False)
    refused(res, 1, "stage 'ev'", "does not exist")
    assert not (out / "ev").exists()
    after = {k: v for k, v in snapshot(out).items() if not k.endswith(".vl-files.jsonl")}
    assert after == {k: v for k, v in before.items() if not k.endswith(".vl-files.jsonl")}


def test_a_failed_stage_with_its_own_out_removes_only_the_folders_it_made(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(CORESET + 'out = "shared/deep/cs"\n')
    (tmp_path / "shared").mkdir()
    (tmp_path / "shared" / "notes.txt").write_text("mine")
    before = snapshot(tmp_path)
    res = vl("run", recipe, "--out", tmp_path / "exp", "--set", "cs.pairs=1000", ok=False)
    refused(res, 2, "exceeds")
    assert not (tmp_path / "shared" / "deep").exists() and (tmp_path / "shared" / "notes.txt").read_text() == "mine"
    assert {k: v for k, v in snapshot(tmp_path).items() if not k.startswith("exp")} == before
    assert describe(tmp_path / "exp").empty


# ============================================================================== recipe files (items 10/11)
STAGE = '\n[stages.a]\nrun = "experts"\n'


@pytest.mark.parametrize("text,fragments", [
    ('[recipe]\nextends = 5\n' + STAGE, ["[recipe] extends is a number (5)", "the path of one recipe file"]),
    ('[recipe]\nextends = ["b.toml"]\n' + STAGE, ["[recipe] extends is a list", "let each file extend the next"]),
    ('[recipe]\nextends = ""\n' + STAGE, ["[recipe] extends is a string ('')"]),
    ('recipe = 5\n' + STAGE, ["'recipe' is a number (5), but it must be a table", "write [recipe]"]),
    ('common = "x"\n' + STAGE, ["'common' is a string ('x'), but it must be a table"]),
    ('stages = 5\n', ["'stages' is a number (5), but it must be a table", "[stages.NAME]"]),
    ('[stages]\na = 5\n', ["stages.a must be a table"]),
    ('[recipe]\ndescription = 5\n' + STAGE, ["[recipe] description is a number (5); it must be a string"]),
    ('[recipe]\nextnds = "b.toml"\n' + STAGE, ["unknown key 'extnds' in [recipe]", "Did you mean 'extends'?"]),
    ('[common]\nbogus = 3\n' + STAGE, ["[common]: 'bogus' is a setting of none of this recipe's stage commands"]),
    ('[common]\nnum-expert = 3\n' + STAGE, ["'num-expert' is a setting of none", "Did you mean 'num-experts'?"]),
    ('[common]\nseed = 1979-05-27\n' + STAGE, ["[common]: 'seed' is a date", "a string, a number, a boolean"]),
    ('[common]\ndataset = {name = "x"}\n' + STAGE, ["'dataset' is a table"]),
    ('[stages.a]\nrun = 5\n', ["run is a number (5)", 'run = "experts"']),
    ('[stages.a]\nrun = "experts"\n[stages.a.sub]\nx = 1\n', ["[stages.a]: 'sub' is a table"]),
    ('[stages.a]\nrun = "experts"\nnum-experts = [1, {x = 2}]\n', ["'num-experts' is a list"]),
    ('[stages.a]\nrun = "experts"\nnum-experts = "many"\n', ["Invalid value for '--num-experts'",
                                                             "[stages.a] ('num-experts')"]),
    ('[stages.a]\nrun = "experts"\nnum-experts = 0\n', ["Invalid value for '--num-experts'"]),
])
def test_a_broken_recipe_file_is_a_usage_error_naming_the_file_and_key(tmp_path, text, fragments):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    before = snapshot(tmp_path)
    for extra in ([], ["--dry-run"]):
        res = vl("run", recipe, "--out", tmp_path / "o", *extra, ok=False)
        refused(res, 2, str(recipe), *fragments)
    assert snapshot(tmp_path) == before


def test_a_broken_recipe_it_extends_is_named(tmp_path):
    (tmp_path / "base.toml").write_text("[recipe]\ndescription = [1]\n")
    recipe = tmp_path / "r.toml"
    recipe.write_text('[recipe]\nextends = "base.toml"\n' + STAGE)
    refused(vl("run", recipe, "--out", tmp_path / "o", ok=False), 2, str(tmp_path / "base.toml"),
            "description is a list")
    recipe.write_text('[recipe]\nextends = "missing.toml"\n' + STAGE)
    refused(vl("run", recipe, "--out", tmp_path / "o", ok=False), 2, "missing.toml", "does not exist")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["base.toml", "r.toml"]


@pytest.mark.parametrize("assignment,fragments", [
    ("common.bogus=3", ["--set common.bogus=3: 'bogus' is a setting of none of this recipe's stage commands"]),
    ("common.limt=3", ["--set common.limt=3", "Did you mean 'limit'?"]),
    ("common.num_expert=3", ["Did you mean 'num-experts'?"]),
    ("a.num-expert=1", ["--set a.num-expert=1: stage 'a' (vl experts) has no setting 'num-expert'",
                        "Did you mean"]),
    ("b.pairs=1", ["has no stage 'b'"]),
    ("a.num-experts={x = 1}", ["--set 'a.num-experts={x = 1}': 'num-experts' is a table"]),
    ("a.run=distill", ["a stage's command (run) is the recipe's"]),
    ("a", ["is not STAGE.KEY=VALUE"]),
    ("common.out=elsewhere", ["--set common.out=elsewhere: 'out' cannot be common", "vl run --out"]),
])
def test_a_bad_set_is_a_usage_error_with_a_suggestion(tmp_path, assignment, fragments):
    recipe = tmp_path / "r.toml"
    recipe.write_text(COMMON + STAGE)
    before = snapshot(tmp_path)
    refused(vl("run", recipe, "--out", tmp_path / "o", "--set", assignment, ok=False), 2, *fragments)
    assert snapshot(tmp_path) == before


def test_common_keys_go_only_to_the_stages_whose_command_has_them(tmp_path):
    """[common] `num-experts` is a flag of experts only: the coreset stage does not get it, and
    no error is raised; a key none of the stages has is the error."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(CORESET.replace("[common]", "[common]\nnum-experts = 3") + STAGE)
    lines = vl("run", recipe, "--out", "X", "--dry-run").output.splitlines()
    assert "--num-experts 3" in lines[1] and "--num-experts" not in lines[0]
    recipe.write_text(CORESET.replace("[common]", "[common]\nnum-experts = 3"))
    refused(vl("run", recipe, "--out", "X", "--dry-run", ok=False), 2, "'num-experts' is a setting of none",
            "(vl coreset)")
