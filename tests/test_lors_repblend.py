"""LoRS (learned low-rank similarity) and RepBlend (representation blending, symmetric heads): the
loss against a hand computation, the similarity learned, checkpointed, saved and used by `vl eval`,
storage paid for, blending switchable and resumable, and the exact unroll through S."""
from __future__ import annotations

import dataclasses
import math

import pytest
import torch
import torch.nn.functional as F

from vlcore.components import DistillContext
from vlcore.core.errors import IncompatibleError
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import build_model
from vlcore.distill import recipe
from vlcore.model.encoder import ModelSpec
from vlcore.model.losses import lowrank_similarity, similarity_bce_loss
from vlcore.plugins.distillers.lors import DIAG, LEFT, RIGHT, LoRS, similarity_floats
from vlcore.testing.runs import CONVNET_SPEC as FULL, embedded_buffer, interrupted
from vlcore.training.train import SGDConfig, train_model

SPEC = FULL  # the model of the `data` fixture (tests/conftest.py)
FROZEN_MLP = dataclasses.replace(FULL, trainable="frozen", image_head="mlp", embed_dim=32)


# ------------------------------------------------------------------------------ the math
def test_similarity_bce_matches_hand_computation():
    img = torch.tensor([[1.0, 0.0], [0.6, 0.8], [0.0, 1.0]], dtype=torch.float64)
    txt = torch.tensor([[2.0, 0.0], [0.0, 3.0], [1.0, 1.0]], dtype=torch.float64)
    s = torch.tensor([[0.9, 0.2, 0.0], [0.1, 0.7, 0.6], [0.0, 0.3, 1.0]], dtype=torch.float64)
    z = F.normalize(img, dim=1) @ F.normalize(txt, dim=1).t() / 0.07
    p = torch.sigmoid(z)
    per = -s * torch.log(p) - (1 - s) * torch.log(1 - p)
    pos = s > 0.5
    expected = 0.5 * (per[pos].mean() + per[~pos].mean())
    assert similarity_bce_loss(img, txt, s).item() == pytest.approx(expected.item(), rel=1e-9)


def test_lowrank_similarity_starts_as_the_identity():
    n, r = 5, 3
    S = lowrank_similarity(torch.ones(n), torch.randn(n, r), torch.zeros(n, r), alpha=3.0)
    assert torch.equal(S, torch.eye(n))
    S2 = lowrank_similarity(torch.ones(n), torch.ones(n, r), torch.ones(n, r), alpha=3.0)
    assert torch.allclose(S2, torch.eye(n) + 3.0)  # alpha / r * (r ones)


def test_training_on_a_similarity_uses_the_similarity_loss():
    from vlcore.testing.data import tiny_pairs

    data = tiny_pairs(8, 1).select(torch.arange(8))
    spec = ModelSpec(encoder="convnet", encoder_options={"width": 4, "depth": 2}, image_size=16, text_encoder="x")
    runs = []
    for similarity in (None, torch.eye(8), torch.full((8, 8), 0.5) + 0.5 * torch.eye(8)):
        data.similarity = similarity
        model = build_model(spec, 32, seed=0)
        train_model(model, data, SGDConfig(epochs=2, batch_size=4), seed=0)
        runs.append(torch.cat([p.detach().reshape(-1) for p in model.trainable_named().values()]))
    assert not torch.equal(runs[0], runs[1]) and not torch.equal(runs[1], runs[2])


# ------------------------------------------------------------------------------ distillation
@pytest.fixture(scope="module")
def full_buffer(tmp_path_factory, data):
    return embedded_buffer(FULL, data[0], tmp_path_factory.mktemp("lors") / "buffer")


@pytest.fixture(scope="module")
def mlp_buffer(tmp_path_factory, data):
    return embedded_buffer(FROZEN_MLP, data[0], tmp_path_factory.mktemp("repblend") / "buffer")


def options(**kw):
    base = dict(pairs=8, iterations=5, syn_steps=3, expert_epochs=1, max_start_epoch=2, batch_syn=4,
                checkpoint_every=2, lr_images=10.0, lr_text=10.0, rank=2, alpha=1.0, lr_similarity=1.0)
    base.update(kw)
    return base


def run(host, name, buf, data, out, spec=FULL, **kw):
    resume = kw.pop("resume", False)
    d = host.create("distiller", name, options(**kw))
    return recipe.run(d, DistillContext(spec=spec, buffer=buf, train=data[0], out=out, host=host, resume=resume))


def test_lors_learns_saves_and_pays_for_its_similarity(host, full_buffer, data, tmp_path):
    ps = run(host, "lors", full_buffer, data, tmp_path / "a")
    per_pair = 3 * 16 * 16 + data[0].text.shape[1]
    assert len(ps) == 7  # 8 pairs of storage: 7 pairs + S's factors fit, 8 pairs + S would not
    assert 7 * per_pair + similarity_floats(7, 2) <= 8 * per_pair < 8 * per_pair + similarity_floats(8, 2)
    loaded = PairSet.load(tmp_path / "a")
    assert loaded.meta["similarity"] == {"form": "lowrank", "rank": 2, "alpha": 1.0, "clamp": False}
    assert loaded.storage()["floats"] <= 8 * per_pair + 2
    S = loaded.similarity()
    raw = lowrank_similarity(loaded.extra[DIAG], loaded.extra[LEFT], loaded.extra[RIGHT], 1.0)
    assert S.shape == (7, 7) and not torch.allclose(raw, torch.eye(7))  # it was learned (R moved off zero)
    assert torch.allclose(S, raw)  # the raw entries, as published
    # vl eval (evaluate_pairs) trains on exactly these targets
    assert torch.equal(loaded.data().similarity, S)
    loaded.meta["similarity"]["clamp"] = True  # a set made with --clamp-similarity: clamped targets
    assert torch.allclose(loaded.similarity(), raw.clamp(0, 1))


def test_lors_resume_reaches_the_same_result(host, full_buffer, data, tmp_path):
    full = run(host, "lors", full_buffer, data, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        recipe.run(interrupted(LoRS, 4)(LoRS.Config(**options())), 
            DistillContext(spec=FULL, buffer=full_buffer, train=data[0], out=tmp_path / "b", host=host))
    resumed = run(host, "lors", full_buffer, data, tmp_path / "b", resume=True)
    for k in (DIAG, LEFT, RIGHT):
        assert torch.equal(resumed.extra[k], full.extra[k])
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.text, full.text)


def test_lors_without_similarity_is_the_ablation(host, full_buffer, data, tmp_path):
    ps = run(host, "lors", full_buffer, data, tmp_path / "a", learn_similarity=False)
    assert len(ps) == 8 and not ps.extra and ps.meta["similarity"] == {"form": "identity"}
    assert torch.equal(PairSet.load(tmp_path / "a").similarity(), torch.eye(8))


def test_the_exact_constant_memory_unroll_runs_lors(host, full_buffer, data, tmp_path):
    # two iterations: the same maths in another order agrees to ~1e-6 there on one thread or two; later
    # iterations amplify float32 rounding (lr 10 on pixels: 0.1 apart after four iterations on one thread)
    a = run(host, "lors", full_buffer, data, tmp_path / "func", iterations=2)
    b = run(host, "lors", full_buffer, data, tmp_path / "ck", unroll="checkpoint", iterations=2)
    assert torch.allclose(a.images, b.images, atol=1e-4) and torch.allclose(a.extra[RIGHT], b.extra[RIGHT], atol=1e-4)
    assert (a.meta["config"]["unroll"], b.meta["config"]["unroll"]) == ("func", "checkpoint")
    assert a.meta["history"]["loss"] == pytest.approx(b.meta["history"]["loss"], rel=1e-5)


def test_repblend_needs_frozen_mlp_experts(host, full_buffer, data, tmp_path):
    with pytest.raises(IncompatibleError, match="--trainable frozen"):
        run(host, "repblend", full_buffer, data, tmp_path / "x")


def test_repblend_blends_and_switches_off(host, mlp_buffer, data, tmp_path):
    blended = run(host, "repblend", mlp_buffer, data, tmp_path / "b", spec=FROZEN_MLP)
    assert blended.meta["config"]["blend"] is True and len(blended) == 7
    plain = run(host, "repblend", mlp_buffer, data, tmp_path / "p", spec=FROZEN_MLP, blend=False)
    lors = run(host, "lors", mlp_buffer, data, tmp_path / "l", spec=FROZEN_MLP)
    # without blending it is LoRS with symmetric heads, draw for draw
    assert torch.equal(plain.images, lors.images) and torch.equal(plain.extra[LEFT], lors.extra[LEFT])
    assert not torch.allclose(blended.images, plain.images)
    # the blending draws come from the run's generator: a resumed run reaches the same set
    again = run(host, "repblend", mlp_buffer, data, tmp_path / "b2", spec=FROZEN_MLP, iterations=3)
    again = run(host, "repblend", mlp_buffer, data, tmp_path / "b2", spec=FROZEN_MLP, resume=True)
    assert torch.equal(again.images, blended.images)


def test_blending_is_a_convex_mix_shared_by_both_modalities(host, mlp_buffer, data, tmp_path):
    from vlcore.distill.matching import Plan, StudentInputs
    from vlcore.plugins.distillers.repblend import RepBlend

    d = RepBlend(RepBlend.Config(**options()))
    state = d.setup(DistillContext(spec=FROZEN_MLP, buffer=mlp_buffer, train=data[0], out=tmp_path, host=host))
    idx = torch.tensor([0, 1, 2, 3])
    draw = d.plan_step(state, 0, idx)
    assert 0.0 <= draw["lam"] <= 1.0 and sorted(draw["perm"].tolist()) == [0, 1, 2, 3]
    x, t = torch.randn(8, 5), torch.randn(8, 3)
    bx, bt = d.student_batch(StudentInputs(x, t, torch.tensor(1.0), torch.tensor(1.0)), Plan(0, 0, [idx], [draw]), 0)
    lam, perm = draw["lam"], draw["perm"]
    assert torch.allclose(bx, lam * x[idx] + (1 - lam) * x[idx][perm])
    assert torch.allclose(bt, lam * t[idx] + (1 - lam) * t[idx][perm])
    assert math.isfinite(float(bx.sum()))


def test_clamped_similarity_targets_bound_the_loss_and_stop_the_drift():
    """An entry of S above 1 is an unbounded target (the BCE falls without limit as the logit
    grows); clamped, the loss is bounded below and such an entry gets no gradient."""
    img, txt = torch.randn(4, 8), torch.randn(4, 8)
    from vlcore.model.losses import clamp_targets

    raw = torch.eye(4) * 3.0
    raw.requires_grad_(True)
    clamped = clamp_targets(raw)
    aligned = img.clone()
    assert similarity_bce_loss(aligned, aligned, raw) < 0 <= similarity_bce_loss(aligned, aligned, clamped)
    (g,) = torch.autograd.grad(similarity_bce_loss(img, txt, clamped), raw)
    assert torch.all(g.diagonal() == 0) and torch.all(g[~torch.eye(4, dtype=torch.bool)] != 0)
    # on a bound (the identity S starts as) the gradient still flows: S can learn from its start
    start = torch.eye(4, requires_grad=True)
    (g0,) = torch.autograd.grad(similarity_bce_loss(img, txt, clamp_targets(start)), start)
    assert torch.all(g0.diagonal() != 0)
