"""PTM-ST (ICLR 2026): LoRS with phased teachers on shortcut trajectories and an EMA of the set.

REFERENCE.md ("2026 methods", PTM-ST); the rules, and the choices made where it is open:

* **Phases** (``--phases 200,299``: pairs per phase, in order; "" = one phase of the whole set).
  The synthetic set is cut into consecutive row ranges, one per phase, and phase ``p`` distils
  its own range only: every student minibatch of phase ``p`` is drawn from it, and only its rows
  (pixels, texts, the similarity factors' rows) receive a gradient or a momentum.  The rows of
  earlier phases are **frozen** (bitwise unchanged from the end of their phase); the rows of later
  phases keep their initial values until their phase.  The earlier subsets do **not** take part in
  a later phase's student steps: the later teacher starts from later epochs (``--phase-starts
  1-2``), i.e. from a model that has already trained, which is what the earlier subset stands for
  (the published evaluation trains on subset 1, then on subset 2).  The learned step sizes are
  shared by all phases and learn throughout.  The pairs per phase must add up to the pairs the set
  holds (LoRS's ``pairs - k``: 99 / 199 / 499, hence the published 99, 99 + 100, 200 + 299).
* **Start ranges** (``--phase-starts 0-1,1-2``: inclusive start epochs per phase; "" = each phase
  [0, max_start_epoch)); the target is ``expert_epochs`` (1) later.
* **Shortcut buffers** (``--phase-shortcut 5,7``: K per phase; "" or 0 = the buffer as it is):
  derived once from ``--buffer`` with :func:`vlcore.training.shortcut.derive_shortcut_buffer` into
  ``OUT/buffer-shortcut-K`` (resumable, deterministic: a resumed or repeated run finds the same
  bytes); their paths and checksums are recorded in meta.json (``phases[i].buffer``).
* **Iterations per phase** (``--phase-iterations 2000,2000``; "" = ``iterations`` split evenly).
  The phase boundaries are fixed when the run starts and kept in the checkpoint
  (``state.info["phase_bounds"]``): a run resumed with more ``iterations`` extends its last phase.
  The current phase and the frozen ranges are in ``state.info`` (``phase``, ``frozen``) and are a
  function of the iteration, so a resume mid-phase continues bitwise exactly.
* **EMA** (``--ema-decay 0.99``; 0 = none) of every learned tensor: pixels, texts, the similarity
  factors (the stored low-rank form, not the N x N matrix) and the log step sizes.  It starts at
  the initial values and is updated after every *accepted* update (in :meth:`check_state`, which
  the loop calls after applying an update and before it would roll it back): ``ema = d * ema +
  (1 - d) * x``, per row only for the current phase's rows (a frozen subset's EMA is frozen with
  it).  It is kept in ``state.saved`` (checkpointed).  The pair set (final, best-on-dev and the
  periodic dev evaluation) is the EMA; ``--save-raw`` also writes the raw last set to ``OUT/raw``.
* A phased set records its phases in meta.json (``phases``: pair ranges ``[lo, hi)``, iterations,
  start epochs, buffer); ``vl eval`` trains on it subset by subset (see
  :func:`vlcore.plugins.evaluators.train_phased`; ``--eval-option phased=false``: the union).
"""
from __future__ import annotations

import logging
from dataclasses import dataclass, field, fields, replace
from pathlib import Path

import torch

from vlcore.core.config import ranged
from vlcore.core.errors import ConfigError
from vlcore.distill.matching import MatchingRun, Plan
from vlcore.training import distributed

from .lors import LoRS
from vlcore.training.buffer import Buffer
from vlcore.training.shortcut import derive_shortcut_buffer

log = logging.getLogger(__name__)

EMA = "ema."


def _ints(text: str, flag: str) -> list[int]:
    try:
        return [int(v) for v in text.split(",")] if text.strip() else []
    except ValueError:
        raise ConfigError(f"{flag} takes comma-separated integers (got {text!r}).") from None


def _ranges(text: str, flag: str) -> list[tuple[int, int]]:
    out = []
    for part in (p.strip() for p in text.split(",") if p.strip()):
        lo, _, hi = part.partition("-")
        try:
            a, b = int(lo), int(hi or lo)
        except ValueError:
            raise ConfigError(f"{flag} takes inclusive ranges like 0-1,1-2 (got {text!r}).") from None
        if not 0 <= a <= b:
            raise ConfigError(f"{flag}: the range {part!r} must be a-b with 0 <= a <= b.")
        out.append((a, b))
    return out


@dataclass
class PhasePlan(Plan):
    """A plan of one phase (its own buffer, start range and rows)."""

    phase: int = 0


@dataclass
class PhasedRun(MatchingRun):
    """:class:`MatchingRun` plus each phase's rows, start range and buffer (``buffer`` is the current phase's)."""

    rows: list[tuple[int, int]] = field(default_factory=list)
    starts: list[tuple[int, int]] = field(default_factory=list)
    shortcut: list[int] = field(default_factory=list)
    buffers: list = field(default_factory=list)
    current: int = -1

    def use_phase(self, p: int) -> None:
        if p != self.current:
            self.buffer, self.current = self.buffers[p], p
            self.experts.clear()  # another buffer: its experts, not the last phase's


class PTMST(LoRS):
    """PTM-ST (ICLR 2026): LoRS with phased teachers on shortcut trajectories and an EMA of the set."""

    name = "ptm-st"

    @dataclass(frozen=True)
    class Config(LoRS.Config):
        #: synthetic pairs per phase, comma-separated, in order (e.g. 200,299); "" = one phase of
        #: the whole set. They must add up to the pairs the set holds (LoRS: pairs - k)
        phases: str = ""
        #: inclusive start-epoch range per phase (e.g. 0-1,1-2); "" = [0, max_start_epoch) each
        phase_starts: str = ""
        #: shortcut K per phase (e.g. 5,7): the phase's teacher is the shortcut over epochs 0..K of
        #: --buffer, derived into OUT/buffer-shortcut-K; "" or 0 = the buffer as it is
        phase_shortcut: str = ""
        #: outer iterations per phase (e.g. 2000,2000); "" = iterations split evenly. The last
        #: phase runs until --iterations
        phase_iterations: str = ""
        #: decay of the EMA of the learned tensors (the pair set is the EMA); 0 = no EMA
        ema_decay: float = ranged(0.99, 0, 1, hi_open=True)
        #: also save the raw (not averaged) last set into OUT/raw
        save_raw: bool = False

    # ------------------------------------------------------------------ settings
    def phase_settings(self, n: int | None = None) -> tuple[list[int], list[tuple[int, int]], list[int], list[int]]:
        """(pairs, start ranges, shortcut K, iterations) per phase, each list of one length (a
        single value applies to every phase); ``n``: the pairs the set holds."""
        c = self.config
        sizes = _ints(c.phases, "--phases") or ([n] if n else [])
        count = max(len(sizes), 1)
        starts = _ranges(c.phase_starts, "--phase-starts") or [(0, c.max_start_epoch - 1)]
        ks = _ints(c.phase_shortcut, "--phase-shortcut") or [0]
        its = _ints(c.phase_iterations, "--phase-iterations")
        for name, vals in (("--phase-starts", starts), ("--phase-shortcut", ks), ("--phase-iterations", its)):
            if vals and len(vals) not in (1, count):
                raise ConfigError(f"{name} gives {len(vals)} values for {count} phases (--phases {c.phases!r}).")
        if any(v < 1 for v in sizes) or any(v < 0 for v in ks) or any(v < 1 for v in its):
            raise ConfigError("--phases and --phase-iterations take positive integers, --phase-shortcut K >= 0.")
        if len(starts) == 1:
            starts = starts * count
        if len(ks) == 1:
            ks = ks * count
        if len(its) == 1:
            its = its * count
        return sizes, starts, ks, its

    def check_config(self) -> None:
        super().check_config()
        if getattr(self.config, "start_sampling", "shared") != "shared":
            raise ConfigError("ptm-st draws each phase's start epoch from --phase-starts (one for both modalities); "
                              "--start-sampling async does not apply: leave it at shared.")
        sizes, starts, ks, _ = self.phase_settings()
        for p, ((a, b), k) in enumerate(zip(starts, ks)):
            if k and b + self.config.expert_epochs > k:
                raise ConfigError(f"phase {p + 1}: start epochs {a}-{b} with expert_epochs={self.config.expert_epochs} "
                                  f"reach epoch {b + self.config.expert_epochs}, beyond its shortcut K={k}.")

    def expert_defaults(self) -> dict:
        _, starts, ks, _ = self.phase_settings()
        need = max([b + self.config.expert_epochs for _, b in starts] + ks +
                   [super().expert_defaults()["epochs"]])
        return {**super().expert_defaults(), "epochs": need}

    def check(self, ctx) -> None:
        super().check(ctx)
        c = self.config
        n = self.num_synthetic(ctx)
        sizes, starts, ks, its = self.phase_settings(n)
        if sum(sizes) != n:
            raise ConfigError(f"--phases {c.phases} adds up to {sum(sizes)} pairs, but the set holds {n} (--pairs "
                              f"{c.pairs}{'; LoRS stores fewer to pay for S' if n != c.pairs else ''}).")
        for p, ((a, b), k) in enumerate(zip(starts, ks)):
            top = k or ctx.buffer.epochs
            if k > ctx.buffer.epochs:
                raise ConfigError(f"phase {p + 1}: shortcut K={k}, but the buffer holds epochs 0..{ctx.buffer.epochs}.")
            if b + c.expert_epochs > top:
                raise ConfigError(f"phase {p + 1}: start epochs {a}-{b} need epoch {b + c.expert_epochs}; its "
                                  f"teacher holds epochs 0..{top}.")
        if its and sum(its[:-1]) >= c.iterations:  # a run cut short (to be resumed with more iterations)
            log.warning("--phase-iterations %s: --iterations %d ends before the last phase starts; its pairs "
                        "stay as initialised unless the run is resumed with more iterations.",
                        c.phase_iterations, c.iterations)

    # --------------------------------------------------------------------- setup
    def setup(self, ctx):
        state = super().setup(ctx)
        base = state.runtime
        sizes, starts, ks, _ = self.phase_settings(base.n)
        bounds = [0]
        for s in sizes:
            bounds.append(bounds[-1] + s)
        buffers = {}
        for k in sorted(set(ks) - {0}):
            where = Path(ctx.out) / f"buffer-shortcut-{k}"
            if distributed.is_main():
                where.parent.mkdir(parents=True, exist_ok=True)
                buffers[k] = derive_shortcut_buffer(ctx.buffer, where, k)
            distributed.barrier()
            if k not in buffers:
                buffers[k] = Buffer(where)
        run = PhasedRun(**{f.name: getattr(base, f.name) for f in fields(MatchingRun)},
                        rows=list(zip(bounds[:-1], bounds[1:])), starts=starts, shortcut=ks,
                        buffers=[buffers[k] if k else ctx.buffer for k in ks])
        return replace(state, runtime=run)

    def init_synthetic(self, ctx, state) -> None:
        super().init_synthetic(ctx, state)
        c = self.config
        *_, its = self.phase_settings(state.runtime.n)
        count = len(state.runtime.rows)
        its = its or [c.iterations * (p + 1) // count - c.iterations * p // count for p in range(count)]
        state.info["phase_bounds"] = [sum(its[:p]) for p in range(count)]
        state.info["phase"], state.info["frozen"] = 0, []
        for k, v in state.learned.items():
            state.saved[EMA + k] = v.detach().clone()

    # ---------------------------------------------------------------------- step
    def phase_of(self, state) -> int:
        """The phase of the iteration about to run (fixed by the checkpointed boundaries)."""
        bounds = state.info["phase_bounds"]
        return max(p for p, b in enumerate(bounds) if b <= state.iteration)

    def _rows(self, state, t: torch.Tensor) -> bool:
        return t.dim() >= 1 and t.shape[0] == state.runtime.n

    def plan(self, state) -> PhasePlan:
        """The expert, start epoch (from the phase's range) and minibatches (from the phase's rows)."""
        c, g, run = self.config, state.generator, state.runtime
        p = self.phase_of(state)
        run.use_phase(p)
        (lo, hi), (a, b) = run.rows[p], run.starts[p]
        m = hi - lo
        bs = min(c.batch_syn or m, m)
        e = int(torch.randint(run.buffer.num_experts, (1,), generator=g))
        s = a + int(torch.randint(b - a + 1, (1,), generator=g))
        batches, perm, pos = [], torch.randperm(m, generator=g), 0
        for _ in range(c.syn_steps):
            if pos + bs > m:
                perm, pos = torch.randperm(m, generator=g), 0
            batches.append(perm[pos:pos + bs] + lo)
            pos += bs
        plan = PhasePlan(e, s, batches, phase=p)
        plan.steps = [self.plan_step(state, k, idx) for k, idx in enumerate(batches)]
        plan.seed = int(torch.randint(2 ** 62, (1,), generator=g))
        return plan

    def step(self, ctx, state):
        """LoRS's step on the current phase's rows: the rows of the other phases get no gradient and
        no momentum (so an update leaves them bitwise unchanged)."""
        p = self.phase_of(state)
        lo, hi = state.runtime.rows[p]
        state.info["phase"] = p
        state.info["frozen"] = [list(r) for r in state.runtime.rows[:p]]
        outside = torch.ones(state.runtime.n, dtype=torch.bool)
        outside[lo:hi] = False
        for opt in state.optimizers.values():
            for group in opt.param_groups:
                for t in group["params"]:
                    buf = opt.state.get(t, {}).get("momentum_buffer")
                    if buf is not None and self._rows(state, t):
                        buf[outside.to(buf.device)] = 0
        result = super().step(ctx, state)
        for k, g in result.grads.items():
            if g is not None and self._rows(state, state.learned[k]):
                g = g.clone()
                g[outside.to(g.device)] = 0
                result.grads[k] = g
        return result

    def check_state(self, state) -> str | None:
        """LoRS's bounds; on an accepted update, the EMA moves towards it (current phase's rows)."""
        problem = super().check_state(state)
        d = float(self.config.ema_decay)
        if problem is None:
            lo, hi = state.runtime.rows[state.info.get("phase", 0)]
            with torch.no_grad():
                for k, v in state.learned.items():
                    e = state.saved[EMA + k]
                    if self._rows(state, v):
                        e[lo:hi] = d * e[lo:hi] + (1 - d) * v.detach()[lo:hi]
                    else:
                        e.copy_(d * e + (1 - d) * v.detach())
        return problem

    # ------------------------------------------------------------------- outputs
    def ema_state(self, state):
        """``state`` with the EMA in place of the learned tensors (what the pair set holds)."""
        return replace(state, learned={k: state.saved[EMA + k] for k in state.learned})

    def snapshot(self, ctx, state):
        ps = super().snapshot(ctx, self.ema_state(state))
        self._describe(ps, state, ctx, averaged=True)
        return ps

    def _describe(self, ps, state, ctx, averaged: bool) -> None:
        run, c = state.runtime, self.config
        bounds = state.info["phase_bounds"]
        ends = [*bounds[1:], max(c.iterations, state.iteration)]
        phases = []
        for p, ((lo, hi), (a, b), k) in enumerate(zip(run.rows, run.starts, run.shortcut)):
            buf = run.buffers[p]
            phases.append({"pairs": [lo, hi], "iterations": [bounds[p], ends[p]], "start_epochs": [a, b],
                           "buffer": {"shortcut": k, "path": str(Path(buf.path).resolve()),
                                      "content": buf.content_key(), "experts": buf.index.get("experts")}})
        ps.meta["phases"] = phases
        ps.meta["phase_done"] = state.info.get("frozen", [])
        ps.meta["ema"] = {"decay": c.ema_decay, "averaged": averaged, "tensors": sorted(state.learned),
                          "raw_in": "raw" if c.save_raw else None}

    def finalise(self, ctx, state):
        ps = self.snapshot(ctx, state)
        if self.config.save_raw and distributed.is_main():
            raw = LoRS.snapshot(self, ctx, state)
            self._describe(raw, state, ctx, averaged=False)
            raw.meta.update(ctx.meta)
            raw.save(Path(ctx.out) / "raw")
        return ps
