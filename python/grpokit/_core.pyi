# Types of grpokit._core (the CPU engine), checked against the built module by mypy.stubtest
# (scripts/test.sh). Arrays are anything the bindings import: NumPy arrays or DLPack producers
# (torch, CuPy, JAX); None where an input is optional or an output is not wanted.
from typing import Dict, List, Optional, Protocol, Tuple, TypedDict, Union

import numpy as np

class _DLPackArray(Protocol):
    def __dlpack__(self) -> object: ...
    def __dlpack_device__(self) -> Tuple[int, int]: ...

_Array = Union[np.ndarray, _DLPackArray]
_Opt = Optional[_Array]
_Spec = Dict[str, object]  # LossSpec.engine_fields()

__version__: str

def cpu_simd_level() -> str: ...
def cpu_max_threads() -> int: ...
def advantages(
    rewards: _Array,
    group_ids: _Opt,
    out: _Array,
    group_size: int,
    baseline: str,
    std: str,
    std_scope: str,
    epsilon: float,
    stream: int = 0,
) -> None: ...
def policy_loss(
    spec: _Spec,
    logp: _Array,
    old_logp: _Opt,
    advantages: _Array,
    mask: _Opt,
    ref_logp: _Opt,
    entropies: _Opt,
    sampling_logp: _Opt,
    cu_seqlens: _Opt,
    keep: _Opt,
    token_weights: _Opt,
    selection: _Opt,
    loss: _Array,
    grad_logp: _Array,
    grad_entropy: _Opt,
    per_token: _Opt,
    weights: _Opt,
    metrics: _Array,
    num_threads: int = 0,
    stream: int = 0,
    workspace: _Opt = None,
    status: _Opt = None,
) -> None: ...
def loss_metric_names(spec: _Spec, has_entropies: bool, has_sampling_logp: bool) -> list[str]: ...
def loss_has_entropy_grad(spec: _Spec, has_entropies: bool) -> bool: ...
def validate_loss_spec(spec: _Spec) -> None: ...
def loss_spec_enum_values(name: str) -> list[str]: ...
def loss_spec_fields() -> List[Dict[str, object]]: ...
def token_logprobs(
    logits: _Array,
    token_ids: _Array,
    logp: _Array,
    entropy: _Opt,
    lse: _Array,
    temperature: float,
    sum_sq_probs: _Opt = None,
    stream: int = 0,
) -> None: ...
def token_logprobs_backward(
    logits: _Array,
    token_ids: _Array,
    lse: _Array,
    entropy: _Opt,
    grad_logp: _Opt,
    grad_entropy: _Opt,
    grad_logits: _Array,
    temperature: float,
    stream: int = 0,
) -> None: ...
def token_logprobs_kl(
    logits: _Array,
    ref_logits: _Array,
    token_ids: _Array,
    logp: _Array,
    entropy: _Array,
    kl: _Array,
    lse: _Array,
    ref_lse: _Array,
    temperature: float,
    stream: int = 0,
) -> None: ...
def token_logprobs_kl_backward(
    logits: _Array,
    ref_logits: _Array,
    token_ids: _Array,
    lse: _Array,
    ref_lse: _Array,
    entropy: _Array,
    kl: _Array,
    grad_logp: _Opt,
    grad_entropy: _Opt,
    grad_kl: _Opt,
    grad_logits: _Array,
    temperature: float,
    stream: int = 0,
) -> None: ...
def token_logprobs_sampler(
    logits: _Array,
    token_ids: _Array,
    logp: _Array,
    entropy: _Opt,
    lse: _Array,
    kept_logmass: _Array,
    keep_min: _Array,
    temperature: float,
    top_k: _Opt,
    top_p: _Opt,
    min_p: _Opt,
    convention: str,
    entropy_over_kept: bool,
    stream: int = 0,
) -> None: ...
def token_logprobs_sampler_backward(
    logits: _Array,
    token_ids: _Array,
    lse: _Array,
    kept_logmass: _Array,
    keep_min: _Array,
    entropy: _Opt,
    grad_logp: _Opt,
    grad_entropy: _Opt,
    grad_logits: _Array,
    temperature: float,
    entropy_over_kept: bool,
    stream: int = 0,
) -> None: ...
def token_logprobs_keep(
    logits: _Array,
    token_ids: _Array,
    logp: _Array,
    entropy: _Opt,
    lse: _Array,
    kept_logmass: _Array,
    temperature: float,
    keep_ids: _Array,
    keep_offsets: _Array,
    entropy_over_kept: bool,
    stream: int = 0,
) -> None: ...
def token_logprobs_keep_backward(
    logits: _Array,
    token_ids: _Array,
    lse: _Array,
    kept_logmass: _Array,
    entropy: _Opt,
    grad_logp: _Opt,
    grad_entropy: _Opt,
    grad_logits: _Array,
    temperature: float,
    keep_ids: _Array,
    keep_offsets: _Array,
    entropy_over_kept: bool,
    stream: int = 0,
) -> None: ...
def linear_token_logprobs_sampler(
    hidden: _Array,
    weight: _Array,
    token_ids: _Array,
    logp: _Array,
    entropy: _Opt,
    lse: _Array,
    kept_logmass: _Array,
    keep_min: _Array,
    temperature: float,
    top_k: _Opt,
    top_p: _Opt,
    min_p: _Opt,
    convention: str,
    entropy_over_kept: bool,
    stream: int = 0,
) -> None: ...
def linear_token_logprobs_sampler_backward(
    hidden: _Array,
    weight: _Array,
    token_ids: _Array,
    lse: _Array,
    kept_logmass: _Array,
    keep_min: _Array,
    entropy: _Opt,
    grad_logp: _Opt,
    grad_entropy: _Opt,
    grad_hidden: _Opt,
    grad_weight: _Opt,
    temperature: float,
    entropy_over_kept: bool,
    stream: int = 0,
) -> None: ...
def linear_token_logprobs_keep(
    hidden: _Array,
    weight: _Array,
    token_ids: _Array,
    logp: _Array,
    entropy: _Opt,
    lse: _Array,
    kept_logmass: _Array,
    temperature: float,
    keep_ids: _Array,
    keep_offsets: _Array,
    entropy_over_kept: bool,
    stream: int = 0,
) -> None: ...
def linear_token_logprobs_keep_backward(
    hidden: _Array,
    weight: _Array,
    token_ids: _Array,
    lse: _Array,
    kept_logmass: _Array,
    entropy: _Opt,
    grad_logp: _Opt,
    grad_entropy: _Opt,
    grad_hidden: _Opt,
    grad_weight: _Opt,
    temperature: float,
    keep_ids: _Array,
    keep_offsets: _Array,
    entropy_over_kept: bool,
    stream: int = 0,
) -> None: ...

# ---- diagnostics (CPU only; see grpokit.diagnostics) ----
def prefix_bias(
    ids: _Array,
    mask: _Opt,
    cu_seqlens: _Opt,
    advantages: _Array,
    omega: _Opt,
    group_size: int,
    node: _Array,
    count: _Array,
    coef: _Array,
    bias: _Array,
    abs_sum: _Array,
    group: _Array,
) -> None: ...

class _ClipRegionSums(TypedDict):
    n_valid: int
    n_in_region: int
    n_in_region_pos: int
    n_in_region_neg: int
    sum_excess: float
    max_excess: float
    n_in_both: int
    n_growing: int
    sum_growth: float

def clip_region(
    ratios: _Array, advantages: _Array, mask: _Opt, eps_low: float, eps_high: float, prev_excess: _Opt, out_excess: _Opt
) -> _ClipRegionSums: ...
def adam_update(
    exp_avg: _Array,
    exp_avg_sq: _Array,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    phi: float,
    momentum_only_next: bool,
    out: _Array,
    stream: int = 0,
) -> None: ...
def adam_rho(
    exp_avg_sq: _Array,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    out_rho: _Array,
    out_elasticity: _Array,
    stream: int = 0,
) -> None: ...
def adam_workspace_size(n: int) -> int: ...
def adam_state_stats_into(
    exp_avg: _Array,
    exp_avg_sq: _Array,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    rho_threshold: float,
    hist_lo: float,
    hist_hi: float,
    phis: List[float],
    out_stats: _Array,
    out_hist: _Array,
    workspace: _Opt = None,
    stream: int = 0,
) -> None: ...
def adam_step_split_into(
    exp_avg: _Array,
    exp_avg_sq: _Array,
    grad: _Array,
    param: _Opt,
    l2: float,
    beta1: float,
    beta2: float,
    eps: float,
    step: float,
    out: _Array,
    workspace: _Opt = None,
    stream: int = 0,
) -> None: ...
def loss_decomposition(
    alpha: _Array,
    ratios: _Array,
    reg: _Array,
    mask: _Opt,
    advantages: _Array,
    group_size: int,
    eps_low: float,
    eps_high: float,
    out_group: _Array,
    out_omega_sum: _Array,
) -> None: ...
def overshoot_coefficient(T: float, k: float, beta1: float, beta2: float) -> float: ...
def overshoot_limit(k: float, beta1: float, beta2: float) -> float: ...
def overshoot_eps_factor(sqrt_vhat_before: float, sqrt_vhat_after: float, eps: float) -> float: ...
def reward_scale_elasticity(rho: float) -> float: ...
def estimator_advantages(
    rewards: _Array,
    group_ids: _Opt,
    reward_weights: _Opt,
    mask: _Opt,
    lengths: _Opt,
    baseline_rewards: _Opt,
    logp: _Opt,
    ref_logp: _Opt,
    sum_pi_squared: _Opt,
    is_weights: _Opt,
    out: _Array,
    returns: _Opt,
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
    running_count: float = 0.0,
    running_mean: float = 0.0,
    running_std: float = 0.0,
    running_update: bool = True,
    workspace: _Opt = None,
    stream: int = 0,
) -> None: ...
def running_moments_merge(
    count_a: float, mean_a: float, std_a: float, count_b: float, mean_b: float, std_b: float
) -> tuple[float, float, float]: ...
def estimator_workspace_size(estimator: str, num_rows: int, num_tokens: int) -> int: ...
def importance_metric_names() -> list[str]: ...
def importance_weights(
    trainer_logp: _Array,
    sampler_logp: _Array,
    mask: _Opt,
    weights: _Opt,
    metrics: _Array,
    level: str,
    mode: str,
    clip_min: float,
    clip_max: float,
    log_clamp: float,
    batch_normalize: bool,
    geo_eps: float,
    segment_ids: _Opt = None,
    workspace: _Opt = None,
    stream: int = 0,
) -> None: ...
def importance_workspace_size(num_rows: int) -> int: ...
def rejection_metric_names(criteria: list[str]) -> list[str]: ...
def rejection_mask(
    trainer_logp: _Array,
    sampler_logp: _Array,
    mask: _Opt,
    keep: _Opt,
    metrics: _Array,
    criteria: list[str],
    lower: list[float],
    upper: list[float],
    workspace: _Opt = None,
    stream: int = 0,
) -> None: ...
def rejection_workspace_size(num_rows: int, num_criteria: int) -> int: ...
def variance_proxy_metric_names() -> list[str]: ...
def variance_proxy(
    logp: _Array,
    sum_pi_squared: _Array,
    advantages: _Array,
    mask: _Opt,
    is_weights: _Opt,
    metrics: _Array,
    gradient_norm: float,
    workspace: _Opt = None,
    stream: int = 0,
) -> None: ...
def variance_proxy_workspace_size(num_rows: int) -> int: ...

# ---- stationary policies (bind_stationary.cpp; see grpokit.stationary) ----
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
    @property
    def pi(self) -> np.ndarray: ...
    @property
    def stable(self) -> bool: ...
    @property
    def boundary(self) -> bool: ...

class StationaryResult:
    @property
    def pi(self) -> np.ndarray: ...
    @property
    def converged(self) -> bool: ...
    @property
    def residual(self) -> float: ...
    @property
    def fixed_point_residual(self) -> float: ...
    @property
    def iterations(self) -> int: ...
    @property
    def stages(self) -> int: ...
    @property
    def method(self) -> str: ...
    @property
    def message(self) -> str: ...
    @property
    def stable(self) -> bool: ...
    @property
    def stability_known(self) -> bool: ...
    @property
    def boundary(self) -> bool: ...
    @property
    def equilibria(self) -> List[StationaryEquilibrium]: ...
    @property
    def preference_std_error(self) -> float: ...

def stationary_model_rewards(
    rewards: np.ndarray, G: int, normalisation: str, std_ddof: int, std_eps: float, max_terms: int
) -> StationaryModel: ...
def stationary_model_pairwise(pairwise: np.ndarray) -> StationaryModel: ...
def stationary_model_nlhf(preference_matrix: np.ndarray) -> StationaryModel: ...
def stationary_solve(
    model: StationaryModel,
    pi_ref: np.ndarray,
    beta: float,
    method: str,
    penalty: str,
    tol: float,
    max_iter: int,
    beta_start: float,
    beta_factor: float,
    samples: int = 20000,
    mc_rounds: int = 8,
    mc_tol: float = 2e-3,
    seed: int = 0,
) -> StationaryResult: ...
def stationary_flow(
    model: StationaryModel,
    pi_ref: np.ndarray,
    beta: float,
    penalty: str,
    inner_steps: int,
    step: float,
    rtol: float,
    tol: float,
    max_steps: int,
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
    hidden: _Array, weight: _Array, token_ids: _Array, chunk_size: int, backward: bool, stream: int = 0
) -> int: ...
def linear_token_logprobs(
    hidden: _Array,
    weight: _Array,
    token_ids: _Array,
    logp: _Array,
    entropy: _Opt,
    lse: _Array,
    workspace: _Opt,
    temperature: float,
    chunk_size: int,
    sum_sq_probs: _Opt = None,
    stream: int = 0,
) -> None: ...
def linear_token_logprobs_backward(
    hidden: _Array,
    weight: _Array,
    token_ids: _Array,
    lse: _Array,
    entropy: _Opt,
    grad_logp: _Opt,
    grad_entropy: _Opt,
    grad_hidden: _Opt,
    grad_weight: _Opt,
    workspace: _Opt,
    temperature: float,
    chunk_size: int,
    stream: int = 0,
) -> None: ...
