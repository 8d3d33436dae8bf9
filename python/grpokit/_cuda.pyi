from typing import Tuple

__version__: str

# The ops both modules bind with the same code and signature (ops.hpp's Backend, filled per device).
from grpokit._core import (
    policy_loss as policy_loss,
    advantages as advantages,
    token_logprobs as token_logprobs,
    token_logprobs_backward as token_logprobs_backward,
    loss_metric_names as loss_metric_names,
    loss_has_entropy_grad as loss_has_entropy_grad,
    validate_loss_spec as validate_loss_spec,
    loss_spec_enum_values as loss_spec_enum_values,
    linear_workspace_bytes as linear_workspace_bytes,
    linear_token_logprobs as linear_token_logprobs,
    linear_token_logprobs_backward as linear_token_logprobs_backward,
    adam_workspace_size as adam_workspace_size,
    adam_state_stats_into as adam_state_stats_into,
    adam_update as adam_update,
    adam_rho as adam_rho,
    adam_step_split_into as adam_step_split_into,
    estimator_advantages as estimator_advantages,
    estimator_workspace_size as estimator_workspace_size,
    importance_metric_names as importance_metric_names,
    importance_weights as importance_weights,
    importance_workspace_size as importance_workspace_size,
    rejection_metric_names as rejection_metric_names,
    rejection_mask as rejection_mask,
    rejection_workspace_size as rejection_workspace_size,
)

def device_count() -> Tuple[int, str]: ...
def build_info() -> str: ...
def cublas_built() -> bool: ...
def loss_workspace_size(num_rows: int) -> int: ...
