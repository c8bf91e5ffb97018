"""`vl experts --workers`: workers die with the command that started them and write nothing once it
is gone (issue 18, item 7); `vl experts --resume` adopts an expert file only if it was made with the
buffer's settings, and a distillation refuses a buffer holding one that was not (item 8)."""
from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from vlcore.core.registry import PluginHost
from vlcore.data.pipeline import build_dataset, build_text_encoder, split_data
from vlcore.model.encoder import ModelSpec
from vlcore.testing.cli import invoke_vl, vl_command
from vlcore.testing.runs import FAST_DISTILL_ARGS
from vlcore.testing.runs import TINY_DATA_ARGS as TINY
from vlcore.testing.runs import TINY_MODEL_ARGS as MODEL
from vlcore.training import experts as trajectories
from vlcore.training.experts import ExpertConfig, ParentGone, train_one_expert

BASE = [*TINY, *MODEL, "--train-epochs", "2", "--batch-size", "16"]
FAST = [*FAST_DISTILL_ARGS, "--iterations", "2"]
ONE_THREAD = {**os.environ, "OMP_NUM_THREADS": "1"}


def experts(*args, ok=True):
    return invoke_vl("experts", *args, ok=ok)


def snapshot(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def refused(res, *words):
    assert res.exit_code != 0, res.output
    assert "Traceback" not in res.output, res.output
    for w in words:
        assert w in res.output, (w, res.output)


# ------------------------------------------------------------------------------ processes
def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a live process; None once it is gone (a zombie counts as gone)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    state, ppid = text.rsplit(")", 1)[1].split()[:2]
    return None if state in ("Z", "X") else (state, int(ppid))


def _descendants(pid: int) -> dict[int, str]:
    """pid -> command line of every live descendant of ``pid``."""
    procs = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            st = _stat(int(d.name))
            if st is not None:
                procs[int(d.name)] = st[1]
    found, todo = {}, [pid]
    while todo:
        parent = todo.pop()
        for child, ppid in procs.items():
            if ppid == parent and child not in found:
                try:
                    found[child] = Path(f"/proc/{child}/cmdline").read_bytes().replace(b"\0", b" ").decode()
                except OSError:
                    continue
                todo.append(child)
    return found


def _expert_files(out: Path) -> list[str]:
    return sorted(p.name for p in out.glob("expert_*.safetensors"))


def _wait(cond, timeout: float, proc=None) -> bool:
    deadline = time.time() + timeout
    while time.time() < deadline:
        if cond():
            return True
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"vl experts ended early ({proc.returncode})")
        time.sleep(0.05)
    return False


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="finds the workers through /proc")
@pytest.mark.parametrize("sig, when", [("SIGKILL", "training"), ("SIGKILL", "starting"), ("SIGTERM", "training")])
def test_workers_die_with_the_command_and_write_nothing_after_it(tmp_path, sig, when):
    """kill -9 (or SIGTERM) of `vl experts --workers 2` while its workers train (or while they are
    still starting, before they could set their parent-death signal): within seconds no process it
    started is left, no expert file appears afterwards, no temporary file stays, and the buffer
    continues with --resume."""
    out = tmp_path / "buf"
    args = ["--dataset", "embedded", "--dataset-option", "num_train=48", "--dataset-option", "num_dev=12",
            "--dataset-option", "image_size=32", *MODEL, "--num-experts", "4", "--train-epochs", "60",
            "--batch-size", "16", "--workers", "2"]
    log = tmp_path / "stderr.txt"
    started: dict[int, str] = {}
    with open(log, "w") as err_file:  # a file, not a pipe: orphaned workers would hold a pipe open
        proc = subprocess.Popen([*vl_command(), "experts", *args, "--out", str(out)], env=ONE_THREAD,
                                stdout=subprocess.DEVNULL, stderr=err_file, text=True)
    try:
        def workers():
            return {p: c for p, c in _descendants(proc.pid).items() if "multiprocessing" in c}

        assert _wait(lambda: len(workers()) >= 2, 300, proc), "the workers did not start"
        if when == "training":  # experts 0 and 1 written (the workers finish them about together), and a
            # moment later both train the next two: no write is under way when the command is killed
            assert _wait(lambda: len(_expert_files(out)) >= 2, 300, proc), "no expert was written"
            time.sleep(1.0)
            assert len(_expert_files(out)) == 2 and proc.poll() is None
        started = _descendants(proc.pid)  # the workers and multiprocessing's resource tracker
        before = _expert_files(out)
        proc.send_signal(getattr(signal, sig))
        proc.wait(timeout=60)
        t0 = time.time()
        gone = _wait(lambda: all(_stat(p) is None for p in started), 20)
        left = {p: c for p, c in started.items() if _stat(p) is not None}
        assert gone, f"still running {time.time() - t0:.0f} s after the command was killed: {left}"
        print(f"{sig} while {when}: every process it started gone {time.time() - t0:.1f} s after it ended")
        time.sleep(1.0)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        for p in started:  # what this test started, should the assertion above have failed
            if _stat(p) is not None:
                os.kill(p, signal.SIGKILL)
    err = log.read_text()
    assert _expert_files(out) == before, "a worker wrote an expert file after the command was gone"
    assert not [p.name for p in out.iterdir() if p.name.endswith(".tmp")]
    if sig == "SIGTERM":
        assert proc.returncode == 143 and "Traceback" not in err, err
        index = json.loads((out / "index.json").read_text())
        assert sorted(index["experts"]) == _expert_files(out)  # recorded = on disk
    else:
        assert proc.returncode == -signal.SIGKILL
    if when == "training":
        from vlcore.artifacts import io

        record_name = getattr(io, "RECORD_NAME", None)
        if record_name and (out / record_name).is_file():  # every expert file a worker wrote is recorded as vl's
            text = (out / record_name).read_text()
            for name in _expert_files(out):
                assert json.dumps({"file": name}) in text, name
    if sig == "SIGKILL" and when == "training":  # and the buffer continues where it stopped
        done = subprocess.run([*vl_command(), "experts", *args, "--out", str(out), "--resume"], env=ONE_THREAD,
                              capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr[-3000:]
        assert _expert_files(out) == [f"expert_{i:03d}.safetensors" for i in range(4)]


_PROBE = """
import ctypes, os, sys
from vlcore.training import experts as t
assert t._set_parent_death_signal()
sig = ctypes.c_int()
ctypes.CDLL(None).prctl(2, ctypes.byref(sig), 0, 0, 0)  # PR_GET_PDEATHSIG
print("pdeathsig", sig.value, flush=True)
t._worker_init(os.getpid(), 1)  # a "parent" that is not this process's parent: as if it had died already
print("survived", flush=True)
"""

_WATCH = """
import os, threading, time
from vlcore.training import experts as t
threading.Thread(target=t._watch_parent, args=(os.getpid(), 0.05, 30), daemon=True).start()
time.sleep(60)
print("survived", flush=True)
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="prctl(PR_SET_PDEATHSIG) is Linux's")
def test_a_worker_sets_its_parent_death_signal_and_exits_if_the_parent_died_first():
    res = subprocess.run([sys.executable, "-c", _PROBE], env=ONE_THREAD, capture_output=True, text=True, timeout=120)
    assert f"pdeathsig {int(signal.SIGTERM)}" in res.stdout, res.stderr
    assert res.returncode == 143 and "survived" not in res.stdout, (res.returncode, res.stdout, res.stderr)


def test_a_worker_without_the_signal_stops_once_its_parent_is_gone():
    t0 = time.time()
    res = subprocess.run([sys.executable, "-c", _WATCH], env=ONE_THREAD, capture_output=True, text=True, timeout=120)
    assert res.returncode == -signal.SIGTERM and "survived" not in res.stdout, (res.returncode, res.stderr)
    assert time.time() - t0 < 50


@pytest.fixture(scope="module")
def tiny_data():
    host = PluginHost()
    spec = ModelSpec(encoder="convnet", encoder_options={"width": 8}, image_size=16, trainable="full")
    ds = build_dataset("embedded", options={"num_train": 8, "num_dev": 4, "image_size": 32}, host=host)
    return spec, split_data(ds.split("train"), spec, build_text_encoder(spec, host))


def test_a_worker_whose_parent_is_gone_writes_no_expert_file(tiny_data, tmp_path, monkeypatch):
    """The check right before the write: in a worker whose parent died (re-parented), the finished
    trajectory is not written, and its temporary file is removed."""
    spec, data = tiny_data
    monkeypatch.setattr(trajectories, "_PARENT", os.getpid())  # never this process's parent
    assert not trajectories.parent_alive()
    with pytest.raises(ParentGone):
        train_one_expert(spec, data, ExpertConfig(num_experts=1, epochs=1, batch_size=8), 0,
                         tmp_path / "expert_000.safetensors", None)
    assert list(tmp_path.iterdir()) == []
    monkeypatch.setattr(trajectories, "_PARENT", os.getppid())  # the parent is there: written
    train_one_expert(spec, data, ExpertConfig(num_experts=1, epochs=1, batch_size=8), 0,
                     tmp_path / "expert_000.safetensors", None)
    assert [p.name for p in tmp_path.iterdir()] == ["expert_000.safetensors"]


# ------------------------------------------------------------------------------ adopting expert files
@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """one: a 1-expert buffer (as if interrupted after expert 0); two: the same settings, 2 experts."""
    root = tmp_path_factory.mktemp("made")
    experts(*BASE, "--num-experts", 1, "--out", root / "one")
    experts(*BASE, "--num-experts", 2, "--out", root / "two")
    return root


FOREIGN = {
    "seed": ["--seed", 5],
    "epochs": ["--train-epochs", 3],
    "lr": ["--lr", 0.05],
    "batch": ["--batch-size", 8],
    "data": ["--dataset-option", "num_train=20"],
}


def _foreign(made: Path, key: str) -> Path:
    out = made / f"foreign-{key}"
    if not out.exists():
        args = [*BASE, "--num-experts", 2, *FOREIGN[key]]
        experts(*args, "--out", out)
    return out / "expert_001.safetensors"


@pytest.mark.parametrize("key", sorted(FOREIGN))
def test_resume_refuses_an_expert_file_of_another_buffer(made, tmp_path, key):
    """An expert_001 made by another `vl experts` run (other seed, epochs, lr, batch size, data)
    copied into an interrupted buffer: --resume refuses it naming the file and the fix, and changes
    nothing; moved away, the same command trains expert 1 itself, as an uninterrupted run does."""
    buf = tmp_path / "buf"
    shutil.copytree(made / "one", buf)
    shutil.copy(_foreign(made, key), buf / "expert_001.safetensors")
    before = snapshot(buf)
    res = experts(*BASE, "--num-experts", 2, "--out", buf, "--resume", ok=False)
    refused(res, "expert_001.safetensors", "is not an expert of the buffer", "Move", "--overwrite")
    assert snapshot(buf) == before
    (buf / "expert_001.safetensors").rename(tmp_path / "moved.safetensors")
    experts(*BASE, "--num-experts", 2, "--out", buf, "--resume")
    assert (buf / "expert_001.safetensors").read_bytes() == (made / "two" / "expert_001.safetensors").read_bytes()
    index = json.loads((buf / "index.json").read_text())
    assert index["experts"] == json.loads((made / "two" / "index.json").read_text())["experts"]


def _renamed(made, buf):  # expert 0's own file under expert 1's name
    shutil.copy(made / "one" / "expert_000.safetensors", buf / "expert_001.safetensors")


def _garbage(made, buf):
    (buf / "expert_001.safetensors").write_bytes(os.urandom(5000))


def _truncated(made, buf):
    data = (made / "two" / "expert_001.safetensors").read_bytes()
    (buf / "expert_001.safetensors").write_bytes(data[:len(data) // 2])


def _empty(made, buf):
    (buf / "expert_001.safetensors").write_bytes(b"")


def _no_metadata(made, buf):  # the right tensors, but nothing says what made them
    save_file(load_file(str(made / "two" / "expert_001.safetensors")), str(buf / "expert_001.safetensors"))


def _other_layout(made, buf):  # what a file of this buffer records, but tensors of another model
    meta = {"vlcore": json.dumps({"expert": 1, "seed": 1000, "epochs": 2}, sort_keys=True)}
    save_file({f"{m}.{e}": torch.zeros(7) for m in ("img", "txt") for e in range(3)},
              str(buf / "expert_001.safetensors"), metadata=meta)


def _odd_name(made, buf):
    shutil.copy(made / "two" / "expert_001.safetensors", buf / "expert_1.safetensors")


@pytest.mark.parametrize("make", [_renamed, _garbage, _truncated, _empty, _no_metadata, _other_layout, _odd_name],
                         ids=lambda f: f.__name__.strip("_"))
def test_resume_refuses_a_file_that_is_not_one_of_its_experts(made, tmp_path, make):
    buf = tmp_path / "buf"
    shutil.copytree(made / "one", buf)
    make(made, buf)
    name = sorted(set(os.listdir(buf)) - set(os.listdir(made / "one")))[0]
    before = snapshot(buf)
    res = experts(*BASE, "--num-experts", 2, "--out", buf, "--resume", ok=False)
    refused(res, name, "is not an expert of the buffer", "Move")
    assert snapshot(buf) == before


def test_an_older_vlcores_expert_file_is_adopted_when_it_fits(made, tmp_path):
    """A file whose metadata records only index, seed and epochs (before settings were recorded) is
    adopted when those and its tensors fit; with another seed it is refused."""
    buf = tmp_path / "buf"
    shutil.copytree(made / "one", buf)
    tensors = load_file(str(made / "two" / "expert_001.safetensors"))
    old = {"vlcore": json.dumps({"expert": 1, "seed": 1000, "epochs": 2}, sort_keys=True)}
    save_file(tensors, str(buf / "expert_001.safetensors"), metadata=old)
    experts(*BASE, "--num-experts", 2, "--out", buf, "--resume")
    assert sorted(json.loads((buf / "index.json").read_text())["experts"]) == [
        "expert_000.safetensors", "expert_001.safetensors"]
    buf2 = tmp_path / "buf2"
    shutil.copytree(made / "one", buf2)
    save_file(tensors, str(buf2 / "expert_001.safetensors"),
              metadata={"vlcore": json.dumps({"expert": 1, "seed": 1005, "epochs": 2}, sort_keys=True)})
    refused(experts(*BASE, "--num-experts", 2, "--out", buf2, "--resume", ok=False), "seed 1005", "Move")


def _listed(buf: Path, src: Path) -> None:
    """``src`` as expert_001 of ``buf``, recorded in index.json as an older vlcore's --resume did."""
    dst = buf / "expert_001.safetensors"
    shutil.copy(src, dst)
    index = json.loads((buf / "index.json").read_text())
    index["experts"]["expert_001.safetensors"] = trajectories.file_record(dst)
    (buf / "index.json").write_text(json.dumps(index, indent=1))


@pytest.mark.parametrize("key", ["seed", "epochs", "garbage"])
def test_a_buffer_that_lists_a_foreign_expert_is_refused_by_distill_and_resume(made, tmp_path, key):
    """A foreign (or damaged) file recorded in index.json with its checksum: `vl distill` refuses the
    buffer with a clear error (no traceback) naming the file, and so does `vl experts --resume`."""
    buf = tmp_path / "buf"
    shutil.copytree(made / "one", buf)
    if key == "garbage":
        (tmp_path / "g").write_bytes(os.urandom(4000))
        _listed(buf, tmp_path / "g")
    else:
        _listed(buf, _foreign(made, key))
    before = snapshot(buf)
    res = invoke_vl("distill", "--buffer", buf, *FAST, "--out", tmp_path / "d", ok=False)
    refused(res, "expert_001.safetensors", "Move it out of")
    assert res.exit_code == 1 and not (tmp_path / "d").exists()
    res = experts(*BASE, "--num-experts", 2, "--out", buf, "--resume", ok=False)
    refused(res, "expert_001.safetensors", "Move")
    assert snapshot(buf) == before


def test_buffer_load_refuses_tensors_that_do_not_fit(made, tmp_path):
    """Belt and braces: the tensors read by a distillation are checked against the layout as well."""
    from vlcore.core.errors import DataError

    buf = tmp_path / "buf"
    shutil.copytree(made / "one", buf)
    b = trajectories.Buffer(buf)
    b.index["expert"]["epochs"] = 5  # as if the file had fewer snapshots than the buffer says
    with pytest.raises(DataError, match="lacks"):
        b.load(0)
