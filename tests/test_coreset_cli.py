"""End-to-end tests of ``vl coreset``: select on the embedded dataset (and on real Flickr8k when the
development copy is present), then ``vl eval`` the artifact."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from vlcore.data.pairset import PairSet
from vlcore.testing.cli import invoke_vl as vl

torch.set_num_threads(min(2, torch.get_num_threads()))

REAL_FLICKR8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k-dev"
TINY = ["--dataset", "embedded", "--dataset-option", "num_train=200", "--dataset-option", "num_dev=50",
        "--encoder", "convnet", "--encoder-option", "width=8", "--image-size", "16"]
METHODS = ("random", "herding", "kcenter", "forgetting")


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("vl-cache")


@pytest.fixture(autouse=True)
def _cache(cache, monkeypatch):
    monkeypatch.setenv("VL_CACHE_DIR", str(cache))


def check_artifact(out: Path, method: str, budget: int, seed: int, *, image_size: int, unique=True) -> PairSet:
    ps = PairSet.load(out)
    meta = json.loads((out / "meta.json").read_text())
    assert len(ps) == budget and meta["num_pairs"] == budget
    assert meta["kind"] == "coreset" and meta["method"] == method and meta["seed"] == seed
    assert meta["config"]["unique_images"] is unique
    assert set(meta["dataset"]) >= {"name", "root", "options", "limit"}
    assert meta["spec"]["image_size"] == image_size and "versions" in meta
    assert ps.images.dtype == torch.float32 and ps.images.shape[1:] == (3, image_size, image_size)
    assert 0.0 <= float(ps.images.min()) and float(ps.images.max()) <= 1.0
    ids = [tuple(x) for x in meta["source_ids"]]
    assert len(ids) == budget and len(set(ids)) == budget
    if unique:
        assert len({img for img, _ in ids}) == budget
    assert len(ps.captions) == budget and all(isinstance(c, str) and c for c in ps.captions)
    assert (out / "grid.png").stat().st_size > 0
    return ps


@pytest.mark.parametrize("method", METHODS)
def test_coreset_embedded(tmp_path, method):
    out = tmp_path / method
    epochs = [] if method == "random" else ["--epochs", 2]  # random trains nothing: no such option
    res = vl("coreset", "--method", method, *TINY, "--budget", 12, *epochs, "--seed", 3, "--out", out)
    assert "selected 12 pairs (12 images)" in res.output
    ps = check_artifact(out, method, 12, 3, image_size=16)
    # the text is the real caption embedding: the same caption gives the same vector again
    again = tmp_path / f"{method}-again"
    vl("coreset", "--method", method, *TINY, "--budget", 12, *epochs, "--seed", 3, "--out", again)
    assert PairSet.load(again).source_ids == ps.source_ids
    assert torch.equal(PairSet.load(again).text, ps.text)


def test_coreset_then_eval(tmp_path):
    out = tmp_path / "kc"
    vl("coreset", "--method", "kcenter", *TINY, "--budget", 16, "--epochs", 2, "--out", out)
    res = vl("eval", out, "--seeds", 1, "--epochs", 2, "--json")
    m = json.loads(res.stdout.strip().splitlines()[-1])
    assert {"tr_r1", "tr_r5", "tr_r10", "ir_r1", "ir_r5", "ir_r10", "rsum"} <= set(m)
    assert (out / "eval-dev" / "metrics.json").exists()


def test_coreset_options(tmp_path):
    out = tmp_path / "rnd"
    vl("coreset", "--method", "random", *TINY, "--budget", 300, "--no-unique-images", "--out", out)
    check_artifact(out, "random", 300, 0, image_size=16, unique=False)
    out = tmp_path / "kcm"
    vl("coreset", "--method", "kcenter", *TINY, "--budget", 8, "--space", "raw", "--selector-option", "first=mean",
       "--out", out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["config"]["first"] == "mean" and meta["config"]["space"] == "raw"
    assert meta["selection"]["space"] == "raw"


def test_coreset_with_buffer(tmp_path):
    buf = tmp_path / "buf"
    vl("experts", *TINY, "--num-experts", 1, "--epochs", 1, "--out", buf)
    out = tmp_path / "herd"
    # model and dataset default to the buffer's
    vl("coreset", "--method", "herding", "--buffer", buf, "--budget", 10, "--out", out)
    meta = json.loads((out / "meta.json").read_text())
    assert meta["selection"]["model"] == "buffer expert" and meta["selection"]["epoch"] == 1
    assert meta["dataset"]["options"] == {"num_train": 200, "num_dev": 50}
    assert meta["spec"]["encoder_options"] == {"width": 8} and meta["buffer"]["experts"] == 1
    res = vl("coreset", "--method", "herding", "--buffer", buf, "--budget", 10, "--selector-option", "expert=3",
             "--out", tmp_path / "bad", ok=False)
    assert res.exit_code != 0 and "holds 1 experts" in res.output


@pytest.mark.parametrize("args,message", [
    (["--method", "random", "--budget", 0], "at least 1"),
    (["--method", "random", "--budget", -2], "at least 1"),
    (["--method", "random", "--budget", 201], "exceeds the 200 images"),
    (["--method", "herding", "--budget", 1001, "--no-unique-images"], "exceeds the 1000 pairs"),
    (["--method", "herdng", "--budget", 5], "Did you mean 'herding'"),
    (["--method", "random", "--budget", 5, "--space", "raw"], "Unknown option 'space' for selector 'random'"),
    (["--method", "random", "--budget", 5, "--epochs", 3], "Unknown option 'epochs' for selector 'random'"),
])
def test_coreset_errors(tmp_path, args, message):
    res = vl("coreset", *TINY, *args, "--out", tmp_path / "x", ok=False)
    assert res.exit_code != 0
    assert message in res.output
    assert "Traceback" not in res.output


def test_coreset_help():
    res = vl("coreset", "--help")
    text = " ".join(res.output.split())
    for word in ("random", "herding", "kcenter", "forgetting", "distinct images", "--no-unique-images",
                 "--buffer", "--space"):
        assert word in text


@pytest.mark.slow
def test_coreset_flickr8k(tmp_path):
    if not (REAL_FLICKR8K / "Flickr8k.token.txt").exists():
        pytest.skip(f"Flickr8k development copy not found at {REAL_FLICKR8K} (see shared/data/README.md)")
    data = ["--dataset", "flickr8k", "--data", REAL_FLICKR8K, "--limit", 300, "--encoder", "effnet-lite0"]
    for method in ("herding", "forgetting"):
        out = tmp_path / method
        vl("coreset", "--method", method, *data, "--budget", 50, "--epochs", 2, "--out", out)
        ps = check_artifact(out, method, 50, 0, image_size=112)
        meta = ps.meta
        assert meta["dataset"]["limit"] == 300 and meta["spec"]["trainable"] == "frozen"
        assert all(img.endswith(".jpg") and 0 <= k < 5 for img, k in ps.source_ids)
        # the caption recorded for each pair is that image's caption number k in the token file
        tokens = dict(line.split("\t", 1) for line in
                      (REAL_FLICKR8K / "Flickr8k.token.txt").read_text().splitlines() if "\t" in line)
        for (img, k), cap in list(zip(ps.source_ids, ps.captions))[:10]:
            assert tokens[f"{img}#{k}"].strip().split()[:3] == cap.strip().split()[:3]
    res = vl("eval", tmp_path / "herding", "--limit", 300, "--seeds", 1, "--epochs", 2, "--json")
    assert "tr_r1" in json.loads(res.stdout.strip().splitlines()[-1])
