"""Retrieval recall against a brute-force reference (ties, several captions per image)."""

import pytest
import torch

from vlcore.model.metrics import KEYS, aggregate, retrieval_metrics


def brute_force(img, txt, caption_image, ks=(1, 5, 10)):
    img = torch.nn.functional.normalize(img.double(), dim=-1)
    txt = torch.nn.functional.normalize(txt.double(), dim=-1)
    sim = (img @ txt.t()).tolist()
    n_img, n_txt = len(sim), len(sim[0])
    owner = caption_image.tolist()
    out = {}
    for k in ks:
        hits = 0
        for i in range(n_img):
            own = [c for c in range(n_txt) if owner[c] == i]
            # an image hits if any own caption is in the top k, ties ranked against the model:
            # caption c's position = 1 + number of *other images'* captions scoring >= it
            best = min(sum(1 for c2 in range(n_txt) if owner[c2] != i and sim[i][c2] >= sim[i][c]) for c in own)
            hits += best < k
        out[f"tr_r{k}"] = 100.0 * hits / n_img
    for k in ks:
        hits = 0
        for c in range(n_txt):
            i = owner[c]
            rank = sum(1 for j in range(n_img) if j != i and sim[j][c] >= sim[i][c])
            hits += rank < k
        out[f"ir_r{k}"] = 100.0 * hits / n_txt
    return out


@pytest.mark.parametrize("seed", range(4))
def test_matches_brute_force_random(seed):
    g = torch.Generator().manual_seed(seed)
    n_img = 23
    caps_per = torch.randint(1, 6, (n_img,), generator=g)
    caption_image = torch.repeat_interleave(torch.arange(n_img), caps_per)
    img = torch.randn(n_img, 8, generator=g)
    txt = torch.randn(len(caption_image), 8, generator=g)
    got = retrieval_metrics(img, txt, caption_image)
    ref = brute_force(img, txt, caption_image)
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k]), k


def test_ties_count_against_the_model():
    # quantised embeddings produce many exact ties
    g = torch.Generator().manual_seed(0)
    img = torch.randint(0, 2, (12, 3), generator=g).float() + 0.1
    caption_image = torch.arange(12).repeat_interleave(3)
    txt = img[caption_image].clone()
    got = retrieval_metrics(img, txt, caption_image)
    ref = brute_force(img, txt, caption_image)
    for k in KEYS:
        assert got[k] == pytest.approx(ref[k])
    # a collapsed model (everything equal) is at the bottom, not at 100%
    collapsed = retrieval_metrics(torch.ones(10, 4), torch.ones(50, 4), torch.arange(10).repeat_interleave(5))
    assert collapsed["tr_r1"] == 0.0 and collapsed["ir_r1"] == 0.0
    assert collapsed["ir_r5"] == 0.0 and collapsed["tr_r5"] == 0.0


def test_perfect_and_multi_caption_semantics():
    # image 0 has captions 0,1; image 1 has caption 2. Caption 1 is perfect for image 0.
    img = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    txt = torch.tensor([[0.6, 0.8], [1.0, 0.0], [0.0, 1.0]])
    m = retrieval_metrics(img, txt, torch.tensor([0, 0, 1]))
    assert m["tr_r1"] == 100.0  # any own caption in the top 1 is enough
    # caption 0 ("[.6,.8]") prefers image 1 -> miss; caption 1 and 2 hit
    assert m["ir_r1"] == pytest.approx(200 / 3)


def test_chunking_is_invisible():
    from vlcore.model.metrics import retrieval_ranks
    g = torch.Generator().manual_seed(3)
    img, txt = torch.randn(40, 5, generator=g), torch.randn(120, 5, generator=g)
    ci = torch.arange(40).repeat_interleave(3)
    a = retrieval_ranks(img, txt, ci, chunk=7)
    b = retrieval_ranks(img, txt, ci, chunk=1000)
    assert torch.equal(a[0], b[0]) and torch.equal(a[1], b[1])


def test_aggregate_mean_std():
    m = aggregate([{"a": 1.0}, {"a": 3.0}])
    assert m["a"] == 2.0 and m["a_std"] == 1.0
