"""Override names: TRL's GRPOConfig names, verl's and a few of ROLL's, prime-rl's and AReaL's, each
mapped to the LossSpec fields it sets.

``ALIASES[name](value)`` gives the fields; listed in docs/losses.md.
"""

from __future__ import annotations

from typing import Any, Dict, Mapping

_VERL_AGG = {
    "token-mean": dict(aggregation="token_mean"),
    "token-sum": dict(aggregation="token_sum"),
    "seq-mean-token-sum": dict(aggregation="seq_mean_token_sum", seq_count_nonempty=True),
    "seq-mean-token-mean": dict(aggregation="seq_mean_token_mean", seq_count_nonempty=True),
    "seq-mean-token-sum-norm": dict(aggregation="seq_mean_token_sum_norm", seq_count_nonempty=True),
}
_VERL_KL = {"kl": "k1", "k1": "k1", "mse": "k2", "k2": "k2", "low_var_kl": "k3", "k3": "k3", "abs": "abs"}


def _verl_kl(name: str) -> Dict[str, Any]:
    st = name.endswith("+")
    base = name[:-1] if st else name
    if base not in _VERL_KL:
        raise ValueError(
            f"kl_loss_type: expected one of {sorted(_VERL_KL)} (optionally with a '+' suffix), got {name!r}"
        )
    return dict(kl=_VERL_KL[base], kl_straight_through=st)


def _is_level(v: str) -> Dict[str, Any]:
    if v not in ("token", "sequence"):
        raise ValueError(f"importance_sampling_level: expected 'token' or 'sequence', got {v!r}")
    return dict(ratio=v)


def _vllm_correction(v: bool) -> Dict[str, Any]:
    return {} if v else dict(sampler_is="none")


ALIASES = {
    # TRL GRPOConfig
    "epsilon": lambda v: dict(epsilon_low=v),
    "importance_sampling_level": _is_level,
    "use_bias_correction_kl": lambda v: dict(kl_is_corrected=bool(v)),
    "vllm_importance_sampling_mode": lambda v: dict(sampler_is=v),
    "vllm_importance_sampling_correction": _vllm_correction,
    "vllm_importance_sampling_clip_min": lambda v: dict(is_min=v),
    "vllm_importance_sampling_clip_max": lambda v: dict(is_max=v),
    "num_processes": lambda v: dict(dp_size=v),
    "num_generations": lambda v: dict(group_size=v),
    # verl
    "clip_ratio": lambda v: dict(epsilon_low=v, epsilon_high=v),
    "clip_ratio_low": lambda v: dict(epsilon_low=v),
    "clip_ratio_high": lambda v: dict(epsilon_high=v),
    "kl_loss_coef": lambda v: dict(beta=v),
    "kl_loss_type": _verl_kl,
    "loss_agg_mode": lambda v: dict(_VERL_AGG[v]) if v in _VERL_AGG else _bad("loss_agg_mode", v, _VERL_AGG),
    "entropy_coeff": lambda v: dict(entropy_coef=v),
    "loss_scale_factor": lambda v: dict(max_completion_length=v),
    "batch_num_tokens": lambda v: dict(num_items_in_batch=v),
    "global_batch_size": lambda v: dict(num_sequences=v),
    "tau_pos": lambda v: dict(sapo_temperature_pos=v),
    "tau_neg": lambda v: dict(sapo_temperature_neg=v),
    "rollout_is_threshold": lambda v: dict(epsilon_high=v),
    "rollout_is": lambda v: dict(ratio=_ROLLOUT_IS[v]) if v in _ROLLOUT_IS else _bad("rollout_is", v, _ROLLOUT_IS),
    "gamma": lambda v: dict(prune_threshold=v),  # the paper's CPPO γ
    # ROLL, prime-rl, AReaL
    "cispo_use_unified_mask": lambda v: dict(trust_region="ppo" if v else "none"),
    "ipo_threshold": lambda v: dict(epsilon_low=v, epsilon_high=v),
    "kl_tau": lambda v: dict(dro_beta=2.0 * v),  # prime-rl's τ·(log r)² is DRO's ½·dro_beta·(log r)²
    "eps_clip": lambda v: dict(epsilon_low=v),
    "eps_clip_higher": lambda v: dict(epsilon_high=v),
    "c_clip": lambda v: dict(clip_ratio_c=v),
}


# verl bypass REINFORCE's IS weight w = min(exp(clamp(·, ±20)), C), detached: of each token's log-ratio
# against the rollout log-probs ("token"), or of the row's sum ("sequence": the product of the token ratios).
_ROLLOUT_IS = {"token": "token", "sequence": "sequence_sum"}


def _bad(name: str, v: Any, valid: Mapping) -> Dict[str, Any]:
    raise ValueError(f"{name}: expected one of {sorted(valid)}, got {v!r}")
