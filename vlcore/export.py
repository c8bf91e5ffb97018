"""Shareable pair sets: a pair set (distilled or coreset) as a Hugging Face ``datasets`` dataset.

``export_hf(pair set folder, OUT)`` writes, with ``Dataset.save_to_disk``, one row per pair:

    image            a PNG preview (pixels clamped to [0, 1], 8 bits) for people and dataset viewers
    pixels           the exact float32 (3, H, W) pixels the evaluator trains on
    text_embedding   the synthetic (or real) caption embedding of the frozen text encoder
    caption          the nearest real training caption of a distilled embedding (a coreset's own)
    source_image, source_caption   the real pair it came from (coresets) or started from

plus ``vlcore.json`` (the pair set's full record: method, resolved config, model spec, dataset,
learned step sizes, the recorded evaluations, a checksum of the tensors), ``extra.safetensors``
(a method's own learned tensors, if any) and a dataset card ``README.md`` stating the method, the
model, the source dataset and its licence and the numbers recorded for the set.  ``vl eval OUT``
reads it back as the same pair set (:func:`load_hf`), so it gives the same numbers.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from .errors import DataError
from .io import atomic_path, read_json, versions, write_json
from .metrics import KEYS
from .pairset import PairSet

FORMAT = "vlcore.hf-export/1"
META = "vlcore.json"
EXTRA = "extra.safetensors"


def _datasets():
    from .hub import import_datasets

    return import_datasets("Exporting to (or reading) a Hugging Face dataset")


def tensors_sha256(images: torch.Tensor, text: torch.Tensor) -> str:
    h = hashlib.sha256()
    for t in (images, text):
        h.update(t.detach().float().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()


def is_hf_export(path: str | Path) -> bool:
    p = Path(path)
    return (p / META).is_file() and (p / "state.json").is_file()


def recorded_results(folder: Path, meta: dict) -> list[dict]:
    """The evaluations recorded for a pair set: its folder's ``vl eval`` results (eval-*/), and the
    last dev evaluation of a distillation run."""
    out = []
    for details in sorted(folder.glob("eval-*/details.json")):
        d = read_json(details)
        metrics = read_json(details.parent / "metrics.json") if (details.parent / "metrics.json").exists() else d
        seeds = len(d.get("seeds") or [])
        out.append({"split": d.get("split"), "by": f"vl eval ({d.get('evaluator', 'retrieval')}, "
                                                    f"{seeds or '?'} seed{'' if seeds == 1 else 's'})",
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
    ps = PairSet.load(src)
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
    ds.save_to_disk(str(out))
    results = recorded_results(src, ps.meta)
    meta = {**ps.meta, "format": FORMAT, "pairset_format": ps.meta.get("format"), "exported_from": str(src.resolve()),
            "tensors_sha256": tensors_sha256(ps.images, ps.text), "recorded_results": results,
            "export_versions": versions()}
    if ps.extra:
        from safetensors.torch import save_file

        with atomic_path(out / EXTRA) as tmp:
            save_file({k: v.detach().float().cpu().contiguous() for k, v in ps.extra.items()}, str(tmp))
    write_json(out / META, meta)
    with atomic_path(out / "README.md") as tmp:
        tmp.write_text(card(ps, meta, results, method_help))
    return out


def load_hf(path: str | Path) -> PairSet:
    """The pair set of an export folder (exactly the exported tensors: the checksum is verified)."""
    datasets = _datasets()
    path = Path(path)
    meta = read_json(path / META)
    if meta.get("format") != FORMAT:
        raise DataError(f"{path / META}: format {meta.get('format')!r}, expected {FORMAT!r}.")
    batch = datasets.load_from_disk(str(path)).with_format("torch", columns=["pixels", "text_embedding"])[:]
    images, text = batch["pixels"].float(), batch["text_embedding"].float()
    if tensors_sha256(images, text) != meta.get("tensors_sha256"):
        raise DataError(f"{path}: the pixels and text embeddings do not match the checksum in {META}; the export "
                        f"was changed. Export the pair set again with `vl export`.")
    plain = datasets.load_from_disk(str(path))
    extra = {}
    if (path / EXTRA).exists():
        from safetensors.torch import load_file

        extra = load_file(str(path / EXTRA))
    ids = meta.get("source_ids")
    return PairSet(images=images, text=text, captions=list(plain["caption"]), meta=meta, lr_img=meta.get("lr_img"),
                   lr_txt=meta.get("lr_txt"), source_ids=[(str(a), int(b)) for a, b in ids] if ids else None,
                   extra=extra)


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
    lr = (f"learned step sizes lr_img={ps.lr_img:.6g}, lr_txt={ps.lr_txt:.6g} (the evaluator trains with them)"
          if ps.lr_img is not None else "no learned step sizes (the evaluator's default learning rate applies)")
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
