"""Bi-trajectory matching (Wu et al., TMLR 2024): the recipe of :mod:`vlcore.distill.matching` as published."""
from __future__ import annotations

from vlcore.distill.matching import TrajectoryMatching


class BiTrajectory(TrajectoryMatching):
    """Bi-trajectory matching of expert trajectories (Wu et al.): distil images and caption embeddings."""

    name = "bitraj"
