"""torch.distributed under torchrun: 2 gloo ranks on the CPU, as a user launches them
(`torchrun --standalone --nproc-per-node 2 --no-python vl ...`), against one process."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from vlcore.testing.cli import run_vl, vl_command
from vlcore.testing.runs import TINY_DATA_ARGS as TINY
from vlcore.testing.runs import TINY_MODEL_ARGS as MODEL

EXPERTS = ["experts", *TINY, *MODEL, "--num-experts", "3", "--train-epochs", "2", "--batch-size", "16", "--seed", "3"]
DISTILL = ["distill", *TINY, "--pairs", "4", "--iterations", "3", "--syn-steps", "2", "--expert-epochs", "1",
           "--max-start-epoch", "1", "--no-eval", "--seed", "5"]
ONE_THREAD = {"OMP_NUM_THREADS": "1"}  # every process at the same thread count: bitwise-equal experts


def torchrun(*args, timeout: float = 240, wait: bool = True):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2", "--no-python",
           *vl_command(), *map(str, args)]
    env = {**os.environ, **ONE_THREAD}
    if not wait:
        return subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)


def ok(proc) -> subprocess.CompletedProcess:
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def experts_of(buf: Path) -> dict:
    return json.loads((buf / "index.json").read_text())["experts"]


def test_two_ranks_train_the_buffer_one_process_trains(tmp_path):
    run_vl(*EXPERTS, "--out", tmp_path / "one", env=ONE_THREAD)
    res = ok(torchrun(*EXPERTS, "--out", tmp_path / "two"))
    assert "rank 1 of 2" in res.stderr  # the experts were shared between the ranks
    one, two = experts_of(tmp_path / "one"), experts_of(tmp_path / "two")
    assert len(one) == 3 and one == two  # the same files, byte for byte (sha256 and size)
    assert (tmp_path / "two" / "config.toml").exists()


def test_two_ranks_distil_what_one_process_does_with_two_trajectories(tmp_path):
    run_vl(*EXPERTS, "--out", tmp_path / "buf", env=ONE_THREAD)
    args = [*DISTILL, "--buffer", tmp_path / "buf"]
    run_vl(*args, "--trajectories", "2", "--out", tmp_path / "one", env=ONE_THREAD)
    run_vl(*args, "--out", tmp_path / "single", env=ONE_THREAD)
    ok(torchrun(*args, "--out", tmp_path / "two"))
    one, two = load_file(tmp_path / "one" / "pairs.safetensors"), load_file(tmp_path / "two" / "pairs.safetensors")
    single = load_file(tmp_path / "single" / "pairs.safetensors")
    for k in ("images", "text"):
        scale = one[k].abs().max()
        assert torch.allclose(one[k], two[k], rtol=0, atol=1e-5 * float(scale)), k
    assert not torch.allclose(one["images"], single["images"])  # one trajectory per iteration is another run
    meta_two = json.loads((tmp_path / "two" / "meta.json").read_text())
    assert abs(meta_two["lr_img"] - json.loads((tmp_path / "one" / "meta.json").read_text())["lr_img"]) < 1e-5
    # rank 0 alone wrote: one log, no second record of any iteration
    lines = [json.loads(x) for x in (tmp_path / "two" / "log.jsonl").read_text().splitlines() if x.strip()]
    its = [x.get("step") for x in lines if "loss/total" in x]
    assert its == sorted(set(its)) and len(its) == 3


def _children(pid: int) -> list[int]:
    kids = []
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                stat = (d / "stat").read_text()
            except OSError:
                continue
            if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(d.name))
    return kids


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the ranks' processes in /proc")
def test_killing_one_rank_fails_the_run_and_resume_completes_the_buffer(tmp_path):
    slow = [*EXPERTS[:EXPERTS.index("--num-experts")], "--num-experts", "6", "--train-epochs", "12",
            "--batch-size", "16", "--seed", "3"]
    run_vl(*slow, "--out", tmp_path / "one", env=ONE_THREAD)
    proc = torchrun(*slow, "--out", tmp_path / "two", wait=False)
    deadline = time.time() + 180
    while not list((tmp_path / "two").glob("expert_*.safetensors")) and time.time() < deadline:
        time.sleep(0.1)
    ranks = _children(proc.pid)
    assert ranks, "torchrun started no rank"
    os.kill(ranks[-1], signal.SIGKILL)
    out, _ = proc.communicate(timeout=120)  # the other rank is stopped too: no hang
    assert proc.returncode != 0, out
    done = experts_of(tmp_path / "two")
    assert len(done) < 6, "the run finished before a rank was killed"
    ok(torchrun(*slow, "--out", tmp_path / "two", "--resume"))
    assert experts_of(tmp_path / "two") == experts_of(tmp_path / "one")


def test_a_failing_rank_fails_the_whole_run_with_its_error(tmp_path):
    run_vl(*EXPERTS, "--out", tmp_path / "buf", env=ONE_THREAD)
    f = tmp_path / "buf" / "expert_001.safetensors"
    f.write_bytes(f.read_bytes()[:-10])  # damaged: rank 0 refuses the buffer, rank 1 must not wait for ever
    t0 = time.time()
    res = torchrun(*EXPERTS, "--out", tmp_path / "buf", "--resume", timeout=180)
    assert res.returncode != 0
    text = res.stdout + res.stderr
    # the failing rank's own error, and the other rank's word on why it stops: whether it saw rank 0's
    # connection close or torchrun stopped it first (SIGTERM; the usual order on a loaded machine)
    assert "expert_001.safetensors" in text and "another rank of this run failed" in text
    assert "]: Traceback" not in text  # no rank dies with a traceback (torchrun's own report follows)
    assert time.time() - t0 < 150


def test_commands_of_one_process_refuse_to_run_as_ranks(tmp_path):
    res = run_vl("eval", "nothing-here", env={"WORLD_SIZE": "2", "RANK": "0"}, check=False)
    assert res.returncode != 0 and "runs in one process" in res.stderr and "Traceback" not in res.stderr
    res = run_vl(*EXPERTS, "--workers", "2", "--out", tmp_path / "b", env={"WORLD_SIZE": "2", "RANK": "0"},
                 check=False)
    assert res.returncode != 0 and "--workers" in res.stderr and not (tmp_path / "b").exists()


def test_vl_run_under_torchrun_runs_every_stage_once(tmp_path):
    from test_recipes import RECIPE

    recipe = tmp_path / "tiny.toml"
    recipe.write_text(RECIPE)
    res = ok(torchrun("run", recipe, "--out", tmp_path / "exp", "--json"))
    out = tmp_path / "exp"
    for stage in ("buffer", "distilled", "random", "eval-distilled", "eval-random"):
        assert json.loads((out / stage / ".vl-stage.json").read_text())["done"], stage
    assert res.stdout.count('"tr_r1"') == 2  # rank 0 alone reports (one JSON object of both eval stages)
    assert (out / "results.md").exists()
