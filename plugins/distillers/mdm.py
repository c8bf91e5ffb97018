"""MDM (CVPR 2026): single-level distribution matching under a merged, frozen teacher (no unroll).

Each iteration (REFERENCE.md, "2026 methods"; the maths in :mod:`vlcore.distill.distribution`):

* a teacher is merged from two expert checkpoints ``w1``, ``w2`` and a base ``w0``, per layer
  ``w = w0 + a r ((w1 + w2) / 2 - w0)`` (:func:`~vlcore.distill.distribution.merge_modalities`), and frozen.
  vlcore's reading: the paper's experts share an initialisation, vlcore's do not (each expert starts
  from its own random heads), and merging checkpoints of two *different* vlcore experts gives a
  teacher of about ``w0`` (their displacements are nearly orthogonal: ``c ~ 0``, ``r ~ 0``).  So
  ``w1``, ``w2`` are two distinct epochs (1..E) of *one* randomly chosen expert and ``w0`` is that
  expert's epoch 0; only when the buffer's experts share their epoch-0 weights (checked once per
  run) are ``w1``, ``w2`` drawn from two random experts (epochs 1..E each), ``w0`` the shared
  initialisation.  A buffer of 1-epoch experts gives ``w1 = w2`` (the teacher halfway to epoch 1);
* a real batch (``batch_real``, 256) and a synthetic batch (``batch_syn``, 64) are embedded by it:
  the real images through the cached backbone features when the backbone is frozen (the same
  features experts trained on), the synthetic pixels through the teacher's backbone (frozen or
  not: the gradient reaches the pixels through it);
* loss :func:`~vlcore.distill.distribution.mdm_loss`: InfoNCE (T = 0.07) on the synthetic batch +
  ``kernel_weight`` (0.8) x (GKE(U) + GKE(G)); ``--kernel-weight 0`` is the ablation without kernel
  terms;
* SGD (lr 1000, momentum 0.5) on pixels and text embeddings, the joint gradient norm clipped to
  ``clip_norm`` (1.0) first.

Initialisation: ``--init kmeans`` by default (:mod:`vlcore.distill.initial`).  MDM learns no step sizes: its
pair set has ``lr_img = lr_txt = None`` and `vl eval` trains on it with the evaluator's default
learning rate (``--default-lr``, 0.03), exactly as it trains on a coreset.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch
import torch.nn.functional as F

from vlcore.artifacts.io import fingerprint, versions
from vlcore.components import VOLATILE, Distiller
from vlcore.core.config import MAX_LR, check_ranges, ranged
from vlcore.core.errors import ConfigError, VLError
from vlcore.data.checks import PIXEL_LIMIT, TEXT_LIMIT
from vlcore.data.dataset import to_float
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import build_model, features_for
from vlcore.data.viz import line_plot, pair_grid
from vlcore.distill.contract import RunState, StepResult
from vlcore.distill.distribution import SIGMA, W_U, mdm_loss, merge_modalities
from vlcore.distill.initial import InitConfig, initial_pairs
from vlcore.training.buffer import LoadsExperts

MODALITIES = ("img", "txt")
log = logging.getLogger(__name__)


@dataclass
class TeacherRun(LoadsExperts):
    """What :meth:`MDM.setup` builds for a run (``state.runtime``; no checkpoint holds it)."""

    model: torch.nn.Module
    forward: Callable
    buffer: object
    #: (num_images, F) cached backbone features of the training images (frozen backbone), else None
    real_features: torch.Tensor | None
    #: the buffer's experts share their epoch-0 weights (then w1, w2 come from two experts)
    shared_init: bool
    experts: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)


class MDM(Distiller):
    """MDM (CVPR 2026): distribution matching (InfoNCE + hyperspherical kernel terms) under a merged frozen teacher."""

    name = "mdm"
    scalar_names = {"infonce": "loss/infonce", "gke_u": "loss/gke_u", "gke_g": "loss/gke_g",
                    "grad_norm": "grad_norm"}
    #: experts `vl distill` trains when it makes the buffer itself (no --buffer)
    DEFAULT_EXPERTS = 5

    @dataclass(frozen=True)
    class Config(InitConfig):
        #: initial synthetic pairs (MDM: k-means)
        init: Literal["real", "kmeans", "noise"] = "kmeans"
        #: real pairs embedded per iteration (MDM: 256; at most the training pairs)
        batch_real: int = ranged(256, 2)
        #: synthetic pairs per iteration (MDM: 64; at most the set)
        batch_syn: int = ranged(64, 2)
        #: learning rate of the synthetic pixels (real images are in [0, 1])
        lr_images: float = ranged(1000.0, 0, MAX_LR, lo_open=True)
        #: learning rate of the synthetic text embeddings
        lr_text: float = ranged(1000.0, 0, MAX_LR, lo_open=True)
        #: momentum of the SGD on pixels and texts
        momentum: float = ranged(0.5, 0, 1, hi_open=True)
        #: clip the joint gradient norm of pixels and texts to this (0: no clipping)
        clip_norm: float = ranged(1.0, 0)
        #: weight of each kernel term GKE(U), GKE(G) (0: InfoNCE alone, the ablation)
        kernel_weight: float = ranged(W_U, 0)
        #: bandwidth s of the hyperspherical kernel exp(-arccos(<x, y>)^2 / (2 s^2))
        kernel_sigma: float = ranged(SIGMA, 0, lo_open=True)
        #: the factor a of the teacher merge w0 + a r ((w1 + w2) / 2 - w0)
        merge_a: float = ranged(0.5, 0, 1)

    def __init__(self, config=None):
        super().__init__(config)

        check_ranges(self.config, f"distiller '{self.name}'")  # bad values fail when it is built

    def expert_defaults(self) -> dict:
        """Stage 1 without --buffer: 5 experts x 2 epochs (the trajectory matchers' default buffer)."""
        return {"num_experts": self.DEFAULT_EXPERTS, "epochs": 2}

    def failure_hint(self) -> str:
        return "Lower --lr-images / --lr-text, or --clip-norm."

    # ------------------------------------------------------------------ setup
    def setup(self, ctx) -> RunState:
        from torch.func import functional_call

        c, buf, train = self.config, ctx.buffer, ctx.train
        if c.pairs > train.num_pairs:
            raise ConfigError(f"pairs={c.pairs} exceeds the {train.num_pairs} training pairs.")
        if buf.num_experts < 1 or buf.epochs < 1:
            raise VLError(f"buffer {buf.path} has no finished expert with an epoch past its start; run `vl experts`.")
        text_dim = int(train.text.shape[1])
        model = build_model(ctx.spec, text_dim, seed=ctx.seed, host=ctx.host, device=ctx.device)
        buf.check_compatible(ctx.spec, text_dim, model)
        model.train()  # BatchNorm on batch statistics, as the experts computed their embeddings

        def forward(params, **inputs):
            return functional_call(model, params, args=(), kwargs=inputs, strict=False)

        feats = features_for(ctx.spec, train, host=ctx.host, device=ctx.device, progress=ctx.progress)
        shared = False
        if buf.num_experts >= 2:
            a, b = buf.load(0), buf.load(1)
            shared = all(torch.equal(a[f"{m}.0"], b[f"{m}.0"]) for m in MODALITIES if f"{m}.0" in a)
        record = {"method": self.name, "config": {k: v for k, v in asdict(c).items() if k not in VOLATILE},
                  "spec": ctx.spec.as_dict(), "buffer": buf.content_key(), "seed": ctx.seed,
                  "data": ctx.dataset_info.get("fingerprint")}
        teacher = "two experts (shared initialisation)" if shared else "two epochs of one expert, w0 its epoch 0"
        return RunState(learned={}, optimizers={}, generator=torch.Generator().manual_seed(ctx.seed),
                        run_key=fingerprint(record), run_record=record, info={"teacher": teacher},
                        runtime=TeacherRun(model, forward, buf, feats, shared))

    def init_synthetic(self, ctx, state) -> None:
        c = self.config
        init = initial_pairs(ctx, c.pairs, state.generator, c.init)
        state.info["init"], state.info["ids"] = init.info, init.ids
        state.saved["init_images"] = init.images.clone()
        state.add_learned("images", init.images.to(ctx.device), "images", c.lr_images, c.momentum)
        state.add_learned("text", init.text.to(ctx.device), "text", c.lr_text, c.momentum)

    # ------------------------------------------------------------------- step
    def teacher(self, state) -> dict[str, torch.Tensor]:
        """This iteration's merged teacher (named parameters), from the run's generator."""
        run, g = state.runtime, state.generator
        buf, epochs = run.buffer, run.buffer.epochs
        if run.shared_init:
            a, b = (int(torch.randint(buf.num_experts, (1,), generator=g)) for _ in range(2))
            ea, eb = (int(torch.randint(epochs, (1,), generator=g)) + 1 for _ in range(2))
            xa, xb = run.expert(a), run.expert(b)
            w0, w1, w2 = ({m: x[f"{m}.{e}"] for m in MODALITIES if f"{m}.0" in xa}
                          for x, e in ((xa, 0), (xa, ea), (xb, eb)))
        else:
            ex = run.expert(int(torch.randint(buf.num_experts, (1,), generator=g)))
            ea, eb = ((torch.randperm(epochs, generator=g)[:2] + 1).tolist() if epochs >= 2 else (1, 1))
            w0, w1, w2 = ({m: ex[f"{m}.{e}"] for m in MODALITIES if f"{m}.0" in ex} for e in (0, ea, eb))
        merged = merge_modalities(w0, w1, w2, buf.layout, a=self.config.merge_a)
        return buf.params({f"{m}.0": v for m, v in merged.items()}, 0)

    def step(self, ctx, state) -> StepResult:
        c, run, g, train, L = self.config, state.runtime, state.generator, ctx.train, state.learned
        dev = ctx.device
        params = {k: v.to(dev) for k, v in self.teacher(state).items()}
        n = L["images"].shape[0]
        syn = torch.randperm(n, generator=g)[:min(c.batch_syn, n)]
        real = torch.randperm(train.num_pairs, generator=g)[:min(c.batch_real, train.num_pairs)]
        seed = int(torch.randint(2 ** 62, (1,), generator=g))
        with torch.random.fork_rng(devices=[dev] if str(dev).startswith("cuda") else []):
            torch.manual_seed(seed)  # dropout, if any: the same draws on a resumed run
            rimg = train.pair_image[real]
            with torch.no_grad():
                x = {"features": run.real_features[rimg].to(dev)} if run.real_features is not None else \
                    {"images": to_float(train.images[rimg]).to(dev)}
                img_r, txt_r = run.forward(params, **x, text=train.text[real].float().to(dev))
            s = syn.to(dev)
            x = {"features": run.model.image_features(L["images"][s])} if run.model.frozen else {"images": L["images"][s]}
            img_s, txt_s = run.forward(params, **x, text=L["text"][s])
            w = c.kernel_weight
            loss = mdm_loss(img_s, txt_s, img_r, txt_r, w_u=w, w_g=w, sigma=c.kernel_sigma)
            names = [k for k in ("images", "text") if L[k].requires_grad]
            grads = dict(zip(names, torch.autograd.grad(loss.total, [L[k] for k in names])))
        norm = float(torch.sqrt(sum((gr.double() ** 2).sum() for gr in grads.values())))
        if c.clip_norm and math.isfinite(norm) and norm > c.clip_norm:
            scale = c.clip_norm / (norm + 1e-6)  # as torch.nn.utils.clip_grad_norm_
            grads = {k: gr * scale for k, gr in grads.items()}
        metrics = {"infonce": float(loss.infonce.detach()), "gke_u": float(loss.gke_u.detach()),
                   "gke_g": float(loss.gke_g.detach()), "grad_norm": norm}
        return StepResult(float(loss.total.detach()), grads, metrics)

    # --------------------------------------------------------------- guards
    def check_state(self, state) -> str | None:
        L = state.learned
        bad = [k for k, v in L.items() if not bool(torch.isfinite(v).all())]
        if bad:
            return f"non-finite values in {', '.join(bad)}"
        img = L["images"].detach()
        if float(img.abs().max()) > PIXEL_LIMIT:
            return f"synthetic pixels reached [{float(img.min()):.3g}, {float(img.max()):.3g}], beyond +-{PIXEL_LIMIT:g}"
        norm = float(L["text"].detach().norm(dim=-1).max())
        if norm > TEXT_LIMIT:
            return f"a synthetic text embedding reached norm {norm:.3g}, beyond the allowed {TEXT_LIMIT:g}"
        return None

    # --------------------------------------------------------------- outputs
    def snapshot(self, ctx, state) -> PairSet:
        L, ids = state.learned, state.info.get("ids")
        text = L["text"].detach().cpu()
        real = F.normalize(ctx.train.text.float(), dim=-1)
        nn_idx = (F.normalize(text.float(), dim=-1) @ real.t()).argmax(dim=1).tolist()
        caps = ctx.train.captions or []
        meta = {**self.meta_record(ctx, state), "teacher": state.info.get("teacher"),
                "step_sizes": "none learned: vl eval uses the evaluator's default lr, as for a coreset",
                "history": state.history, "versions": versions()}
        return PairSet(images=L["images"].detach().cpu(), text=text,
                       captions=[caps[i] if caps else f"caption #{i}" for i in nn_idx], meta=meta,
                       lr_img=None, lr_txt=None,
                       source_ids=[(str(a), int(b)) for a, b in ids] if ids is not None else None)

    def figures(self, ctx, state, ps: PairSet) -> None:
        out, h = Path(ctx.out), state.history
        pair_grid(ps.images, ps.captions, out / "grid.png", before=state.saved.get("init_images"), max_pairs=24,
                  cols=4, title=f"{self.name}: {min(24, len(ps))} of {len(ps)} distilled pairs (left: initial)")
        if h["iteration"]:
            series = {"total": (h["iteration"], h["loss"])}
            series.update({k: (h["iteration"], h[k]) for k in ("infonce", "gke_u", "gke_g") if k in h})
            line_plot(series, out / "loss.png", xlabel="iteration", ylabel="loss", title=f"{self.name}: loss")
