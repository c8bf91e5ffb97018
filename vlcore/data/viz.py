"""PNG figures: recall curves, pair grids, loss curves (matplotlib, Agg backend)."""
from __future__ import annotations

import textwrap
from pathlib import Path
from typing import Sequence

import torch

from vlcore.artifacts.io import atomic_path
from vlcore.model.metrics import label as metric_label


def _plt():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=110, bbox_inches="tight")
    _plt().close(fig)
    return path


def recall_curves(curves: dict[str, dict], path: str | Path, title: str = "Retrieval recall@K") -> Path:
    """``curves``: label -> {"k": [...], "tr": [...], "ir": [...]} (percent)."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for label, c in curves.items():
        axes[0].plot(c["k"], c["tr"], label=label)
        axes[1].plot(c["k"], c["ir"], label=label)
    for ax, t in zip(axes, ("image -> text (TR)", "text -> image (IR)")):
        ax.set_xscale("log")
        ax.set_xlabel("K")
        ax.set_ylabel("recall@K (%)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    return _save(fig, path)


#: the line under a grid whose captions are the nearest real captions of learned text embeddings
NEAREST_NOTE = ("Captions: the nearest real training caption to each learned text embedding, with their cosine "
                "(the learned embeddings are not captions; 1 = the same direction).")


def pair_grid(images: torch.Tensor, captions: Sequence[str], path: str | Path, *, title: str = "",
              max_pairs: int = 24, cols: int = 6, before: torch.Tensor | None = None,
              cosines: Sequence[float] | None = None) -> Path:
    """A grid of images in [0, 1] each with its caption (:func:`pair_figure`), saved as a PNG."""
    return _save(pair_figure(images, captions, title=title, max_pairs=max_pairs, cols=cols, before=before,
                             cosines=cosines), path)


def pair_figure(images: torch.Tensor, captions: Sequence[str], *, title: str = "", max_pairs: int = 24,
                cols: int = 6, before: torch.Tensor | None = None, cosines: Sequence[float] | None = None):
    """The figure of :func:`pair_grid`; with ``before``, each pair shows the initial image beside the
    distilled one; with ``cosines`` the captions are the nearest real captions of learned text
    embeddings: each shows its cosine, and a line under the grid says so (:data:`NEAREST_NOTE`)."""
    plt = _plt()
    n = min(max_pairs, images.shape[0])
    cols = min(cols, n)
    rows = (n + cols - 1) // cols
    per = 2 if before is not None else 1
    # with ``before`` each caption sits below its pair, above the next row's init/distilled labels:
    # rows are taller so the two never touch
    fig, axes = plt.subplots(rows, cols * per, figsize=(2.3 * cols * per, (3.5 if before is not None else 2.9) * rows),
                             squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for i in range(n):
        r, c = divmod(i, cols)
        panels = [(before[i], "init"), (images[i], "distilled")] if before is not None else [(images[i], None)]
        for j, (img, label) in enumerate(panels):
            ax = axes[r][c * per + j]
            ax.imshow(img.detach().float().clamp(0, 1).permute(1, 2, 0).cpu().numpy())
            if label:
                ax.set_title(label, fontsize=7)
        lines = textwrap.wrap(captions[i], 34)
        cap = "\n".join(lines[:3]) + (" ..." if len(lines) > 3 else "")
        if cosines is not None:
            cap = f"[cos {cosines[i]:.2f}] {cap}"
        axes[r][c * per].text(0, 1.02 if before is None else -0.08, cap, fontsize=6.5,
                              transform=axes[r][c * per].transAxes,
                              va="bottom" if before is None else "top")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    if cosines is not None:
        fig.text(0.5, 0, NEAREST_NOTE, ha="center", va="top", fontsize=8)
    return fig


def line_plot(series: dict[str, tuple[Sequence[float], Sequence[float]]], path: str | Path, *,
              xlabel: str, ylabel: str, title: str = "") -> Path:
    """One line per series (:func:`line_figure`), saved as a PNG."""
    return _save(line_figure(series, xlabel=xlabel, ylabel=ylabel, title=title), path)


def line_figure(series: dict[str, tuple[Sequence[float], Sequence[float]]], *, xlabel: str, ylabel: str,
                title: str = ""):
    """The figure of :func:`line_plot`: a series named by a metric key is labelled as the tables name
    it (``tr_r1`` -> ``TR@1``, :func:`vlcore.model.metrics.label`)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6, 4))
    for label, (x, y) in series.items():
        ax.plot(x, y, label=metric_label(label), marker="." if len(x) < 40 else None)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    ax.legend(fontsize=8)
    return fig
