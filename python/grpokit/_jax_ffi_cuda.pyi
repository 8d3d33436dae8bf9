"""grpokit's XLA FFI handler for CUDA (private; use grpokit.jax). Built with the CUDA kernels and jax."""

from typing import Any, Dict

def handlers() -> Dict[str, Any]: ...
