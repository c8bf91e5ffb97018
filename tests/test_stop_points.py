"""Every interrupted vl command can be continued (``--resume``) or replaced (``--overwrite``).

A ``kill -9`` can stop a command between any two of its writes.  Each write of vlcore into an output
folder goes through its record (:class:`vlcore.artifacts.io.FileRecord`: a temporary file recorded, created,
the file recorded, renamed, the temporary file recorded gone), so these tests stop a real ``vl``
process with ``os._exit`` right before the N-th record entry, for stop points spread over the whole
run (each file's write), then check that the same command with ``--resume`` finishes to the result
of an uninterrupted run and leaves no file it did not record, and that ``--overwrite`` replaces it.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from vlcore.artifacts.io import TEMP_SUFFIX
from vlcore.artifacts.outdir import describe
from vlcore.testing.runs import EXPERTS_STAGE
from vlcore.testing.runs import FAST_DISTILL_ARGS as FAST
from vlcore.testing.runs import TINY_DATA_ARGS as TINY
from vlcore.testing.runs import TINY_MODEL_ARGS as MODEL
from vlcore.testing.runs import tiny_recipe


#: runs ``vl ARGS`` and dies (as kill -9 would: no cleanup) right before its N-th record entry (0: never);
#: every entry (of every output folder's record) is traced to the file TRACE
DIE = """
import os, sys
from vlcore.artifacts import io
n, trace, count, orig = int(sys.argv[1]), open(sys.argv[2], "w"), [0], io.FileRecord.add
def add(self, what, path):
    count[0] += 1
    if count[0] == n:
        os._exit(137)
    trace.write(what + "\\t" + str(path) + "\\n")
    trace.flush()
    return orig(self, what, path)
io.FileRecord.add = add
from vlcore.cli.main import main
main(sys.argv[3:])
"""


def vl_dying(n: int, *args, trace: Path | None = None) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", DIE, str(n), str(trace or os.devnull), *map(str, args)], env=env,
                          capture_output=True, text=True, timeout=600)


def ok(proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]


def stop_points(trace: Path, per_folder: bool = False) -> list[int]:
    """Where to stop a run whose record entries were traced: inside the write of each distinct file
    (its temporary file written, not yet renamed; with ``per_folder`` only the first of each
    folder), and the first and the last entry."""
    lines = [l.split("\t", 1) for l in trace.read_text().splitlines()]
    seen, points = set(), {1, len(lines)}
    for i, (what, path) in enumerate(lines, 1):
        key = (str(Path(path).parent), Path(path).name == ".vl-stage.json") if per_folder else path
        if what == "file" and key not in seen:
            seen.add(key)
            points.add(i)
    return sorted(points)


def clean(out: Path) -> None:
    """Nothing in ``out`` that vl did not record, and no temporary file left."""
    c = describe(out)
    assert c.foreign == [], c.foreign
    assert not [p for p in out.rglob(f"*{TEMP_SUFFIX}")], list(out.rglob(f"*{TEMP_SUFFIX}"))


def tensors(folder: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(folder / "pairs.safetensors"))


def same(a: dict, b: dict) -> bool:
    import torch

    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_short_form_distill_resumes_from_every_stop_point(tmp_path):
    """`vl distill` without --buffer (Stage 1 into OUT/buffer first): stopped anywhere, also while
    it writes OUT/buffer or before its first checkpoint, `--resume` finishes it to the same set."""
    args = ["distill", *TINY, *MODEL, *FAST, "--num-experts", 2, "--iterations", 3, "--seed", 0]
    ref, trace = tmp_path / "ref", tmp_path / "trace"
    ok(vl_dying(0, *args, "--out", ref, trace=trace))
    points = stop_points(trace)
    assert len(points) >= 10  # buffer index, two experts, log, checkpoint, the set, figures, config
    for n in points:
        out = tmp_path / f"stop{n}"
        died = vl_dying(n, *args, "--out", out)
        assert died.returncode == 137, died.stderr[-2000:]
        if n in points[1:3]:  # (stopped before its first write, it left only empty folders: nothing)
            refused = vl_dying(0, *args, "--out", out)  # without a flag: refused, naming the way on
            assert refused.returncode == 2 and "--resume" in refused.stderr, refused.stderr[-2000:]
        ok(vl_dying(0, *args, "--out", out, "--resume"))
        assert same(tensors(out), tensors(ref)), f"stop point {n}"
        clean(out)
    out = tmp_path / f"stop{points[len(points) // 2]}"
    ok(vl_dying(0, *args, "--iterations", 2, "--out", out, "--overwrite"))  # or replaced
    assert json.loads((out / "meta.json").read_text())["iterations_done"] == 2
    clean(out)


def test_distill_with_a_buffer_and_experts_resume_from_every_stop_point(tmp_path):
    experts = ["experts", *TINY, *MODEL, "--num-experts", 2, "--epochs", 1, "--batch-size", 16, "--seed", 0]
    buf, trace = tmp_path / "buf", tmp_path / "trace"
    ok(vl_dying(0, *experts, "--out", buf, trace=trace))
    for n in stop_points(trace, per_folder=True):  # (every stop point of Stage 1: the short form above)
        out = tmp_path / f"buf{n}"
        assert vl_dying(n, *experts, "--out", out).returncode == 137
        ok(vl_dying(0, *experts, "--out", out, "--resume"))
        assert {p.name: p.read_bytes() for p in out.glob("expert_*")} == \
            {p.name: p.read_bytes() for p in buf.glob("expert_*")}, f"stop point {n}"
        clean(out)
    args = ["distill", "--buffer", buf, *FAST, "--iterations", 3, "--seed", 0]
    ref = tmp_path / "ref"
    ok(vl_dying(0, *args, "--out", ref, trace=trace))
    lines = trace.read_text().splitlines()
    first_checkpoint = next(i for i, l in enumerate(lines, 1) if l.startswith("file") and "checkpoint" in l)
    for n in (1, 2, first_checkpoint, len(lines)):  # at 2 only log.jsonl is there
        out = tmp_path / f"stop{n}"
        assert vl_dying(n, *args, "--out", out).returncode == 137
        ok(vl_dying(0, *args, "--out", out, "--resume"))
        assert same(tensors(out), tensors(ref)), f"stop point {n}"
        clean(out)
        if n == 2:
            ok(vl_dying(0, *args, "--out", out, "--overwrite"))
            assert same(tensors(out), tensors(ref))


RECIPE = tiny_recipe({"buffer": {**EXPERTS_STAGE, "num-experts": 2, "epochs": 1},
                      "cs": {"run": "coreset", "method": "random", "pairs": 4, "buffer": "@buffer"},
                      "ev": {"run": "eval", "pairset": "@cs", "eval-seeds": 1, "eval-epochs": 1}},
                     "stop points", seed=0)


def test_vl_run_continues_from_every_stop_point(tmp_path):
    recipe = tmp_path / "r.toml"
    recipe.write_text(RECIPE)
    ref, trace = tmp_path / "ref", tmp_path / "trace"
    ok(vl_dying(0, "run", recipe, "--out", ref, trace=trace))
    want = json.loads((ref / "results.json").read_text())
    for n in stop_points(trace, per_folder=True):  # each stage's record and first file, the experiment's results
        out = tmp_path / f"stop{n}"
        assert vl_dying(n, "run", recipe, "--out", out).returncode == 137
        ok(vl_dying(0, "run", recipe, "--out", out))  # the same command continues it
        assert json.loads((out / "results.json").read_text()) == want, f"stop point {n}"
        clean(out)


@pytest.mark.parametrize("command", ["coreset", "train", "eval", "export"])
def test_interrupted_commands_without_resume_are_replaced_with_overwrite(command, tmp_path):
    cs = tmp_path / "cs"
    base = ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL]
    if command == "coreset":
        args = base
    else:
        ok(vl_dying(0, *base, "--out", cs))
        args = {"train": ["train", *TINY, *MODEL, "--epochs", 1],
                "eval": ["eval", cs, "--eval-seeds", 1, "--eval-epochs", 1],
                "export": ["export", cs]}[command]
    def where(folder):
        return [folder] if command == "export" else ["--out", folder]

    trace = tmp_path / "trace"
    ok(vl_dying(0, *args, *where(tmp_path / "ref"), trace=trace))
    total = len(trace.read_text().splitlines())
    for n in sorted({2, total // 2}):
        out = tmp_path / f"stop{n}"
        assert vl_dying(n, *args, *where(out)).returncode == 137
        ok(vl_dying(0, *args, *where(out), "--overwrite"))
        clean(out)
