"""grpokit: the GRPO family of policy losses in a C++/CUDA engine, with diagnostics of their hidden
biases (shared-prefix weighting, reward scale under AdamW, momentum past the clip region) and of what
GRPO converges to.

Arrays may be NumPy, Python sequences or any DLPack tensor (PyTorch, CuPy, JAX); results come back
as the caller's kind on the caller's device.
"""

from ._advantages import advantages
from ._core import __version__
from ._logprobs import (
    TokenLogprobs,
    linear_token_logprobs,
    linear_token_logprobs_backward,
    token_logprobs,
    token_logprobs_backward,
)
from .info import build_info

__all__ = [
    "__version__",
    "advantages",
    "build_info",
    "TokenLogprobs",
    "token_logprobs",
    "token_logprobs_backward",
    "linear_token_logprobs",
    "linear_token_logprobs_backward",
]


def __getattr__(name):
    # grpokit.torch is imported on first use, so `import grpokit` never needs torch.
    if name == "torch":
        import importlib

        return importlib.import_module(".torch", __name__)
    raise AttributeError(f"module 'grpokit' has no attribute {name!r}")
