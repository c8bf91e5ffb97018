"""The 2026 methods (issue 19) on a real tiny buffer (2 experts of `vl experts` on the tiny embedded
dataset): the k-means initialisation's features of a trainable and of a frozen backbone, AMD's
displacements of a buffer, and `vl experts --shortcut K --from BUFFER` (PTM-ST's shortcut buffers)
end to end: resumed or overwritten after an interrupt, foreign files refused, bad options refused.
The maths itself, on hand-made data: tests/test_method_maths.py."""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import click
import pytest
import torch

from vlcore.artifacts.io import RECORD_NAME
from vlcore.artifacts.outdir import OutputFolder
from vlcore.core.errors import IncompatibleError
from vlcore.distill.distribution import displacements, start_ranges
from vlcore.distill.kmeans_init import init_features, kmeans_init
from vlcore.testing.cli import invoke_vl as vl
from vlcore.testing.runs import TINY_DATA_ARGS as TINY, TINY_MODEL_ARGS as MODEL
from vlcore.training.buffer import Buffer
from vlcore.training.shortcut import derive_shortcut_buffer, is_shortcut, layer_slices


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("src") / "buf"
    vl("experts", *TINY, *MODEL, "--num-experts", 2, "--train-epochs", 3, "--batch-size", 16, "--out", out)
    return out


def test_init_features_of_a_trainable_backbone_are_its_expert_at_epoch_0(source):
    from vlcore.data.pipeline import build_dataset, build_text_encoder, split_data
    from vlcore.distill.kmeans_init import expert_seed

    buf = Buffer(source)
    ds = build_dataset("embedded", options={"num_train": 24, "num_dev": 12, "image_size": 32})
    data = split_data(ds.split("train"), buf.spec, build_text_encoder(buf.spec))
    feats = init_features(buf.spec, data, buffer=buf, expert=1)
    assert feats.shape[0] == data.num_images and torch.isfinite(feats).all()
    # the expert's epoch-0 backbone is the one a model of its seed starts from
    assert expert_seed(buf, 1) == 1000
    torch.testing.assert_close(feats, init_features(buf.spec, data, seed=1000), rtol=0, atol=0)
    later = init_features(buf.spec, data, buffer=buf, expert=1, epoch=3)
    assert not torch.equal(later, feats)
    pick = kmeans_init(feats, data.text, 6, seed=0, pair_image=data.pair_image)
    assert pick.indices.unique().numel() == 6


def test_init_features_of_a_frozen_backbone_are_its_cached_features(source):
    from dataclasses import replace

    from vlcore.data.pipeline import build_dataset, build_text_encoder, image_features, split_data

    spec = replace(Buffer(source).spec, trainable="frozen")
    ds = build_dataset("embedded", options={"num_train": 24, "num_dev": 12, "image_size": 32})
    data = split_data(ds.split("train"), spec, build_text_encoder(spec))
    torch.testing.assert_close(init_features(spec, data), image_features(spec, data), rtol=0, atol=0)


def test_displacements_of_a_buffer(source):
    d = displacements(Buffer(source))
    assert d["img"].shape == (3,) and d["txt"].shape == (3,) and (d["img"] > 0).all() and (d["txt"] > 0).all()
    ranges = start_ranges(d["img"], d["txt"], max_start=2)
    assert 1 <= ranges.img <= 2 and 1 <= ranges.txt <= 2


def _same_endpoints(derived: Buffer, src: Buffer, k: int) -> None:
    for i in range(src.num_experts):
        a, b = derived.load(i), src.load(i)
        assert sorted(a) == sorted(f"{m}.{t}" for m in ("img", "txt") for t in range(k + 1))
        for m in ("img", "txt"):
            assert torch.equal(bits(a[f"{m}.0"]), bits(b[f"{m}.0"]))
            assert torch.equal(bits(a[f"{m}.{k}"]), bits(b[f"{m}.{k}"]))


def test_vl_experts_shortcut_end_to_end(source, tmp_path):
    out = tmp_path / "short"
    res = vl("experts", "--shortcut", 2, "--from", source, "--out", out)
    assert "shortcut" in res.output
    derived, src = Buffer(out), Buffer(source)
    assert is_shortcut(derived) and not is_shortcut(src)
    assert derived.epochs == 2 and derived.num_experts == 2 and derived.layout == src.layout
    _same_endpoints(derived, src, 2)
    for name, rec in derived.experts.items():  # its own checksums, and they verify
        assert hashlib.sha256((out / name).read_bytes()).hexdigest() == rec["sha256"]
    sc = derived.index["shortcut"]
    assert sc["k"] == 2 and sc["source_epochs"] == 3 and sc["of"] == str(source.resolve())
    assert sc["source_experts"] == src.experts
    assert derived.content_key() != src.content_key()
    assert derived.index["expert"]["lr"] == src.index["expert"]["lr"]
    # the middle epoch lies on each layer's chord
    e, s = derived.load(0), src.load(0)
    for m in ("img", "txt"):
        for _, sl in layer_slices(src.layout[m]):
            a, b, mid = s[f"{m}.0"][sl].double(), s[f"{m}.2"][sl].double(), e[f"{m}.1"][sl].double()
            lam = float((mid - a) @ (b - a) / ((b - a) @ (b - a)))
            assert 0 <= lam <= 1
            torch.testing.assert_close(mid, a + lam * (b - a), rtol=0, atol=1e-5)
    # the settings file repeats the run
    vl("experts", "--config", out / "config.toml", "--out", tmp_path / "again")
    for name in derived.experts:
        assert (out / name).read_bytes() == (tmp_path / "again" / name).read_bytes()
    # training experts into it is refused: its settings are a shortcut's
    res = vl("experts", *TINY, *MODEL, "--num-experts", 2, "--train-epochs", 2, "--batch-size", 16, "--out", out,
             "--resume", ok=False)
    assert res.exit_code == 1 and "other settings" in res.output


class _StopAfter:
    """A progress callback that interrupts after ``n`` experts (as Ctrl-C would)."""

    def __init__(self, n):
        self.n = n

    def task(self, *a, **kw):
        outer = self

        class T:
            def update(self, k=1, **_):
                outer.n -= k
                if outer.n <= 0:
                    raise KeyboardInterrupt

            def close(self):
                pass

            def __enter__(self):
                return self

            def __exit__(self, *exc):
                pass

        return T()


def test_an_interrupted_derivation_resumes_or_is_overwritten(source, tmp_path):
    whole = tmp_path / "whole"
    vl("experts", "--shortcut", 3, "--from", source, "--out", whole)
    out = tmp_path / "part"
    with OutputFolder(out, "experts") as folder:
        with pytest.raises(KeyboardInterrupt):
            derive_shortcut_buffer(source, folder.prepare(), 3, progress=_StopAfter(1))
    assert sorted(json.loads((out / "index.json").read_text())["experts"]) == ["expert_000.safetensors"]
    # a kill -9 right after the second file was renamed into place, before index.json listed it, and a
    # temporary file of a write it interrupted (recorded before it was created)
    (out / "expert_001.safetensors").write_bytes((whole / "expert_001.safetensors").read_bytes())
    with open(out / RECORD_NAME, "a") as f:
        f.write('{"file": "expert_001.safetensors"}\n{"temp": ".expert_001.safetensors.0badc0de.tmp"}\n')
    (out / ".expert_001.safetensors.0badc0de.tmp").write_bytes(b"half")
    res = vl("experts", "--shortcut", 3, "--from", source, "--out", out, ok=False)
    assert res.exit_code == 2 and "--resume" in res.output  # an occupied folder needs --resume or --overwrite
    vl("experts", "--shortcut", 3, "--from", source, "--out", out, "--resume")
    assert not (out / ".expert_001.safetensors.0badc0de.tmp").exists()
    for name in ("expert_000.safetensors", "expert_001.safetensors", "index.json"):
        if name == "index.json":
            a, b = json.loads((out / name).read_text()), json.loads((whole / name).read_text())
            assert a["experts"] == b["experts"] and a["shortcut"] == b["shortcut"]
        else:
            assert (out / name).read_bytes() == (whole / name).read_bytes()
    Buffer(out).load(1)  # checksums verify
    # another K into it: refused on --resume, replaced with --overwrite
    res = vl("experts", "--shortcut", 2, "--from", source, "--out", out, "--resume", ok=False)
    assert res.exit_code == 1 and "--overwrite" in res.output
    vl("experts", "--shortcut", 2, "--from", source, "--out", out, "--overwrite")
    assert Buffer(out).epochs == 2
    _same_endpoints(Buffer(out), Buffer(source), 2)


def test_a_foreign_file_under_an_expert_name_is_refused_and_kept(source, tmp_path):
    out = tmp_path / "short"
    vl("experts", "--shortcut", 2, "--from", source, "--out", out)
    index = json.loads((out / "index.json").read_text())
    index["experts"].pop("expert_001.safetensors")
    (out / "index.json").write_text(json.dumps(index))
    (out / "expert_001.safetensors").write_bytes((Path(source) / "expert_001.safetensors").read_bytes())
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    res = vl("experts", "--shortcut", 2, "--from", source, "--out", out, "--resume", ok=False)
    assert res.exit_code == 1 and "expert_001.safetensors is not the shortcut" in res.output
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    with pytest.raises(IncompatibleError):
        derive_shortcut_buffer(source, out, 2)


@pytest.mark.parametrize("args,needle", [
    (["--shortcut", 2], "go together"),
    (["--from", "@src"], "go together"),
    (["--shortcut", 2, "--from", "@src", "--num-experts", 3], "--num-experts does not apply"),
    (["--shortcut", 4, "--from", "@src"], "between 1 and 3"),
    (["--shortcut", 0, "--from", "@src"], "--shortcut"),
    (["--shortcut", 2, "--from", "@src", "--out", "@src"], "an input of this command"),
])
def test_bad_shortcut_options_are_usage_errors(source, tmp_path, args, needle):
    args = [source if a == "@src" else a for a in args]
    if "--out" not in args:
        args += ["--out", tmp_path / "x"]
    res = vl("experts", *args, ok=False)
    assert res.exit_code == 2 and needle in res.output, res.output
    assert not (tmp_path / "x").exists()


def test_a_missing_source_is_a_data_error(tmp_path):
    res = vl("experts", "--shortcut", 1, "--from", tmp_path / "none", "--out", tmp_path / "x", ok=False)
    assert res.exit_code == 1 and "not an expert buffer" in res.output and not (tmp_path / "x").exists()


def test_the_shortcut_flags_have_help_and_show_their_defaults():
    from vlcore.cli.main import cli

    cmd = cli.commands["experts"]
    ctx = click.Context(cmd, info_name="experts")
    for p in cmd.get_params(ctx):
        if p.name in ("shortcut", "source", "out"):
            record = p.get_help_record(ctx)
            assert (p.help or "").strip() and "[default:" in " ".join(record[1].split()), p.name
