"""The ``tinyresnet`` image encoder: vlcore's image-encoder contract, shapes and weights files."""
import pytest
import torch

from vlcore.core.errors import ConfigError, WeightsError
from vlcore.testing.contracts import check_image_encoder

from vl_plugin_example.tinyresnet import TinyResNet


@pytest.mark.parametrize("options", [{"width": 8}, {"width": 8, "norm": "batch", "blocks": 2}])
def test_image_encoder_contract(options):
    check_image_encoder(TinyResNet, options, image_size=16)


@pytest.mark.parametrize("stages,dim", [(1, 8), (2, 16), (3, 32)])
def test_feature_dim(stages, dim):
    enc = TinyResNet(TinyResNet.Config(width=8, stages=stages), image_size=16)
    assert enc.feature_dim == dim
    assert enc(torch.rand(3, 3, 16, 16)).shape == (3, dim)


def test_too_small_images_are_refused():
    with pytest.raises(ConfigError, match="at least 4"):
        TinyResNet(TinyResNet.Config(stages=3), image_size=2)


def test_weights_file_round_trip(tmp_path):
    from safetensors.torch import save_file

    torch.manual_seed(0)
    a = TinyResNet(TinyResNet.Config(width=8), image_size=16).eval()
    path = tmp_path / "w.safetensors"
    save_file({k: v.contiguous() for k, v in a.state_dict().items()}, str(path))
    torch.manual_seed(1)
    b = TinyResNet(TinyResNet.Config(width=8, pretrained=str(path)), image_size=16).eval()
    x = torch.rand(2, 3, 16, 16)
    assert torch.equal(a(x), b(x)) and b.weights_source == f"file {path}"
    with pytest.raises(WeightsError, match="does not fit"):
        TinyResNet(TinyResNet.Config(width=16, pretrained=str(path)), image_size=16)
    with pytest.raises(WeightsError, match="no hub weights"):
        TinyResNet(TinyResNet.Config(pretrained="hub"), image_size=16)
