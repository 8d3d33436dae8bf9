"""``grpokit.torch.token_logprobs_kl``: the policy's token log-probabilities, entropies and its full-
vocabulary KL from a reference, differentiable in the policy's logits, as ``torch.library`` custom ops
(no graph break under ``torch.compile``)."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from . import _arrays, _logprobs_kl
from ._torch_logprobs import _result_dtype, refuse_double_backward


class LogprobsKLOutput(NamedTuple):
    """Per-token log-probabilities, entropies and KL(π ‖ π_ref) (float32; float64 for float64 logits)."""

    logp: torch.Tensor
    entropy: torch.Tensor
    kl: torch.Tensor


# The forward returns (logp, entropy, kl, lse, ref_lse); lse and ref_lse are saved for the backward and
# non-differentiable. The reference gets no gradient.


@torch.library.custom_op("grpokit::token_logprobs_kl", mutates_args=())
def _token_logprobs_kl_op(
    logits: torch.Tensor, ref_logits: torch.Tensor, token_ids: torch.Tensor, temperature: float
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r = _logprobs_kl.token_logprobs_kl(logits, ref_logits, token_ids, temperature=temperature)
    return r.logp, r.entropy, r.kl, r.lse, r.ref_lse


@_token_logprobs_kl_op.register_fake
def _(logits, ref_logits, token_ids, temperature):
    shape, dt = logits.shape[:-1], _result_dtype(logits)
    return tuple(logits.new_empty(shape, dtype=dt) for _ in range(5))


@torch.library.custom_op("grpokit::token_logprobs_kl_backward", mutates_args=())
def _token_logprobs_kl_backward_op(
    logits: torch.Tensor,
    ref_logits: torch.Tensor,
    token_ids: torch.Tensor,
    lse: torch.Tensor,
    ref_lse: torch.Tensor,
    entropy: torch.Tensor,
    kl: torch.Tensor,
    grad_logp: Optional[torch.Tensor],
    grad_entropy: Optional[torch.Tensor],
    grad_kl: Optional[torch.Tensor],
    temperature: float,
) -> torch.Tensor:
    saved = _logprobs_kl.TokenLogprobsKL(
        logp=None, entropy=entropy, kl=kl, lse=lse, ref_lse=ref_lse, temperature=temperature
    )
    return _logprobs_kl.token_logprobs_kl_backward(
        logits, ref_logits, token_ids, saved, grad_logp, grad_entropy, grad_kl
    )


@_token_logprobs_kl_backward_op.register_fake
def _(logits, ref_logits, token_ids, lse, ref_lse, entropy, kl, grad_logp, grad_entropy, grad_kl, temperature):
    return logits.new_empty(logits.shape)  # the engine's gradient is a fresh contiguous buffer


def _setup(ctx, inputs, output):
    logits, ref_logits, token_ids, temperature = inputs
    logp, entropy, kl, lse, ref_lse = output
    ctx.save_for_backward(logits, ref_logits, token_ids, lse, ref_lse, entropy, kl)
    ctx.temperature = temperature
    ctx.mark_non_differentiable(lse, ref_lse)


def _backward(ctx, grad_logp, grad_entropy, grad_kl, _g_lse, _g_ref_lse):
    refuse_double_backward("grpokit.torch.token_logprobs_kl")
    if not ctx.needs_input_grad[0] or (grad_logp is None and grad_entropy is None and grad_kl is None):
        return None, None, None, None
    grad = torch.ops.grpokit.token_logprobs_kl_backward(
        *ctx.saved_tensors, grad_logp, grad_entropy, grad_kl, ctx.temperature
    )
    return grad, None, None, None


_token_logprobs_kl_op.register_autograd(_backward, setup_context=_setup)


def token_logprobs_kl(
    logits: torch.Tensor, ref_logits: torch.Tensor, token_ids: torch.Tensor, *, temperature: float = 1.0
) -> LogprobsKLOutput:
    """Differentiable per-token log-probabilities, entropies and full-vocabulary KL(π ‖ π_ref).

    The forward is :func:`grpokit.token_logprobs_kl` (one read of both logits), the backward
    :func:`grpokit.token_logprobs_kl_backward` (one read of both, one write), with whatever upstream
    gradients reach ``logp``, ``entropy`` and ``kl``; the reference's logits get no gradient (they
    are treated as detached). Custom ops ``torch.ops.grpokit.token_logprobs_kl`` and its backward:
    no graph break under ``torch.compile``.

    Returns:
        ``LogprobsKLOutput(logp, entropy, kl)``, each of shape ``logits.shape[:-1]``.

    Example:
        >>> import torch, grpokit.torch as gkt
        >>> logits = torch.zeros(1, 2, dtype=torch.float64, requires_grad=True)
        >>> out = gkt.token_logprobs_kl(logits, torch.log(torch.tensor([[0.25, 0.75]])).double(), torch.tensor([0]))
        >>> out.kl.sum().backward()
        >>> logits.grad  # p·(log p − log q − KL)
        tensor([[ 0.2747, -0.2747]], dtype=torch.float64)
    """
    if not all(isinstance(t, torch.Tensor) for t in (logits, ref_logits, token_ids)):
        raise TypeError("grpokit.torch.token_logprobs_kl: logits, ref_logits and token_ids must be torch tensors")
    logp, entropy, kl, _, _ = torch.ops.grpokit.token_logprobs_kl(
        logits, ref_logits.detach(), token_ids, _arrays.as_real(temperature, "temperature")
    )
    return LogprobsKLOutput(logp, entropy, kl)
