"""Bundled distillers (installed as ``vlcore.plugins.distillers``; on disk ``plugins/distillers/``),
one module per method, and the unroll backends they use.
"""
from __future__ import annotations

from vlcore import hookimpl
from vlcore.unroll import FuncBackend, HigherBackend

from .bitraj import BiTrajectory
from .lora import LoRAMatching


@hookimpl
def register_distillers(register):
    register(BiTrajectory)
    register(LoRAMatching)


@hookimpl
def register_unroll_backends(register):
    register(FuncBackend)
    register(HigherBackend)
