"""The ``medoid`` selector: vlcore's selector contract, the algorithm, and registration."""
import pytest
import torch

from vlcore.core.errors import ConfigError
from vlcore.testing.contracts import check_selector, selector_context

import vl_plugin_example
from vl_plugin_example.medoid import MedoidSelector, kmeans


@pytest.mark.parametrize("options", [{}, {"unique_images": False}, {"normalize": False, "iterations": 3}])
def test_selector_contract(options):
    check_selector(MedoidSelector, options)


def test_kmeans_finds_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [10.0, 0.0], [0.0, 10.0], [10.0, 10.0]])
    x = torch.cat([c + 0.3 * torch.randn(25, 2, generator=g) for c in centres])
    found, assign = kmeans(x, 4, generator=torch.Generator().manual_seed(1))
    # every true centre has a found centroid within 0.5, and the clusters are the blobs
    assert torch.cdist(centres, found).min(dim=1).values.max() < 0.5
    for b in range(4):
        assert assign[25 * b:25 * (b + 1)].unique().numel() == 1


def test_one_pair_per_caption_cluster(tiny_pairs, tiny_spec):
    # tiny_pairs: 8 images in 4 groups; captions of a group share a direction
    ctx = selector_context(tiny_pairs, tiny_spec, budget=4, seed=0)
    sel = MedoidSelector().select(ctx)
    groups = tiny_pairs.pair_image[sel.indices] % 4
    assert sorted(groups.tolist()) == [0, 1, 2, 3]
    assert sel.indices.tolist() == MedoidSelector().select(ctx).indices.tolist()
    assert sel.info["converged"] and sel.info["empty_clusters"] == 0 and sel.info["largest_cluster"] == 4


def test_budget_errors_say_how_to_fix(tiny_pairs, tiny_spec):
    def ctx(budget):
        return selector_context(tiny_pairs, tiny_spec, budget=budget, seed=0)

    with pytest.raises(ConfigError, match="--no-unique-images"):
        MedoidSelector().select(ctx(tiny_pairs.num_images + 1))
    everything = MedoidSelector(MedoidSelector.Config(unique_images=False)).select(ctx(tiny_pairs.num_pairs))
    assert sorted(everything.indices.tolist()) == list(range(16))
    with pytest.raises(ConfigError, match="at least 1"):
        MedoidSelector().select(ctx(0))
    with pytest.raises(ConfigError, match="iterations"):
        MedoidSelector(MedoidSelector.Config(iterations=0))


def test_registers_like_a_bundled_plugin(register_plugin):
    from click.testing import CliRunner

    from vlcore.cli.main import cli

    host = register_plugin(vl_plugin_example, "example")
    assert host.get("selector", "medoid") is MedoidSelector
    assert host.owner("selector", "medoid") == "example"
    assert host.create("selector", "medoid", {"iterations": "7"}).config.iterations == 7
    result = CliRunner().invoke(cli, ["list", "selectors"])
    assert result.exit_code == 0, result.output
    assert "medoid" in result.output and "[example]" in result.output
