"""The one validation path of pair sets, whatever their format.

Every reader (a pair-set folder: :meth:`vlcore.data.pairset.PairSet.load`; a ``vl export --format hf``
folder: :func:`vlcore.data.export.load_hf`) hands what it read to :func:`assemble`: the record's schema (:data:`META_FIELDS`,
the types of every field vlcore reads), tensors consistent with the record and the model spec (the
images are (N, 3, S, S) at ``spec.image_size`` S), and the value ranges below; each message names
the file and the field.

Documented value ranges (:func:`value_problems`; ``vl eval`` refuses a set outside them): every
tensor is finite; coresets hold real images in [0, 1]; a distilled set's pixels are optimised freely
(``--clamp-images`` keeps them in [0, 1]) but stay within +-:data:`PIXEL_LIMIT`; each text embedding's
norm is at most :data:`TEXT_LIMIT`; learned step sizes are positive and at most
:data:`vlcore.core.config.MAX_LR`.  The distillation loop rolls back any update that leaves these ranges.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from vlcore.artifacts.io import read_json
from vlcore.core.config import MAX_LR
from vlcore.core.errors import ConfigError, DataError
from vlcore.model.encoder import ModelSpec
from vlcore.model.metrics import KEYS

#: the largest absolute pixel value of a pair set (real images are in [0, 1]).  Unclamped
#: distillation moves pixels far: about +-700 after 60 iterations at the paper's learning rate 1000
#: on the embedded scenes; an update that exploded (--lr-images 1e12: +-6e11) lands far beyond
PIXEL_LIMIT = 1e6
#: the largest norm of a text embedding of a pair set (real caption embeddings: about 1 to 20; about
#: 4e3 after 60 iterations at the paper's learning rate 1000)
TEXT_LIMIT = 1e6

#: tensors of pairs.safetensors that are not ``extra``
_CORE = ("images", "text")


@dataclass(frozen=True)
class Origin:
    """Where the parts of a pair set were read from, so that every message names the file and the
    field: the record (``meta.json``, an export's ``vlcore.json``), the tensors and the captions."""

    folder: Path
    record: Path
    #: where each tensor lives, by its name in the pair set ("images", "text", an extra's name)
    tensors: dict[str, str]
    #: where a tensor not named in ``tensors`` (an extra) lives
    extra_file: str
    captions: str
    #: how to make the set again (appended to every message)
    redo: str

    def tensor(self, name: str) -> str:
        return self.tensors.get(name) or f"{self.extra_file} (tensor '{name}')"

    def field(self, name: str) -> str:
        return f"{self.record} field '{name}'"


def folder_origin(path: Path, meta=None) -> Origin:
    st = path / "pairs.safetensors"
    return Origin(path, path / "meta.json", {"images": f"{st} (tensor 'images')", "text": f"{st} (tensor 'text')"},
                  str(st), str(path / "captions.json"), _redo(path, meta))


def assemble(cls, origin: Origin, meta: Any, images: torch.Tensor, text: torch.Tensor, captions: Any,
             extra: dict[str, torch.Tensor], *, check_values: bool = True):
    """The pair set (a ``cls``, :class:`vlcore.data.pairset.PairSet`) of parts a reader produced (any format), after every check a pair set must pass:
    the record's schema (:func:`meta_problems`), tensors and captions consistent with each other,
    with the record and with the model spec (:func:`shape_problems`), and with ``check_values`` the
    documented value ranges (:func:`value_problems`).  DataError listing every problem found."""
    problems = meta_problems(meta, origin)
    if problems:
        raise DataError(f"Pair set '{origin.folder}': its record is not valid: {'; '.join(problems)}. The file was "
                        f"edited or damaged: restore the field, or make the set again. {origin.redo}")
    problems = shape_problems(origin, meta, images, text, captions, extra)
    if problems:
        raise DataError(f"Pair set '{origin.folder}' is inconsistent: {'; '.join(problems)}. The files were edited "
                        f"or the set was made by hand. {origin.redo}")
    ids = meta.get("source_ids")
    ps = cls(images=images, text=text, captions=list(captions), meta=meta, lr_img=meta.get("lr_img"),
             lr_txt=meta.get("lr_txt"), source_ids=[(str(a), int(b)) for a, b in ids] if ids is not None else None,
             extra=dict(extra))
    if check_values:
        problems = value_problems(ps, origin)
        if problems:
            raise DataError(f"Pair set '{origin.folder}' is outside the documented value ranges: "
                            f"{'; '.join(problems)}. Models cannot be trained on it meaningfully: the set is "
                            f"damaged, or the run that made it diverged. {origin.redo} For a distillation, "
                            f"`--clamp-images` keeps pixels in [0, 1].")
    return ps


# ----------------------------------------------------------------------------- the record's schema
def _int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _num(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _str_list(v) -> bool:
    return isinstance(v, list) and all(isinstance(x, str) for x in v)


def _opt(check):
    return lambda v: v is None or check(v)


def _dict(v) -> bool:
    return isinstance(v, dict)


def _str(v) -> bool:
    return isinstance(v, str)


def _source_id(v) -> bool:
    return isinstance(v, (list, tuple)) and len(v) == 2 and isinstance(v[0], (str, int)) \
        and not isinstance(v[0], bool) and _int(v[1])


def _spec_fields() -> dict[str, tuple[str, Any]]:
    """ModelSpec's fields with their JSON type, from its type hints (a new field is checked too)."""
    import typing

    out = {}
    for name, hint in typing.get_type_hints(ModelSpec).items():
        args = typing.get_args(hint)
        if typing.get_origin(hint) is typing.Literal:
            out[name] = (" or ".join(map(repr, args)), lambda v, a=args: isinstance(v, str) and v in a)
        elif hint is bool:
            out[name] = ("true or false", lambda v: isinstance(v, bool))
        elif hint is int:
            out[name] = ("an integer", _int)
        elif hint is float:
            out[name] = ("a number", lambda v: _num(v) and math.isfinite(v))
        elif hint is str:
            out[name] = ("a string", _str)
        elif hint is dict or typing.get_origin(hint) is dict:
            out[name] = ("an object", _dict)
        else:  # pragma: no cover - a new kind of field: only JSON-ness can be checked
            out[name] = ("a JSON value", lambda v: True)
    return out


#: lower bounds of ModelSpec's numeric fields (an image of 0 px, a LoRA of rank 0 cannot be built)
_SPEC_MIN = {"image_size": 1, "embed_dim": 0, "dropout": 0, "lora_rank": 1, "lora_alpha": 0}

#: every top-level field of a pair set's record that vlcore reads, with its JSON type (absent is
#: always allowed: a field not recorded takes its default)
META_FIELDS: dict[str, tuple[str, Any]] = {
    "format": ("a string", _str),
    "kind": ("a string", _str),
    "method": ("a string", _str),
    "seed": ("an integer or null", _opt(_int)),
    "config": ("an object", _dict),
    "spec": ("an object (the model spec) or null", _opt(_dict)),
    "dataset": ("an object (the source dataset) or null", _opt(_dict)),
    "warnings": ("a list of strings", _str_list),
    "lr_img": ("a number or null (a learned step size)", _opt(_num)),
    "lr_txt": ("a number or null (a learned step size)", _opt(_num)),
    "num_pairs": ("an integer", _int),
    "image_shape": ("a list of 3 integers [3, H, W]", lambda v: isinstance(v, list) and len(v) == 3
                    and all(_int(x) for x in v)),
    "text_dim": ("an integer", _int),
    "source_ids": ("null or a list of [image id, caption index] pairs",
                   _opt(lambda v: isinstance(v, list) and all(_source_id(x) for x in v))),
    "similarity": ("an object or null", _opt(_dict)),
    "history": ("an object", _dict),
    "iterations_done": ("an integer", _int),
    "versions": ("an object", _dict),
    "pairs_sha256": ("a string", _str),
    "tensors_sha256": ("a string", _str),
    "extra_sha256": ("a string", _str),
    "exported_from": ("a string", _str),
    "recorded_results": ("a list of objects", lambda v: isinstance(v, list) and all(_dict(x) for x in v)),
}

#: fields of the ``dataset`` record that vlcore reads
DATASET_FIELDS: dict[str, tuple[str, Any]] = {
    "name": ("a string or null", _opt(_str)), "root": ("a string or null", _opt(_str)),
    "options": ("an object or null", _opt(_dict)), "limit": ("a positive integer or null",
                                                            _opt(lambda v: _int(v) and v >= 1)),
    "license": ("a string or null", _opt(_str)), "eval_split": ("a string", _str),
    "pairs": ("an integer or null", _opt(_int)), "images": ("an integer or null", _opt(_int)),
}

#: fields of the ``similarity`` record (LoRS) that vlcore reads
SIMILARITY_FIELDS: dict[str, tuple[str, Any]] = {
    "form": ("'lowrank' or 'identity'", lambda v: v in ("lowrank", "identity")),
    "alpha": ("a finite number", lambda v: _num(v) and math.isfinite(v)),
    "rank": ("a non-negative integer", lambda v: _int(v) and v >= 0),
    "clamp": ("true or false", lambda v: isinstance(v, bool)),
}


def _shown(v) -> str:
    text = json.dumps(v, default=str)
    return f"{text[:60]}..." if len(text) > 63 else text


def _json_type(v) -> str:
    return {dict: "object", list: "array", str: "string", bool: "boolean", type(None): "null"}.get(
        type(v), "number" if _num(v) else type(v).__name__)


def _check_fields(obj: dict, fields: dict, prefix: str, origin: Origin, out: list[str]) -> None:
    for name, (expected, ok) in fields.items():
        if name in obj and not ok(obj[name]):
            out.append(f"{origin.field(prefix + name)} is {_shown(obj[name])} (a JSON {_json_type(obj[name])}), "
                       f"expected {expected}")


def meta_problems(meta: Any, origin: Origin) -> list[str]:
    """What is wrong with the types of a pair set's record (every field vlcore reads, in one place;
    ranges and consistency with the tensors are :func:`shape_problems` and :func:`value_problems`)."""
    if not isinstance(meta, dict):
        return [f"{origin.record} holds a JSON {_json_type(meta)}, expected an object (the pair set's record)"]
    out: list[str] = []
    _check_fields(meta, META_FIELDS, "", origin, out)
    spec = meta.get("spec")
    if isinstance(spec, dict):
        _check_fields(spec, _spec_fields(), "spec.", origin, out)
        for name, low in _SPEC_MIN.items():
            v = spec.get(name)
            if _num(v) and v < low:
                out.append(f"{origin.field('spec.' + name)} is {v}, expected at least {low}")
    ds = meta.get("dataset")
    if isinstance(ds, dict):
        _check_fields(ds, DATASET_FIELDS, "dataset.", origin, out)
    sim = meta.get("similarity")
    if isinstance(sim, dict):
        if "form" not in sim:
            out.append(f"{origin.field('similarity.form')} is missing, expected 'lowrank' or 'identity'")
        _check_fields(sim, SIMILARITY_FIELDS, "similarity.", origin, out)
        if sim.get("form") == "lowrank" and "alpha" not in sim:
            out.append(f"{origin.field('similarity.alpha')} is missing (a low-rank similarity needs it)")
    hist = meta.get("history")
    if isinstance(hist, dict) and "eval" in hist:
        evals = hist["eval"]
        if not isinstance(evals, list):
            out.append(f"{origin.field('history.eval')} is {_shown(evals)}, expected a list of evaluations")
        else:
            for i, e in enumerate(evals):
                where = f"history.eval[{i}]"
                if not isinstance(e, dict):
                    out.append(f"{origin.field(where)} is {_shown(e)}, expected an object")
                    continue
                if not _int(e.get("iteration")):
                    out.append(f"{origin.field(where + '.iteration')} is {_shown(e.get('iteration'))}, expected "
                               f"an integer")
                out += [f"{origin.field(f'{where}.{k}')} is {_shown(e[k])}, expected a number"
                        for k in (*KEYS, "rsum") if k in e and e[k] is not None and not _num(e[k])]
    return out


# ----------------------------------------------------------------------------- shapes and sizes
def shape_problems(origin: Origin, meta: dict, images, text, captions, extra: dict) -> list[str]:
    """What is inconsistent between the tensors, the captions, the record and the model spec."""
    out: list[str] = []
    img_at, txt_at = origin.tensor("images"), origin.tensor("text")
    for name, t in (("images", images), ("text", text), *extra.items()):
        if not isinstance(t, torch.Tensor) or not t.is_floating_point():
            out.append(f"{origin.tensor(name)} holds {getattr(t, 'dtype', type(t).__name__)} values, expected floats")
    if out:
        return out
    if images.dim() != 4 or images.shape[1] != 3:
        out.append(f"{img_at} has shape {list(images.shape)}, expected (N, 3, H, W): N RGB images")
    if text.dim() != 2:
        out.append(f"{txt_at} has shape {list(text.shape)}, expected (N, D): one embedding per pair")
    if out:
        return out
    n = images.shape[0]
    if n == 0:
        out.append(f"{img_at} holds no pairs")
    if text.shape[0] != n:
        out.append(f"{img_at} holds {n} images but {txt_at} {text.shape[0]} text embeddings; they must match")
    if not (isinstance(captions, list) and all(isinstance(c, str) for c in captions)):
        out.append(f"{origin.captions} holds {_shown(captions)}, expected a list of strings (one caption a pair)")
    elif len(captions) != n:
        out.append(f"{origin.captions} holds {len(captions)} captions for {n} pairs; they must match")
    h, w = images.shape[2:]
    shape = list(images.shape[1:])
    if "num_pairs" in meta and meta["num_pairs"] != n:
        out.append(f"{origin.field('num_pairs')} is {meta['num_pairs']} but {img_at} holds {n} pairs")
    if "image_shape" in meta and meta["image_shape"] != shape:
        out.append(f"{origin.field('image_shape')} is {meta['image_shape']} but {img_at} holds {shape} images")
    if "text_dim" in meta and meta["text_dim"] != text.shape[1]:
        out.append(f"{origin.field('text_dim')} is {meta['text_dim']} but {txt_at} holds {text.shape[1]}-d "
                   f"embeddings")
    size = (meta.get("spec") or {}).get("image_size")
    if size is not None and (h, w) != (size, size):
        out.append(f"{img_at} holds {h}x{w} px images but {origin.field('spec.image_size')} is {size}: the set does "
                   f"not fit its model spec (models are trained and evaluated at {size}x{size} px){_size_fix(h, w)}")
    ids = meta.get("source_ids")
    if ids is not None and len(ids) != n:
        out.append(f"{origin.field('source_ids')} lists {len(ids)} pairs for {n} pairs; they must match")
    clash = set(extra) & set(_CORE)
    if clash:
        out.append(f"extra tensors may not be named {sorted(clash)}")
    sim = meta.get("similarity") or {}
    if sim.get("form") == "lowrank":
        shapes = {k: list(extra[k].shape) for k in ("similarity.diag", "similarity.left", "similarity.right")
                  if k in extra}
        missing = [k for k in ("similarity.diag", "similarity.left", "similarity.right") if k not in shapes]
        if missing:
            out.append(f"{origin.field('similarity')} records a low-rank similarity but {origin.extra_file} has no "
                       f"tensor {', '.join(map(repr, missing))}")
        else:
            r = shapes["similarity.left"][1:] or [None]
            if shapes["similarity.diag"] != [n] or shapes["similarity.left"] != [n, r[0]] \
                    or shapes["similarity.right"] != shapes["similarity.left"]:
                out.append(f"{origin.extra_file}: the similarity factors have shapes diag {shapes['similarity.diag']}, "
                           f"left {shapes['similarity.left']}, right {shapes['similarity.right']}; expected ({n},), "
                           f"({n}, r) and ({n}, r) for {n} pairs")
    return out


def _size_fix(h: int, w: int) -> str:
    if h == w:
        return f"; if the record was edited, set spec.image_size back to {h}"
    return "; pair-set images are square"


def check_spec(ps, spec) -> None:
    """ConfigError (a usage error) unless the pair set fits the model spec ``spec`` it is about to be
    used with: its images at ``spec.image_size``, and its text embeddings made by ``spec``'s text
    encoder when the set records one (``vl eval --image-size`` / ``--text-encoder`` that differ from
    the set's).  The caller: ``vl eval``, once the flags are applied to the set's spec."""
    h, w = ps.images.shape[2:]
    if (h, w) != (spec.image_size, spec.image_size):
        raise ConfigError(f"--image-size {spec.image_size}: the pair set's images are {h}x{w} px, and a pair set is "
                          f"used at the image size it was made at. Drop --image-size (or pass --image-size {h}).")
    made_by = (ps.meta.get("spec") or {}).get("text_encoder")
    if made_by is not None and made_by != spec.text_encoder:
        raise ConfigError(f"--text-encoder {spec.text_encoder}: the pair set's text embeddings were made by the text "
                          f"encoder '{made_by}', and a pair set is used with the frozen text encoder it was made "
                          f"with. Drop --text-encoder (or pass --text-encoder {made_by}).")


# ----------------------------------------------------------------------------- value ranges
def value_problems(ps, origin: Origin | None = None) -> list[str]:
    """What is outside the documented value ranges of a pair set (see the module docstring), each
    naming where it was read from when ``origin`` says."""
    def at(name):
        return origin.tensor(name) if origin is not None else name

    out = []
    for name, t in (("images", ps.images), ("text", ps.text), *ps.extra.items()):
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            bad = (~torch.isfinite(t.reshape(t.shape[0], -1))).any(1) if t.dim() else torch.ones(1, dtype=torch.bool)
            first = int(bad.nonzero()[0, 0])
            out.append(f"{at(name)} holds NaN or infinite values ({int(bad.sum())} of {bad.numel()} rows, the first "
                       f"row {first})")
    img = ps.images.float()
    finite = torch.isfinite(img)
    if img.numel() and finite.any():
        big = img.abs().where(finite, torch.zeros(())).reshape(img.shape[0], -1).amax(1)
        if float(big.max()) > PIXEL_LIMIT:
            vals = img[finite]
            out.append(f"{at('images')}: pixels range over [{float(vals.min()):.3g}, {float(vals.max()):.3g}] "
                       f"(row {int(big.argmax())}), beyond the allowed +-{PIXEL_LIMIT:g}")
    if ps.text.numel():
        txt = ps.text.double()  # float32 squares overflow from a norm of about 2e19 on
        norm = txt.where(torch.isfinite(txt), torch.zeros((), dtype=txt.dtype)).norm(dim=-1)
        if float(norm.max()) > TEXT_LIMIT:
            out.append(f"{at('text')}: a text embedding has norm {float(norm.max()):.3g} (row {int(norm.argmax())}), "
                       f"beyond the allowed {TEXT_LIMIT:g}")
    for side in ("lr_img", "lr_txt"):
        v = getattr(ps, side)
        if v is not None and not (_num(v) and 0 < v <= MAX_LR):
            where = origin.field(side) if origin is not None else side
            out.append(f"the learned step size {where} is {_shown(v)}, expected a positive finite number at most "
                       f"{MAX_LR:g} (or null: the evaluator's default learning rate)")
    return out


# ----------------------------------------------------------------------------- reading files
def _redo(path: Path, meta=None) -> str:
    """How to make a damaged pair set again."""
    kind = meta.get("kind") if isinstance(meta, dict) and isinstance(meta.get("kind"), str) else None
    cmd = {"distilled": "distill", "coreset": "coreset"}.get(kind, "distill|coreset")
    cont = "" if kind == "coreset" else " (an interrupted distillation continues with --resume instead)"
    return (f"Re-create it: `vl {cmd} --config {path / 'config.toml'} --out NEW_FOLDER` repeats the run that made "
            f"it{cont}.")


def read_record(path: Path, redo: str):
    """A JSON file of a pair set, or DataError naming it (unreadable, truncated, not UTF-8)."""
    try:
        return read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); it is truncated or damaged. "
                        f"{redo}") from None


_json = read_record
