"""The installed plugin from the command line, as a user runs it: every `vl` command that takes a
selector or an image encoder, on tiny data (the `embedded` dataset, 64 train images, 16 px)."""
import importlib.metadata as md
import json

import pytest
from safetensors.torch import load_file

from vlcore.testing.cli import run_vl

try:
    md.distribution("vl-plugin-example")
except md.PackageNotFoundError:
    pytestmark = pytest.mark.skip(reason="vl-plugin-example is not installed, so `vl` cannot find it through its "
                                         "entry point: pip install -e examples/vl-plugin-example")

DATA = ["--dataset", "embedded", "--dataset-option", "num_train=64", "--dataset-option", "num_dev=16",
        "--image-size", "16"]
ENCODER = ["--encoder", "tinyresnet", "--encoder-option", "width=8"]


@pytest.fixture(scope="module")
def work(tmp_path_factory, vl_cache_dir):
    return tmp_path_factory.mktemp("example-cli")


def test_components_are_listed_with_their_plugin():
    selectors = json.loads(run_vl("list", "selectors", "--json").stdout)
    medoid = next(s for s in selectors if s["name"] == "medoid")
    assert medoid["plugin"] == "example" and medoid["options"]["iterations"] == 50
    encoders = json.loads(run_vl("list", "image_encoders", "--json").stdout)
    assert any(e["name"] == "tinyresnet" and e["plugin"] == "example" for e in encoders)


def test_strict_options_apply_to_plugin_components(work):
    proc = run_vl("coreset", "--method", "medoid", "--budget", "4", "--selector-option", "iteratons=3",
                  "--out", work / "never", check=False)
    assert proc.returncode != 0
    assert "Unknown option 'iteratons'" in proc.stderr and "Did you mean 'iterations'?" in proc.stderr
    proc = run_vl("experts", "--encoder", "tinyresnt", "--out", work / "never", check=False)
    assert proc.returncode != 0 and "Did you mean 'tinyresnet'?" in proc.stderr


def test_coreset_with_medoid_then_eval(work):
    out = work / "coreset-medoid"
    run_vl("coreset", "--method", "medoid", "--budget", "8", *DATA, *ENCODER, "--out", out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "medoid" and meta["budget"] == 8 and meta["num_pairs"] == 8
    assert meta["config"] == {"unique_images": True, "iterations": 50, "normalize": True}
    assert meta["spec"]["encoder"] == "tinyresnet"
    assert len({image for image, _ in meta["source_ids"]}) == 8
    assert meta["selection"]["converged"] is True and meta["selection"]["inertia"] >= 0  # the selector's info
    # vl eval trains fresh tinyresnet models (the pair set's recorded spec) on the coreset
    proc = run_vl("eval", out, "--seeds", "1", "--epochs", "1", "--json")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert set(metrics) >= {"tr_r1", "ir_r1", "rsum"} and 0 <= metrics["tr_r10"] <= 100


def test_experts_then_distill(work):
    buf = work / "buffer-tinyresnet"
    run_vl("experts", *DATA, *ENCODER, "--num-experts", "1", "--epochs", "1", "--batch-size", "64", "--out", buf)
    index = json.loads((buf / "index.json").read_text())
    assert index["spec"]["encoder"] == "tinyresnet" and index["spec"]["trainable"] == "full"
    assert index["num_params"]["img"] > 0
    out = work / "distilled"
    run_vl("distill", "--buffer", buf, "--pairs", "4", "--iterations", "1", "--syn-steps", "2",
           "--max-start-epoch", "1", "--no-eval", "--out", out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "bitraj" and meta["spec"]["encoder"] == "tinyresnet"
    assert load_file(str(out / "pairs.safetensors"))["images"].shape == (4, 3, 16, 16)


def test_train(work):
    proc = run_vl("train", *DATA, *ENCODER, "--epochs", "1", "--json", "--out", work / "train")
    metrics = json.loads(proc.stdout.strip().splitlines()[-1])
    assert 0 <= metrics["ir_r10"] <= 100
    assert json.loads((work / "train" / "meta.json").read_text())["spec"]["encoder"] == "tinyresnet"
