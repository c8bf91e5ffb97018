"""Tests of the coreset selectors (vlcore.plugins.selectors): each algorithm against a brute-force or
hand-computed reference, determinism, the budget errors and the unique-images rule."""
from __future__ import annotations

import itertools
import math

import pytest
import torch

from vlcore.components import SelectContext, Selector
from vlcore.core.errors import ConfigError, UnknownComponentError, VLError
from vlcore.data.pipeline import PairData
from vlcore.distill.coreset import as_selection, run_selector
from vlcore.model.encoder import ModelSpec
from vlcore.plugins.selectors import algorithms as S
from vlcore.plugins.selectors.components import joint_space

torch.set_num_threads(min(2, torch.get_num_threads()))

METHODS = ("random", "herding", "kcenter", "forgetting")


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("VL_CACHE_DIR", str(tmp_path / "cache"))


# =================================================================================== references
def brute_herding(X: torch.Tensor, k: int, groups=None) -> list[int]:
    """Literal herding: at step t, argmin over unchosen x of ||mu - (sum chosen + x) / t||."""
    mu = X.mean(0)
    chosen: list[int] = []
    for t in range(1, k + 1):
        best, best_v = None, math.inf
        for i in range(X.shape[0]):
            if i in chosen or (groups is not None and any(groups[i] == groups[j] for j in chosen)):
                continue
            v = float(torch.linalg.vector_norm(mu - (X[chosen].sum(0) + X[i]) / t))
            if v < best_v:
                best, best_v = i, v
        chosen.append(best)
    return chosen


def brute_kcenter(X: torch.Tensor, k: int, first: int, groups=None) -> list[int]:
    """Greedy farthest point on the full O(N^2) distance matrix."""
    D = torch.cdist(X, X)
    chosen = [first]
    while len(chosen) < k:
        d = D[:, chosen].min(1).values
        best, best_v = None, -1.0
        for i in range(X.shape[0]):
            if i in chosen or (groups is not None and any(groups[i] == groups[j] for j in chosen)):
                continue
            if float(d[i]) > best_v:
                best, best_v = i, float(d[i])
        chosen.append(best)
    return chosen


def radius(X: torch.Tensor, centers) -> float:
    return float(torch.cdist(X, X[list(centers)]).min(1).values.max())


# =================================================================================== registry
def test_registered(host):
    assert set(METHODS) <= set(host.names("selector"))
    for name in METHODS:
        cls = host.get("selector", name)
        assert issubclass(cls, Selector) and cls.name == name
        assert cls.summary()
        assert host.create("selector", name).config.unique_images is True


def test_unknown_method_suggests(host):
    with pytest.raises(UnknownComponentError, match="Did you mean 'herding'"):
        host.create("selector", "herdng")


def test_unknown_option_suggests(host):
    with pytest.raises(ConfigError, match="Did you mean 'space'"):
        host.create("selector", "kcenter", {"spaec": "raw"})
    with pytest.raises(ConfigError, match="not one of"):
        host.create("selector", "herding", {"space": "pixels"})
    with pytest.raises(ConfigError, match="epochs"):
        host.create("selector", "forgetting", {"epochs": 0})


# =================================================================================== herding
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_herding_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(60, 5, generator=g, dtype=torch.float64)
    assert S.herding(X, 12).tolist() == brute_herding(X, 12)


def test_herding_with_groups_equals_brute_force():
    g = torch.Generator().manual_seed(3)
    X = torch.randn(48, 4, generator=g, dtype=torch.float64)
    groups = torch.arange(48) // 3
    got = S.herding(X, 10, groups=groups)
    assert got.tolist() == brute_herding(X, 10, groups.tolist())
    assert len(set(groups[got].tolist())) == 10


def test_herding_float32_matches_float64_choices():
    X = torch.randn(500, 16, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    assert S.herding(X.float(), 20).tolist() == S.herding(X, 20).tolist()


def test_herding_mean_error_below_random():
    g = torch.Generator().manual_seed(0)
    X = torch.randn(2000, 32, generator=g) + torch.rand(32, generator=g)
    for k in (10, 50):
        err_h = S.mean_error(X, S.herding(X, k))
        err_r = [S.mean_error(X, torch.randperm(2000, generator=g)[:k]) for _ in range(20)]
        assert err_h < min(err_r)
        assert err_h < 0.5 * sum(err_r) / len(err_r)


# =================================================================================== k-center
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_kcenter_equals_brute_force(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(80, 6, generator=g, dtype=torch.float64)
    first = int(torch.randint(80, (1,), generator=g))
    got, dist = S.kcenter_greedy(X, 15, first, return_distances=True)
    assert got.tolist() == brute_kcenter(X, 15, first)
    assert torch.allclose(dist, torch.cdist(X, X[got]).min(1).values, atol=1e-6)
    assert S.covering_radius(X, got) == pytest.approx(radius(X, got.tolist()))


def test_kcenter_with_groups_equals_brute_force():
    g = torch.Generator().manual_seed(4)
    X = torch.randn(60, 3, generator=g, dtype=torch.float64)
    groups = torch.arange(60) // 5
    got = S.kcenter_greedy(X, 8, 7, groups=groups)
    assert got.tolist() == brute_kcenter(X, 8, 7, groups.tolist())
    assert len(set(groups[got].tolist())) == 8


@pytest.mark.parametrize("seed", range(5))
def test_kcenter_radius_within_twice_optimal(seed):
    g = torch.Generator().manual_seed(seed)
    X = torch.randn(9, 2, generator=g, dtype=torch.float64)
    optimal = min(radius(X, c) for c in itertools.combinations(range(9), 3))
    for first in range(9):
        got = S.kcenter_greedy(X, 3, first)
        assert radius(X, got.tolist()) <= 2 * optimal + 1e-9


def test_kcenter_duplicates_never_rechosen():
    X = torch.zeros(10, 3)
    X[5:] = 1.0
    got = S.kcenter_greedy(X, 6, 0)
    assert len(set(got.tolist())) == 6


# =================================================================================== forgetting
# A scripted run over 6 pairs (pair 5 is never presented).  Each batch is (pair ids, image
# embeddings, text embeddings) with the cosine-similarity matrix S (rows: images, columns: texts)
# worked out by hand; a pair is learned when its row peaks at its column (i2t) or its column at its
# row (t2i).
PATTERN_1 = ([[0, -2], [1, 2], [0, 2]], [[-1, -2], [-1, 2], [1, -1]])
# S = [[ .89 -.89  .71]      row 0 -> 0 (i2t ok), column 0 -> 0 (t2i ok): both
#      [-1.   .60 -.32]      row 1 -> 1 (i2t ok), column 1 -> 2: i2t only
#      [-.89  .89 -.71]]     row 2 -> 1, column 2 -> 0: not learned
PATTERN_2 = ([[1, 0], [-2, 1], [-1, -1]], [[2, -2], [2, 1], [0, -2]])
# S = [[ .71  .89  0. ]      row 0 -> 1, column 0 -> 0: t2i only
#      [-.95 -.60 -.45]      row 1 -> 2, column 1 -> 0: not learned
#      [ 0.  -.95  .71]]     row 2 -> 2, column 2 -> 2: both
PATTERN_3 = ([[0, 2], [2, -2], [0, 1]], [[-1, -2], [1, -1], [-2, -1]])
# S = [[-.89 -.71 -.45]      row 0 -> 2, column 0 -> 1: not learned
#      [ .32  1.  -.32]      row 1 -> 1, column 1 -> 1: both
#      [-.89 -.71 -.45]]     row 2 -> 2 (i2t ok), column 2 -> 0: i2t only
LEARNED = {1: [True, True, False], 2: [True, False, True], 3: [False, True, True]}
SCRIPT = [  # (pair ids, pattern)
    ([0, 1, 2], 1),   # 0 L, 1 L, 2 N
    ([3, 4, 0], 2),   # 3 L, 4 N, 0 L
    ([1, 0, 3], 3),   # 1 N (forgotten: 1st event of pair 1), 0 L, 3 L
    ([0, 1, 2], 1),   # 0 L, 1 L, 2 N
    ([1, 0, 2], 2),   # 1 L, 0 N (forgotten: 1st event of pair 0), 2 L
    ([1, 3, 0], 3),   # 1 N (forgotten: 2nd event of pair 1), 3 L, 0 L
]


def test_forgetting_hand_computed():
    patterns = {1: PATTERN_1, 2: PATTERN_2, 3: PATTERN_3}
    tr = S.ForgettingTracker(6)
    for ids, p in SCRIPT:
        img, txt = (torch.tensor(v, dtype=torch.float32) for v in patterns[p])
        learned = tr(torch.tensor(ids), img, txt)
        assert learned.tolist() == LEARNED[p]
    assert tr.forgotten.tolist() == [1, 2, 0, 0, 0, 0]
    assert tr.presentations.tolist() == [6, 5, 3, 3, 1, 0]
    assert tr.ever_learned.tolist() == [True, True, True, True, False, False]
    assert tr.scores().tolist() == [1, 2, 0, 0, math.inf, math.inf]
    # most forgotten first: never learned / never seen {4, 5}, then 1 (2 events), 0 (1), then {2, 3}
    for seed in range(6):
        r = tr.ranking(seed).tolist()
        assert set(r[:2]) == {4, 5} and r[2:4] == [1, 0] and set(r[4:]) == {2, 3}
    orders = {tuple(tr.ranking(seed).tolist()) for seed in range(12)}
    assert len(orders) == 4  # the ties are broken by the seed
    assert tr.summary()["never_learned"] == 2 and tr.summary()["max_events"] == 2


def test_forgetting_same_image_counts_as_correct():
    # two captions of one image (rows 0 and 1 are the same picture).  Pair 1: its row peaks at
    # caption 0 (1 > .8), its column ties between the two copies of the image (.8, .8) and argmax
    # takes row 0; both are the right picture, so it is learned only when images are compared.
    img = torch.tensor([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[1.0, 0.0], [0.8, 0.6], [0.0, 1.0]])
    assert S.batch_learned(img, txt).tolist() == [True, False, True]
    assert S.batch_learned(img, txt, torch.tensor([7, 7, 8])).tolist() == [True, True, True]
    tr = S.ForgettingTracker(3, pair_image=torch.tensor([7, 7, 8]))
    assert tr(torch.tensor([0, 1, 2]), img, txt).tolist() == [True, True, True]


def test_forgetting_tracker_rejects_bad_batches():
    tr = S.ForgettingTracker(4)
    with pytest.raises(ValueError):
        tr(torch.tensor([0, 0]), torch.eye(2), torch.eye(2))
    with pytest.raises(ValueError):
        tr(torch.tensor([0, 1, 2]), torch.eye(2), torch.eye(2))


# =================================================================================== selectors
SPEC = ModelSpec(encoder="convnet", encoder_options={"width": 8}, image_size=16)


def tiny_data(num_images=30, captions=3, dim=12, seed=0) -> PairData:
    g = torch.Generator().manual_seed(seed)
    images = torch.randint(0, 256, (num_images, 3, 16, 16), generator=g, dtype=torch.uint8)
    pair_image = torch.arange(num_images).repeat_interleave(captions)
    # captions of one image are near each other, so the spaces have structure
    text = torch.randn(num_images, dim, generator=g)[pair_image] + 0.3 * torch.randn(len(pair_image), dim, generator=g)
    caps = [f"image {int(i)} caption {k % captions}" for k, i in enumerate(pair_image)]
    return PairData(images, text, pair_image, key=None, captions=caps)


@pytest.fixture(scope="module")
def data():
    return tiny_data()


def ctx_for(data, host, budget=1, seed=0):
    return SelectContext(train=data, spec=SPEC, budget=budget, seed=seed, host=host)


def run(host, data, method, budget, seed=0, **opts):
    if method != "random":
        opts.setdefault("epochs", 2)
    sel = host.create("selector", method, opts)
    return as_selection(sel.select(ctx_for(data, host, budget, seed)))


@pytest.mark.parametrize("method", METHODS)
def test_selector_contract(host, data, method):
    got = run(host, data, method, 10)
    idx = got.indices
    assert idx.dtype == torch.long and idx.shape == (10,)
    assert len(set(idx.tolist())) == 10 and 0 <= int(idx.min()) and int(idx.max()) < data.num_pairs
    # unique images by default
    assert len(set(data.pair_image[idx].tolist())) == 10
    # determinism under a seed
    assert run(host, data, method, 10).indices.tolist() == idx.tolist()


@pytest.mark.parametrize("method", ["random", "kcenter"])
def test_other_seed_other_choice(host, data, method):
    a = run(host, data, method, 10, seed=0).indices.tolist()
    b = run(host, data, method, 10, seed=1).indices.tolist()
    assert a != b


def test_forgetting_seed_changes_choice(host, data):
    a = run(host, data, "forgetting", 10, seed=0).indices.tolist()
    b = run(host, data, "forgetting", 10, seed=5).indices.tolist()
    assert a != b


@pytest.mark.parametrize("method", METHODS)
def test_budget_errors(host, data, method):
    sel = host.create("selector", method, {} if method == "random" else {"epochs": 1})
    for bad in (0, -3):
        with pytest.raises(ConfigError, match="at least 1"):
            sel.select(ctx_for(data, host, bad, 0))
    with pytest.raises(ConfigError, match="exceeds the 90 pairs"):
        sel.select(ctx_for(data, host, data.num_pairs + 1, 0))
    with pytest.raises(ConfigError, match="exceeds the 30 images.*--no-unique-images"):
        sel.select(ctx_for(data, host, 31, 0))


@pytest.mark.parametrize("method", ["random", "herding", "kcenter"])
def test_without_unique_images_budget_may_exceed_images(host, data, method):
    opts = {"unique_images": False}
    if method != "random":
        opts.update(space="raw")
    got = run(host, data, method, 45, **opts).indices
    assert len(set(got.tolist())) == 45
    assert len(set(data.pair_image[got].tolist())) < 45
    whole = run(host, data, method, data.num_pairs, **opts).indices
    assert sorted(whole.tolist()) == list(range(data.num_pairs))


def test_unique_images_whole_split(host, data):
    got = run(host, data, "kcenter", 30, space="raw").indices
    assert sorted(data.pair_image[got].tolist()) == list(range(30))


def test_random_is_uniform_over_pairs(host):
    data = tiny_data(num_images=4, captions=2)
    counts = torch.zeros(8)
    sel = host.create("selector", "random", {"unique_images": False})
    for seed in range(400):
        counts[sel.select(ctx_for(data, host, 2, seed)).indices] += 1
    assert (counts / 400 - 0.25).abs().max() < 0.08


def test_herding_and_kcenter_use_the_space(host, data):
    X, info = joint_space(ctx_for(data, host), host.create("selector", "herding", {"space": "raw"}).config)
    assert X.shape == (data.num_pairs, info["dim"]) and info["space"] == "raw"
    # both halves are unit vectors
    assert torch.allclose(X.norm(dim=1), torch.full((data.num_pairs,), math.sqrt(2.0)), atol=1e-5)
    h = run(host, data, "herding", 8, space="raw")
    assert h.indices.tolist() == S.herding(X, 8, groups=data.pair_image).tolist()
    assert h.info["mean_error"] == pytest.approx(S.mean_error(X, h.indices), abs=1e-5)
    k = run(host, data, "kcenter", 8, space="raw", first="mean")
    first = int(torch.argmin(((X - X.mean(0)) ** 2).sum(1)))
    assert k.indices.tolist() == S.kcenter_greedy(X, 8, first, groups=data.pair_image).tolist()
    Xe, info_e = joint_space(ctx_for(data, host), host.create("selector", "herding", {"epochs": 1}).config)
    assert info_e["space"] == "expert" and info_e["model"].startswith("quick model")
    assert torch.allclose(Xe.norm(dim=1), torch.full((data.num_pairs,), math.sqrt(2.0)), atol=1e-5)


def test_forgetting_counts_every_presentation(host, data):
    sel = host.create("selector", "forgetting", {"epochs": 3, "batch_size": 30})
    got = sel.select(ctx_for(data, host, 5, 0))
    ev = got.info["events"]
    assert ev["pairs"] == data.num_pairs and ev["mean_presentations"] == 3.0


def test_run_selector_builds_the_artifact(host, data):
    sel = host.create("selector", "random")
    ps = run_selector(sel, ctx_for(data, host, 6, 3))
    idx = ps.meta["pair_indices"]
    assert ps.meta["kind"] == "coreset" and ps.meta["method"] == "random" and ps.meta["seed"] == 3
    assert ps.meta["config"] == {"unique_images": True}
    assert torch.equal(ps.text, data.text[idx])
    assert torch.allclose(ps.images, data.images[data.pair_image[idx]].float() / 255)
    assert ps.captions == [data.captions[i] for i in idx]


def test_run_selector_checks_third_party_answers(host, data):
    class Bad(Selector):
        name = "bad"

        def select(self, ctx):
            return [0, 1, 0][:ctx.budget]

    with pytest.raises(VLError, match="same pair twice"):
        run_selector(Bad(), ctx_for(data, host, 3, 0))
    with pytest.raises(VLError, match="returned 3 pairs for a budget of 4"):
        run_selector(Bad(), ctx_for(data, host, 4, 0))
