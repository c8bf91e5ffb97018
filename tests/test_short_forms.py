"""The project's own command lines run as typed (issue 14): `vl distill --distiller bitraj --encoder
nfnet` and `vl coreset --method herding` work on the defaults (Stage 1 first, 100 pairs, a named
output folder), print every default they pick before any work and record them in the artifact.
The tests add only size flags (a tiny embedded dataset, small images, few iterations)."""
from __future__ import annotations

import json
import shutil

import pytest

from vlcore.data.pairset import PairSet
from vlcore.testing.cli import invoke_vl as vl, run_vl
from vlcore.testing.runs import DISTILL_STAGE, tiny_recipe

pytest_plugins = ["vlcore.testing.fixtures"]

SMALL_DATA = ["--dataset-option", "num_train=24", "--dataset-option", "num_dev=12", "--image-size", "32"]
FEW = ["--iterations", "2", "--syn-steps", "2", "--num-experts", "1", "--eval-epochs", "1"]




def test_distill_nfnet_offline_fails_fast_with_the_weights_message(tmp_path):
    proc = run_vl("distill", "--distiller", "bitraj", "--encoder", "nfnet", cwd=tmp_path, check=False,
                  env={"HF_HUB_OFFLINE": "1"})
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert "pretrained weights" in proc.stderr and "--pretrained none" in proc.stderr
    assert "--pretrained /path/to/file.safetensors" in proc.stderr
    assert "loading" not in proc.stderr and not (tmp_path / "runs").exists()  # no data work, no folder


def test_distill_nfnet_short_form_runs_to_the_end(tmp_path):
    proc = run_vl("distill", "--distiller", "bitraj", "--encoder", "nfnet", "--pretrained", "none",
                  "--pairs", "4", *SMALL_DATA, *FEW, cwd=tmp_path, env={"HF_HUB_OFFLINE": "1"})
    out = tmp_path / "runs" / "bitraj-nfnet-4"
    lines = proc.stdout.splitlines()
    defaults = next(line for line in lines if line.startswith("vl distill: defaults used:"))
    assert lines.index(defaults) == 0  # before any work
    for flag in ("--dataset embedded", "--text-encoder minilm", "--trainable frozen", "--train-epochs 2",
                 f"--out {out.relative_to(tmp_path)}", "--buffer"):
        assert flag in defaults, flag
    rel = out.relative_to(tmp_path)
    assert lines[1] == f"distilling 4 pairs with bitraj into {rel}"  # the folder, at the start...
    assert any(line.startswith(f"distilled 4 pairs into {rel}") for line in lines[-4:])  # ...and the end
    ps = PairSet.load(out)
    assert len(ps) == 4 and ps.meta["spec"]["encoder"] == "nfnet" and ps.meta["iterations_done"] == 2
    assert ps.meta["defaults"]["dataset"] == "embedded" and ps.meta["defaults"]["train-epochs"] == "2"
    index = json.loads((out / "buffer" / "index.json").read_text())  # Stage 1 ran into OUT/buffer
    assert index["expert"]["num_experts"] == 1 and index["expert"]["epochs"] == 2
    assert (out / "buffer" / "expert_000.safetensors").exists()


def test_distill_pairs_default_to_100_and_name_the_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = vl("distill", "--encoder", "convnet", "--encoder-option", "width=8", "--image-size", "16",
             "--dataset-option", "num_train=120", "--dataset-option", "num_dev=10", "--iterations", "1",
             "--syn-steps", "1", "--max-start-epoch", "1", "--num-experts", "1", "--no-eval")
    out = tmp_path / "runs" / "bitraj-convnet-100"
    assert "--pairs 100" in res.stdout.splitlines()[0] and len(PairSet.load(out)) == 100
    expert = out / "buffer" / "expert_000.safetensors"
    made = expert.stat().st_mtime_ns
    # the same command again, continuing the run in OUT (a finished run is refused without --resume or
    # --overwrite), reuses the matching buffer there
    vl("distill", "--encoder", "convnet", "--encoder-option", "width=8", "--image-size", "16",
       "--dataset-option", "num_train=120", "--dataset-option", "num_dev=10", "--iterations", "1",
       "--syn-steps", "1", "--max-start-epoch", "1", "--num-experts", "1", "--no-eval", "--resume")
    assert expert.stat().st_mtime_ns == made


def test_coreset_short_form_uses_the_default_model_and_100_pairs(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    res = vl("coreset", "--method", "herding", "--dataset-option", "num_train=120", "--dataset-option",
             "num_dev=10", "--image-size", "32", "--proxy-epochs", "1")
    out = tmp_path / "runs" / "herding-effnet-lite0-100"
    first = res.stdout.splitlines()[0]
    assert first.startswith("vl coreset: defaults used:")
    for flag in ("--encoder effnet-lite0", "--pairs 100", "--dataset embedded", "--out runs/herding-effnet-lite0-100"):
        assert flag in first, flag
    ps = PairSet.load(out)
    assert len(ps) == 100 and ps.meta["spec"]["encoder"] == "effnet-lite0" and ps.meta["budget"] == 100
    assert ps.meta["defaults"]["encoder"] == "effnet-lite0" and ps.meta["defaults"]["pairs"] == "100"
    assert "runs/herding-effnet-lite0-100" in res.stdout.strip().splitlines()[-1]


def test_distill_copied_folder_resumes_and_a_refused_resume_says_what_differs(tmp_path):
    args = ["--encoder", "convnet", "--encoder-option", "width=8", "--image-size", "16", "--dataset-option",
            "num_train=24", "--dataset-option", "num_dev=12", "--pairs", "4", "--syn-steps", "2", "--max-start-epoch",
            "1", "--num-experts", "1", "--no-eval", "--checkpoint-every", "1"]
    vl("distill", *args, "--iterations", "2", "--out", tmp_path / "a")
    shutil.copytree(tmp_path / "a", tmp_path / "b")
    shutil.rmtree(tmp_path / "a")  # the original is gone: nothing may point at it
    vl("distill", *args, "--iterations", "3", "--resume", "--out", tmp_path / "b")
    ps = PairSet.load(tmp_path / "b")
    assert ps.meta["iterations_done"] == 3
    res = vl("distill", *args, "--iterations", "4", "--lr-images", "50", "--resume", "--out", tmp_path / "b", ok=False)
    assert res.exit_code != 0 and "belongs to a run with other settings" in res.output
    assert "config.lr_images: checkpoint null, now 50.0" in res.output and "Traceback" not in res.output


def test_vl_run_folder_copied_elsewhere_is_reused(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe({"buffer": {"run": "experts", "num-experts": 1, "train-epochs": 2},
                                   "distilled": DISTILL_STAGE}, **{"dataset-option": ["num_train=24", "num_dev=12"]}))
    vl("run", recipe, "--out", tmp_path / "x")
    shutil.copytree(tmp_path / "x", tmp_path / "y")
    res = vl("run", recipe, "--out", tmp_path / "y")
    assert res.output.count("done earlier, reused") == 2


class Untouchable:
    """A plugin whose dataset fails the test when any of its data is read."""

    @staticmethod
    def dataset():
        from vlcore.data.dataset import Dataset

        class UntouchableDataset(Dataset):
            """Fails the test when any data is read."""

            name = "untouchable"

            def splits(self):
                raise AssertionError("data work started before the options were checked")

            def load_split(self, split):
                raise AssertionError("data work started before the options were checked")

        return UntouchableDataset


@pytest.mark.parametrize("command,args,message", [
    ("distill", ["--pairs", "0"], "give a number >= 2"),
    ("distill", ["--pairs", "1"], "give a number >= 2"),
    ("distill", ["--syn-steps", "0"], "give a number >= 1"),
    ("distill", ["--batch-syn", "1"], "--batch-syn must be 0"),
    ("distill", ["--image-size", "4", "--encoder", "convnet"], "too small for depth 3"),
    ("distill", ["--image-size", "16", "--encoder", "nfnet", "--pretrained", "none"], "at least 32"),
    ("distill", ["--image-size", "-3"], "-3 is not in the range"),
    ("coreset", ["--method", "random", "--pairs", "0"], "at least 1"),
    ("coreset", ["--method", "random", "--image-size", "4", "--encoder", "convnet"], "too small for depth 3"),
    ("coreset", ["--method", "random", "--image-size", "0"], "0 is not in the range"),
])
def test_bad_values_fail_before_any_data_work(register_plugin, command, args, message, tmp_path):
    from vlcore import hookimpl

    cls = Untouchable.dataset()

    class Plugin:
        @staticmethod
        @hookimpl
        def register_datasets(register):
            register(cls)

    register_plugin(Plugin, "untouchable")
    res = vl(command, "--dataset", "untouchable", *args, "--out", tmp_path / "x", ok=False)
    assert res.exit_code != 0 and message in res.output, res.output
    assert "Traceback" not in res.output and "data work started" not in res.output
    assert not (tmp_path / "x").exists()
