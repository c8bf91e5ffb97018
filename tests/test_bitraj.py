"""The bitraj distiller end to end on tiny data: resume, non-finite guard, buffer checks, outputs.
Tests steer the recipe by subclassing it (overriding a step), as a method would."""
import math

import pytest
import torch

from vlcore.artifacts.checkpoint import read_state
from vlcore.components import DistillContext
from vlcore.core.errors import IncompatibleError
from vlcore.data.pairset import PairSet
from vlcore.distill.contract import PeriodicEval, StepResult
from vlcore.distill.recipe import NonFiniteError, run
from vlcore.model.encoder import ModelSpec
from vlcore.plugins.distillers.bitraj import BiTrajectory
from vlcore.testing.runs import CONVNET_SPEC as SPEC, embedded_buffer, interrupted
from vlcore.training.experts import ExpertConfig, train_experts



@pytest.fixture(scope="module")
def buffer(tmp_path_factory, data):
    return embedded_buffer(SPEC, data[0], tmp_path_factory.mktemp("buf") / "buffer")


def options(**opts):
    base = dict(pairs=8, iterations=6, syn_steps=3, expert_epochs=1, max_start_epoch=2, checkpoint_every=2,
                lr_images=10.0, lr_text=10.0)
    base.update(opts)
    return base


def make(host, **opts):
    return host.create("distiller", "bitraj", options(**opts))


def ctx(buffer, data, out, host, **kw):
    return DistillContext(spec=SPEC, buffer=buffer, train=data[0], out=out, host=host, **kw)


class SometimesNaN(BiTrajectory):
    """bitraj whose 2nd outer iteration and every one from the 4th give a NaN loss."""

    def step(self, ctx, state):
        self.calls = getattr(self, "calls", 0) + 1
        result = super().step(ctx, state)
        if self.calls == 2 or self.calls >= 4:
            return StepResult(float("nan"), result.grads, result.metrics)
        return result


def test_buffer_layout_and_resume(buffer, data, tmp_path):
    assert buffer.num_experts == 2 and buffer.epochs == 3
    ex = buffer.load(0)
    assert {f"img.{e}" for e in range(4)} | {f"txt.{e}" for e in range(4)} == set(ex)
    assert not torch.equal(ex["img.0"], ex["img.3"])  # it trained
    # re-running with more experts resumes: the finished ones are kept byte for byte
    before = (buffer.path / "expert_000.safetensors").read_bytes()
    buf2 = train_experts(SPEC, data[0], ExpertConfig(num_experts=3, epochs=3, batch_size=32), buffer.path,
                         dataset_info={"name": "embedded", "fingerprint": "x"})
    assert buf2.num_experts == 3
    assert (buffer.path / "expert_000.safetensors").read_bytes() == before
    with pytest.raises(IncompatibleError, match="other settings"):
        train_experts(SPEC, data[0], ExpertConfig(num_experts=1, epochs=2, batch_size=32), buffer.path,
                      dataset_info={"name": "embedded", "fingerprint": "x"})


def test_distill_outputs_artifact(buffer, data, tmp_path, host):
    out = tmp_path / "ps"
    ps = run(make(host), ctx(buffer, data, out, host, eval_data=data[1], eval_options=PeriodicEval(seeds=1, epochs=2)))
    loaded = PairSet.load(out)
    assert len(loaded) == 8 and loaded.images.shape == (8, 3, 16, 16) and loaded.text.shape[1] == 384
    assert loaded.meta["kind"] == "distilled" and loaded.meta["config"]["syn_steps"] == 3
    assert loaded.lr_img > 0 and loaded.lr_txt > 0
    assert len(loaded.source_ids) == 8 and all(c in data[0].captions for c in loaded.captions)
    assert (out / "grid.png").exists() and (out / "loss.png").exists() and (out / "dev_recall.png").exists()
    assert PairSet.load(out / "best").meta["selected"]["by"] == "dev rsum"
    assert not torch.equal(ps.images, torch.zeros_like(ps.images))


def test_resume_reaches_the_same_result(buffer, data, tmp_path, host):
    full = run(make(host), ctx(buffer, data, tmp_path / "a", host))
    with pytest.raises(KeyboardInterrupt):
        run(interrupted(BiTrajectory, 5)(BiTrajectory.Config(**options())), ctx(buffer, data, tmp_path / "b", host))
    assert read_state(tmp_path / "b" / "checkpoint.safetensors")[0]["iteration"] == 4
    resumed = run(make(host), ctx(buffer, data, tmp_path / "b", host, resume=True))
    torch.testing.assert_close(resumed.images, full.images, rtol=0, atol=0)
    torch.testing.assert_close(resumed.text, full.text, rtol=0, atol=0)
    assert resumed.lr_img == full.lr_img and resumed.lr_txt == full.lr_txt


def test_non_finite_iterations_are_skipped_then_stop(buffer, data, tmp_path, host):
    d = SometimesNaN(BiTrajectory.Config(**options(iterations=20, max_failures=3)))
    with pytest.raises(NonFiniteError, match="last good set saved"):
        run(d, ctx(buffer, data, tmp_path / "n", host))
    saved = PairSet.load(tmp_path / "n")
    assert torch.isfinite(saved.images).all() and torch.isfinite(saved.text).all()
    assert math.isfinite(saved.lr_img)
    # iterations 1 and 3 were applied, 2 skipped, 4-6 failed -> stop after the 3rd failure in a row
    assert saved.meta["history"]["iteration"] == [1, 3]


def test_buffer_mismatch_is_refused(buffer, data, tmp_path, host):
    other = ModelSpec(encoder="convnet", encoder_options={"width": 16, "depth": 2}, image_size=16, trainable="full")
    with pytest.raises(IncompatibleError, match="encoder_options"):
        buffer.check_compatible(other, 384)
    with pytest.raises(IncompatibleError, match="text dim"):
        buffer.check_compatible(SPEC, 768)


def test_one_modality_only_keeps_the_other_real(buffer, data, tmp_path, host):
    ps = run(make(host, distill_text=False, iterations=2), ctx(buffer, data, tmp_path / "i", host))
    idx = [data[0].captions.index(c) for c in ps.captions]  # real text: nearest caption is itself
    torch.testing.assert_close(ps.text, data[0].text[idx])


def test_start_epoch_bounds_checked(buffer, data, tmp_path, host):
    from vlcore.core.errors import ConfigError

    with pytest.raises(ConfigError, match="at least 4 epochs"):
        run(make(host, max_start_epoch=3, expert_epochs=2), ctx(buffer, data, tmp_path / "x", host))
