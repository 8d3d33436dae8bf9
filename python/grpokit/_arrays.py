"""The caller's arrays: which framework and device they live on, and outputs of the same kind.

grpokit never converts a caller's array to another framework. NumPy in gives NumPy out, torch in
gives torch out (on the same device), CuPy in gives CuPy out; JAX arrays are read through DLPack and
results come back as JAX arrays. Python sequences and scalars become float64 / int64 NumPy arrays.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any, Optional

import numpy as np

_DLPACK_CPU = 1
_DLPACK_CUDA = 2
_DLPACK_CUDA_HOST = 3
_DLPACK_CUDA_MANAGED = 13


@dataclass(frozen=True)
class Placement:
    """Where a call's arrays live and which framework made them."""

    kind: str  # "numpy" | "torch" | "cupy" | "jax" | "dlpack"
    device_type: str  # "cpu" | "cuda"
    device_index: int = 0

    @property
    def is_cuda(self) -> bool:
        return self.device_type == "cuda"

    def describe(self) -> str:
        where = "cpu" if self.device_type == "cpu" else f"cuda:{self.device_index}"
        return f"{self.kind} array on {where}"


def _module_name(x: Any) -> str:
    return type(x).__module__.split(".")[0]


def _is_torch(x: Any) -> bool:
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


def _is_jax(x: Any) -> bool:
    return _module_name(x) in ("jax", "jaxlib")


def _is_cupy(x: Any) -> bool:
    return _module_name(x) == "cupy"


def as_input(x: Any, name: str, *, default: str = "float64", writable: bool = False) -> Any:
    """An object the engine can import through DLPack, without copying array inputs.

    `default` is the dtype given to Python sequences and scalars ("float64", "int64" or "bool");
    `writable`: the engine writes into `x` (an output buffer), so it is never replaced by a copy.
    """
    if x is None:
        return None
    if _is_torch(x):
        if x.layout != _torch_strided():
            raise TypeError(
                f"{name}: expected a dense (strided) tensor, got a {str(x.layout).replace('torch.', '')} tensor"
            )
        if x.is_nested:
            raise TypeError(f"{name}: expected a dense (strided) tensor, got a nested tensor")
        if x.is_neg() or x.is_conj():
            # torch's __dlpack__ drops the lazy negation/conjugation bits: the values read would be
            # the unnegated memory. An input is resolved (one copy); an output cannot be.
            if writable:
                raise ValueError(
                    f"{name}: the tensor has torch's lazy negation/conjugate bit set; pass x.resolve_neg()"
                )
            x = x.resolve_neg().resolve_conj()
        # DLPack refuses tensors that require grad; detach() shares memory, so nothing is copied.
        return x.detach() if x.requires_grad else x
    if isinstance(x, np.ndarray):
        if x.dtype == object:
            raise TypeError(f"{name}: expected a numeric array, got a NumPy array of dtype object")
        return x
    if hasattr(x, "__dlpack__"):
        if not (hasattr(x, "shape") and hasattr(x, "dtype")):
            # A bare DLPack producer: NumPy reads it (zero-copy) so outputs can be shaped like it.
            try:
                return np.from_dlpack(x)
            except (BufferError, RuntimeError, TypeError, ValueError) as exc:
                raise ValueError(f"{name}: could not be read through DLPack ({exc})") from None
        return x
    if isinstance(x, (list, tuple, int, float, bool, np.generic)):
        try:
            arr = np.asarray(x)
        except ValueError as exc:  # ragged nesting
            raise ValueError(f"{name}: expected a rectangular array, got {exc}") from None
        # Convert only where the intent is clear: numbers to float64, integers to int64, bools (or 0/1
        # integers, as an integer array is read) to bool.
        if default == "bool" and arr.dtype.kind in "iu" and np.isin(arr, (0, 1)).all():
            return arr.astype(bool)
        allowed = {"float64": "biuf", "int64": "biu", "bool": "b"}[default]
        if arr.dtype.kind not in allowed and not (arr.size == 0 and arr.dtype.kind == "f"):
            raise TypeError(f"{name}: expected {default}-compatible values, got {arr.dtype} values")
        return arr.astype(default)
    raise TypeError(
        f"{name}: expected a NumPy array, a Python sequence or an object implementing __dlpack__ "
        f"(torch, CuPy, JAX), got {type(x).__name__}"
    )


def _torch_strided() -> Any:
    return sys.modules["torch"].strided


def as_count(value: Any, name: str, minimum: int = 1) -> int:
    """A whole number >= `minimum` (a Python or NumPy integer, or a float with an integral value) as an int;
    anything else (a fraction, a string, a bool, an out-of-range value) is a one-line error naming `name`."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected a whole number >= {minimum}, got {value!r}")
    if isinstance(value, int):  # any size: checked against the range below
        v: Any = value
    else:
        arr = np.asarray(value) if isinstance(value, (float, np.generic, np.ndarray)) else None
        if arr is None or arr.ndim != 0 or arr.dtype.kind not in "iuf":
            raise TypeError(f"{name}: expected a whole number >= {minimum}, got {_short(value)}")
        v = arr.item()
    if isinstance(v, float) and not (np.isfinite(v) and v.is_integer()):
        raise TypeError(f"{name}: expected a whole number >= {minimum}, got {v!r}")
    v = int(v)
    if v < minimum or v > np.iinfo(np.int64).max:
        raise ValueError(f"{name}: expected a whole number >= {minimum}, got {v}")
    return v


def as_real(value: Any, name: str) -> float:
    """A real number (Python, NumPy or 0-d array) as a float; anything else is a one-line error naming `name`."""
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, float, np.integer, np.floating)):
        if not (isinstance(value, np.ndarray) and value.ndim == 0 and value.dtype.kind in "iuf"):
            raise TypeError(f"{name}: expected a number, got {_short(value)}")
    try:
        return float(value)
    except OverflowError:
        raise ValueError(f"{name}: expected a number within the float64 range, got {_short(value)}") from None


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else f"a {type(value).__name__}"


def placement_of(x: Any) -> Placement:
    """The framework and device of an array accepted by `as_input`."""
    if isinstance(x, np.ndarray):
        return Placement("numpy", "cpu")
    if _is_torch(x):
        dev = x.device
        if dev.type == "cpu":
            return Placement("torch", "cpu")
        if dev.type == "cuda":
            return Placement("torch", "cuda", dev.index or 0)
        raise ValueError(f"torch tensors on device '{dev}' are not supported (CPU and CUDA are)")
    kind = "jax" if _is_jax(x) else "cupy" if _is_cupy(x) else "dlpack"
    dev_type, dev_id = x.__dlpack_device__()
    if int(dev_type) in (_DLPACK_CPU, _DLPACK_CUDA_HOST):
        return Placement(kind, "cpu")
    if int(dev_type) in (_DLPACK_CUDA, _DLPACK_CUDA_MANAGED):
        return Placement(kind, "cuda", int(dev_id))
    raise ValueError(f"arrays on DLPack device type {int(dev_type)} are not supported (CPU and CUDA are)")


def common_placement(named: dict) -> Placement:
    """The placement shared by every non-None array of a call; mixed devices are an error."""
    first_name, first = None, None
    for name, arr in named.items():
        if arr is None:
            continue
        p = placement_of(arr)
        if first is None:
            first_name, first = name, p
            continue
        if (p.device_type, p.device_index) != (first.device_type, first.device_index):
            raise ValueError(
                f"{name} is a {p.describe()} but {first_name} is a {first.describe()}; "
                "all arrays of one call must be on the same device"
            )
    if first is None:
        raise ValueError("no array argument was given")
    return first


def dtype_name(x: Any) -> str:
    """The dtype of an accepted array as a plain name ("float32", "bfloat16", "int64", ...)."""
    dt = x.dtype
    if _is_torch(x):
        return str(dt).replace("torch.", "")
    return np.dtype(dt).name if not hasattr(dt, "name") else str(dt.name)


def empty(p: Placement, shape: tuple, dtype: str, like: Any = None) -> Any:
    """An uninitialised output of the caller's kind on the caller's device."""
    if p.kind == "torch":
        import torch

        device = like.device if like is not None else torch.device(p.device_type, p.device_index)
        return torch.empty(shape, dtype=getattr(torch, dtype), device=device)
    if p.kind == "cupy":
        import cupy

        with cupy.cuda.Device(p.device_index):
            return cupy.empty(shape, dtype=dtype)
    if p.is_cuda:
        raise ValueError(f"grpokit cannot allocate outputs for a {p.describe()}; pass torch or CuPy arrays on the GPU")
    return np.empty(shape, dtype=dtype)


def finish(p: Placement, out: Any) -> Any:
    """Hand an output back as the caller's kind (NumPy buffers become JAX arrays for JAX callers)."""
    if p.kind == "jax" and isinstance(out, np.ndarray):
        import jax.numpy as jnp

        return jnp.asarray(out)
    return out


def resolve_stream(p: Placement, stream: Optional[Any]) -> int:
    """The CUDA stream (as a DLPack integer) the engine launches on; 0 for CPU arrays.

    Explicit `stream` wins (an int, a torch.cuda.Stream or a CuPy stream); otherwise the caller's
    current stream in its own framework. 1 is DLPack's legacy default stream.
    """
    if not p.is_cuda:
        return 0
    if stream is not None:
        handle = getattr(stream, "cuda_stream", getattr(stream, "ptr", stream))
        handle = int(handle)
        return handle if handle != 0 else 1
    if p.kind == "torch":
        import torch

        handle = torch.cuda.current_stream(p.device_index).cuda_stream
        return handle if handle != 0 else 1
    if p.kind == "cupy":
        import cupy

        handle = cupy.cuda.get_current_stream().ptr
        return handle if handle != 0 else 1
    return 1


@contextlib.contextmanager
def allocating_on(p: Placement, handle: int):
    """Allocate (``empty``) from the pool of the stream the kernels will write on.

    torch's and CuPy's caching allocators hand a block freed on stream S to the next allocation on S
    at once, because later work on S is ordered after the block's last use. Buffers written by
    kernels on another stream (an explicit ``stream=``) must come from that stream's pool, else they
    may be a block whose last reads on the current stream are still queued: a race. As torch does
    for an op run under ``with torch.cuda.stream(s)``.
    """
    if not p.is_cuda or p.kind not in ("torch", "cupy") or handle == resolve_stream(p, None):
        yield
        return
    if p.kind == "torch":
        import torch

        device = torch.device("cuda", p.device_index)
        stream = torch.cuda.default_stream(device) if handle == 1 else torch.cuda.ExternalStream(handle, device=device)
        with torch.cuda.stream(stream):
            yield
    else:
        import cupy

        with cupy.cuda.Device(p.device_index):
            stream = cupy.cuda.Stream.null if handle == 1 else cupy.cuda.ExternalStream(handle)
            with stream:
                yield


def raise_if_inf(x: Any, name: str) -> None:
    """Opt-in value check for device arrays (it synchronises the host)."""
    if _is_torch(x):
        import torch

        bad = bool(torch.isinf(x).any().item())
    else:
        mod = __import__(_module_name(x))
        bad = bool(mod.isinf(x).any())
    if bad:
        raise ValueError(f"{name}: contains ±inf; values must be finite (NaN marks unscorable entries)")
