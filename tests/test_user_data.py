"""The user's own data (issue 13): the `captions` dataset (a folder of images with a CSV, TSV or
JSON Lines file of captions) and the `hf` dataset (a `datasets` dataset on disk, as parquet files,
or by hub name), on small data made here, bad rows included."""
from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from vlcore.core.errors import DataError
from vlcore.core.registry import PluginHost
from vlcore.testing.contracts import check_dataset

HOST = PluginHost()


def make_images(folder, n, sub="images"):
    from PIL import Image

    (folder / sub).mkdir(parents=True, exist_ok=True)
    for i in range(n):
        Image.new("RGB", (20, 16), (20 * i % 255, 90, 200)).save(folder / sub / f"im{i}.jpg")


def captions(root, **options):
    return HOST.create("dataset", "captions", {"root": str(root), **options})


def test_csv_with_a_split_column(tmp_path):
    make_images(tmp_path, 6)
    split = ["train"] * 4 + ["val", "test"]
    rows = ["image,caption,split"] + [f"im{i}.jpg,\"photo {i}, caption {k}\",{split[i]}" for i in range(6) for k in range(3)]
    (tmp_path / "captions.csv").write_text("\n".join(rows) + "\n")
    ds = check_dataset(HOST.get("dataset", "captions"), {"root": str(tmp_path)})
    assert ds.splits() == ["train", "dev", "test"]
    train = ds.split("train")
    assert train.num_images == 4 and train.captions[0] == ["photo 0, caption 0", "photo 0, caption 1",
                                                           "photo 0, caption 2"]
    assert train.image_ids[0] == "images/im0.jpg"


def test_jsonl_seeded_split_sizes_are_options(tmp_path):
    make_images(tmp_path, 20, sub=".")
    lines = [json.dumps({"file": f"im{i}.jpg", "text": [f"a picture {i}", f"another view {i}"]}) for i in range(20)]
    (tmp_path / "captions.jsonl").write_text("\n".join(lines) + "\n")
    opts = {"image_column": "file", "caption_column": "text", "dev": 3, "test": 0.25, "seed": 1}
    ds = captions(tmp_path, **opts)
    sizes = {s: ds.split(s).num_images for s in ds.splits()}
    assert sizes == {"train": 12, "dev": 3, "test": 5}
    again = captions(tmp_path, **{**opts, "seed": 2})
    assert again.split("dev").image_ids != ds.split("dev").image_ids
    assert set(ds.split("dev").image_ids).isdisjoint(ds.split("train").image_ids)


def test_the_split_sizes_are_recorded_in_the_artifact(tmp_path):
    from vlcore.cli.main import cli

    make_images(tmp_path / "data", 12)
    (tmp_path / "data" / "captions.tsv").write_text(
        "image\tcaption\n" + "".join(f"im{i}.jpg\tthe photo number {i}\n" for i in range(12)))
    out = tmp_path / "rnd"
    res = CliRunner().invoke(cli, ["coreset", "--method", "random", "--dataset", "captions", "--data",
                                   str(tmp_path / "data"), "--dataset-option", "dev=2", "--dataset-option", "test=0",
                                   "--encoder", "convnet", "--encoder-option", "width=4", "--image-size", "16",
                                   "--pairs", "5", "--out", str(out)], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["dataset"]["config"]["dev"] == 2 and meta["dataset"]["config"]["test"] == 0
    assert meta["dataset"]["config"]["seed"] == 0 and meta["dataset"]["images"] == 10
    assert meta["dataset"]["license"].startswith("unknown")


@pytest.mark.parametrize("name,text,message", [
    ("captions.csv", "picture,caption\nim0.jpg,a\n", "captions.csv has no image column 'image'. Columns: picture, caption"),
    ("captions.csv", "image,caption\nim0.jpg,a cat\nim1.jpg,\n", "captions.csv line 3"),
    ("captions.csv", "image,caption\nim0.jpg,a cat\nnope.jpg,a dog\n", "captions.csv line 3: "),
    ("captions.csv", "image,caption,split\nim0.jpg,a,train\nim0.jpg,b,test\n", "line 3: image"),
    ("captions.csv", "image,caption,split\nim0.jpg,a,tran\n", "split 'tran' is not one of"),
    ("captions.jsonl", '{"image": "im0.jpg", "caption": "a"}\n{"image": "im1.jpg", caption: 1}\n',
     "captions.jsonl line 2 is not valid JSON"),
    ("captions.jsonl", '{"image": "im0.jpg", "caption": 7}\n', "captions.jsonl line 1: the caption is int"),
])
def test_bad_rows_name_the_file_and_row(tmp_path, name, text, message):
    make_images(tmp_path, 2)
    (tmp_path / name).write_text(text)
    with pytest.raises(DataError) as err:
        ds = captions(tmp_path, dev=0, test=0)
        ds.split("train")
    assert message in str(err.value)
    if "nope.jpg" in text:
        assert "nope.jpg" in str(err.value)


def test_no_or_several_caption_files(tmp_path):
    make_images(tmp_path, 2)
    with pytest.raises(DataError, match="no caption file"):
        captions(tmp_path).splits()
    (tmp_path / "captions.csv").write_text("image,caption\nim0.jpg,a\n")
    (tmp_path / "captions.tsv").write_text("image\tcaption\nim0.jpg\ta\n")
    with pytest.raises(DataError, match="several caption files"):
        captions(tmp_path).splits()


# ------------------------------------------------------------------------------ hf
@pytest.fixture(scope="module")
def hf_data(tmp_path_factory):
    datasets = pytest.importorskip("datasets")
    from PIL import Image

    root = tmp_path_factory.mktemp("hf")
    n = 10
    feats = datasets.Features({"image": datasets.Image(), "caption": datasets.Sequence(datasets.Value("string")),
                               "split": datasets.Value("string")})
    one = datasets.Dataset.from_dict(
        {"image": [Image.new("RGB", (20, 16), (25 * i, 90, 200)) for i in range(n)],
         "caption": [[f"photo {i} a", f"photo {i} b"] for i in range(n)],
         "split": ["train"] * 6 + ["validation"] * 2 + ["test"] * 2}, features=feats)
    one.save_to_disk(str(root / "one"))
    datasets.DatasetDict({"train": one.select(range(6)), "validation": one.select(range(6, 8))}).save_to_disk(
        str(root / "dict"))
    one.to_parquet(str(root / "parquet" / "train-00000-of-00001.parquet"))
    rows = datasets.Dataset.from_dict({"picture": [Image.new("RGB", (8, 8), (9 * (i // 2), 0, 0)) for i in range(12)],
                                       "text": [f"caption {i}" for i in range(12)], "img_id": [i // 2 for i in range(12)]})
    rows.save_to_disk(str(root / "rows"))
    return root


@pytest.mark.parametrize("folder,sizes", [("one", {"train": 6, "dev": 2, "test": 2}),
                                          ("dict", {"train": 6, "dev": 2}),
                                          ("parquet", {"train": 6, "dev": 2, "test": 2})])
def test_hf_from_disk_and_parquet(hf_data, folder, sizes, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = check_dataset(HOST.get("dataset", "hf"), {"root": str(hf_data / folder)})
    assert {s: ds.split(s).num_images for s in ds.splits()} == sizes
    assert ds.split("train").captions[0] == ["photo 0 a", "photo 0 b"]


def test_hf_columns_and_rows_per_image_are_options(hf_data, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    ds = HOST.create("dataset", "hf", {"root": str(hf_data / "rows"), "image_column": "picture",
                                       "caption_column": "text", "id_column": "img_id", "dev": 1, "test": 1})
    train = ds.split("train")
    assert train.num_images == 4 and all(len(c) == 2 for c in train.captions)
    with pytest.raises(DataError, match="no caption column 'caption'. Columns: picture, text, img_id"):
        HOST.create("dataset", "hf", {"root": str(hf_data / "rows"), "image_column": "picture"}).splits()


def test_hf_hub_name_offline_says_how_to_get_it(monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DataError, match="save_to_disk"):
        HOST.create("dataset", "hf", {"name": "someone/not-cached-here"}).splits()
