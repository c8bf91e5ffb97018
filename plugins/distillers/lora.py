"""LoRA matching (Wu et al.): bi-trajectory matching of the low-rank adapters of a ViT."""
from __future__ import annotations

from .bitraj import BiTrajectory


class LoRAMatching(BiTrajectory):
    """LoRA matching: bi-trajectory matching of low-rank adapter (+ head) trajectories, for ViTs."""

    name = "lora"
    requires_trainable = "lora"
