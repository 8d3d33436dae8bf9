"""The unified GRPO surrogate loss: forward value and exact gradient, computed in the engine."""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Any, Dict, Optional

import numpy as np

from . import _arrays, _backend, _core
from ._presets import LossSpec, resolve


@dataclass(frozen=True)
class LossResult:
    """What ``policy_loss`` returns (arrays of the caller's kind, on the caller's device).

    Attributes:
        loss: 0-d array, the loss to minimise (−J), dtype of ``logp``.
        grad_logp: ∂loss/∂logp, the shape and dtype of ``logp`` (0 at padding).
        grad_entropy: ∂loss/∂entropies when entropies enter the loss (entropy bonus, GTPO's term),
            else None.
        per_token: the per-token loss φ_{i,t} before aggregation (policy term + regularisers, without
            the entropy bonus; 0 at padding), when ``return_per_token``.
        weights: ω_{i,t} = effective α · ratio factor (Prop. 1 of the paper): the aggregation
            coefficient × the weight rule × s (ratio methods, 0 where the clipped branch binds), 1
            (GPG) or sg[I] (CISPO); Σ_i ω_i A_i is the coefficient of a shared prefix token. When
            ``return_weights``.
        metrics: {name: 0-d float64 array}: clip fractions, ratio statistics, KL, entropy (see
            docs/losses.md for the exact definitions).
    """

    loss: Any
    grad_logp: Any
    grad_entropy: Any = None
    per_token: Any = None
    weights: Any = None
    metrics: Optional[Dict[str, Any]] = None


_CHECKED_INPUTS = ("logp", "old_logp", "advantages", "ref_logp", "token_weights", "entropies", "sampling_logp")
_NO_ERROR = (1 << 63) - 1


def _raise_device_status(status: Any, shape: tuple, packed: bool) -> None:
    """The CUDA kernels' value checks (opt-in): the same errors as the CPU engine. Synchronises."""
    # The kernels may run on an explicit stream other than the current one: wait for the whole device.
    if hasattr(status, "cpu"):  # torch
        import torch

        torch.cuda.synchronize(status.device)
        st = status.cpu().numpy()
    else:  # CuPy
        import cupy

        cupy.cuda.Device(status.device.id).synchronize()
        st = status.get()
    first_bad, n_valid, cu_bad = int(st[0]), int(st[1]), int(st[2])
    if packed and cu_bad != _NO_ERROR:
        k, code = divmod(cu_bad, 4)
        what = {
            1: "must start at 0",
            2: f"offsets must be non-decreasing (entry {k})",
            3: f"the last offset must equal the number of tokens ({shape[0]})",
        }[code]
        raise ValueError(f"cu_seqlens: {what}")
    if first_bad != _NO_ERROR:
        key, code = divmod(first_bad, len(_CHECKED_INPUTS))
        row, token = divmod(key, 1 << 32)
        name = _CHECKED_INPUTS[code]
        raise ValueError(
            f"{name}: non-finite value at a valid position (row {row}, token {token}); values under the mask "
            "must be finite" + (" (NaN marks an unscored token)" if name == "sampling_logp" else "")
        )
    if n_valid == 0:
        raise ValueError("mask: no valid token (every position is masked); there is no loss to compute")


def _plan(spec: Any, overrides: Dict[str, Any], has_entropies: bool, has_sampling: bool):
    """(engine fields, metric names, whether entropies get a gradient): cached per spec and options,
    since resolving and validating a spec costs more than a small loss."""
    try:
        key = (spec, tuple(sorted(overrides.items())), has_entropies, has_sampling)
        hash(key)
    except TypeError:  # unhashable override values (arrays): no cache
        return _plan_uncached(spec, overrides, has_entropies, has_sampling)
    return _plan_cached(*key)


def _plan_uncached(spec, overrides, has_entropies, has_sampling):
    s: LossSpec = resolve(spec, dict(overrides))
    fields = s.engine_fields()
    names = tuple(_core.loss_metric_names(fields, has_entropies, has_sampling))
    return fields, names, _core.loss_has_entropy_grad(fields, has_entropies)


@functools.lru_cache(maxsize=256)
def _plan_cached(spec, overrides, has_entropies, has_sampling):
    return _plan_uncached(spec, dict(overrides), has_entropies, has_sampling)


def _mask_input(mask: Any, name: str) -> Any:
    return _arrays.as_input(mask, name, default="bool")


def policy_loss(
    logp: Any,
    old_logp: Any,
    advantages: Any,
    mask: Any = None,
    *,
    spec: Any = "trl.grpo",
    ref_logp: Any = None,
    entropies: Any = None,
    sampling_logp: Any = None,
    cu_seqlens: Any = None,
    keep: Any = None,
    token_weights: Any = None,
    selection: Any = None,
    return_per_token: bool = False,
    return_weights: bool = False,
    num_threads: int = 0,
    stream: Any = None,
    check_finite: bool = False,
    **overrides: Any,
) -> LossResult:
    """Loss and exact gradient of a GRPO-style policy objective.

    The loss is Σ_i c_i Σ_t φ_{i,t} − entropy_coef·H̄ with the per-token term
    φ = w·(−A·v(r)) + β·KL (+ method regularisers), where the spec sets the ratio r, the surrogate
    v (PPO clip, SAPO gate, sg(w)·log π, ...), the weight rule w (masks, keep flags, IS weights) and
    the aggregation c_i (see docs/losses.md). Sign: the loss is −J, to minimise.

    Args:
        logp: current per-token log-probabilities, padded (B, T) or packed (N,), float32/float64
            (GPU inputs also bfloat16/float16: float32 math, outputs in the dtype of logp).
        old_logp: log-probabilities of the policy the ratio is taken against (same layout), or None
            for on-policy (old = sg(logp): ratio 1, gradient of the surrogate at r = 1).
        advantages: (B,) or per token (the layout of logp), the same dtype; final advantages (σ, if
            any, is already in them: ``grpokit.advantages``).
        mask: valid tokens (bool/int/float, nonzero = valid), the layout of logp; None = all valid.
            Values at masked positions are never read (they may be NaN).
        spec: a preset name (``grpokit.presets()``) or a ``grpokit.LossSpec``.
        ref_logp: reference-model log-probabilities (needed when the spec has a KL term and beta ≠ 0).
        entropies: per-token entropies (entropy bonus, ``top_entropy_quantile``, GTPO, the metric).
        sampling_logp: the sampler's (vLLM's) log-probabilities: the off-policy sequence mask and the
            sampler IS weight (``vllm_importance_sampling_mode``). NaN marks an unscored token.
        cu_seqlens: (B+1,) int32/int64 offsets for packed inputs.
        keep: (B,) completion keep flags δ_i (GTPO), multiply the policy term.
        token_weights: per-token weights λ_{i,t} (GTPO), multiply the policy term.
        selection: per-token flags, the tokens the ``clip_cov`` / ``kl_cov`` rules act on.
        return_per_token, return_weights: also return φ_{i,t} and ω_{i,t}.
        num_threads: CPU threads (0: the OpenMP default). Results are identical for any count.
        stream: CUDA stream for GPU inputs (default: the caller's current stream). GPU inputs never
            synchronise the host: loss and metrics come back as 0-d device arrays (docs/gpu.md).
        check_finite: GPU inputs: check NaN/inf at valid positions, an entirely masked batch and
            cu_seqlens (this synchronises the host). The CPU engine always checks.
        **overrides: hyper-parameters by TRL's ``GRPOConfig`` names (``epsilon``, ``epsilon_high``,
            ``delta``, ``beta``, ``importance_sampling_level``, ``num_items_in_batch``,
            ``top_entropy_quantile``, ``max_completion_length``, ``off_policy_mask_threshold``,
            ``use_bias_correction_kl``, ``entropy_coef``, ``gradient_accumulation_steps``,
            ``vllm_importance_sampling_mode``, ...), verl's names (``clip_ratio_low``,
            ``clip_ratio_high``, ``clip_ratio_c``, ``loss_agg_mode``, ``kl_loss_type``,
            ``kl_loss_coef``, ``entropy_coeff``, ``loss_scale_factor``, ``batch_num_tokens``,
            ``dp_size``, ...) or any ``LossSpec`` field.

    Global counts: ``num_items_in_batch`` (tokens) and ``num_sequences`` are the counts of the whole
    optimizer step (all micro-batches and ranks); the engine never divides by the accumulation count
    itself, except where TRL does (``trl.grpo/bnpo/dr_grpo/luspo/sapo`` and TRL's entropy bonus divide
    by ``gradient_accumulation_steps``, as TRL's ``_compute_loss``).

    Returns:
        A ``LossResult``.

    Raises:
        ValueError: bad shapes, an entirely masked batch, NaN/inf at valid positions, invalid
            hyper-parameters, unknown preset names (the message lists the valid ones).
        TypeError: unsupported dtypes, unknown option names.

    Example:
        >>> import numpy as np, grpokit
        >>> lp = np.log(np.full((2, 3), 0.5))
        >>> r = grpokit.policy_loss(lp, lp, np.array([1.0, -1.0]), spec="paper.dapo")
        >>> float(r.loss), float(r.grad_logp[0, 0])
        (0.0, -0.16666666666666666)
    """
    lp = _arrays.as_input(logp, "logp")
    old = _arrays.as_input(old_logp, "old_logp")
    adv = _arrays.as_input(advantages, "advantages")
    m = _mask_input(mask, "mask")
    ref = _arrays.as_input(ref_logp, "ref_logp")
    ent = _arrays.as_input(entropies, "entropies")
    smp = _arrays.as_input(sampling_logp, "sampling_logp")
    cu = _arrays.as_input(cu_seqlens, "cu_seqlens", default="int64")
    kp = _mask_input(keep, "keep")
    tw = _arrays.as_input(token_weights, "token_weights")
    sel = _mask_input(selection, "selection")
    place = _arrays.common_placement(
        {
            "logp": lp,
            "old_logp": old,
            "advantages": adv,
            "mask": m,
            "ref_logp": ref,
            "entropies": ent,
            "sampling_logp": smp,
            "cu_seqlens": cu,
            "keep": kp,
            "token_weights": tw,
            "selection": sel,
        }
    )
    backend = _backend.for_placement(place)
    fields, names, ent_grad = _plan(spec, overrides, ent is not None, smp is not None)
    dt = _arrays.dtype_name(lp)
    allowed = ("float32", "float64", "bfloat16", "float16") if place.is_cuda else ("float32", "float64")
    if dt not in allowed:
        raise TypeError(
            f"logp: expected dtype {' or '.join(allowed)}, got {dt}"
            + ("" if place.is_cuda else " (bfloat16/float16 are GPU-only)")
        )
    shape = tuple(int(d) for d in lp.shape)

    def like_logp() -> Any:
        return _arrays.empty(place, shape, dt, like=lp)

    handle = _arrays.resolve_stream(place, stream)
    workspace = status = None
    # outputs and scratch from the pool of the stream the kernels write on (an explicit stream's, not
    # the current one's: a block freed on the current stream may still be read there)
    with _arrays.allocating_on(place, handle):
        loss = _arrays.empty(place, (), dt, like=lp)
        grad = like_logp()
        grad_ent = like_logp() if ent_grad else None
        per_token = like_logp() if return_per_token else None
        weights = like_logp() if return_weights else None
        metrics = _arrays.empty(place, (len(names),), "float64", like=lp)
        if place.is_cuda:  # scratch from the caller's framework: the kernels never allocate
            rows = int(cu.shape[0]) - 1 if cu is not None else shape[0]
            workspace = _arrays.empty(place, (backend.loss_workspace_size(max(rows, 0)),), "float64", like=lp)
            if check_finite:
                status = _arrays.empty(place, (4,), "int64", like=lp)
    backend.policy_loss(
        fields,
        lp,
        old,
        adv,
        m,
        ref,
        ent,
        smp,
        cu,
        kp,
        tw,
        sel,
        loss,
        grad,
        grad_ent,
        per_token,
        weights,
        metrics,
        num_threads=_arrays.as_count(num_threads, "num_threads", minimum=0),
        stream=handle,
        workspace=workspace,
        status=status,
    )
    # The scratch is freed on return into the kernels' stream's pool: reused only by work ordered after them.
    if status is not None:
        _raise_device_status(status, shape, cu is not None)
    if not place.is_cuda and not math.isfinite(float(loss)):
        # the engine refused every non-finite input, so the sum itself overflowed: say so, not NaN
        raise ValueError(
            f"token_weights/advantages: the loss overflowed to {float(loss)} in {dt} although every input is "
            "finite; their products with the ratios are too large: rescale token_weights or advantages"
        )
    fin = lambda x: None if x is None else _arrays.finish(place, x)  # noqa: E731
    metric_dict = {
        n: fin(metrics[k] if not isinstance(metrics, np.ndarray) else metrics[k, ...]) for k, n in enumerate(names)
    }
    return LossResult(
        loss=fin(loss),
        grad_logp=fin(grad),
        grad_entropy=fin(grad_ent),
        per_token=fin(per_token),
        weights=fin(weights),
        metrics=metric_dict,
    )
