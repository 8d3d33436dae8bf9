from typing import Any

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

def estimator_advantages(
    rewards: Any,
    group_ids: Any,
    reward_weights: Any,
    mask: Any,
    lengths: Any,
    baseline_rewards: Any,
    logp: Any,
    ref_logp: Any,
    sum_pi_squared: Any,
    is_weights: Any,
    out: Any,
    returns: Any,
    estimator: str,
    group_size: int,
    baseline: str,
    std: str,
    std_scope: str,
    epsilon: float,
    batch_norm: str,
    final_epsilon: float,
    gamma: float,
    f_norm: float,
    handle_zero_tail: bool,
    otb_epsilon: float,
    reward_clip_min: float,
    reward_clip_max: float,
    beta: float,
) -> None: ...
def importance_metric_names() -> list[str]: ...
def importance_weights(
    trainer_logp: Any,
    sampler_logp: Any,
    mask: Any,
    weights: Any,
    metrics: Any,
    level: str,
    mode: str,
    clip_min: float,
    clip_max: float,
    log_clamp: float,
    batch_normalize: bool,
) -> None: ...
def rejection_metric_names(criteria: list[str]) -> list[str]: ...
def rejection_mask(
    trainer_logp: Any,
    sampler_logp: Any,
    mask: Any,
    keep: Any,
    metrics: Any,
    criteria: list[str],
    lower: list[float],
    upper: list[float],
) -> None: ...
