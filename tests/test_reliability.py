"""Nothing lost, nothing executed: checkpoints that cannot run code, owned and locked output folders,
Ctrl-C / SIGTERM that checkpoint and resume to the uninterrupted result, updates rolled back when
they leave the documented bounds, buffers checked against their checksums, reproducible files.
Tests steer the recipe by subclassing it (overriding a step), as a method would."""
from __future__ import annotations

import ast
import json
import math
import os
import pickle
import shutil
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

from vlcore.artifacts.checkpoint import read_state
from vlcore.artifacts.io import RECORD_NAME, atomic_path
from vlcore.artifacts.outdir import OutputFolder
from vlcore.components import DistillContext
from vlcore.core.errors import BusyError, DataError, OutputError
from vlcore.data.checks import PIXEL_LIMIT
from vlcore.data.pairset import PairSet
from vlcore.distill.contract import PeriodicEval, RunState, StepResult
from vlcore.distill.recipe import NonFiniteError, run
from vlcore.plugins.distillers.bitraj import BiTrajectory
from vlcore.testing.cli import invoke_vl as vl, vl_command
from vlcore.testing.runs import (
    CONVNET_SPEC as SPEC, DISTILL_STAGE, EXPERTS_STAGE, FAST_DISTILL_ARGS as FAST, RANDOM_STAGE,
    TINY_DATA_ARGS as TINY, TINY_MODEL_ARGS as MODEL, cli_buffer as make_cli_buffer, embedded_buffer,
    interrupted, tiny_recipe
)
from vlcore.training.buffer import Buffer
from vlcore.training.experts import ExpertConfig, train_experts

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def buffer(tmp_path_factory, data):
    return embedded_buffer(SPEC, data[0], tmp_path_factory.mktemp("buf") / "buffer")


@pytest.fixture(scope="module")
def cli_buffer(tmp_path_factory):
    return make_cli_buffer(tmp_path_factory.mktemp("clibuf") / "buf")


def config(**opts):
    base = dict(pairs=8, iterations=6, syn_steps=3, expert_epochs=1, max_start_epoch=2, checkpoint_every=100,
                lr_images=10.0, lr_text=10.0)
    return BiTrajectory.Config(**{**base, **opts})


def ctx(buffer, data, out, host, **kw):
    return DistillContext(spec=SPEC, buffer=buffer, train=data[0], out=out, host=host, **kw)


def same_set(a: PairSet, b: PairSet) -> None:
    torch.testing.assert_close(a.images, b.images, rtol=0, atol=0)
    torch.testing.assert_close(a.text, b.text, rtol=0, atol=0)
    assert a.lr_img == b.lr_img and a.lr_txt == b.lr_txt


# ------------------------------------------------------------------------------ nothing executed
class Payload:
    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def test_a_malicious_checkpoint_runs_nothing(tmp_path):
    """A crafted pickle as checkpoint.safetensors and as checkpoint.pt, met by `vl distill --resume`
    and by `vl run` (as `vl demo` meets it): refused with a clear error, and no code runs."""
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe({"buffer": EXPERTS_STAGE, "distilled": DISTILL_STAGE}))
    out = tmp_path / "exp"
    vl("run", recipe, "--out", out)
    marker = tmp_path / "PWNED"
    stage = out / "distilled"
    (stage / "checkpoint.safetensors").write_bytes(pickle.dumps(Payload(marker)))
    (stage / "checkpoint.pt").write_bytes(pickle.dumps(Payload(marker)))
    record = json.loads((stage / ".vl-stage.json").read_text())
    (stage / ".vl-stage.json").write_text(json.dumps({**record, "done": False}))  # as if interrupted
    res = vl("run", recipe, "--out", out, ok=False)
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "checkpoint.safetensors is not a readable vlcore checkpoint" in res.output
    assert "nothing in it was run" in res.output and not marker.exists()
    (stage / "checkpoint.safetensors").unlink()  # only the old pickle left: refused as such, never loaded
    res = vl("distill", "--buffer", out / "buffer", *FAST, "--iterations", 2, "--out", stage, "--resume", ok=False)
    assert res.exit_code == 2 and "checkpoint.pt" in res.output and "never loads" in res.output
    assert not marker.exists()


def unsafe_loads(path: Path) -> list[str]:
    """Calls that could unpickle a file: torch.load without weights_only=True, pickle.load(s),
    numpy.load(allow_pickle=True)."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute):
            continue
        owner = node.func.value.id if isinstance(node.func.value, ast.Name) else ""
        kw = {k.arg: k.value for k in node.keywords}
        name = f"{owner}.{node.func.attr}"
        if name == "torch.load" and not (isinstance(kw.get("weights_only"), ast.Constant)
                                         and kw["weights_only"].value is True):
            found.append(f"{path}:{node.lineno} {name} without weights_only=True")
        if name in ("pickle.load", "pickle.loads", "pickle.Unpickler", "dill.load", "joblib.load"):
            found.append(f"{path}:{node.lineno} {name}")
        if name in ("np.load", "numpy.load") and isinstance(kw.get("allow_pickle"), ast.Constant) \
                and kw["allow_pickle"].value:
            found.append(f"{path}:{node.lineno} {name}(allow_pickle=True)")
    return found


def test_nothing_loads_a_pickle():
    files = [p for d in ("vlcore", "plugins", "cli", "examples") for p in (ROOT / d).rglob("*.py")
             if "testing" not in p.parts]
    assert len(files) > 30
    assert [f for p in files for f in unsafe_loads(p)] == []


# ------------------------------------------------------------------------------ output folders
def test_two_concurrent_runs_on_one_folder_and_sigterm_checkpoints(cli_buffer, tmp_path):
    """A second run into a folder another run is writing fails at once; SIGTERM makes the first write
    its checkpoint (no temporary file left) and exit 143; --resume continues from it."""
    out = tmp_path / "d"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    cmd = [*vl_command(), "distill", "--buffer", str(cli_buffer), *FAST, "--checkpoint-every", "5"]
    a = subprocess.Popen([*cmd, "--iterations", "100000", "--out", str(out)], env=env, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "checkpoint.safetensors").exists():  # A holds the lock from before its first write
            assert a.poll() is None, a.communicate()
            assert time.time() < deadline
            time.sleep(0.1)
        b = subprocess.run([*cmd, "--iterations", "3", "--out", str(out), "--resume"], env=env, capture_output=True,
                           text=True, timeout=300)
        assert b.returncode == 1 and "Another vl command is writing" in b.stderr and "Traceback" not in b.stderr
        assert a.poll() is None  # A was not disturbed
        a.send_signal(signal.SIGTERM)
        _, err = a.communicate(timeout=120)
    finally:
        if a.poll() is None:
            a.kill()
    assert a.returncode == 143 and "Terminated" in err and "--resume" in err and "Traceback" not in err
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    done = read_state(out / "checkpoint.safetensors")[0]["iteration"]
    assert done >= 5
    vl("distill", "--buffer", cli_buffer, *FAST, "--checkpoint-every", 5, "--iterations", done + 2, "--out", out,
       "--resume")
    assert PairSet.load(out).meta["iterations_done"] == done + 2


def test_a_lock_held_elsewhere_refuses_at_once(cli_buffer, tmp_path):
    out = tmp_path / "d"
    with OutputFolder(out, "distill"):
        res = vl("distill", "--buffer", cli_buffer, *FAST, "--iterations", 2, "--out", out, ok=False)
        assert res.exit_code == 1 and "Another vl command is writing" in res.output
        with pytest.raises(BusyError):
            OutputFolder(out, "coreset").__enter__()
    assert not out.exists()  # the claim created it, nothing was written: removed again


def test_overwrite_is_needed_and_replaces_the_whole_artifact(cli_buffer, tmp_path):
    out = tmp_path / "x"
    vl("coreset", "--method", "random", "--budget", 4, *TINY, *MODEL, "--out", out)
    vl("eval", out, "--seeds", 1, "--epochs", 1)
    assert (out / "eval-dev" / "metrics.json").exists()
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    res = vl("distill", "--buffer", cli_buffer, *FAST, "--iterations", 2, "--out", out, ok=False)
    assert res.exit_code == 2 and "holds a coreset" in res.output and "--overwrite" in res.output
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before
    res = vl("eval", out, "--seeds", 1, "--epochs", 1, ok=False)  # evaluation results are not replaced silently
    assert res.exit_code == 2 and "already holds evaluation results" in res.output
    vl("distill", "--buffer", cli_buffer, *FAST, "--iterations", 2, "--out", out, "--overwrite")
    assert PairSet.load(out).meta["kind"] == "distilled"
    assert not (out / "eval-dev").exists()  # nothing of the coreset is left beside the distillation


def test_temporary_files_of_interrupted_writes_are_removed(tmp_path):
    target = tmp_path / "f.json"
    target.write_text("old")
    with pytest.raises(KeyboardInterrupt):
        with atomic_path(target) as tmp:
            tmp.write_text("half")
            raise KeyboardInterrupt
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["f.json"]
    # left by a kill -9 (recorded before it was created): removed by the next command that claims the folder;
    # a file of someone else's that merely looks like one is kept
    buf = tmp_path / "buf"
    vl("experts", *TINY, *MODEL, "--num-experts", 1, "--epochs", 1, "--batch-size", 16, "--out", buf)
    with open(buf / RECORD_NAME, "a") as f:  # what atomic_path records before a kill -9
        f.write('{"temp": ".expert_001.safetensors.k9x2lq0a.tmp"}\n{"temp": ".expert_002.safetensors.a8c1ffe0.tmp"}\n')
    (buf / ".expert_001.safetensors.k9x2lq0a.tmp").write_bytes(b"")
    (buf / ".expert_002.safetensors.a8c1ffe0.tmp").write_bytes(os.urandom(4096))
    (buf / ".notes.part.tmp").write_text("mine")
    vl("experts", *TINY, *MODEL, "--num-experts", 2, "--epochs", 1, "--batch-size", 16, "--out", buf, "--resume")
    assert sorted(p.name for p in buf.iterdir() if p.name != RECORD_NAME) == [
        ".notes.part.tmp", "config.toml", "expert_000.safetensors", "expert_001.safetensors", "index.json"]
    assert (buf / ".notes.part.tmp").read_text() == "mine"


def test_interrupted_experts_leave_no_temp_file_and_resume_to_the_same_buffer(tmp_path):
    args = [*TINY, *MODEL, "--num-experts", "3", "--epochs", "20", "--batch-size", "16"]
    out = tmp_path / "buf"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([*vl_command(), "experts", *args, "--out", str(out)], env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 300
        while not (out / "expert_000.safetensors").exists():
            assert proc.poll() is None, proc.communicate()
            assert time.time() < deadline
            time.sleep(0.05)
        proc.send_signal(signal.SIGTERM)  # during expert 1
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 143 and "Traceback" not in err
    names = sorted(p.name for p in out.iterdir())
    assert not [n for n in names if n.endswith(".tmp")]
    index = json.loads((out / "index.json").read_text())
    assert sorted(index["experts"]) == [n for n in names if n.startswith("expert_")]  # recorded = on disk
    # the same thread count as the interrupted run: expert files are bitwise reproducible per thread count
    for extra in (["--out", str(out), "--resume"], ["--out", str(tmp_path / "whole")]):
        done = subprocess.run([*vl_command(), "experts", *args, *extra], env=env, capture_output=True, text=True)
        assert done.returncode == 0, done.stderr
    for i in range(3):
        name = f"expert_{i:03d}.safetensors"
        assert (out / name).read_bytes() == (tmp_path / "whole" / name).read_bytes(), name


def test_vl_run_resumes_every_kind_of_interrupted_stage(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(tiny_recipe({"buffer": {**EXPERTS_STAGE, "epochs": 1}, "random": RANDOM_STAGE,
                                   "eval": {"run": "eval", "pairset": "@random", "seeds": 1, "epochs": 1}}))
    out = tmp_path / "exp"
    vl("run", recipe, "--out", out)
    first = (out / "eval" / "metrics.json").read_bytes()
    for stage in ("buffer", "random", "eval"):  # as if each had been interrupted
        rec = out / stage / ".vl-stage.json"
        rec.write_text(json.dumps({**json.loads(rec.read_text()), "done": False}))
    again = vl("run", recipe, "--out", out)
    assert "reused" not in again.output and (out / "eval" / "metrics.json").read_bytes() == first


# ------------------------------------------------------------------------------ interrupts and resume
class InterruptedMidStep(BiTrajectory):
    """bitraj interrupted inside its 5th outer iteration, after it drew its expert, start epoch and
    minibatches: by Ctrl-C (KeyboardInterrupt) or by SIGTERM."""

    how = "sigint"

    def student_inputs(self, ctx, state, plan):
        self.calls = getattr(self, "calls", 0) + 1
        if self.calls == 5:
            if self.how == "sigterm":
                os.kill(os.getpid(), signal.SIGTERM)
                time.sleep(5)  # the handler raises during the sleep
            raise KeyboardInterrupt
        return super().student_inputs(ctx, state, plan)


@pytest.mark.parametrize("how", ["sigint", "sigterm"])
def test_ctrl_c_or_sigterm_then_resume_reaches_the_uninterrupted_result(buffer, data, tmp_path, host, how):
    handler = signal.getsignal(signal.SIGTERM)
    full = run(BiTrajectory(config()), ctx(buffer, data, tmp_path / "a", host))
    d = InterruptedMidStep(config())
    d.how = how
    with pytest.raises(KeyboardInterrupt) as err:
        run(d, ctx(buffer, data, tmp_path / "b", host))
    assert (how == "sigterm") == (type(err.value).__name__ == "Terminated")
    meta = read_state(tmp_path / "b" / "checkpoint.safetensors")[0]  # checkpoint_every is 100: written on the way out
    assert meta["iteration"] == 4
    assert signal.getsignal(signal.SIGTERM) is handler  # the handler was put back
    resumed = run(BiTrajectory(config()), ctx(buffer, data, tmp_path / "b", host, resume=True))
    same_set(resumed, full)
    assert resumed.meta["history"]["loss"] == full.meta["history"]["loss"]


def test_interrupted_dev_evaluation_is_repeated_on_resume(buffer, data, tmp_path, host):
    kw = dict(eval_data=data[1], eval_options=PeriodicEval(seeds=1, epochs=1))
    cfg = config(iterations=5, eval_every=2)
    full = run(BiTrajectory(cfg), ctx(buffer, data, tmp_path / "a", host, **kw))
    with pytest.raises(KeyboardInterrupt):
        run(interrupted(BiTrajectory, 2, "evaluate")(cfg), ctx(buffer, data, tmp_path / "b", host, **kw))
    meta = read_state(tmp_path / "b" / "checkpoint.safetensors")[0]
    assert meta["iteration"] == 4 and meta["eval_pending"]
    resumed = run(BiTrajectory(cfg), ctx(buffer, data, tmp_path / "b", host, resume=True, **kw))
    same_set(resumed, full)
    assert resumed.meta["history"]["eval"] == full.meta["history"]["eval"]
    assert [e["iteration"] for e in full.meta["history"]["eval"]] == [2, 4, 5]


# ------------------------------------------------------------------------------ guarded state
class Explodes(BiTrajectory):
    """bitraj whose 3rd outer iteration gives a finite but enormous image gradient."""

    def step(self, ctx, state):
        self.calls = getattr(self, "calls", 0) + 1
        result = super().step(ctx, state)
        if self.calls == 3:
            grads = dict(result.grads, images=torch.full_like(state.learned["images"], 1e9))
            return StepResult(result.loss, grads, result.metrics)
        return result


def test_an_exploded_update_is_rolled_back_and_the_last_good_set_saved(buffer, data, tmp_path, host):
    good = run(BiTrajectory(config(iterations=2)), ctx(buffer, data, tmp_path / "good", host))
    with pytest.raises(NonFiniteError, match="rolled back: synthetic pixels reached") as err:
        run(Explodes(config(iterations=3, max_failures=1)), ctx(buffer, data, tmp_path / "x", host))
    assert "--clamp-images" in str(err.value) and "last good set saved" in str(err.value)
    saved = PairSet.load(tmp_path / "x")
    same_set(saved, good)  # really the set before the exploded update
    assert float(saved.images.abs().max()) <= PIXEL_LIMIT
    _, tensors = read_state(tmp_path / "x" / "checkpoint.safetensors")
    torch.testing.assert_close(tensors["learned.images"], good.images, rtol=0, atol=0)
    # with failures to spare the run goes on: the rolled-back iteration is skipped, not recorded
    ps = run(Explodes(config(iterations=4)), ctx(buffer, data, tmp_path / "y", host))
    assert ps.meta["history"]["iteration"] == [1, 2, 4] and float(ps.images.abs().max()) <= PIXEL_LIMIT


def state_of(images, text, lr, lr0=0.1, **history):
    learned = {"images": images.requires_grad_(True), "text": text.requires_grad_(True),
               "log_lr_img": torch.tensor(math.log(lr)), "log_lr_txt": torch.tensor(math.log(lr0))}
    s = RunState(learned=learned, optimizers={}, generator=torch.Generator(), info={"lr0": lr0})
    s.history.update(history)
    return s


def test_check_state_enforces_the_documented_bounds():
    d = BiTrajectory(config())
    ok = state_of(torch.rand(4, 3, 8, 8) * 3 - 1, torch.randn(4, 16), 0.05)
    assert d.check_state(ok) is None  # pixels may leave [0, 1]
    assert "pixels" in d.check_state(state_of(torch.full((4, 3, 8, 8), 2e6), torch.randn(4, 16), 0.1))
    assert "non-finite" in d.check_state(state_of(torch.full((4, 3, 8, 8), float("nan")), torch.randn(4, 16), 0.1))
    assert "norm" in d.check_state(state_of(torch.rand(4, 3, 8, 8), torch.full((4, 16), 1e6), 0.1))
    assert "step size lr_img" in d.check_state(state_of(torch.rand(4, 3, 8, 8), torch.randn(4, 16), 1e-9))
    clamp = BiTrajectory(config(clamp_images=True))
    s = state_of(torch.full((4, 3, 8, 8), 5.0), torch.randn(4, 16), 0.1)
    assert clamp.check_state(s) is None and float(s.learned["images"].detach().max()) == 1.0


def test_a_stuck_loss_or_collapsed_step_sizes_are_reported(tmp_path):
    d = BiTrajectory(config())
    img, txt = torch.rand(4, 3, 8, 8), torch.randn(4, 16)
    stuck = state_of(img, txt, 1e-4, loss=[2.0] * 12, img=[1.0] * 12, txt=[1.0] * 12, iteration=list(range(1, 13)))
    warnings = d.diagnose(None, stuck)
    assert any("trivial value 2" in w for w in warnings) and any("collapsed" in w for w in warnings)
    assert d.diagnose(None, state_of(img, txt, 0.08, loss=[1.5, 1.4], img=[0.8, 0.7], txt=[0.7, 0.7])) == []
    # vl eval repeats what the distillation reported
    ps = PairSet(torch.rand(4, 3, 16, 16), torch.randn(4, 384), ["a", "b", "c", "d"],
                 meta={"kind": "distilled", "warnings": warnings, "dataset": {"name": "embedded"}})
    ps.save(tmp_path / "ps")
    res = vl("eval", tmp_path / "ps", *TINY[2:], *MODEL, "--seeds", 1, "--epochs", 1)
    assert "warning: the distillation that made" in res.output and "trivial value" in res.output


# ------------------------------------------------------------------------------ inputs that change
def test_a_changed_buffer_is_refused_and_a_copied_one_resumes(buffer, data, tmp_path, host):
    run(BiTrajectory(config(iterations=2)), ctx(buffer, data, tmp_path / "run", host))
    other = train_experts(SPEC, data[0], ExpertConfig(num_experts=2, epochs=3, batch_size=32, seed=5),
                          tmp_path / "other", dataset_info={"name": "embedded", "fingerprint": "x"})
    with pytest.raises(DataError, match="the expert buffer"):
        run(BiTrajectory(config(iterations=3)), ctx(other, data, tmp_path / "run", host, resume=True))
    # the run key holds the buffer's content, not its path: a copied run folder and buffer resume
    shutil.copytree(buffer.path, tmp_path / "copy" / "buffer")
    shutil.copytree(tmp_path / "run", tmp_path / "copy" / "run")
    ps = run(BiTrajectory(config(iterations=3)), ctx(Buffer(tmp_path / "copy" / "buffer"), data,
                                                        tmp_path / "copy" / "run", host, resume=True))
    assert ps.meta["iterations_done"] == 3


def test_expert_files_are_byte_reproducible(data, tmp_path):
    cfg = ExpertConfig(num_experts=2, epochs=2, batch_size=32)
    a = train_experts(SPEC, data[0], cfg, tmp_path / "a", dataset_info={"name": "embedded", "fingerprint": "x"})
    b = train_experts(SPEC, data[0], cfg, tmp_path / "b", dataset_info={"name": "embedded", "fingerprint": "x"})
    for fa, fb in zip(a.expert_files(), b.expert_files()):
        assert fa.read_bytes() == fb.read_bytes(), fa.name
    assert a.index["experts"] == b.index["experts"] and a.content_key() == b.content_key()
    assert set(a.index["experts"]["expert_000.safetensors"]) == {"sha256", "bytes"}


def test_an_occupied_folder_is_never_the_input(tmp_path):
    (tmp_path / "ps").mkdir()
    with pytest.raises(OutputError, match="an input of this command"):
        OutputFolder(tmp_path, "eval", inputs=[tmp_path / "ps"]).__enter__()


def test_an_exploded_model_scores_nothing():
    """NaN similarities (weights that exploded) count against the model: no perfect recall."""
    from vlcore.model.metrics import recall_from_ranks, retrieval_ranks

    img, txt = torch.full((4, 8), float("nan")), torch.full((8, 8), float("nan"))
    m = recall_from_ranks(*retrieval_ranks(img, txt, torch.arange(4).repeat_interleave(2)))
    assert m["tr_r1"] == 0 and m["ir_r1"] == 0


def test_a_folder_named_demo_does_not_hide_the_embedded_recipe(tmp_path, monkeypatch):
    from vlcore.artifacts.experiment import resolve_path

    monkeypatch.chdir(tmp_path)
    (tmp_path / "demo").mkdir()  # e.g. the --out of an earlier `vl run demo --out demo`
    assert resolve_path("demo").is_file() and resolve_path("demo").name == "demo.toml"
