"""Momentum carries the policy past the clip region (Props 3, 7; docs/diagnostics.md §3)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .. import _core
from . import _inputs, _optim
from ._report import Report, fmt

# ---- closed forms (engine: cpp/include/grpokit/math/diagnostics.hpp) -----------------------------


def _betas(betas: Sequence[float]) -> Tuple[float, float]:
    try:
        b1, b2 = (float(b) for b in betas)
    except (TypeError, ValueError):
        raise TypeError(f"betas: expected a pair (beta1, beta2), got {betas!r}") from None
    if not (0.0 <= b1 < 1.0 and 0.0 < b2 < 1.0):
        raise ValueError(f"betas: expected 0 <= beta1 < 1 and 0 < beta2 < 1, got {betas!r}")
    return b1, b2


def overshoot_coefficient(T: Optional[int], k: int = 0, betas: Sequence[float] = (0.9, 0.999)) -> float:
    """C_{T,k}: the preconditioned step k steps after the gradient vanished at Adam step T, over the
    last step before (Eq. 36; k = 0 is Eq. 32), for ϵ ≪ √v̂. ``T=None`` gives the large-T limit
    (β1/√β2)^(k+1) (Eq. 33, 37). T counts Adam steps from 1 and must be >= 2."""
    b1, b2 = _betas(betas)
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k: expected an integer >= 0, got {k!r}")
    if T is None:
        return _core.overshoot_limit(float(k), b1, b2)
    if isinstance(T, bool) or int(T) != T or T < 2:
        raise ValueError(f"T: expected an integer >= 2 (the step before T must exist), got {T!r}")
    return _core.overshoot_coefficient(float(T), float(k), b1, b2)


def predicted_drift(k: int, betas: Sequence[float] = (0.9, 0.999), T: Optional[int] = None) -> float:
    """D_k = Σ_{j=0..k} C_{T,j}: the distance momentum alone still moves the parameters after the
    gradient vanished at step T, over k + 1 steps, in units of the last step before it (§5.4 item 5;
    large-T: Σ (β1/√β2)^(j+1))."""
    if isinstance(k, bool) or int(k) != k or k < 0:
        raise ValueError(f"k: expected an integer >= 0, got {k!r}")
    return float(sum(overshoot_coefficient(T, j, betas) for j in range(int(k) + 1)))


def overshoot_eps_factor(sqrt_vhat_before: float, sqrt_vhat_after: float, eps: float) -> float:
    """Eq. 38: (√v̂_{T−1} + ϵ)/(√v̂_{T+k} + ϵ), the exact factor that replaces √v̂_{T−1}/√v̂_{T+k}."""
    return _core.overshoot_eps_factor(float(sqrt_vhat_before), float(sqrt_vhat_after), float(eps))


def reward_scale_elasticity(rho: float) -> float:
    """ρ/(1+ρ): d log|Δθ| / d log φ at φ = 1 for one coordinate with ρ = ϵ/√v̂ (docs/diagnostics.md §2)."""
    if not rho >= 0:
        raise ValueError(f"rho: expected a value >= 0, got {rho}")
    return _core.reward_scale_elasticity(float(rho))


# ---- clip region ---------------------------------------------------------------------------------


@dataclass
class ClipRegion:
    """Sign-aware clip-region statistics of one set of ratios (§5.4 items 1–2).

    ``excess`` (shape of ``ratios``): s − (1+ε_high) for A > 0, (1−ε_low) − s for A < 0, where the
    ratio is beyond the bound its advantage pushes towards (ℛ_clip: the clipped branch binds and the
    token's advantage gradient is 0); 0 elsewhere (a ratio beyond the *other* bound is not clipped
    by the min and still gets gradient). ``fraction`` = tokens in ℛ_clip / valid tokens.
    ``growth_*`` compare with ``prev_excess`` for tokens in ℛ_clip at both steps: a growing excess
    means the ratio keeps moving although its own advantage gradient is zero.
    """

    excess: np.ndarray
    n_valid: int
    n_in_region: int
    n_in_region_pos: int
    n_in_region_neg: int
    mean_excess: float
    max_excess: float
    n_in_both: int
    n_growing: int
    mean_growth: float

    @property
    def fraction(self) -> float:
        return self.n_in_region / self.n_valid if self.n_valid else 0.0


def clip_region(
    ratios: Any,
    advantages: Any,
    *,
    mask: Any = None,
    epsilon: float = 0.2,
    epsilon_high: Optional[float] = None,
    prev_excess: Any = None,
) -> ClipRegion:
    """Which tokens (ratios (B, T)) or sequences (ratios (B,)) are in ℛ_clip and how far beyond.

    ``epsilon`` is the lower clip width ε_low, ``epsilon_high`` the upper (default ``epsilon``),
    as TRL's ``GRPOConfig`` names them. ``advantages`` (B,), ``mask`` (B, T) optional.
    """
    eps_high = epsilon if epsilon_high is None else epsilon_high
    r = _inputs.host(ratios, "ratios")
    a = _inputs.host(advantages, "advantages")
    m = _inputs.host(mask, "mask", default="bool")
    p = _inputs.host(prev_excess, "prev_excess")
    out = np.empty(_inputs.shape_of(r), np.float64)
    st = _core.clip_region(r, a, m, float(epsilon), float(eps_high), p, out)
    n_in = st["n_in_region"]
    return ClipRegion(
        excess=out,
        n_valid=st["n_valid"],
        n_in_region=n_in,
        n_in_region_pos=st["n_in_region_pos"],
        n_in_region_neg=st["n_in_region_neg"],
        mean_excess=st["sum_excess"] / n_in if n_in else 0.0,
        max_excess=st["max_excess"],
        n_in_both=st["n_in_both"],
        n_growing=st["n_growing"],
        mean_growth=st["sum_growth"] / st["n_in_both"] if st["n_in_both"] else 0.0,
    )


# ---- the μ-step loop ---------------------------------------------------------------------------


@dataclass
class StepRecord:
    """One inner step k of the μ-step loop, as seen right before ``optimizer.step()``.

    ``u_norm`` ‖u_t‖ of the coming step (u = m̂/(√v̂+ϵ), exactly what Adam will apply, divided by
    lr), ``u_prev_norm`` ‖u_{t−1}‖ of the previous step (from the state), ``overshoot`` their ratio
    (the empirical C), ``bound`` β1/√β2 and ``finite_T`` Eq. 32 at T = t; ``stale_share`` =
    ⟨u_stale, u⟩/‖u‖² the part of the step carried by momentum (1 − it is the current gradient's
    part), ``stale_norm`` / ``fresh_norm`` the norms of the two parts, ``cos_grad`` cos(u_t, g_t);
    ``displacement`` lr·‖u_t‖ and ``weight_decay`` the decoupled decay's lr·λ·‖θ‖ (apart);
    ``clip`` / ``clip_seq`` the token / sequence clip-region statistics when ratios were given;
    ``drift_if_clipped`` D_{remaining−1}(T=t) × lr‖u_t‖: how far momentum alone would still move the
    parameters over the remaining inner steps if every gradient vanished after this step.
    """

    k: int
    adam_step: int
    u_norm: float
    u_prev_norm: float
    overshoot: float
    bound: float
    finite_T: float
    stale_share: float
    stale_norm: float
    fresh_norm: float
    cos_grad: float
    displacement: float
    weight_decay: float
    clip: Optional[ClipRegion] = None
    clip_seq: Optional[ClipRegion] = None
    drift_if_clipped: float = float("nan")


class MomentumTracker:
    """Records the momentum diagnostics of a μ-step inner loop on one batch.

    Call :meth:`step` after ``loss.backward()`` (and after any gradient clipping), right before
    ``optimizer.step()``, once per inner step; :meth:`report` gives the :class:`MomentumReport`.
    From the optimizer's state before the step and the gradients, the coming Adam step is
    computed exactly (standard Adam/AdamW; amsgrad and maximize are refused), so the empirical
    overshoot ‖u_t‖/‖u_{t−1}‖ compares consecutive optimizer states. :meth:`reset` starts a new batch.

    Args:
        optimizer: torch.optim.Adam/AdamW (or the same state names).
        epsilon, epsilon_high: the clip widths (ε_low, ε_high) of the loss, as TRL names them.
        mu: the number of inner steps per batch, for the predicted remaining drift (optional).
        named: a module or named_parameters() pairs (only for names in messages).
    """

    def __init__(
        self,
        optimizer: Any,
        *,
        epsilon: float = 0.2,
        epsilon_high: Optional[float] = None,
        mu: Optional[int] = None,
        named: Any = None,
    ) -> None:
        _optim.check_adam(optimizer)
        if mu is not None and (isinstance(mu, bool) or int(mu) != mu or mu < 1):
            raise ValueError(f"mu: expected an integer >= 1, got {mu!r}")
        self.optimizer = optimizer
        self.epsilon = float(epsilon)
        self.epsilon_high = float(epsilon if epsilon_high is None else epsilon_high)
        self.mu = mu
        self.named = named
        self.records: List[StepRecord] = []
        self._prev_excess: Dict[str, np.ndarray] = {}

    def reset(self) -> None:
        """Forget the recorded inner steps (a new batch)."""
        self.records = []
        self._prev_excess = {}

    def _clip(self, key: str, ratios: Any, advantages: Any, mask: Any) -> ClipRegion:
        prev = self._prev_excess.get(key)
        r = _inputs.host(ratios, "ratios")
        if prev is not None and prev.shape != _inputs.shape_of(r):
            prev = None  # a different batch layout: no growth to compare
        res = clip_region(
            r, advantages, mask=mask, epsilon=self.epsilon, epsilon_high=self.epsilon_high, prev_excess=prev
        )
        self._prev_excess[key] = res.excess
        return res

    def step(
        self,
        ratios: Any = None,
        advantages: Any = None,
        mask: Any = None,
        *,
        sequence_ratios: Any = None,
    ) -> StepRecord:
        """Record inner step k (call right before ``optimizer.step()``).

        ``ratios`` (B, T) token ratios π_θ/π_old of this inner step (and/or ``sequence_ratios``
        (B,)) with ``advantages`` (B,) and ``mask`` (B, T) give the clip-region statistics; they are
        optional (the optimizer part needs only the gradients).
        """
        if (ratios is not None or sequence_ratios is not None) and advantages is None:
            raise ValueError("advantages: required with ratios (the clip region depends on the sign of A)")
        states = list(_optim.param_states(self.optimizer, self.named))
        with_grad = [s for s in states if s.param.grad is not None]
        if not with_grad:
            raise ValueError(
                "optimizer: no parameter has a gradient; call MomentumTracker.step after loss.backward() "
                "and before optimizer.step()"
            )
        import torch

        items, wd_norms = [], []
        for s in with_grad:
            grad = _optim.flat_state(s.param.grad)
            m, v = s.exp_avg, s.exp_avg_sq
            if not s.has_state:  # the first step: Adam starts from m = v = 0
                m = v = torch.zeros(grad.shape, dtype=grad.dtype, device=grad.device)
            coupled = (not s.decoupled) and s.weight_decay != 0.0
            param = _optim.flat_state(s.param) if coupled else None
            items.append((m, v, grad, param, s.weight_decay if coupled else 0.0, s))
            if s.decoupled and s.weight_decay:  # ‖θ‖ where θ lives; read with the splits below
                wd_norms.append((s, torch.linalg.vector_norm(s.param.detach(), dtype=torch.float64)))
        rows = _optim.step_splits(items)
        col = {f: k for k, f in enumerate(_optim.SPLIT_FIELDS)}
        stale2 = fresh2 = sf = prev2 = g2 = ug = disp2 = wd2 = 0.0
        steps = set()
        for (_, _, _, _, _, s), r in zip(items, rows):
            stale2 += r[col["stale2"]]
            fresh2 += r[col["fresh2"]]
            sf += r[col["stale_fresh"]]
            prev2 += r[col["prev2"]]
            g2 += r[col["grad2"]]
            ug += r[col["u_grad"]]
            u2 = r[col["stale2"]] + r[col["fresh2"]] + 2 * r[col["stale_fresh"]]
            disp2 += s.lr**2 * u2
            steps.add(int(s.step) + 1)
        for idx in _optim._by_device([x for _, x in wd_norms]).values():
            norms = torch.stack([wd_norms[i][1] for i in idx]).cpu().tolist()
            for i, norm in zip(idx, norms):
                s = wd_norms[i][0]
                wd2 += (s.lr * s.weight_decay) ** 2 * norm**2
        stale2, fresh2, sf, prev2, g2, ug, disp2 = (float(x) for x in (stale2, fresh2, sf, prev2, g2, ug, disp2))
        u2 = stale2 + fresh2 + 2 * sf
        b1, b2 = with_grad[0].beta1, with_grad[0].beta2
        t = max(steps)
        k = len(self.records)
        u_norm = math.sqrt(max(u2, 0.0))
        drift = float("nan")
        if self.mu is not None:
            remaining = self.mu - k - 1
            drift = predicted_drift(remaining - 1, (b1, b2), T=t + 1) * math.sqrt(disp2) if remaining >= 1 else 0.0
        rec = StepRecord(
            k=k,
            adam_step=t,
            u_norm=u_norm,
            u_prev_norm=math.sqrt(prev2),
            overshoot=u_norm / math.sqrt(prev2) if prev2 > 0 else float("nan"),
            bound=b1 / math.sqrt(b2),
            finite_T=overshoot_coefficient(t, 0, (b1, b2)) if t >= 2 else float("nan"),
            stale_share=(stale2 + sf) / u2 if u2 > 0 else float("nan"),
            stale_norm=math.sqrt(stale2),
            fresh_norm=math.sqrt(fresh2),
            cos_grad=ug / (u_norm * math.sqrt(g2)) if u_norm > 0 and g2 > 0 else float("nan"),
            displacement=math.sqrt(disp2),
            weight_decay=math.sqrt(wd2),
            clip=self._clip("token", ratios, advantages, mask) if ratios is not None else None,
            clip_seq=self._clip("sequence", sequence_ratios, advantages, None) if sequence_ratios is not None else None,
            drift_if_clipped=drift,
        )
        self.records.append(rec)
        return rec

    def report(self) -> "MomentumReport":
        if not self.records:
            raise ValueError("MomentumTracker: no inner step recorded yet; call .step() before optimizer.step()")
        b = self.optimizer.param_groups[0]["betas"]
        return MomentumReport(list(self.records), (float(b[0]), float(b[1])), self.epsilon, self.epsilon_high)


@dataclass(repr=False)
class MomentumReport(Report):
    """The inner steps of one batch: clip region, overshoot and the momentum share per step.

    ``records`` is a list of :class:`StepRecord`. ``pure_momentum_steps``: the steps whose current
    gradient part is negligible (‖u_fresh‖ ≤ 1e-6·‖u‖): there the step is all overshoot, and
    ``onset`` (the first of them) defines T; ``measured_C`` / ``predicted_C`` compare ‖u_{T+j}‖ /
    ‖u_{T−1}‖ with Eq. 36 for j = 0, 1, ...
    """

    records: List[StepRecord]
    betas: Tuple[float, float]
    epsilon: float
    epsilon_high: float
    title = "Momentum past the clip region (Props 3, 7)"
    n_panels = 2

    def column(self, name: str) -> np.ndarray:
        """One StepRecord field over the inner steps (clip fields as ``clip_fraction`` etc.)."""
        if name.startswith("clip_"):
            attr = name[len("clip_") :]
            return np.array([getattr(r.clip, attr) if r.clip is not None else np.nan for r in self.records])
        return np.array([getattr(r, name) for r in self.records], dtype=np.float64)

    @property
    def pure_momentum_steps(self) -> List[int]:
        return [r.k for r in self.records if r.u_norm > 0 and r.fresh_norm <= 1e-6 * r.u_norm]

    @property
    def onset(self) -> Optional[int]:
        pm = self.pure_momentum_steps
        return pm[0] if pm else None

    @property
    def measured_C(self) -> np.ndarray:
        k0 = self.onset
        if k0 is None or self.records[k0].u_prev_norm == 0:
            return np.zeros(0)
        base = self.records[k0].u_prev_norm
        return np.array([r.u_norm / base for r in self.records[k0:] if r.k in self.pure_momentum_steps])

    @property
    def predicted_C(self) -> np.ndarray:
        k0 = self.onset
        if k0 is None or self.records[k0].adam_step < 2:
            return np.zeros(0)
        T = self.records[k0].adam_step
        return np.array([overshoot_coefficient(T, j, self.betas) for j in range(len(self.measured_C))])

    def to_dict(self) -> Dict[str, Any]:
        last = self.records[-1]
        d: Dict[str, Any] = {
            "inner_steps": len(self.records),
            "overshoot_last": last.overshoot,
            "bound": last.bound,
            "stale_share_last": last.stale_share,
            "stale_share_mean": float(np.nanmean(self.column("stale_share"))),
            "displacement_total": float(np.sum(self.column("displacement"))),
            "weight_decay_total": float(np.sum(self.column("weight_decay"))),
        }
        if last.clip is not None:
            d["clip_fraction_last"] = last.clip.fraction
            d["clip_max_excess_last"] = last.clip.max_excess
            d["clip_growing_last"] = last.clip.n_growing
        if self.onset is not None:
            d["pure_momentum_steps"] = len(self.pure_momentum_steps)
        return d

    def _lines(self) -> List[str]:
        b1, b2 = self.betas
        lines = [
            f"betas ({b1:g}, {b2:g}): bound β1/√β2 = {fmt(b1 / math.sqrt(b2))}; clip widths "
            f"({fmt(self.epsilon)}, {fmt(self.epsilon_high)})",
            f"{'k':>3} {'step':>5} {'‖u_t‖/‖u_t−1‖':>13} {'Eq. 32':>8} {'stale':>8} {'cos(u,g)':>8} "
            f"{'in ℛ_clip':>9} {'max excess':>10} {'growing':>8}",
        ]
        for r in self.records:
            c = r.clip
            lines.append(
                f"{r.k:3d} {r.adam_step:5d} {r.overshoot:13.6g} {r.finite_T:8.6g} {r.stale_share:8.4g} "
                f"{r.cos_grad:8.4g} {c.fraction if c else float('nan'):9.4g} "
                f"{c.max_excess if c else float('nan'):10.4g} "
                f"{str(c.n_growing) + '/' + str(c.n_in_both) if c else '-':>8}"
            )
        if self.onset is not None:
            mc, pc = self.measured_C, self.predicted_C
            lines.append(
                f"pure-momentum steps from k = {self.onset}: C_T,j measured "
                + ", ".join(fmt(x) for x in mc[:6])
                + " vs Eq. 36 "
                + ", ".join(fmt(x) for x in pc[:6])
            )
        d = self.to_dict()
        lines.append(
            f"total displacement Σ lr‖u‖ = {fmt(d['displacement_total'])}; weight decay apart: "
            f"{fmt(d['weight_decay_total'])}"
        )
        return lines

    def _plot(self, axes: Any) -> None:
        ax0, ax1 = axes
        k = self.column("k")
        ax0.plot(k, self.column("overshoot"), "o-", label="‖u_t‖/‖u_t−1‖")
        ax0.plot(k, self.column("finite_T"), "s--", label="Eq. 32 (finite T)")
        ax0.axhline(self.records[0].bound, color="grey", lw=0.8, label="β1/√β2")
        ax0.plot(k, self.column("stale_share"), "^-", label="stale share")
        ax0.set_xlabel("inner step k")
        ax0.legend(fontsize=7)
        if self.records[0].clip is not None:
            ax1.plot(k, self.column("clip_fraction"), "o-", label="fraction in ℛ_clip")
            ax1.plot(k, self.column("clip_max_excess"), "s-", label="max excess")
            ax1.plot(k, self.column("clip_mean_excess"), "^-", label="mean excess")
            ax1.legend(fontsize=7)
        else:
            ax1.plot(k, self.column("displacement"), "o-", label="lr‖u_t‖")
            ax1.legend(fontsize=7)
        ax1.set_xlabel("inner step k")


# ---- momentum look-ahead ---------------------------------------------------------------------


@dataclass(repr=False)
class LookAheadReport(Report):
    """Where momentum alone takes each token's ratio on the next optimizer step.

    ``ratio_now`` / ``ratio_next`` (shape of ``old_logp``): π/π_old now and after one optimizer
    step with the current gradient removed (m ← β1 m, v ← β2 v; decoupled weight decay included
    only with ``include_weight_decay``); ``excess_now`` / ``excess_next`` their clip-region excess.
    ``n_clipped`` tokens are in ℛ_clip now; ``n_moving_deeper`` of them will be further beyond
    the bound after the step, by ``mean_deeper`` on average (max ``max_deeper``).
    """

    ratio_now: np.ndarray
    ratio_next: np.ndarray
    excess_now: np.ndarray
    excess_next: np.ndarray
    n_valid: int
    n_clipped: int
    n_moving_deeper: int
    mean_deeper: float
    max_deeper: float
    n_entering: int
    title = "Momentum look-ahead"
    n_panels = 1

    def to_dict(self) -> Dict[str, Any]:
        return {
            "clipped": self.n_clipped,
            "moving_deeper": self.n_moving_deeper,
            "mean_deeper": self.mean_deeper,
            "max_deeper": self.max_deeper,
            "entering": self.n_entering,
        }

    def _lines(self) -> List[str]:
        return [
            f"tokens in ℛ_clip now: {self.n_clipped} of {self.n_valid}",
            f"momentum alone moves {self.n_moving_deeper} of them further past the bound on the next step "
            f"(mean {fmt(self.mean_deeper)}, max {fmt(self.max_deeper)})",
            f"tokens entering ℛ_clip from momentum alone: {self.n_entering}",
        ]

    def _plot(self, axes: Any) -> None:
        (ax,) = axes
        clipped = self.excess_now > 0
        ax.scatter(self.ratio_now[~clipped], self.ratio_next[~clipped], s=4, label="not clipped")
        ax.scatter(self.ratio_now[clipped], self.ratio_next[clipped], s=6, color="C3", label="in ℛ_clip")
        lo, hi = float(np.min(self.ratio_now)), float(np.max(self.ratio_now))
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.6)
        ax.set_xlabel("ratio now")
        ax.set_ylabel("ratio after the momentum-only step")
        ax.legend(fontsize=7)


def momentum_lookahead(
    model: Any,
    optimizer: Any,
    logp_fn: Callable[[Callable[..., Any]], Any],
    old_logp: Any,
    advantages: Any,
    *,
    mask: Any = None,
    epsilon: float = 0.2,
    epsilon_high: Optional[float] = None,
    include_weight_decay: bool = False,
) -> LookAheadReport:
    """The change of every token's ratio that the next optimizer step would cause with the current
    gradient removed (beyond the paper: which clipped tokens will still move, and how far).

    ``logp_fn(forward)`` returns the per-token log-probabilities (B, T) of the batch, where
    ``forward(*args, **kwargs)`` calls ``model`` with a given set of parameters
    (``torch.func.functional_call``): it is called twice, with the current parameters and with
    θ − lr·u_{t+1} (the momentum-only update), under ``torch.no_grad()``. Neither the model nor
    the optimizer is modified.
    """
    import torch
    from torch.func import functional_call

    named = dict(model.named_parameters())
    by_param = {id(s.param): s for s in _optim.stepped_states(optimizer, model)}
    nxt = {}
    for name, p in named.items():
        s = by_param.get(id(p))
        if s is None:
            nxt[name] = p.detach()
            continue
        u = _optim.preconditioned_update(s, momentum_only_next=True).to(device=p.device, dtype=p.dtype).reshape(p.shape)
        new = p.detach() - s.lr * u
        if include_weight_decay and s.decoupled and s.weight_decay:
            new = new - s.lr * s.weight_decay * p.detach()
        nxt[name] = new
    cur = {n: p.detach() for n, p in named.items()}
    with torch.no_grad():
        logp_now = logp_fn(lambda *a, **kw: functional_call(model, cur, a, kw))
        logp_next = logp_fn(lambda *a, **kw: functional_call(model, nxt, a, kw))
    old = old_logp.detach() if hasattr(old_logp, "detach") else torch.as_tensor(np.asarray(old_logp))
    ratio_now = torch.exp(logp_now.double() - old.double().to(logp_now.device)).cpu().numpy()
    ratio_next = torch.exp(logp_next.double() - old.double().to(logp_next.device)).cpu().numpy()
    now = clip_region(ratio_now, advantages, mask=mask, epsilon=epsilon, epsilon_high=epsilon_high)
    later = clip_region(ratio_next, advantages, mask=mask, epsilon=epsilon, epsilon_high=epsilon_high)
    clipped = now.excess > 0
    deeper = clipped & (later.excess > now.excess)
    diff = (later.excess - now.excess)[deeper]
    return LookAheadReport(
        ratio_now=ratio_now,
        ratio_next=ratio_next,
        excess_now=now.excess,
        excess_next=later.excess,
        n_valid=now.n_valid,
        n_clipped=int(clipped.sum()),
        n_moving_deeper=int(deeper.sum()),
        mean_deeper=float(diff.mean()) if diff.size else 0.0,
        max_deeper=float(diff.max()) if diff.size else 0.0,
        n_entering=int(((~clipped) & (later.excess > 0)).sum()),
    )
