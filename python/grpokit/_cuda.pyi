from typing import Any, List, Tuple

__version__: str

def device_count() -> Tuple[int, str]: ...
def build_info() -> str: ...
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

def token_logprobs(
    logits: Any,
    token_ids: Any,
    logp: Any,
    entropy: Any,
    lse: Any,
    temperature: float,
    sum_sq_probs: Any = None,
    stream: int = 0,
) -> None: ...
def token_logprobs_backward(
    logits: Any,
    token_ids: Any,
    lse: Any,
    entropy: Any,
    grad_logp: Any,
    grad_entropy: Any,
    grad_logits: Any,
    temperature: float,
    stream: int = 0,
) -> None: ...
def policy_loss(
    spec: dict,
    logp: Any,
    old_logp: Any,
    advantages: Any,
    mask: Any,
    ref_logp: Any,
    entropies: Any,
    sampling_logp: Any,
    cu_seqlens: Any,
    keep: Any,
    token_weights: Any,
    loss: Any,
    grad_logp: Any,
    grad_entropy: Any,
    per_token: Any,
    weights: Any,
    metrics: Any,
    num_threads: int = 0,
    stream: int = 0,
    workspace: Any = None,
    status: Any = None,
) -> None: ...
def loss_metric_names(spec: dict, has_entropies: bool, has_sampling_logp: bool) -> list[str]: ...
def loss_has_entropy_grad(spec: dict, has_entropies: bool) -> bool: ...
def validate_loss_spec(spec: dict) -> None: ...
def loss_spec_enum_values(name: str) -> list[str]: ...
def loss_workspace_size(num_rows: int) -> int: ...
def linear_workspace_bytes(
    hidden: Any, weight: Any, token_ids: Any, chunk_size: int, backward: bool, stream: int = 0
) -> int: ...
def linear_token_logprobs(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    logp: Any,
    entropy: Any,
    lse: Any,
    workspace: Any,
    temperature: float,
    chunk_size: int,
    sum_sq_probs: Any = None,
    stream: int = 0,
) -> None: ...
def linear_token_logprobs_backward(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    lse: Any,
    entropy: Any,
    grad_logp: Any,
    grad_entropy: Any,
    grad_hidden: Any,
    grad_weight: Any,
    workspace: Any,
    temperature: float,
    chunk_size: int,
    stream: int = 0,
) -> None: ...
def adam_workspace_size(n: int) -> int: ...
def adam_state_stats_into(
    exp_avg: Any,
    exp_avg_sq: Any,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    rho_threshold: float,
    hist_lo: float,
    hist_hi: float,
    phis: List[float],
    out_stats: Any,
    out_hist: Any,
    workspace: Any = None,
    stream: int = 0,
) -> None: ...
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
    stream: int = 0,
) -> None: ...
def adam_rho(
    exp_avg_sq: Any,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    out_rho: Any,
    out_elasticity: Any,
    stream: int = 0,
) -> None: ...
def adam_step_split_into(
    exp_avg: Any,
    exp_avg_sq: Any,
    grad: Any,
    param: Any,
    l2: float,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    out: Any,
    workspace: Any = None,
    stream: int = 0,
) -> None: ...
# Advantage estimators and train–inference corrections (cuda/estimators.cu, cuda/corrections.cu);
# the same signatures as grpokit._core's.
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
    workspace: Any = None,
    stream: int = 0,
) -> None: ...
def estimator_workspace_size(estimator: str, num_rows: int, num_tokens: int) -> int: ...
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
    workspace: Any = None,
    stream: int = 0,
) -> None: ...
def importance_workspace_size(num_rows: int) -> int: ...
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
    workspace: Any = None,
    stream: int = 0,
) -> None: ...
def rejection_workspace_size(num_rows: int, num_criteria: int) -> int: ...
