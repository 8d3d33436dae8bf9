"""grpokit: the GRPO family of policy losses in a C++/CUDA engine, with diagnostics of their hidden
biases (shared-prefix weighting, reward scale under AdamW, momentum past the clip region) and of what
GRPO converges to.

Arrays may be NumPy, Python sequences or any DLPack tensor (PyTorch, CuPy, JAX); results come back
as the caller's kind on the caller's device.
"""

from . import diagnostics, stationary
from ._advantages import advantages
from ._compare import Explanation, PresetComparison, compare, explain
from ._core import __version__
from ._corrections import CORRECTIONS, correction, importance_weights, rejection_mask, variance_proxy
from ._estimators import ESTIMATORS, RunningMoments
from ._estimators import PRESETS as ESTIMATOR_PRESETS
from ._linear_logprobs import linear_token_logprobs, linear_token_logprobs_backward
from ._logprobs import TokenLogprobs, token_logprobs, token_logprobs_backward
from ._logprobs_kl import TokenLogprobsKL, token_logprobs_kl, token_logprobs_kl_backward
from ._loss import LossResult, policy_loss
from ._presets import LossSpec, presets
from .info import build_info

__all__ = [
    "CORRECTIONS",
    "ESTIMATOR_PRESETS",
    "ESTIMATORS",
    "__version__",
    "advantages",
    "build_info",
    "compare",
    "correction",
    "diagnostics",
    "explain",
    "Explanation",
    "importance_weights",
    "LossResult",
    "LossSpec",
    "policy_loss",
    "PresetComparison",
    "presets",
    "rejection_mask",
    "RunningMoments",
    "stationary",
    "token_logprobs",
    "token_logprobs_backward",
    "TokenLogprobs",
    "token_logprobs_kl",
    "token_logprobs_kl_backward",
    "TokenLogprobsKL",
    "variance_proxy",
    "linear_token_logprobs",
    "linear_token_logprobs_backward",
]


def __getattr__(name):
    # grpokit.torch and grpokit.optim are imported on first use, so `import grpokit` never needs torch.
    if name in ("torch", "optim"):
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module 'grpokit' has no attribute {name!r}")
