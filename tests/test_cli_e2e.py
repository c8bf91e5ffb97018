"""The commands as a user runs them: experts -> distill -> eval, for each matching mode, plus
vl train on the real Flickr8k layout and the main demo's building blocks."""
import json

import pytest

from vlcore.data.pairset import PairSet
from vlcore.testing.cli import run_vl
from vlcore.testing.runs import TINY_DATA_ARGS as TINY

KEYS = ["tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10"]


def experts(tmp_path, *model, name="buf", extra=()):
    out = tmp_path / name
    run_vl("experts", *TINY, *model, "--num-experts", "1", "--epochs", "2", "--batch-size", "16", *extra,
           "--out", str(out))
    return out


def distill(buf, out, *extra):
    return run_vl("distill", "--buffer", str(buf), "--pairs", "4", "--iterations", "2", "--syn-steps", "2",
                  "--expert-epochs", "1", "--max-start-epoch", "1", "--no-eval", "--out", str(out), *extra)


@pytest.mark.parametrize("model", [
    ("--encoder", "convnet", "--encoder-option", "width=8", "--image-size", "16"),          # full matching
    ("--encoder", "effnet-lite0", "--image-size", "32", "--trainable", "frozen"),         # heads only
])
def test_experts_distill_eval(tmp_path, model):
    buf = experts(tmp_path, *model)
    index = json.loads((buf / "index.json").read_text())
    assert index["spec"]["encoder"] == model[1] and len(list(buf.glob("expert_*.safetensors"))) == 1
    distill(buf, tmp_path / "ps")
    ps = PairSet.load(tmp_path / "ps")
    assert len(ps) == 4 and ps.meta["spec"] == index["spec"]
    for png in ("grid.png", "loss.png"):
        assert (tmp_path / "ps" / png).stat().st_size > 1000
    proc = run_vl("eval", str(tmp_path / "ps"), "--seeds", "2", "--epochs", "2", "--json")
    metrics = json.loads(proc.stdout)
    assert set(KEYS) <= set(metrics) and {k + "_std" for k in KEYS} <= set(metrics)
    assert all(0 <= metrics[k] <= 100 for k in KEYS)
    assert json.loads((tmp_path / "ps" / "eval-dev" / "metrics.json").read_text()) == metrics


def test_paper_command_shape_nfnet_full(tmp_path):
    """`vl distill --distiller bitraj --encoder nfnet --pretrained none ...`: all 33M weights matched."""
    buf = experts(tmp_path, "--encoder", "nfnet", "--pretrained", "none", "--trainable", "full", "--image-size", "32")
    run_vl("distill", "--distiller", "bitraj", "--encoder", "nfnet", "--pretrained", "none", "--buffer", str(buf),
           "--pairs", "2", "--iterations", "1", "--syn-steps", "1", "--expert-epochs", "1", "--max-start-epoch", "1",
           "--no-eval", "--out", str(tmp_path / "ps"))
    assert PairSet.load(tmp_path / "ps").meta["spec"]["encoder"] == "nfnet"


def test_lora_matching_on_vit(tmp_path):
    model = ("--encoder", "vit", "--pretrained", "none", "--encoder-option", "patch_size=8", "--image-size", "16",
             "--trainable", "lora")
    buf = experts(tmp_path, *model)
    names = [n for n, _ in json.loads((buf / "index.json").read_text())["layout"]["img"]]
    assert names and all("lora_" in n for n in names)  # only adapters are matched on the image side
    run_vl("distill", "--distiller", "lora", "--buffer", str(buf), "--pairs", "4", "--iterations", "1",
           "--syn-steps", "1", "--expert-epochs", "1", "--max-start-epoch", "1", "--no-eval",
           "--out", str(tmp_path / "ps"))
    assert len(PairSet.load(tmp_path / "ps")) == 4
    proc = run_vl("distill", "--distiller", "lora", "--buffer", str(buf), "--unroll", "higher", "--no-eval",
                  "--out", str(tmp_path / "ps2"), check=False)
    assert proc.returncode != 0 and "--unroll func" in proc.stderr


def test_lora_distiller_needs_a_lora_buffer(tmp_path):
    buf = experts(tmp_path, "--encoder", "convnet", "--encoder-option", "width=4", "--image-size", "16")
    proc = run_vl("distill", "--distiller", "lora", "--buffer", str(buf), "--out", str(tmp_path / "x"),
                  "--no-eval", check=False)
    assert proc.returncode != 0 and "vl experts --trainable lora" in proc.stderr


def test_resume_and_errors_from_the_cli(tmp_path):
    buf = experts(tmp_path, "--encoder", "convnet", "--encoder-option", "width=4", "--image-size", "16")
    distill(buf, tmp_path / "ps", "--distiller-option", "checkpoint_every=1")
    first = PairSet.load(tmp_path / "ps")
    # extending a finished run with --resume continues from its checkpoint
    run_vl("distill", "--buffer", str(buf), "--pairs", "4", "--iterations", "3", "--syn-steps", "2",
           "--expert-epochs", "1", "--max-start-epoch", "1", "--no-eval", "--out", str(tmp_path / "ps"),
           "--distiller-option", "checkpoint_every=1", "--resume")
    again = PairSet.load(tmp_path / "ps")
    assert again.meta["iterations_done"] == 3 and first.meta["iterations_done"] == 2
    # a buffer that does not fit the encoder asked for is refused with what differs
    proc = run_vl("distill", "--buffer", str(buf), "--encoder-option", "width=8", "--out", str(tmp_path / "y"),
                  check=False)
    assert proc.returncode != 0 and "does not fit" in proc.stderr and "encoder_options" in proc.stderr
    proc = run_vl("distill", "--distiller", "bitrj", "--buffer", str(buf), "--out", str(tmp_path / "y"), check=False)
    assert "Did you mean 'bitraj'?" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_vl("distill", "--buffer", str(buf), "--eval-split", "test", "--out", str(tmp_path / "y"), check=False)
    assert proc.returncode != 0 and "test" in proc.stderr
    proc = run_vl("distill", "--buffer", str(tmp_path / "nope"), "--out", str(tmp_path / "y"), check=False)
    assert proc.returncode != 0 and "not an expert buffer" in proc.stderr


def test_train_on_flickr8k_layout(tmp_path, flickr8k_dir):
    out = tmp_path / "full"
    proc = run_vl("train", "--dataset", "flickr8k", "--data", str(flickr8k_dir), "--limit", "60", "--encoder",
                  "convnet", "--encoder-option", "width=8", "--image-size", "16", "--epochs", "2", "--split", "dev",
                  "--out", str(out), "--json")
    metrics = json.loads(proc.stdout)
    assert set(KEYS) <= set(metrics)
    assert json.loads((out / "metrics.json").read_text()) == metrics
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"]["train_pairs"] == 300 and (out / "recall.png").exists()


def test_missing_weights_say_how_to_fix(tmp_path):
    proc = run_vl("train", *TINY, "--encoder", "nfnet", "--image-size", "32", "--out", str(tmp_path / "x"),
                  env={"HF_HUB_OFFLINE": "1"}, check=False)
    assert proc.returncode != 0 and "pretrained=none" in proc.stderr and "Traceback" not in proc.stderr
