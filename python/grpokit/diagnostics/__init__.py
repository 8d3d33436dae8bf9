"""Optimizer-state-aware diagnostics of GRPO's hidden biases ("On the Hidden Objective Biases of
Group-based RL", arXiv:2601.05002; docs/diagnostics.md).

* Shared-prefix bias (Prop. 1): :func:`prefix_bias_from_weights` (per-token weights ω given) and
  :func:`prefix_bias` (ω from ``grpokit.policy_loss(..., return_weights=True)`` for a preset).
* Reward scale under Adam (Props 2, 5, 6): :func:`reward_scale` (ρ = ϵ/√v̂ from the optimizer's
  real state), :func:`rho_per_coordinate`, :func:`regulariser_share`, :func:`reward_scale_replay`.
* Momentum past the clip region (Props 3, 7): :func:`clip_region`, :class:`MomentumTracker` (per
  inner step of the μ-step loop), :func:`momentum_lookahead`, and the closed forms
  :func:`overshoot_coefficient` (Eq. 32–37), :func:`predicted_drift`, :func:`overshoot_eps_factor`.
* The surrogate's value (Prop. 4): :func:`loss_decomposition`.

Every result is a :class:`Report`: ``print(report)`` for a readable summary, ``report.to_dict()``
for logging, ``report.plot()`` for a matplotlib figure; :class:`Combined` shows several together.
Conventions: advantages as the loss receives them (A > 0 favours a completion), W in the ascent
convention (positive W raises the prefix's probability), Adam as torch.optim.Adam/AdamW defines it.
"""

from ._momentum import (
    ClipRegion,
    LookAheadReport,
    MomentumReport,
    MomentumTracker,
    StepRecord,
    clip_region,
    momentum_lookahead,
    overshoot_coefficient,
    overshoot_eps_factor,
    predicted_drift,
    reward_scale_elasticity,
)
from ._prefix import PrefixBiasReport, prefix_bias, prefix_bias_from_weights
from ._report import Combined, Report
from ._scale import (
    ReplayReport,
    RewardScaleReport,
    regulariser_share,
    reward_scale,
    reward_scale_replay,
    rho_per_coordinate,
)
from ._value import LossDecomposition, loss_decomposition

__all__ = [
    "ClipRegion",
    "Combined",
    "LookAheadReport",
    "LossDecomposition",
    "MomentumReport",
    "MomentumTracker",
    "PrefixBiasReport",
    "ReplayReport",
    "Report",
    "RewardScaleReport",
    "StepRecord",
    "clip_region",
    "loss_decomposition",
    "momentum_lookahead",
    "overshoot_coefficient",
    "overshoot_eps_factor",
    "predicted_drift",
    "prefix_bias",
    "prefix_bias_from_weights",
    "regulariser_share",
    "reward_scale",
    "reward_scale_elasticity",
    "reward_scale_replay",
    "rho_per_coordinate",
]
