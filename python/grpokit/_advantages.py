"""Group advantages (the papers' A_i and the peers' normalisations), computed in the engine."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _arrays, _backend

_STD_NAMES = ("none", "population", "sample")
_SCOPES = ("group", "batch")
_BASELINES = ("mean", "leave_one_out")


def _float_rewards(r: Any) -> Any:
    """Integer or bool rewards are converted to float64 (the intent is clear); floats are kept."""
    if isinstance(r, np.ndarray) and r.dtype.kind in "biu":
        return r.astype(np.float64)
    if _arrays._is_torch(r) and not r.is_floating_point():
        return r.double()
    return r


def advantages(
    rewards: Any,
    group_size: Optional[int] = None,
    *,
    group_ids: Any = None,
    baseline: str = "mean",
    std: str = "none",
    std_scope: str = "group",
    epsilon: float = 0.0,
    check_finite: bool = False,
    stream: Any = None,
) -> Any:
    """Advantages of a batch of rewards, one per completion.

    A_i = (r_i − b_i) / (σ + epsilon), where b_i is the group mean (``baseline="mean"``, the papers'
    centred advantage) or the mean of the *other* completions of the group
    (``baseline="leave_one_out"``, RLOO), and σ is a standard deviation or nothing (``std="none"``).

    Args:
        rewards: (B,) float32/float64 rewards (NumPy, torch, CuPy, JAX or a sequence). NaN marks an
            unscorable completion: excluded from every statistic, advantage 0 (as TRL).
        group_size: completions per prompt; groups are contiguous blocks of rows.
        group_ids: (B,) integer ids instead of ``group_size`` (groups need not be contiguous).
        baseline: ``"mean"`` or ``"leave_one_out"``.
        std: ``"none"``, ``"population"`` (divisor n, the papers') or ``"sample"`` (n − 1: TRL, verl).
        std_scope: ``"group"`` or ``"batch"`` (the std of all rewards of the batch: TRL's
            ``scale_rewards="batch"``).
        epsilon: added to σ before dividing (TRL 1e-4, verl 1e-6, the papers 0).
        check_finite: on GPU, check for ±inf rewards (synchronises the host). The CPU always checks.
        stream: CUDA stream for GPU inputs (default: the caller's current stream).

    A group whose rewards are all equal gets advantage 0 (0/0 := 0). A group of one completion is an
    error when ``std`` is not ``"none"`` or with ``"leave_one_out"``.

    Reproducing the peers: TRL ``scale_rewards="group"`` is ``std="sample", epsilon=1e-4``;
    ``"batch"`` adds ``std_scope="batch"``; ``"none"`` is ``std="none"``. verl's ``grpo`` is
    ``std="sample", epsilon=1e-6``.

    Returns:
        (B,) advantages, the same kind, device and dtype as ``rewards``.

    Example:
        >>> import grpokit
        >>> grpokit.advantages([1.0, 0.0, 1.0, 1.0], group_size=2)
        array([ 0.5, -0.5,  0. ,  0. ])
    """
    if baseline not in _BASELINES:
        raise ValueError(f"baseline: expected one of {_BASELINES}, got {baseline!r}")
    if std not in _STD_NAMES:
        raise ValueError(f"std: expected one of {_STD_NAMES}, got {std!r}")
    if std_scope not in _SCOPES:
        raise ValueError(f"std_scope: expected one of {_SCOPES}, got {std_scope!r}")
    if group_ids is None and group_size is None:
        raise ValueError("group_size: pass the number of completions per prompt, or group_ids")
    if group_size is not None and (isinstance(group_size, bool) or int(group_size) != group_size):
        raise TypeError(f"group_size: expected an integer, got {group_size!r}")

    r = _float_rewards(_arrays.as_input(rewards, "rewards"))
    ids = _arrays.as_input(group_ids, "group_ids", default="int64")
    place = _arrays.common_placement({"rewards": r, "group_ids": ids})
    if place.is_cuda and check_finite:
        _arrays.raise_if_inf(r, "rewards")
    shape = tuple(int(s) for s in r.shape)
    out = _arrays.empty(place, shape, _arrays.dtype_name(r) if len(shape) else "float64", like=r)
    backend = _backend.for_placement(place)
    backend.advantages(
        r,
        ids,
        out,
        group_size=int(group_size) if group_size is not None else 0,
        baseline=baseline,
        std=std,
        std_scope=std_scope,
        epsilon=float(epsilon),
        stream=_arrays.resolve_stream(place, stream),
    )
    return _arrays.finish(place, out)
