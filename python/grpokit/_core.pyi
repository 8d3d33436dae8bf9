from typing import Any, Dict, List

__version__: str

def advantages(
    rewards: Any,
    group_ids: Any,
    out: Any,
    group_size: int,
    baseline: str,
    std: str,
    std_scope: str,
    epsilon: float,
    stream: int = 0,
) -> None: ...

# ---- diagnostics (CPU only; see grpokit.diagnostics) ----
def prefix_bias(
    ids: Any,
    mask: Any,
    cu_seqlens: Any,
    advantages: Any,
    omega: Any,
    group_size: int,
    node: Any,
    count: Any,
    coef: Any,
    bias: Any,
    abs_sum: Any,
    group: Any,
) -> None: ...
def clip_region(
    ratios: Any, advantages: Any, mask: Any, eps_low: float, eps_high: float, prev_excess: Any, out_excess: Any
) -> Dict[str, Any]: ...
def adam_state_stats(
    exp_avg: Any,
    exp_avg_sq: Any,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    rho_threshold: float,
    hist_lo: float,
    hist_hi: float,
    hist_bins: int,
    phis: List[float] = ...,
) -> Dict[str, Any]: ...
def adam_update(
    exp_avg: Any,
    exp_avg_sq: Any,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    phi: float,
    momentum_only_next: bool,
    out: Any,
) -> None: ...
def adam_rho(
    exp_avg_sq: Any, beta1: float, beta2: float, eps: float, step: float, out_rho: Any, out_elasticity: Any
) -> None: ...
def adam_step_split(
    exp_avg: Any, exp_avg_sq: Any, grad: Any, param: Any, l2: float, beta1: float, beta2: float, eps: float, step: float
) -> Dict[str, float]: ...
def loss_decomposition(
    alpha: Any,
    ratios: Any,
    reg: Any,
    mask: Any,
    advantages: Any,
    group_size: int,
    eps_low: float,
    eps_high: float,
    out_group: Any,
    out_omega_sum: Any,
) -> None: ...
def overshoot_coefficient(T: float, k: float, beta1: float, beta2: float) -> float: ...
def overshoot_limit(k: float, beta1: float, beta2: float) -> float: ...
def overshoot_eps_factor(sqrt_vhat_before: float, sqrt_vhat_after: float, eps: float) -> float: ...
def reward_scale_elasticity(rho: float) -> float: ...
