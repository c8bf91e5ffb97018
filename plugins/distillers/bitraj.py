"""Bi-trajectory matching (Wu et al., TMLR 2024) and its LoRA-matching variant.

Stage 2 of REFERENCE.md: synthetic pairs (pixels + continuous caption embeddings) are optimised so
that a student trained on them for ``syn_steps`` steps from an expert's epoch-``s`` parameters lands
where the expert was at epoch ``s + expert_epochs``; each modality's distance is normalised by its
own expert displacement.  The math lives in :mod:`vlcore.unroll`; this module runs the outer loop:
sampling, optimisers, non-finite guards, checkpoints / resume, periodic dev evaluation and outputs.
"""
from __future__ import annotations

import logging
import math
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Literal

import torch
import torch.nn.functional as F

from vlcore.components import DistillContext, Distiller
from vlcore.data import to_float
from vlcore.errors import ConfigError, IncompatibleError, VLError
from vlcore.evaluate import evaluate_pairs
from vlcore.io import atomic_path, fingerprint, versions
from vlcore.pairset import PairSet
from vlcore.pipeline import build_model
from vlcore.unroll import FuncBackend, HigherBackend, trajectory_loss, unroll

log = logging.getLogger(__name__)


class NonFiniteError(VLError):
    pass


class BiTrajectory(Distiller):
    """Bi-trajectory matching of expert trajectories (Wu et al.): distil images and caption embeddings."""

    name = "bitraj"
    #: the encoder trainable mode this distiller matches (None: whatever the buffer has)
    requires_trainable: str | None = None

    @dataclass(frozen=True)
    class Config:
        pairs: int = 100
        iterations: int = 500
        syn_steps: int = 8
        expert_epochs: int = 1
        max_start_epoch: int = 2
        #: synthetic minibatch per inner step; 0 = the whole synthetic set (as published)
        batch_syn: int = 0
        #: learning rates of the synthetic images (pixels in [0, 1]) and text embeddings
        lr_images: float = 100.0
        lr_text: float = 100.0
        #: learning rate of the learnable step sizes (they are learned as log(lr))
        lr_lr: float = 1e-2
        #: initial student step size (both sides); 0 = the experts' learning rate (as MTT does)
        lr_init: float = 0.0
        momentum: float = 0.5
        init_images: Literal["real", "noise"] = "real"
        init_text: Literal["real", "noise"] = "real"
        distill_images: bool = True
        distill_text: bool = True
        learn_lr: bool = True
        unroll: str = "func"
        checkpoint_every: int = 25
        #: evaluate on the dev split every N iterations (0: only at the end)
        eval_every: int = 0
        max_failures: int = 5
        #: clamp synthetic pixels to [0, 1] after each update
        clamp_images: bool = False

    # ------------------------------------------------------------------ helpers
    def _check(self, ctx: DistillContext) -> None:
        c = self.config
        if c.pairs < 2:
            raise ConfigError("bitraj needs pairs >= 2 (the contrastive loss needs negatives).")
        if c.pairs > ctx.train.num_pairs:
            raise ConfigError(f"pairs={c.pairs} exceeds the {ctx.train.num_pairs} training pairs.")
        if c.iterations < 0 or c.syn_steps < 1 or c.expert_epochs < 1 or c.max_start_epoch < 1:
            raise ConfigError("iterations >= 0, syn_steps >= 1, expert_epochs >= 1 and max_start_epoch >= 1 are required.")
        if c.max_start_epoch - 1 + c.expert_epochs > ctx.buffer.epochs:
            raise ConfigError(
                f"max_start_epoch={c.max_start_epoch} with expert_epochs={c.expert_epochs} needs experts trained "
                f"for at least {c.max_start_epoch - 1 + c.expert_epochs} epochs; the buffer has {ctx.buffer.epochs}.")
        if not (c.distill_images or c.distill_text):
            raise ConfigError("nothing to distil: distill_images and distill_text are both false.")
        if self.requires_trainable and ctx.spec.trainable != self.requires_trainable:
            raise IncompatibleError(
                f"distiller '{self.name}' matches {self.requires_trainable} parameters but the buffer's encoder "
                f"trains '{ctx.spec.trainable}'. Train experts with `vl experts --trainable {self.requires_trainable}`.")
        if ctx.buffer.num_experts < 1:
            raise VLError(f"buffer {ctx.buffer.path} has no finished expert; run `vl experts` first.")

    def _backend(self, ctx):
        if ctx.host is not None:
            return ctx.host.create("unroll_backend", self.config.unroll, {})
        return {"func": FuncBackend, "higher": HigherBackend}[self.config.unroll]()

    def _init(self, ctx: DistillContext, g: torch.Generator):
        c, train = self.config, ctx.train
        idx = torch.randperm(train.num_pairs, generator=g)[:c.pairs]
        images = to_float(train.images[train.pair_image[idx]]).clone()
        text = train.text[idx].clone().float()
        if c.init_images == "noise":
            images = (0.5 + 0.25 * torch.randn(images.shape, generator=g)).clamp(0, 1)
        if c.init_text == "noise":
            mu, sd = train.text.mean(0), train.text.std(0)
            text = mu + sd * torch.randn(text.shape, generator=g)
        ids = None
        if train.split is not None:
            pairs = train.split.pairs()
            ids = [(train.split.image_ids[int(pairs[i, 0])], int(pairs[i, 1])) for i in idx.tolist()]
        return images, text, ids

    def _nearest_captions(self, ctx, text: torch.Tensor) -> list[str]:
        real = F.normalize(ctx.train.text.float(), dim=-1)
        syn = F.normalize(text.detach().float().cpu(), dim=-1)
        nn_idx = (syn @ real.t()).argmax(dim=1)
        caps = ctx.train.captions or []
        return [caps[i] if caps else f"caption #{i}" for i in nn_idx.tolist()]

    # --------------------------------------------------------------------- run
    def distill(self, ctx: DistillContext) -> PairSet:
        c = self.config
        self._check(ctx)
        dev = ctx.device
        spec, buf = ctx.spec, ctx.buffer
        text_dim = int(ctx.train.text.shape[1])
        model = build_model(spec, text_dim, seed=ctx.seed, host=ctx.host, device=dev)
        buf.check_compatible(spec, text_dim, model)
        model.train()
        modality = {n: model.modality_of(n) for n in model.trainable_named()}
        forward = self._backend(ctx).prepare(model)

        out = Path(ctx.out)
        out.mkdir(parents=True, exist_ok=True)
        ckpt_path = out / "checkpoint.pt"
        # what must not change across a resume (iterations may grow: resuming can extend a run)
        volatile = ("iterations", "eval_every", "checkpoint_every", "max_failures")
        run_key = fingerprint({k: v for k, v in asdict(c).items() if k not in volatile}, spec.as_dict(), str(Path(buf.path).resolve()), ctx.seed,
                              (ctx.dataset_info or {}).get("fingerprint"))

        g = torch.Generator().manual_seed(ctx.seed)
        torch.manual_seed(ctx.seed)
        images, text, ids = self._init(ctx, g)
        init_images = images.clone()
        syn_img = images.to(dev).requires_grad_(c.distill_images)
        syn_txt = text.to(dev).requires_grad_(c.distill_text)
        lr0 = c.lr_init or float(buf.index["expert"]["lr"])
        # step sizes are learned in log space: always positive, and lr_lr is a relative rate
        log_lr_img = torch.tensor(math.log(lr0), device=dev).requires_grad_(c.learn_lr)
        log_lr_txt = torch.tensor(math.log(lr0), device=dev).requires_grad_(c.learn_lr)
        opts = {}
        if c.distill_images:
            opts["images"] = torch.optim.SGD([syn_img], lr=c.lr_images, momentum=c.momentum)
        if c.distill_text:
            opts["text"] = torch.optim.SGD([syn_txt], lr=c.lr_text, momentum=c.momentum)
        if c.learn_lr:
            opts["lr"] = torch.optim.SGD([log_lr_img, log_lr_txt], lr=c.lr_lr, momentum=c.momentum)
        history: dict[str, list] = {"iteration": [], "loss": [], "img": [], "txt": [], "lr_img": [], "lr_txt": [],
                                    "eval": []}
        start_it, failures, best = 0, 0, None

        if ctx.resume and ckpt_path.exists():
            ck = torch.load(ckpt_path, map_location="cpu", weights_only=False)
            if ck["run_key"] != run_key:
                raise IncompatibleError(f"{ckpt_path} belongs to a run with other settings (config, buffer, "
                                        f"model or seed); resume with the same command, or choose another --out.")
            with torch.no_grad():
                syn_img.copy_(ck["images"]); syn_txt.copy_(ck["text"])
                log_lr_img.copy_(ck["log_lr_img"]); log_lr_txt.copy_(ck["log_lr_txt"])
            for k, o in opts.items():
                o.load_state_dict(ck["opt"][k])
            g.set_state(ck["gen"])
            torch.set_rng_state(ck["rng"])
            start_it, failures, best, history = ck["iteration"], ck["failures"], ck["best"], ck["history"]
            init_images, ids = ck["init_images"], ck["ids"]
            log.info("resumed %s at iteration %d", ckpt_path, start_it)
        elif ckpt_path.exists() and not ctx.resume:
            log.info("%s exists; starting over (pass --resume to continue it)", ckpt_path)

        experts: dict[int, dict] = {}

        def expert(i):
            if i not in experts:
                if len(experts) > 64:
                    experts.pop(next(iter(experts)))
                experts[i] = buf.load(i)
            return experts[i]

        def snapshot() -> PairSet:
            return self._pairset(ctx, syn_img, syn_txt, log_lr_img.exp(), log_lr_txt.exp(), ids, history)

        def save_ckpt(it):
            state = {"run_key": run_key, "iteration": it, "images": syn_img.detach().cpu(),
                     "text": syn_txt.detach().cpu(), "log_lr_img": log_lr_img.detach().cpu(),
                     "log_lr_txt": log_lr_txt.detach().cpu(),
                     "opt": {k: o.state_dict() for k, o in opts.items()}, "gen": g.get_state(),
                     "rng": torch.get_rng_state(), "failures": failures, "best": best, "history": history,
                     "init_images": init_images, "ids": ids}
            with atomic_path(ckpt_path) as tmp:
                torch.save(state, tmp)
            snapshot().save(out)

        def dev_eval(it):
            nonlocal best
            if ctx.eval_data is None:
                return
            opts_e = {"seeds": 1, "epochs": 30, **(ctx.eval_options or {})}
            ps = snapshot()
            m = evaluate_pairs(ps, ctx.eval_data, spec, options=opts_e, device=dev, host=ctx.host)
            history["eval"].append({"iteration": it, **{k: m[k] for k in ("tr_r1", "tr_r5", "tr_r10", "ir_r1",
                                                                            "ir_r5", "ir_r10", "rsum")}})
            if best is None or m["rsum"] > best["rsum"]:
                best = {"iteration": it, "rsum": m["rsum"]}
                ps.meta["selected"] = {"by": "dev rsum", "iteration": it, "rsum": m["rsum"]}
                ps.save(out / "best")

        bar = None
        if ctx.progress:
            from tqdm.auto import tqdm
            bar = tqdm(total=c.iterations, initial=start_it, desc=f"{self.name} {c.pairs} pairs", unit="it")
        n = c.pairs
        bs = c.batch_syn or n
        t_start = time.time()
        for it in range(start_it, c.iterations):
            e = int(torch.randint(buf.num_experts, (1,), generator=g))
            s = int(torch.randint(c.max_start_epoch, (1,), generator=g))
            batches, perm = [], torch.randperm(n, generator=g)
            pos = 0
            for _ in range(c.syn_steps):
                if pos + bs > n:
                    perm, pos = torch.randperm(n, generator=g), 0
                batches.append(perm[pos:pos + bs].to(dev))
                pos += bs
            ex = expert(e)
            start = {k: v.to(dev) for k, v in buf.params(ex, s).items()}
            target = {k: v.to(dev) for k, v in buf.params(ex, s + c.expert_epochs).items()}
            student0 = {k: v.clone().requires_grad_(True) for k, v in start.items()}
            lr_of = {"img": log_lr_img.exp(), "txt": log_lr_txt.exp()}
            if model.frozen:
                feats = model.image_features(syn_img)
                final = unroll(forward, student0, modality, lr=lr_of, text=syn_txt, batches=batches, features=feats)
            else:
                final = unroll(forward, student0, modality, lr=lr_of, text=syn_txt, batches=batches, images=syn_img)
            loss, parts = trajectory_loss(final, start, target, modality)
            leaves = [t for t in (syn_img, syn_txt, log_lr_img, log_lr_txt) if t.requires_grad]
            grads = torch.autograd.grad(loss, leaves, allow_unused=True)
            finite = math.isfinite(loss.item()) and all(gr is None or bool(torch.isfinite(gr).all()) for gr in grads)
            if not finite:
                failures += 1
                log.warning("iteration %d: non-finite loss or gradient (%s); skipped (%d in a row)", it,
                            loss.item(), failures)
                if failures >= c.max_failures:
                    save_ckpt(it)
                    raise NonFiniteError(
                        f"{failures} iterations in a row gave a non-finite loss or gradient; stopped at iteration "
                        f"{it} with the last good set saved in {out}. Lower --lr-images/--lr-text/--lr-lr or "
                        f"--syn-steps.")
                if bar:
                    bar.update(1)
                continue
            failures = 0
            for t, gr in zip(leaves, grads):
                t.grad = gr if gr is not None else torch.zeros_like(t)
            for o in opts.values():
                o.step()
                o.zero_grad(set_to_none=True)
            if c.clamp_images:
                with torch.no_grad():
                    syn_img.clamp_(0, 1)
            history["iteration"].append(it + 1)
            history["loss"].append(loss.item())
            history["img"].append(parts.get("img", float("nan")))
            history["txt"].append(parts.get("txt", float("nan")))
            history["lr_img"].append(math.exp(log_lr_img.item()))
            history["lr_txt"].append(math.exp(log_lr_txt.item()))
            if bar:
                bar.set_postfix(loss=f"{loss.item():.3f}", lr_img=f"{history['lr_img'][-1]:.3g}",
                                lr_txt=f"{history['lr_txt'][-1]:.3g}")
                bar.update(1)
            done = it + 1
            if c.eval_every and done % c.eval_every == 0 and done < c.iterations:
                dev_eval(done)
            if c.checkpoint_every and done % c.checkpoint_every == 0:
                save_ckpt(done)
        if bar:
            bar.close()
        if ctx.eval_data is not None and (not history["eval"] or history["eval"][-1]["iteration"] != c.iterations):
            dev_eval(c.iterations)
        save_ckpt(c.iterations)
        ps = snapshot()
        ps.meta["seconds"] = round(time.time() - t_start, 1)
        ps.save(out)
        self._figures(ctx, ps, init_images, history)
        return ps

    # ---------------------------------------------------------------- outputs
    def _pairset(self, ctx, syn_img, syn_txt, lr_img, lr_txt, ids, history) -> PairSet:
        text = syn_txt.detach().cpu()
        meta = {"kind": "distilled", "method": self.name, "config": asdict(self.config),
                "spec": ctx.spec.as_dict(), "dataset": ctx.dataset_info or {}, "seed": ctx.seed,
                "buffer": {"path": str(Path(ctx.buffer.path).resolve()), "index": ctx.buffer.index.get("expert"),
                           "experts": ctx.buffer.num_experts},
                "iterations_done": history["iteration"][-1] if history["iteration"] else 0,
                "source_ids_are": "the real pairs the synthetic set was initialised from",
                "history": history, "versions": versions()}
        return PairSet(images=syn_img.detach().cpu(), text=text, captions=self._nearest_captions(ctx, text),
                       meta=meta, lr_img=float(lr_img.detach()), lr_txt=float(lr_txt.detach()),
                       source_ids=ids)

    def _figures(self, ctx, ps: PairSet, init_images, history) -> None:
        from vlcore.viz import line_plot, pair_grid

        out = Path(ctx.out)
        pair_grid(ps.images, ps.captions, out / "grid.png", before=init_images, max_pairs=24, cols=4,
                  title=f"{self.name}: {len(ps)} distilled pairs (left: initial, right: distilled; caption: "
                        f"nearest real caption)")
        if history["iteration"]:
            series = {"total": (history["iteration"], history["loss"])}
            if any(not math.isnan(v) for v in history["img"]):
                series["image"] = (history["iteration"], history["img"])
            if any(not math.isnan(v) for v in history["txt"]):
                series["text"] = (history["iteration"], history["txt"])
            line_plot(series, out / "loss.png", xlabel="iteration", ylabel="matching loss",
                      title="bi-trajectory matching loss")
        if history["eval"]:
            its = [h["iteration"] for h in history["eval"]]
            line_plot({k: (its, [h[k] for h in history["eval"]]) for k in ("tr_r1", "tr_r5", "ir_r1", "ir_r5")},
                      out / "dev_recall.png", xlabel="iteration", ylabel="dev recall (%)",
                      title="dev retrieval of models trained on the distilled set")
