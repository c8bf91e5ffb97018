"""The plugin docs stay true: docs/hooks.md documents every hook of vlcore/core/hookspecs.py with its
signature, and the tutorial docs/writing-plugins.md, taken literally, makes a working plugin."""
from __future__ import annotations

import inspect
import json
import re
import sys
from pathlib import Path

import pytest

from vlcore.core import hookspecs
from vlcore.testing import contracts
from vlcore.testing.cli import run_vl

pytest_plugins = ["pytester"]

DOCS = Path(__file__).resolve().parents[1] / "docs"
FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.M | re.S)


def hook_specs() -> dict[str, str]:
    """hook name -> its signature as written in a hookimpl, e.g. ``register_selectors(register)``."""
    return {name: f"{name}{inspect.signature(fn)}" for name, fn in inspect.getmembers(hookspecs, inspect.isfunction)
            if hasattr(fn, "vlcore_spec")}


def code_blocks(path: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in FENCE.finditer(path.read_text())]


def tutorial_files() -> dict[str, str]:
    files = {}
    for _, body in code_blocks(DOCS / "writing-plugins.md"):
        m = re.match(r"# file: (\S+)\n", body)
        if m:
            files[m.group(1)] = body
    return files


# ------------------------------------------------------------------------------ hooks.md
def test_every_hook_is_documented_with_its_signature():
    specs = hook_specs()
    assert len(specs) >= 8  # the seven register_* hooks and register_commands
    text = (DOCS / "hooks.md").read_text()
    code = "\n".join(body for _, body in code_blocks(DOCS / "hooks.md"))
    missing_heading = [n for n in specs if f"## `{n}`" not in text]
    missing_signature = [sig for sig in specs.values() if sig not in code]
    assert not missing_heading, f"docs/hooks.md has no section for hooks {missing_heading}"
    assert not missing_signature, f"docs/hooks.md does not show the signatures {missing_signature} in a code block"


def test_no_documented_hook_is_stale():
    documented = set(re.findall(r"^## `(\w+)`", (DOCS / "hooks.md").read_text(), re.M))
    assert documented <= set(hook_specs()), f"documented but not in hookspecs: {documented - set(hook_specs())}"


def test_documented_contract_checks_exist():
    for doc in ("hooks.md", "writing-plugins.md"):
        for name in set(re.findall(r"(?<![.\w])(check_\w+)\(", (DOCS / doc).read_text())):
            assert hasattr(contracts, name), f"docs/{doc} mentions {name}, which vlcore.testing.contracts lacks"


# ------------------------------------------------------------------------------ the tutorial
def test_tutorial_python_blocks_compile():
    for doc in ("writing-plugins.md", "hooks.md"):
        for n, (lang, body) in enumerate(code_blocks(DOCS / doc)):
            if lang == "python":
                compile(body, f"docs/{doc} python block {n}", "exec")


def test_the_tutorial_makes_a_working_plugin(pytester, monkeypatch):
    """Write the tutorial's files into an empty folder, make it look installed (a .dist-info with
    its entry points, as `pip install -e .` would), then `vl plugins` lists it and its tests pass."""
    tomllib = pytest.importorskip("tomllib" if sys.version_info >= (3, 11) else "tomli")
    files = tutorial_files()
    assert {"pyproject.toml", "tests/conftest.py"} <= set(files) and len(files) >= 4, sorted(files)
    root = pytester.path
    for rel, body in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(body)
    project = tomllib.loads(files["pyproject.toml"])["project"]
    entry_points = project["entry-points"]["vlcore"]
    info = root / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n")
    (info / "entry_points.txt").write_text("[vlcore]\n" + "".join(f"{k} = {v}\n" for k, v in entry_points.items()))
    monkeypatch.setenv("PYTHONPATH", str(root))

    (plugin_name,) = entry_points
    infos = {i["name"]: i for i in json.loads(run_vl("plugins", "--json").stdout)}
    mine = infos[plugin_name]
    assert mine["package"] == project["name"] and mine["version"] == project["version"] and not mine["bundled"]
    assert "error" not in mine and mine["components"] == {"selector": ["longest-caption"]}

    result = pytester.runpytest_subprocess("-q", "-p", "no:cacheprovider", "tests")
    result.assert_outcomes(passed=6)
