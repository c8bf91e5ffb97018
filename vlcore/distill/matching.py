"""Trajectory matching as a recipe: the steps every method of this family shares.

Stage 2 of REFERENCE.md: synthetic pairs (pixels + continuous caption embeddings) are optimised so
that a student trained on them for ``syn_steps`` steps from an expert's epoch-``s`` parameters
lands where the expert was at epoch ``s + expert_epochs``; each modality's distance is normalised
by its own expert displacement.  The math is in :mod:`vlcore.distill.unroll`, the loop in
:mod:`vlcore.distill.recipe`; a method subclasses :class:`TrajectoryMatching` and overrides what differs:

* :meth:`~TrajectoryMatching.init_synthetic`: more learned tensors (LoRS's similarity factors);
* :meth:`~TrajectoryMatching.student_inputs`: what the student reads (a :class:`StudentInputs`),
  built once per iteration from the learned tensors (the similarity matrix from its factors);
* :meth:`~TrajectoryMatching.plan_step`: per-step random draws (RepBlend's blending weight);
* :meth:`~TrajectoryMatching.student_batch`: the minibatch of one inner step (blending);
* :meth:`~TrajectoryMatching.inner_loss`: the student's loss on it (LoRS's soft targets);
* :meth:`~TrajectoryMatching.trajectory`: the expert parameters the student starts from and must reach;
* :meth:`~TrajectoryMatching.snapshot`: what the pair set holds beside images and texts.
"""
from __future__ import annotations

import logging
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Callable, Literal

import torch

from vlcore.artifacts.io import fingerprint, versions
from vlcore.core.config import MAX_LR, check_ranges, ranged
from vlcore.core.errors import ConfigError, IncompatibleError, VLError
from vlcore.core.registry import get_host
from vlcore.data.checks import PIXEL_LIMIT, TEXT_LIMIT
from vlcore.data.pairset import PairSet
from vlcore.data.pipeline import build_model
from vlcore.data.viz import line_plot, pair_grid
from vlcore.distill.contract import VOLATILE, DistillContext, Distiller, RunState, StepResult
from vlcore.distill.health import problems, read
from vlcore.distill.learning_rates import (
    collapsed_step_sizes, health_cause, learning_rates, scale_to_first_gradient, step_size_problem
)
from vlcore.distill.initial import StartConfig, draw_starts, initial_pairs, start_info
from vlcore.distill.unroll import StudentInputs, Unroll, UnrollBackend
from vlcore.model.encoder import DualEncoder
from vlcore.model.losses import contrastive_loss
from vlcore.model.params import ParamLayout
from vlcore.training import distributed
from vlcore.training.buffer import Buffer, LoadsExperts

log = logging.getLogger(__name__)

#: the learned tensors every trajectory-matching method has; others are a method's own (saved in the
#: pair set's ``extra``)
STANDARD = ("images", "text", "log_lr_img", "log_lr_txt")


@dataclass
class Plan:
    """The random draws of one outer iteration, made before the unroll (a backend may recompute a step)."""

    expert: int
    start_epoch: int
    batches: list[torch.Tensor]
    #: per inner step, whatever :meth:`TrajectoryMatching.plan_step` drew
    steps: list[dict] = field(default_factory=list)
    #: seed of torch's random streams during this unroll (dropout): the same draws on any rank
    seed: int = 0
    #: a modality's own start epoch ("img", "txt"), where it does not start at ``start_epoch`` (AMD)
    starts: dict[str, int] = field(default_factory=dict)


@dataclass
class MatchingRun(LoadsExperts):
    """What :meth:`TrajectoryMatching.setup` builds for one run: ``state.runtime``, never attributes
    of the distiller (no checkpoint holds it: a resumed run builds it again)."""

    model: DualEncoder
    backend: UnrollBackend
    forward: Callable  # forward(params, **inputs) -> (img_emb, txt_emb): the model, parameters substituted
    layout: ParamLayout
    buffer: Buffer
    n: int  # synthetic pairs the set holds (TrajectoryMatching.num_synthetic)
    experts: dict[int, dict[str, torch.Tensor]] = field(default_factory=dict)  # loaded so far (at most 65)


class TrajectoryMatching(Distiller):
    """Base recipe of trajectory-matching distillers (not registered itself)."""

    #: the encoder trainable mode this distiller matches (None: whatever the buffer has)
    requires_trainable: str | None = None
    #: the image head its experts must have (None: any)
    requires_image_head: str | None = None
    scalar_names = {"img": "loss/image", "txt": "loss/text", "lr_img": "step_size/image", "lr_txt": "step_size/text"}
    #: experts `vl distill` trains when it makes the buffer itself (no --buffer)
    DEFAULT_EXPERTS = 5
    #: the matching loss is differentiated through the student's steps by the backend ``unroll`` names
    needs_unroll = True

    @dataclass(frozen=True)
    class Config(StartConfig):
        #: student steps per outer iteration
        syn_steps: int = ranged(8, 1)
        #: expert epochs the student must cover (M)
        expert_epochs: int = ranged(1, 1)
        #: start epochs are drawn from [0, max_start_epoch)
        max_start_epoch: int = ranged(2, 1)
        #: synthetic pairs per inner step; 0 = the whole synthetic set (as published)
        batch_syn: int = ranged(0, 0)
        #: trajectories unrolled per outer iteration, their gradients averaged (per rank under
        #: torchrun: N ranks x K unroll N*K, the same as one process with N*K)
        trajectories: int = ranged(1, 1)
        #: learning rate of the synthetic pixels (real images are in [0, 1]); none: scaled to the run's
        #: first gradient so that the first update moves the pixels by 0.03 of the data's range (root mean
        #: square), as lr 100 does in the Flickr8k recipes
        lr_images: float | None = ranged(None, 0, MAX_LR, lo_open=True)
        #: learning rate of the synthetic text embeddings; none: scaled to the run's first gradient so
        #: that the first update moves each embedding by 2.5 times its initial norm (median), as lr 100
        #: does in the Flickr8k recipes
        lr_text: float | None = ranged(None, 0, MAX_LR, lo_open=True)
        #: learning rate of the learnable step sizes (learned as log(lr): a relative rate)
        lr_lr: float = ranged(1e-2, 0, MAX_LR, lo_open=True)
        #: initial student step size (both sides); 0 = the experts' learning rate (as MTT does)
        lr_init: float = ranged(0.0, 0, MAX_LR)
        #: momentum of the outer SGD (images, texts, step sizes)
        momentum: float = ranged(0.5, 0, 1, hi_open=True)
        #: initial images: real training images, or noise
        init_images: Literal["real", "noise"] = "real"
        #: initial texts: real caption embeddings, or noise of the same mean and spread
        init_text: Literal["real", "noise"] = "real"
        #: optimise the images (off: they stay real)
        distill_images: bool = True
        #: optimise the text embeddings (off: they stay real)
        distill_text: bool = True
        #: learn the student's step sizes
        learn_lr: bool = True
        #: unroll backend: how the matching loss is differentiated through the student's steps
        unroll: str = field(default="func", metadata={"kind": "unroll_backend"})
        #: checkpoint / tesla: where the per-step parameters are kept ("": their device; "cpu" on a GPU run)
        unroll_store_device: str = ""
        #: checkpoint / tesla: precision of the stored per-step parameters ("": their own; float16 and
        #: bfloat16 halve that memory and approximate the gradient: benchmarks/UNROLL.md measures how much)
        unroll_store_dtype: Literal["", "float32", "bfloat16", "float16"] = ""
        #: clamp synthetic pixels to [0, 1] after each update (off: they move freely within
        #: +-PIXEL_LIMIT, as published)
        clamp_images: bool = False

    def __init__(self, config=None):
        super().__init__(config)
        self.check_config()  # a bad setting fails when the distiller is built: before any data work

    # ------------------------------------------------------------------ setup
    def check_config(self) -> None:
        """Refuse settings no run can use (ConfigError naming the flag): the ranges the Config's
        fields declare (:func:`vlcore.core.config.ranged`), and the rules between fields."""
        c = self.config
        check_ranges(c, f"distiller '{self.name}'")
        if c.batch_syn == 1:
            raise ConfigError(f"--batch-syn must be 0 (all pairs) or at least 2 (got {c.batch_syn}; a minibatch "
                              f"larger than the set uses all of it).")
        if not (c.distill_images or c.distill_text):
            raise ConfigError("nothing to distil: distill_images and distill_text are both false.")

    def expert_defaults(self) -> dict:
        """Stage 1 as `vl distill` runs it without --buffer: :data:`DEFAULT_EXPERTS` experts, each
        trained for the epochs the matching reaches (max_start_epoch - 1 + expert_epochs), with the
        expert learning rate of `vl experts`."""
        c = self.config
        return {"num_experts": self.DEFAULT_EXPERTS, "epochs": c.max_start_epoch - 1 + c.expert_epochs}

    def check(self, ctx: DistillContext) -> None:
        """Refuse settings this run cannot use (before any work)."""
        c = self.config
        self.check_config()
        if c.pairs > ctx.train.num_pairs:
            raise ConfigError(f"pairs={c.pairs} exceeds the {ctx.train.num_pairs} training pairs.")
        if c.max_start_epoch - 1 + c.expert_epochs > ctx.buffer.epochs:
            raise ConfigError(
                f"max_start_epoch={c.max_start_epoch} with expert_epochs={c.expert_epochs} needs experts trained "
                f"for at least {c.max_start_epoch - 1 + c.expert_epochs} epochs; the buffer has {ctx.buffer.epochs}.")
        if self.requires_trainable and ctx.spec.trainable != self.requires_trainable:
            raise IncompatibleError(
                f"distiller '{self.name}' matches {self.requires_trainable} parameters but the buffer's encoder "
                f"trains '{ctx.spec.trainable}'. Train experts with `vl experts --trainable {self.requires_trainable}`.")
        if self.requires_image_head and ctx.spec.resolved_head() != self.requires_image_head:
            raise IncompatibleError(
                f"distiller '{self.name}' matches an image head of the form '{self.requires_image_head}' but the "
                f"buffer's image head is '{ctx.spec.resolved_head()}'. Train experts with `vl experts --trainable "
                f"{self.requires_trainable or ctx.spec.trainable} --image-head {self.requires_image_head}`.")
        if ctx.buffer.num_experts < 1:
            raise VLError(f"buffer {ctx.buffer.path} has no finished expert; run `vl experts` first.")

    def setup(self, ctx: DistillContext) -> RunState:
        """Check the run; build the model, the unroll backend and the parameter layout (a
        :class:`MatchingRun`, the state's ``runtime``)."""
        self.check(ctx)
        spec, buf = ctx.spec, ctx.buffer
        text_dim = int(ctx.train.text.shape[1])
        model = build_model(spec, text_dim, seed=ctx.seed, host=ctx.host, device=ctx.device)
        buf.check_compatible(spec, text_dim, model)
        model.train()
        backend = self._backend(ctx)
        params = model.trainable_named()
        run = MatchingRun(model, backend, backend.prepare(model),
                          ParamLayout.of(params, {n: model.modality_of(n) for n in params}), buf, self.num_synthetic(ctx))
        torch.manual_seed(ctx.seed)
        record = self.run_record(ctx)
        return RunState(learned={}, optimizers={}, generator=torch.Generator().manual_seed(ctx.seed),
                        run_key=fingerprint(record), run_record=record, runtime=run, info=start_info(self.config, buf))

    def run_record(self, ctx: DistillContext) -> dict:
        """What must not change across a resume: config (but :data:`VOLATILE`), model, the buffer's
        content (not where it is: a copied run folder resumes), seed, data."""
        cfg = {k: v for k, v in asdict(self.config).items() if k not in VOLATILE}
        return {"method": self.name, "config": cfg, "spec": ctx.spec.as_dict(), "buffer": ctx.buffer.content_key(),
                "seed": ctx.seed, "data": ctx.dataset_info.get("fingerprint")}

    def _backend(self, ctx: DistillContext):
        host, c = ctx.host or get_host(), self.config
        store = {"store_device": c.unroll_store_device, "store_dtype": c.unroll_store_dtype}
        given = {k: v for k, v in store.items() if v}
        if given:
            fields = getattr(host.get("unroll_backend", c.unroll), "Config", None)
            known = set(getattr(fields, "__dataclass_fields__", {}))
            if not set(given) <= known:
                raise ConfigError(f"--unroll {c.unroll} keeps no per-step parameters, so --unroll-store-device and "
                                  f"--unroll-store-dtype do not apply; use --unroll checkpoint (or tesla).")
        return host.create("unroll_backend", c.unroll, given)

    def num_synthetic(self, ctx: DistillContext) -> int:
        """How many synthetic pairs the set holds: ``pairs`` (LoRS stores fewer, to pay for its S)."""
        return self.config.pairs

    def init_synthetic(self, ctx: DistillContext, state: RunState) -> None:
        """N initial pairs by ``init`` (:mod:`vlcore.distill.initial`: random real pairs, k-means, noise; or noise by
        init_images / init_text), the log step sizes at the experts' learning rate."""
        c, train, g = self.config, ctx.train, state.generator
        init = initial_pairs(ctx, state.runtime.n, g, c.init)
        images, text, state.info["init"] = init.images, init.text, init.info
        if c.init_images == "noise":
            images = (0.5 + 0.25 * torch.randn(images.shape, generator=g)).clamp(0, 1)
        if c.init_text == "noise":
            mu, sd = train.text.mean(0), train.text.std(0)
            text = mu + sd * torch.randn(text.shape, generator=g)
        dev = ctx.device
        # a learning rate left to its default starts at 0 and is set from the first gradient (step)
        self._learn(state, "images", images.to(dev), c.distill_images, "images", c.lr_images or 0.0)
        self._learn(state, "text", text.to(dev), c.distill_text, "text", c.lr_text or 0.0)
        state.info["text_norm0"] = float(text.norm(dim=-1).median()) if text.numel() else 1.0
        lr0 = c.lr_init or float(ctx.buffer.index["expert"]["lr"])
        state.info["lr0"] = lr0
        for side in ("img", "txt"):
            self._learn(state, f"log_lr_{side}", torch.tensor(math.log(lr0), device=dev), c.learn_lr, "lr", c.lr_lr)
        state.saved["init_images"] = images.clone()
        state.info["ids"] = init.ids

    def _learn(self, state: RunState, name: str, tensor: torch.Tensor, learned: bool, optimizer: str, lr: float):
        if learned:
            return state.add_learned(name, tensor, optimizer, lr, self.config.momentum)
        state.learned[name] = tensor.detach().clone()

    # ------------------------------------------------------------------- step
    def plan(self, state: RunState) -> Plan:
        """Draw this iteration's expert, start epoch and minibatches from the run's generator."""
        c, g = self.config, state.generator
        n = state.runtime.n
        bs = min(c.batch_syn or n, n)
        e = int(torch.randint(state.runtime.buffer.num_experts, (1,), generator=g))
        s = int(torch.randint(c.max_start_epoch, (1,), generator=g))
        batches, perm = [], torch.randperm(n, generator=g)
        pos = 0
        for _ in range(c.syn_steps):
            if pos + bs > n:
                perm, pos = torch.randperm(n, generator=g), 0
            batches.append(perm[pos:pos + bs])
            pos += bs
        plan = Plan(e, s, batches)
        plan.steps = [self.plan_step(state, k, idx) for k, idx in enumerate(batches)]
        plan.starts = draw_starts(c, state)  # async (AMD): each modality's own start epoch; shared: none
        plan.seed = int(torch.randint(2 ** 62, (1,), generator=g))
        return plan

    def plan_step(self, state: RunState, k: int, idx: torch.Tensor) -> dict:
        """Extra random draws of inner step ``k`` (default: none)."""
        return {}

    def student_inputs(self, ctx: DistillContext, state: RunState, plan: Plan) -> StudentInputs:
        """What the student reads this iteration, computed once from the learned tensors: ``x`` (the
        images, or their frozen-backbone features), ``text``, ``lr_img``, ``lr_txt``, and every other
        learned tensor under its own name in ``extra``.  For a frozen backbone only the images some
        step uses go through it (``rows`` maps the pairs to them).  A method that derives an input
        from learned tensors replaces them by it (LoRS: the similarity matrix replaces its factors):
        every input is differentiated once, and the gradient reaches the learned tensors through what
        made the inputs."""
        L, model = state.learned, state.runtime.model
        images, rows = L["images"], None
        if model.frozen:
            used = torch.unique(torch.cat(plan.batches))
            if used.numel() == images.shape[0]:
                x = model.image_features(images)
            else:
                x = model.image_features(images[used.to(images.device)])
                rows = torch.full((images.shape[0],), -1, dtype=torch.long)
                rows[used] = torch.arange(used.numel())
        else:
            x = images
        extra = {k: v for k, v in L.items() if k not in STANDARD}  # a method's own learned tensors, by name
        return StudentInputs(x, L["text"], L["log_lr_img"].exp(), L["log_lr_txt"].exp(), rows, extra)

    def student_batch(self, inputs: StudentInputs, plan: Plan, k: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(image input, text input) of inner step ``k``'s minibatch."""
        idx = plan.batches[k]
        rows = idx if inputs.rows is None else inputs.rows[idx]
        dev = inputs.x.device
        return inputs.x[rows.to(dev)], inputs.text[idx.to(dev)]

    def inner_loss(self, img_emb: torch.Tensor, txt_emb: torch.Tensor, idx: torch.Tensor,
                   inputs: StudentInputs) -> torch.Tensor:
        """The student's loss on one synthetic minibatch (pairs ``idx``): the contrastive loss (T = 0.07)."""
        return contrastive_loss(img_emb, txt_emb)

    def build_unroll(self, ctx: DistillContext, state: RunState, plan: Plan) -> tuple[Unroll, StudentInputs]:
        """The student trajectory of ``plan`` and the inputs it reads (what :meth:`step` differentiates)."""
        run = state.runtime
        start, target = self.trajectory(state, plan, ctx.device)
        inputs = self.student_inputs(ctx, state, plan)
        key = "features" if run.model.frozen else "images"

        def step_loss(params, k):
            x, t = self.student_batch(inputs, plan, k)
            img_emb, txt_emb = run.forward(params, **{key: x}, text=t)
            return self.inner_loss(img_emb, txt_emb, plan.batches[k], inputs)

        u = Unroll(run.layout, start, target, {"img": inputs.lr_img, "txt": inputs.lr_txt}, self.config.syn_steps,
                   step_loss)
        return u, inputs

    def step(self, ctx: DistillContext, state: RunState) -> StepResult:
        """One outer iteration: the mean over ``trajectories`` unrolls (and over the ranks under
        torchrun) of the matching loss and its gradients.  The plans of every rank are drawn from
        the one generator, so all ranks keep the same random state and rank r unrolls the r-th
        share: N ranks with K trajectories each draw and unroll what one process with N*K does."""
        k, rank = self.config.trajectories, distributed.rank()
        plans = [self.plan(state) for _ in range(k * distributed.world_size())][rank * k:(rank + 1) * k]
        loss, grads, parts, lrs = 0.0, {}, {"img": 0.0, "txt": 0.0}, {}
        for plan in plans:
            with torch.random.fork_rng(devices=[ctx.device] if str(ctx.device).startswith("cuda") else []):
                torch.manual_seed(plan.seed)
                u, inputs = self.build_unroll(ctx, state, plan)
                wrt = {n: v for n, v in inputs.tensors().items() if v.requires_grad}
                res = state.runtime.backend.run(u, list(wrt.values()))
            for n, g in self._chain(state, wrt, res.grads).items():
                if g is not None:
                    grads[n] = g / k + grads[n] if n in grads else g / k
            loss += res.loss / k
            for m in parts:
                parts[m] += res.parts.get(m, float("nan")) / k
            lrs = {"lr_img": float(inputs.lr_img.detach()), "lr_txt": float(inputs.lr_txt.detach())}
        if distributed.active():  # the mean over the ranks: every rank applies the same update
            names = [n for n, v in state.learned.items() if v.requires_grad]
            flat = [grads.get(n, torch.zeros_like(state.learned[n])) for n in names]
            scalars = torch.tensor([loss, parts["img"], parts["txt"]], dtype=flat[0].dtype, device=flat[0].device)
            *flat, scalars = distributed.mean([*flat, scalars])
            grads = dict(zip(names, flat))
            loss, parts["img"], parts["txt"] = (float(v) for v in scalars)
        result = StepResult(loss, grads, {**parts, **lrs})
        scale_to_first_gradient(self.config, state, result)
        return result

    def _chain(self, state: RunState, wrt: dict[str, torch.Tensor], grads: list) -> dict[str, torch.Tensor | None]:
        """Gradients of the learned leaves from those of the student's inputs (one backward pass
        through what made the inputs: the frozen backbone, exp of the log step sizes, ...)."""
        leaves = {k: v for k, v in state.learned.items() if v.requires_grad}
        outs = [(t, g) for t, g in zip(wrt.values(), grads) if g is not None]
        if not outs or not leaves:
            return {k: None for k in leaves}
        got = torch.autograd.grad([t for t, _ in outs], list(leaves.values()), grad_outputs=[g for _, g in outs],
                                  allow_unused=True)
        return dict(zip(leaves, got))

    def trajectory(self, state: RunState, plan: Plan, device) -> tuple[torch.Tensor, torch.Tensor]:
        """(start, target), flat: the expert ``plan.expert``'s parameters at each modality's start
        epoch (``plan.starts``, else ``plan.start_epoch``) and ``expert_epochs`` later."""
        run = state.runtime
        ex, s = run.expert(plan.expert), {m: plan.starts.get(m, plan.start_epoch) for m in run.layout.blocks}
        flat = [torch.cat([ex[f"{m}.{s[m] + d}"] for m in run.layout.blocks]).to(device)
                for d in (0, self.config.expert_epochs)]
        return flat[0], flat[1]

    # --------------------------------------------------------------- guards
    def check_state(self, state: RunState) -> str | None:
        """After an update: every learned tensor finite, pixels within +-PIXEL_LIMIT (clamped to
        [0, 1] with ``clamp_images``), text embeddings' norms within TEXT_LIMIT, the step sizes
        within a factor LR_RANGE of their initial value; else what is wrong (the loop rolls back)."""
        L = state.learned
        if self.config.clamp_images and L["images"].requires_grad:
            with torch.no_grad():
                L["images"].clamp_(0, 1)
        bad = [k for k, v in L.items() if not bool(torch.isfinite(v).all())]
        if bad:
            return f"non-finite values in {', '.join(bad)}"
        img = L["images"].detach()
        if float(img.abs().max()) > PIXEL_LIMIT:
            return (f"synthetic pixels reached [{float(img.min()):.3g}, {float(img.max()):.3g}], beyond the allowed "
                    f"+-{PIXEL_LIMIT:g}")
        norm = float(L["text"].detach().norm(dim=-1).max())
        if norm > TEXT_LIMIT:
            return f"a synthetic text embedding reached norm {norm:.3g}, beyond the allowed {TEXT_LIMIT:g}"
        return step_size_problem(state)

    def failure_hint(self) -> str:
        return ("Lower the learning rates (--lr-images, --lr-text, --lr-lr) or --syn-steps, or keep the pixels in "
                "[0, 1] with --clamp-images.")

    def check_health(self, ctx: DistillContext, state: RunState) -> dict[str, str]:
        """The :mod:`vlcore.distill.health` rule on the current set (pixels, text norms against their start),
        each problem with its value and its likely cause: the learning rate, for this data, encoder and
        image size, naming the flag to lower and a value (from the first gradient's size)."""
        L = state.learned
        found = problems(read(L["images"], L["text"], state.info.get("text_norm0") or 1.0))
        return {what: f"{message}. {health_cause(self.config, ctx, state, 'images' if what == 'pixels' else 'text')}"
                for what, message in found.items()}

    def diagnose(self, ctx: DistillContext, state: RunState) -> list[str]:
        """Warnings: the matching loss stuck at its trivial value (the student does not move: it ends
        where the expert started, each normalised term 1), step sizes that collapsed."""
        h, out = state.history, []
        lrs = {side: math.exp(float(state.learned[f"log_lr_{side}"].detach())) for side in ("img", "txt")}
        losses = h["loss"][-10:]
        parts = sum(any(not math.isnan(v) for v in h.get(side, [])) for side in ("img", "txt"))
        if losses and parts and all(abs(v - parts) <= 1e-3 * parts for v in losses):
            out.append(f"the matching loss stayed at its trivial value {parts:g} (the student does not move from the "
                       f"expert's start; learned step sizes lr_img={lrs['img']:.3g}, lr_txt={lrs['txt']:.3g}): the set "
                       f"is not distilled. Lower --lr-lr, or set --lr-init.")
        if self.config.learn_lr:
            out += collapsed_step_sizes(state)
        return out

    # --------------------------------------------------------------- outputs
    def snapshot(self, ctx: DistillContext, state: RunState) -> PairSet:
        L = state.learned
        text = L["text"].detach().cpu()
        ids = state.info.get("ids")
        meta = {**self.meta_record(ctx, state), "starts": state.info.get("start_ranges") or {"sampling": "shared"},
                "history": state.history, "versions": versions(),
                "learning_rates": {**learning_rates(self.config, state),
                                   "chosen": sorted(state.info.get("lr_chosen", {}))}}
        return PairSet(images=L["images"].detach().cpu(), text=text, captions=ctx.train.nearest_captions(text)[0],
                       meta=meta, lr_img=float(L["log_lr_img"].detach().exp()),
                       lr_txt=float(L["log_lr_txt"].detach().exp()),
                       source_ids=[(str(a), int(b)) for a, b in ids] if ids is not None else None,
                       extra={k: v.detach().cpu() for k, v in L.items() if k not in STANDARD})

    def figures(self, ctx: DistillContext, state: RunState, ps: PairSet) -> None:
        out, history = Path(ctx.out), state.history
        shown = min(24, len(ps))
        captions, cosines = ctx.train.nearest_captions(ps.text)
        pair_grid(ps.images, captions, out / "grid.png", before=state.saved.get("init_images"), max_pairs=24,
                  cols=4, cosines=cosines, title=f"{self.name}: {shown} of {len(ps)} distilled pairs (left: initial, "
                                                 f"right: distilled)")
        if history["iteration"]:
            series = {"total": (history["iteration"], history["loss"])}
            for side, label in (("img", "image"), ("txt", "text")):
                if any(not math.isnan(v) for v in history.get(side, [])):
                    series[label] = (history["iteration"], history[side])
            line_plot(series, out / "loss.png", xlabel="iteration", ylabel="matching loss",
                      title=f"{self.name}: trajectory matching loss")
        if history["eval"]:
            its = [h["iteration"] for h in history["eval"]]
            line_plot({k: (its, [h[k] for h in history["eval"]]) for k in ("tr_r1", "tr_r5", "ir_r1", "ir_r5")},
                      out / "dev_recall.png", xlabel="iteration", ylabel="dev recall (%)",
                      title="dev retrieval of models trained on the distilled set")
