"""The architecture as a user meets it: a third-party distiller (a few lines overriding a recipe
step) run from `vl distill` with its own flags, `--config` files that repeat a run, and recipe
files run by `vl run` (stages, resume, reuse), including the shipped recipes resolving to the
settings benchmarks/RESULTS.md documents."""
from __future__ import annotations

import json
import re
import shlex
from dataclasses import dataclass
from pathlib import Path

import click
import pytest
import torch

from vlcore import hookimpl
from vlcore.artifacts.checkpoint import read_state
from vlcore.data.pairset import PairSet
from vlcore.distill.matching import TrajectoryMatching
from vlcore.model.losses import contrastive_loss
from vlcore.testing.cli import invoke_vl as vl
from vlcore.testing.runs import (DISTILL_STAGE, EXPERTS_STAGE, FAST_DISTILL_ARGS, RANDOM_STAGE,
                                TINY_DATA_ARGS as TINY, TINY_MODEL_ARGS as MODEL, cli_buffer, tiny_recipe)

pytest_plugins = ["vlcore.testing.fixtures"]

ROOT = Path(__file__).resolve().parents[1]
FAST = [*FAST_DISTILL_ARGS, "--iterations", "3"]


@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    return cli_buffer(tmp_path_factory.mktemp("buf") / "buffer")


# ------------------------------------------------------------------------------ a third-party distiller
class Tempered(TrajectoryMatching):
    """Tempered: trajectory matching whose student learns its contrastive temperature (a test plugin)."""

    name = "tempered-test"

    @dataclass(frozen=True)
    class Config(TrajectoryMatching.Config):
        #: initial temperature of the student's contrastive loss
        temperature: float = 0.1
        #: learning rate of the log temperature
        lr_temperature: float = 0.05

    def init_synthetic(self, ctx, state):
        super().init_synthetic(ctx, state)
        c = self.config
        state.add_learned("log_temperature", torch.tensor(c.temperature).log(), "temperature", c.lr_temperature,
                          c.momentum)

    def inner_loss(self, img_emb, txt_emb, idx, inputs):
        return contrastive_loss(img_emb, txt_emb, temperature=inputs["log_temperature"].exp())


class TemperedPlugin:
    @staticmethod
    @hookimpl
    def register_distillers(register):
        register(Tempered)


def test_a_third_party_distiller_runs_from_the_cli(register_plugin, buffer, tmp_path):
    register_plugin(TemperedPlugin, "tempered")
    help_text = " ".join(vl("distill", "--distiller", "tempered-test", "--help").output.split())
    assert "--temperature FLOAT" in help_text and "Initial temperature of the student's contrastive loss" in help_text
    assert "--lr-temperature" in help_text
    out = tmp_path / "ps"
    vl("distill", "--distiller", "tempered-test", "--buffer", buffer, *FAST, "--temperature", 0.2,
       "--checkpoint-every", 1, "--out", out)
    ps = PairSet.load(out)
    assert ps.meta["method"] == "tempered-test" and ps.meta["config"]["temperature"] == 0.2
    t = ps.extra["log_temperature"]  # the method's own learned tensor is saved in the pair set...
    assert t.shape == () and float(t.exp()) != pytest.approx(0.2)  # ...and it was learned
    assert ps.storage()["floats"] == ps.images.numel() + ps.text.numel() + 1 + 2
    meta, tensors = read_state(out / "checkpoint.safetensors")  # ...and checkpointed, with its optimiser
    assert meta["iteration"] == 3 and "learned.log_temperature" in tensors
    assert meta["optimizers"]["temperature"]["param_groups"][0]["lr"] == 0.05
    # resuming extends the run from its checkpoint, with the method's state
    vl("distill", "--distiller", "tempered-test", "--buffer", buffer, *FAST, "--temperature", 0.2,
       "--checkpoint-every", 1, "--out", out, "--iterations", 5, "--resume")
    again = PairSet.load(out)
    assert again.meta["iterations_done"] == 5 and not torch.equal(again.extra["log_temperature"], t)
    # a flag the method does not have is refused by name, with its options listed
    res = vl("distill", "--distiller", "bitraj", "--buffer", buffer, "--temperature", 0.2, "--out", tmp_path / "x",
             ok=False)
    assert res.exit_code == 2 and "Unknown option 'temperature' for distiller 'bitraj'" in res.output


# ------------------------------------------------------------------------------ --config
def test_config_toml_repeats_a_run_and_flags_override_it(buffer, tmp_path):
    vl("distill", "--buffer", buffer, *FAST, "--out", tmp_path / "a")
    cfg = tmp_path / "a" / "config.toml"
    text = cfg.read_text()
    assert "syn-steps = 2" in text and 'distiller = "bitraj"' in text and "resume" not in text
    vl("distill", "--config", cfg, "--out", tmp_path / "b")
    a, b = PairSet.load(tmp_path / "a"), PairSet.load(tmp_path / "b")
    assert torch.equal(a.images, b.images) and torch.equal(a.text, b.text)
    assert b.meta["config"] == a.meta["config"]
    vl("distill", "--config", cfg, "--pairs", 5, "--out", tmp_path / "c")  # the command line wins
    assert len(PairSet.load(tmp_path / "c")) == 5


def test_config_file_errors_name_the_key(buffer, tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('syn-stepz = 3\n')
    res = vl("distill", "--buffer", buffer, "--config", bad, "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 2 and "Unknown key 'syn-stepz'" in res.output and "Did you mean 'syn_steps'" in res.output
    bad.write_text('pairs = \n')
    res = vl("distill", "--buffer", buffer, "--config", bad, "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 2 and "not valid TOML" in res.output and str(bad) in res.output
    assert not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ vl run
EVAL_STAGE = {"run": "eval", "seeds": 1, "epochs": 2}
RECIPE = tiny_recipe({"buffer": EXPERTS_STAGE, "distilled": DISTILL_STAGE, "random": RANDOM_STAGE,
                      "eval-distilled": {**EVAL_STAGE, "pairset": "@distilled"},
                      "eval-random": {**EVAL_STAGE, "pairset": "@random"}}, "tiny: bitraj vs random")


def test_vl_run_runs_resumes_and_reuses_stages(tmp_path):
    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    out = tmp_path / "exp"
    first = vl("run", recipe, "--out", out)
    assert "[2/5] distilled: vl distill" in first.output and "eval-random" in first.output
    for stage in ("buffer", "distilled", "random", "eval-distilled", "eval-random"):
        assert json.loads((out / stage / ".vl-stage.json").read_text())["done"]
    assert (out / "results.md").exists() and (out / "recall.png").exists()
    # the same command again reuses every finished stage
    again = vl("run", recipe, "--out", out, "--json")
    assert again.output.count("done earlier, reused") == 5
    metrics = json.loads(again.stdout.strip().splitlines()[-1])
    assert set(metrics) == {"eval-distilled", "eval-random"}
    assert metrics["eval-random"] == json.loads((out / "eval-random" / "metrics.json").read_text())
    # a stage whose settings changed is refused, naming the folder
    res = vl("run", recipe, "--out", out, "--set", "distilled.pairs=5", ok=False)
    assert res.exit_code != 0 and str(out / "distilled") in res.output and "other settings" in res.output
    # an interrupted distillation stage resumes from its checkpoint
    (out / "distilled" / ".vl-stage.json").write_text(json.dumps(
        {**json.loads((out / "distilled" / ".vl-stage.json").read_text()), "done": False}))
    resumed = vl("run", recipe, "--out", out)
    assert "distilled: vl distill" in resumed.output and resumed.output.count("reused") == 4


def test_vl_run_single_eval_json_has_the_keys_of_vl_eval(tmp_path):
    recipe = tmp_path / "one.toml"
    recipe.write_text(tiny_recipe({"buffer": EXPERTS_STAGE, "random": RANDOM_STAGE,
                                   "eval": {**EVAL_STAGE, "pairset": "@random"}}, "tiny: bitraj vs random"))
    res = vl("run", recipe, "--out", tmp_path / "o", "--split", "dev", "--json")
    metrics = json.loads(res.stdout.strip().splitlines()[-1])
    direct = json.loads(vl("eval", tmp_path / "o" / "random", "--eval-seeds", 1, "--eval-epochs", 2, "--json",
                           "--out", tmp_path / "direct").stdout.strip().splitlines()[-1])
    assert set(metrics) == set(direct) and metrics == direct


@pytest.mark.parametrize("text,message", [
    ("[stages.a]\nrun = 'distil'\n", "Did you mean 'distill'"),
    ("[stages.a]\nnum-experts = 1\n", "names no command"),
    ("[stages.a]\nrun = 'experts'\nnum-expert = 1\n", "has no setting 'num-expert'"),
    ("[stages.a]\nrun = 'eval'\npairset = '@b'\n", "not an earlier stage"),
    ("[stage.a]\nrun = 'experts'\n", "Did you mean 'stages'"),
    ("[stages.a]\nrun = 'distill'\ndistiller = 'bitrj'\n", "Did you mean 'bitraj'"),
])
def test_recipe_errors(tmp_path, text, message):
    recipe = tmp_path / "r.toml"
    recipe.write_text(text)
    res = vl("run", recipe, "--out", tmp_path / "o", ok=False)
    assert res.exit_code != 0 and message in res.output and "Traceback" not in res.output
    assert not (tmp_path / "o").exists()


# ------------------------------------------------------------------------------ shipped recipes
def documented_runs() -> dict[str, list[str]]:
    """row -> argv (after `vl run`) of the commands benchmarks/RESULTS.md documents (its Flickr8k
    command table: every row is a shipped recipe run by `vl run`)."""
    text = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    return {m.group(1): shlex.split(m.group(2))[2:]
            for m in re.finditer(r"^\| ([\w-]+) \| `(vl run [^`]+)` \|", text, re.M)}


DOCUMENTED = documented_runs()


def test_results_document_the_flickr8k_rows_as_recipe_runs():
    assert {"full-0", "bitraj-100", "lors-100", "repblend-100", "random-1000"} <= set(DOCUMENTED)


@pytest.mark.parametrize("row", sorted(DOCUMENTED))
def test_flickr8k_rows_resolve_to_the_documented_protocol(row):
    """Each documented row's recipe, with its --set overrides, resolves to the protocol RESULTS.md
    states: frozen EfficientNet-Lite0 at 112 px + MiniLM, evaluated on dev by 3 fresh models."""
    import vlcore.cli.main  # noqa: F401  (registers the commands)
    from vlcore.artifacts.experiment import load, override
    from vlcore.cli.run import stage_argv

    argv = DOCUMENTED[row]
    exp = load(str(ROOT / argv[0]))
    exp.common["data"] = "../shared/data/flickr8k-dev"
    for i, a in enumerate(argv):
        if a == "--set":
            override(exp, argv[i + 1])
    for stage in exp.stages:
        ctx, _ = parsed([stage.command, *stage_argv(exp, stage, Path("OUT"), None)])
        p = ctx.params
        if "encoder" in p and p.get("buffer") is None and p.get("pairset") is None:
            assert (p["encoder"], p["image_size"], p["trainable"], p["text_encoder"]) == \
                ("effnet-lite0", 112, "frozen", "minilm"), (row, stage.name)
        if stage.command == "eval":
            assert (p["split"], p["seeds"]) == ("dev", 3), (row, stage.name)


def parsed(argv: list[str]) -> tuple[click.Context, dict]:
    from vlcore.cli.main import cli

    cmd = cli.commands[argv[0]]
    ctx = cmd.make_context(argv[0], list(argv[1:]))
    explicit = {k for k in ctx.params if ctx.get_parameter_source(k) == click.core.ParameterSource.COMMANDLINE}
    return ctx, {k: ctx.params[k] for k in explicit}


@pytest.mark.parametrize("path", sorted(p.name for p in (ROOT / "recipes").glob("*.toml")
                                        if not p.name.endswith(("-base.toml", "-experts.toml"))))
def test_every_shipped_recipe_parses_and_resolves(path):
    from vlcore.artifacts.experiment import load
    from vlcore.cli.run import stage_argv

    exp = load(str(ROOT / "recipes" / path))
    assert exp.description
    for stage in exp.stages:
        ctx, _ = parsed([stage.command, *stage_argv(exp, stage, Path("OUT"), None)])
        assert ctx.params["out"] == str(Path("OUT") / stage.name)
    if path.startswith("paper-"):
        settings = {**exp.common, **exp.stage("distilled").settings}
        assert settings["image-size"] == 224 and settings["text-encoder"] == "bert"
        assert (settings["syn-steps"], settings["expert-epochs"], settings["max-start-epoch"]) == (8, 1, 2)
        assert settings["lr-images"] == settings["lr-text"] == 1000.0 and settings["lr-lr"] == 0.01
        assert exp.stage("buffer").settings["num-experts"] == 20 and exp.stage("buffer").settings["train-epochs"] == 10


def test_the_demo_is_the_embedded_recipe():
    from vlcore.artifacts.experiment import load

    exp = load("demo")
    assert [s.command for s in exp.stages] == ["experts", "distill", "distill", "coreset", "eval", "eval", "eval"]
    assert vl("run", "demo", "--dry-run", "--out", "X").output.count("\nvl ") == 6


# ------------------------------------------------------------------------------ the full-data model
def test_vl_train_chooses_its_epochs_on_held_out_training_images(tmp_path):
    out = tmp_path / "full"
    res = vl("train", *TINY, *MODEL, "--epochs", 4, "--batch-size", 16, "--out", out)
    meta = json.loads((out / "meta.json").read_text())
    chosen = meta["epoch_selection"]
    assert chosen["held_out_images"] == 2 and [c["epoch"] for c in chosen["curve"]] == [1, 2, 3, 4]
    best = max(chosen["curve"], key=lambda c: c["rsum"])["epoch"]
    assert chosen["epochs"] == best == meta["epochs_trained"] and "epochs chosen on 2 held-out" in res.output
    fixed = tmp_path / "fixed"
    vl("train", *TINY, *MODEL, "--epochs", 3, "--no-select-epochs", "--out", fixed)
    meta = json.loads((fixed / "meta.json").read_text())
    assert meta["epoch_selection"] is None and meta["epochs_trained"] == 3
