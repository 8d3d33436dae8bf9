"""The hidden-state token log-probability ops of ``grpokit.torch`` (imported from there):
``linear_token_logprobs`` of ``hidden · weightᵀ`` as ``torch.library`` custom ops with fake
implementations and registered autograd formulas (untruncated and under the sampler's truncation;
the ops replaying its kept set are in ``_torch_logprobs_keep.py``), so they run under ``torch.compile``
without a graph break."""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from . import _linear_logprobs, _logprobs
from ._torch_logprobs import (
    LogprobsOutput,
    _param,
    _result_dtype,
    _sampler_kwargs,
    _sampler_saved,
    refuse_double_backward,
)
from ._torch_logprobs_keep import linear_keep_logprobs


@torch.library.custom_op("grpokit::linear_token_logprobs", mutates_args=())
def _linear_token_logprobs_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    temperature: float,
    chunk_size: int,
    sum_sq_probs: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r = _linear_logprobs.linear_token_logprobs(
        hidden,
        weight,
        token_ids,
        temperature=temperature,
        entropy=True,
        sum_sq_probs=sum_sq_probs,
        chunk_size=chunk_size or None,
    )
    sq = r.sum_sq_probs if sum_sq_probs else r.logp.new_empty((0,))
    return r.logp, r.entropy, r.lse, sq


@_linear_token_logprobs_op.register_fake
def _(hidden, weight, token_ids, temperature, chunk_size, sum_sq_probs):
    shape, dt = hidden.shape[:-1], _result_dtype(hidden)
    return (
        hidden.new_empty(shape, dtype=dt),
        hidden.new_empty(shape, dtype=dt),
        hidden.new_empty(shape, dtype=dt),
        hidden.new_empty(shape if sum_sq_probs else (0,), dtype=dt),
    )


@torch.library.custom_op("grpokit::linear_token_logprobs_backward", mutates_args=())
def _linear_token_logprobs_backward_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: Optional[torch.Tensor],
    grad_entropy: Optional[torch.Tensor],
    temperature: float,
    chunk_size: int,
    hidden_grad: bool,
    weight_grad: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    saved = _logprobs.TokenLogprobs(logp=None, entropy=entropy, lse=lse, temperature=temperature)
    gh, gw = _linear_logprobs.linear_token_logprobs_backward(
        hidden,
        weight,
        token_ids,
        saved,
        grad_logp,
        grad_entropy,
        hidden_grad=hidden_grad,
        weight_grad=weight_grad,
        chunk_size=chunk_size or None,
    )
    return (gh if gh is not None else hidden.new_empty((0,)), gw if gw is not None else weight.new_empty((0,)))


@_linear_token_logprobs_backward_op.register_fake
def _(
    hidden, weight, token_ids, lse, entropy, grad_logp, grad_entropy, temperature, chunk_size, hidden_grad, weight_grad
):
    return (
        hidden.new_empty(hidden.shape if hidden_grad else (0,)),
        weight.new_empty(weight.shape if weight_grad else (0,)),
    )


def _linear_setup(ctx, inputs, output):
    hidden, weight, token_ids, temperature, chunk_size, _ = inputs
    ctx.save_for_backward(hidden, weight, token_ids, output[2], output[1])
    ctx.temperature = temperature
    ctx.chunk_size = chunk_size
    ctx.mark_non_differentiable(output[2], output[3])


def _linear_backward(ctx, grad_logp, grad_entropy, _g_lse, _g_sq):
    refuse_double_backward("grpokit.torch.linear_token_logprobs")
    hidden, weight, token_ids, lse, entropy = ctx.saved_tensors
    want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    if grad_logp is None and grad_entropy is None or not (want_h or want_w):
        return None, None, None, None, None, None
    gh, gw = torch.ops.grpokit.linear_token_logprobs_backward(
        hidden,
        weight,
        token_ids,
        lse,
        entropy,
        grad_logp,
        grad_entropy,
        ctx.temperature,
        ctx.chunk_size,
        want_h,
        want_w,
    )
    return gh if want_h else None, gw if want_w else None, None, None, None, None


_linear_token_logprobs_op.register_autograd(_linear_backward, setup_context=_linear_setup)


@torch.library.custom_op("grpokit::linear_token_logprobs_sampler", mutates_args=())
def _linear_sampler_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    temperature: float,
    top_k: Optional[torch.Tensor],
    top_p: Optional[torch.Tensor],
    min_p: Optional[torch.Tensor],
    sampler: str,
    over: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    kw = _sampler_kwargs(temperature, top_k, top_p, min_p, sampler, over)
    r = _linear_logprobs.linear_token_logprobs(hidden, weight, token_ids, **kw)
    return r.logp, r.entropy, r.lse, r.kept_logmass, r.keep_min


@_linear_sampler_op.register_fake
def _(hidden, weight, token_ids, temperature, top_k, top_p, min_p, sampler, over):
    shape, dt = hidden.shape[:-1], _result_dtype(hidden)
    return tuple(hidden.new_empty(shape, dtype=dt) for _ in range(5))


@torch.library.custom_op("grpokit::linear_token_logprobs_sampler_backward", mutates_args=())
def _linear_sampler_backward_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    lse: torch.Tensor,
    kept_logmass: torch.Tensor,
    keep_min: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: Optional[torch.Tensor],
    grad_entropy: Optional[torch.Tensor],
    temperature: float,
    entropy_over_kept: bool,
    hidden_grad: bool,
    weight_grad: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    saved = _sampler_saved(entropy, lse, kept_logmass, keep_min, temperature, entropy_over_kept)
    gh, gw = _linear_logprobs.linear_token_logprobs_backward(
        hidden, weight, token_ids, saved, grad_logp, grad_entropy, hidden_grad=hidden_grad, weight_grad=weight_grad
    )
    return (gh if gh is not None else hidden.new_empty((0,)), gw if gw is not None else weight.new_empty((0,)))


@_linear_sampler_backward_op.register_fake
def _(hidden, weight, token_ids, lse, mass, kmin, entropy, grad_logp, grad_entropy, t, over, hidden_grad, weight_grad):
    return (
        hidden.new_empty(hidden.shape if hidden_grad else (0,)),
        weight.new_empty(weight.shape if weight_grad else (0,)),
    )


def _linear_sampler_setup(ctx, inputs, output):
    hidden, weight, token_ids, temperature, _, _, _, _, over = inputs
    ctx.save_for_backward(hidden, weight, token_ids, output[2], output[3], output[4], output[1])
    ctx.temperature = temperature
    ctx.over = over
    ctx.mark_non_differentiable(output[2], output[3], output[4])


def _linear_sampler_backward(ctx, grad_logp, grad_entropy, _g_lse, _g_mass, _g_min):
    hidden, weight, token_ids, lse, mass, kmin, entropy = ctx.saved_tensors
    want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    none = (None,) * 7
    if grad_logp is None and grad_entropy is None or not (want_h or want_w):
        return (None, None) + none
    gh, gw = torch.ops.grpokit.linear_token_logprobs_sampler_backward(
        hidden,
        weight,
        token_ids,
        lse,
        mass,
        kmin,
        entropy,
        grad_logp,
        grad_entropy,
        ctx.temperature,
        ctx.over,
        want_h,
        want_w,
    )
    return (gh if want_h else None, gw if want_w else None) + none


_linear_sampler_op.register_autograd(_linear_sampler_backward, setup_context=_linear_sampler_setup)


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    top_k=None,
    top_p=None,
    min_p=None,
    keep=None,
    sampler: str = "vllm",
    entropy=True,
    sum_sq_probs: bool = False,
    chunk_size: Optional[int] = None,
) -> LogprobsOutput:
    """Differentiable per-token log-probabilities and entropies of ``hidden · weightᵀ`` without
    materialising the logits (see :func:`grpokit.linear_token_logprobs`).

    Gradients flow to ``hidden`` and ``weight`` (each only if it requires grad); the backward
    recomputes the logits tile by tile. hidden (N, H) or (B, T, H), weight (V, H) — the LM head's
    ``lm_head.weight`` — token_ids (N,) or (B, T). Custom ops (``torch.ops.grpokit.linear_token_logprobs``
    and its backward): no graph break under ``torch.compile``.

    top_k, top_p, min_p, sampler, entropy: the sampler's truncation and the entropy's distribution,
    as in :func:`token_logprobs` (CPU; custom ops ``linear_token_logprobs_sampler`` and its backward).
    keep: the sampler's own kept set, replayed, as in :func:`token_logprobs` (rows are hidden's
    flattened rows; CPU; custom ops ``linear_token_logprobs_keep`` and its backward).

    Returns:
        ``LogprobsOutput(logp, entropy, sum_sq_probs)``; ``entropy`` is ``None`` with ``entropy=False``,
        ``sum_sq_probs`` (no gradient) unless ``sum_sq_probs=True``.
    """
    for name, t in (("hidden", hidden), ("weight", weight), ("token_ids", token_ids)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"grpokit.torch.linear_token_logprobs: {name} must be a torch tensor")
    chunk = _logprobs._chunk(chunk_size)  # validated here: 0 is the op's "engine default"
    over = _logprobs._entropy_over(entropy)
    temperature, sampler = _logprobs.sampler_options(temperature, sampler)
    truncated = top_k is not None or top_p is not None or min_p is not None
    if keep is not None:
        if sum_sq_probs or truncated:
            raise ValueError("keep: not available with top_k/top_p/min_p or sum_sq_probs")
        logp, ent = linear_keep_logprobs(hidden, weight, token_ids, keep, temperature, over == "sampler")
        return LogprobsOutput(logp, ent if over else None, None)
    if truncated:
        if sum_sq_probs:
            raise ValueError("sum_sq_probs: not available with top_k/top_p/min_p")
        logp, ent, _, _, _ = torch.ops.grpokit.linear_token_logprobs_sampler(
            hidden,
            weight,
            token_ids,
            temperature,
            _param(top_k),
            _param(top_p),
            _param(min_p),
            sampler,
            over == "sampler",
        )
        return LogprobsOutput(logp, ent if over else None, None)
    logp, ent, _, sq = torch.ops.grpokit.linear_token_logprobs(
        hidden, weight, token_ids, temperature, chunk, bool(sum_sq_probs)
    )
    return LogprobsOutput(logp, ent if over else None, sq if sum_sq_probs else None)
