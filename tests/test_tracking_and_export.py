"""Experiment tracking and shareable sets (issue 13): the three loggers write what they promise
(OUT/log.jsonl, TensorBoard event files read back with TensorBoard's own reader, wandb offline run
files), and `vl export --format hf` then `vl eval` of the export gives the numbers of the original."""
from __future__ import annotations

import glob
import json
import struct
from pathlib import Path

import pytest

from vlcore.testing.cli import invoke_vl as vl

TINY = ["--dataset", "embedded", "--dataset-option", "num_train=24", "--dataset-option", "num_dev=12",
        "--encoder", "convnet", "--encoder-option", "width=8", "--image-size", "16"]
SCALARS = {"loss/total", "loss/image", "loss/text", "step_size/image", "step_size/text"}
DEV = {"dev/tr_r1", "dev/ir_r1", "dev/rsum"}




@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """One tiny distillation logged to all three loggers (wandb offline: local files only)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("WANDB_MODE", "offline")
    mp.setenv("WANDB_SILENT", "true")
    out = tmp_path_factory.mktemp("tracked") / "ps"
    vl("distill", *TINY, "--pairs", 4, "--iterations", 3, "--syn-steps", 2, "--max-start-epoch", 1,
       "--num-experts", 1, "--eval-every", 2, "--eval-epochs", 1, "--log", "tensorboard,wandb",
       "--log-option", "wandb.project=vlcore-test", "--out", out)
    mp.undo()
    return out


def test_jsonl_is_always_written(tracked):
    records = [json.loads(line) for line in (tracked / "log.jsonl").read_text().splitlines()]
    assert records[0]["event"] == "start" and records[0]["config"]["method"] == "bitraj"
    steps = [r for r in records if "loss/total" in r]
    assert [r["step"] for r in steps] == [1, 2, 3] and all(SCALARS <= set(r) for r in steps)
    assert [r["step"] for r in records if "dev/rsum" in r] == [2, 3]
    assert any(r.get("image") == "grid" for r in records) and records[-1]["event"] == "finish"


def test_tensorboard_events_read_back_with_its_own_reader(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    acc = EventAccumulator(str(tracked / "tensorboard"), size_guidance={"scalars": 0, "images": 0})
    acc.Reload()
    tags = acc.Tags()
    assert SCALARS | DEV <= set(tags["scalars"])
    assert [e.step for e in acc.Scalars("loss/total")] == [1, 2, 3]
    assert [e.step for e in acc.Scalars("dev/rsum")] == [2, 3]
    log = [json.loads(line) for line in (tracked / "log.jsonl").read_text().splitlines()]
    lr = [r["step_size/image"] for r in log if "step_size/image" in r]
    assert [e.value for e in acc.Scalars("step_size/image")] == pytest.approx(lr)
    assert "grid" in tags["images"] and acc.Images("grid")[0].width > 100


def wandb_records(run_file: Path) -> list:
    """The records of a wandb run file, read with wandb's own protobuf schema (the file is a
    LevelDB-style log: 7-byte header, then 32 KiB blocks of checksummed chunks)."""
    from wandb.proto import wandb_internal_pb2 as pb

    data, block, pos, chunks, out = run_file.read_bytes(), 32768, 7, b"", []
    while pos + 7 <= len(data):
        left = block - pos % block
        if left < 7:
            pos += left
            continue
        _, n, kind = struct.unpack("<IHB", data[pos:pos + 7])
        pos += 7
        if kind == 0 and n == 0:
            pos += left - 7
            continue
        chunks += data[pos:pos + n]
        pos += n
        if kind in (1, 4):  # a full record, or the last chunk of one
            record = pb.Record()
            record.ParseFromString(chunks)
            out.append(record)
            chunks = b""
    return out


def test_wandb_offline_run_files(tracked):
    (run_file,) = glob.glob(str(tracked / "wandb" / "offline-run-*" / "run-*.wandb"))
    records = wandb_records(Path(run_file))
    run = next(r.run for r in records if r.WhichOneof("record_type") == "run")
    assert run.display_name == "ps" and run.project == "vlcore-test"
    config = {i.key: json.loads(i.value_json) for i in run.config.update}
    assert config["method"] == "bitraj" and config["config"]["pairs"] == 4
    history = [{(i.key or "/".join(i.nested_key)): json.loads(i.value_json) for i in r.history.item}
               for r in records if r.WhichOneof("record_type") == "history"]
    steps = [h for h in history if "loss/total" in h]
    assert [h["_step"] for h in steps] == [1, 2, 3] and all(SCALARS <= set(h) for h in steps)
    assert [h["_step"] for h in history if "dev/rsum" in h] == [2, 3]
    assert [h["grid/_type"] for h in history if "grid/_type" in h] == ["image-file"]
    assert glob.glob(str(Path(run_file).parent / "files" / "media" / "images" / "grid_*.png"))


def test_an_unknown_logger_fails_before_any_work(tmp_path):
    res = vl("distill", *TINY, "--log", "tensorbord", "--out", tmp_path / "x", ok=False)
    assert res.exit_code != 0 and "Did you mean 'tensorboard'" in res.output and not (tmp_path / "x").exists()


# ------------------------------------------------------------------------------ export
def test_export_then_eval_gives_the_same_numbers(tracked, tmp_path):
    import datasets

    ev = ["--eval-seeds", 1, "--eval-epochs", 2, "--json"]
    original = json.loads(vl("eval", tracked, *ev).stdout.strip().splitlines()[-1])
    out = tmp_path / "export"
    vl("export", tracked, "--format", "hf", out)
    ds = datasets.load_from_disk(str(out))
    assert len(ds) == 4 and {"image", "pixels", "text_embedding", "caption"} <= set(ds.column_names)
    meta = json.loads((out / "vlcore.json").read_text())
    assert meta["method"] == "bitraj" and meta["config"]["pairs"] == 4 and meta["lr_img"] > 0
    card = (out / "README.md").read_text()
    for text in ("bitraj", "`convnet`", "`embedded`", "MIT", "lr_img=", "| dev |", "vl eval"):
        assert text in card, text
    exported = json.loads(vl("eval", out, *ev, "--out", tmp_path / "ev").stdout.strip().splitlines()[-1])
    assert exported == original
    res = vl("export", tracked, out, ok=False)
    assert res.exit_code != 0 and "--overwrite" in res.output
