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
) -> None: ...
def loss_metric_names(spec: dict, has_entropies: bool, has_sampling_logp: bool) -> list[str]: ...
def loss_has_entropy_grad(spec: dict, has_entropies: bool) -> bool: ...
def validate_loss_spec(spec: dict) -> None: ...
def loss_spec_enum_values(name: str) -> list[str]: ...
