"""The image backbone's execution options (issue 20, item 2): channels-last memory format and
bfloat16 autocast of the backbone's pass, both off by default, flags of every model command, recorded
in the spec; the distillation's pass over the synthetic images and full-backbone training use them."""
from __future__ import annotations

import json

import pytest
import torch

from vlcore.data.pipeline import build_model
from vlcore.model.encoder import ModelSpec
from vlcore.testing.runs import TINY_DATA_ARGS as TINY

torch.set_num_threads(min(2, torch.get_num_threads()))

pytestmark = pytest.mark.usefixtures("offline")


def rel(a, b) -> float:
    return float((a - b).norm() / b.norm())


def lite0(**execution):
    spec = ModelSpec(encoder="effnet-lite0", image_size=32, trainable="frozen", **execution)
    return build_model(spec, text_dim=16, seed=0).train()


def pass_of(model, x, cot):
    px = x.clone().requires_grad_(True)
    f = model.image_features(px)
    (g,) = torch.autograd.grad(f, px, grad_outputs=cot)
    return f.detach(), g


# ------------------------------------------------------------------------- the spec
def test_defaults_and_recorded_only_when_not_the_default():
    s = ModelSpec()
    assert s.channels_last is True and s.backbone_autocast == "none"
    # records (and the run keys made from them) of specs at the defaults are unchanged
    assert not set(ModelSpec.EXECUTION_FIELDS) & set(s.as_dict())
    other = ModelSpec(channels_last=False, backbone_autocast="bfloat16")
    d = other.as_dict()
    assert d["channels_last"] is False and d["backbone_autocast"] == "bfloat16"
    assert ModelSpec.from_dict(d) == other and ModelSpec.from_dict(s.as_dict()) == s


def test_flags_make_the_spec():
    from vlcore.choices import ModelChoice as ModelOptions

    spec_values = ModelOptions.of

    s = ModelOptions(encoder="convnet", image_size=16).spec()
    assert (s.channels_last, s.backbone_autocast) == (True, "none")
    off = ModelOptions(encoder="convnet", image_size=16, channels_last=False).spec()
    assert off.channels_last is False and ModelOptions.of(off)["channels_last"] is False
    on = ModelOptions(encoder="convnet", image_size=16, channels_last=True, backbone_autocast="bfloat16").spec()
    assert (on.channels_last, on.backbone_autocast) == (True, "bfloat16")
    v = spec_values(on)
    assert v["channels_last"] is True and v["backbone_autocast"] == "bfloat16"
    # an artifact's options are kept unless a flag says otherwise (--no-channels-last)
    assert ModelOptions().spec(base=on).channels_last is True
    assert ModelOptions(channels_last=False).spec(base=on).channels_last is False
    assert ModelOptions(backbone_autocast="none").spec(base=on).backbone_autocast == "none"
    assert ModelOptions().spec(base=on).backbone_autocast == "bfloat16"


def test_unknown_autocast_dtype_refused():
    model = lite0(backbone_autocast="float8")
    with pytest.raises(ValueError, match="backbone_autocast"):
        model.image_features(torch.rand(1, 3, 32, 32))


# ------------------------------------------------------------------------- the pass
def test_channels_last_the_default_and_the_same_numbers_as_nchw():
    g = torch.Generator().manual_seed(0)
    x, cot = torch.rand(4, 3, 32, 32, generator=g), torch.randn(4, 1280, generator=g)
    ref, cl = lite0(channels_last=False), lite0()
    assert ref.backbone.model.conv_stem.weight.is_contiguous()
    conv = cl.backbone.model.conv_stem.weight
    assert conv.is_contiguous(memory_format=torch.channels_last) and not conv.is_contiguous()
    f0, g0 = pass_of(ref, x, cot)
    f1, g1 = pass_of(cl, x, cot)
    assert f1.dtype == g1.dtype == torch.float32 and g1.shape == x.shape
    assert rel(f1, f0) < 1e-4 and rel(g1, g0) < 1e-2  # float noise (benchmarks/BACKBONE.md)


def test_bf16_autocast_is_confined_to_the_backbone():
    g = torch.Generator().manual_seed(0)
    x, cot = torch.rand(4, 3, 32, 32, generator=g), torch.randn(4, 1280, generator=g)
    ref, bf = lite0(), lite0(backbone_autocast="bfloat16")
    seen = []
    hook = bf.backbone.model.conv_head.register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    f0, g0 = pass_of(ref, x, cot)
    f1, g1 = pass_of(bf, x, cot)
    hook.remove()
    assert seen == [torch.bfloat16]  # the backbone ran in bfloat16 ...
    assert f1.dtype == g1.dtype == torch.float32  # ... its features and the pixel gradient are float32
    assert not torch.is_autocast_enabled("cpu")
    emb = bf.encode_image(x)  # the head (and whatever loss follows) in float32
    assert emb.dtype == torch.float32 and all(p.dtype == torch.float32 for p in bf.parameters())
    assert torch.isfinite(g1).all() and 1e-4 < rel(g1, g0) < 1.5  # not float noise: why it is off by default


def test_full_backbone_training_uses_the_options():
    """With a trainable backbone (experts, evaluation models of `--trainable full`) every step's
    forward and backward run as the options say; the parameters' gradients stay float32."""
    spec = ModelSpec(encoder="convnet", encoder_options={"width": 8}, image_size=16, trainable="full",
                     channels_last=True, backbone_autocast="bfloat16")
    model = build_model(spec, text_dim=16, seed=0).train()
    emb = model.encode_image(torch.rand(4, 3, 16, 16))
    emb.square().sum().backward()
    w = model.backbone.layers[0].weight
    assert emb.dtype == torch.float32 and w.grad is not None and w.grad.dtype == torch.float32
    assert w.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------------- end to end
def test_distillation_runs_the_synthetic_images_through_the_options(tmp_path, monkeypatch):
    """`vl experts/distill --no-channels-last --backbone-autocast bfloat16`: the distillation's frozen pass over
    the synthetic images (with the pixels' gradient) runs with both; the set, its config.toml and `vl eval`
    record and inherit them."""
    from click.testing import CliRunner

    import vlcore.model.encoder as vm
    from vlcore.cli.main import cli

    calls = []
    real = vm.run_backbone

    def spy(backbone, x, spec):
        calls.append((spec.channels_last, spec.backbone_autocast, x.requires_grad))
        return real(backbone, x, spec)

    monkeypatch.setattr(vm, "run_backbone", spy)
    monkeypatch.setenv("VL_CACHE_DIR", str(tmp_path / "cache"))
    flags = ["--no-channels-last", "--backbone-autocast", "bfloat16"]
    runner = CliRunner()
    res = runner.invoke(cli, ["experts", *TINY, "--encoder", "effnet-lite0", "--image-size", "32", "--trainable",
                              "frozen", "--num-experts", "1", "--epochs", "2", "--batch-size", "16", *flags,
                              "--out", str(tmp_path / "buf")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    calls.clear()
    res = runner.invoke(cli, ["distill", "--buffer", str(tmp_path / "buf"), "--pairs", "4", "--iterations", "2",
                              "--syn-steps", "2", "--expert-epochs", "1", "--max-start-epoch", "1", "--no-eval",
                              "--out", str(tmp_path / "ps")], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    assert (False, "bfloat16", True) in calls  # the synthetic pixels, differentiated, through the options
    meta = json.loads((tmp_path / "ps" / "meta.json").read_text())
    assert meta["spec"]["channels_last"] is False and meta["spec"]["backbone_autocast"] == "bfloat16"
    cfg = (tmp_path / "ps" / "config.toml").read_text()
    assert "channels-last = false" in cfg and 'backbone-autocast = "bfloat16"' in cfg
    res = runner.invoke(cli, ["eval", str(tmp_path / "ps"), "--eval-seeds", "1", "--eval-epochs", "1",
                              "--channels-last", "--json"], catch_exceptions=False)
    assert res.exit_code == 0, res.output
    spec = json.loads((tmp_path / "ps" / "eval-dev" / "details.json").read_text())["spec"]
    assert "channels_last" not in spec and spec["backbone_autocast"] == "bfloat16"


def test_backbone_features_do_not_depend_on_the_backbone_layout():
    """compute_features runs every backbone in the default layout: the features of a channels-last
    model's backbone are those of the same backbone built plainly (bitwise: the on-disk feature cache
    holds one set whichever came first), and the model's weights are channels-last again afterwards."""
    from vlcore.data.pipeline import build_backbone, compute_features, is_channels_last

    model = lite0(channels_last=True)
    built = build_backbone(model.spec, None, 0)
    assert is_channels_last(model.backbone) and not is_channels_last(built)
    x = torch.rand(3, 3, 32, 32)
    got = compute_features(model.backbone, x)
    assert torch.equal(got, compute_features(built, x))
    assert is_channels_last(model.backbone) and not model.backbone.training  # frozen: eval, as before
    # the same weights in channels-last do give float-noise different features: the layout matters
    model.backbone.eval()
    with torch.no_grad():
        cl = model.backbone(x.contiguous(memory_format=torch.channels_last))
    assert torch.allclose(cl, got, atol=1e-4)
