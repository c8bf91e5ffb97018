"""The 2026 methods' distillers (issue 19): ``--init real|kmeans|noise`` for every distiller,
``--start-sampling async`` (AMD) for the trajectory-matching ones, the bundled ``amd`` and ``mdm``:
their contracts, their rules as properties, runs through `vl run`, and bitwise resume after an
interrupt.  Tests steer the recipes by subclassing them (overriding a step)."""
from __future__ import annotations

import dataclasses
import json

import pytest
import torch
from click.testing import CliRunner

from vlcore.core.errors import ConfigError
from vlcore.core.registry import PluginHost
from vlcore.data.dataset import to_float
from vlcore.data.pairset import PairSet
from vlcore.distill.initial import initial_pairs
from vlcore.plugins.distillers.amd import AMD, unsquared_trajectory_loss
from vlcore.plugins.distillers.bitraj import BiTrajectory
from vlcore.plugins.distillers.mdm import MDM
from vlcore.testing import contracts as C
from vlcore.testing.host import use_host
from vlcore.testing.runs import EXPERTS_STAGE, interrupted, tiny_buffer, tiny_recipe
from vlcore.testing.runs import tiny_context as context
from vlcore.testing.runs import tiny_distill as distill

SMALL_TM = {"pairs": 4, "iterations": 2, "syn_steps": 2, "max_start_epoch": 1, "checkpoint_every": 0, "batch_syn": 2}
SMALL_MDM = {"pairs": 4, "iterations": 3, "checkpoint_every": 0}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(host, data, buffer of 2 tiny experts x 4 epochs, full training)."""
    return tiny_buffer(tmp_path_factory.mktemp("buf") / "buffer", epochs=4)


def started(tiny, d, tmp_path):
    """(ctx, state) of ``d`` after setup and init_synthetic."""
    with use_host(tiny[0]):
        ctx = context(tiny, tmp_path)
        state = d.setup(ctx)
        d.init_synthetic(ctx, state)
    return ctx, state


# ------------------------------------------------------------------------------ contracts
@pytest.mark.parametrize("cls, options, trainable", [
    (AMD, SMALL_TM, None),
    (MDM, SMALL_MDM, None),
    (MDM, SMALL_MDM, "frozen"),
    (BiTrajectory, {**SMALL_TM, "init": "kmeans", "start_sampling": "async"}, None),
    (BiTrajectory, {**SMALL_TM, "init": "noise"}, None),
])
def test_the_new_distillers_and_options_pass_the_contract(cls, options, trainable):
    ps = C.check_distiller(cls, options, trainable=trainable)  # includes a bitwise resume of one iteration fewer
    assert len(ps) <= 4 and ps.meta["init"]["method"] == options.get("init", "kmeans" if cls is not BiTrajectory
                                                                     else "real")


def test_mdm_declares_no_unroll_and_learns_no_step_sizes():
    assert MDM.needs_unroll is False and not any(f.name == "unroll" for f in dataclasses.fields(MDM.Config))
    d = PluginHost().create("distiller", "mdm", {})
    c = d.config
    assert (c.init, c.batch_real, c.batch_syn, c.lr_images, c.lr_text, c.momentum, c.clip_norm, c.kernel_weight) == \
        ("kmeans", 256, 64, 1000.0, 1000.0, 0.5, 1.0, 0.8)
    assert AMD.Config().init == "kmeans" and AMD.Config().start_sampling == "async"


@pytest.mark.parametrize("name, option, value", [
    ("mdm", "batch_real", 1), ("mdm", "kernel_weight", -0.1), ("mdm", "clip_norm", float("nan")),
    ("mdm", "init", "centroids"), ("amd", "start_sampling", "sometimes"), ("bitraj", "init", "zeros"),
])
def test_bad_values_fail_when_built(name, option, value):
    with pytest.raises(ConfigError):
        PluginHost().create("distiller", name, {option: value})


# ------------------------------------------------------------------------------ --init
def test_init_real_is_the_draw_it_always_was(tiny, tmp_path):
    host, data, _ = tiny
    ctx = context(tiny, tmp_path)
    got = initial_pairs(ctx, 4, torch.Generator().manual_seed(3), "real")
    idx = torch.randperm(data.num_pairs, generator=torch.Generator().manual_seed(3))[:4]  # the code before --init
    assert torch.equal(got.idx, idx)
    assert torch.equal(got.images, to_float(data.images[data.pair_image[idx]]))
    assert torch.equal(got.text, data.text[idx].float())
    # and a bitraj run with --init real is the same run as one with the default
    a = distill(tiny, BiTrajectory(BiTrajectory.Config(**SMALL_TM)), tmp_path / "a")
    b = distill(tiny, BiTrajectory(BiTrajectory.Config(**SMALL_TM, init="real")), tmp_path / "b")
    assert torch.equal(a.images, b.images) and torch.equal(a.text, b.text) and a.lr_img == b.lr_img


def test_kmeans_init_picks_distinct_real_pairs_deterministically(tiny, tmp_path):
    host, data, _ = tiny
    with use_host(host):
        ctx = context(tiny, tmp_path)
        a = initial_pairs(ctx, 4, torch.Generator().manual_seed(0), "kmeans")
        b = initial_pairs(ctx, 4, torch.Generator().manual_seed(99), "kmeans")  # draws nothing from the generator
    assert torch.equal(a.idx, b.idx) and len(set(a.idx.tolist())) == 4
    assert len(set(data.pair_image[a.idx].tolist())) == 4  # one caption per image (8 images >= 4 pairs)
    assert torch.equal(a.images, to_float(data.images[data.pair_image[a.idx]]))
    assert torch.equal(a.text, data.text[a.idx].float())
    assert a.info["method"] == "kmeans" and a.info["k"] == 4 and a.info["indices"] == a.idx.tolist()
    ps = distill(tiny, BiTrajectory(BiTrajectory.Config(**SMALL_TM, init="kmeans")), tmp_path / "ps")
    meta = json.loads((tmp_path / "ps" / "meta.json").read_text())
    assert meta["init"]["method"] == "kmeans" and meta["init"]["indices"] == a.idx.tolist()
    assert len(ps) == 4


def test_noise_init_is_in_the_datas_range(tiny, tmp_path):
    _, data, _ = tiny
    got = initial_pairs(context(tiny, tmp_path), 5, torch.Generator().manual_seed(0), "noise")
    real = to_float(data.images)
    assert got.idx is None and got.ids is None and got.images.shape == (5, *data.images.shape[1:])
    assert float(got.images.min()) >= float(real.min()) and float(got.images.max()) <= float(real.max())
    torch.testing.assert_close(got.text.norm(dim=1), torch.ones(5))
    assert got.info["method"] == "noise"


# ------------------------------------------------------------------------------ async starts (AMD)
def test_async_starts_are_drawn_independently_within_their_ranges_and_recorded(tiny, tmp_path):
    d = BiTrajectory(BiTrajectory.Config(**{**SMALL_TM, "max_start_epoch": 4, "start_sampling": "async",
                                            "start_reading": "last-above"}))
    ctx, state = started(tiny, d, tmp_path)
    ranges = state.info["start_ranges"]
    assert ranges["reading"] == "last-above" and ranges["max_start"] == 3
    assert 1 <= ranges["img"] <= 3 and 1 <= ranges["txt"] <= 3
    plans = [d.plan(state) for _ in range(200)]
    img = [p.starts["img"] for p in plans]
    txt = [p.starts["txt"] for p in plans]
    assert set(img) == set(range(ranges["img"] + 1)) and set(txt) == set(range(ranges["txt"] + 1))
    assert any(a != b for a, b in zip(img, txt))  # not one shared draw
    start, target = d.trajectory(state, plans[0], "cpu")
    ex, blocks = tiny[2].load(plans[0].expert), state.runtime.layout.blocks
    assert torch.equal(start[blocks["img"]], ex[f"img.{img[0]}"]) and torch.equal(start[blocks["txt"]],
                                                                                   ex[f"txt.{txt[0]}"])
    ps = d.snapshot(ctx, state)
    assert ps.meta["starts"]["sampling"] == "async" and ps.meta["starts"]["img"] == ranges["img"]
    shared = BiTrajectory(BiTrajectory.Config(**{**SMALL_TM, "max_start_epoch": 4}))
    _, s2 = started(tiny, shared, tmp_path / "s")
    assert "start_ranges" not in s2.info and shared.plan(s2).starts == {}


def test_amd_matches_with_unsquared_distances(tiny, tmp_path):
    d = AMD(AMD.Config(**SMALL_TM))
    ctx, state = started(tiny, d, tmp_path)
    u, _ = d.build_unroll(ctx, state, d.plan(state))
    assert u.match is unsquared_trajectory_loss
    layout = state.runtime.layout
    student = u.start + 0.5 * (u.target - u.start)  # halfway: 0.5 per modality unsquared (0.25 squared)
    loss, parts = u.loss(student)
    assert parts == pytest.approx({m: 0.5 for m in layout.blocks}) and float(loss) == pytest.approx(
        0.5 * len(layout.blocks))


# ------------------------------------------------------------------------------ MDM
class FixedTeacher(MDM):
    """mdm with one teacher (expert 0 at epoch 4) every iteration: its loss is a function of the set alone."""

    def teacher(self, state):
        buf = state.runtime.buffer
        return buf.params(state.runtime.expert(0), 4)


def test_mdm_loss_decreases_on_a_tiny_run(tiny, tmp_path):
    cfg = MDM.Config(pairs=4, iterations=30, checkpoint_every=0, batch_real=8, batch_syn=4, lr_images=1.0,
                     lr_text=1.0, clip_norm=1.0)
    ps = distill(tiny, FixedTeacher(cfg), tmp_path / "ps")
    loss = ps.meta["history"]["loss"]
    assert sum(loss[-3:]) / 3 < sum(loss[:3]) / 3, loss
    assert ps.lr_img is None and ps.lr_txt is None
    assert all(0 <= n for n in ps.meta["history"]["grad_norm"])


def test_mdm_teacher_merges_two_epochs_of_one_expert(tiny, tmp_path):
    d = MDM(MDM.Config(**SMALL_MDM))
    ctx, state = started(tiny, d, tmp_path)
    assert state.runtime.shared_init is False  # vlcore's experts start from their own seeds
    teacher = d.teacher(state)
    buf = tiny[2]
    assert set(teacher) == set(buf.params(buf.load(0), 0))
    assert all(torch.isfinite(v).all() for v in teacher.values())


def test_mdm_without_kernel_terms_is_infonce_alone(tiny, tmp_path):
    ps = distill(tiny, MDM(MDM.Config(**SMALL_MDM, kernel_weight=0.0)), tmp_path / "ps")
    h = ps.meta["history"]
    assert h["gke_u"] == [0.0] * 3 and h["gke_g"] == [0.0] * 3 and h["loss"] == pytest.approx(h["infonce"])


# ------------------------------------------------------------------------------ resume after an interrupt
@pytest.mark.parametrize("cls, options", [
    (AMD, {**SMALL_TM, "iterations": 5, "checkpoint_every": 1}),
    (MDM, {**SMALL_MDM, "iterations": 5, "checkpoint_every": 1}),
])
def test_resume_after_an_interrupt_is_bitwise_exact(tiny, tmp_path, cls, options):
    full = distill(tiny, cls(cls.Config(**options)), tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        distill(tiny, interrupted(cls, 3)(cls.Config(**options)), tmp_path / "b")
    resumed = distill(tiny, cls(cls.Config(**options)), tmp_path / "b", resume=True)
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.text, full.text)
    assert resumed.meta["history"]["loss"] == full.meta["history"]["loss"]
    assert resumed.meta["iterations_done"] == 5


def test_a_resumed_run_records_the_seconds_of_every_process_that_worked_on_it(tiny, tmp_path, monkeypatch):
    """meta.json's ``seconds`` (the table's distillation time) is the whole run's: a run stopped after
    two iterations and resumed later adds the second process's seconds to the first's."""
    import types

    import vlcore.distill.recipe as recipe_mod

    clock = types.SimpleNamespace(t=1000.0)
    monkeypatch.setattr(recipe_mod, "time", types.SimpleNamespace(time=lambda: clock.t))

    class Timed(MDM):  # each iteration takes 10 s of the test's clock
        def step(self, ctx, state):
            clock.t += 10.0
            return super().step(ctx, state)

    options = {**SMALL_MDM, "iterations": 5, "checkpoint_every": 1}
    with pytest.raises(KeyboardInterrupt):
        distill(tiny, interrupted(Timed, 3)(MDM.Config(**options)), tmp_path / "b")  # 2 iterations: 20 s
    clock.t = 50_000.0  # later, another process
    resumed = distill(tiny, Timed(MDM.Config(**options)), tmp_path / "b", resume=True)  # 3 more: 30 s
    assert resumed.meta["iterations_done"] == 5
    assert resumed.meta["seconds"] == pytest.approx(50.0)
    whole = distill(tiny, Timed(MDM.Config(**options)), tmp_path / "a")
    assert whole.meta["seconds"] == pytest.approx(50.0)


# ------------------------------------------------------------------------------ through `vl run`
def recipe_text(name: str, extra: dict) -> str:
    distilled = {"run": "distill", "buffer": "@buffer", "distiller": name, "pairs": 4, "iterations": 2, "no-eval": True}
    return tiny_recipe({"buffer": {**EXPERTS_STAGE, "num-experts": 2}, "distilled": {**distilled, **extra},
                        "ev": {"run": "eval", "pairset": "@distilled", "eval-seeds": 1, "eval-epochs": 1}},
                       f"{name} end to end", seed=0)


@pytest.mark.parametrize("name, extra", [
    ("amd", {"syn-steps": 2, "batch-syn": 2, "max-start-epoch": 2}),
    ("mdm", {"batch-real": 16, "batch-syn": 4}),
])
def test_vl_run_end_to_end(name, extra, tmp_path):
    from vlcore.cli.main import cli

    recipe = tmp_path / f"{name}.toml"
    recipe.write_text(recipe_text(name, extra))
    res = CliRunner().invoke(cli, ["run", str(recipe), "--out", str(tmp_path / "out")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    results = json.loads((tmp_path / "out" / "results.json").read_text())
    assert len(results) == 1
    ps = PairSet.load(next((tmp_path / "out").glob("**/distilled")))
    assert ps.meta["method"] == name and len(ps) <= 4
    if name == "mdm":
        assert ps.lr_img is None and "no learned step sizes" in res.output
        assert next(iter(results.values()))["lr_img"] == pytest.approx(0.03)  # the evaluator's default, as a coreset
    else:
        assert ps.meta["starts"]["sampling"] == "async" and ps.meta["init"]["method"] == "kmeans"
