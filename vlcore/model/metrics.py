"""Image-text retrieval recall, as in REFERENCE.md.

TR (image -> text) R@K: an image is a hit when *any* of its captions ranks in the top K.
IR (text -> image) R@K: a caption is a hit when its own image ranks in the top K.
Ties count against the model: an item is ranked behind every competitor whose score is equal to or
higher than its own, so a collapsed model (all scores equal) scores chance level, not 100%.  A NaN
score (a model whose weights exploded) counts as the lowest possible, tied with every other NaN.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

KS = (1, 5, 10)
KEYS = tuple(f"{d}_r{k}" for d in ("tr", "ir") for k in KS)


@torch.no_grad()
def retrieval_ranks(img: torch.Tensor, txt: torch.Tensor, caption_image: torch.Tensor,
                    chunk: int = 1024) -> tuple[torch.Tensor, torch.Tensor]:
    """0-based pessimistic ranks.

    Returns ``(tr_rank, ir_rank)``: for each image, the number of *other images'* captions scoring
    >= its best own caption; for each caption, the number of other images scoring >= its own image.
    """
    img = F.normalize(img.float(), dim=-1)
    txt = F.normalize(txt.float(), dim=-1)
    caption_image = caption_image.long().to(img.device)
    n_img, n_txt = img.shape[0], txt.shape[0]
    if caption_image.shape[0] != n_txt:
        raise ValueError(f"caption_image has {caption_image.shape[0]} entries for {n_txt} captions")
    if n_txt and int(caption_image.max()) >= n_img:
        raise ValueError("caption_image refers to an image index beyond the number of images")
    tr_rank = torch.empty(n_img, dtype=torch.long)
    for s in range(0, n_img, chunk):
        sim = (img[s:s + chunk] @ txt.t()).nan_to_num(nan=float("-inf"))  # (c, n_txt)
        rows = torch.arange(s, min(s + chunk, n_img), device=img.device)
        own = caption_image.unsqueeze(0) == rows.unsqueeze(1)
        best_own = sim.masked_fill(~own, float("-inf")).max(dim=1).values
        tr_rank[s:s + chunk] = ((sim >= best_own.unsqueeze(1)) & ~own).sum(dim=1).cpu()
    ir_rank = torch.empty(n_txt, dtype=torch.long)
    for s in range(0, n_txt, chunk):
        sim = (txt[s:s + chunk] @ img.t()).nan_to_num(nan=float("-inf"))  # (c, n_img)
        tgt = caption_image[s:s + chunk]
        own_score = sim.gather(1, tgt.unsqueeze(1))
        other = torch.ones_like(sim, dtype=torch.bool)
        other.scatter_(1, tgt.unsqueeze(1), False)
        ir_rank[s:s + chunk] = ((sim >= own_score) & other).sum(dim=1).cpu()
    return tr_rank, ir_rank


def recall_from_ranks(tr_rank: torch.Tensor, ir_rank: torch.Tensor, ks=KS) -> dict[str, float]:
    """TR and IR R@K in percent, plus ``rsum`` (their sum)."""
    out = {}
    for k in ks:
        out[f"tr_r{k}"] = 100.0 * (tr_rank < k).float().mean().item()
    for k in ks:
        out[f"ir_r{k}"] = 100.0 * (ir_rank < k).float().mean().item()
    out["rsum"] = sum(out.values())
    return out


def retrieval_metrics(img: torch.Tensor, txt: torch.Tensor, caption_image: torch.Tensor) -> dict[str, float]:
    """TR and IR R@1/5/10 in percent, plus ``rsum``."""
    return recall_from_ranks(*retrieval_ranks(img, txt, caption_image))


def label(key: str) -> str:
    """How a metric key is shown: ``tr_r1`` -> ``TR@1``, ``ir_r10`` -> ``IR@10`` (others unchanged)."""
    side, _, k = key.partition("_r")
    return f"{side.upper()}@{k}" if side in ("tr", "ir") and k.isdigit() else key


def candidates(num_images: int, num_captions: int) -> dict[str, int]:
    """What each direction ranks: TR (image -> text) ranks the split's captions, IR (text -> image)
    its images; reported beside the metrics."""
    return {"images": int(num_images), "captions": int(num_captions)}


def trivial(num_images: int, num_captions: int, ks=KS) -> list[str]:
    """The recalls that are 100% whatever the model, because K is at least the number of candidates
    (an IR@10 on 6 images)."""
    return [label(f"tr_r{k}") for k in ks if k >= num_captions] + \
        [label(f"ir_r{k}") for k in ks if k >= num_images]


def small_split_warning(num_images: int, num_captions: int, where: str, ks=KS) -> str | None:
    """The warning for an evaluation split too small for some recalls to mean anything (None: none)."""
    hit = trivial(num_images, num_captions, ks)
    if not hit:
        return None
    return (f"{where} has only {num_images} images and {num_captions} captions, so {', '.join(hit)} "
            f"{'is' if len(hit) == 1 else 'are'} 100% whatever the model (K >= the number of candidates: IR ranks the "
            f"{num_images} images, TR the {num_captions} captions), and rsum with {'it' if len(hit) == 1 else 'them'}. "
            f"Evaluate on a split of more than {max(ks)} images for numbers that compare (your own data: "
            f"--dataset-option dev=N, test=N).")


def recall_curve(tr_rank: torch.Tensor, ir_rank: torch.Tensor, max_k: int = 50) -> dict[str, list[float]]:
    ks = list(range(1, max_k + 1))
    return {"k": ks,
            "tr": [100.0 * (tr_rank < k).float().mean().item() for k in ks],
            "ir": [100.0 * (ir_rank < k).float().mean().item() for k in ks]}


def mean_curve(curves: list[dict[str, list[float]]]) -> dict[str, list[float]]:
    """The pointwise mean of several recall curves with the same K."""
    n = len(curves)
    ks = curves[0]["k"]
    return {"k": ks, **{side: [sum(c[side][j] for c in curves) / n for j in range(len(ks))] for side in ("tr", "ir")}}


def aggregate(runs: list[dict[str, float]]) -> dict[str, float]:
    """Mean and (population) std over seeds of each metric: keys ``x`` and ``x_std``."""
    import statistics

    out: dict[str, float] = {}
    for key in runs[0]:
        vals = [r[key] for r in runs]
        out[key] = statistics.fmean(vals)
        out[f"{key}_std"] = statistics.pstdev(vals) if len(vals) > 1 else 0.0
    return out
