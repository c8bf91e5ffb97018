"""The typed recipe contract: every distiller's Config is a RecipeConfig, the recipe supplies the
failure hint, a run keeps its state in the RunState (never on the distiller), the student reads a
StudentInputs value, and a distiller with no unroll at all (here a small test method, not a real
one: mean embeddings matched under a frozen teacher merged from two expert checkpoints) fits the
contract, runs from `vl distill`, checkpoints and resumes bitwise, with no special case in the loop."""
from __future__ import annotations

import dataclasses
from dataclasses import asdict, dataclass

import pytest
import torch
from torch.func import functional_call

from vlcore import hookimpl
from vlcore.artifacts.io import fingerprint
from vlcore.components import VOLATILE, DistillContext, Distiller, RecipeConfig
from vlcore.core.config import ranged
from vlcore.core.errors import ConfigError
from vlcore.core.registry import PluginHost
from vlcore.data.dataset import to_float
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import build_model
from vlcore.distill.contract import RunState, StepResult
from vlcore.distill.recipe import NonFiniteError
from vlcore.model.metrics import KEYS
from vlcore.testing import contracts as C
from vlcore.testing.cli import invoke_vl as vl
from vlcore.testing.data import TINY_SPEC
from vlcore.testing.host import use_host
from vlcore.testing.runs import (
    TINY_DATA_ARGS as TINY, TINY_MODEL_ARGS as MODEL, tiny_context as context, tiny_distill as distill
)
from vlcore.training.buffer import Buffer
from vlcore.training.experts import ExpertConfig, train_experts

pytest_plugins = ["vlcore.testing.fixtures"]

# ------------------------------------------------------------------------------ a distiller with no unroll
@dataclass
class TeacherRun:
    """What MeanMatch's setup builds for a run (``state.runtime``)."""

    model: torch.nn.Module
    buffer: Buffer


class MeanMatch(Distiller):
    """Test distiller: real and synthetic mean embeddings matched under a frozen merged expert (no unroll)."""

    name = "meanmatch-test"

    @dataclass(frozen=True)
    class Config(RecipeConfig):
        #: learning rate of the synthetic pixels and text embeddings
        lr_synthetic: float = ranged(0.5, 0, lo_open=True)
        #: real pairs per iteration
        batch_real: int = ranged(8, 2)

    def expert_defaults(self):
        return {"num_experts": 2, "epochs": 1}

    def failure_hint(self) -> str:
        return "Lower --lr-synthetic."

    def setup(self, ctx):
        text_dim = int(ctx.train.text.shape[1])
        model = build_model(ctx.spec, text_dim, seed=ctx.seed, host=ctx.host, device=ctx.device)
        ctx.buffer.check_compatible(ctx.spec, text_dim, model)
        record = {"method": self.name, "config": {k: v for k, v in asdict(self.config).items() if k not in VOLATILE},
                  "buffer": ctx.buffer.content_key(), "seed": ctx.seed, "data": ctx.dataset_info.get("fingerprint")}
        return RunState(learned={}, optimizers={}, generator=torch.Generator().manual_seed(ctx.seed),
                        run_key=fingerprint(record), run_record=record, runtime=TeacherRun(model.eval(), ctx.buffer))

    def init_synthetic(self, ctx, state):
        train, c = ctx.train, self.config
        idx = torch.randperm(train.num_pairs, generator=state.generator)[:c.pairs]
        state.add_learned("images", to_float(train.images[train.pair_image[idx]]), "synthetic", c.lr_synthetic, 0.5)
        state.add_learned("text", train.text[idx].float(), "synthetic", c.lr_synthetic, 0.5)

    def step(self, ctx, state):
        run, g, train, L = state.runtime, state.generator, ctx.train, state.learned
        a, b = (int(torch.randint(run.buffer.num_experts, (1,), generator=g)) for _ in range(2))
        epoch = int(torch.randint(run.buffer.epochs + 1, (1,), generator=g))
        pa, pb = (run.buffer.params(run.buffer.load(e), epoch) for e in (a, b))
        teacher = {n: (pa[n] + pb[n]) / 2 for n in pa}  # two expert checkpoints merged: a frozen teacher
        idx = torch.randperm(train.num_pairs, generator=g)[:self.config.batch_real]
        with torch.no_grad():
            real = functional_call(run.model, teacher, args=(), strict=False, kwargs={
                "images": to_float(train.images[train.pair_image[idx]]), "text": train.text[idx].float()})
        syn = functional_call(run.model, teacher, args=(), strict=False,
                              kwargs={"images": L["images"], "text": L["text"]})
        img, txt = ((s.mean(0) - r.mean(0)).pow(2).sum() for s, r in zip(syn, real))
        gi, gt = torch.autograd.grad(img + txt, [L["images"], L["text"]])
        img, txt = float(img.detach()), float(txt.detach())
        return StepResult(img + txt, {"images": gi, "text": gt}, {"img": img, "txt": txt})

    def snapshot(self, ctx, state):
        L, lr = state.learned, float(ctx.buffer.index["expert"]["lr"])
        meta = {"kind": "distilled", "method": self.name, "config": asdict(self.config), "spec": ctx.spec.as_dict(),
                "dataset": ctx.dataset_info, "seed": ctx.seed, "history": state.history,
                "iterations_done": state.iteration}
        n = L["images"].shape[0]
        return PairSet(images=L["images"].detach().cpu(), text=L["text"].detach().cpu(),
                       captions=[f"synthetic pair {i}" for i in range(n)], meta=meta, lr_img=lr, lr_txt=lr)


class MeanMatchPlugin:
    @staticmethod
    @hookimpl
    def register_distillers(register):
        register(MeanMatch)




# ------------------------------------------------------------------------------ the contract
def test_a_distiller_without_an_unroll_passes_the_contract():
    assert MeanMatch.needs_unroll is False and not any(f.name == "unroll" for f in dataclasses.fields(MeanMatch.Config))
    ps = C.check_distiller(MeanMatch, {"pairs": 4, "iterations": 3, "checkpoint_every": 2})
    assert len(ps) == 4 and ps.meta["method"] == "meanmatch-test"
    assert MeanMatch(MeanMatch.Config()).named_components() == []


def test_every_bundled_distiller_has_a_recipe_config_and_declares_its_unroll():
    host = PluginHost()
    for name in host.names("distiller"):
        cls = host.get("distiller", name)
        assert issubclass(cls.Config, RecipeConfig), name
        d = host.create("distiller", name, {})
        assert "--lr-images" in d.failure_hint()
        if name == "mdm":  # distribution matching: no unroll, no unroll backend
            assert cls.needs_unroll is False and d.named_components() == [], name
            continue
        assert cls.needs_unroll is True, name
        assert d.named_components() == [("unroll_backend", "func")], name


class NotARecipeConfig(MeanMatch):
    """Test: a Config that does not inherit RecipeConfig."""

    name = "no-recipe-config"
    Config = dataclasses.make_dataclass("Config", [("pairs", int, 4), ("iterations", int, 2)], frozen=True)


class UnrollFlagWithoutUnroll(MeanMatch):
    """Test: names an unroll backend it never uses."""

    name = "stray-unroll"

    @dataclass(frozen=True)
    class Config(MeanMatch.Config):
        #: unroll backend
        unroll: str = dataclasses.field(default="func", metadata={"kind": "unroll_backend"})


class KeepsStateOnSelf(MeanMatch):
    """Test: keeps its model on the instance."""

    name = "state-on-self"

    def setup(self, ctx):
        state = super().setup(ctx)
        self.model = state.runtime.model
        return state


@pytest.mark.parametrize("cls, message", [
    (NotARecipeConfig, "must subclass vlcore.components.RecipeConfig"),
    (UnrollFlagWithoutUnroll, "needs_unroll is False but Config fields ['unroll'] name an unroll backend"),
    (KeepsStateOnSelf, "distill() set ['model'] on the distiller"),
])
def test_contract_mistakes_are_caught(cls, message):
    with pytest.raises(C.ContractError) as err:
        C.check_distiller(cls, {"pairs": 4, "iterations": 2})
    assert message in str(err.value)


def test_a_distiller_refuses_a_config_the_loop_cannot_read():
    with pytest.raises(TypeError, match="RecipeConfig"):
        NotARecipeConfig()


# ------------------------------------------------------------------------------ the loop, no special case
class StuckMeanMatch(MeanMatch):
    """Test: every iteration gives a NaN loss."""

    name = "meanmatch-test"

    def step(self, ctx, state):
        result = super().step(ctx, state)
        return StepResult(float("nan"), result.grads, result.metrics)


def test_the_failure_hint_is_the_recipes(tiny_run, tmp_path):
    with pytest.raises(NonFiniteError) as err:
        distill(tiny_run, StuckMeanMatch(MeanMatch.Config(pairs=4, iterations=5, max_failures=2)), tmp_path / "ps")
    text = str(err.value)
    assert "2 iterations in a row failed" in text and text.endswith("Lower --lr-synthetic.")
    assert "--lr-images" not in text and "--syn-steps" not in text


class FakeEval(MeanMatch):
    """Test: a dev evaluation that returns more than the retrieval metrics."""

    name = "meanmatch-test"

    def evaluate(self, ctx, state):
        return {**{k: float(i) for i, k in enumerate(KEYS)}, "rsum": float(state.iteration), "seconds": 1.0}


def test_dev_evaluations_record_the_metrics_keys(tiny_run, tmp_path):
    d = FakeEval(MeanMatch.Config(pairs=4, iterations=4, eval_every=2, checkpoint_every=0))
    ps = distill(tiny_run, d, tmp_path / "ps", eval_data=tiny_run[1])
    evals = ps.meta["history"]["eval"]
    assert [e["iteration"] for e in evals] == [2, 4]
    assert all(set(e) == {"iteration", *KEYS, "rsum"} for e in evals)
    assert PairSet.load(tmp_path / "ps" / "best").meta["selected"]["iteration"] == 4


def test_trajectory_matching_keeps_no_run_state_on_the_distiller(tiny_run, tmp_path):
    from vlcore.distill.matching import MatchingRun, StudentInputs
    from vlcore.plugins.distillers.bitraj import BiTrajectory

    cfg = BiTrajectory.Config(pairs=4, iterations=2, syn_steps=2, max_start_epoch=1, checkpoint_every=0)
    d = BiTrajectory(cfg)
    first = distill(tiny_run, d, tmp_path / "a")
    assert vars(d) == {"config": cfg}
    again = distill(tiny_run, d, tmp_path / "b")  # the same instance runs again, from scratch
    assert torch.equal(first.images, again.images) and torch.equal(first.text, again.text)
    with use_host(tiny_run[0]):
        ctx = context(tiny_run, tmp_path / "c")
        state = d.setup(ctx)
        d.init_synthetic(ctx, state)
        inputs = d.student_inputs(ctx, state, d.plan(state))
    assert isinstance(state.runtime, MatchingRun) and state.runtime.n == 4
    assert isinstance(inputs, StudentInputs) and inputs.rows is None and inputs.extra == {}
    assert inputs.x is state.learned["images"] and inputs.text is state.learned["text"]
    assert list(inputs) == ["x", "text", "lr_img", "lr_txt"] and inputs["lr_img"] is inputs.lr_img


def test_lors_student_inputs_carry_the_similarity_in_extra(tiny_run, tmp_path):
    from vlcore.plugins.distillers.lors import DIAG, SIMILARITY, LoRS

    d = LoRS(LoRS.Config(pairs=4, iterations=1, syn_steps=2, max_start_epoch=1, batch_syn=2, rank=2,
                         pay_for_similarity=False))
    with use_host(tiny_run[0]):
        ctx = context(tiny_run, tmp_path)
        state = d.setup(ctx)
        d.init_synthetic(ctx, state)
        inputs = d.student_inputs(ctx, state, d.plan(state))
    assert set(inputs.extra) == {SIMILARITY} and DIAG in state.learned  # S replaces its factors
    assert torch.equal(inputs.extra[SIMILARITY].detach(), torch.eye(4)) and inputs[SIMILARITY].requires_grad


def test_frozen_backbone_inputs_map_pairs_to_feature_rows(tiny_run, tmp_path):
    from vlcore.distill.matching import Plan
    from vlcore.plugins.distillers.bitraj import BiTrajectory

    host, data, _ = tiny_run
    spec = dataclasses.replace(TINY_SPEC, trainable="frozen")
    with use_host(host):
        buf = train_experts(spec, data, ExpertConfig(num_experts=1, epochs=1, batch_size=8, lr=0.05),
                            tmp_path / "buffer", dataset_info={"name": "tiny", "fingerprint": data.key})
        d = BiTrajectory(BiTrajectory.Config(pairs=6, syn_steps=2, max_start_epoch=1, batch_syn=2))
        ctx = DistillContext(spec=spec, buffer=buf, train=data, out=tmp_path / "ps", host=host)
        state = d.setup(ctx)
        d.init_synthetic(ctx, state)
        plan = Plan(0, 0, [torch.tensor([4, 1]), torch.tensor([1, 2])])
        inputs = d.student_inputs(ctx, state, plan)
        x, _ = d.student_batch(inputs, plan, 0)
        want = state.runtime.model.image_features(state.learned["images"][torch.tensor([4, 1])])
    assert inputs.rows.tolist() == [-1, 0, 1, -1, 2, -1] and inputs.x.shape[0] == 3  # only the used images
    torch.testing.assert_close(x, want)


def unsquared(student, start, target, layout):
    """Test matching loss: each modality's unsquared distance over its expert displacement, summed."""
    parts = {m: (student[b] - target[b]).norm() / (start[b] - target[b]).norm().clamp_min(1e-12)
             for m, b in layout.blocks.items()}
    return sum(parts.values()), {m: float(v.detach()) for m, v in parts.items()}


def _async_starts():
    from vlcore.plugins.distillers.bitraj import BiTrajectory

    class AsyncStarts(BiTrajectory):
        """Test: each modality starts at an epoch of its own and is matched by unsquared distances (AMD's shape)."""

        name = "async-test"

        def plan(self, state):
            plan = super().plan(state)
            plan.starts = {"txt": int(torch.randint(2, (1,), generator=state.generator))}
            return plan

        def build_unroll(self, ctx, state, plan):
            u, inputs = super().build_unroll(ctx, state, plan)
            return dataclasses.replace(u, match=unsquared), inputs

    return AsyncStarts


def test_a_method_with_its_own_start_epochs_and_matching_loss_fits_the_recipe(tiny_run, tmp_path):
    from vlcore.distill.matching import Plan

    cls = _async_starts()
    C.check_distiller(cls, {"pairs": 4, "iterations": 2, "syn_steps": 2, "max_start_epoch": 1, "checkpoint_every": 0})
    d = cls(cls.Config(pairs=4, syn_steps=2, max_start_epoch=1))
    with use_host(tiny_run[0]):
        ctx = context(tiny_run, tmp_path)
        state = d.setup(ctx)
        d.init_synthetic(ctx, state)
        plan = Plan(0, 0, [torch.arange(4)] * 2, starts={"txt": 1})
        start, target = d.trajectory(state, plan, "cpu")
        u, _ = d.build_unroll(ctx, state, plan)
    ex, blocks = tiny_run[2].load(0), state.runtime.layout.blocks
    assert torch.equal(start[blocks["img"]], ex["img.0"]) and torch.equal(start[blocks["txt"]], ex["txt.1"])
    assert torch.equal(target[blocks["img"]], ex["img.1"]) and torch.equal(target[blocks["txt"]], ex["txt.2"])
    loss, parts = u.loss(start)  # the student at its start: 1 per modality, as for the squared loss
    assert parts == pytest.approx({"img": 1.0, "txt": 1.0}) and u.match is unsquared


def test_every_backend_matches_with_the_unrolls_own_loss():
    from vlcore.distill.unroll import FuncBackend, Unroll
    from vlcore.model.params import ParamLayout
    from vlcore.plugins.unroll_backends import CheckpointBackend

    w = torch.tensor([1.0, 2.0, 3.0], dtype=torch.float64, requires_grad=True)
    layout = ParamLayout({"a": torch.Size([2]), "t": torch.Size([1])}, {"a": "img", "t": "txt"})
    start, target = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)

    def step_loss(params, k):
        return ((params["a"] - w[:2]) ** 2).sum() + ((params["t"] - w[2]) ** 2).sum()

    lr = torch.tensor(0.1, dtype=torch.float64)
    u = Unroll(layout, start, target, {"img": lr, "txt": lr}, 2, step_loss, match=unsquared)
    full, ck = FuncBackend().run(u, [w]), CheckpointBackend().run(u, [w])
    theta = start.clone()
    for _ in range(2):
        theta = theta - 0.1 * 2 * (theta - w.detach())
    want, _ = unsquared(theta, start, target, layout)
    assert full.loss == pytest.approx(float(want), rel=1e-9) and ck.loss == pytest.approx(full.loss, rel=1e-9)
    torch.testing.assert_close(ck.grads[0], full.grads[0])


# ------------------------------------------------------------------------------ from the command line
def test_a_distiller_without_an_unroll_runs_checkpoints_and_resumes_from_vl_distill(register_plugin, tmp_path):
    register_plugin(MeanMatchPlugin, "meanmatch")
    help_text = vl("distill", "--distiller", "meanmatch-test", "--help").output
    assert "--lr-synthetic" in help_text and "--batch-real" in help_text and "--max-failures" in help_text
    assert "--unroll" not in help_text and "--syn-steps" not in help_text
    a, b = tmp_path / "a", tmp_path / "b"
    common = ["--distiller", "meanmatch-test", *TINY, *MODEL, "--pairs", 4, "--no-eval", "--checkpoint-every", 1]
    out = vl("distill", *common, "--iterations", 4, "--out", a).output  # Stage 1 first: its expert_defaults
    assert "Stage 1: 2 experts x 1 epochs" in out and "distilled 4 pairs" in out
    full = PairSet.load(a)
    assert full.meta["iterations_done"] == 4 and len(full.meta["history"]["loss"]) == 4
    vl("distill", *common, "--buffer", a / "buffer", "--iterations", 2, "--out", b)
    from vlcore.artifacts.checkpoint import read_state

    assert read_state(b / "checkpoint.safetensors")[0]["iteration"] == 2
    vl("distill", *common, "--buffer", a / "buffer", "--iterations", 4, "--out", b, "--resume")
    resumed = PairSet.load(b)
    assert resumed.meta["iterations_done"] == 4
    assert torch.equal(resumed.images, full.images) and torch.equal(resumed.text, full.text)
    assert resumed.meta["history"]["loss"] == full.meta["history"]["loss"]
    assert (b / "config.toml").exists() and "unroll" not in (b / "config.toml").read_text()
    # its own options are checked by their declared ranges before any work
    res = vl("distill", *common, "--lr-synthetic", 0, "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 2 and "--lr-synthetic" in res.output and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ LoRS / RepBlend ranges
@pytest.mark.parametrize("name, option, value, words", [
    ("lors", "rank", -1, ">= 0"),
    ("lors", "lr_similarity", -1.0, "[0, 1e+30]"),
    ("lors", "alpha", float("inf"), "finite"),
    ("repblend", "blend_beta", 0.0, "> 0"),
])
def test_lors_and_repblend_options_fail_when_built(name, option, value, words):
    with pytest.raises(ConfigError) as err:
        PluginHost().create("distiller", name, {option: value})
    assert option in str(err.value) and words in str(err.value)


def test_lors_and_repblend_ranges_fail_on_the_command_line_before_any_work(tmp_path):
    for args in (["--distiller", "lors", "--rank", "-1"], ["--distiller", "repblend", "--blend-beta", "0"],
                 ["--distiller", "lors", "--distiller-option", "lr_similarity=-2"]):
        res = vl("distill", *args, "--out", tmp_path / "x", ok=False)
        assert res.exit_code == 2, res.output
        assert not (tmp_path / "x").exists()
    text = " ".join(vl("distill", "--distiller", "lors", "--help").output.split())
    assert "[range: >= 0]" in text and "--lr-similarity" in text
    text = " ".join(vl("distill", "--distiller", "repblend", "--help").output.split())
    assert "[range: > 0]" in text


def test_the_recipe_config_declares_what_the_loop_reads():
    names = [f.name for f in dataclasses.fields(RecipeConfig)]
    assert names == ["pairs", "iterations", "checkpoint_every", "eval_every", "max_failures"]
    assert set(VOLATILE) == set(names) - {"pairs"}
    with pytest.raises(ConfigError, match="iterations"):
        PluginHost().create("distiller", "bitraj", {"iterations": 0})
