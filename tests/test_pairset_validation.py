"""One validation path for every pair-set format (issue 18, items 9, 10 and 12).

Whatever reader produced a pair set (a vlcore pair-set folder, a `vl export --format hf` folder), the
same checks run: the record's schema (the type of every field read), shapes consistent with the
record and the model spec, and the documented value ranges.  Each bad input is refused by `vl eval`
with exit 1, no traceback, a message naming the file and the field and the fix, and no file changed.
The export itself (``Dataset.from_dict`` + ``save_to_disk`` + ``load_from_disk``) runs here, with the
installed ``datasets`` / ``dill`` inside the range pyproject pins.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
from pathlib import Path

import pytest
import torch

from vlcore.testing.cli import invoke_vl, run_vl

TINY = ["--dataset", "embedded", "--dataset-option", "num_train=24", "--dataset-option", "num_dev=12",
        "--dataset-option", "image_size=32", "--encoder", "convnet", "--encoder-option", "width=8",
        "--image-size", "16"]


@pytest.fixture(scope="module")
def core(tmp_path_factory) -> Path:
    """A 4-pair random coreset at 16 px (a few seconds)."""
    out = tmp_path_factory.mktemp("made") / "core"
    invoke_vl("coreset", "--method", "random", "--budget", 4, *TINY, "--out", out)
    return out


def tree(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir"
            for p in sorted(root.rglob("*"))}


@contextlib.contextmanager
def unchecked():
    """Writing a bad set the way a hand-made or older export would be: without the load-time checks."""
    import vlcore.data.checks as P

    saved = P.meta_problems, P.shape_problems, P.value_problems
    P.meta_problems = P.shape_problems = P.value_problems = lambda *a, **k: []
    try:
        yield
    finally:
        P.meta_problems, P.shape_problems, P.value_problems = saved


def make(core: Path, ws: Path, fmt: str, change=None, edit=None) -> Path:
    """The coreset with ``change(ps)`` applied to it (a consistent checksum: only the contents are bad),
    as a pair-set folder (``fmt="folder"``) or an export (``"hf"``); then ``edit(record)`` applied to
    its meta.json / vlcore.json by hand."""
    from vlcore.data.export import export_hf
    from vlcore.data.pairset import PairSet

    ps = PairSet.load(core)
    ps.images, ps.text, ps.meta = ps.images.clone(), ps.text.clone(), dict(ps.meta)
    if change is not None:
        change(ps)
    folder = ws / "set"
    with unchecked():
        ps.save(folder)
        if fmt == "hf":
            export_hf(folder, ws / "export")
            folder = ws / "export"
    if edit is not None:
        record = folder / ("vlcore.json" if fmt == "hf" else "meta.json")
        obj = json.loads(record.read_text())
        obj = edit(obj) or obj
        record.write_text(json.dumps(obj))
    return folder


def refused(folder: Path, ws: Path, code: int = 1, *extra):
    before = tree(ws)
    res = invoke_vl("eval", folder, *extra, ok=False)
    assert res.exit_code == code, res.output
    assert "Traceback" not in res.output
    assert tree(ws) == before, "a refused command changed or left files"
    return " ".join(res.output.split())


def where(fmt: str, part: str) -> str:
    """How a message names where ``part`` was read from, in each format."""
    return {("folder", "images"): "pairs.safetensors (tensor 'images')",
            ("folder", "text"): "pairs.safetensors (tensor 'text')",
            ("folder", "extra"): "pairs.safetensors (tensor 'learned.bias')",
            ("folder", "record"): "meta.json field",
            ("hf", "images"): "(dataset column 'pixels')",
            ("hf", "text"): "(dataset column 'text_embedding')",
            ("hf", "extra"): "extra.safetensors (tensor 'learned.bias')",
            ("hf", "record"): "vlcore.json field"}[fmt, part]


def _pixel(ps):
    ps.images[1, 0, 2, 3] = float("nan")


def _text_inf(ps):
    ps.text[2, 0] = float("inf")


def _text_norm(ps):
    ps.text[3] *= 2e21 / float(ps.text[3].norm())


def _exploded(ps):
    ps.images.mul_(4e10)


def _small(ps):
    ps.images = torch.nn.functional.interpolate(ps.images, size=(8, 8))


def _extra_nan(ps):
    ps.extra = {"learned.bias": torch.tensor([0.0, float("nan"), 0.0, 0.0])}


#: (change of the pair set, where the problem is, what the message says)
TENSOR_CASES = {
    "nan_pixels": (_pixel, "images", ["NaN or infinite", "1 of 4 rows", "first row 1"]),
    "infinite_text": (_text_inf, "text", ["NaN or infinite", "first row 2"]),
    "text_norm_2e21": (_text_norm, "text", ["norm 2e+21", "row 3", "beyond the allowed 1e+06"]),
    "exploded_pixels": (_exploded, "images", ["pixels range over", "beyond the allowed +-1e+06", "--clamp-images"]),
    "images_8_px_spec_16": (_small, "images", ["8x8 px images", "'spec.image_size' is 16", "does not fit"]),
    "nan_extra_tensor": (_extra_nan, "extra", ["NaN or infinite", "first row 1"]),
}


@pytest.mark.parametrize("fmt", ["folder", "hf"])
@pytest.mark.parametrize("case", list(TENSOR_CASES))
def test_every_format_gets_the_same_checks(case, fmt, core, tmp_path):
    """Item 9: an export is checked like the folder it came from, and the message says where."""
    change, part, expected = TENSOR_CASES[case]
    folder = make(core, tmp_path, fmt, change)
    text = refused(folder, tmp_path)
    for e in [where(fmt, part), *expected]:
        assert e in text, (e, text)
    assert "are finite" not in text
    # the fix: export again (an export) or make the set again (a folder)
    assert ("Export the pair set again: `vl export" if fmt == "hf" else "Re-create it: `vl coreset --config") in text


#: hand edits of the record (meta.json, an export's vlcore.json): (edit, what the message says)
RECORD_CASES = {
    "lr_img_fast": (lambda m: m.update(lr_img="fast"), ["'lr_img' is \"fast\"", "expected a number or null"]),
    "lr_txt_negative": (lambda m: m.update(lr_txt=-1.0), ["'lr_txt' is -1.0", "positive finite number"]),
    "lr_img_nan": (lambda m: m.update(lr_img=float("nan")), ["'lr_img' is NaN", "positive finite number"]),
    "lr_img_true": (lambda m: m.update(lr_img=True), ["'lr_img' is true", "expected a number or null"]),
    "lr_img_huge": (lambda m: m.update(lr_img=1e300), ["'lr_img' is 1e+300", "at most 1e+30"]),
    "lowrank_without_factors": (lambda m: m.update(similarity={"form": "lowrank", "rank": 2, "alpha": 1.0}),
                                ["'similarity' records a low-rank", "no tensor 'similarity.diag'"]),
    "spec_image_size_changed": (lambda m: m["spec"].update(image_size=24),
                                ["'spec.image_size' is 24", "16x16 px", "set spec.image_size back to 16"]),
    "spec_image_size_string": (lambda m: m["spec"].update(image_size="16"),
                               ["'spec.image_size' is \"16\" (a JSON string), expected an integer"]),
    "spec_image_size_zero": (lambda m: m["spec"].update(image_size=0), ["'spec.image_size' is 0", "at least 1"]),
    "spec_trainable_unknown": (lambda m: m["spec"].update(trainable="most"),
                               ["'spec.trainable' is \"most\"", "'full' or 'frozen' or 'lora'"]),
    "spec_options_list": (lambda m: m["spec"].update(encoder_options=[1]), ["'spec.encoder_options' is [1]"]),
    "spec_a_list": (lambda m: m.update(spec=[1]), ["field 'spec' is [1] (a JSON array), expected an object"]),
    "warnings_a_number": (lambda m: m.update(warnings=5), ["field 'warnings' is 5", "expected a list of strings"]),
    "warnings_not_strings": (lambda m: m.update(warnings=[1]), ["field 'warnings' is [1]"]),
    "dataset_a_string": (lambda m: m.update(dataset="embedded"), ["field 'dataset' is \"embedded\""]),
    "dataset_options_list": (lambda m: m["dataset"].update(options=[1]), ["'dataset.options' is [1]"]),
    "dataset_limit_zero": (lambda m: m["dataset"].update(limit=0), ["'dataset.limit' is 0", "positive integer"]),
    "num_pairs_wrong": (lambda m: m.update(num_pairs=7), ["'num_pairs' is 7 but", "holds 4 pairs"]),
    "image_shape_wrong": (lambda m: m.update(image_shape=[3, 8, 8]), ["'image_shape' is [3, 8, 8] but"]),
    "text_dim_a_string": (lambda m: m.update(text_dim="384"), ["'text_dim' is \"384\""]),
    "source_ids_short": (lambda m: m.update(source_ids=m["source_ids"][:2]), ["'source_ids' lists 2 pairs for 4"]),
    "source_ids_malformed": (lambda m: m.update(source_ids=[[1]] * 4), ["'source_ids' is [[1]"]),
    "history_a_list": (lambda m: m.update(history=[]), ["field 'history' is [] (a JSON array)"]),
    "history_eval_malformed": (lambda m: m.update(history={"eval": [{"iteration": "5", "rsum": "high"}]}),
                               ["'history.eval[0].iteration' is \"5\"", "'history.eval[0].rsum' is \"high\""]),
    "similarity_unknown_form": (lambda m: m.update(similarity={"form": "dense"}), ["'similarity.form' is \"dense\""]),
    "seed_a_string": (lambda m: m.update(seed="0"), ["field 'seed' is \"0\""]),
    "method_a_number": (lambda m: m.update(method=5), ["field 'method' is 5"]),
    "versions_a_string": (lambda m: m.update(versions="new"), ["field 'versions' is \"new\""]),
    "record_a_list": (lambda m: [m], ["holds a JSON array, expected an object"]),
}


@pytest.mark.parametrize("fmt", ["folder", "hf"])
@pytest.mark.parametrize("case", list(RECORD_CASES))
def test_a_hand_edited_record_is_refused_naming_the_field(case, fmt, core, tmp_path):
    """Item 10: meta.json / vlcore.json edits are refused naming the file and field, never a traceback."""
    edit, expected = RECORD_CASES[case]
    folder = make(core, tmp_path, fmt, edit=edit)
    text = refused(folder, tmp_path)
    record = "vlcore.json" if fmt == "hf" else "meta.json"
    assert record in text, text
    for e in expected:
        assert e in text, (e, text)
    assert ("Export the pair set again: `vl export" if fmt == "hf" else "Re-create it: `vl ") in text  # the fix


def _truncate(p: Path):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


def _flip(p: Path):
    data = bytearray(p.read_bytes())
    data[len(data) // 2] ^= 0xFF
    p.write_bytes(bytes(data))


def _drop_key(key):
    def f(p: Path):
        obj = json.loads(p.read_text())
        obj.pop(key)
        p.write_text(json.dumps(obj))
    return f


def _with_extra(ps):
    ps.extra = {"learned.bias": torch.zeros(4)}


#: damage to an export's files: (file, damage, change of the set before export, what the message says)
EXPORT_DAMAGE = {
    "truncated_vlcore_json": ("vlcore.json", _truncate, None, ["vlcore.json is not readable JSON", "truncated"]),
    "no_tensor_checksum": ("vlcore.json", _drop_key("tensors_sha256"), None, ["records no tensors_sha256"]),
    "format_changed": ("vlcore.json", lambda p: p.write_text(json.dumps({**json.loads(p.read_text()), "format": 1})),
                       None, ["vlcore.json field 'format' is 1"]),
    "no_state_json": ("state.json", Path.unlink, None, ["has no state.json", "incomplete"]),
    "truncated_arrow": ("data-00000-of-00001.arrow", _truncate, None, ["dataset files cannot be read"]),
    "changed_pixels": ("data-00000-of-00001.arrow", None, None, ["do not match the checksum", "'pixels'"]),
    "changed_extra": ("extra.safetensors", _flip, _with_extra, ["extra.safetensors", "checksum"]),
    "deleted_extra": ("extra.safetensors", Path.unlink, _with_extra, ["has no extra.safetensors"]),
}


@pytest.mark.parametrize("case", list(EXPORT_DAMAGE))
def test_a_damaged_export_is_refused_with_the_fix(case, core, tmp_path):
    name, damage, change, expected = EXPORT_DAMAGE[case]
    folder = make(core, tmp_path, "hf", change)
    if damage is None:  # change one pixel value inside the arrow file, nothing else
        from vlcore.data.pairset import PairSet

        arrow = folder / name
        data, first = arrow.read_bytes(), PairSet.load(core).images.flatten()[:8].numpy().tobytes()
        assert data.count(first) == 1
        at = data.index(first)
        arrow.write_bytes(data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1:])
    else:
        damage(folder / name)
    text = refused(folder, tmp_path)
    for e in [*expected, "Export the pair set again", "vl export"]:
        assert e in text, (e, text)


def test_the_record_schema_covers_every_field_read(core, tmp_path):
    """A wrong type in any field of the record (top level, spec, dataset, similarity) is named."""
    from vlcore.core.errors import DataError
    from vlcore.data.checks import DATASET_FIELDS, META_FIELDS, SIMILARITY_FIELDS, _spec_fields
    from vlcore.data.pairset import PairSet
    from vlcore.model.encoder import ModelSpec

    assert set(_spec_fields()) == set(ModelSpec.__dataclass_fields__)  # derived: a new field is checked too
    good = json.loads((core / "meta.json").read_text())
    sweeps = [("", META_FIELDS), ("spec.", _spec_fields()), ("dataset.", DATASET_FIELDS),
              ("similarity.", SIMILARITY_FIELDS)]
    checked = 0
    for prefix, fields in sweeps:
        for name, (_, ok) in fields.items():
            bad = next(v for v in ([[1]], {"x": 1}, "x", 5, True) if not ok(v))
            meta = json.loads(json.dumps(good))
            target = {"": meta, "spec.": meta["spec"], "dataset.": meta["dataset"]}.get(prefix)
            if target is None:
                meta["similarity"] = target = {"form": "identity"}
            target[name] = bad
            ws = tmp_path / f"{prefix}{name}"
            ws.mkdir()
            for f in ("pairs.safetensors", "captions.json"):
                (ws / f).write_bytes((core / f).read_bytes())
            (ws / "meta.json").write_text(json.dumps(meta))
            with pytest.raises(DataError) as err:
                PairSet.load(ws)
            assert prefix + name in str(err.value) and "meta.json" in str(err.value), (prefix + name, err.value)
            checked += 1
    assert checked >= 40


def test_a_set_that_does_not_fit_its_spec_is_not_exported(core, tmp_path):
    """`vl export` reads through the same path: a set that does not fit its spec is not exported."""
    folder = make(core, tmp_path, "folder", _small)
    before = tree(tmp_path)
    res = invoke_vl("export", folder, tmp_path / "out", ok=False)
    text = " ".join(res.output.split())
    assert res.exit_code == 1 and "Traceback" not in res.output, res.output
    assert "8x8 px images" in text and "'spec.image_size' is 16" in text
    assert not (tmp_path / "out").exists() and tree(tmp_path) == before


def test_a_damaged_eval_result_is_named_by_export(core, tmp_path):
    folder = make(core, tmp_path, "folder")
    (folder / "eval-dev").mkdir()
    (folder / "eval-dev" / "details.json").write_text(json.dumps({"split": "dev", "seeds": [0]}))
    (folder / "eval-dev" / "metrics.json").write_text(json.dumps({"tr_r1": "high"}))
    from vlcore.core.errors import DataError
    from vlcore.data.export import export_hf

    with pytest.raises(DataError, match=r"metrics.json: field 'tr_r1' is 'high', expected a number"):
        export_hf(folder, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_integer_tensors_are_refused(core, tmp_path):
    """Tensors of another dtype (here uint8 pixels, with a consistent checksum) are named, not cast."""
    from safetensors.torch import load_file, save_file

    folder = make(core, tmp_path, "folder")
    tensors = load_file(str(folder / "pairs.safetensors"))
    tensors["images"] = (tensors["images"] * 255).to(torch.uint8)
    save_file(tensors, str(folder / "pairs.safetensors"))
    meta = json.loads((folder / "meta.json").read_text())
    meta["pairs_sha256"] = hashlib.sha256((folder / "pairs.safetensors").read_bytes()).hexdigest()
    (folder / "meta.json").write_text(json.dumps(meta))
    text = refused(folder, tmp_path)
    assert "pairs.safetensors (tensor 'images') holds torch.uint8 values, expected floats" in text, text


def test_a_spec_the_set_does_not_fit_is_a_usage_error(core):
    """check_spec: the model spec a set is used with (the flags of `vl eval` applied) must fit it."""
    from dataclasses import replace

    from vlcore.core.errors import ConfigError
    from vlcore.data.checks import check_spec
    from vlcore.data.pairset import PairSet
    from vlcore.model.encoder import ModelSpec

    ps = PairSet.load(core)
    spec = ModelSpec.from_dict(ps.meta["spec"])
    check_spec(ps, spec)
    with pytest.raises(ConfigError, match=r"--image-size 24: the pair set's images are 16x16 px.*--image-size 16"):
        check_spec(ps, replace(spec, image_size=24))
    with pytest.raises(ConfigError, match=r"--text-encoder bert: .* made by the text encoder 'minilm'"):
        check_spec(ps, replace(spec, text_encoder="bert"))
    assert ConfigError.exit_code == 2


def test_a_subprocess_eval_of_a_nan_export_is_a_clear_error(core, tmp_path):
    """The case of the issue, as a user runs it: NaN pixels in an export; exit 1, the column named."""
    folder = make(core, tmp_path, "hf", _pixel)
    proc = run_vl("eval", folder, check=False, env={"OMP_NUM_THREADS": "1"})
    assert proc.returncode == 1, proc.stderr
    assert "Traceback" not in proc.stderr + proc.stdout
    assert "(dataset column 'pixels') holds NaN or infinite values" in " ".join(proc.stderr.split())


# ------------------------------------------------------------------------------ item 12: datasets
def test_the_export_round_trip_is_exact(core, tmp_path):
    """Dataset.from_dict + save_to_disk + load_from_disk (the export path) with the installed datasets:
    the export reads back as the same pair set, extras and step sizes included."""
    import datasets

    from vlcore.data.export import export_hf
    from vlcore.data.pairset import PairSet

    def learned(ps):
        ps.lr_img, ps.lr_txt = 0.25, 3.0
        ps.extra = {"learned.bias": torch.linspace(-1, 1, 4)}

    src = make(core, tmp_path, "folder", learned)
    export_hf(src, tmp_path / "export")
    assert len(datasets.load_from_disk(str(tmp_path / "export"))) == 4
    a, b = PairSet.load(src), PairSet.load(tmp_path / "export")
    assert torch.equal(a.images, b.images) and torch.equal(a.text, b.text) and a.captions == b.captions
    assert (b.lr_img, b.lr_txt) == (0.25, 3.0) and b.source_ids == a.source_ids
    assert torch.equal(b.extra["learned.bias"], a.extra["learned.bias"])
    assert "lr_img=0.25, lr_txt=3" in (tmp_path / "export" / "README.md").read_text()


def _pins() -> dict[str, list[str]]:
    import sys

    if sys.version_info >= (3, 11):
        import tomllib
    else:  # pragma: no cover
        import tomli as tomllib
    root = Path(__file__).resolve().parents[1]
    return tomllib.loads((root / "pyproject.toml").read_text())["project"]["optional-dependencies"]


def test_the_datasets_pins_hold_for_what_is_installed():
    """The hf and test extras pin datasets (and dill) to the tested range, and what runs here is in it."""
    from importlib.metadata import version

    from packaging.requirements import Requirement

    extras = _pins()
    for extra in ("hf", "test"):
        reqs = {r.name: r for r in map(Requirement, extras[extra])}
        for name in ("datasets", "dill"):
            spec = reqs[name].specifier
            assert any(s.operator == "<" for s in spec), f"the {extra} extra leaves {name} unbounded above"
            assert version(name) in spec, f"{name} {version(name)} is outside the {extra} extra's {spec}"
