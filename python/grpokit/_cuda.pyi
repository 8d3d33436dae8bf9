from typing import Tuple

__version__: str

# The ops both modules bind with the same code and signature (ops.hpp's Backend, filled per device).
from grpokit._core import (
    adam_rho as adam_rho,
)
from grpokit._core import (
    adam_state_stats_into as adam_state_stats_into,
)
from grpokit._core import (
    adam_step_split_into as adam_step_split_into,
)
from grpokit._core import (
    adam_update as adam_update,
)
from grpokit._core import (
    adam_workspace_size as adam_workspace_size,
)
from grpokit._core import (
    advantages as advantages,
)
from grpokit._core import (
    estimator_advantages as estimator_advantages,
)
from grpokit._core import (
    estimator_workspace_size as estimator_workspace_size,
)
from grpokit._core import (
    importance_metric_names as importance_metric_names,
)
from grpokit._core import (
    importance_weights as importance_weights,
)
from grpokit._core import (
    importance_workspace_size as importance_workspace_size,
)
from grpokit._core import (
    linear_token_logprobs as linear_token_logprobs,
)
from grpokit._core import (
    linear_token_logprobs_backward as linear_token_logprobs_backward,
)
from grpokit._core import (
    linear_token_logprobs_keep as linear_token_logprobs_keep,
)
from grpokit._core import (
    linear_token_logprobs_keep_backward as linear_token_logprobs_keep_backward,
)
from grpokit._core import (
    linear_token_logprobs_sampler as linear_token_logprobs_sampler,
)
from grpokit._core import (
    linear_token_logprobs_sampler_backward as linear_token_logprobs_sampler_backward,
)
from grpokit._core import (
    linear_workspace_bytes as linear_workspace_bytes,
)
from grpokit._core import (
    loss_has_entropy_grad as loss_has_entropy_grad,
)
from grpokit._core import (
    loss_metric_names as loss_metric_names,
)
from grpokit._core import (
    loss_spec_enum_values as loss_spec_enum_values,
)
from grpokit._core import (
    loss_spec_fields as loss_spec_fields,
)
from grpokit._core import (
    policy_loss as policy_loss,
)
from grpokit._core import (
    rejection_mask as rejection_mask,
)
from grpokit._core import (
    rejection_metric_names as rejection_metric_names,
)
from grpokit._core import (
    rejection_workspace_size as rejection_workspace_size,
)
from grpokit._core import (
    running_moments_merge as running_moments_merge,
)
from grpokit._core import (
    token_logprobs as token_logprobs,
)
from grpokit._core import (
    token_logprobs_backward as token_logprobs_backward,
)
from grpokit._core import (
    token_logprobs_keep as token_logprobs_keep,
)
from grpokit._core import (
    token_logprobs_keep_backward as token_logprobs_keep_backward,
)
from grpokit._core import (
    token_logprobs_kl as token_logprobs_kl,
)
from grpokit._core import (
    token_logprobs_kl_backward as token_logprobs_kl_backward,
)
from grpokit._core import (
    token_logprobs_sampler as token_logprobs_sampler,
)
from grpokit._core import (
    token_logprobs_sampler_backward as token_logprobs_sampler_backward,
)
from grpokit._core import (
    validate_loss_spec as validate_loss_spec,
)
from grpokit._core import (
    variance_proxy as variance_proxy,
)
from grpokit._core import (
    variance_proxy_metric_names as variance_proxy_metric_names,
)
from grpokit._core import (
    variance_proxy_workspace_size as variance_proxy_workspace_size,
)

def device_count() -> Tuple[int, str]: ...
def build_info() -> str: ...
def cublas_built() -> bool: ...
def loss_workspace_size(num_rows: int) -> int: ...
