"""The maths of MDM (distribution matching with a merged teacher) and of AMD's start ranges, each in
one place (REFERENCE.md, "2026 methods"); the distillers call these and nothing else of the methods.

MDM
---
* :func:`merge_teacher`: per layer ``w = w0 + a r ((w1 + w2) / 2 - w0)``, ``r = 2c / (1 + c)``,
  ``c = cos(w1 - w0, w2 - w0)``, ``a = 0.5``, on flat parameter vectors and their layout.
* :func:`sphere_kernel`: ``k(x, y) = exp(-arccos(<x, y>)^2 / (2 s^2))``, ``s = 0.5``, on unit vectors.
* :func:`gke`: ``sqrt(max(MMD^2, 0))`` of that kernel between a real and a synthetic set.
* :func:`mdm_loss`: InfoNCE (T = 0.07) on the synthetic batch + ``w_u GKE(U) + w_g GKE(G)`` with
  ``U = norm(z_v + z_t)``, ``G = norm(z_v - z_t)``.

AMD
---
* :func:`displacements`: a buffer's per-modality displacement statistic ``D_m(t)``, t = 1..T.
* :func:`start_ranges`: ``r(t) = D_v(t) / (D_l(t) + eps)``, ``T_med = median r``,
  ``R_V = min{t : r(t) > T_med}``, ``R_L = max{t : r(t) <= T_med}``, clamped to the starts a
  distiller can use.

The choices REFERENCE.md leaves open are made, and said, in each function's docstring.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import NamedTuple

import torch
import torch.nn.functional as F

from vlcore.model.losses import TEMPERATURE, contrastive_loss

#: MDM's defaults (REFERENCE.md)
MERGE_A = 0.5
SIGMA = 0.5
W_U = 0.8
W_G = 0.8


# =============================================================================== the teacher merge
def _slices(layout: list[list]) -> list[slice]:
    out, off = [], 0
    for _, shape in layout:
        n = math.prod(int(s) for s in shape)
        out.append(slice(off, off + n))
        off += n
    return out


def _check(vectors: tuple[torch.Tensor, ...], layout: list[list]) -> list[slice]:
    slices = _slices(layout)
    width = slices[-1].stop if slices else 0
    for v in vectors:
        if v.ndim != 1 or v.numel() != width:
            raise ValueError(f"a parameter vector of shape {tuple(v.shape)} does not fit the layout ({width} values)")
    return slices


def cosine_or_zero(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """cos(x, y) in float64, clamped to [-1, 1]; 0 when either vector is zero (no direction)."""
    x, y = x.double(), y.double()
    nx, ny = torch.linalg.vector_norm(x), torch.linalg.vector_norm(y)
    if nx == 0 or ny == 0:
        return x.new_zeros(())
    return (torch.dot(x, y) / (nx * ny)).clamp(-1.0, 1.0)


def merge_ratio(c: torch.Tensor | float) -> torch.Tensor:
    """``r = 2c / (1 + c)`` with ``c`` clamped to [0, 1] first, so ``r`` lies in [0, 1].

    Choice (REFERENCE.md gives the formula only): for ``c < 0`` the formula's ``r`` is negative, which
    moves the teacher from ``w0`` *away* from the two checkpoints' mean, by more and more as ``c``
    falls (``r -> -inf`` at ``c = -1``, a division by zero).  Two checkpoints whose displacements
    point apart carry no common direction, so the layer keeps ``w0`` (``r = 0``), as at ``c = 0``."""
    c = torch.as_tensor(c, dtype=torch.float64).clamp(0.0, 1.0)
    return 2.0 * c / (1.0 + c)


def layer_cosines(w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, layout: list[list]) -> torch.Tensor:
    """(L,) float64: per layer of ``layout`` (one modality's ``[[name, shape], ...]``), the cosine of
    ``w1 - w0`` and ``w2 - w0`` (:func:`cosine_or_zero`: 0 when either is a zero vector)."""
    slices = _check((w0, w1, w2), layout)
    return torch.stack([cosine_or_zero(w1[s].double() - w0[s].double(), w2[s].double() - w0[s].double())
                        for s in slices]) if slices else torch.zeros(0, dtype=torch.float64)


def merge_teacher(w0: torch.Tensor, w1: torch.Tensor, w2: torch.Tensor, layout: list[list],
                  a: float = MERGE_A) -> torch.Tensor:
    """MDM's merged teacher of one modality: per layer ``w = w0 + a r ((w1 + w2) / 2 - w0)``,
    ``r = 2c / (1 + c)`` (:func:`merge_ratio`), ``c = cos(w1 - w0, w2 - w0)``.

    ``w0, w1, w2``: flat parameter vectors (a buffer's ``img.e`` / ``txt.e``) of one modality;
    ``layout``: that modality's ``[[name, shape], ...]`` (a layer = one named parameter tensor).
    Computed in float64, returned in ``w0``'s dtype.  Guards: a layer where ``w1 - w0`` or
    ``w2 - w0`` is a zero vector has no direction, ``c = 0``, so it keeps ``w0`` (when both are zero
    every choice gives ``w0``); ``c <= 0`` keeps ``w0`` (see :func:`merge_ratio`); rounding that
    puts ``|c|`` above 1 is clamped.  Which checkpoint is ``w0`` is the caller's choice (MDM: a
    fresh model; in vlcore the natural one is the epoch-0 weights of ``w1``'s expert)."""
    slices = _check((w0, w1, w2), layout)
    out = w0.detach().double().clone()
    for s in slices:
        b, x, y = w0[s].double(), w1[s].double(), w2[s].double()
        r = merge_ratio(cosine_or_zero(x - b, y - b))
        out[s] = b + a * r * ((x + y) / 2.0 - b)
    return out.to(w0.dtype)


def merge_modalities(w0: dict[str, torch.Tensor], w1: dict[str, torch.Tensor], w2: dict[str, torch.Tensor],
                     layout: dict[str, list[list]], a: float = MERGE_A) -> dict[str, torch.Tensor]:
    """:func:`merge_teacher` for each modality of a buffer's layout (``{"img": vec, "txt": vec}``
    in, the same out; a modality with no parameters is left out)."""
    return {m: merge_teacher(w0[m], w1[m], w2[m], layout[m], a) for m in layout if m in w0 and layout[m]}


# =============================================================================== the kernel
class _ArccosSquared(torch.autograd.Function):
    """``theta^2 = arccos(clamp(x, -1, 1))^2`` with a finite gradient everywhere.

    d theta^2 / dx = -2 theta / sin(theta): its limit at x = 1 (theta -> 0) is -2, used for
    theta < 1e-4 (where theta / sin theta = 1 + theta^2 / 6 to float64 precision) and for x >= 1;
    at x = -1 (theta -> pi) it diverges, so sin(theta) is held at least ``SIN_FLOOR`` (a gradient of
    at most 2 pi / SIN_FLOOR, reached only within about 1e-12 of x = -1)."""

    SIN_FLOOR = 1e-6

    @staticmethod
    def forward(ctx, x):
        theta = torch.arccos(x.clamp(-1.0, 1.0))
        ctx.save_for_backward(theta)
        return theta * theta

    @staticmethod
    def backward(ctx, grad):
        (theta,) = ctx.saved_tensors
        small = theta < 1e-4
        ratio = torch.where(small, 1.0 + theta * theta / 6.0,
                            theta / torch.sin(theta).clamp_min(_ArccosSquared.SIN_FLOOR))
        return grad * (-2.0 * ratio)


def arccos_squared(x: torch.Tensor) -> torch.Tensor:
    """``arccos(x)^2`` for cosines ``x`` (clamped to [-1, 1]), with a gradient that stays finite at
    ``x = +-1`` (exact -2 at +1, where the kernel's self- and near-duplicate pairs sit)."""
    return _ArccosSquared.apply(x)


class _SafeArccos(torch.autograd.Function):
    """``arccos(clamp(x, -1, 1))``, gradient ``-1 / sqrt(max(1 - x^2, eps))``: the true gradient
    wherever ``1 - x^2 >= eps`` (``eps = 1e-12``: everywhere but within ~5e-13 of +-1), at most
    1e6 in magnitude at +-1 (and beyond, where clamping would otherwise give 0)."""

    EPS = 1e-12

    @staticmethod
    def forward(ctx, x):
        xc = x.clamp(-1.0, 1.0)
        ctx.save_for_backward(xc)
        return torch.arccos(xc)

    @staticmethod
    def backward(ctx, grad):
        (xc,) = ctx.saved_tensors
        return -grad / torch.sqrt((1.0 - xc * xc).clamp_min(_SafeArccos.EPS))


def safe_arccos(x: torch.Tensor) -> torch.Tensor:
    """``arccos`` of cosines (clamped to [-1, 1]) with a finite gradient at +-1; the kernel uses
    :func:`arccos_squared`, whose gradient is also exact there."""
    return _SafeArccos.apply(x)


def sphere_kernel(x: torch.Tensor, y: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """(n, m) hyperspherical (geodesic Gaussian) kernel ``exp(-arccos(<x_i, y_j>)^2 / (2 sigma^2))``
    between the rows of ``x`` (n, d) and ``y`` (m, d), each taken to the unit sphere first (a zero
    row stays zero: cosine 0, a quarter circle from everything)."""
    cos = F.normalize(x, dim=-1) @ F.normalize(y, dim=-1).t()
    return torch.exp(-arccos_squared(cos) / (2.0 * sigma * sigma))


class _SafeSqrt(torch.autograd.Function):
    """``sqrt(max(v, 0))``; gradient ``1 / (2 sqrt(max(v, eps)))`` for v > 0 and 0 for v <= 0 (where
    the clamp holds the value at 0): finite at 0, at most ``1 / (2 sqrt(eps))``."""

    @staticmethod
    def forward(ctx, v, eps):
        ctx.save_for_backward(v)
        ctx.eps = eps
        return v.clamp_min(0.0).sqrt()

    @staticmethod
    def backward(ctx, grad):
        (v,) = ctx.saved_tensors
        g = 0.5 / v.clamp_min(ctx.eps).sqrt()
        return grad * torch.where(v > 0, g, torch.zeros_like(g)), None


def safe_sqrt(v: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """``sqrt(max(v, 0))`` with a finite gradient at 0 (see :class:`_SafeSqrt`)."""
    return _SafeSqrt.apply(v, eps)


def _offdiag_mean(k: torch.Tensor) -> torch.Tensor:
    n = k.shape[0]
    return (k.sum() - k.diagonal().sum()) / (n * (n - 1))


def mmd2(real: torch.Tensor, syn: torch.Tensor, sigma: float = SIGMA) -> torch.Tensor:
    """The kernel MMD^2 between the rows of ``real`` (n, d) and ``syn`` (m, d) under
    :func:`sphere_kernel`: ``mean_{i != j} k(r_i, r_j) + mean_{i != j} k(s_i, s_j) - 2 mean_{i, j}
    k(r_i, s_j)`` (within-set terms as off-diagonal means, as REFERENCE.md says MDM's code has them:
    the unbiased estimate).  Needs two rows per set.  It can be negative (the unbiased estimate, and
    the geodesic Gaussian kernel is not positive definite on the sphere); for a set compared with
    itself it is ``2 (mean_{i != j} k - 1) / n <= 0``."""
    if real.shape[0] < 2 or syn.shape[0] < 2:
        raise ValueError(f"the kernel discrepancy needs at least 2 rows per set (got {real.shape[0]} real, "
                         f"{syn.shape[0]} synthetic): its within-set terms are off-diagonal means")
    return (_offdiag_mean(sphere_kernel(real, real, sigma)) + _offdiag_mean(sphere_kernel(syn, syn, sigma))
            - 2.0 * sphere_kernel(real, syn, sigma).mean())


def gke(real: torch.Tensor, syn: torch.Tensor, sigma: float = SIGMA, eps: float = 1e-8) -> torch.Tensor:
    """MDM's GKE: ``sqrt(max(MMD^2, 0))`` (:func:`mmd2`, :func:`safe_sqrt`): 0 for a set and itself
    (its MMD^2 is <= 0) and whenever the estimate is not positive, with gradient 0 there; positive
    for sets apart.  Pass the real rows detached (MDM's real embeddings carry no gradient)."""
    return safe_sqrt(mmd2(real, syn, sigma), eps)


# =============================================================================== the MDM loss
def sum_and_difference(img: torch.Tensor, txt: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``U = norm(z_v + z_t)``, ``G = norm(z_v - z_t)`` with ``z_v, z_t`` the L2-normalised image and
    text embeddings of the same pairs (a zero ``z_v - z_t``, image = text, gives a zero row)."""
    zv, zt = F.normalize(img, dim=-1), F.normalize(txt, dim=-1)
    return F.normalize(zv + zt, dim=-1), F.normalize(zv - zt, dim=-1)


class MDMLoss(NamedTuple):
    """The MDM loss and its terms (each a 0-d tensor): ``total = infonce + w_u gke_u + w_g gke_g``."""

    total: torch.Tensor
    infonce: torch.Tensor
    gke_u: torch.Tensor
    gke_g: torch.Tensor


def mdm_loss(img_syn: torch.Tensor, txt_syn: torch.Tensor, img_real: torch.Tensor, txt_real: torch.Tensor, *,
             temperature: float = TEMPERATURE, w_u: float = W_U, w_g: float = W_G, sigma: float = SIGMA) -> MDMLoss:
    """MDM's loss on the teacher's embeddings: the project's contrastive loss
    (:func:`vlcore.model.losses.contrastive_loss`, InfoNCE at ``temperature``) on the synthetic batch
    (``img_syn``, ``txt_syn``: (m, d), pair i with pair i), plus ``w_u GKE(U) + w_g GKE(G)`` between
    the real batch (``img_real``, ``txt_real``: (n, d); detached here) and the synthetic one, with
    ``U``, ``G`` from :func:`sum_and_difference`.  Embeddings may be unnormalised (they are
    normalised here).  A weight of 0 skips its term (MDM without its kernel terms)."""
    nce = contrastive_loss(img_syn, txt_syn, temperature)
    zero = nce.new_zeros(())
    gu = gg = zero
    if w_u or w_g:
        u_r, g_r = sum_and_difference(img_real.detach(), txt_real.detach())
        u_s, g_s = sum_and_difference(img_syn, txt_syn)
        gu = gke(u_r, u_s, sigma) if w_u else zero
        gg = gke(g_r, g_s, sigma) if w_g else zero
    return MDMLoss(nce + w_u * gu + w_g * gg, nce, gu, gg)


# =============================================================================== AMD's start ranges
#: what :func:`displacements` averages over experts (see its docstring)
MEANS = ("norms", "params")


def displacement_table(trajectories: list[dict[str, torch.Tensor]], epochs: int, mean: str = "norms",
                       modalities: tuple[str, ...] = ("img", "txt")) -> dict[str, torch.Tensor]:
    """``D_m(t)`` for t = 1..``epochs`` (float64 (T,) per modality) from experts' trajectories
    (``{"img.e": vec, "txt.e": vec}`` each, as :meth:`~vlcore.training.buffer.Buffer.load` returns
    them).  ``mean`` (see :func:`displacements`): ``"norms"``, the mean over experts of
    ``||theta_e(t-1) - theta_e(t)||``; ``"params"``, ``||mean_e theta_e(t-1) - mean_e theta_e(t)||``.
    A modality with no parameters gets zeros."""
    if mean not in MEANS:
        raise ValueError(f"mean must be one of {', '.join(MEANS)}, got {mean!r}")
    if not trajectories:
        raise ValueError("no expert trajectories")
    out = {}
    for m in modalities:
        if f"{m}.0" not in trajectories[0]:
            out[m] = torch.zeros(epochs, dtype=torch.float64)
            continue
        steps = []
        for t in range(1, epochs + 1):
            diffs = [tr[f"{m}.{t - 1}"].double() - tr[f"{m}.{t}"].double() for tr in trajectories]
            if mean == "norms":
                steps.append(torch.stack([torch.linalg.vector_norm(d) for d in diffs]).mean())
            else:
                steps.append(torch.linalg.vector_norm(torch.stack(diffs).mean(0)))
        out[m] = torch.stack(steps)
    return out


def displacements(buffer, mean: str = "norms") -> dict[str, torch.Tensor]:
    """A buffer's ``D_m(t)``, t = 1..T, per modality (``{"img": (T,), "txt": (T,)}``, float64).

    Choice of "mean" (REFERENCE.md: "|| mean of the experts' parameters at t-1 minus at t ||",
    unclear over what): by default (``"norms"``) the mean over experts of each expert's own step
    length ``||theta_e(t-1) - theta_e(t)||``.  vlcore's experts start from different seeds, so
    their parameters are not coordinate-wise comparable (hidden units of two random inits are in
    no particular correspondence): averaging the vectors first (``"params"``, the literal reading)
    cancels steps that merely point in unrelated directions, and measures how much the experts agree
    rather than how far each moved.  A mean over entries instead of a norm (the other reading) only
    rescales ``D_m`` by a constant per modality, which :func:`start_ranges` ignores (it compares
    ``r`` with its own median).  Loads every expert once (checksums verified)."""
    trajectories = [buffer.load(i) for i in range(buffer.num_experts)]
    return displacement_table(trajectories, buffer.epochs, mean)


@dataclass
class StartRanges:
    """AMD's start ranges: image starts drawn from 0..``img``, text starts from 0..``txt``
    (inclusive), and how they were found (``as_dict()`` for meta.json)."""

    img: int
    txt: int
    #: the formulas' raw R_V, R_L (None: the set was empty)
    raw_img: int | None
    raw_txt: int | None
    #: r(t) for t = 1..T, and its median
    ratio: list[float]
    median: float
    #: the largest start the distiller allows (the clamp)
    max_start: int
    #: why the raw values were not used as they are ("" when they were)
    fallback: str = ""
    #: which reading of R_V (see :func:`start_ranges`), and the rule in words
    reading: str = "as-written"
    rule: str = field(default="")

    def as_dict(self) -> dict:
        return asdict(self)


READINGS = {
    "as-written": "R_V = min{t : r(t) > T_med}",
    "last-above": "R_V = max{t : r(t) > T_med}",
}
RULE = ("t = 1..T indexes the expert's epochs (D(t): the step from epoch t-1 to t); r(t) = D_v(t) / (D_l(t) + eps); "
        "T_med = the median of r (the mean of the two middle values when T is even); {rv}, R_L = max{{t : r(t) <= "
        "T_med}}, each the largest start epoch (inclusive) of its modality, clamped to [min(1, max_start), max_start]; "
        "no t with r(t) > T_med (r constant, or T = 1): both = max_start")


def start_ranges(d_img: torch.Tensor, d_txt: torch.Tensor, max_start: int, eps: float = 1e-12,
                 reading: str = "as-written") -> StartRanges:
    """AMD's ranges from the displacement tables ``d_img = D_v(1..T)``, ``d_txt = D_l(1..T)``
    (:func:`displacements`).

    ``max_start``: the largest start epoch the distiller can use (inclusive: ``T - expert_epochs``,
    or its ``max_start_epoch - 1``, vlcore's ``max_start_epoch`` being exclusive).

    ``reading="as-written"`` (default): ``R_V = min{t : r(t) > T_med}``, ``R_L = max{t : r(t) <=
    T_med}`` as REFERENCE.md writes them, each the inclusive largest start of its modality.  They
    give the paper's ``R_V > R_L`` only when every epoch with ``r`` above its median comes after
    every epoch at or below it (``r`` rising cleanly across its median; then ``R_V = R_L + 1``);
    any other order gives ``R_V <= R_L`` (a falling ``r``: ``R_V = 1``, ``R_L = T``).  On vlcore's
    buffers one early epoch above the median is enough for ``R_V = 1``: a Flickr8k buffer (the first
    1000 training images, frozen EfficientNet-Lite0, 4 experts x 10 epochs at lr 0.01) and two
    embedded-dataset buffers (convnet full and frozen, 4 x 10) all gave ``R_V = 1 < R_L = 6``, with
    either mean of :func:`displacements` (``r`` rises from epoch 2 on; epoch 1 sits above the median).
    ``reading="last-above"``: ``R_V = max{t : r(t) > T_med}`` (the last epoch where the image side
    still moves more than its median share); it gives ``R_V > R_L`` exactly when ``r(T) > T_med``,
    which those buffers show.  Nothing reorders the answer to force the paper's claim: the ranges of
    the chosen reading are used and recorded (``as_dict()``), and a distiller tunes the reading on
    held-out data.  Fallbacks: no ``t`` with ``r(t) > T_med`` (``r`` constant, or T = 1) leaves no
    asymmetry to use, so both ranges are ``max_start`` (LoRS's shared range); every value is
    clamped to ``[min(1, max_start), max_start]``."""
    if reading not in READINGS:
        raise ValueError(f"reading must be one of {', '.join(READINGS)}, got {reading!r}")
    dv, dl = torch.as_tensor(d_img, dtype=torch.float64), torch.as_tensor(d_txt, dtype=torch.float64)
    if dv.ndim != 1 or dv.shape != dl.shape or dv.numel() == 0:
        raise ValueError(f"displacement tables must be two (T,) vectors, T >= 1 (got {tuple(dv.shape)} and "
                         f"{tuple(dl.shape)})")
    if not (torch.isfinite(dv).all() and torch.isfinite(dl).all()) or (dv < 0).any() or (dl < 0).any():
        raise ValueError("displacements must be finite and non-negative")
    if max_start < 0:
        raise ValueError(f"max_start must be >= 0, got {max_start}")
    r = dv / (dl + eps)
    med = float(r.median()) if r.numel() % 2 else float(r.sort().values[r.numel() // 2 - 1:r.numel() // 2 + 1].mean())
    t = torch.arange(1, r.numel() + 1)
    above, below = t[r > med], t[r <= med]
    raw_v = (int(above.min()) if reading == "as-written" else int(above.max())) if above.numel() else None
    raw_l = int(below.max()) if below.numel() else None
    lo = min(1, max_start)
    fallback = []
    if raw_v is None or raw_l is None:
        v = l = max_start
        fallback.append("no epoch has r(t) above its median (r is constant or T = 1): both ranges are max_start")
    else:
        v, l = min(max(raw_v, lo), max_start), min(max(raw_l, lo), max_start)
        if (v, l) != (raw_v, raw_l):
            fallback.append(f"clamped to [{lo}, {max_start}]")
    return StartRanges(img=v, txt=l, raw_img=raw_v, raw_txt=raw_l, ratio=[float(x) for x in r], median=med,
                       max_start=int(max_start), fallback="; ".join(fallback), reading=reading,
                       rule=RULE.format(rv=READINGS[reading]))
