"""The surrogate's value is not progress (Prop. 4, Eq. 8–11): what the logged loss number measures."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Optional

import numpy as np

from .. import _core
from . import _inputs
from ._report import Report, fmt


@dataclass(repr=False)
class LossDecomposition(Report):
    """J = reward part + ratio part − regulariser part, per group (``*_part`` arrays) and in total.

    * ``reward_part`` Σ_i A_i Ω_i, Ω_i = Σ_t α_{i,t}: the value at s = 1 (Eq. 8). With centred
      advantages it equals ``covariance_part`` = G·Cov_pop(A, Ω) (Eq. 11): 0 for length-normalised
      α (Case 1, Eq. 9), a length statistic C·Σ A_i|o_i| for constant α (Case 2, Eq. 10).
    * ``ratio_part`` Σ α (min(sA, clip(s)A) − A): importance-ratio fluctuation (Scenario B).
    * ``regulariser_part`` β Σ α R: the only part left in Case 1.
    * ``objective`` = J, ``loss`` = −J (what a trainer logs, with α the loss's full weights).
    ``omega_sum`` (B,) holds Ω_i.
    """

    reward_part: np.ndarray
    ratio_part: np.ndarray
    regulariser_part: np.ndarray
    covariance_part: np.ndarray
    omega_sum: np.ndarray
    group_size: int
    title = "What the surrogate's value measures (Prop. 4)"
    n_panels = 1

    @property
    def objective(self) -> float:
        return float(np.sum(self.reward_part) + np.sum(self.ratio_part) - np.sum(self.regulariser_part))

    @property
    def loss(self) -> float:
        return -self.objective

    @property
    def omega_constant(self) -> bool:
        """Ω_i equal within every group (to rounding): Case 1, the reward part cancels exactly."""
        om = self.omega_sum.reshape(-1, self.group_size)
        spread = np.max(np.abs(om - om[:, :1]), axis=1)
        return bool(np.all(spread <= 1e-12 * np.maximum(np.max(np.abs(om), axis=1), 1e-300)))

    def to_dict(self) -> Dict[str, Any]:
        return {
            "loss": self.loss,
            "reward_part": float(np.sum(self.reward_part)),
            "ratio_part": float(np.sum(self.ratio_part)),
            "regulariser_part": float(np.sum(self.regulariser_part)),
            "covariance_part": float(np.sum(self.covariance_part)),
        }

    def _lines(self) -> List[str]:
        d = self.to_dict()
        total = abs(d["reward_part"]) + abs(d["ratio_part"]) + abs(d["regulariser_part"])
        share = {
            k: (abs(d[k]) / total if total > 0 else 0.0) for k in ("reward_part", "ratio_part", "regulariser_part")
        }
        lines = [
            f"loss = −J = {fmt(d['loss'])}",
            f"  reward part Σ A_i Ω_i = {fmt(d['reward_part'])} ({fmt(share['reward_part'])} of |parts|; "
            f"G·Cov(A, Ω) = {fmt(d['covariance_part'])})",
            f"  ratio-fluctuation part = {fmt(d['ratio_part'])} ({fmt(share['ratio_part'])})",
            f"  regulariser part β Σ α R = {fmt(d['regulariser_part'])} ({fmt(share['regulariser_part'])})",
        ]
        if self.omega_constant:
            lines.append(
                "verdict: the reward part cancels (Case 1): the value shows only the regulariser and "
                "ratio noise, not reward progress"
            )
        elif total > 0:
            lines.append(
                "verdict: the reward part is an advantage/weight covariance (a length statistic for "
                "constant α), not a measure of policy quality"
            )
        return lines

    def _plot(self, axes: Any) -> None:
        (ax,) = axes
        g = np.arange(self.reward_part.shape[0])
        ax.bar(g - 0.25, self.reward_part, 0.25, label="reward part")
        ax.bar(g, self.ratio_part, 0.25, label="ratio part")
        ax.bar(g + 0.25, -self.regulariser_part, 0.25, label="−regulariser part")
        ax.set_xlabel("group")
        ax.set_ylabel("contribution to J")
        ax.legend(fontsize=7)


def loss_decomposition(
    alpha: Any,
    advantages: Any,
    group_size: int,
    *,
    ratios: Any = None,
    mask: Any = None,
    reg: Any = None,
    beta: float = 0.0,
    epsilon: Optional[float] = None,
    epsilon_high: Optional[float] = None,
) -> LossDecomposition:
    """Decompose J = Σ_i Σ_t α_{i,t} min(s A_i, clip(s) A_i) − β Σ α R into its parts (Eq. 8–11).

    Args:
        alpha: (B, T) effective per-token weights at s = 1 (weight rule × aggregation normaliser).
        advantages: (B,) as the loss received them.
        group_size: completions per prompt (contiguous groups).
        ratios: (B, T) importance ratios s (default 1: the first inner step, Scenario A).
        mask: (B, T) valid tokens (bool/int/float, nonzero = valid).
        reg: (B, T) per-token regulariser values R_{i,t} (e.g. k3 KL), weighted by α and ``beta``.
        epsilon, epsilon_high: clip widths (ε_low, ε_high); ``None``: no clipping.
    """
    a = _inputs.host(alpha, "alpha")
    adv = _inputs.host(advantages, "advantages")
    B = _inputs.shape_of(a)[0] if len(_inputs.shape_of(a)) else 0
    g = _inputs.check_group_size(group_size, B)
    if epsilon_high is not None and epsilon is None:
        raise ValueError("epsilon: give the lower clip width too (epsilon_high alone is ambiguous)")
    eps_low = -1.0 if epsilon is None else float(epsilon)
    eps_high = eps_low if epsilon_high is None else float(epsilon_high)
    out_group = np.empty((B // g, 4), np.float64)
    omega_sum = np.empty((B,), np.float64)
    _core.loss_decomposition(
        a,
        _inputs.host(ratios, "ratios"),
        _inputs.host(reg, "reg"),
        _inputs.host(mask, "mask", default="bool"),
        adv,
        g,
        eps_low,
        eps_high,
        out_group,
        omega_sum,
    )
    return LossDecomposition(
        reward_part=out_group[:, 0].copy(),
        ratio_part=out_group[:, 1].copy(),
        regulariser_part=float(beta) * out_group[:, 2],
        covariance_part=out_group[:, 3].copy(),
        omega_sum=omega_sum,
        group_size=g,
    )
