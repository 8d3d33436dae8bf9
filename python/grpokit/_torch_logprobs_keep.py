"""Exact replay of the sampler's kept set in ``grpokit.torch.token_logprobs(..., keep=...)``: the
custom op ``grpokit::token_logprobs_keep`` and its backward (fake implementations, registered
autograd), so ``torch.compile`` keeps them in the graph. The forward returns (logp, entropy, lse,
kept_logmass); the last two are saved for the backward with the CSR pair and are non-differentiable."""

from __future__ import annotations

from typing import Any, Optional, Tuple

import torch

from . import _logprobs
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


def keep_logprobs(logits: torch.Tensor, token_ids: torch.Tensor, keep: Any, temperature: float, over: bool):
    """(logp, entropy) under the replayed kept set; ``keep`` in any form :func:`grpokit.token_logprobs`
    takes (a mask goes through ``nonzero``, which torch.compile cannot keep in one graph)."""
    if hasattr(keep, "token_ids") and hasattr(keep, "offsets"):
        keep = (keep.token_ids, keep.offsets)
    if isinstance(keep, torch.Tensor) and keep.dtype == torch.bool:
        keep = keep_from_mask(keep)
    if not (isinstance(keep, (tuple, list)) and len(keep) == 2):
        raise TypeError(f"keep: expected (keep_ids, keep_offsets) or a boolean mask tensor, got {type(keep).__name__}")
    ids, offsets = (torch.as_tensor(k, device=logits.device) for k in keep)
    logp, ent, _, _ = torch.ops.grpokit.token_logprobs_keep(logits, token_ids, ids, offsets, temperature, over)
    return logp, ent
