from typing import Any, Dict, List

__version__: str

def cpu_simd_level() -> str: ...
def cpu_max_threads() -> int: ...

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
    selection: Any,
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
def loss_spec_fields() -> List[Dict[str, Any]]: ...
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
# ---- stationary policies (bind_stationary.cpp; see grpokit.stationary) ----
import numpy as np
from typing import List, Tuple

class StationaryModel:
    @property
    def num_outputs(self) -> int: ...
    @property
    def num_atoms(self) -> int: ...
    @property
    def atom_of(self) -> List[int]: ...
    @property
    def exact(self) -> bool: ...
    @property
    def num_terms(self) -> float: ...
    def describe(self) -> str: ...
    def preference(self, pi: np.ndarray) -> np.ndarray: ...
    def preference_monte_carlo(self, pi: np.ndarray, samples: int, seed: int) -> Tuple[np.ndarray, np.ndarray]: ...

class StationaryEquilibrium:
    pi: np.ndarray
    stable: bool
    boundary: bool

class StationaryResult:
    pi: np.ndarray
    converged: bool
    residual: float
    fixed_point_residual: float
    iterations: int
    stages: int
    method: str
    message: str
    stable: bool
    stability_known: bool
    boundary: bool
    equilibria: List[StationaryEquilibrium]
    preference_std_error: float

def stationary_model_rewards(
    rewards: np.ndarray, G: int, normalisation: str, std_ddof: int, std_eps: float, max_terms: int
) -> StationaryModel: ...
def stationary_model_pairwise(pairwise: np.ndarray) -> StationaryModel: ...
def stationary_model_nlhf(preference_matrix: np.ndarray) -> StationaryModel: ...
def stationary_solve(
    model: StationaryModel, pi_ref: np.ndarray, beta: float, method: str, penalty: str, tol: float,
    max_iter: int, beta_start: float, beta_factor: float, samples: int = 20000, mc_rounds: int = 8,
    mc_tol: float = 2e-3, seed: int = 0,
) -> StationaryResult: ...
def stationary_flow(
    model: StationaryModel, pi_ref: np.ndarray, beta: float, penalty: str, inner_steps: int, step: float,
    rtol: float, tol: float, max_steps: int,
) -> StationaryResult: ...
def stationary_equilibria(
    model: StationaryModel, pi_ref: np.ndarray, beta: float, penalty: str
) -> List[StationaryEquilibrium]: ...
def stationary_residuals(
    model: StationaryModel, pi: np.ndarray, pi_ref: np.ndarray, beta: float, penalty: str
) -> Tuple[np.ndarray, np.ndarray]: ...
def stationary_binary(p: np.ndarray, beta: float, G: int, penalty: str, gamma: float) -> np.ndarray: ...
def stationary_binary_phi(x: float, G: int) -> float: ...
def stationary_log_pooling(rewards: np.ndarray, pi_ref: np.ndarray, beta: float) -> np.ndarray: ...
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
