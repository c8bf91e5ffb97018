"""Loading a script of benchmarks/ as a module, for the tests of the table drivers (the scripts are
not a package: each puts benchmarks/ on sys.path itself)."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def load_benchmark(script: str, name: str | None = None):
    """benchmarks/SCRIPT.py, executed afresh as module ``name`` (default: the script's name) and
    registered in sys.modules under it."""
    name = name or script
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{script}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod
