"""PTM-ST (bundled `ptm-st`): phases recorded and earlier subsets frozen, each phase on its own
shortcut buffer, start range and rows; the EMA against a hand computation; phased evaluation
subset by subset (and the union option); the contract (resume mid-phase bitwise); `vl distill`."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from click.testing import CliRunner

from vlcore.core.errors import ConfigError
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import build_model
from vlcore.plugins.distillers.ptm_st import PTMST
from vlcore.plugins.evaluators import train_phased
from vlcore.testing import contracts as C
from vlcore.testing.data import TINY_SPEC, tiny_pairs
from vlcore.testing.host import contract_host, use_host
from vlcore.testing.runs import tiny_buffer
from vlcore.testing.runs import tiny_distill as distill
from vlcore.training.evaluate import evaluate_pairs
from vlcore.training.train import SGDConfig, train_model

BASE = {"pairs": 6, "pay_for_similarity": False, "syn_steps": 2, "batch_syn": 2, "checkpoint_every": 0,
        "max_start_epoch": 1, "lr_images": 1.0, "lr_text": 1.0, "lr_lr": 1e-3, "lr_similarity": 0.1}
PHASED = {**BASE, "phases": "3,3", "phase_starts": "0-1,1-2", "phase_shortcut": "2,3", "phase_iterations": "2,2",
          "iterations": 4}


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return tiny_buffer(tmp_path_factory.mktemp("buf") / "buffer", epochs=3)


class Traced(PTMST):
    """Records the initial learned tensors, each accepted update's raw tensors and each plan (tests
    drive the steps through a subclass)."""

    name = "ptm-st-traced"
    trace: dict = {}

    def init_synthetic(self, ctx, state):
        super().init_synthetic(ctx, state)
        Traced.trace = {"init": {k: v.detach().clone() for k, v in state.learned.items()}, "raw": [], "plans": []}

    def plan(self, state):
        p = super().plan(state)
        Traced.trace["plans"].append((p, str(state.runtime.buffer.path)))
        return p

    def check_state(self, state):
        raw = {k: v.detach().clone() for k, v in state.learned.items()}
        problem = super().check_state(state)
        if problem is None:
            Traced.trace["raw"].append(raw)
        return problem


def rows_of(t: dict, n=6) -> dict:
    return {k: v for k, v in t.items() if v.dim() >= 1 and v.shape[0] == n}


# ------------------------------------------------------------------------------ phases
def test_a_phased_set_records_its_phases_and_freezes_earlier_subsets(tiny, tmp_path):
    ps = distill(tiny, Traced(Traced.Config(**PHASED, ema_decay=0.5)), tmp_path / "a")
    tr = Traced.trace
    assert len(tr["raw"]) == 4
    phases = ps.meta["phases"]
    assert [p["pairs"] for p in phases] == [[0, 3], [3, 6]]
    assert [p["iterations"] for p in phases] == [[0, 2], [2, 4]]
    assert [p["start_epochs"] for p in phases] == [[0, 1], [1, 2]]
    assert [p["buffer"]["shortcut"] for p in phases] == [2, 3]
    for p, k in zip(phases, (2, 3)):
        where = Path(p["buffer"]["path"])
        assert where == (tmp_path / "a" / f"buffer-shortcut-{k}").resolve()
        index = json.loads((where / "index.json").read_text())
        assert index["shortcut"]["k"] == k
        assert p["buffer"]["experts"] == index["experts"]  # the derived files' checksums
    assert PairSet.load(tmp_path / "a").meta["phases"] == phases
    # each phase's plans: its own rows, start range and buffer
    for i, (plan, path) in enumerate(tr["plans"]):
        lo, hi = (0, 3) if i < 2 else (3, 6)
        assert all(bool(((b >= lo) & (b < hi)).all()) for b in plan.batches)
        assert plan.phase == (0 if i < 2 else 1)
        assert plan.start_epoch in ((0, 1) if i < 2 else (1, 2))
        assert path.endswith("buffer-shortcut-2" if i < 2 else "buffer-shortcut-3")
    init, end1 = rows_of(tr["init"]), rows_of(tr["raw"][1])
    for k in end1:
        # phase 1: the rows of phase 2 not yet touched; phase 2: phase 1's rows bitwise frozen
        assert torch.equal(end1[k][3:], init[k][3:]), k
        for later in tr["raw"][2:]:
            assert torch.equal(later[k][:3], end1[k][:3]), k
    assert not torch.equal(tr["raw"][3]["images"][3:], init["images"][3:])
    assert not torch.equal(end1["images"][:3], init["images"][:3])


def test_phase_settings_are_checked_before_any_work(tiny, tmp_path):
    with pytest.raises(ConfigError, match="--phase-starts"):
        PTMST(PTMST.Config(**{**PHASED, "phase_starts": "0-1,1-2,2-3"}))
    with pytest.raises(ConfigError, match="beyond its shortcut"):
        PTMST(PTMST.Config(**{**PHASED, "phase_shortcut": "1,3"}))
    with pytest.raises(ConfigError, match="adds up to 5"):
        distill(tiny, PTMST(PTMST.Config(**{**PHASED, "phases": "3,2"})), tmp_path / "b")
    with pytest.raises(ConfigError):
        PTMST(PTMST.Config(**{**PHASED, "ema_decay": 1.0}))
    with pytest.raises(ConfigError, match="start-sampling"):
        PTMST(PTMST.Config(**{**PHASED, "start_sampling": "async"}))


# ------------------------------------------------------------------------------ EMA
def test_the_set_is_the_ema_of_the_learned_tensors(tiny, tmp_path):
    d = 0.9
    ps = distill(tiny, Traced(Traced.Config(**BASE, iterations=3, ema_decay=d, save_raw=True)), tmp_path / "e")
    tr = Traced.trace
    assert len(tr["raw"]) == 3
    ema = dict(tr["init"])
    for raw in tr["raw"]:
        ema = {k: d * ema[k] + (1 - d) * raw[k] for k in ema}
    assert torch.equal(ps.images, ema["images"]) and torch.equal(ps.text, ema["text"])
    for k, v in ps.extra.items():
        assert torch.equal(v, ema[k]), k
    assert ps.lr_img == pytest.approx(float(ema["log_lr_img"].exp()), rel=1e-6)
    assert not torch.equal(ps.images, tr["raw"][-1]["images"])
    raw = PairSet.load(tmp_path / "e" / "raw")
    assert torch.equal(raw.images, tr["raw"][-1]["images"]) and raw.meta["ema"]["averaged"] is False
    assert ps.meta["ema"]["decay"] == d and ps.meta["ema"]["averaged"] is True


# ------------------------------------------------------------------------------ contract and resume
def test_ptm_st_passes_the_distiller_contract_phased_with_a_resume_mid_phase():
    # the contract's buffer holds epochs 0..2; its run of 2 iterations, resumed to 3, stops mid phase 2
    C.check_distiller(PTMST, {**BASE, "phases": "3,3", "phase_starts": "0-1,1-1", "phase_shortcut": "2,2",
                              "phase_iterations": "1,2", "iterations": 3})


@pytest.mark.parametrize("stop", [1, 3])  # mid phase 1, mid phase 2
def test_a_resume_mid_phase_is_bitwise_exact(tiny, tmp_path, stop):
    cfg = {**PHASED, "checkpoint_every": 1}
    full = distill(tiny, PTMST(PTMST.Config(**cfg)), tmp_path / "full")
    distill(tiny, PTMST(PTMST.Config(**{**cfg, "iterations": stop})), tmp_path / "cut")
    resumed = distill(tiny, PTMST(PTMST.Config(**cfg)), tmp_path / "cut", resume=True)
    assert torch.equal(full.images, resumed.images) and torch.equal(full.text, resumed.text)
    assert all(torch.equal(full.extra[k], resumed.extra[k]) for k in full.extra)
    assert full.lr_img == resumed.lr_img and full.meta["phases"][1]["pairs"] == resumed.meta["phases"][1]["pairs"]


# ------------------------------------------------------------------------------ evaluation
def test_phased_training_goes_subset_by_subset_and_differs_from_the_union():
    host = contract_host()
    data = tiny_pairs(8, 1).select(torch.arange(8))
    data.similarity = torch.eye(8)
    cfg = SGDConfig(epochs=2, batch_size=4)
    seen = []
    m1 = build_model(TINY_SPEC, data.text.shape[1], seed=0, host=host)
    train_phased(m1, data, [(0, 4), (4, 8)], cfg, seed=0, lr_img=0.05, lr_txt=0.05,
                 on_batch=lambda idx, i, t: seen.append(idx.clone()))
    order = torch.cat(seen).tolist()
    assert sorted(order[:len(order) // 2]) == sorted(list(range(4)) * 2)  # phase 1's pairs, both epochs, first
    assert sorted(order[len(order) // 2:]) == sorted(list(range(4, 8)) * 2)
    m2 = build_model(TINY_SPEC, data.text.shape[1], seed=0, host=host)
    train_model(m2, data, cfg, seed=0, lr_img=0.05, lr_txt=0.05)
    flat = lambda m: torch.cat([p.detach().reshape(-1) for p in m.trainable_named().values()])  # noqa: E731
    assert not torch.equal(flat(m1), flat(m2))
    m3 = build_model(TINY_SPEC, data.text.shape[1], seed=0, host=host)
    train_phased(m3, data, [(0, 8)], cfg, seed=0, lr_img=0.05, lr_txt=0.05)  # one phase: the union, exactly
    assert torch.equal(flat(m3), flat(m2))


def test_vl_eval_of_a_phased_set_trains_phase_by_phase_or_on_the_union(tiny, tmp_path):
    host, data, _ = tiny
    ps = distill(tiny, PTMST(PTMST.Config(**PHASED)), tmp_path / "p")
    with use_host(host):
        phased = evaluate_pairs(ps, data, TINY_SPEC, options={"seeds": 1, "epochs": 2}, host=host)
        union = evaluate_pairs(ps, data, TINY_SPEC, options={"seeds": 1, "epochs": 2, "phased": False}, host=host)
    assert phased["training"] == {"phased": [[0, 3], [3, 6]]} and union["training"] == "union"


# ------------------------------------------------------------------------------ end to end
def test_vl_distill_ptm_st_end_to_end(tmp_path):
    from vlcore.cli.main import cli

    out = tmp_path / "run"
    args = ["distill", "--distiller", "ptm-st", "--dataset", "embedded", "--dataset-option", "num_train=24",
            "--dataset-option", "num_dev=12", "--dataset-option", "image_size=32", "--encoder", "convnet",
            "--encoder-option", "width=8", "--image-size", "16", "--pairs", "6", "--no-pay-for-similarity",
            "--syn-steps", "2", "--batch-syn", "2", "--expert-epochs", "1", "--max-start-epoch", "1", "--no-eval",
            "--num-experts", "2", "--iterations", "4", "--phases", "3,3", "--phase-starts", "0-0,1-1",
            "--phase-shortcut", "2,2", "--seed", "0", "--out", str(out)]
    res = CliRunner().invoke(cli, args, catch_exceptions=False)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["method"] == "ptm-st" and [p["pairs"] for p in meta["phases"]] == [[0, 3], [3, 6]]
    assert (out / "buffer-shortcut-2" / "index.json").exists()
    res = CliRunner().invoke(cli, ["eval", str(out), "--eval-seeds", "1", "--eval-epochs", "1",
                                   "--eval-option", "phased=false", "--out", str(tmp_path / "ev")],
                             catch_exceptions=False)
    assert res.exit_code == 0, res.output
