"""grpokit: the GRPO family of policy losses in a C++/CUDA engine, with diagnostics of their hidden
biases (shared-prefix weighting, reward scale under AdamW, momentum past the clip region) and of what
GRPO converges to.

Arrays may be NumPy, Python sequences or any DLPack tensor (PyTorch, CuPy, JAX); results come back
as the caller's kind on the caller's device.
"""

from ._advantages import advantages
from ._core import __version__
from .info import build_info
from . import stationary

__all__ = ["__version__", "advantages", "build_info", "stationary"]
