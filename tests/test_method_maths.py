"""The maths of the 2026 methods (issue 19) as properties, each against a hand-computed or float64
reference: PTM-ST's shortcut trajectories (vlcore.training.shortcut), MDM's teacher merge, kernel and loss
and AMD's start ranges (vlcore.distill.distribution), the k-means initialisation (vlcore.distill.kmeans_init),
on hand-made data (on a real tiny buffer, and `vl experts --shortcut`: tests/test_method_buffers.py)."""
from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vlcore.distill.distribution import (
    arccos_squared, displacement_table, gke, layer_cosines, mdm_loss, merge_modalities,
    merge_ratio, merge_teacher, mmd2, safe_arccos, safe_sqrt, sphere_kernel, start_ranges, sum_and_difference
)
from vlcore.core.errors import ConfigError
from vlcore.distill.kmeans_init import joint_features, kmeans_init, nearest_distinct
from vlcore.model.losses import contrastive_loss
from vlcore.training.shortcut import arc_length_timing, layer_slices, shortcut_expert, shortcut_snapshots

LAYOUT = [["a.weight", [3, 2]], ["a.bias", [3]], ["b.weight", [4]]]  # 6 + 3 + 4 = 13 values


def bits(x: torch.Tensor) -> torch.Tensor:
    return x.contiguous().view(torch.int32)


def walk(k: int, p: int = 13, seed: int = 0) -> torch.Tensor:
    """A random expert path: (k+1, p) float32 snapshots."""
    g = torch.Generator().manual_seed(seed)
    return torch.cumsum(torch.randn(k + 1, p, generator=g), 0).float()


# =============================================================================== PTM-ST shortcuts
def test_layer_slices_follow_the_layout():
    assert layer_slices(LAYOUT) == [("a.weight", slice(0, 6)), ("a.bias", slice(6, 9)), ("b.weight", slice(9, 13))]


def test_arc_length_timing_by_hand():
    # one layer of 2 values: steps (3, 4) then (0, 1): lengths 5 and 1 -> b = 0, 5/6, 1
    x = torch.tensor([[0.0, 0.0], [3.0, 4.0], [3.0, 5.0]])
    b = arc_length_timing(x, [("w", slice(0, 2))])
    np.testing.assert_allclose(b, [[0.0, 5 / 6, 1.0]], rtol=0, atol=1e-15)
    np.testing.assert_array_equal(shortcut_snapshots(x, [["w", [2]]])[1].numpy(),
                                  np.float32(np.array([0.0, 0.0]) + 5 / 6 * np.array([3.0, 5.0])))


def test_arc_length_timing_is_monotonic_and_in_0_1():
    x = walk(9)
    b = arc_length_timing(x, layer_slices(LAYOUT))
    assert b.shape == (3, 10) and (b[:, 0] == 0).all() and (b[:, -1] == 1).all()
    assert (np.diff(b, axis=1) >= 0).all() and ((b >= 0) & (b <= 1)).all()


def test_shortcut_matches_a_float64_reference_and_keeps_the_endpoints_bitwise():
    x = walk(6)
    x[0, 2], x[-1, 7] = -0.0, -0.0  # a negative zero survives at both ends
    out = shortcut_snapshots(x, LAYOUT)
    assert out.dtype == torch.float32 and out.shape == x.shape
    assert torch.equal(bits(out[0]), bits(x[0])) and torch.equal(bits(out[-1]), bits(x[-1]))
    xd = x.double()
    for name, s in layer_slices(LAYOUT):  # the rule, written out per epoch
        lengths = [0.0] + [float(torch.linalg.vector_norm(xd[t, s] - xd[t - 1, s])) for t in range(1, 7)]
        cum = np.cumsum(lengths)
        for t in range(7):
            b = cum[t] / cum[-1]
            ref = (1 - b) * xd[0, s] + b * xd[-1, s]
            torch.testing.assert_close(out[t, s].double(), ref, rtol=0, atol=1e-6 * float(ref.abs().max() + 1))


def test_a_straight_line_expert_is_unchanged():
    g = torch.Generator().manual_seed(3)
    start, end = torch.randn(13, generator=g).double(), torch.randn(13, generator=g).double()
    pace = torch.tensor([0.0, 0.05, 0.3, 0.31, 0.7, 1.0], dtype=torch.float64)  # uneven speed, one direction
    x = (start + pace[:, None] * (end - start)).float()
    out = shortcut_snapshots(x, LAYOUT)
    torch.testing.assert_close(out, x, rtol=0, atol=2e-6)
    assert torch.equal(bits(out[0]), bits(x[0])) and torch.equal(bits(out[-1]), bits(x[-1]))


def test_a_layer_that_never_moved_keeps_its_bits_and_uniform_timing():
    x = walk(4)
    x[:, 6:9] = x[0, 6:9]  # a.bias never moves
    b = arc_length_timing(x, layer_slices(LAYOUT))
    np.testing.assert_array_equal(b[1], np.arange(5) / 4)
    out = shortcut_snapshots(x, LAYOUT)
    assert torch.equal(bits(out[:, 6:9]), bits(x[:, 6:9]))


def test_shortcut_expert_takes_epochs_0_to_k():
    expert = {f"{m}.{t}": walk(5, 13, seed=i)[t] for i, m in enumerate(("img", "txt")) for t in range(6)}
    out = shortcut_expert(expert, {"img": LAYOUT, "txt": LAYOUT}, 3)
    assert sorted(out) == sorted(f"{m}.{t}" for m in ("img", "txt") for t in range(4))
    for m in ("img", "txt"):
        assert torch.equal(bits(out[f"{m}.0"]), bits(expert[f"{m}.0"]))
        assert torch.equal(bits(out[f"{m}.3"]), bits(expert[f"{m}.3"]))
    with pytest.raises(ConfigError):
        shortcut_expert(expert, {"img": LAYOUT, "txt": LAYOUT}, 0)


# =============================================================================== MDM: the merge
def _pair(c: float, n: int = 6, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Two float64 vectors with cosine c, norms 1 and 2."""
    g = torch.Generator().manual_seed(seed)
    u = F.normalize(torch.randn(n, generator=g, dtype=torch.float64), dim=0)
    v = torch.randn(n, generator=g, dtype=torch.float64)
    v = F.normalize(v - (v @ u) * u, dim=0)
    return u, 2 * (c * u + math.sqrt(max(0.0, 1 - c * c)) * v)


@pytest.mark.parametrize("c", [1.0, 0.5, 0.0])
def test_the_merge_at_known_cosines(c):
    layout = [["w", [6]]]
    w0 = torch.linspace(-1, 1, 6, dtype=torch.float64)
    d1, d2 = _pair(c)
    w1, w2 = w0 + d1, w0 + d2
    r = {1.0: 1.0, 0.5: 2 * 0.5 / 1.5, 0.0: 0.0}[c]  # r = 2c / (1 + c) by hand
    ref = w0 + 0.5 * r * ((w1 + w2) / 2 - w0)
    torch.testing.assert_close(merge_teacher(w0, w1, w2, layout), ref, rtol=0, atol=1e-12)
    assert abs(float(layer_cosines(w0, w1, w2, layout)[0]) - c) < 1e-12
    if c == 1.0:
        torch.testing.assert_close(merge_teacher(w0, w1, w2, layout), w0 + 0.5 * ((w1 + w2) / 2 - w0), rtol=0,
                                   atol=1e-12)
    if c == 0.0:
        torch.testing.assert_close(merge_teacher(w0, w1, w2, layout), w0, rtol=0, atol=1e-12)


def test_the_merge_guards_opposite_and_zero_displacements():
    layout = [["w", [6]]]
    w0 = torch.ones(6, dtype=torch.float64)
    d1, d2 = _pair(-1.0)
    for w1, w2 in [(w0 + d1, w0 + d2), (w0 + d1, w0 - 0.5 * d1), (w0.clone(), w0 + d2), (w0.clone(), w0.clone())]:
        out = merge_teacher(w0, w1, w2, layout)
        assert torch.isfinite(out).all()
        torch.testing.assert_close(out, w0, rtol=0, atol=0)
    assert float(merge_ratio(-1.0)) == 0.0 and float(merge_ratio(-0.3)) == 0.0 and float(merge_ratio(1.0)) == 1.0


def test_the_merge_is_per_layer_and_keeps_the_dtype():
    w0 = torch.zeros(13)
    w1, w2 = w0.clone(), w0.clone()
    w1[0:6], w2[0:6] = 1.0, 1.0  # a.weight: c = 1 -> w0 + 0.5 (mean - w0) = 0.5
    w1[6:9], w2[7] = torch.tensor([1.0, 0.0, 0.0]), 1.0  # a.bias: orthogonal -> w0
    w1[9:13], w2[9:13] = 2.0, -2.0  # b.weight: opposite -> w0
    out = merge_teacher(w0, w1, w2, LAYOUT)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, torch.cat([torch.full((6,), 0.5), torch.zeros(7)]), rtol=0, atol=1e-7)
    both = merge_modalities({"img": w0, "txt": w0}, {"img": w1, "txt": w1}, {"img": w2, "txt": w2},
                            {"img": LAYOUT, "txt": LAYOUT})
    assert torch.equal(both["img"], out) and torch.equal(both["txt"], out)


# =============================================================================== MDM: kernel, GKE, loss
def test_the_kernel_at_known_angles():
    e = torch.eye(3, dtype=torch.float64)
    x = torch.stack([e[0], e[1], -e[0], 3 * e[0]])  # unnormalised rows are taken to the sphere
    k = sphere_kernel(e[:1], x)
    ref = torch.tensor([[1.0, math.exp(-(math.pi / 2) ** 2 / 0.5), math.exp(-math.pi ** 2 / 0.5), 1.0]],
                       dtype=torch.float64)
    torch.testing.assert_close(k, ref, rtol=0, atol=1e-12)
    a = F.normalize(torch.tensor([[1.0, 2.0, 2.0]], dtype=torch.float64), dim=1)
    b = F.normalize(torch.tensor([[2.0, -1.0, 0.5]], dtype=torch.float64), dim=1)
    theta = math.acos(float(a @ b.t()))
    assert abs(float(sphere_kernel(a, b, sigma=0.3)) - math.exp(-theta ** 2 / (2 * 0.09))) < 1e-12


def test_arccos_gradients_are_exact_inside_and_finite_at_plus_minus_one():
    x = torch.tensor([-0.9, -0.3, 0.2, 0.95], dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(arccos_squared, (x,))
    assert torch.autograd.gradcheck(safe_arccos, (x,))
    ends = torch.tensor([1.0, -1.0, 1.0 + 1e-7, -1.0 - 1e-7], dtype=torch.float64, requires_grad=True)
    for f in (arccos_squared, safe_arccos):
        (g,) = torch.autograd.grad(f(ends).sum(), ends)
        assert torch.isfinite(g).all()
    (g,) = torch.autograd.grad(arccos_squared(ends).sum(), ends)
    assert float(g[0]) == -2.0  # d theta^2 / dx -> -2 as x -> 1
    # a point and itself, and a point and its opposite: finite kernel gradients
    a = torch.randn(4, 5, dtype=torch.float64, requires_grad=True)
    (ga,) = torch.autograd.grad(sphere_kernel(a, torch.cat([a, -a]).detach()).sum(), a)
    assert torch.isfinite(ga).all()


def _mmd2_reference(r: torch.Tensor, s: torch.Tensor, sigma: float = 0.5) -> float:
    def k(x, y):
        c = float(F.normalize(x, dim=0) @ F.normalize(y, dim=0))
        return math.exp(-math.acos(max(-1.0, min(1.0, c))) ** 2 / (2 * sigma * sigma))

    n, m = len(r), len(s)
    rr = sum(k(r[i], r[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    ss = sum(k(s[i], s[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    rs = sum(k(r[i], s[j]) for i in range(n) for j in range(m)) / (n * m)
    return rr + ss - 2 * rs


def test_mmd2_against_a_float64_loop():
    g = torch.Generator().manual_seed(1)
    r, s = torch.randn(7, 4, generator=g, dtype=torch.float64), torch.randn(5, 4, generator=g, dtype=torch.float64) + 1
    assert abs(float(mmd2(r, s)) - _mmd2_reference(r, s)) < 1e-12
    with pytest.raises(ValueError, match="at least 2 rows"):
        mmd2(r[:1], s)


def test_the_kernel_discrepancy_is_zero_for_equal_sets_and_positive_otherwise():
    g = torch.Generator().manual_seed(2)
    r = F.normalize(torch.randn(16, 8, generator=g, dtype=torch.float64), dim=1)
    s = r[torch.randperm(16, generator=g)].clone().requires_grad_(True)
    k = sphere_kernel(r, r)
    off = float((k.sum() - k.diagonal().sum()) / (16 * 15))
    eq = float(mmd2(r, s.detach()))
    assert abs(eq - 2 * (off - 1) / 16) < 1e-12 and eq < 0  # 2 (mean_{i != j} k - 1) / n
    d = gke(r, s)
    assert float(d.detach()) == 0.0
    (grad,) = torch.autograd.grad(d, s)
    assert torch.isfinite(grad).all()
    far = F.normalize(torch.randn(12, 8, generator=g, dtype=torch.float64) + 3.0, dim=1).requires_grad_(True)
    d = gke(r, far)
    assert float(d.detach()) > 0.1 and abs(float(d.detach()) - math.sqrt(_mmd2_reference(r, far.detach()))) < 1e-12
    (grad,) = torch.autograd.grad(d, far)
    assert torch.isfinite(grad).all() and float(grad.abs().sum()) > 0


def test_safe_sqrt_has_a_finite_gradient_at_zero():
    v = torch.tensor([0.0, -1e-3, 1e-20, 4.0], dtype=torch.float64, requires_grad=True)
    out = safe_sqrt(v)
    torch.testing.assert_close(out, torch.tensor([0.0, 0.0, 1e-10, 2.0], dtype=torch.float64))
    (g,) = torch.autograd.grad(out.sum(), v)
    assert torch.isfinite(g).all() and float(g[0]) == 0.0 and float(g[1]) == 0.0 and float(g[3]) == 0.25


def test_the_mdm_loss_is_infonce_plus_the_weighted_discrepancies():
    g = torch.Generator().manual_seed(4)
    iv, it = torch.randn(6, 8, generator=g, requires_grad=True), torch.randn(6, 8, generator=g, requires_grad=True)
    rv, rt = torch.randn(20, 8, generator=g, requires_grad=True), torch.randn(20, 8, generator=g, requires_grad=True)
    out = mdm_loss(iv, it, rv, rt)
    u_r, g_r = sum_and_difference(rv, rt)
    u_s, g_s = sum_and_difference(iv, it)
    ref = contrastive_loss(iv, it, 0.07) + 0.8 * gke(u_r, u_s) + 0.8 * gke(g_r, g_s)
    torch.testing.assert_close(out.total, ref)
    torch.testing.assert_close(out.infonce, contrastive_loss(iv, it))
    zv, zt = F.normalize(iv, dim=1), F.normalize(it, dim=1)
    torch.testing.assert_close(u_s, F.normalize(zv + zt, dim=1))
    torch.testing.assert_close(g_s, F.normalize(zv - zt, dim=1))
    grads = torch.autograd.grad(out.total, [iv, it, rv, rt], allow_unused=True)
    assert all(torch.isfinite(x).all() for x in grads[:2]) and grads[2] is None and grads[3] is None
    bare = mdm_loss(iv, it, rv, rt, w_u=0.0, w_g=0.0)
    assert torch.equal(bare.total, bare.infonce) and float(bare.gke_u) == 0.0


# =============================================================================== AMD: start ranges
def test_start_ranges_on_hand_made_tables():
    ones = torch.ones(6, dtype=torch.float64)
    # r rising across its median (2.5, 3, ... with median 3.5): R_V = 4 > R_L = 3
    up = start_ranges(torch.tensor([1.0, 2, 3, 4, 5, 6]), ones, max_start=9)
    assert (up.raw_img, up.raw_txt, up.img, up.txt, up.median, up.fallback) == (4, 3, 4, 3, pytest.approx(3.5), "")
    # falling: R_V = 1, R_L = T (the formulas as written then give R_V < R_L)
    down = start_ranges(torch.tensor([6.0, 5, 4, 3, 2, 1]), ones, max_start=9)
    assert (down.img, down.txt) == (1, 6)
    # an early epoch above the median (as vlcore's buffers show): R_V = 1 < R_L
    early = torch.tensor([1.6, 1.1, 1.4, 1.5, 1.55, 1.56, 1.58, 1.57, 1.59, 1.62])  # median 1.565
    r = start_ranges(early, torch.ones(10), max_start=9)
    assert (r.raw_img, r.raw_txt) == (1, 6)
    last = start_ranges(early, torch.ones(10), max_start=9, reading="last-above")
    assert (last.raw_img, last.raw_txt) == (10, 6) and (last.img, last.txt) == (9, 6)
    assert "clamped" in last.fallback
    # odd T: the middle value; text displacement scales the ratio
    odd = start_ranges(torch.tensor([2.0, 2, 6]), torch.tensor([1.0, 2, 2]), max_start=5)
    assert odd.ratio == pytest.approx([2.0, 1.0, 3.0]) and odd.median == pytest.approx(2.0)
    assert (odd.img, odd.txt) == (3, 2)


def test_start_ranges_fall_back_when_degenerate():
    const = start_ranges(torch.full((5,), 2.0), torch.ones(5), max_start=3)
    assert (const.raw_img, const.img, const.txt) == (None, 3, 3) and "constant" in const.fallback
    one = start_ranges(torch.tensor([1.0]), torch.tensor([1.0]), max_start=0)
    assert (one.img, one.txt) == (0, 0)
    clamp = start_ranges(torch.tensor([1.0, 2, 3, 4, 5, 6]), torch.ones(6), max_start=2)
    assert (clamp.img, clamp.txt) == (2, 2) and clamp.fallback == "clamped to [1, 2]"
    zero_text = start_ranges(torch.tensor([1.0, 0.0]), torch.zeros(2), max_start=1)  # eps keeps r finite
    assert all(math.isfinite(x) for x in zero_text.ratio)
    json.dumps(clamp.as_dict())
    with pytest.raises(ValueError):
        start_ranges(torch.tensor([1.0, float("nan")]), torch.ones(2), max_start=1)


def test_displacement_table_means_by_hand():
    # two experts stepping in opposite directions: each moves 5 (norms), their mean does not move (params)
    a = {"img.0": torch.zeros(2), "img.1": torch.tensor([3.0, 4.0]), "txt.0": torch.zeros(1), "txt.1": torch.ones(1)}
    b = {"img.0": torch.zeros(2), "img.1": torch.tensor([-3.0, -4.0]), "txt.0": torch.zeros(1),
         "txt.1": torch.tensor([3.0])}
    norms = displacement_table([a, b], 1, "norms")
    params = displacement_table([a, b], 1, "params")
    assert norms["img"].tolist() == [5.0] and params["img"].tolist() == [0.0]
    assert norms["txt"].tolist() == [2.0] and params["txt"].tolist() == [2.0]
    assert displacement_table([{"txt.0": torch.zeros(1), "txt.1": torch.ones(1)}], 1)["img"].tolist() == [0.0]


# =============================================================================== k-means initialisation
def _random_pairs(seed=0, images=60, captions=5, fdim=12, tdim=8):
    g = torch.Generator().manual_seed(seed)
    return (torch.randn(images, fdim, generator=g), torch.randn(images * captions, tdim, generator=g),
            torch.arange(images * captions) // captions)


def test_joint_features_normalise_each_side_then_the_whole():
    img, txt, pi = _random_pairs()
    x = joint_features(img, txt, pi)
    ref = torch.cat([F.normalize(img[pi], dim=1), F.normalize(txt, dim=1)], 1) / math.sqrt(2)
    torch.testing.assert_close(x, ref)
    torch.testing.assert_close(joint_features(img[pi], txt), x)


def test_kmeans_picks_distinct_real_pairs_deterministically_for_a_seed():
    img, txt, pi = _random_pairs()
    a = kmeans_init(img, txt, 20, seed=0, pair_image=pi)
    b = kmeans_init(img, txt, 20, seed=0, pair_image=pi)
    c = kmeans_init(img, txt, 20, seed=1, pair_image=pi)
    assert a.indices.dtype == torch.int64 and a.indices.shape == (20,)
    assert a.indices.unique().numel() == 20 and int(a.indices.min()) >= 0 and int(a.indices.max()) < 300
    assert torch.equal(a.indices, b.indices) and torch.equal(a.centroids, b.centroids)
    assert not torch.equal(a.indices, c.indices)
    # each is the real pair nearest its centroid, or a duplicate resolved to the next distinct one
    x = joint_features(img, txt, pi).double()
    d = torch.cdist(a.centroids.double(), x)
    own = d.argmin(1)
    assert int((own != a.indices).sum()) == a.info["shared_nearest"]
    json.dumps(a.info)
    one_per_image = kmeans_init(img, txt, 20, seed=0, pair_image=pi, distinct_images=True)
    assert pi[one_per_image.indices].unique().numel() == 20


def test_kmeans_finds_well_separated_clusters():
    g = torch.Generator().manual_seed(5)
    centres = torch.randn(10, 16, generator=g) * 10
    img = (centres[:, None, :] + 0.01 * torch.randn(10, 8, 16, generator=g)).reshape(80, 16)
    txt = img[:, :8].clone()
    got = kmeans_init(img, txt, 10, seed=0)
    assert sorted((got.indices // 8).tolist()) == list(range(10))  # one pair from each cluster


def test_nearest_distinct_resolves_shared_nearest_points_closest_first():
    points = torch.tensor([[0.0, 0.0], [1.0, 0.0], [5.0, 5.0], [0.0, 1.0]])
    # centroids 0 and 1 both nearest point 0; centroid 1 is closer, keeps it; centroid 0 takes its next
    centroids = torch.tensor([[0.3, 0.35], [0.1, 0.0], [5.0, 4.0]])
    assert nearest_distinct(points, centroids).tolist() == [3, 0, 2]
    # a tie in distance goes to the lower centroid number, a tie among points to the lower index
    tie = torch.tensor([[0.5, 0.0], [0.5, 0.0]])
    assert nearest_distinct(points[:2], tie).tolist() == [0, 1]
    # one point per group: point 3 shares point 0's group, so centroid 0 falls back to point 1
    assert nearest_distinct(points, centroids, groups=torch.tensor([0, 1, 2, 0])).tolist() == [1, 0, 2]
    with pytest.raises(ConfigError):
        nearest_distinct(points[:2], centroids)


def test_kmeans_refuses_more_centroids_than_pairs():
    img, txt, pi = _random_pairs(images=2, captions=2)
    with pytest.raises(ConfigError):
        kmeans_init(img, txt, 5, seed=0, pair_image=pi)
