"""RepBlend (NeurIPS 2025): LoRS with representation blending and symmetric projection matching.

Both backbones are frozen; the image side has a projection head of the text head's form
(``--image-head mlp``), and experts and students train and match both heads (each modality
normalised by its own displacement).  In every inner step the frozen-backbone features of the
synthetic minibatch and its text embeddings are blended with one weight lambda ~ Beta(b, b) and one
permutation shared by both modalities (the similarity targets are not blended).  Blending is used
only in distillation, not by experts or evaluation.  Each part can be switched off for ablations:
``--no-blend`` (LoRS with symmetric heads), ``--no-learn-similarity`` (no learned S).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from vlcore.core.config import ranged
from vlcore.distill.matching import StudentInputs

from .lors import LoRS


class RepBlend(LoRS):
    """RepBlend (NeurIPS 2025): LoRS + blending of synthetic image and text representations, frozen backbones, MLP heads."""

    name = "repblend"
    requires_trainable = "frozen"
    requires_image_head = "mlp"

    @dataclass(frozen=True)
    class Config(LoRS.Config):
        #: blend each inner step's minibatch: x <- lambda x + (1 - lambda) x[perm], images and texts alike
        blend: bool = True
        #: lambda ~ Beta(b, b)
        blend_beta: float = ranged(1.0, 0, lo_open=True)

    def plan_step(self, state, k: int, idx: torch.Tensor) -> dict:
        if not self.config.blend:
            return {}
        g = state.generator
        b = float(self.config.blend_beta)
        # lambda ~ Beta(b, b) as X / (X + Y) with X, Y ~ Gamma(b): drawn from the run's generator, so a
        # resumed or recomputed step sees the same lambda
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(2 ** 62, (1,), generator=g)))
            lam = float(torch.distributions.Beta(b, b).sample())
        return {"lam": lam, "perm": torch.randperm(len(idx), generator=g)}

    def student_batch(self, inputs: StudentInputs, plan, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        x, t = super().student_batch(inputs, plan, k)
        draw = plan.steps[k]
        if not draw:
            return x, t
        lam, perm = draw["lam"], draw["perm"].to(x.device)
        return lam * x + (1 - lam) * x[perm], lam * t + (1 - lam) * t[perm]
