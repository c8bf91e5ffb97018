"""Shareable pair sets: a pair set (distilled or coreset) as a Hugging Face ``datasets`` dataset.

``export_hf(pair set folder, OUT)`` writes, with ``Dataset.save_to_disk``, one row per pair:

    image            a PNG preview (pixels clamped to [0, 1], 8 bits) for people and dataset viewers
    pixels           the exact float32 (3, H, W) pixels the evaluator trains on
    text_embedding   the synthetic (or real) caption embedding of the frozen text encoder
    caption          the nearest real training caption of a distilled embedding (a coreset's own)
    source_image, source_caption   the real pair it came from (coresets) or started from

plus ``vlcore.json`` (the pair set's full record: method, resolved config, model spec, dataset,
learned step sizes, the recorded evaluations, checksums of the tensors), ``extra.safetensors``
(a method's own learned tensors, if any) and a dataset card ``README.md`` stating the method, the
model, the source dataset and its licence and the numbers recorded for the set.  ``vl eval OUT``
reads it back as the same pair set (:func:`load_hf`), so it gives the same numbers; it passes
through the same checks as a pair-set folder (:func:`vlcore.data.checks.assemble`: the record's
schema, shapes consistent with the record and the model spec, the documented value ranges).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from vlcore.artifacts.hub import import_datasets
from vlcore.artifacts.io import atomic_path, load_checked_tensors, note_written, sha256_file, versions, write_json
from vlcore.core.errors import DataError
from vlcore.data.checks import Origin, _json_type, _num, _shown, assemble, read_record
from vlcore.data.pairset import PairSet, register_reader
from vlcore.model.metrics import KEYS

FORMAT = "vlcore.hf-export/1"
META = "vlcore.json"
EXTRA = "extra.safetensors"
#: the files ``Dataset.save_to_disk`` writes for a small dataset (one shard)
HF_FILES = ("state.json", "dataset_info.json")
#: the columns of an export
COLUMNS = ("image", "pixels", "text_embedding", "caption", "source_image", "source_caption")


def _datasets():
    return import_datasets("Exporting to (or reading) a Hugging Face dataset")


def tensors_sha256(images: torch.Tensor, text: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (images, text):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def is_hf_export(path: str | Path) -> bool:
    """A `vl export` folder (complete or not: :func:`load_hf` says what is missing)."""
    p = Path(path)
    return (p / META).is_file() and not (p / "pairs.safetensors").exists()


def recorded_results(folder: Path, meta: dict) -> list[dict]:
    """The evaluations recorded for a pair set: its folder's ``vl eval`` results (eval-*/), and the
    last dev evaluation of a distillation run (``meta`` has passed :func:`vlcore.data.pairset.meta_problems`).
    DataError naming the file when a recorded result is damaged."""
    out = []
    for details in sorted(folder.glob("eval-*/details.json")):
        fix = (f"Evaluate again with `vl eval {folder} --out {details.parent} --overwrite`, or move the folder "
               f"{details.parent} away to export without it.")
        d = read_record(details, fix)
        mpath = details.parent / "metrics.json"
        metrics = read_record(mpath, fix) if mpath.exists() else d
        for path, obj in ((details, d), (mpath, metrics)):
            if not isinstance(obj, dict):
                raise DataError(f"{path} holds a JSON {_json_type(obj)}, expected an object (the results of "
                                f"`vl eval`). {fix}")
        bad = [k for k in (*KEYS, "rsum", *(f"{k}_std" for k in KEYS))
               if metrics.get(k) is not None and not _num(metrics.get(k))]
        seeds = d.get("seeds") if isinstance(d.get("seeds"), list) else []
        if bad or not isinstance(d.get("split", ""), str):
            what = f"field '{bad[0]}' is {metrics.get(bad[0])!r}, expected a number" if bad else \
                f"field 'split' is {d.get('split')!r}, expected a string"
            raise DataError(f"{mpath if bad and mpath.exists() else details}: {what}. {fix}")
        out.append({"split": d.get("split"), "by": f"vl eval ({d.get('evaluator', 'retrieval')}, "
                                                    f"{len(seeds) or '?'} seed{'' if len(seeds) == 1 else 's'})",
                    **{k: metrics.get(k) for k in (*KEYS, "rsum")},
                    **{f"{k}_std": metrics.get(f"{k}_std") for k in KEYS}})
    hist = (meta.get("history") or {}).get("eval") or []
    if hist:
        last = hist[-1]
        out.append({"split": (meta.get("dataset") or {}).get("eval_split", "dev"),
                    "by": f"distillation's own check (1 quick model, iteration {last['iteration']})",
                    **{k: last.get(k) for k in (*KEYS, "rsum")}})
    return out


def export_hf(pairset: str | Path, out: str | Path, *, method_help: str = "") -> Path:
    """Write the pair set at ``pairset`` into ``out`` as a ``datasets`` dataset with its card."""
    datasets = _datasets()
    src, out = Path(pairset), Path(out)
    ps = PairSet.load(src)  # every check of a pair set; then the recorded results, before anything is written
    results = recorded_results(src, ps.meta)
    n, (c, h, w) = len(ps), tuple(ps.images.shape[1:])
    images = ps.images.detach().float().cpu()
    preview = (images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy()
    ids = ps.source_ids or [(None, None)] * n
    feats = datasets.Features({
        "image": datasets.Image(), "pixels": datasets.Array3D(shape=(c, h, w), dtype="float32"),
        "text_embedding": datasets.Sequence(datasets.Value("float32"), length=ps.text_dim),
        "caption": datasets.Value("string"), "source_image": datasets.Value("string"),
        "source_caption": datasets.Value("int32")})
    from PIL import Image

    dataset_rec = ps.meta.get("dataset") or {}
    info = datasets.DatasetInfo(description=f"{ps.meta.get('kind', 'pair')} set of {n} image-text pairs made by "
                                            f"vlcore ({ps.meta.get('method')}); the full record is in {META}.",
                                license=str(dataset_rec.get("license") or "unknown"), features=feats)
    ds = datasets.Dataset.from_dict({
        "image": [Image.fromarray(a) for a in preview], "pixels": images.numpy(),
        "text_embedding": ps.text.detach().float().cpu().numpy(), "caption": list(ps.captions),
        "source_image": [a for a, _ in ids], "source_caption": [b for _, b in ids]}, features=feats, info=info)
    out.mkdir(parents=True, exist_ok=True)
    shard = "data-00000-of-00001.arrow"
    for name in (shard, *HF_FILES):  # recorded before `datasets` writes them: vl deletes only what it recorded
        note_written(out / name)
    ds.save_to_disk(str(out), num_shards=1)  # one shard: the names recorded above
    meta = {**{k: v for k, v in ps.meta.items() if k != "extra_sha256"}, "format": FORMAT,
            "pairset_format": ps.meta.get("format"), "exported_from": str(src.resolve()),
            "tensors_sha256": tensors_sha256(ps.images, ps.text), "recorded_results": results,
            "export_versions": versions()}
    if ps.extra:
        from safetensors.torch import save_file

        with atomic_path(out / EXTRA) as tmp:
            save_file({k: v.detach().float().cpu().contiguous() for k, v in ps.extra.items()}, str(tmp))
            meta["extra_sha256"] = sha256_file(tmp)
    write_json(out / META, meta)
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(card(ps, meta, results, method_help))
    return out


def hf_origin(path: Path, meta=None) -> Origin:
    """Where the parts of an export were read from (for messages) and how to make it again."""
    src = meta.get("exported_from") if isinstance(meta, dict) and isinstance(meta.get("exported_from"), str) else None
    redo = (f"Export the pair set again: `vl export {src or 'PAIRSET'} {path} --overwrite`"
            f"{'' if src else ' (PAIRSET: the pair-set folder it was exported from)'}; if that pair set is damaged "
            f"too, make it again with `vl distill` or `vl coreset`.")
    return Origin(path, path / META, {"images": f"{path} (dataset column 'pixels')",
                                      "text": f"{path} (dataset column 'text_embedding')"},
                  str(path / EXTRA), f"{path} (dataset column 'caption')", redo)


def load_hf(path: str | Path, *, check_values: bool = True) -> PairSet:
    """The pair set of an export folder: exactly the exported tensors (the checksums are verified),
    through the same checks as every pair set (:func:`vlcore.data.checks.assemble`)."""
    path = Path(path)
    origin = hf_origin(path)
    meta = read_record(path / META, origin.redo)
    origin = hf_origin(path, meta)
    if not isinstance(meta, dict):
        raise DataError(f"{path / META} holds a JSON {_json_type(meta)}, expected an object (the record of an "
                        f"exported pair set); it was edited or damaged. {origin.redo}")
    if meta.get("format") != FORMAT:
        raise DataError(f"{path / META} field 'format' is {_shown(meta.get('format'))}, expected {FORMAT!r}; it is "
                        f"not the record of a `vl export` folder. {origin.redo}")
    digest = meta.get("tensors_sha256")
    if not isinstance(digest, str) or not digest:
        raise DataError(f"{path / META} records no tensors_sha256 (the checksum of the pixels and text embeddings), "
                        f"so the export cannot be checked for damage: it was edited. {origin.redo}")
    missing = [f for f in HF_FILES if not (path / f).is_file()]
    if missing:
        raise DataError(f"Export '{path}' has no {', '.join(missing)}; it is incomplete (an interrupted or partly "
                        f"deleted `vl export`). {origin.redo}")
    datasets = _datasets()
    try:
        ds = datasets.load_from_disk(str(path))
        if not isinstance(ds, datasets.Dataset):
            raise ValueError(f"it holds a {type(ds).__name__}, not one Dataset")
        absent = [c for c in COLUMNS if c not in ds.column_names]
        if absent:
            raise ValueError(f"it has no column {', '.join(map(repr, absent))}")
        batch = ds.with_format("torch", columns=["pixels", "text_embedding"])[:]
        images, text = batch["pixels"], batch["text_embedding"]
        captions = list(ds["caption"])
    except Exception as exc:
        raise DataError(f"Export '{path}': the dataset files cannot be read as the pairs of a `vl export` "
                        f"({type(exc).__name__}: {exc}); they are damaged or were changed. {origin.redo}") from None
    if not (isinstance(images, torch.Tensor) and isinstance(text, torch.Tensor)):
        raise DataError(f"Export '{path}': the columns 'pixels' and 'text_embedding' do not hold one array a pair "
                        f"of a fixed shape; the dataset was changed. {origin.redo}")
    images, text = images.float(), text.float()
    if tensors_sha256(images, text) != digest:
        raise DataError(f"Export '{path}': the pixels and text embeddings (dataset columns 'pixels', "
                        f"'text_embedding') do not match the checksum in {META} (tensors_sha256); the export was "
                        f"changed. {origin.redo}")
    extra = {}
    recorded = meta.get("extra_sha256")
    if (path / EXTRA).exists():
        extra = load_checked_tensors(
            path / EXTRA, recorded if isinstance(recorded, str) else None,
            changed=f"{path / EXTRA} does not match the checksum in {META} (extra_sha256): the file was "
                    f"changed or truncated. {origin.redo}",
            unreadable=lambda why: f"{path / EXTRA} is not a tensor file ({why}); it is damaged. {origin.redo}")
    elif recorded is not None:
        raise DataError(f"Export '{path}' has no {EXTRA}, which {META} records (extra_sha256); it is incomplete. "
                        f"{origin.redo}")
    return assemble(PairSet, origin, meta, images, text, captions, extra, check_values=check_values)


def _row(r: dict) -> str:
    def cell(k):
        v, sd = r.get(k), r.get(f"{k}_std")
        return "" if v is None else (f"{v:.1f}" + (f" ± {sd:.1f}" if sd else ""))

    return f"| {r.get('split')} | " + " | ".join(cell(k) for k in (*KEYS, "rsum")) + f" | {r.get('by')} |"


def card(ps: PairSet, meta: dict, results: list[dict], method_help: str = "") -> str:
    """The dataset card (README.md) of an export."""
    spec, ds = meta.get("spec") or {}, meta.get("dataset") or {}
    n, kind, method = len(ps), meta.get("kind", "pair"), meta.get("method", "?")
    size = "x".join(str(s) for s in ps.images.shape[1:])
    opts = ", ".join(f"{k}={v}" for k, v in (spec.get("encoder_options") or {}).items())
    table = "\n".join(["| split | TR@1 | TR@5 | TR@10 | IR@1 | IR@5 | IR@10 | rsum | measured by |",
                       "|---|---|---|---|---|---|---|---|---|", *map(_row, results)]) if results else \
        "No evaluation was recorded for this set: run `vl eval` on it (or on this folder)."
    lrs = [f"{k}={v:.6g}" for k, v in (("lr_img", ps.lr_img), ("lr_txt", ps.lr_txt)) if v is not None]
    lr = (f"learned step sizes {', '.join(lrs)} (the evaluator trains with them)" if lrs
          else "no learned step sizes (the evaluator's default learning rate applies)")
    return f"""---
license: other
tags: [vlcore, dataset-distillation, image-text-retrieval, {kind}]
size_categories: [n<1K]
---

# {method}: {n} {kind} image-text pairs from {ds.get('name', '?')}

A {kind} set of {n} image-text pairs made with [vlcore](https://pypi.org/project/vlcore/)
{meta.get('versions', {}).get('vlcore', '')}: train a CLIP-style retrieval model from scratch on these
pairs instead of the whole training split.

- **Method**: `{method}`{f' ({method_help.rstrip(".")})' if method_help else ''}, seed {meta.get('seed')}; the full resolved
  configuration is in `{META}` (`config`).
- **Model spec**: image encoder `{spec.get('encoder')}`{f' ({opts})' if opts else ''}, trained
  `{spec.get('trainable')}`, {spec.get('image_size')} px; frozen text encoder `{spec.get('text_encoder')}`
  ({ps.text_dim}-d embeddings); image head `{spec.get('image_head')}`. A set only fits this model.
- **Source dataset**: `{ds.get('name')}` ({ds.get('pairs', '?')} training pairs of {ds.get('images', '?')} images,
  options {json.dumps(ds.get('options') or {})}).
- **Licence of the source data**: {ds.get('license') or 'unknown: check the terms of the source data'}.
  This set is derived from that data; share it under those terms.
- **Step sizes**: {lr}.

## Columns

| column | what |
|---|---|
| `image` | a PNG preview ({size}, clamped to [0, 1], 8 bits) |
| `pixels` | the exact float32 pixels ({size}) models train on |
| `text_embedding` | the {'synthetic ' if kind == 'distilled' else ''}caption embedding ({ps.text_dim}-d, `{spec.get('text_encoder')}`) |
| `caption` | {'the nearest real training caption of the embedding (for people)' if kind == 'distilled' else 'the real caption'} |
| `source_image`, `source_caption` | the real pair it {'started from' if kind == 'distilled' else 'is'} (image id, caption index) |

## Recorded results

Retrieval on the source dataset (%; TR: image->text, IR: text->image, R@K: the match in the top K,
rsum: the sum of the six; ± the std over evaluation seeds) of fresh models trained on this set:

{table}

## Use it

    vl eval THIS_FOLDER                    # the same numbers as the original pair set
    python -c "import datasets; print(datasets.load_from_disk('THIS_FOLDER'))"

Online, share it with the library's own upload: `datasets.load_from_disk(FOLDER).push_to_hub(REPO)`,
then this card: `huggingface_hub.DatasetCard.load('FOLDER/README.md').push_to_hub(REPO)`.
"""


register_reader("hf", is_hf_export, load_hf)
