"""Tests of the bundled datasets (vlcore.plugins.datasets): Flickr8k, Flickr30k/COCO (Karpathy JSON)
and the embedded synthetic scenes."""
from __future__ import annotations

import json
import pickle
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from vlcore.core.errors import ConfigError, DataError
from vlcore.core.registry import PluginHost
from vlcore.data.dataset import Dataset, load_images
from vlcore.plugins.datasets import Flickr8k
from vlcore.plugins.datasets.embedded import scenes as D

REAL_FLICKR8K = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "flickr8k-dev"


def split_error(host, root: Path, split: str) -> str:
    """The message of the DataError that loading ``split`` of the Flickr8k folder ``root`` raises."""
    with pytest.raises(DataError) as e:
        host.create("dataset", "flickr8k", {"root": str(root)}).split(split)
    return str(e.value)


def _jpeg(path: Path, colour=(200, 30, 30), size=(24, 20)):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", size, colour).save(path, "JPEG")


# ================================================================================== Flickr8k
TRAIN = ["a_1.jpg", "b_2.jpg", "c_3.jpg"]
DEV = ["d_4.jpg", "e_5.jpg"]
TEST = ["f_6.jpg"]


def make_flickr8k(root: Path, *, test=False, image_dir="images", caption_order=None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    ids = TRAIN + DEV + TEST
    lines = []
    for n, iid in enumerate(ids):
        for k in caption_order or range(5):
            lines.append(f"{iid}#{k}\tcaption {k} of image {n} .")
        lines.append("")  # blank lines are skipped
    (root / "Flickr8k.token.txt").write_text("\n".join(lines) + "\n")
    (root / "Flickr_8k.trainImages.txt").write_text("\n".join(TRAIN) + "\n\n")
    (root / "Flickr_8k.devImages.txt").write_text("\n".join(DEV) + "\n")
    if test:
        (root / "Flickr_8k.testImages.txt").write_text("\n".join(TEST) + "\n")
    for n, iid in enumerate(ids):
        _jpeg(root / image_dir / iid, colour=(40 * n, 100, 200))
    return root


def test_registered(host):
    assert {"flickr8k", "flickr30k", "coco", "embedded"} <= set(host.names("dataset"))
    for name in ("flickr8k", "flickr30k", "coco", "embedded"):
        cls = host.get("dataset", name)
        assert issubclass(cls, Dataset) and cls.__doc__.strip().splitlines()[0]
        fields = cls.Config.__dataclass_fields__
        assert "root" in fields and "limit" in fields


def test_flickr8k_parse(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k", caption_order=[3, 0, 4, 1, 2])
    ds = host.create("dataset", "flickr8k", {"root": str(root)})
    assert ds.splits() == ["train", "dev"]
    tr = ds.split("train")
    assert tr.image_ids == TRAIN and tr.name == "train" and tr.dataset == "flickr8k"
    # caption-index order, whatever the order in the file
    assert tr.captions[0] == [f"caption {k} of image 0 ." for k in range(5)]
    assert all(len(c) == 5 for c in tr.captions)
    img = tr.loader(1)
    assert img.mode == "RGB" and img.size == (24, 20)
    dev = ds.split("dev")
    assert dev.image_ids == DEV and dev.captions[1][4] == "caption 4 of image 4 ."
    assert str(root) in dev.source and "Flickr_8k.devImages.txt" in dev.source
    assert ds.load_split("dev") is dev  # cached per instance
    assert load_images(dev, 16, use_cache=False).shape == (2, 3, 16, 16)
    pickle.loads(pickle.dumps(dev.loader))(0)  # loaders survive worker processes


def test_flickr8k_test_split_listed_only_when_present(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k")
    ds = host.create("dataset", "flickr8k", {"root": str(root)})
    assert "test" not in ds.splits()
    with pytest.raises(DataError, match="Flickr_8k.testImages.txt"):
        ds.split("test")
    make_flickr8k(tmp_path / "f8k2", test=True)
    ds2 = host.create("dataset", "flickr8k", {"root": str(tmp_path / "f8k2")})
    assert ds2.splits() == ["train", "dev", "test"]
    assert ds2.split("test").image_ids == TEST
    with pytest.raises(DataError, match="no split 'val'"):
        ds2.split("val")


def test_flickr8k_limit_and_official_folder(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k", image_dir="Flicker8k_Dataset")
    ds = host.create("dataset", "flickr8k", {"root": str(root), "limit": "2"})
    tr = ds.split("train")
    assert tr.image_ids == TRAIN[:2] and len(tr.captions) == 2
    assert "Flicker8k_Dataset" in tr.loader.paths[0] and tr.loader(1).mode == "RGB"
    assert ds.split("dev").num_images == 2


def test_flickr8k_missing_root(host, tmp_path):
    with pytest.raises(DataError, match="--data DIR"):
        host.create("dataset", "flickr8k", {}).split("train")
    with pytest.raises(DataError, match="does not exist.*--data DIR"):
        host.create("dataset", "flickr8k", {"root": str(tmp_path / "nope")}).splits()


def test_flickr8k_missing_caption_file(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k")
    (root / "Flickr8k.token.txt").unlink()
    with pytest.raises(DataError, match="caption file .*Flickr8k.token.txt not found"):
        host.create("dataset", "flickr8k", {"root": str(root)}).split("train")


def test_flickr8k_missing_split_file_direct(tmp_path):
    root = make_flickr8k(tmp_path / "f8k")
    ds = Flickr8k(Flickr8k.Config(root=str(root)))
    with pytest.raises(DataError, match="Flickr_8k.testImages.txt not found"):
        ds.load_split("test")


@pytest.mark.parametrize("bad", ["a_1.jpg#0 no tab here", "a_1.jpg\tno caption index",
                                 "a_1.jpg#x\tbad index", "a_1.jpg#0\t   "])
def test_flickr8k_malformed_caption_line(host, tmp_path, bad):
    root = make_flickr8k(tmp_path / "f8k")
    path = root / "Flickr8k.token.txt"
    lines = path.read_text().splitlines()
    lines.insert(3, bad)
    path.write_text("\n".join(lines) + "\n")
    msg = split_error(host, root, "train")
    assert "Flickr8k.token.txt" in msg and "line 4" in msg and "expected" in msg


def test_flickr8k_id_without_captions(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k")
    with open(root / "Flickr_8k.devImages.txt", "a") as f:
        f.write("zzz_9.jpg\n")
    _jpeg(root / "images" / "zzz_9.jpg")
    msg = split_error(host, root, "dev")
    assert "zzz_9.jpg" in msg and "Flickr_8k.devImages.txt" in msg and "Flickr8k.token.txt" in msg


def test_flickr8k_missing_images_detected_eagerly(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k")
    (root / "images" / "b_2.jpg").unlink()
    msg = split_error(host, root, "train")
    assert "1 of 3 image files are missing" in msg and str(root / "images" / "b_2.jpg") in msg
    # a file that disappears after the split was loaded is reported by the loader
    ds = host.create("dataset", "flickr8k", {"root": str(root)})
    dev = ds.split("dev")
    (root / "images" / "e_5.jpg").unlink()
    with pytest.raises(DataError, match=f"image file {root / 'images' / 'e_5.jpg'} not found"):
        dev.loader(1)


def test_flickr8k_no_image_folder(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k", image_dir="elsewhere")
    with pytest.raises(DataError, match="no image folder.*images/"):
        host.create("dataset", "flickr8k", {"root": str(root)}).split("train")


def test_flickr8k_corrupt_image(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k")
    bad = root / "images" / "c_3.jpg"
    bad.write_bytes(b"this is not a jpeg")
    tr = host.create("dataset", "flickr8k", {"root": str(root)}).split("train")
    tr.loader(0)
    with pytest.raises(DataError) as e:
        tr.loader(2)
    assert str(bad) in str(e.value) and "corrupt" in str(e.value)
    # a truncated JPEG too
    good = (root / "images" / "a_1.jpg").read_bytes()
    bad.write_bytes(good[: len(good) // 2])
    with pytest.raises(DataError, match="c_3.jpg"):
        tr.loader(2)


def test_flickr8k_empty_split(host, tmp_path):
    root = make_flickr8k(tmp_path / "f8k")
    (root / "Flickr_8k.devImages.txt").write_text("\n\n")
    with pytest.raises(DataError, match="Flickr_8k.devImages.txt lists no images"):
        host.create("dataset", "flickr8k", {"root": str(root)}).split("dev")


# ============================================================================ Karpathy JSON
def make_karpathy(root: Path, name: str, *, coco=False) -> Path:
    entries = []
    plan = [("train", 3), ("val", 2), ("test", 2), ("restval", 1)] if coco else \
        [("train", 3), ("val", 2), ("test", 2)]
    n = 0
    for split, count in plan:
        for _ in range(count):
            folder = ("val2014" if split != "train" else "train2014") if coco else ""
            fname = f"COCO_{folder}_{n:012d}.jpg" if coco else f"{1000 + n}.jpg"
            entry = {"filename": fname, "imgid": n, "split": split,
                     "sentences": [{"tokens": ["x"], "raw": f" Caption {k} of {n}. ", "imgid": n}
                                   for k in range(5 if n % 2 == 0 else 6)]}
            if coco:
                entry["filepath"] = folder
                _jpeg(root / folder / fname)
            else:
                _jpeg(root / "flickr30k-images" / fname)
            entries.append(entry)
            n += 1
    (root / f"dataset_{name}.json").write_text(json.dumps({"images": entries, "dataset": name}))
    return root


def test_flickr30k(host, tmp_path):
    root = make_karpathy(tmp_path / "f30k", "flickr30k")
    ds = host.create("dataset", "flickr30k", {"root": str(root)})
    assert ds.splits() == ["train", "dev", "test"]
    tr, dev, te = ds.split("train"), ds.split("dev"), ds.split("test")
    assert tr.image_ids == ["1000.jpg", "1001.jpg", "1002.jpg"]
    assert dev.image_ids == ["1003.jpg", "1004.jpg"] and te.image_ids == ["1005.jpg", "1006.jpg"]
    assert tr.captions[0][2] == "Caption 2 of 0." and len(tr.captions[1]) == 6
    assert dev.loader(0).mode == "RGB"
    assert host.create("dataset", "flickr30k", {"root": str(root), "limit": 1}).split("train").num_images == 1


def test_flickr30k_explicit_paths(host, tmp_path):
    root = make_karpathy(tmp_path / "f30k", "flickr30k")
    moved = tmp_path / "ann.json"
    (root / "dataset_flickr30k.json").rename(moved)
    ds = host.create("dataset", "flickr30k", {"annotations": str(moved), "images": str(root / "flickr30k-images")})
    assert ds.split("test").num_images == 2
    with pytest.raises(DataError, match="dataset_flickr30k.json not found"):
        host.create("dataset", "flickr30k", {"root": str(root)}).split("train")


def test_coco_restval_and_filepath(host, tmp_path):
    root = make_karpathy(tmp_path / "coco", "coco", coco=True)
    ds = host.create("dataset", "coco", {"root": str(root)})
    tr = ds.split("train")
    assert tr.num_images == 4 and tr.image_ids[-1].startswith("val2014/")
    assert tr.loader(3).mode == "RGB"
    ds2 = host.create("dataset", "coco", {"root": str(root), "restval_in_train": "false"})
    assert ds2.split("train").num_images == 3
    assert ds2.split("dev").image_ids[0] == "val2014/COCO_val2014_000000000003.jpg"


def test_karpathy_errors(host, tmp_path):
    root = make_karpathy(tmp_path / "f30k", "flickr30k")
    path = root / "dataset_flickr30k.json"
    good = path.read_text()
    with pytest.raises(DataError, match="--data DIR"):
        host.create("dataset", "flickr30k", {}).split("train")
    path.write_text(good[:-10])
    with pytest.raises(DataError, match=r"dataset_flickr30k.json is not valid JSON \(line 1"):
        host.create("dataset", "flickr30k", {"root": str(root)}).split("train")
    path.write_text(json.dumps({"annotations": []}))
    with pytest.raises(DataError, match='dataset_flickr30k.json has no "images" list'):
        host.create("dataset", "flickr30k", {"root": str(root)}).split("train")
    path.write_text(json.dumps({"images": [{"filename": "1000.jpg", "split": "train"}]}))
    with pytest.raises(DataError, match="entry 0 .*dataset_flickr30k.json is malformed"):
        host.create("dataset", "flickr30k", {"root": str(root)}).split("train")
    data = json.loads(good)
    data["images"] = [e for e in data["images"] if e["split"] != "test"]
    path.write_text(json.dumps(data))
    with pytest.raises(DataError, match="split 'test' is empty.*dataset_flickr30k.json"):
        host.create("dataset", "flickr30k", {"root": str(root)}).split("test")
    path.write_text(good)
    (root / "flickr30k-images" / "1004.jpg").unlink()
    with pytest.raises(DataError, match="1 of 2 image files are missing: .*1004.jpg"):
        host.create("dataset", "flickr30k", {"root": str(root)}).split("dev")
    (root / "flickr30k-images" / "1000.jpg").write_bytes(b"garbage")
    tr = host.create("dataset", "flickr30k", {"root": str(root)}).split("train")
    with pytest.raises(DataError, match="1000.jpg.*corrupt"):
        tr.loader(0)


# ================================================================================== embedded
def test_embedded_determinism_and_captions(host):
    opts = {"num_train": 60, "num_dev": 20, "num_test": 20}
    a = host.create("dataset", "embedded", {**opts, "seed": 3}).split("train")
    b = host.create("dataset", "embedded", {**opts, "seed": 3}).split("train")
    c = host.create("dataset", "embedded", {**opts, "seed": 4}).split("train")
    assert a.captions == b.captions and a.source == b.source
    assert a.captions != c.captions and a.source != c.source
    assert "seed=3" in a.source and D.GENERATOR_VERSION in a.source
    for i in range(5):
        assert np.array_equal(np.asarray(a.loader(i)), np.asarray(b.loader(i)))
    assert any(not np.array_equal(np.asarray(a.loader(i)), np.asarray(c.loader(i))) for i in range(5))
    img = a.loader(0)
    assert img.mode == "RGB" and img.size == (64, 64)
    assert all(len(caps) == 5 and len(set(caps)) == 5 for caps in a.captions)
    assert len({tuple(caps) for caps in a.captions}) == a.num_images
    assert all(isinstance(t, str) and t.strip() == t and t for caps in a.captions for t in caps)
    # splits draw disjoint scenes
    dev = host.create("dataset", "embedded", {**opts, "seed": 3}).split("dev")
    assert dev.captions[:5] != a.captions[:5] and dev.image_ids[0] == "dev-00000"
    # a prefix of a larger split is identical (per-image determinism)
    big = host.create("dataset", "embedded", {"seed": 3, "num_train": 80}).split("train")
    assert big.captions[:60] == a.captions
    pickle.loads(pickle.dumps(a.loader))(0)


def test_embedded_captions_describe_scene():
    scene = D.make_scene(0, "train", 7)
    caps = D.make_captions(scene, 0, "train", 7)
    colours = {o["colour"] for o in scene["objects"]}
    text = " ".join(caps)
    assert any(c in text or (c == "purple" and "violet" in text) for c in colours)
    # relations are always true: check on many scenes with two objects in the same row or column
    for i in range(300):
        s = D.make_scene(1, "dev", i)
        objs = s["objects"]
        if len(objs) < 2:
            continue
        p = D._Phrases(s, __import__("random").Random(i))
        a, b = objs[0], objs[1]
        rel = p.relation(a, b)
        if rel == "above":
            assert a["row"] < b["row"] and a["cy"] < b["cy"]
        elif rel == "below":
            assert a["row"] > b["row"] and a["cy"] > b["cy"]
        elif rel == "left":
            assert a["col"] < b["col"] and a["cx"] < b["cx"]
        else:
            assert a["col"] > b["col"] and a["cx"] > b["cx"]


def test_embedded_limit_size_speed(host):
    ds = host.create("dataset", "embedded", {"limit": 7, "image_size": 32, "root": "/ignored"})
    assert ds.splits() == ["train", "dev", "test"]
    t = time.perf_counter()
    tr = ds.split("train")  # generates the full 2000-image split, then applies the limit
    assert time.perf_counter() - t < 2.0
    assert tr.num_images == 7 and tr.loader(0).size == (32, 32)
    full = host.create("dataset", "embedded", {}).split("train")
    assert full.num_images == 2000 and full.num_pairs == 10000
    t = time.perf_counter()
    for i in range(50):
        full.loader(i)
    assert (time.perf_counter() - t) / 50 < 0.02
    # different images look different
    px = [np.asarray(full.loader(i), dtype=np.int16) for i in range(4)]
    assert all(np.abs(px[0] - p).mean() > 1 for p in px[1:])
    with pytest.raises(ConfigError, match="num_dev"):
        host.create("dataset", "embedded", {"num_dev": 0})
    with pytest.raises(DataError, match="no split 'val'"):
        ds.split("val")


# ================================================================================ real data
@pytest.mark.slow
def test_real_flickr8k_dev(host):
    if not REAL_FLICKR8K.is_dir():
        pytest.skip(f"real Flickr8k data not found at {REAL_FLICKR8K}")
    ds = host.create("dataset", "flickr8k", {"root": str(REAL_FLICKR8K)})
    assert ds.splits() == ["train", "dev"]
    tr, dev = ds.split("train"), ds.split("dev")
    assert tr.num_images == 6000 and dev.num_images == 1000
    assert all(len(c) == 5 for c in tr.captions + dev.captions)
    assert not set(tr.image_ids) & set(dev.image_ids)
    img = dev.loader(0)
    assert img.mode == "RGB" and min(img.size) > 0
    with pytest.raises(DataError, match="Flickr_8k.testImages.txt"):
        ds.split("test")


# ------------------------------------------------------------------------------ holdout
def test_holdout_is_carved_out_of_train_deterministically():
    host = PluginHost()
    opts = {"num_train": 20, "num_dev": 4, "num_test": 4}
    whole = host.create("dataset", "embedded", opts).split("train")
    ds = host.create("dataset", "embedded", {**opts, "holdout": 6})
    train, held = ds.split("train"), ds.split("holdout")
    assert train.num_images == 14 and held.num_images == 6 and held.name == "holdout"
    assert set(train.image_ids).isdisjoint(held.image_ids)
    assert sorted(train.image_ids + held.image_ids) == sorted(whole.image_ids)
    again = host.create("dataset", "embedded", {**opts, "holdout": 6}).split("holdout")
    assert again.image_ids == held.image_ids and again.fingerprint == held.fingerprint
    assert train.fingerprint != whole.fingerprint  # caches never mix the two
    i = whole.image_ids.index(held.image_ids[0])
    assert np.array_equal(np.asarray(held.loader(0)), np.asarray(whole.loader(i)))
    assert ds.split("dev").image_ids == host.create("dataset", "embedded", opts).split("dev").image_ids
    with pytest.raises(DataError, match="holdout=N"):
        host.create("dataset", "embedded", opts).split("holdout")
    with pytest.raises(DataError, match="between 1 and 19"):
        host.create("dataset", "embedded", {**opts, "holdout": 20}).split("train")


def test_fingerprint_follows_content_not_file_times(host, tmp_path):
    """A data folder copied to a new machine (same path, new modification times) keeps its fingerprint,
    so its caches and buffers still match and its interrupted runs resume; new content changes it."""
    import os

    from vlcore.choices import other_data

    root = make_flickr8k(tmp_path / "f8k")

    def split():
        return host.create("dataset", "flickr8k", {"root": str(root)}).split("train")

    before = split().fingerprint
    later = time.time() + 3600
    for name in ("Flickr8k.token.txt", "Flickr_8k.trainImages.txt", "Flickr_8k.devImages.txt"):
        os.utime(root / name, (later, later))  # what a copy without preserved times does
    assert split().fingerprint == before
    tokens = root / "Flickr8k.token.txt"
    tokens.write_text(tokens.read_text().replace("caption 0 of image 0 .", "caption 0 of image zero ."))
    changed = split().fingerprint
    assert changed != before
    # a buffer made from the first content warns on the second, saying what differs and what to do
    rec = {"name": "flickr8k", "pairs": 15, "root": str(root)}
    msg = other_data({**rec, "fingerprint": "a" * 20}, {**rec, "fingerprint": "b" * 20})
    assert "fingerprint aaaa" in msg and "fingerprint bbbb" in msg and "vl experts" in msg
    assert other_data({**rec, "fingerprint": "a" * 20}, {**rec, "fingerprint": "a" * 20}) is None
