"""Bad inputs through the CLI, as a careful user meets them: hand-damaged files, extreme or negative
settings, unusable or occupied output folders.  Each case asserts a non-zero exit (2 for usage
errors), no traceback, a message naming the file or option and the fix, and that every file that
existed before is byte-identical afterwards (and nothing new was left behind)."""
from __future__ import annotations

import hashlib
import json
import os
import pickle
import shutil
from pathlib import Path

import pytest

from vlcore.testing.cli import invoke_vl, refused_cleanly
from vlcore.testing.runs import FAST_DISTILL_ARGS
from vlcore.testing.runs import TINY_DATA_ARGS as TINY
from vlcore.testing.runs import TINY_MODEL_ARGS as MODEL

FAST = [*FAST_DISTILL_ARGS, "--iterations", "2", "--checkpoint-every", "1"]
MARKER = "PWNED"


def vl(*args):
    return invoke_vl(*args, ok=False)


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A buffer, a finished distillation (with its checkpoint) and a coreset, made once."""
    root = tmp_path_factory.mktemp("made")
    for args in (["experts", *TINY, *MODEL, "--num-experts", 2, "--epochs", 2, "--batch-size", 16,
                  "--out", root / "buf"],
                 ["distill", "--buffer", root / "buf", *FAST, "--out", root / "dist"],
                 ["coreset", "--method", "random", "--budget", 4, *TINY, *MODEL, "--out", root / "core"]):
        res = vl(*args)
        assert res.exit_code == 0, res.output
    return root


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def copy(made: Path, ws: Path, *names: str) -> None:
    for n in names:
        shutil.copytree(made / n, ws / n)


def truncate(path: Path) -> None:
    data = path.read_bytes()
    path.write_bytes(data[:len(data) // 2])


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-3] ^= 0xFF  # same size, other content
    path.write_bytes(bytes(data))


def edit_json(path: Path, change) -> None:
    obj = json.loads(path.read_text())
    change(obj)
    path.write_text(json.dumps(obj))


class Payload:
    """Unpickling it creates the marker file: a stand-in for any code a crafted pickle runs."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (os.system, (f"touch {self.path}",))


def pairset_with(made: Path, ws: Path, name: str, change) -> None:
    """A pair set made from the coreset with its tensors changed (a valid checksum: only the values are bad)."""
    from vlcore.data.pairset import PairSet

    ps = PairSet.load(made / "core")
    images = ps.images.clone()
    change(images)
    PairSet(images, ps.text, ps.captions, meta=dict(ps.meta), source_ids=ps.source_ids).save(ws / name)


# ----------------------------------------------------------------------------- the cases
def _distill(ws, *extra, buf="buf", out="new"):
    return ["distill", "--buffer", ws / buf, *FAST, *extra, "--out", ws / out]


def c_truncated_checkpoint(made, ws):
    copy(made, ws, "buf", "dist")
    truncate(ws / "dist" / "checkpoint.safetensors")
    return _distill(ws, "--resume", out="dist"), 1, ["checkpoint.safetensors", "--overwrite"]


def c_pickle_as_checkpoint(made, ws):
    copy(made, ws, "buf", "dist")
    (ws / "dist" / "checkpoint.safetensors").write_bytes(pickle.dumps(Payload(ws / MARKER)))
    (ws / "dist" / "checkpoint.pt").write_bytes(pickle.dumps(Payload(ws / MARKER)))
    return _distill(ws, "--resume", out="dist"), 1, ["checkpoint.safetensors", "nothing in it was run", "--overwrite"]


def c_only_an_old_pickle_checkpoint(made, ws):
    copy(made, ws, "buf", "dist")
    (ws / "dist" / "checkpoint.safetensors").unlink()
    (ws / "dist" / "checkpoint.pt").write_bytes(pickle.dumps(Payload(ws / MARKER)))
    return _distill(ws, "--resume", out="dist"), 2, ["checkpoint.pt", "never loads", "--overwrite"]


def c_truncated_expert(made, ws):
    copy(made, ws, "buf")
    truncate(ws / "buf" / "expert_001.safetensors")
    return _distill(ws), 1, ["expert_001.safetensors", "truncated", "vl experts", "--resume"]


def c_deleted_expert(made, ws):
    copy(made, ws, "buf")
    (ws / "buf" / "expert_000.safetensors").unlink()
    return _distill(ws), 1, ["expert_000.safetensors", "missing", "vl experts"]


def c_changed_expert(made, ws):
    copy(made, ws, "buf")
    flip_byte(ws / "buf" / "expert_000.safetensors")
    flip_byte(ws / "buf" / "expert_001.safetensors")
    return _distill(ws), 1, ["safetensors does not match its checksum", "vl experts"]


def c_truncated_buffer_index(made, ws):
    copy(made, ws, "buf")
    truncate(ws / "buf" / "index.json")
    return _distill(ws), 1, ["index.json", "vl experts"]


def c_buffer_without_checksums(made, ws):
    copy(made, ws, "buf")
    edit_json(ws / "buf" / "index.json", lambda d: d.pop("experts"))
    return _distill(ws), 1, ["index.json", "checksums", "--resume"]


def c_resume_against_another_buffer(made, ws):
    copy(made, ws, "buf", "dist")
    res = vl("experts", *TINY, *MODEL, "--num-experts", 2, "--epochs", 2, "--batch-size", 16, "--seed", 7,
             "--out", ws / "other")
    assert res.exit_code == 0, res.output
    return _distill(ws, "--resume", buf="other", out="dist"), 1, ["checkpoint.safetensors", "expert buffer",
                                                                   "--overwrite"]


def c_truncated_pairs(made, ws):
    copy(made, ws, "core")
    truncate(ws / "core" / "pairs.safetensors")
    return ["eval", ws / "core"], 1, ["pairs.safetensors", "checksum", "vl coreset --config"]


def c_truncated_meta(made, ws):
    copy(made, ws, "core")
    truncate(ws / "core" / "meta.json")
    return ["eval", ws / "core"], 1, ["meta.json", "truncated", "--config"]


def c_truncated_captions(made, ws):
    copy(made, ws, "core")
    truncate(ws / "core" / "captions.json")
    return ["eval", ws / "core"], 1, ["captions.json", "--config"]


def c_meta_without_checksum(made, ws):
    copy(made, ws, "core")
    edit_json(ws / "core" / "meta.json", lambda d: d.pop("pairs_sha256"))
    return ["eval", ws / "core"], 1, ["pairs_sha256", "Re-create it", "vl coreset --config"]


def c_nan_image(made, ws):
    pairset_with(made, ws, "nan", lambda x: x.__setitem__((1, 0, 2, 3), float("nan")))
    return ["eval", ws / "nan"], 1, ["NaN", "Re-create it"]


def c_exploded_pixels(made, ws):
    pairset_with(made, ws, "big", lambda x: x.mul_(4e10))
    return ["eval", ws / "big"], 1, ["pixels", "1e+06", "--clamp-images"]


def c_not_a_pairset(made, ws):
    copy(made, ws, "buf")
    return ["eval", ws / "buf"], 1, ["has no pairs.safetensors"]


def c_eval_out_is_its_input(made, ws):
    copy(made, ws, "core")
    return ["eval", ws / "core", "--out", ws / "core"], 2, ["--out", "an input of this command", "another --out"]


def c_eval_seeds_zero(made, ws):
    copy(made, ws, "core")
    return ["eval", ws / "core", "--seeds", 0], 2, ["--seeds", ">= 1"]


def _option(*flag):
    def case(made, ws):
        copy(made, ws, "buf")
        return _distill(ws, *flag), 2, [flag[0].split("=")[0], "give a number"]
    case.__name__ = "c_option_" + "_".join(str(f).strip("-").replace("-", "_") for f in flag)
    return case


def c_distiller_option_negative(made, ws):
    copy(made, ws, "buf")
    return _distill(ws, "--distiller-option", "lr_lr=-1"), 2, ["lr_lr", "give a number"]


def c_config_file_negative(made, ws):
    copy(made, ws, "buf")
    (ws / "c.toml").write_text("lr-images = -5.0\n")
    return _distill(ws, "--config", ws / "c.toml"), 2, ["--lr-images", "give a number"]


def c_eval_split_test(made, ws):
    copy(made, ws, "buf")
    return ["distill", "--buffer", ws / "buf", *FAST, "--eval-split", "test", "--out", ws / "new"], 2, ["test", "dev"]


def c_experts_bad_numbers(made, ws):
    return ["experts", *TINY, *MODEL, "--epochs", 2, "--momentum", 1.0, "--out", ws / "b"], 2, ["--momentum", "[0, 1)"]


def c_out_is_a_file(made, ws):
    copy(made, ws, "buf")
    (ws / "afile").write_text("x")
    return _distill(ws, out="afile"), 2, ["--out", "is a file", "folder"]


def c_out_under_a_file(made, ws):
    copy(made, ws, "buf")
    (ws / "afile").write_text("x")
    return _distill(ws, out="afile/sub"), 2, ["--out", "which is a file", "Choose"]


def c_out_under_proc(made, ws):
    copy(made, ws, "buf")
    return ["distill", "--buffer", ws / "buf", *FAST, "--out", "/proc/vlcore-test/out"], 2, ["--out", "/proc",
                                                                                             "Choose a folder"]


def c_distill_over_a_finished_run(made, ws):
    copy(made, ws, "buf", "dist")
    return _distill(ws, out="dist"), 2, ["already holds a finished distillation", "--resume", "--overwrite"]


def c_coreset_onto_a_distillation(made, ws):
    copy(made, ws, "dist")
    return ["coreset", "--method", "random", "--budget", 4, *TINY, *MODEL, "--out", ws / "dist"], 2, \
        ["holds a finished distillation", "writes a coreset", "--overwrite"]


def c_coreset_again_without_overwrite(made, ws):
    copy(made, ws, "core")
    return ["coreset", "--method", "random", "--budget", 4, *TINY, *MODEL, "--out", ws / "core"], 2, \
        ["already holds a coreset", "--overwrite"]


def c_experts_into_a_buffer_without_resume(made, ws):
    copy(made, ws, "buf")
    return ["experts", *TINY, *MODEL, "--num-experts", 2, "--epochs", 2, "--batch-size", 16, "--out", ws / "buf"], 2, \
        ["already holds an expert buffer", "--resume", "--overwrite"]


def c_train_onto_a_coreset(made, ws):
    copy(made, ws, "core")
    return ["train", *TINY, *MODEL, "--epochs", 1, "--out", ws / "core"], 2, ["holds a coreset", "--overwrite"]


def c_resume_and_overwrite(made, ws):
    copy(made, ws, "buf", "dist")
    return _distill(ws, "--resume", "--overwrite", out="dist"), 2, ["--resume", "--overwrite", "not both"]


def c_foreign_files_even_with_overwrite(made, ws):
    copy(made, ws, "buf", "dist")
    (ws / "dist" / "notes.txt").write_text("mine")
    return _distill(ws, "--overwrite", out="dist"), 2, ["notes.txt", "not vlcore's", "another --out"]


def c_folder_of_other_files(made, ws):
    copy(made, ws, "buf")
    (ws / "docs").mkdir()
    (ws / "docs" / "thesis.tex").write_text("mine")
    return _distill(ws, "--overwrite", out="docs"), 2, ["thesis.tex", "no vl command wrote", "another --out"]


def c_run_stage_folder_holds_something_else(made, ws):
    copy(made, ws, "dist")
    (ws / "exp").mkdir()
    (ws / "exp" / "results.md").write_text("an earlier run of the experiment")
    shutil.copytree(ws / "dist", ws / "exp" / "sel")
    (ws / "r.toml").write_text("[common]\ndataset = 'embedded'\n\n[stages.sel]\nrun = 'coreset'\nmethod = 'random'\n"
                               "budget = 4\n")
    return ["run", ws / "r.toml", "--out", ws / "exp"], 2, ["stage 'sel'", "finished distillation", "another --out"]


CASES = [c_truncated_checkpoint, c_pickle_as_checkpoint, c_only_an_old_pickle_checkpoint, c_truncated_expert,
         c_deleted_expert, c_changed_expert, c_truncated_buffer_index, c_buffer_without_checksums,
         c_resume_against_another_buffer, c_truncated_pairs, c_truncated_meta, c_truncated_captions,
         c_meta_without_checksum, c_nan_image, c_exploded_pixels, c_not_a_pairset, c_eval_out_is_its_input,
         c_eval_seeds_zero,
         _option("--lr-images", -1), _option("--lr-lr", -1), _option("--lr-init", -1), _option("--lr-images", 1e300),
         _option("--lr-text", "nan"), _option("--lr-images", "inf"), _option("--iterations", 0),
         _option("--momentum", 1.5), _option("--pairs", 1),
         c_distiller_option_negative, c_config_file_negative, c_eval_split_test, c_experts_bad_numbers,
         c_out_is_a_file, c_out_under_a_file, c_out_under_proc, c_distill_over_a_finished_run,
         c_coreset_onto_a_distillation, c_coreset_again_without_overwrite, c_experts_into_a_buffer_without_resume,
         c_train_onto_a_coreset, c_resume_and_overwrite, c_foreign_files_even_with_overwrite, c_folder_of_other_files,
         c_run_stage_folder_holds_something_else]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[2:])
def test_bad_input_is_refused_cleanly(case, made, tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    argv, code, expected = case(made, ws)
    before = tree(ws)
    refused_cleanly(vl(*argv), code, expected)
    assert tree(ws) == before, "a refused command changed or left files"
    assert not (ws / MARKER).exists(), "a pickle was loaded"


def test_every_case_names_what_is_wrong():
    """The suite covers every case of the issue: each damaged file, each option and each folder."""
    names = " ".join(c.__name__ for c in CASES)
    for word in ("checkpoint", "expert", "pairs", "meta", "nan_image", "lr_images", "lr_lr", "lr_init", "1e+300",
                 "iterations", "out_is_a_file", "under_a_file", "under_proc", "coreset_onto_a_distillation"):
        assert word in names, word


def test_non_utf8_caption_warns_with_file_and_line(tmp_path, caplog):
    from PIL import Image

    from vlcore.data.pipeline import build_dataset

    root = tmp_path / "f8k"
    (root / "images").mkdir(parents=True)
    ids = [f"{i}_x.jpg" for i in range(3)]
    for i in ids:
        Image.new("RGB", (8, 8), (10, 20, 30)).save(root / "images" / i)
    lines = [f"{i}#0\tA dog runs .".encode() for i in ids]
    lines[1] = f"{ids[1]}#0\tA caf".encode() + b"\xe9 by the sea ."  # latin-1, not UTF-8
    (root / "Flickr8k.token.txt").write_bytes(b"\n".join(lines) + b"\n")
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(ids) + "\n")
    with caplog.at_level("WARNING"):
        split = build_dataset("flickr8k", str(root)).split("train")
    assert split.captions[1] == ["A caf\ufffd by the sea ."]
    msg = " ".join(caplog.text.split())
    assert "Flickr8k.token.txt" in msg and "line 2" in msg and "UTF-8" in msg and "iconv" in msg


def test_non_utf8_karpathy_json_is_refused_with_the_fix(tmp_path):
    from vlcore.core.errors import DataError
    from vlcore.data.pipeline import build_dataset

    (tmp_path / "dataset_flickr30k.json").write_bytes(
        b'{"images": [{"filename": "a.jpg", "split": "train", "sentences": [{"raw": "caf\xe9"}]}]}')
    with pytest.raises(DataError, match="dataset_flickr30k.json is not valid UTF-8") as err:
        build_dataset("flickr30k", str(tmp_path)).split("train")
    assert "convert it to UTF-8" in str(err.value)


def test_eval_that_diverges_says_why_not_lower_the_learning_rate(made, tmp_path):
    from vlcore.data.pairset import PairSet

    ps = PairSet.load(made / "core")
    ps.lr_img = ps.lr_txt = 1e30  # in range (positive, finite): a set whose step sizes make training diverge
    ps.save(tmp_path / "ps")
    before = tree(tmp_path)
    res = vl("eval", tmp_path / "ps", "--seeds", 1, "--epochs", 1)
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "Traceback" not in res.output
    assert "diverged" in text and "--eval-lr 0.03" in text and "lower the learning rate" not in text.lower()
    assert tree(tmp_path) == before
