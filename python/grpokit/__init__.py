"""grpokit: the GRPO family of policy losses in a C++/CUDA engine, with diagnostics of their hidden
biases (shared-prefix weighting, reward scale under AdamW, momentum past the clip region) and of what
GRPO converges to.

Arrays may be NumPy, Python sequences or any DLPack tensor (PyTorch, CuPy, JAX); results come back
as the caller's kind on the caller's device.
"""

from ._advantages import advantages
from ._corrections import CORRECTIONS, correction, importance_weights, rejection_mask
from ._estimators import ESTIMATORS
from ._estimators import PRESETS as ESTIMATOR_PRESETS
from ._core import __version__
from .info import build_info

__all__ = [
    "CORRECTIONS",
    "ESTIMATORS",
    "ESTIMATOR_PRESETS",
    "__version__",
    "advantages",
    "build_info",
    "correction",
    "importance_weights",
    "rejection_mask",
]
