"""Bundled distillers (installed as ``vlcore.plugins.distillers``; on disk ``plugins/distillers/``),
one module per method, each a short subclass of the trajectory-matching recipe
(:class:`vlcore.matching.TrajectoryMatching`).
"""
from __future__ import annotations

from vlcore import hookimpl

from .bitraj import BiTrajectory
from .lora import LoRAMatching
from .lors import LoRS
from .repblend import RepBlend

DISTILLERS = (BiTrajectory, LoRAMatching, LoRS, RepBlend)


@hookimpl
def register_distillers(register):
    for cls in DISTILLERS:
        register(cls)
