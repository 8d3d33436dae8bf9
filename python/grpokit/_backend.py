"""Backend selection, one policy for every op: the device of the inputs selects the engine.

Host arrays go to the CPU engine (`_core`), GPU arrays to the CUDA kernels (`_cuda`). `_cuda` is
imported lazily, so `import grpokit` works on any machine; a GPU array is the first thing that needs
it, and if it cannot be used the call fails with the reason `grpokit info` prints, rather than copying
to the host behind the caller's back. (Ops that exist only in the CPU engine, such as the diagnostics
in `grpokit.diagnostics` other than the Adam-state ones, read device arrays through one host copy:
there is no engine to choose.)
"""

from __future__ import annotations

from types import ModuleType
from typing import Any, Optional, Tuple

from . import _core
from ._arrays import Placement, placement_of

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
    """The engine for arrays at `p`: `_core` on the host, `_cuda` on a GPU (an error saying why it
    cannot be used, never a silent host copy)."""
    if not p.is_cuda:
        return _core
    module, why = load_cuda()
    if module is None:
        raise RuntimeError(f"inputs are on cuda:{p.device_index} but {why}")
    count, reason = module.device_count()
    if count == 0:
        raise RuntimeError(f"inputs are on cuda:{p.device_index} but no CUDA device is usable: {reason}")
    return module


def for_array(x: Any) -> ModuleType:
    """The engine for one array (torch tensor, NumPy array or DLPack producer) by its device."""
    return for_placement(placement_of(x))
