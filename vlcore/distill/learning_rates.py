"""The learning rates of a trajectory-matching run's learned tensors: the defaults scaled to the run's
first gradient, the bounds of the learned step sizes, and the likely cause named when a set turns
unhealthy (:mod:`vlcore.distill.health`).  :class:`vlcore.distill.matching.TrajectoryMatching` calls
these with its Config (``lr_images``, ``lr_text``, ``syn_steps``, ``expert_epochs``)."""
from __future__ import annotations

import logging
import math

from vlcore.core.config import MAX_LR
from vlcore.distill.contract import DistillContext, RunState, StepResult

log = logging.getLogger(__name__)

#: the learned step sizes must stay within this factor of their initial value (else the update is
#: rolled back); below 1/COLLAPSE of it at the end, the run warns that they collapsed
LR_RANGE = 1e4
COLLAPSE = 100.0
#: the default learning rates (``lr_images`` / ``lr_text`` left to none) are scaled to the run's first
#: gradient so that the first update moves the pixels by this root mean square, in half-widths of the
#: data's range (:func:`vlcore.distill.health.pixel_spread`'s unit), and each text embedding by this multiple of
#: its initial norm (median).  Both are what the Flickr8k recipes' lr 100 does (frozen EfficientNet-Lite0
#: at 112 px, bitraj 100 pairs, 1,500 training photos: 0.03 and 2.5).  The gradient's scale is mostly
#: the data's, not the encoder's: at one encoder and image size it is 150 times larger on 60 photos
#: (few expert steps per epoch, against --syn-steps) than on the 2,000 embedded scenes, and 2.3 times
#: larger at 64 px than at 112 px; so no fixed learning rate is both healthy on a small folder and
#: useful on a large one, and none needs declaring per encoder.
FIRST_STEP_PIXELS = 0.03
FIRST_STEP_TEXT = 2.5
#: the learned tensors whose learning rate may be left to the default, with their flag and option
LEARNING_RATES = {"images": ("--lr-images", "lr_images", FIRST_STEP_PIXELS),
                  "text": ("--lr-text", "lr_text", FIRST_STEP_TEXT)}


def scale_to_first_gradient(config, state: RunState, result: StepResult) -> None:
    """At a learned tensor's first finite, non-zero gradient: record its size (``state.info
    ["first_gradient"]``, in the units of :data:`FIRST_STEP_PIXELS` / :data:`FIRST_STEP_TEXT` per
    unit of learning rate) and, when its learning rate was left to the default (none), set it so
    that this first update moves the tensor by that much (``state.info["lr_chosen"]``).  Once per
    run: the checkpoint holds both, and the optimiser its learning rate."""
    if not result.finite():
        return
    first, chosen = state.info.setdefault("first_gradient", {}), state.info.setdefault("lr_chosen", {})
    for name, (_, option, target) in LEARNING_RATES.items():
        g = result.grads.get(name)
        t = state.learned.get(name)
        if name in first or g is None or t is None or not t.requires_grad:
            continue
        g = g.detach().float()
        if name == "images":  # pixel units -> half-widths of the data's range
            size = 2 * float(g.pow(2).mean().sqrt())
        else:
            size = float(g.norm(dim=-1).median()) / (state.info.get("text_norm0") or 1.0)
        if not (size > 0 and math.isfinite(size)):
            continue
        first[name] = size
        if getattr(config, option) is None:
            lr = min(target / size, MAX_LR)
            set_lr(state, name, lr)
            chosen[name] = lr
            log.info("%s chosen from the first gradient: %.3g (the first update moves the %s by %g)",
                     LEARNING_RATES[name][0], lr, "pixels" if name == "images" else "text embeddings", target)


def set_lr(state: RunState, name: str, lr: float) -> None:
    """Set learned tensor ``name``'s learning rate in whichever optimiser group holds it."""
    t = state.learned[name]
    for opt in state.optimizers.values():
        for group in opt.param_groups:
            if any(p is t for p in group["params"]):
                group["lr"] = lr


def learning_rates(config, state: RunState) -> dict[str, float]:
    """The learning rates of the synthetic images and texts this run uses (given, or chosen from
    the first gradient; 0 while a default one awaits its first gradient)."""
    c, out = config, {}
    for name, (_, option, _) in LEARNING_RATES.items():
        given = getattr(c, option)
        out[name] = given if given is not None else state.info.get("lr_chosen", {}).get(name, 0.0)
    return out


def health_cause(config, ctx: DistillContext, state: RunState, name: str) -> str:
    """The likely cause of an unhealthy ``name`` ("images", "text"): its learning rate, for this data,
    encoder and image size, naming the flag to lower and a value (from the first gradient's size)."""
    flag, option, target = LEARNING_RATES[name]
    lr = learning_rates(config, state)[name]
    spec, c = ctx.spec, config
    where = (f"{spec.encoder} at {spec.image_size} px on this data ({ctx.train.num_pairs} training pairs, "
             f"{state.runtime.n} synthetic)")
    expert = ctx.buffer.index.get("expert") or {}
    steps = math.ceil(ctx.train.num_pairs / expert["batch_size"]) if expert.get("batch_size") else None
    short = (f"; the experts take only {steps} SGD steps per epoch here, fewer than --syn-steps {c.syn_steps}, "
             f"which makes the matching gradient large" if steps and steps * c.expert_epochs < c.syn_steps else "")
    what = "pixels" if name == "images" else "text embeddings"
    if getattr(c, option) is None:
        clamp = ", or keep the pixels in [0, 1] with --clamp-images" if name == "images" else ""
        return (f"Likely cause: {flag} {lr:.3g} (the default, scaled to the first gradient) still lets the {what} "
                f"drift too far over {state.iteration} iterations for {where}{short}. Lower {flag} "
                f"(e.g. {flag} {lr / 10:.2g}) or --iterations{clamp}.")
    first = state.info.get("first_gradient", {}).get(name)
    moved = (f": its first update alone moved the {what} by {lr * first:.3g} "
             f"({'root mean square, in the data range' if name == 'images' else 'times their initial norm'}"
             f"; the default moves them by {target:g})" if first else "")
    suggest = target / first if first else lr / 10
    return (f"Likely cause: {flag} {lr:g} is too high for {where}{moved}{short}. Lower {flag} (about {suggest:.2g} "
            f"here), or leave it out: the default scales it to this run's gradient.")


def step_size_problem(state: RunState) -> str | None:
    """What is wrong with the learned step sizes after an update (each within a factor
    :data:`LR_RANGE` of its initial value ``state.info["lr0"]``, and at most MAX_LR), or None."""
    lr0 = state.info.get("lr0")
    for side in ("img", "txt"):
        lr = math.exp(float(state.learned[f"log_lr_{side}"].detach()))
        if lr0 and not lr0 / LR_RANGE <= lr <= min(lr0 * LR_RANGE, MAX_LR):
            return (f"the step size lr_{side} became {lr:.3g}, outside [{lr0 / LR_RANGE:.3g}, "
                    f"{lr0 * LR_RANGE:.3g}] (a factor {LR_RANGE:g} of its initial {lr0:g})")
    return None


def collapsed_step_sizes(state: RunState) -> list[str]:
    """The warning when the learned step sizes ended below 1/:data:`COLLAPSE` of their initial value."""
    lr0 = state.info.get("lr0")
    lrs = {side: math.exp(float(state.learned[f"log_lr_{side}"].detach())) for side in ("img", "txt")}
    low = [f"lr_{side}={v:.3g}" for side, v in lrs.items() if lr0 and v < lr0 / COLLAPSE]
    if not low:
        return []
    return [f"the learned step sizes collapsed ({', '.join(low)}, from {lr0:g}: below 1/{COLLAPSE:g} of "
            f"it); models trained on this set will barely move. Lower --lr-lr."]
