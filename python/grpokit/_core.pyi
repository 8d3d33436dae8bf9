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

def token_logprobs(
    logits: Any,
    token_ids: Any,
    logp: Any,
    entropy: Any,
    lse: Any,
    temperature: float,
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
