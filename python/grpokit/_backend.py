"""Backend selection: the CPU engine (`_core`) or the CUDA kernels (`_cuda`), by the inputs' device.

`_cuda` is imported lazily, so `import grpokit` works on any machine; a GPU array is the first thing
that needs it, and if it cannot be loaded the error says why.
"""

from __future__ import annotations

from types import ModuleType
from typing import Optional, Tuple

from . import _core
from ._arrays import Placement

_cuda_module: Optional[ModuleType] = None
_cuda_error: Optional[str] = None
_cuda_tried = False


def load_cuda() -> Tuple[Optional[ModuleType], Optional[str]]:
    """(the _cuda module or None, why it is unavailable)."""
    global _cuda_module, _cuda_error, _cuda_tried
    if not _cuda_tried:
        _cuda_tried = True
        try:
            from . import _cuda  # type: ignore[attr-defined]

            _cuda_module = _cuda
        except ImportError as exc:
            msg = str(exc)
            if "_cuda" in msg and "cannot import name" in msg or "No module named" in msg:
                _cuda_error = (
                    "grpokit was built without CUDA kernels (no CUDA compiler at build time, or "
                    "GRPOKIT_CUDA=OFF); reinstall with GRPOKIT_CUDA=ON"
                )
            else:
                _cuda_error = f"the CUDA module failed to load: {msg}"
    return _cuda_module, _cuda_error


def for_placement(p: Placement) -> ModuleType:
    if not p.is_cuda:
        return _core
    module, why = load_cuda()
    if module is None:
        raise RuntimeError(f"inputs are on cuda:{p.device_index} but {why}")
    count, reason = module.device_count()
    if count == 0:
        raise RuntimeError(f"inputs are on cuda:{p.device_index} but no CUDA device is usable: {reason}")
    return module
