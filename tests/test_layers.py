"""The import graph keeps its shape: the layers contracts of pyproject.toml (import-linter) hold, no
module of vlcore/, plugins/ or cli/ takes part in an import circle (counting every import: module
level, function-local and under TYPE_CHECKING), and a function-local import says why it is one."""
from __future__ import annotations

import ast
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
#: folders on disk -> the package they are installed as (pyproject's package-dir mapping)
PACKAGES = {"vlcore": "vlcore", "plugins": "vlcore.plugins", "cli": "vlcore.cli"}


def module_name(path: Path) -> tuple[str, bool]:
    """The dotted name a source file is imported as, and whether it is a package's __init__."""
    rel = path.relative_to(ROOT).with_suffix("")
    parts = [*PACKAGES[rel.parts[0]].split("."), *rel.parts[1:]]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def import_graph(folders) -> dict[str, set[str]]:
    """module -> the vlcore modules it imports (``from a import b`` counts as importing ``a.b`` when
    ``a.b`` is a module), for every source file under ``folders`` (relative to the repository)."""
    files = {}
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            files[module_name(path)[0]] = path
    graph: dict[str, set[str]] = {}
    for mod, path in files.items():
        _, is_pkg = module_name(path)
        out = graph.setdefault(mod, set())
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = mod.split(".") if is_pkg else mod.split(".")[:-1]
                if node.level:
                    base = base[: len(base) - (node.level - 1)] if node.level > 1 else base
                    target = ".".join(base + ([node.module] if node.module else []))
                else:
                    target = node.module or ""
                targets = [f"{target}.{a.name}" if f"{target}.{a.name}" in files else target for a in node.names]
            else:
                continue
            out.update(t for t in targets if t in files and t != mod)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted."""
    index, low, stack, on, found = {}, {}, [], set(), []
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 10_000))

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                found.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(found)


def test_the_circle_finder_finds_circles():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_the_graph_sees_local_and_type_checking_imports():
    graph = import_graph(["vlcore"])
    assert "vlcore.core.errors" in graph["vlcore.core.config"]  # module level
    assert "vlcore.training.distributed" in graph["vlcore.distill.recipe"]  # `from vlcore.training import distributed`


@pytest.mark.parametrize("folders", [["vlcore"], ["vlcore", "plugins", "cli"]], ids=["vlcore", "whole-tree"])
def test_no_import_circle(folders):
    found = circles(import_graph(folders))
    assert not found, "import circles (break each: move the shared name down a layer):\n" + \
        "\n".join(" <-> ".join(c) for c in found)


def test_the_layers_contracts_hold(tmp_path):
    """lint-imports (the contracts of pyproject.toml's [tool.importlinter]) on a staged copy of the
    tree in which plugins/ and cli/ lie inside vlcore/, as they are installed."""
    stage = tmp_path / "stage"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    shutil.copytree(ROOT / "vlcore", stage / "vlcore", ignore=ignore)
    shutil.copytree(ROOT / "plugins", stage / "vlcore" / "plugins", ignore=ignore)
    shutil.copytree(ROOT / "cli", stage / "vlcore" / "cli", ignore=ignore)
    shutil.copy(ROOT / "pyproject.toml", stage / "pyproject.toml")
    env = {**os.environ, "PYTHONPATH": str(stage)}
    exe = Path(sys.executable).with_name("lint-imports")
    cmd = [str(exe)] if exe.exists() else [sys.executable, "-c", "from importlinter.cli import lint_imports_command; "
                                                                 "lint_imports_command()"]
    r = subprocess.run([*cmd, "--config", "pyproject.toml", "--no-cache"], cwd=stage, env=env,
                       capture_output=True, text=True)
    assert "Analyzed" in r.stdout, r.stdout + r.stderr
    assert r.returncode == 0, r.stdout[-6000:] + r.stderr[-2000:]
    assert " broken" in r.stdout and " 0 broken" in r.stdout, r.stdout


#: where a function-local import of vlcore is the exception and says why
CORE = ("vlcore", "cli")


def local_imports_without_reason(folders) -> list[str]:
    """``file:line`` of each import of vlcore inside a function, or under TYPE_CHECKING, whose line
    has no ``# local: <reason>`` comment."""
    out = []
    for folder in folders:
        for path in sorted((ROOT / folder).rglob("*.py")):
            lines = path.read_text().splitlines()
            tree = ast.parse("\n".join(lines))
            deferred = [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))
                        or (isinstance(n, ast.If) and "TYPE_CHECKING" in ast.unparse(n.test))]
            for block in deferred:
                for node in ast.walk(block):
                    if not isinstance(node, (ast.Import, ast.ImportFrom)):
                        continue
                    names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                    if not (getattr(node, "level", 0) or any(n.split(".")[0] == "vlcore" for n in names)):
                        continue
                    text = " ".join(lines[node.lineno - 1: node.end_lineno])
                    if "# local: " not in text:
                        out.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    return sorted(set(out))


def test_local_imports_say_why():
    found = local_imports_without_reason(CORE)
    assert not found, "import these at the top of the module, or say why not with `# local: <reason>`:\n" + \
        "\n".join(found)
