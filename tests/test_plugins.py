"""Plugin loading as users meet it: `vl plugins` (subprocesses, installed entry points), the
VL_LOAD_PLUGINS allow-list, broken and duplicate plugins, unknown names, misspelled hooks, and the
`register_plugin` fixture of vlcore.testing."""
from __future__ import annotations

import importlib.metadata as md
import json
import textwrap
from pathlib import Path

import pluggy
import pytest
from click.testing import CliRunner

from vlcore import hookimpl
from vlcore.components import Selector
from vlcore.core.errors import UnknownComponentError
from vlcore.core.registry import DuplicateComponentError, PluginHost, get_host, normalise_kind
from vlcore.testing.cli import run_vl
from vlcore.testing.components import FirstPairs
from vlcore.testing.host import registered

pytest_plugins = ["vlcore.testing.fixtures"]

EXAMPLE = "vl-plugin-example"
try:
    EXAMPLE_VERSION: str | None = md.version(EXAMPLE)
except md.PackageNotFoundError:
    EXAMPLE_VERSION = None
needs_example = pytest.mark.skipif(
    EXAMPLE_VERSION is None,
    reason=f"{EXAMPLE} is not installed (CI installs it: pip install -e examples/vl-plugin-example); these "
           f"checks find it through its entry point")


def plugins_json(**env) -> list[dict]:
    return json.loads(run_vl("plugins", "--json", env=env).stdout)


def fake_distribution(root: Path, dist: str, module: str, source: str, entry: str) -> Path:
    """An importable module plus a ``.dist-info`` folder declaring it in the ``vlcore`` entry-point
    group: what `pip install` leaves behind, without pip.  Put ``root`` on PYTHONPATH."""
    root.mkdir(parents=True, exist_ok=True)
    (root / f"{module}.py").write_text(textwrap.dedent(source))
    info = root / f"{dist.replace('-', '_')}-0.1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1.0\n")
    (info / "entry_points.txt").write_text(f"[vlcore]\n{entry} = {module}\n")
    return root


# ------------------------------------------------------------------------------ vl plugins
@needs_example
def test_vl_plugins_lists_the_example_plugin():
    infos = {i["name"]: i for i in plugins_json()}
    ex = infos["example"]
    assert ex["package"] == EXAMPLE and ex["version"] == EXAMPLE_VERSION and ex["bundled"] is False
    assert ex["module"] == "vl_plugin_example"
    assert ex["components"] == {"selector": ["medoid"], "image_encoder": ["tinyresnet"]}
    assert "error" not in ex
    bundled = [i for i in infos.values() if i["package"] == "vlcore"]
    assert bundled and all(i["bundled"] for i in bundled)
    text = run_vl("plugins").stdout
    assert f"example  ({EXAMPLE} {EXAMPLE_VERSION}, third-party)" in text
    assert "selectors: medoid" in text


@needs_example
def test_allow_list_selects_packages():
    only_core = plugins_json(VL_LOAD_PLUGINS="vlcore")
    assert only_core and {i["package"] for i in only_core} == {"vlcore"}
    assert "example" not in {i["name"] for i in only_core}
    only_example = plugins_json(VL_LOAD_PLUGINS="vl_plugin_example")  # names are canonicalised
    assert [i["name"] for i in only_example] == ["example"]
    names = [s["name"] for s in json.loads(run_vl("list", "selectors", "--json",
                                                  env={"VL_LOAD_PLUGINS": EXAMPLE}).stdout)]
    assert names == ["medoid"]


def test_empty_allow_list_loads_no_plugin():
    assert plugins_json(VL_LOAD_PLUGINS="") == []
    help_text = run_vl("--help", env={"VL_LOAD_PLUGINS": ""}).stdout
    assert "image encoders   (none)" in help_text


def test_a_plugin_that_fails_to_import_is_reported_and_vl_goes_on(tmp_path):
    root = fake_distribution(tmp_path / "site", "broken-vl-plugin", "broken_vl_plugin",
                             "raise RuntimeError('boom: this plugin is broken')\n", "broken")
    env = {"PYTHONPATH": str(root)}
    proc = run_vl("plugins", "--json", env=env)
    assert 'Error importing plugin "broken" from package "broken-vl-plugin": RuntimeError: boom' in proc.stderr
    assert "VL_LOAD_PLUGINS" in proc.stderr  # says how to start vl without it
    infos = {i["name"]: i for i in json.loads(proc.stdout)}
    assert infos["broken"]["package"] == "broken-vl-plugin" and "boom" in infos["broken"]["error"]
    assert "vlcore.selectors" in infos  # the others still load
    assert "random" in run_vl("list", "selectors", env=env).stdout
    assert "FAILED TO IMPORT: RuntimeError: boom" in run_vl("plugins", env=env).stdout
    quiet = run_vl("plugins", "--json", env={**env, "VL_LOAD_PLUGINS": "vlcore"})
    assert "broken" not in quiet.stderr and "broken" not in quiet.stdout


# ------------------------------------------------------------------------------ duplicates
class TwinSelector(Selector):
    """Twin: a selector whose name two plugins use."""

    name = "twin"


class PluginA:
    @staticmethod
    @hookimpl
    def register_selectors(register):
        register(TwinSelector)


class PluginB(PluginA):
    pass


def test_duplicate_names_are_an_error_naming_both_plugins():
    host = PluginHost(load_entrypoints=False)
    host.register(PluginA, "plugin-a")
    host.register(PluginB(), "plugin-b")
    with pytest.raises(DuplicateComponentError) as err:
        host.names("selector")
    msg = str(err.value)
    assert "Duplicate selector name 'twin'" in msg and "'plugin-a'" in msg and "'plugin-b'" in msg
    assert "VL_LOAD_PLUGINS" in msg


def test_duplicate_of_a_bundled_name_from_an_installed_package(tmp_path):
    root = fake_distribution(tmp_path / "site", "dup-vl-plugin", "dup_vl_plugin", """
        from vlcore import hookimpl
        from vlcore.components import Selector

        class Random(Selector):
            '''Another random.'''
            name = "random"

        @hookimpl
        def register_selectors(register):
            register(Random)
        """, "dup")
    env = {"PYTHONPATH": str(root)}
    proc = run_vl("list", "selectors", env=env, check=False)
    assert proc.returncode != 0
    assert "Duplicate selector name 'random'" in proc.stderr
    assert "'vlcore.selectors'" in proc.stderr and "'dup'" in proc.stderr
    assert "Traceback" not in proc.stderr
    # the allow-list is the way out
    assert "random" in run_vl("list", "selectors", env={**env, "VL_LOAD_PLUGINS": "vlcore"}).stdout


def test_register_plugin_refuses_a_duplicate_at_once(register_plugin):
    register_plugin(PluginA, "plugin-a")
    with pytest.raises(DuplicateComponentError, match="Duplicate selector name 'twin'") as err:
        register_plugin(PluginB(), "plugin-b")
    assert "'plugin-a'" in str(err.value) and "'plugin-b'" in str(err.value)
    assert get_host().get("selector", "twin") is TwinSelector  # the first one is still usable


# ------------------------------------------------------------------------------ unknown names
def test_unknown_names_get_a_suggestion():
    host = PluginHost()
    with pytest.raises(UnknownComponentError, match=r"Unknown selector 'herdng'\. Did you mean 'herding'\? "
                                                    r"Available: .*kcenter"):
        host.get("selector", "herdng")
    with pytest.raises(UnknownComponentError, match="Did you mean 'bitraj'"):
        host.create("distiller", "bitrj")
    with pytest.raises(UnknownComponentError, match="Did you mean 'selector'"):
        normalise_kind("selectr")
    result = CliRunner().invoke(__import__("vlcore.cli.main", fromlist=["cli"]).cli,
                                ["coreset", "--method", "herdng", "--budget", "3", "--out", "x"])
    assert result.exit_code != 0
    assert "Unknown selector 'herdng'. Did you mean 'herding'?" in result.output


# ------------------------------------------------------------------------------ misspelled hooks
class Misspelled:
    """``register_selector`` (singular) is not a vlcore hook."""

    @staticmethod
    @hookimpl
    def register_selector(register):  # pragma: no cover - never called
        register(TwinSelector)


def test_a_misspelled_hook_fails_loudly():
    host = PluginHost(load_entrypoints=False)
    with pytest.raises(pluggy.PluginValidationError, match="unknown hook 'register_selector'"):
        host.register(Misspelled, "misspelled")
    with pytest.raises(pluggy.PluginValidationError, match="register_selector"), registered(Misspelled, host=host):
        pass  # pragma: no cover


def test_a_misspelled_hook_in_an_installed_package_fails_loudly(tmp_path):
    root = fake_distribution(tmp_path / "site", "typo-vl-plugin", "typo_vl_plugin", """
        from vlcore import hookimpl

        @hookimpl
        def register_selector(register):
            pass
        """, "typo")
    proc = run_vl("plugins", env={"PYTHONPATH": str(root)}, check=False)
    assert "unknown hook 'register_selector'" in proc.stderr and "typo_vl_plugin" in proc.stderr
    assert "Did you mean 'register_selectors'" in proc.stderr
    assert proc.returncode == 0  # reported loudly, and vl still starts


# ------------------------------------------------------------------------------ register_plugin fixture
class FirstPairsPlugin:
    @staticmethod
    @hookimpl
    def register_selectors(register):
        register(FirstPairs)


@pytest.fixture
def gone_afterwards():
    """Torn down after `register_plugin` (requested before it): the plugin must be gone by then."""
    before = get_host()
    yield
    host = get_host()
    assert host is before, "the process-wide host was not restored"
    assert "first-pairs" not in host.names("selector")
    assert not any(info.name == "first-pairs-plugin" for info in host.plugin_table())


def test_register_plugin_makes_a_component_usable(gone_afterwards, register_plugin, tiny_pairs, tiny_spec):
    from vlcore.cli.main import cli
    from vlcore.testing.contracts import check_selector, selector_context

    host = register_plugin(FirstPairsPlugin, "first-pairs-plugin")
    assert get_host() is host
    sel = host.create("selector", "first-pairs")
    assert sel.select(selector_context(tiny_pairs, tiny_spec, budget=3)) == [0, 2, 4]
    check_selector(FirstPairs)
    out = CliRunner().invoke(cli, ["list", "selectors"]).output
    assert "first-pairs" in out and "[first-pairs-plugin]" in out
    assert host.owner("selector", "first-pairs") == "first-pairs-plugin"


def test_registered_context_manager_undoes_everything():
    outer = get_host()
    with registered(FirstPairsPlugin, "first-pairs-plugin") as host:
        assert get_host() is host and "first-pairs" in host.names("selector")
    assert get_host() is outer
    assert "first-pairs" not in host.names("selector") and "first-pairs-plugin" not in host.plugins


def test_tiny_fixtures_and_test_components_by_name(register_plugin, tiny_pairs, tiny_embedded, tiny_spec,
                                                   tiny_image_encoder, tiny_text_encoder):
    import torch

    import vlcore.testing.plugin
    from vlcore.data.pipeline import build_model
    from vlcore.training.train import SGDConfig, embed_split, train_model

    assert (tiny_pairs.num_images, tiny_pairs.num_pairs) == (8, 16) and tiny_pairs.images.dtype == torch.uint8
    assert tiny_embedded.num_images == 16 and tiny_embedded.num_pairs == 80  # 5 captions per scene
    assert tiny_embedded.text.shape == (80, tiny_text_encoder.dim) and tiny_embedded.captions[0].strip()
    assert tiny_image_encoder(torch.rand(2, 3, 16, 16)).shape == (2, tiny_image_encoder.feature_dim)
    host = register_plugin(vlcore.testing.plugin)  # tiny-cnn and hashed-bow, by name
    assert {"tiny-cnn", "hashed-bow"} <= set(host.names("image_encoder")) | set(host.names("text_encoder"))
    model = build_model(tiny_spec, tiny_text_encoder.dim, seed=0)
    train_model(model, tiny_embedded, SGDConfig(epochs=1, batch_size=32), seed=0)
    img, txt = embed_split(model, tiny_embedded)
    assert img.shape == (16, model.embed_dim) and txt.shape == (80, model.embed_dim)
