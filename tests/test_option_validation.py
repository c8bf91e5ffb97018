"""Every value a user gives is checked the same way, whichever way it comes (issue 18, items 10-11):
a flag, a ``--config`` TOML file, a ``KEY=VALUE`` option (``--dataset-option``, ``--distiller-option``).
A bad value is a usage error (exit 2) naming the option, the value and what it takes, with no traceback
and before any work (every file that existed is byte-identical, nothing new is left).  A disk that
refuses a write (full, over quota, read-only) is a clear error naming the folder and the fix.  A caption
file that is not UTF-8 follows the documented rule: a warning, with replacement characters."""
from __future__ import annotations

import errno
import hashlib
import math
import os
from pathlib import Path

import pytest

from vlcore.testing.cli import invoke_vl, refused_cleanly, run_vl
from vlcore.testing.runs import FAST_DISTILL_ARGS, TINY_DATA_ARGS as TINY, TINY_MODEL_ARGS as MODEL

FAST = [*FAST_DISTILL_ARGS, "--iterations", "2", "--checkpoint-every", "1"]
EXPERTS = ["--num-experts", 1, "--epochs", 2, "--batch-size", 16]
BIG = 2 ** 64  # beyond 64 bits


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


def refused(ws: Path, argv, code: int, expected) -> str:
    """Run ``vl ARGV`` in-process: exit ``code``, no traceback, each of ``expected`` in the message,
    every file under ``ws`` as it was and nothing new."""
    before = tree(ws)
    text = refused_cleanly(invoke_vl(*argv, ok=False), code, expected)
    assert tree(ws) == before, "a refused command changed or left files"
    return text


@pytest.fixture
def ws(tmp_path):
    ws = tmp_path / "ws"
    ws.mkdir()
    (ws / "notes.txt").write_text("a file of the user's, never to be touched")
    return ws


def toml(ws: Path, text: str) -> Path:
    path = ws / "c.toml"
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------- the table of bad inputs
def c_seed_beyond_64_bits(ws):
    return ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--seed", BIG, "--out", ws / "new"], 2, \
        ["--seed", str(BIG), "[0, 9223372036854775807]"]


def c_seed_negative(ws):
    return ["distill", *TINY, *MODEL, *FAST, "--seed", -1, "--out", ws / "new"], 2, ["--seed", "-1", "[0, "]


def c_experts_seed_beyond_64_bits(ws):  # a flag derived from a Config field named seed: the same range
    return ["experts", *TINY, *MODEL, *EXPERTS, "--seed", BIG, "--out", ws / "new"], 2, ["--seed", "[0, "]


def c_demo_seed_negative(ws):  # a plain int flag named --seed: the same range
    return ["demo", "--seed", -5, "--out", ws / "new"], 2, ["--seed", "-5", "[0, "]


def c_image_size_beyond_64_bits(ws):
    return ["experts", *TINY, "--encoder", "convnet", "--image-size", 2 ** 70, "--out", ws / "new"], 2, \
        ["--image-size", "64-bit", "[1, 9223372036854775807]"]


def c_config_list_for_a_number(ws):
    return ["distill", "--config", toml(ws, "iterations = [1, 2]\n"), *TINY, "--out", ws / "new"], 2, \
        ["c.toml", "'iterations = [1, 2]'", "is a list", "--iterations takes an integer", "Fix the value"]


def c_config_bool_for_an_int(ws):
    return ["distill", "--config", toml(ws, "iterations = true\n"), *TINY, "--out", ws / "new"], 2, \
        ["c.toml", "'iterations = true'", "is a boolean", "--iterations takes an integer"]


def c_config_fraction_for_an_int(ws):
    return ["distill", "--config", toml(ws, "syn_steps = 1.7\n"), *TINY, "--out", ws / "new"], 2, \
        ["c.toml", "'syn_steps = 1.7'", "a number with a fraction", "--syn-steps takes an integer"]


def c_config_string_for_a_number(ws):
    return ["distill", "--config", toml(ws, 'lr-images = "fast"\n'), *TINY, "--out", ws / "new"], 2, \
        ["c.toml", "'lr-images = \"fast\"'", "is a string", "--lr-images takes a number"]


def c_config_number_for_a_flag(ws):
    return ["distill", "--config", toml(ws, "no-eval = 1\n"), *TINY, "--out", ws / "new"], 2, \
        ["c.toml", "'no-eval = 1'", "--no-eval takes true or false"]


def c_config_number_for_a_name(ws):
    return ["distill", "--config", toml(ws, "distiller = 5\n"), *TINY, "--out", ws / "new"], 2, \
        ["c.toml", "'distiller = 5'", "--distiller takes a component name"]


def c_config_number_in_a_list_of_options(ws):
    return ["experts", "--config", toml(ws, "dataset-option = [5]\n"), "--out", ws / "new"], 2, \
        ["c.toml", "dataset-option = [5]", "a list whose items are each a string"]


def c_config_huge_float(ws):
    return ["distill", "--config", toml(ws, f"lr-images = {10 ** 400}\n"), *TINY, "--out", ws / "new"], 2, \
        ["c.toml", "too large for --lr-images"]


def c_config_seed_beyond_64_bits(ws):
    return ["coreset", "--method", "random", "--config", toml(ws, f"seed = {BIG}\n"), *TINY, *MODEL,
            "--out", ws / "new"], 2, ["--seed", "[0, 9223372036854775807]"]


def c_lr_init_subnormal(ws):
    return ["distill", *TINY, *MODEL, *FAST, "--lr-init", "1e-320", "--out", ws / "new"], 2, \
        ["--lr-init", "1e-320", "too small", "float32", "give 0 or"]


def c_lr_init_subnormal_as_distiller_option(ws):
    return ["distill", *TINY, *MODEL, *FAST, "--distiller-option", "lr_init=1e-320", "--out", ws / "new"], 2, \
        ["lr_init", "too small", "float32"]


def c_lr_init_subnormal_in_config(ws):
    return ["distill", "--config", toml(ws, "lr-init = 1e-320\n"), *TINY, *MODEL, *FAST, "--out", ws / "new"], 2, \
        ["--lr-init", "too small"]


def c_lr_images_subnormal(ws):
    return ["distill", *TINY, *MODEL, *FAST, "--lr-images", "4e-39", "--out", ws / "new"], 2, \
        ["--lr-images", "too small"]


def _dataset_option(command: str, option: str, *expected: str):
    def case(ws):
        head = {"experts": ["experts", *EXPERTS], "coreset": ["coreset", "--method", "random", "--pairs", 4],
                "distill": ["distill", *FAST], "train": ["train", "--epochs", 1]}[command]
        return [*head, *TINY, *MODEL, "--dataset-option", option, "--out", ws / "new"], 2, \
            ["--dataset-option", *expected]
    case.__name__ = f"c_{command}_dataset_option_{option.replace('=', '_').replace('.', '_').replace('-', 'minus')}"
    return case


def c_captions_dev_count_with_a_fraction(ws):
    return ["experts", "--dataset", "captions", "--data", ws, "--dataset-option", "dev=2.5", *MODEL,
            "--out", ws / "new"], 2, ["'dev'", "2.5", "whole number"]


def c_captions_limit_zero(ws):
    return ["coreset", "--method", "random", "--pairs", 4, "--dataset", "captions", "--data", ws,
            "--dataset-option", "limit=0", *MODEL, "--out", ws / "new"], 2, ["'limit'", "0", ">= 1"]


def c_captions_negative_test(ws):
    return ["experts", "--dataset", "captions", "--data", ws, "--dataset-option", "test=-1", *MODEL,
            "--out", ws / "new"], 2, ["'test'", "-1", "[0, "]


def c_out_not_utf8(ws):
    return ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out",
            ws / os.fsdecode(b"out\xff")], 2, ["--out", "b'", "out\\xff", "not valid UTF-8", "choose another name"]


def c_data_not_utf8(ws):
    return ["experts", "--dataset", "captions", "--data", ws / os.fsdecode(b"d\xe9"), *MODEL, "--out", ws / "new"], \
        2, ["--data", "not valid UTF-8"]


CASES = [c_seed_beyond_64_bits, c_seed_negative, c_experts_seed_beyond_64_bits, c_demo_seed_negative,
         c_image_size_beyond_64_bits,
         c_config_list_for_a_number, c_config_bool_for_an_int, c_config_fraction_for_an_int,
         c_config_string_for_a_number, c_config_number_for_a_flag, c_config_number_for_a_name,
         c_config_number_in_a_list_of_options, c_config_huge_float, c_config_seed_beyond_64_bits,
         c_lr_init_subnormal, c_lr_init_subnormal_as_distiller_option, c_lr_init_subnormal_in_config,
         c_lr_images_subnormal,
         _dataset_option("experts", "limit=0", "'limit'", ">= 1"),
         _dataset_option("coreset", "limit=0", "'limit'", ">= 1"),
         _dataset_option("distill", "limit=0", "'limit'", ">= 1"),
         _dataset_option("train", "limit=-3", "'limit'", ">= 1"),
         _dataset_option("experts", "num_train=1e20", "'num_train'", "[1, 1000000]"),
         _dataset_option("coreset", "num_train=true", "'num_train'", "expected an integer"),
         _dataset_option("experts", "num_train=2.5", "'num_train'", "expected an integer"),
         _dataset_option("experts", "seed=-1", "'seed'", "[0, "),
         _dataset_option("experts", "holdout=-1", "'holdout'", ">= 0"),
         _dataset_option("coreset", "bogus=1", "Unknown option 'bogus'", "num_train"),
         c_captions_dev_count_with_a_fraction, c_captions_limit_zero, c_captions_negative_test,
         c_out_not_utf8, c_data_not_utf8]


@pytest.mark.parametrize("case", CASES, ids=lambda c: c.__name__[2:])
def test_bad_value_is_refused_before_any_work(case, ws):
    argv, code, expected = case(ws)
    refused(ws, argv, code, expected)


def test_non_utf8_out_from_a_real_command_line(tmp_path):
    """The bytes b'out\\xff' as a shell passes them (a subprocess): refused before any work."""
    (tmp_path / "notes.txt").write_text("mine")
    before = tree(tmp_path)
    proc = run_vl("coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out",
                  os.fsdecode(b"out\xff"), cwd=tmp_path, check=False, timeout=300)
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" not in proc.stderr and "not valid UTF-8" in proc.stderr and "--out" in proc.stderr
    assert tree(tmp_path) == before


# ----------------------------------------------------------------------------- what is accepted
def test_config_values_of_the_right_type_are_taken_without_coercion():
    import click

    from vlcore.cli.command import toml_value
    from vlcore.cli.main import cli
    from vlcore.core.errors import ConfigError

    cmd = cli.commands["distill"]
    params = {p.name: p for p in cmd.get_params(click.Context(cmd))}
    assert toml_value(params["iterations"], "iterations", 3.0) == 3 and type(toml_value(
        params["iterations"], "iterations", 3.0)) is int  # a whole float is an integer
    assert toml_value(params["lr_images"], "lr-images", 5) == 5.0  # an integer is fine for a float
    assert toml_value(params["dataset_opts"], "dataset-option", "num_train=24") == ["num_train=24"]
    assert toml_value(params["no_eval"], "no-eval", True) is True
    for name, bad in (("iterations", True), ("iterations", 1.7), ("iterations", "8"), ("lr_images", False),
                      ("no_eval", "yes"), ("eval_split", 3)):
        with pytest.raises(ConfigError, match="takes"):
            toml_value(params[name], name, bad, "c.toml")


def test_a_whole_number_and_an_int_for_a_float_in_config_run(ws, buffer):
    """``iterations = 2.0`` and ``lr-images = 100`` in a --config file are taken (and saved as they ran)."""
    from vlcore.artifacts import tomlfile

    path = toml(ws, "iterations = 2.0\nlr-images = 100\n")
    res = invoke_vl("distill", "--config", path, "--buffer", buffer, "--pairs", 4, "--syn-steps", 2,
                    "--expert-epochs", 1, "--max-start-epoch", 1, "--no-eval", "--out", ws / "run")
    saved = tomlfile.load(ws / "run" / "config.toml")
    assert saved["iterations"] == 2 and isinstance(saved["iterations"], int), res.output
    assert saved["lr-images"] == 100.0


def test_build_config_types_and_ranges():
    from dataclasses import dataclass

    from vlcore.core.config import FLOAT32_TINY, INT64_MAX, build_config, describe_options, option_range
    from vlcore.core.errors import ConfigError

    @dataclass(frozen=True)
    class Config:
        seed: int = 0
        limit: int | None = None
        holdout: int = 0
        steps: int = 1
        rate: float = 0.5
        on: bool = True

    ok = build_config(Config, {"seed": 2 ** 63 - 1, "steps": 4.0, "rate": 2, "limit": 3, "on": "yes"})
    assert (ok.seed, ok.steps, ok.rate, ok.limit) == (INT64_MAX, 4, 2.0, 3) and type(ok.steps) is int
    assert build_config(Config, {"rate": 0}).rate == 0.0 and build_config(Config, {"rate": FLOAT32_TINY}).rate > 0
    for opts, words in (({"steps": True}, "expected an integer"), ({"steps": 1.7}, "expected an integer"),
                        ({"steps": [1]}, "expected an integer"), ({"rate": True}, "expected a number"),
                        ({"steps": BIG}, "64-bit"), ({"seed": -1}, "[0, "), ({"seed": BIG}, "[0, "),
                        ({"limit": 0}, ">= 1"), ({"holdout": -1}, ">= 0"), ({"rate": 1e-320}, "too small"),
                        ({"rate": -1e-40}, "too small"), ({"rate": float("nan")}, "finite")):
        with pytest.raises(ConfigError, match=None) as err:
            build_config(Config, opts, owner="plugin 'p'")
        assert words in str(err.value), (opts, str(err.value))
    # the shared ranges of a plugin's own fields show in its flags' help, as declared ones do
    ranges = {o.name: o.range for o in describe_options(Config)}
    assert str(ranges["seed"]) == "[0, 9223372036854775807]" and str(ranges["limit"]) == ">= 1"
    assert ranges["steps"] is None and option_range(Config, "rate") is None


def test_every_lr_init_the_flag_takes_gives_a_step_size_eval_accepts():
    """The smallest non-zero learning rate an option takes survives float32 (where the learned step
    size lives, as log(lr)) even after drifting down the factor the distillation allows, so the set it
    makes has a positive step size, the bound `vl eval` checks (pairset.value_problems)."""
    import torch

    from vlcore.core.config import FLOAT32_TINY, MAX_LR, Range
    from vlcore.distill.learning_rates import LR_RANGE

    def stored(lr):  # what the distillation saves: exp(log lr) in float32
        return float(torch.tensor(math.log(lr), dtype=torch.float32).exp())

    assert stored(1e-320) == 0.0  # the value of the issue: a step size of 0, which eval refuses
    assert Range(0, MAX_LR).problem(1e-320) is not None
    assert Range(0, MAX_LR).problem(FLOAT32_TINY) is None
    assert stored(FLOAT32_TINY / LR_RANGE) > 0


# ----------------------------------------------------------------------------- a disk that refuses writes
@pytest.fixture(scope="module")
def buffer(tmp_path_factory):
    root = tmp_path_factory.mktemp("buffer")
    invoke_vl("experts", *TINY, *MODEL, *EXPERTS, "--out", root / "buf")
    return root / "buf"


def refuse_writes_under(monkeypatch, folder: Path, exc_for):
    """Make every safetensors write under ``folder`` fail with ``exc_for(path)`` (what a full disk does)."""
    import safetensors.torch

    real = safetensors.torch.save_file
    folder = Path(folder).resolve()

    def save_file(tensors, filename, *args, **kw):
        if Path(filename).resolve().is_relative_to(folder):
            raise exc_for(str(filename))
        return real(tensors, filename, *args, **kw)

    monkeypatch.setattr(safetensors.torch, "save_file", save_file)


def enospc(path):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


class SafetensorError(Exception):
    """Stands in for safetensors' own error, which reports a full disk in its message only."""


def library_enospc(path):
    return SafetensorError('Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space '
                           'left on device" })')


@pytest.mark.parametrize("command", ["experts", "distill", "coreset"])
def test_full_disk_is_a_clear_error_naming_the_folder(command, ws, buffer, monkeypatch):
    import shutil

    shutil.copytree(buffer, ws / "buf")
    out = ws / "out"
    argv = {"experts": ["experts", *TINY, *MODEL, *EXPERTS],
            "distill": ["distill", "--buffer", ws / "buf", *FAST],
            "coreset": ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL]}[command]
    before = tree(ws)
    refuse_writes_under(monkeypatch, out, enospc)
    res = invoke_vl(*argv, "--out", out, ok=False)
    text = " ".join(res.output.split())
    assert res.exit_code == 1, res.output
    assert "Traceback" not in res.output
    for words in ("No space left on the disk holding", str(out), "Free space on it", "--resume"):
        assert words in text, (words, res.output)
    assert ".tmp" not in text  # the file being written, not its temporary name
    after = tree(ws)
    assert {k: v for k, v in after.items() if k in before} == before, "a file that existed was changed"
    assert not [k for k in after if k.endswith(".tmp")], "a temporary file was left"
    # nothing corrupt is taken afterwards: what it left is refused or continued, never used as finished
    monkeypatch.undo()
    if command == "coreset":
        assert invoke_vl("eval", out, "--seeds", 1, "--epochs", 1, ok=False).exit_code != 0


def test_a_library_error_for_a_full_disk_is_said_the_same_way(ws, monkeypatch):
    refuse_writes_under(monkeypatch, ws / "out", library_enospc)
    text = refused_disk(ws, ["coreset", "--method", "random", "--pairs", 4, *TINY, *MODEL, "--out", ws / "out"])
    assert "No space left on the disk holding" in text and str(ws / "out") in text


def refused_disk(ws, argv) -> str:
    res = invoke_vl(*argv, ok=False)
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    return " ".join(res.output.split())


@pytest.mark.parametrize("code, words", [(errno.ENOSPC, ["No space left", "/data/run", "Free space"]),
                                         (errno.EDQUOT, ["quota is exceeded", "/data/run"]),
                                         (errno.EROFS, ["/data/run is on a read-only file system", "writable"]),
                                         (errno.EACCES, ["Permission denied: /data/run/pairs.safetensors",
                                                         "another path"])])
def test_disk_problems_name_the_folder_and_the_fix(code, words):
    from vlcore.cli.options import disk_problem

    msg = disk_problem(OSError(code, os.strerror(code), "/data/run/.pairs.safetensors.0badcafe.tmp"))
    for w in words:
        assert w in msg, (w, msg)
    assert "0badcafe" not in msg
    # without a file name: the command's --out
    assert "/data/out" in disk_problem(OSError(code, os.strerror(code)), "/data/out") or code == errno.EACCES
    # wrapped in another error (a library's, or one of vlcore's raised while handling it)
    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/run/x.json")
        except OSError:
            raise RuntimeError("writing failed")
    except RuntimeError as exc:
        assert "No space left" in disk_problem(exc)
    assert disk_problem(ValueError("bad value")) is None and disk_problem(OSError(errno.ENOENT, "gone")) is None


def test_a_vlcore_error_caused_by_a_full_disk_gets_the_fix(monkeypatch):
    import click

    from vlcore.cli.options import handle_errors
    from vlcore.core.errors import DataError

    @handle_errors
    def command(out=None):
        try:
            raise OSError(errno.ENOSPC, "No space left on device", "/data/run/meta.json")
        except OSError:
            raise DataError("Cannot write /data/run/meta.json.") from None

    with pytest.raises(click.ClickException) as err:
        command(out="/data/run")
    assert err.value.exit_code == 1
    assert "Cannot write /data/run/meta.json." in err.value.message and "Free space on it" in err.value.message


# ----------------------------------------------------------------------------- caption files not in UTF-8
def captions_folder(root: Path, name: str, data: bytes) -> Path:
    from PIL import Image

    (root / "images").mkdir(parents=True)
    for i in range(4):
        Image.new("RGB", (8, 8), (10 * i, 20, 30)).save(root / "images" / f"{i}.png")
    (root / name).write_bytes(data)
    return root


@pytest.mark.parametrize("name, data", [
    ("captions.csv", b"image,caption,split\n0.png,a dog,train\n1.png,a caf\xe9 by the sea,train\n"
                     b"2.png,a cat,dev\n3.png,a bird,test\n"),
    ("captions.csv", b"\xef\xbb\xbfimage,caption,split\r\n0.png,a dog,train\r\n1.png,a caf\xe9 by the sea,train\r\n"
                     b"2.png,a cat,dev\r\n3.png,a bird,test\r\n"),
    ("captions.tsv", b"image\tcaption\tsplit\n0.png\ta dog\ttrain\n1.png\ta caf\xe9 by the sea\ttrain\n"
                     b"2.png\ta cat\tdev\n3.png\ta bird\ttest\n"),
    ("captions.jsonl", b'{"image": "0.png", "caption": "a dog", "split": "train"}\n'
                       b'{"image": "1.png", "caption": "a caf\xe9 by the sea", "split": "train"}\n'
                       b'{"image": "2.png", "caption": "a cat", "split": "dev"}\n'
                       b'{"image": "3.png", "caption": "a bird", "split": "test"}\n'),
], ids=["csv", "csv-bom-crlf", "tsv", "jsonl"])
def test_non_utf8_caption_file_warns_with_replacement_characters(tmp_path, caplog, name, data):
    """The documented rule (README, "Bad inputs"): read with replacement characters and a warning naming
    the file and the lines, as for every caption file of vlcore."""
    from vlcore.data.pipeline import build_dataset

    root = captions_folder(tmp_path / "mine", name, data)
    with caplog.at_level("WARNING"):
        split = build_dataset("captions", str(root)).split("train")
    assert split.captions == [["a dog"], ["a caf\ufffd by the sea"]]
    msg = " ".join(caplog.text.split())
    line = "line 2" if name.endswith(".jsonl") else "line 3"  # the header is line 1 of a table
    assert name in msg and line in msg and "UTF-8" in msg and "U+FFFD" in msg and "iconv" in msg


def test_the_readme_states_the_rule_the_code_follows():
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "is read with replacement characters (U+FFFD) and a warning" in " ".join(readme.split())
