"""PyTorch autograd functions over the grpokit engine (``import grpokit.torch``).

Every function here takes and returns torch tensors on the tensors' own device; the forward and the
backward run in the engine (CPU or CUDA, on the current stream), zero-copy through DLPack.

Sections: token log-probabilities from logits; from hidden states and the output projection.
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
from torch.autograd.function import once_differentiable

from . import _logprobs

__all__ = ["LogprobsOutput", "linear_token_logprobs", "token_logprobs"]


class LogprobsOutput(NamedTuple):
    """Per-token log-probabilities and entropies (float32; float64 for float64 inputs)."""

    logp: torch.Tensor
    entropy: Optional[torch.Tensor]


# ---- token log-probabilities from logits -----------------------------------------------------------


class _TokenLogprobsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, logits, token_ids, temperature, inplace_grad):
        r = _logprobs.token_logprobs(logits, token_ids, temperature=temperature, entropy=True)
        ctx.save_for_backward(logits, token_ids, r.lse, r.entropy)
        ctx.temperature = temperature
        ctx.inplace_grad = inplace_grad
        return r.logp, r.entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logp, grad_entropy):
        logits, token_ids, lse, entropy = ctx.saved_tensors
        if grad_logp is None and grad_entropy is None or not ctx.needs_input_grad[0]:
            return None, None, None, None
        saved = _logprobs.TokenLogprobs(logp=None, entropy=entropy, lse=lse, temperature=ctx.temperature)
        grad = _logprobs.token_logprobs_backward(
            logits, token_ids, saved, grad_logp, grad_entropy, inplace_grad=ctx.inplace_grad
        )
        return grad, None, None, None


def token_logprobs(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    entropy: bool = True,
    inplace_grad: bool = False,
) -> LogprobsOutput:
    """Differentiable per-token log-probabilities and entropies from logits.

    The forward is :func:`grpokit.token_logprobs` (one read of the logits); the backward is
    :func:`grpokit.token_logprobs_backward` (one read, one write), with whatever upstream gradients
    reach ``logp`` and ``entropy``. See those functions for shapes, dtypes and layouts: logits
    (N, V) or (B, T, V) with unit stride along V (``logits[:, :-1]`` is read without a copy),
    token_ids (N,) or (B, T); outputs float32 (float64 for float64 logits).

    Args:
        inplace_grad: write the logits gradient into the logits' own buffer in the backward (no
            second (N, V) buffer). Only when nothing else reads those logits afterwards — autograd
            cannot see the overwrite. Refused for a leaf tensor that requires grad.

    Returns:
        ``LogprobsOutput(logp, entropy)``; ``entropy`` is ``None`` with ``entropy=False``.

    Example:
        >>> import torch, grpokit.torch as gkt
        >>> logits = torch.zeros(2, 4, requires_grad=True)
        >>> out = gkt.token_logprobs(logits, torch.tensor([0, 3]))
        >>> out.logp.sum().backward()
        >>> logits.grad[0]
        tensor([ 0.7500, -0.2500, -0.2500, -0.2500])
    """
    if not isinstance(logits, torch.Tensor) or not isinstance(token_ids, torch.Tensor):
        raise TypeError("grpokit.torch.token_logprobs: logits and token_ids must be torch tensors")
    if inplace_grad and logits.is_leaf and logits.requires_grad:
        raise ValueError(
            "inplace_grad=True: logits is a leaf tensor that requires grad; writing its gradient "
            "into it would overwrite its values (and alias .grad with them). Use it on the model's "
            "output logits, or inplace_grad=False"
        )
    logp, ent = _TokenLogprobsFunction.apply(logits, token_ids, float(temperature), bool(inplace_grad))
    return LogprobsOutput(logp, ent if entropy else None)


# ---- token log-probabilities from hidden states and the output projection ------------------------


class _LinearTokenLogprobsFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, hidden, weight, token_ids, temperature, chunk_size):
        r = _logprobs.linear_token_logprobs(
            hidden, weight, token_ids, temperature=temperature, entropy=True, chunk_size=chunk_size
        )
        ctx.save_for_backward(hidden, weight, token_ids, r.lse, r.entropy)
        ctx.temperature = temperature
        ctx.chunk_size = chunk_size
        return r.logp, r.entropy

    @staticmethod
    @once_differentiable
    def backward(ctx, grad_logp, grad_entropy):
        hidden, weight, token_ids, lse, entropy = ctx.saved_tensors
        want_h, want_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        if grad_logp is None and grad_entropy is None or not (want_h or want_w):
            return None, None, None, None, None
        saved = _logprobs.TokenLogprobs(logp=None, entropy=entropy, lse=lse, temperature=ctx.temperature)
        gh, gw = _logprobs.linear_token_logprobs_backward(
            hidden, weight, token_ids, saved, grad_logp, grad_entropy,
            hidden_grad=want_h, weight_grad=want_w, chunk_size=ctx.chunk_size,
        )
        return gh, gw, None, None, None


def linear_token_logprobs(
    hidden: torch.Tensor,
    weight: torch.Tensor,
    token_ids: torch.Tensor,
    *,
    temperature: float = 1.0,
    entropy: bool = True,
    chunk_size: Optional[int] = None,
) -> LogprobsOutput:
    """Differentiable per-token log-probabilities and entropies of ``hidden · weightᵀ`` without
    materialising the logits (see :func:`grpokit.linear_token_logprobs`).

    Gradients flow to ``hidden`` and ``weight`` (each only if it requires grad); the backward
    recomputes the logits tile by tile. hidden (N, H) or (B, T, H), weight (V, H) — the LM head's
    ``lm_head.weight`` — token_ids (N,) or (B, T).

    Returns:
        ``LogprobsOutput(logp, entropy)``; ``entropy`` is ``None`` with ``entropy=False``.
    """
    for name, t in (("hidden", hidden), ("weight", weight), ("token_ids", token_ids)):
        if not isinstance(t, torch.Tensor):
            raise TypeError(f"grpokit.torch.linear_token_logprobs: {name} must be a torch tensor")
    logp, ent = _LinearTokenLogprobsFunction.apply(hidden, weight, token_ids, float(temperature), chunk_size)
    return LogprobsOutput(logp, ent if entropy else None)
