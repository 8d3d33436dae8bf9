"""Host-side inputs of the diagnostics: the engine's diagnostics run on the CPU.

CPU arrays (NumPy, torch, any DLPack producer) are passed to the engine without copying; device
arrays are copied to the host once (a diagnostic is not on the training hot path). Results are
NumPy arrays.
"""

from __future__ import annotations

from typing import Any, Optional, Sequence, Tuple

import numpy as np

from .. import _arrays


def host(x: Any, name: str, *, default: str = "float64") -> Any:
    """`x` as an array the CPU engine can read (no copy for CPU arrays); None stays None."""
    if x is None:
        return None
    x = _arrays.as_input(x, name, default=default)
    if _arrays._is_torch(x):
        import torch

        if x.device.type != "cpu":
            x = x.cpu()
        if x.dtype in (torch.bfloat16, torch.float16):
            x = x.float()
        return x
    if isinstance(x, np.ndarray):
        if x.dtype == np.float16:
            return x.astype(np.float32)
        return x
    place = _arrays.placement_of(x)
    if place.is_cuda:
        # CuPy / JAX device arrays: one copy to the host.
        return np.asarray(x.get() if hasattr(x, "get") else x)
    return x


def shape_of(x: Any) -> Tuple[int, ...]:
    return tuple(int(s) for s in x.shape)


def is_ragged(x: Any) -> bool:
    """A Python sequence of per-completion sequences (not a rectangular array)."""
    return (
        isinstance(x, (list, tuple))
        and len(x) > 0
        and all(isinstance(r, (list, tuple, np.ndarray)) or _arrays._is_torch(r) for r in x)
    )


def pack(
    rows: Sequence[Any], name: str, dtype: str, lengths: Optional[Sequence[int]] = None
) -> Tuple[np.ndarray, np.ndarray]:
    """Concatenate per-completion sequences into (N,) + cu_seqlens (B+1,). With `lengths`, each row
    must have exactly that many elements (the error names the first row that does not)."""
    parts = []
    for i, r in enumerate(rows):
        a = r.detach().cpu().numpy() if _arrays._is_torch(r) else np.asarray(r)
        if a.ndim != 1:
            raise ValueError(f"{name}: completion {i} must be a 1-D sequence, got shape {a.shape}")
        if lengths is not None and a.shape[0] != lengths[i]:
            raise ValueError(
                f"{name}: completion {i} has {a.shape[0]} entries but ids has {lengths[i]} tokens; "
                "ragged inputs must have one entry per token"
            )
        parts.append(a.astype(dtype, copy=False))
    cu = np.zeros(len(parts) + 1, dtype=np.int64)
    cu[1:] = np.cumsum([p.shape[0] for p in parts])
    flat = np.concatenate(parts) if parts else np.zeros(0, dtype=dtype)
    return np.ascontiguousarray(flat, dtype=dtype), cu


def check_group_size(group_size: Any, batch: int, what: str = "completions") -> int:
    if isinstance(group_size, bool) or not isinstance(group_size, (int, np.integer)):
        raise TypeError(f"group_size: expected an integer, got {group_size!r}")
    g = int(group_size)
    if g <= 0:
        raise ValueError(f"group_size: expected a positive integer, got {g}")
    if batch % g != 0:
        raise ValueError(f"group_size: the batch of {batch} {what} is not a whole number of groups of {g}")
    return g
