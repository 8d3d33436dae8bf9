"""The sampler's kept set for exact replay (``token_logprobs(..., keep=...)``): the forms samplers
export, brought to the engine's CSR pair (docs/logprobs.md, "Replaying the sampler's own kept set")."""

from __future__ import annotations

from typing import Any, Tuple

import numpy as np

from . import _arrays


def keep_from_mask(mask: Any) -> Tuple[Any, Any]:
    """``(keep_ids, keep_offsets)`` from a boolean mask shaped like the logits (True = kept): the
    column indices of each row's kept entries (ascending) and the row offsets. NumPy or torch in,
    the same kind out. Costs one pass over the mask and a copy of the kept ids."""
    if _arrays._is_torch(mask):
        import torch

        m = mask.reshape(-1, mask.shape[-1]) != 0
        rows, cols = torch.nonzero(m, as_tuple=True)
        counts = torch.bincount(rows, minlength=m.shape[0])
        offsets = torch.cat([counts.new_zeros(1), torch.cumsum(counts, 0)])
        return cols, offsets
    m = np.asarray(mask)
    if m.ndim < 2:
        raise ValueError(f"keep: expected a mask shaped like the logits, got shape {m.shape}")
    m = m.reshape(-1, m.shape[-1]) != 0
    rows, cols = np.nonzero(m)
    counts = np.bincount(rows, minlength=m.shape[0])
    return cols.astype(np.int64), np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)


def prepare_keep(keep: Any, logits_shape: tuple) -> Tuple[Any, Any]:
    """``keep=`` as the engine's ``(keep_ids, keep_offsets)``: a pair of arrays, an object with
    ``token_ids`` and ``offsets`` (vLLM's ``SamplingMask``), or a boolean mask shaped like the logits
    (``logits_shape``; ``hidden · weightᵀ``'s in the hidden-state form). The values are checked by
    the engine."""
    if hasattr(keep, "token_ids") and hasattr(keep, "offsets"):
        keep = (keep.token_ids, keep.offsets)
    if isinstance(keep, (tuple, list)) and len(keep) == 2:
        ids = _arrays.as_input(keep[0], "keep_ids", default="int64")
        offsets = _arrays.as_input(keep[1], "keep_offsets", default="int64")
        return ids, offsets
    want = tuple(int(s) for s in logits_shape)
    shape = tuple(int(s) for s in getattr(keep, "shape", ()))
    if shape and shape == want and str(getattr(keep, "dtype", "")).endswith("bool"):
        return keep_from_mask(keep)
    raise TypeError(
        "keep: expected (keep_ids, keep_offsets), an object with token_ids and offsets (vLLM's SamplingMask) "
        f"or a boolean mask of the logits' shape {want}, got {_arrays._short(keep)}"
    )
