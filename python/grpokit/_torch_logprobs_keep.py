"""Exact replay of the sampler's kept set in ``grpokit.torch.token_logprobs(..., keep=...)`` and
``linear_token_logprobs(..., keep=...)``: the custom ops ``grpokit::token_logprobs_keep``,
``grpokit::linear_token_logprobs_keep`` and their backwards (fake implementations, registered
autograd), so ``torch.compile`` keeps them in the graph. The forwards return (logp, entropy, lse,
kept_logmass); the last two are saved for the backward with the CSR pair and are non-differentiable."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from . import _linear_logprobs, _logprobs
from ._logprobs_keep import keep_from_mask


def _saved(entropy, lse, kept_logmass, keep_ids, keep_offsets, temperature: float, over: bool):
    """What the NumPy-level backward reads of a replayed forward."""
    return _logprobs.TokenLogprobs(
        logp=None,
        entropy=entropy,
        lse=lse,
        temperature=temperature,
        kept_logmass=kept_logmass,
        entropy_over="sampler" if over else "full",
        keep=(keep_ids, keep_offsets),
    )


@torch.library.custom_op("grpokit::token_logprobs_keep", mutates_args=())
def _keep_op(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    keep_ids: torch.Tensor,
    keep_offsets: torch.Tensor,
    temperature: float,
    over: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    entropy = "sampler" if over else "full"
    r = _logprobs.token_logprobs(
        logits, token_ids, temperature=temperature, keep=(keep_ids, keep_offsets), entropy=entropy
    )
    return r.logp, r.entropy, r.lse, r.kept_logmass


@_keep_op.register_fake
def _(logits, token_ids, keep_ids, keep_offsets, temperature, over):
    dt = getattr(torch, _logprobs._result_dtype(logits))
    return tuple(logits.new_empty(logits.shape[:-1], dtype=dt) for _ in range(4))


@torch.library.custom_op("grpokit::token_logprobs_keep_backward", mutates_args=())
def _keep_backward_op(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    keep_ids: torch.Tensor,
    keep_offsets: torch.Tensor,
    lse: torch.Tensor,
    kept_logmass: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: Optional[torch.Tensor],
    grad_entropy: Optional[torch.Tensor],
    temperature: float,
    over: bool,
) -> torch.Tensor:
    saved = _saved(entropy, lse, kept_logmass, keep_ids, keep_offsets, temperature, over)
    return _logprobs.token_logprobs_backward(logits, token_ids, saved, grad_logp, grad_entropy)


@_keep_backward_op.register_fake
def _(logits, token_ids, keep_ids, keep_offsets, lse, kept_logmass, entropy, grad_logp, grad_entropy, t, over):
    return logits.new_empty(logits.shape)


def _setup(ctx, inputs, output):
    logits, token_ids, keep_ids, keep_offsets, temperature, over = inputs
    ctx.save_for_backward(logits, token_ids, keep_ids, keep_offsets, output[2], output[3], output[1])
    ctx.temperature, ctx.over = temperature, over
    ctx.mark_non_differentiable(output[2], output[3])


def _backward(ctx, grad_logp, grad_entropy, _g_lse, _g_mass):
    none = (None,) * 5
    if grad_logp is None and grad_entropy is None or not ctx.needs_input_grad[0]:
        return (None,) + none
    grad = torch.ops.grpokit.token_logprobs_keep_backward(
        *ctx.saved_tensors, grad_logp, grad_entropy, ctx.temperature, ctx.over
    )
    return (grad,) + none


_keep_op.register_autograd(_backward, setup_context=_setup)


def _keep_pair(keep: Any, device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    """``keep`` in any form :func:`grpokit.token_logprobs` takes as the ops' (keep_ids, keep_offsets)
    (a mask goes through ``nonzero``, which torch.compile cannot keep in one graph)."""
    if hasattr(keep, "token_ids") and hasattr(keep, "offsets"):
        keep = (keep.token_ids, keep.offsets)
    if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:
        keep = keep_from_mask(keep)
    if not (isinstance(keep, (tuple, list)) and len(keep) == 2):
        raise TypeError(f"keep: expected (keep_ids, keep_offsets) or a boolean mask tensor, got {type(keep).__name__}")
    ids, offsets = (torch.as_tensor(k, device=device) for k in keep)
    return ids, offsets


def keep_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, keep: Any, temperature: float, over: bool):
    """(logp, entropy) under the replayed kept set."""
    ids, offsets = _keep_pair(keep, logits.device)
    logp, ent, _, _ = torch.ops.grpokit.token_logprobs_keep(logits, token_ids, ids, offsets, temperature, over)
    return logp, ent


# ---- from hidden states and the output projection ----------------------------------------------------


@torch.library.custom_op("grpokit::linear_token_logprobs_keep", mutates_args=())
def _linear_keep_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    keep_ids: torch.Tensor,
    keep_offsets: torch.Tensor,
    temperature: float,
    over: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    entropy = "sampler" if over else "full"
    r = _linear_logprobs.linear_token_logprobs(
        hidden, weight, token_ids, temperature=temperature, keep=(keep_ids, keep_offsets), entropy=entropy
    )
    return r.logp, r.entropy, r.lse, r.kept_logmass


@_linear_keep_op.register_fake
def _(hidden, weight, token_ids, keep_ids, keep_offsets, temperature, over):
    dt = getattr(torch, _logprobs._result_dtype(hidden))
    return tuple(hidden.new_empty(hidden.shape[:-1], dtype=dt) for _ in range(4))


@torch.library.custom_op("grpokit::linear_token_logprobs_keep_backward", mutates_args=())
def _linear_keep_backward_op(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    keep_ids: torch.Tensor,
    keep_offsets: torch.Tensor,
    lse: torch.Tensor,
    kept_logmass: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: Optional[torch.Tensor],
    grad_entropy: Optional[torch.Tensor],
    temperature: float,
    over: bool,
    hidden_grad: bool,
    weight_grad: bool,
) -> Tuple[torch.Tensor, torch.Tensor]:
    saved = _saved(entropy, lse, kept_logmass, keep_ids, keep_offsets, temperature, over)
    gh, gw = _linear_logprobs.linear_token_logprobs_backward(
        hidden, weight, token_ids, saved, grad_logp, grad_entropy, hidden_grad=hidden_grad, weight_grad=weight_grad
    )
    return (gh if gh is not None else hidden.new_empty((0,)), gw if gw is not None else weight.new_empty((0,)))


@_linear_keep_backward_op.register_fake
def _(hidden, weight, token_ids, k_ids, k_off, lse, mass, entropy, grad_logp, grad_entropy, t, over, want_h, want_w):
    return (
        hidden.new_empty(hidden.shape if want_h else (0,)),
        weight.new_empty(weight.shape if want_w else (0,)),
    )


def _linear_setup(ctx, inputs, output):
    hidden, weight, token_ids, keep_ids, keep_offsets, temperature, over = inputs
    ctx.save_for_backward(hidden, weight, token_ids, keep_ids, keep_offsets, output[2], output[3], output[1])
    ctx.temperature, ctx.over = temperature, over
    ctx.mark_non_differentiable(output[2], output[3])


def _linear_backward(ctx, grad_logp, grad_entropy, _g_lse, _g_mass):
    want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
    none = (None,) * 5
    if grad_logp is None and grad_entropy is None or not (want_h or want_w):
        return (None, None) + none
    gh, gw = torch.ops.grpokit.linear_token_logprobs_keep_backward(
        *ctx.saved_tensors, grad_logp, grad_entropy, ctx.temperature, ctx.over, want_h, want_w
    )
    return (gh if want_h else None, gw if want_w else None) + none


_linear_keep_op.register_autograd(_linear_backward, setup_context=_linear_setup)


def linear_keep_logprobs(hidden, weight, token_ids, keep: Any, temperature: float, over: bool):
    """(logp, entropy) of ``hidden · weightᵀ`` under the replayed kept set."""
    ids, offsets = _keep_pair(keep, hidden.device)
    logp, ent, _, _ = torch.ops.grpokit.linear_token_logprobs_keep(
        hidden, weight, token_ids, ids, offsets, temperature, over
    )
    return logp, ent
