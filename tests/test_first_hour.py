"""A user's first hour (issue 21): a --data folder is always read (its dataset inferred from its
layout), a budget too large for the split fails as soon as the split is counted, tiny evaluation
splits say so, a missing pair set is a missing folder, --json means one JSON document on stdout, and
the help and output are consistent.  Item 2 (healthy-set warnings, default learning rates) is not
covered here."""
from __future__ import annotations

import json
import logging
import re

import click
import pytest

import vlcore.testing.plugin
from vlcore.cli.command import VLCommand
from vlcore.choices import detect_datasets
from vlcore.cli.main import cli
from vlcore.cli.texts import current_flags
from vlcore.core.registry import get_host
from vlcore.testing.cli import invoke_vl as vl
from vlcore.testing.runs import tiny_recipe

pytest_plugins = ["vlcore.testing.fixtures"]

#: the test components (tiny-cnn, hashed-bow): no weights to load, no caption model
TINY_MODEL = ["--encoder", "tiny-cnn", "--encoder-option", "width=4", "--image-size", "8",
              "--text-encoder", "hashed-bow"]
EMBEDDED = ["--dataset", "embedded", "--dataset-option", "num_train=24", "--dataset-option", "num_dev=12"]


@pytest.fixture(autouse=True)
def _setup(vl_cache_dir, register_plugin):
    register_plugin(vlcore.testing.plugin)


def photos(folder, n=12, captions=2, *, corrupt=False):
    """A folder of ``n`` images with captions.csv (``captions`` rows each); ``corrupt``: the image
    files are not images (any read of them fails)."""
    from PIL import Image

    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = ["image,caption"]
    for i in range(n):
        path = folder / "images" / f"p{i}.jpg"
        if corrupt:
            path.write_text("not an image")
        else:
            Image.new("RGB", (12, 10), (20 * i % 255, 90, 200)).save(path)
        rows += [f"p{i}.jpg,photo {i} caption {k}" for k in range(captions)]
    (folder / "captions.csv").write_text("\n".join(rows) + "\n")
    return folder


def meta(folder):
    return json.loads((folder / "meta.json").read_text())


# ============================================================================ 1. --data is read
@pytest.mark.parametrize("files,expected", [
    (["captions.csv"], "captions"), (["captions.jsonl"], "captions"), (["captions.tsv"], "captions"),
    (["Flickr8k.token.txt", "Flickr_8k.trainImages.txt"], "flickr8k"),
    (["dataset_flickr30k.json"], "flickr30k"), (["dataset_coco.json"], "coco"),
    (["dataset_dict.json"], "hf"), (["state.json"], "hf"), (["data/train-00000-of-00001.parquet"], "hf"),
])
def test_each_layout_is_recognised(tmp_path, files, expected):
    for f in files:
        (tmp_path / f).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / f).write_text("")
    assert [name for name, _ in detect_datasets(tmp_path)] == [expected]


def test_coreset_reads_the_data_folder_and_says_it_inferred_the_dataset(tmp_path):
    data = photos(tmp_path / "my-data")
    res = vl("coreset", "--method", "random", "--data", data, *TINY_MODEL, "--pairs", 4, "--out", tmp_path / "c")
    first = res.stdout.splitlines()[0]
    assert first.startswith("vl coreset: defaults used:")
    assert f"--dataset captions (inferred from the layout of {data}: captions.csv)" in first
    assert meta(tmp_path / "c")["dataset"]["name"] == "captions"
    assert meta(tmp_path / "c")["defaults"]["dataset"] == "captions"
    moved = data.rename(tmp_path / "moved")  # vl eval reads the folder given, its dataset inferred too
    res = vl("eval", tmp_path / "c", "--data", moved, "--eval-seeds", 1, "--eval-epochs", 1, "--json")
    assert f"vl eval: --dataset captions (inferred from the layout of {moved}: captions.csv)" in res.stderr
    details = json.loads((tmp_path / "c" / "eval-dev" / "details.json").read_text())
    assert details["dataset"] == "captions" and "tr_r1" in json.loads(res.stdout)


def test_distill_and_experts_read_the_data_folder(tmp_path):
    data = photos(tmp_path / "my-data")
    res = vl("distill", "--data", data, *TINY_MODEL, "--pairs", 2, "--iterations", 1, "--syn-steps", 1,
             "--max-start-epoch", 1, "--num-experts", 1, "--no-eval", "--out", tmp_path / "d")
    assert "--dataset captions (inferred from the layout of" in res.stdout.splitlines()[0]
    assert meta(tmp_path / "d")["dataset"]["name"] == "captions"
    res = vl("experts", "--data", data, *TINY_MODEL, "--num-experts", 1, "--train-epochs", 1, "--out", tmp_path / "b")
    assert f"vl experts: --dataset captions (inferred from the layout of {data}: captions.csv)" in res.stdout
    index = json.loads((tmp_path / "b" / "index.json").read_text())
    assert index["dataset"]["name"] == "captions"


@pytest.mark.parametrize("files,words", [
    ([], ["has the layout of no installed dataset", "captions: captions.csv", "flickr8k: Flickr8k.token.txt",
          "--dataset NAME"]),
    (["captions.csv", "state.json"], ["layout of several datasets", "captions (captions.csv)", "hf (state.json",
                                      "--dataset captions or --dataset hf"]),
])
def test_a_folder_of_no_layout_or_two_stops_with_the_candidates(tmp_path, files, words):
    data = tmp_path / "d"
    data.mkdir()
    for f in files:
        (data / f).write_text("")
    for command in (["coreset", "--method", "random"], ["distill"], ["experts"], ["train"]):
        res = vl(*command, "--data", data, *TINY_MODEL, "--out", tmp_path / "x", ok=False)
        assert res.exit_code == 2, res.output
        for w in words:
            assert w in res.output, (command, w, res.output)
        assert "Traceback" not in res.output and not (tmp_path / "x").exists()


def test_embedded_with_a_data_folder_is_refused_not_ignored(tmp_path):
    data = photos(tmp_path / "my-data")
    res = vl("coreset", "--method", "random", "--dataset", "embedded", "--data", data, *TINY_MODEL,
             "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 2 and "reads no data folder" in res.output and "--dataset captions" in res.output
    assert not (tmp_path / "x").exists()
    res = vl("run", "demo", "--data", data, "--out", tmp_path / "demo", ok=False)  # the demo is embedded
    assert res.exit_code == 2 and "stage 'buffer'" in res.output and "reads no data folder" in res.output
    assert not (tmp_path / "demo").exists()


@pytest.mark.parametrize("args,words", [
    (["--dataset-option", "file=mine.csv"], ["default 'embedded'", "--dataset captions"]),
    (["--encoder-option", "out_dim=8"], ["'out_dim'", "'effnet-lite0', which is used because --encoder was not "
                                                      "given", "--encoder tiny-cnn"]),
    (["--text-option", "dim=8", "--encoder", "tiny-cnn"], ["'dim'", "--text-encoder was not given",
                                                            "--text-encoder hashed-bow"]),
])
def test_options_given_for_another_component_than_the_default_name_the_right_one(tmp_path, args, words):
    res = vl("coreset", "--method", "random", *args, "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 2, res.output
    for w in words:
        assert w in res.output, (w, res.output)


# ============================================================================ 3. the budget, early
@pytest.mark.parametrize("command,words", [
    (["coreset", "--method", "herding"], ["--pairs 100 exceeds the 16 images", "Choose --pairs 16 or less",
                                          "--no-unique-images (up to --pairs 32)", "dev=0.1, test=0.1"]),
    (["distill", "--distiller", "bitraj", "--pairs", "100"], ["--pairs 100 exceeds the 32 pairs",
                                                              "Choose --pairs 32 or less"]),
])
def test_the_readme_own_data_commands_fail_on_a_small_set_before_reading_an_image(tmp_path, command, words):
    # the images are not images: reading any would fail with another message
    data = photos(tmp_path / "my-data", n=20, corrupt=True)
    res = vl(*command, "--dataset", "captions", "--data", data, *TINY_MODEL, "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 2, res.output
    for w in words:
        assert w in res.output, (w, res.output)
    assert "--budget" not in res.output and "cannot read image" not in res.output
    assert not (tmp_path / "x").exists()  # neither the set nor Stage 1's buffer


def test_component_messages_name_the_flags_of_the_command():
    for command, component, message, expected in [
            ("coreset", "herding", "choose --budget 5 or less; or --epochs 2", "choose --pairs 5 or less; or "
                                                                               "--proxy-epochs 2"),
            ("eval", "retrieval", "lower --lr (it is 0.5) or --seeds", "lower --eval-lr (it is 0.5) or --eval-seeds"),
            ("distill", "bitraj", "Lower --lr-lr, or set --lr-init.", "Lower --lr-lr, or set --lr-init.")]:
        cmd = cli.commands[command]
        ctx = click.Context(cmd, info_name=command)
        ctx.meta["vl.component"] = component
        with ctx:
            assert current_flags(message) == expected


# ============================================================================ 4. tiny evaluation splits
def test_a_tiny_evaluation_split_warns_and_reports_its_candidates(tmp_path):
    tiny = ["--dataset", "embedded", "--dataset-option", "num_train=24", "--dataset-option", "num_dev=6"]
    vl("coreset", "--method", "random", *tiny, *TINY_MODEL, "--pairs", 4, "--out", tmp_path / "c")
    res = vl("eval", tmp_path / "c", "--eval-seeds", 1, "--eval-epochs", 1, "--json")
    out = json.loads(res.stdout)
    assert out["candidates"] == {"images": 6, "captions": 30}
    assert "IR@10 is 100% whatever the model" in res.stderr and "K >= the number of candidates" in res.stderr
    assert json.loads((tmp_path / "c" / "eval-dev" / "metrics.json").read_text())["candidates"]["images"] == 6
    text = vl("eval", tmp_path / "c", "--eval-seeds", 1, "--eval-epochs", 1, "--overwrite").stdout
    assert "candidates: 6 images and 30 captions" in text


def test_trivial_recalls():
    from vlcore.model.metrics import small_split_warning, trivial

    assert trivial(6, 30) == ["IR@10"] and trivial(4, 8) == ["TR@10", "IR@5", "IR@10"] and trivial(500, 2500) == []
    assert small_split_warning(500, 2500, "dev") is None


# ============================================================================ 5. a missing pair set
def test_eval_of_a_missing_folder_says_it_is_missing(tmp_path):
    (tmp_path / "runs" / "nodes").mkdir(parents=True)
    res = vl("eval", tmp_path / "runs" / "nope", ok=False)
    assert res.exit_code == 1 and "does not exist: no such folder" in res.output and "Did you mean" in res.output
    assert "incomplete" not in res.output and "config.toml" not in res.output
    assert sorted(p.name for p in (tmp_path / "runs").iterdir()) == ["nodes"]  # nothing made


# ============================================================================ 6. --json
def json_commands() -> set[str]:
    return {name for name, cmd in cli.commands.items() if any(p.name == "as_json" for p in cmd.params)}


def test_every_json_command_prints_one_json_document(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe({"random": {"run": "coreset", "method": "random", "pairs": 4},
                                   "eval": {"run": "eval", "pairset": "@random", "eval-seeds": 1, "eval-epochs": 1}},
                                  **{"dataset-option": ["num_train=24", "num_dev=12"], "encoder": "tiny-cnn",
                                     "encoder-option": ["width=4"], "image-size": 8, "text-encoder": "hashed-bow"}))
    vl("coreset", "--method", "random", *EMBEDDED, *TINY_MODEL, "--pairs", 4, "--out", tmp_path / "c")
    runs = {
        "plugins": [["plugins", "--json"]],
        "list": [["list", "--json"], ["list", "datasets", "--json"]],
        "eval": [["eval", tmp_path / "c", "--eval-seeds", 1, "--eval-epochs", 1, "--json"]],
        "train": [["train", *EMBEDDED, *TINY_MODEL, "--epochs", 1, "--no-select-epochs", "--json",
                   "--out", tmp_path / "t"]],
        "run": [["run", recipe, "--json", "--out", tmp_path / "r"], ["run", recipe, "--json", "--out", tmp_path / "r"],
                ["run", recipe, "--dry-run", "--json", "--out", tmp_path / "r2"]],
    }
    assert json_commands() <= set(runs), f"--json commands without a test: {json_commands() - set(runs)}"
    for name, lines in runs.items():
        for args in lines:
            res = vl(*args)
            json.loads(res.stdout)  # the whole of stdout is one document
    first = vl(*runs["run"][0])  # the stages' own output (defaults lines, stage headers) went to stderr
    assert "[1/2] random" in first.stderr and "tr_r1" in json.loads(first.stdout)


# ============================================================================ 7. help and output
def help_texts():
    """(label, help output) of every command, and of each component of a component flag."""
    for name, cmd in sorted(cli.commands.items()):
        yield f"vl {name}", vl(name, "--help").output
        comp = getattr(cmd, "component", None)
        if isinstance(cmd, VLCommand) and comp is not None:
            for component in get_host().names(comp.kind):
                yield f"vl {name} {comp.flag} {component}", vl(name, comp.flag, component, "--help").output


def shown_flags(text: str) -> set[str]:
    flags = set()
    for line in text.splitlines():
        m = re.match(r"^\s{2}(-\S.*?)(\s{2,}|$)", line)
        if m:
            flags |= set(re.findall(r"--[a-z0-9][a-z0-9-]*", m.group(1)))
    return flags


def test_help_texts_are_consistent():
    for label, text in help_texts():
        flat = " ".join(text.split())
        assert not re.search(r"\bx\s*[<>]=?\s*-?\d|\d\s*<=?\s*x\b", flat), f"{label}: a click-style range"
        assert "INTEGER RANGE" not in flat and "FLOAT RANGE" not in flat, label
        assert "[|" not in flat and "|]" not in flat and "||" not in flat, f"{label}: an empty choice"
        assert not re.search(r"(?<![\w-])[a-z]+_lr\b|default_lr", flat), f"{label}: an internal name"
        # every flag the text names is one it shows (a `vl OTHER ...` or `torchrun ...` example aside)
        named = set(re.findall(r"(?<![\w-])--[a-z0-9][a-z0-9-]*", re.sub(r"`[^`]*`", "", flat)))
        assert named <= shown_flags(text), f"{label} names flags it does not show: {sorted(named - shown_flags(text))}"
    store = vl("distill", "--help").output
    assert "--unroll-store-dtype [float32|bfloat16|float16]" in store


def test_coreset_pairs_shows_its_range_and_why_it_differs_from_distill():
    text = " ".join(vl("coreset", "--help").output.split())
    block = text.split("--pairs INTEGER", 1)[1].split("--buffer", 1)[0]
    assert "[range: >= 1;" in block and "vl distill's >= 2" in block
    assert "[range: >= 2]" in " ".join(vl("distill", "--help").output.split()).split("--pairs INTEGER", 1)[1][:200]


def test_list_without_a_kind_lists_the_kinds():
    res = vl("list")
    lines = res.stdout.splitlines()
    for kind in ("image_encoders", "text_encoders", "datasets", "distillers", "selectors", "evaluators",
                 "unroll_backends", "loggers"):
        assert sum(line.startswith(kind + " ") for line in lines) == 1, kind
    assert "`vl list KIND`" in res.stdout


def test_an_option_in_two_spellings_is_a_usage_error(tmp_path):
    res = vl("coreset", "--method", "random", "--pairs", 20, "--budget", 10, "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 2 and "--pairs 20 and --budget 10 both set --pairs" in res.output
    assert not (tmp_path / "x").exists()


def test_a_dataset_typo_fails_before_any_work(tmp_path):
    res = vl("distill", "--dataset", "embeded", *TINY_MODEL, "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 2 and "Did you mean 'embedded'" in res.output and "distilling" not in res.output
    recipe = tmp_path / "r.toml"
    recipe.write_text('[common]\ndataset = "embeded"\n\n[stages.random]\nrun = "coreset"\nmethod = "random"\n'
                      'pairs = 4\n')
    res = vl("run", recipe, "--out", tmp_path / "r", ok=False)
    assert res.exit_code == 2 and "Did you mean 'embedded'" in res.output and "[1/1]" not in res.output
    assert not (tmp_path / "r").exists()


def test_resume_says_where_it_continues(tmp_path):
    args = ["distill", *EMBEDDED, *TINY_MODEL, "--pairs", 2, "--syn-steps", 1, "--max-start-epoch", 1,
            "--num-experts", 1, "--no-eval", "--out", tmp_path / "d"]
    vl(*args, "--iterations", 2)
    res = vl(*args, "--iterations", 3, "--resume")
    assert f"resuming from iteration 2 of 3 ({tmp_path / 'd' / 'checkpoint.safetensors'})" in res.stdout


def test_log_messages_carry_no_logger_name(tmp_path):
    from vlcore.cli.texts import LogFormat

    record = logging.LogRecord("vlcore.distill.recipe", logging.WARNING, __file__, 1, "interrupted: saved in %s", ("X",), None)
    assert LogFormat(named=False).format(record) == "warning: interrupted: saved in X"
    assert LogFormat(named=True).format(record) == "warning vlcore.distill.recipe: interrupted: saved in X"


def test_the_dev_recall_legend_names_the_metrics_as_the_tables_do():
    from vlcore.data.viz import line_figure

    fig = line_figure({k: ([1, 2], [3.0, 4.0]) for k in ("tr_r1", "tr_r5", "ir_r1", "ir_r5")},
                      xlabel="iteration", ylabel="dev recall (%)")
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["TR@1", "TR@5", "IR@1", "IR@5"]


def test_eval_of_an_exported_set_writes_beside_it(tmp_path):
    pytest.importorskip("datasets")
    vl("coreset", "--method", "random", *EMBEDDED, *TINY_MODEL, "--pairs", 4, "--out", tmp_path / "c")
    vl("export", tmp_path / "c", tmp_path / "c-hf")
    before = sorted(p.name for p in (tmp_path / "c-hf").iterdir())
    vl("eval", tmp_path / "c-hf", "--eval-seeds", 1, "--eval-epochs", 1)
    assert sorted(p.name for p in (tmp_path / "c-hf").iterdir()) == before
    assert (tmp_path / "c-hf-eval-dev" / "metrics.json").exists()


# ============================================================================ 8, 9. the first command's cost
def test_the_demo_does_what_it_needs_and_keeps_its_table():
    from vlcore.artifacts.experiment import load

    exp = load("demo")
    options = dict(o.split("=", 1) for o in exp.common["dataset-option"])
    captions = 5 * (int(options["num_train"]) + int(options["num_dev"]))  # embedded: 5 captions an image
    assert captions <= 6250, "the demo embeds more captions than it needs (README: its measured time)"
    assert [s.command for s in exp.stages] == ["experts", "distill", "distill", "coreset", "eval", "eval", "eval"]
    assert {exp.stage(s).settings["iterations"] for s in ("distilled", "lors")} == {40}


def test_the_readme_says_what_the_install_and_the_demo_cost():
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    setup = " ".join(text.split("## Set-up", 1)[1].split("## Using it", 1)[0].split())
    assert "https://download.pytorch.org/whl/cpu" in setup and "4 GB" in setup and "6.8 GB" in setup
    assert "a few minutes" not in setup and "CPU-seconds" in setup and "under load" in setup
