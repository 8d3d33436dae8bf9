"""Reward scale under AdamW (Props 2, 5, 6; docs/diagnostics.md §2): what a global reward scale φ does to the step."""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from . import _optim
from ._report import Report, fmt

HIST_LO, HIST_HI, HIST_BINS = -12.0, 4.0, 64


@dataclass(repr=False)
class RewardScaleReport(Report):
    """ρ = ϵ/√v̂ over the optimizer's coordinates and what it predicts for a reward scale φ.

    * ``frac_rho_above``: fraction of coordinates with ρ > ``rho_threshold`` (ϵ changes their step
      by more than that fraction); coordinates never updated (v = 0) count as ρ = ∞.
    * ``elasticity``: update-weighted mean ē = Σ|u|·ρ/(1+ρ) / Σ|u| of d log|Δθ| / d log φ at φ = 1
      (0: Prop. 2's invariance, 1: the step scales with φ like SGD); ``mean_elasticity`` unweighted.
    * ``predicted_step_ratio[φ]``: Σ|u_φ| / Σ|u| with u_φ the step had every past gradient been
      scaled by φ (per coordinate (1+ρ)/(1+ρ/φ), exact for Adam when the gradient is linear in A).
    * ``sigma_in_alpha``: the advantages are divided by the group std, so φ cancels before the
      optimizer — for any ϵ and even with a regulariser (β ≠ 0), up to the ε added to σ (docs/diagnostics.md §2).
    * ``regulariser_share``: ‖g_R‖/‖g_A‖ from :func:`regulariser_share` when given: with β ≠ 0 and
      no σ in the weights, φ changes the balance between reward and regulariser.
    * ``per_tensor``: one row per parameter tensor (name, n, frac_rho_above, elasticity).
    * ``log10_rho_hist``: counts over ``hist_edges`` (log10 ρ; out-of-range values in the end bins).
    """

    n: int
    n_zero_v: int
    frac_rho_above: float
    elasticity: float
    mean_elasticity: float
    min_rho: float
    max_rho: float
    predicted_step_ratio: Dict[float, float]
    log10_rho_hist: np.ndarray
    per_tensor: List[Dict[str, Any]]
    rho_threshold: float
    eps: float
    sigma_in_alpha: Optional[bool] = None
    regulariser_share: Optional[float] = None
    hist_edges: np.ndarray = field(default_factory=lambda: np.linspace(HIST_LO, HIST_HI, HIST_BINS + 1))
    title = "Reward scale under Adam (Props 2, 5, 6)"
    n_panels = 2

    @property
    def verdict(self) -> str:
        if self.sigma_in_alpha:
            return (
                "invariant: the advantages carry 1/σ, so a global reward scale cancels before the "
                "optimizer (any ϵ, any β), up to the ε added to σ"
            )
        if self.regulariser_share is not None and self.regulariser_share > 1e-2:
            return (
                "sensitive: with β ≠ 0 and no σ in the weights, a reward scale changes the balance "
                f"between reward and regulariser gradients (‖g_R‖/‖g_A‖ = {fmt(self.regulariser_share)})"
            )
        if self.elasticity > 1e-2:
            return (
                f"sensitive: Adam's ϵ = {fmt(self.eps)} is comparable to √v̂ on part of the update; "
                f"the step scales like φ^{fmt(self.elasticity)} near φ = 1"
            )
        return "invariant (Prop. 2 regime): ϵ ≪ √v̂ on the coordinates that carry the update"

    def to_dict(self) -> Dict[str, Any]:
        d = {
            "coordinates": self.n,
            "frac_rho_above": self.frac_rho_above,
            "elasticity": self.elasticity,
            "mean_elasticity": self.mean_elasticity,
            "max_rho": self.max_rho,
        }
        for phi, r in self.predicted_step_ratio.items():
            d[f"step_ratio_phi_{phi:g}"] = r
        if self.regulariser_share is not None:
            d["regulariser_share"] = self.regulariser_share
        if self.sigma_in_alpha is not None:
            d["sigma_in_alpha"] = bool(self.sigma_in_alpha)
        return d

    def _lines(self) -> List[str]:
        lines = [
            f"coordinates: {self.n} ({self.n_zero_v} never updated); ϵ = {fmt(self.eps)}",
            f"ρ = ϵ/√v̂: min {fmt(self.min_rho)}, max {fmt(self.max_rho)}; "
            f"fraction with ρ > {fmt(self.rho_threshold)}: {fmt(self.frac_rho_above)}",
            f"elasticity of the step to a reward scale: update-weighted ē = {fmt(self.elasticity)}, "
            f"unweighted {fmt(self.mean_elasticity)}",
            "predicted step size for rewards × φ: "
            + ", ".join(f"φ={p:g} → {fmt(r)}×" for p, r in self.predicted_step_ratio.items()),
        ]
        if self.sigma_in_alpha is not None:
            lines.append(f"σ in α (advantages divided by the group std): {self.sigma_in_alpha}")
        if self.regulariser_share is not None:
            lines.append(f"regulariser share ‖g_R‖/‖g_A‖: {fmt(self.regulariser_share)}")
        lines.append(f"verdict: {self.verdict}")
        return lines

    def _plot(self, axes: Any) -> None:
        ax0, ax1 = axes
        centres = 0.5 * (self.hist_edges[1:] + self.hist_edges[:-1])
        ax0.bar(centres, self.log10_rho_hist, width=self.hist_edges[1] - self.hist_edges[0], color="C0")
        ax0.axvline(np.log10(self.rho_threshold), color="C3", lw=1, label=f"ρ = {self.rho_threshold:g}")
        ax0.set_xlabel("log10 ρ = log10(ϵ/√v̂)")
        ax0.set_ylabel("coordinates")
        ax0.legend(fontsize=7)
        names = [r["name"] for r in self.per_tensor]
        ax1.barh(np.arange(len(names)), [r["elasticity"] for r in self.per_tensor], color="C1")
        ax1.set_yticks(np.arange(len(names)))
        ax1.set_yticklabels(names, fontsize=6)
        ax1.set_xlabel("update-weighted elasticity ē")
        ax1.set_xlim(0, 1)


def reward_scale(
    optimizer: Any,
    *,
    named: Any = None,
    rho_threshold: float = 0.01,
    phis: Sequence[float] = (0.1, 10.0),
    sigma_in_alpha: Optional[bool] = None,
    regulariser_share: Optional[float] = None,
) -> RewardScaleReport:
    """How sensitive the optimizer's next steps are to a global reward scale (from its real state).

    Args:
        optimizer: a ``torch.optim.Adam``/``AdamW`` (or one keeping ``exp_avg``, ``exp_avg_sq``,
            ``step`` per parameter and ``betas``, ``eps`` per group) that has taken ≥ 1 step.
        named: a module (or ``named_parameters()`` pairs) to name the parameter tensors.
        rho_threshold: report the fraction of coordinates with ρ = ϵ/√v̂ above it.
        phis: reward scales to predict the step size for.
        sigma_in_alpha: whether the advantages were divided by the group std
            (``advantages(std=...)``; GRPO R1, GSPO, DAPO, CPPO, CISPO, GCPO in the paper's Table 1).
        regulariser_share: ‖g_R‖/‖g_A‖, e.g. from :func:`regulariser_share`.
    """
    if not rho_threshold > 0:
        raise ValueError(f"rho_threshold: expected a value > 0, got {rho_threshold}")
    for phi in phis:
        if not phi > 0:
            raise ValueError(f"phis: reward scales must be > 0 (a negative scale reverses every step), got {phi}")
    states = _optim.stepped_states(optimizer, named)
    scaled = {float(p): 0.0 for p in phis}
    rows, hists = _optim.state_stats(states, rho_threshold, HIST_LO, HIST_HI, HIST_BINS, list(scaled))
    col = {f: k for k, f in enumerate(_optim.STAT_FIELDS)}
    tot = np.zeros(rows.shape[1])
    for r in rows:  # in tensor order
        tot += r
    n, n_zero, n_above = (int(tot[col[f]]) for f in ("n", "n_zero_v", "n_rho_above"))
    s_abs_u, s_abs_u_e, s_e = (float(tot[col[f]]) for f in ("sum_abs_u", "sum_abs_u_elast", "sum_elast"))
    min_rho = float(min(rows[:, col["min_rho"]].min(), np.inf))
    max_rho = float(max(rows[:, col["max_rho"]].max(), 0.0))
    hist = hists.sum(axis=0)
    per_tensor = []
    for s, r in zip(states, rows):
        per_tensor.append(
            {
                "name": s.name,
                "n": int(r[col["n"]]),
                "frac_rho_above": float(r[col["n_rho_above"]] / max(r[col["n"]], 1)),
                "elasticity": float(r[col["sum_abs_u_elast"]] / r[col["sum_abs_u"]])
                if r[col["sum_abs_u"]] > 0
                else float("nan"),
            }
        )
    for k, phi in enumerate(scaled):
        scaled[phi] = float(tot[len(_optim.STAT_FIELDS) + k])
    return RewardScaleReport(
        n=n,
        n_zero_v=n_zero,
        frac_rho_above=n_above / max(n, 1),
        elasticity=s_abs_u_e / s_abs_u if s_abs_u > 0 else float("nan"),
        mean_elasticity=s_e / max(n, 1),
        min_rho=min_rho,
        max_rho=max_rho,
        predicted_step_ratio={p: (v / s_abs_u if s_abs_u > 0 else float("nan")) for p, v in scaled.items()},
        log10_rho_hist=hist,
        per_tensor=per_tensor,
        rho_threshold=float(rho_threshold),
        eps=states[0].eps,
        sigma_in_alpha=sigma_in_alpha,
        regulariser_share=regulariser_share,
    )


def rho_per_coordinate(optimizer: Any, *, named: Any = None) -> Dict[str, Tuple[Any, Any]]:
    """Per parameter tensor, (ρ, ρ/(1+ρ)) per coordinate as float64 tensors of the parameter's shape,
    on the device of its optimizer state (computed there; nothing per coordinate is copied): ρ = ϵ/√v̂ (+inf
    where v = 0) and the elasticity of that coordinate's step to a global reward
    scale at φ = 1. Keyed by parameter name (``named``: a module or named_parameters() pairs)."""
    out = {}
    for s in _optim.stepped_states(optimizer, named):
        rho, elasticity = _optim.rho(s)
        out[s.name] = (rho.reshape(s.param.shape), elasticity.reshape(s.param.shape))
    return out


def regulariser_share(params: Any, advantage_loss: Any, regulariser_loss: Any) -> Dict[str, float]:
    """‖g_R‖ / ‖g_A‖ and cos(g_A, g_R) for the two parts of a loss (Eq. 21–22).

    ``advantage_loss`` and ``regulariser_loss`` are scalar tensors of one graph (the policy term and
    β·R as your loss adds them); ``params`` the parameters to differentiate (a module or iterable).
    The graph is kept (``retain_graph=True``) so the caller can still call ``backward``.
    """
    import torch

    params = [p for p in (params.parameters() if hasattr(params, "parameters") else params) if p.requires_grad]
    if not params:
        raise ValueError("params: no parameter requires grad")
    ga = torch.autograd.grad(advantage_loss, params, retain_graph=True, allow_unused=True)
    gr = torch.autograd.grad(regulariser_loss, params, retain_graph=True, allow_unused=True)
    na = nr = dot = 0.0
    for a, r in zip(ga, gr):
        if a is not None:
            na += float((a.double() ** 2).sum())
        if r is not None:
            nr += float((r.double() ** 2).sum())
        if a is not None and r is not None:
            dot += float((a.double() * r.double()).sum())
    na, nr = na**0.5, nr**0.5
    return {
        "share": nr / na if na > 0 else float("inf") if nr > 0 else 0.0,
        "cos": dot / (na * nr) if na > 0 and nr > 0 else float("nan"),
        "norm_advantage": na,
        "norm_regulariser": nr,
    }


@dataclass(repr=False)
class ReplayReport(Report):
    """Replay of the same optimizer steps with rewards × φ, against the prediction.

    ``measured_ratio`` = ‖Δθ(φ)‖/‖Δθ(1)‖ (total displacement over the replayed steps),
    ``predicted_ratio`` the same for the prediction Δθ_pred(φ) = Σ_t [−lr·u_t·(1+ρ_t)/(1+ρ_t/φ)] +
    the φ = 1 run's weight decay, built from the φ = 1 run's own states (exact for Adam when the
    gradient is φ times the φ = 1 gradient, i.e. β = 0). ``prediction_error`` = ‖Δθ(φ) −
    Δθ_pred(φ)‖/‖Δθ(φ)‖; ``invariance_error`` = ‖Δθ(φ) − Δθ(1)‖/‖Δθ(φ)‖ is Prop. 2's claim
    (0 when the step does not depend on φ). ``displacement_1`` / ``displacement_phi`` /
    ``displacement_pred`` hold the flat displacement vectors (NumPy).
    """

    phi: float
    steps: int
    measured_ratio: float
    predicted_ratio: float
    prediction_error: float
    invariance_error: float
    displacement_1: np.ndarray
    displacement_phi: np.ndarray
    displacement_pred: np.ndarray
    title = "Reward-scale replay"
    n_panels = 1

    def to_dict(self) -> Dict[str, Any]:
        return {
            "phi": self.phi,
            "steps": self.steps,
            "measured_ratio": self.measured_ratio,
            "predicted_ratio": self.predicted_ratio,
            "prediction_error": self.prediction_error,
            "invariance_error": self.invariance_error,
        }

    def _lines(self) -> List[str]:
        return [
            f"rewards × {self.phi:g} over {self.steps} optimizer step(s)",
            f"‖Δθ(φ)‖/‖Δθ(1)‖: measured {fmt(self.measured_ratio)}, predicted from ρ {fmt(self.predicted_ratio)}",
            f"relative error of the prediction: {fmt(self.prediction_error)}; of 'invariant' (Prop. 2): "
            f"{fmt(self.invariance_error)}",
        ]

    def _plot(self, axes: Any) -> None:
        (ax,) = axes
        ax.scatter(self.displacement_pred, self.displacement_phi, s=4)
        lim = float(np.max(np.abs(np.concatenate([self.displacement_pred, self.displacement_phi])))) or 1.0
        ax.plot([-lim, lim], [-lim, lim], "k--", lw=0.6)
        ax.set_xlabel("predicted Δθ(φ)")
        ax.set_ylabel("replayed Δθ(φ)")


def _clone_optimizer(optimizer: Any, model_copy: Any, model: Any) -> Any:
    """A new optimizer of the same class over the copied parameters, with the original's state."""
    index = {id(p): i for i, p in enumerate(model.parameters())}
    copies = list(model_copy.parameters())
    groups = []
    for g in optimizer.param_groups:
        try:
            params = [copies[index[id(p)]] for p in g["params"]]
        except KeyError:
            raise ValueError("optimizer: it optimizes parameters that are not in model") from None
        groups.append({**{k: v for k, v in g.items() if k != "params"}, "params": params})
    new = type(optimizer)(groups)
    new.load_state_dict(copy.deepcopy(optimizer.state_dict()))
    return new


def reward_scale_replay(
    model: Any,
    optimizer: Any,
    loss_fn: Callable[[Any, float], Any],
    phi: float = 10.0,
    steps: int = 1,
) -> ReplayReport:
    """Replays ``steps`` optimizer steps on copies of ``model`` and ``optimizer`` with rewards × 1 and
    rewards × φ, and compares the φ run's displacement with the prediction from ρ.

    ``loss_fn(model, phi)`` returns the scalar loss of a step with every reward multiplied by
    ``phi`` (it may keep its own step counter for a sequence of batches: it is called ``steps``
    times per run, φ = 1 first). The copied optimizer's moments are scaled (m·φ, v·φ²: Prop. 6) so
    the φ run is what training with rewards × φ from the start would have produced. The originals
    are not modified.
    """
    import torch

    if not phi > 0:
        raise ValueError(f"phi: expected a reward scale > 0 (a negative scale reverses every step), got {phi}")
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: expected an integer >= 1, got {steps!r}")
    _optim.check_adam(optimizer)

    def run(scale: float, record: bool):
        m = copy.deepcopy(model)
        opt = _clone_optimizer(optimizer, m, model)
        for st in opt.state.values():
            if "exp_avg" in st:
                st["exp_avg"].mul_(scale)
                st["exp_avg_sq"].mul_(scale * scale)
        params = [p for p in m.parameters()]
        start = [p.detach().clone() for p in params]
        pred = [torch.zeros_like(p, dtype=torch.float64) for p in params]
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(m, scale)
            loss.backward()
            before = [p.detach().clone() for p in params]
            opt.step()
            if record:
                by_param = {id(s.param): s for s in _optim.param_states(opt)}
                for k, p in enumerate(params):
                    s = by_param.get(id(p))
                    if s is None or not s.has_state or s.step < 1:
                        continue
                    u_phi = _optim.preconditioned_update(s, phi).reshape(p.shape)
                    wd = s.lr * s.weight_decay * before[k].double() if s.decoupled else 0.0
                    pred[k] += -s.lr * u_phi - wd
        disp = torch.cat([(p.detach() - s0).double().reshape(-1) for p, s0 in zip(params, start)])
        return disp, torch.cat([q.reshape(-1) for q in pred])

    d1, pred = run(1.0, True)
    dphi, _ = run(float(phi), False)
    n1, nphi, npred = float(d1.norm()), float(dphi.norm()), float(pred.norm())
    return ReplayReport(
        phi=float(phi),
        steps=steps,
        measured_ratio=nphi / n1 if n1 > 0 else float("nan"),
        predicted_ratio=npred / n1 if n1 > 0 else float("nan"),
        prediction_error=float((dphi - pred).norm()) / nphi if nphi > 0 else float("nan"),
        invariance_error=float((dphi - d1).norm()) / nphi if nphi > 0 else float("nan"),
        displacement_1=d1.numpy(),
        displacement_phi=dphi.numpy(),
        displacement_pred=pred.numpy(),
    )
