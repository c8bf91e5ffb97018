"""Expert buffers: the folder Stage 1 writes (:mod:`vlcore.training.experts`) and every reader checks.

A *buffer* is a folder:

    index.json                 format, model spec, text dim, per-modality parameter names and
                               shapes, dataset, expert config, base seed, versions, and the finished
                               experts: each file's sha256 and size
    expert_000.safetensors     for every epoch e = 0..T: ``img.e`` and ``txt.e``, the flat vector of
                               that modality's trainable parameters after epoch e (e = 0: the start)

Each expert file is written atomically, then recorded in index.json, so an interrupted run resumes
at the next unfinished expert.  A buffer whose files do not match index.json (deleted, truncated,
changed) is refused, and a distillation's run key holds the experts' checksums, so a checkpoint
never resumes against another buffer.  The same seed gives byte-identical expert files.  Experts
are independent and can be trained in parallel worker processes.

Each expert file carries what made it in its safetensors metadata (``vlcore``: the expert's index,
seed and epochs, and the buffer's settings: model spec, text dim, parameter layout, expert config
but the number of experts, the training data's fingerprint).  ``--resume`` adopts an expert file it
finds on disk only if those match the buffer's and its tensors fit the buffer's layout; any other
file named like an expert (another seed, other epochs or learning rate, another dataset, another
expert's file renamed, a damaged or unreadable one) is refused, naming the file, and the buffer is
left as it was.  vl never leaves a partial file under an expert's name (an interrupted write leaves
only its temporary file, which the next command removes), so an unreadable ``expert_NNN`` file is
not vl's interrupted write and is not deleted or retrained over: moving it away is the fix.  A file
of an older vlcore, whose metadata records only index, seed and epochs, is checked on those and on
its layout.  A distillation reading a buffer checks the same (an older vlcore's ``--resume`` could
adopt a foreign file) and refuses the buffer with a :class:`~vlcore.core.errors.DataError`.
"""
from __future__ import annotations

import json
import logging
import os
import re
from pathlib import Path

import torch

from vlcore.artifacts.io import fingerprint, load_checked_tensors, read_json, sha256_file
from vlcore.core.errors import DataError, IncompatibleError
from vlcore.model.encoder import DualEncoder, ModelSpec
from vlcore.model.params import MODALITIES, ParamLayout

log = logging.getLogger(__name__)

FORMAT = "vlcore.buffer/1"


def _spec_for_compare(spec: dict) -> dict:
    d = dict(spec)
    d.pop("dropout", None)
    for k in ModelSpec.EXECUTION_FIELDS:  # how the backbone runs, not which experts fit
        d.pop(k, None)
    return d


# ------------------------------------------------------------------------------ what an expert file is
EXPERT_NAME = re.compile(r"expert_(\d{3,})\.safetensors")


def buffer_settings(index: dict) -> dict:
    """What every expert file of the buffer ``index`` describes was made with (recorded in each
    file's metadata): model spec, text dim, parameter layout (its fingerprint), expert config but the
    number of experts, and the training data's fingerprint."""
    expert = {k: v for k, v in (index.get("expert") or {}).items() if k != "num_experts"}
    return json.loads(json.dumps({"spec": index.get("spec"), "text_dim": index.get("text_dim"),
                                  "layout": fingerprint(index.get("layout")), "expert": expert,
                                  "data": (index.get("dataset") or {}).get("fingerprint")}, sort_keys=True))


def _settings_diff(have: dict, want: dict) -> list[str]:
    what = {"spec": "model spec", "text_dim": "text dim", "layout": "parameter layout",
            "data": "training data (dataset fingerprint)"}
    diffs = []
    for k in sorted(set(have) | set(want)):
        a, b = have.get(k), want.get(k)
        if a == b:
            continue
        if k == "expert" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"{f}: file has {a.get(f)!r}, buffer {b.get(f)!r}" for f in sorted(set(a) | set(b))
                      if a.get(f) != b.get(f)]
        elif k == "spec" and isinstance(a, dict) and isinstance(b, dict):
            diffs += [f"model {f}: file has {a.get(f)!r}, buffer {b.get(f)!r}" for f in sorted(set(a) | set(b))
                      if a.get(f) != b.get(f)]
        else:
            diffs.append(f"{what.get(k, k)}: file has {a!r}, buffer {b!r}")
    return diffs


def _expected_tensors(index: dict) -> dict[str, list[int]]:
    """The tensors an expert file of the buffer ``index`` describes holds: name -> shape."""
    epochs = int(index["expert"]["epochs"])
    sizes = {m: sum(_numel(shape) for _, shape in index["layout"][m]) for m in MODALITIES}
    return {f"{m}.{e}": [sizes[m]] for m in MODALITIES if sizes[m] for e in range(epochs + 1)}


def _tensors_problem(shapes: dict[str, tuple[list[int], str]], index: dict) -> str | None:
    """Why tensors ``name -> (shape, dtype)`` are not an expert trajectory of buffer ``index``."""
    want = _expected_tensors(index)
    missing, extra = sorted(set(want) - set(shapes)), sorted(set(shapes) - set(want))
    if missing or extra:
        parts = ([f"lacks {', '.join(missing[:4])}{' ...' if len(missing) > 4 else ''}"] if missing else []) + \
                ([f"has {', '.join(extra[:4])}{' ...' if len(extra) > 4 else ''} besides"] if extra else [])
        return f"its tensors do not fit the buffer ({'; '.join(parts)})"
    for name, (shape, dtype) in sorted(shapes.items()):
        if list(shape) != want[name] or dtype not in ("F32", "float32", "torch.float32"):
            return (f"its tensor {name} is {dtype} of shape {list(shape)}, the buffer's parameter layout needs "
                    f"F32 of shape {want[name]}")
    return None


def expert_problem(path: Path, index: dict) -> str | None:
    """Why the file ``path`` is not an expert of the buffer ``index`` describes (None: it is one):
    unreadable, another expert's (renamed), another seed, other epochs, other settings, tensors that
    do not fit.  Reads the file's header only."""
    from safetensors import safe_open

    m = EXPERT_NAME.fullmatch(path.name)
    if m is None:
        return "its name is not one vl gives an expert file (expert_NNN.safetensors)"
    i = int(m.group(1))
    try:
        with safe_open(str(path), framework="pt") as f:
            meta = f.metadata() or {}
            shapes = {k: (f.get_slice(k).get_shape(), f.get_slice(k).get_dtype()) for k in f.keys()}
    except Exception as exc:
        return f"it is not a readable trajectory file (damaged or truncated: {type(exc).__name__}: {exc})"
    try:
        info = json.loads(meta["vlcore"])
        if not isinstance(info, dict):
            raise TypeError
    except (KeyError, TypeError, ValueError):
        return "it records no settings of `vl experts` in its metadata (vl did not write it)"
    expert = index.get("expert") or {}
    problems = []
    if info.get("expert") != i:
        problems.append(f"it holds expert {info.get('expert')!r}'s trajectory, not expert {i}'s (renamed?)")
    if info.get("epochs") != expert.get("epochs"):
        problems.append(f"it holds {info.get('epochs')!r} epochs, the buffer {expert.get('epochs')!r}")
    want_seed = expert.get("seed", 0) + 1000 * i if isinstance(expert.get("seed", 0), int) else None
    if info.get("seed") != want_seed:
        problems.append(f"it was trained from seed {info.get('seed')!r}, expert {i} of this buffer from seed "
                        f"{want_seed!r} (--seed {expert.get('seed')!r} + 1000 x {i})")
    if "settings" in info:  # an older vlcore's file records index, seed and epochs only
        diffs = [d for d in _settings_diff(info["settings"] if isinstance(info["settings"], dict) else {},
                                           buffer_settings(index))
                 if not d.startswith(("seed:", "epochs:"))]  # already said
        if diffs:
            problems.append("it was made with other settings (" + "; ".join(diffs) + ")")
    if not problems:
        t = _tensors_problem(shapes, index)
        if t:
            problems.append(t)
    return "; ".join(problems) or None


def file_record(path: Path) -> dict:
    """What index.json records of an expert file: its sha256 and size."""
    return {"sha256": sha256_file(path), "bytes": path.stat().st_size}


def _retrain(path: Path) -> str:
    return (f"Restore it, or delete it and retrain it: `vl experts --config {path / 'config.toml'} --out {path} "
            f"--resume` trains the experts a buffer lacks.")


class LoadsExperts:
    """For a run's runtime object with ``buffer`` and an ``experts`` dict: the experts' flat
    parameters by ``"{modality}.{epoch}"`` (``img.0``, ``txt.3``), loaded once and cached (at most
    65 experts kept)."""

    def expert(self, e: int) -> dict[str, torch.Tensor]:
        if e not in self.experts:
            if len(self.experts) > 64:
                self.experts.pop(next(iter(self.experts)))
            self.experts[e] = self.buffer.load(e)
        return self.experts[e]


class Buffer:
    """A folder of expert trajectories."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        if not (self.path / "index.json").exists():
            raise DataError(f"'{self.path}' is not an expert buffer (no index.json). Create one with "
                            f"`vl experts ... --out {self.path}`.")
        self.index = _read_index(self.path / "index.json")
        try:
            self.spec = ModelSpec.from_dict(self.index["spec"])
            self.layout: dict[str, list[list]] = self.index["layout"]
            self.epochs: int = int(self.index["expert"]["epochs"])
            experts = self.index["experts"]
            if not isinstance(experts, dict):
                raise TypeError("experts is not a mapping")
            _expected_tensors(self.index)  # what each expert file must hold: the layout and epochs make sense
        except (KeyError, TypeError, ValueError) as exc:
            legacy = isinstance(exc, KeyError) and exc.args == ("experts",)
            what = ("records no checksums of its expert files (a buffer of an older vlcore)" if legacy
                    else f"is damaged ({type(exc).__name__}: {exc})")
            raise DataError(f"{self.path / 'index.json'} {what}. `vl experts --config {self.path / 'config.toml'} "
                            f"--out {self.path} --resume` checks the expert files and records them.") from None
        #: expert file name -> {"sha256", "bytes"}, as index.json records them
        self.experts: dict[str, dict] = dict(sorted(experts.items()))
        for name, rec in self.experts.items():
            p = self.path / name
            if not p.is_file():
                raise DataError(f"Expert file {p}, listed in {self.path / 'index.json'}, is missing: the buffer was "
                                f"changed. {_retrain(self.path)}")
            if p.stat().st_size != rec.get("bytes"):
                raise DataError(f"Expert file {p} has {p.stat().st_size} bytes but index.json records "
                                f"{rec.get('bytes')}: it was truncated or changed. {_retrain(self.path)}")
        for name in self.experts:  # the headers only: what made each file (its bytes are checked in load())
            problem = expert_problem(self.path / name, self.index)
            if problem:
                raise DataError(f"Expert file {self.path / name}, listed in {self.path / 'index.json'}, is not an "
                                f"expert of this buffer: {problem}. It cannot be used (an older vlcore's --resume "
                                f"could record a file of another buffer). Move it out of {self.path}; "
                                f"`vl experts --config {self.path / 'config.toml'} --out {self.path} --resume` then "
                                f"trains it again.")
        unlisted = sorted(p.name for p in self.path.glob("expert_*.safetensors") if p.name not in self.experts)
        if unlisted:
            log.warning("buffer %s: %s not listed in index.json (an interrupted `vl experts`?) and not used; "
                        "`vl experts ... --resume` records it", self.path, ", ".join(unlisted))

    def content_key(self) -> dict:
        """What the trajectories are, independent of where the folder is (a copied or moved buffer
        has the same key, a changed one another): spec, text dim, parameter layout, expert config
        (but the number of experts), the training data's fingerprint, and the experts' checksums."""
        idx = self.index
        return {"spec": idx["spec"], "text_dim": idx["text_dim"], "layout": fingerprint(idx["layout"]),
                "expert": {k: v for k, v in (idx.get("expert") or {}).items() if k != "num_experts"},
                "data": (idx.get("dataset") or {}).get("fingerprint"),
                "experts": fingerprint({n: r.get("sha256") for n, r in self.experts.items()})}

    def expert_files(self) -> list[Path]:
        return [self.path / n for n in self.experts]

    @property
    def num_experts(self) -> int:
        return len(self.experts)

    def load(self, i: int) -> dict[str, torch.Tensor]:
        """Expert ``i``'s snapshots, after checking the file against its checksum in index.json."""
        files = self.expert_files()
        if not files:
            raise DataError(f"Buffer '{self.path}' holds no finished expert yet. Run `vl experts` (it resumes).")
        p = files[i]
        tensors = load_checked_tensors(
            p, str(self.experts[p.name].get("sha256")),
            changed=f"Expert file {p} does not match its checksum in index.json: it was changed or damaged "
                    f"since `vl experts` wrote it. {_retrain(self.path)}",
            unreadable=lambda why: f"Expert file {p} is not a readable trajectory file ({why}). {_retrain(self.path)}")
        problem = _tensors_problem({k: (list(v.shape), str(v.dtype)) for k, v in tensors.items()}, self.index)
        if problem:
            raise DataError(f"Expert file {p} is not an expert of this buffer: {problem}. {_retrain(self.path)}")
        return tensors

    def params(self, expert: dict[str, torch.Tensor], epoch: int) -> dict[str, torch.Tensor]:
        """Named parameters of both modalities at ``epoch``."""
        out, layout = {}, ParamLayout.from_record(self.layout)
        for m in MODALITIES:
            key = f"{m}.{epoch}"
            if key in expert:
                out.update(layout.unflatten_block(expert[key], m))
        return out

    def check_compatible(self, spec: ModelSpec, text_dim: int, model: DualEncoder | None = None) -> None:
        """Refuse a buffer that does not fit ``spec``: say what differs."""
        want, have = _spec_for_compare(spec.as_dict()), _spec_for_compare(self.index["spec"])
        diffs = [f"{k}: buffer has {have.get(k)!r}, asked for {want.get(k)!r}"
                 for k in sorted(set(want) | set(have)) if want.get(k) != have.get(k)]
        if int(self.index["text_dim"]) != int(text_dim):
            diffs.append(f"text dim: buffer has {self.index['text_dim']}, the text encoder gives {text_dim}")
        if model is not None and not diffs:
            if ParamLayout.of_model(model).record() != self.layout:
                diffs.append("trainable parameter names/shapes differ from the model built now")
        if diffs:
            raise IncompatibleError(
                f"Expert buffer '{self.path}' does not fit the model asked for:\n  " + "\n  ".join(diffs) +
                "\nDistil with the buffer's settings (omit --encoder/--text-encoder/--image-size to use them), "
                "or train a matching buffer with `vl experts`.")


def _read_index(path: Path) -> dict:
    try:
        index = read_json(path)
    except (OSError, ValueError) as exc:
        raise DataError(f"{path} is not readable JSON ({type(exc).__name__}: {exc}); the buffer's index is damaged. "
                        f"Restore it, or train the buffer again into a new folder with `vl experts`.") from None
    if not isinstance(index, dict) or index.get("format") != FORMAT:
        got = index.get("format") if isinstance(index, dict) else type(index).__name__
        raise DataError(f"{path}: format {got!r}, expected {FORMAT!r}; it is not the index of an expert buffer.")
    return index


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n
