"""Bundled distillers (installed as ``vlcore.plugins.distillers``; on disk ``plugins/distillers/``),
one module per method, each a short subclass of the trajectory-matching recipe
(:class:`vlcore.distill.matching.TrajectoryMatching`), or of the recipe base :class:`vlcore.components.Distiller`
for a method without an unroll (``mdm``).
"""
from __future__ import annotations

from vlcore import hookimpl

from .amd import AMD
from .bitraj import BiTrajectory
from .lora import LoRAMatching
from .lors import LoRS
from .mdm import MDM
from .ptm_st import PTMST
from .repblend import RepBlend

DISTILLERS = (BiTrajectory, LoRAMatching, LoRS, RepBlend, PTMST, AMD, MDM)


@hookimpl
def register_distillers(register):
    for cls in DISTILLERS:
        register(cls)
