"""LoRS (Xu et al., ICML 2024): trajectory matching with a learned low-rank similarity matrix.

Beside the N synthetic pairs the method learns S = diag(a) + (alpha / r) L R^T (a: ones, L:
random normal, R: zeros at the start, so S starts as the identity).  The student's loss on a
minibatch B is LoRS's weighted binary cross-entropy against the soft targets S[B][:, B]
(:func:`vlcore.model.losses.similarity_bce_loss`); experts keep the contrastive loss.  S is learned by the
outer loop with its own learning rate, checkpointed and saved in the pair set; ``vl eval`` of the
set trains with the same loss on it.  Its raw entries are the targets, as published; they leave
[0, 1] as S learns (on Flickr8k the diagonal grew to 2-5 within 300 iterations), which makes them
unbounded BCE targets and retrieval falls after about 150-200 iterations, so the Flickr8k recipes
stop at 150 (chosen on held-out training images, benchmarks/TUNING.md).  ``clamp_similarity``
clamps the targets to [0, 1] instead (it retrieved far worse).  By default the set stores ``pairs - k`` pairs, k the fewest
that pay for S's floats (LoRS's authors store 99 / 199 / 499), so "100 pairs" is the storage of
100 pairs for every method.
"""
from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from vlcore.core.config import MAX_LR, ranged
from vlcore.distill.matching import StudentInputs, TrajectoryMatching
from vlcore.model.losses import clamp_targets, lowrank_similarity, similarity_bce_loss

DIAG, LEFT, RIGHT = "similarity.diag", "similarity.left", "similarity.right"
#: the student's input made of S's factors (``StudentInputs.extra``): the similarity targets
SIMILARITY = "similarity"


def similarity_floats(n: int, rank: int) -> int:
    """Floats of S's factors for n pairs: a (n), L and R (n x rank each)."""
    return n + 2 * n * rank


class LoRS(TrajectoryMatching):
    """LoRS (ICML 2024): trajectory matching with a learned low-rank similarity matrix as soft targets."""

    name = "lors"

    @dataclass(frozen=True)
    class Config(TrajectoryMatching.Config):
        #: synthetic pairs per inner step (LoRS: 20); 0 = the whole synthetic set
        batch_syn: int = 20
        #: rank r of the similarity's low-rank part
        rank: int = ranged(10, 0)
        #: scale alpha of the low-rank part: S = diag(a) + alpha / r L R^T (LoRS: 3 on Flickr30K, 1 on COCO)
        alpha: float = ranged(3.0)
        #: learning rate of the similarity's factors (LoRS: 10 on Flickr30K, 5 on COCO)
        lr_similarity: float = ranged(10.0, 0, MAX_LR)
        #: use S's entries as targets clamped to [0, 1] (an entry above 1 or below 0 is an unbounded
        #: BCE target); off (default): the raw entries, as published. Clamping retrieved far worse
        #: on Flickr8k (benchmarks/TUNING.md)
        clamp_similarity: bool = False
        #: learn S (off: S stays the identity and is not stored: the ablation "LoRS without S")
        learn_similarity: bool = True
        #: store fewer pairs so that pairs + S fit the storage of `pairs` pairs (as LoRS)
        pay_for_similarity: bool = True

    def num_synthetic(self, ctx) -> int:
        c = self.config
        if not (c.learn_similarity and c.pay_for_similarity):
            return c.pairs
        img = ctx.train.images
        per_pair = 3 * img.shape[-2] * img.shape[-1] + int(ctx.train.text.shape[1])
        n = c.pairs
        while n > 2 and n * per_pair + similarity_floats(n, c.rank) > c.pairs * per_pair:
            n -= 1
        return n

    def init_synthetic(self, ctx, state) -> None:
        super().init_synthetic(ctx, state)
        c = self.config
        if not c.learn_similarity:
            return
        n, dev = state.runtime.n, ctx.device
        left = torch.randn(n, c.rank, generator=state.generator)
        for name, value in ((DIAG, torch.ones(n)), (LEFT, left), (RIGHT, torch.zeros(n, c.rank))):
            state.add_learned(name, value.to(dev), "similarity", c.lr_similarity, c.momentum)

    def student_inputs(self, ctx, state, plan) -> StudentInputs:
        inputs = super().student_inputs(ctx, state, plan)
        extra = dict(inputs.extra)
        if self.config.learn_similarity:
            # the student reads S, made from its factors: S replaces them among the inputs (the
            # gradient reaches the factors through S, once)
            sim = lowrank_similarity(extra.pop(DIAG), extra.pop(LEFT), extra.pop(RIGHT), self.config.alpha)
            extra[SIMILARITY] = clamp_targets(sim) if self.config.clamp_similarity else sim
        else:
            extra[SIMILARITY] = torch.eye(state.runtime.n, device=inputs.text.device)
        return replace(inputs, extra=extra)

    def inner_loss(self, img_emb, txt_emb, idx, inputs: StudentInputs) -> torch.Tensor:
        i = idx.to(img_emb.device)
        return similarity_bce_loss(img_emb, txt_emb, inputs.extra[SIMILARITY][i][:, i])

    def snapshot(self, ctx, state):
        ps = super().snapshot(ctx, state)
        c = self.config
        ps.meta["similarity"] = ({"form": "lowrank", "rank": c.rank, "alpha": c.alpha, "clamp": c.clamp_similarity}
                                 if c.learn_similarity else {"form": "identity"})
        ps.meta["storage_budget_pairs"] = c.pairs
        return ps
