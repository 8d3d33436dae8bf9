"""The token log-probability ops of ``grpokit.torch`` (imported from there) from logits, as
``torch.library`` custom ops with fake implementations and registered autograd formulas, so they run
under ``torch.compile`` without a graph break (those from hidden states × the output projection:
``_torch_linear_logprobs.py``)."""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import torch

from . import _logprobs
from ._torch_logprobs_keep import keep_logprobs


class LogprobsOutput(NamedTuple):
    """Per-token log-probabilities, entropies and (opt-in) Σπ² (float32; float64 for float64 inputs).

    ``sum_sq_probs`` (Σ_v p_v², with ``sum_sq_probs=True``) is a forward-only diagnostic: it does
    not require grad, and no gradient flows through it."""

    logp: torch.Tensor
    entropy: Optional[torch.Tensor]
    sum_sq_probs: Optional[torch.Tensor] = None


# ---- token log-probabilities: torch.library custom ops ---------------------------------------------
#
# ``grpokit::token_logprobs`` and ``grpokit::linear_token_logprobs`` (forwards; the latter in
# _torch_linear_logprobs.py) and their backwards are
# custom ops with fake implementations, so torch.compile keeps them in the graph (fullgraph=True works)
# and never traces into the engine call. The forward returns (logp, entropy, lse, sum_sq_probs); lse
# and sum_sq_probs are marked non-differentiable. Optional outputs are (0,) tensors (custom ops return
# no None). The backward's gradient through the entropy uses the saved entropy, so the forward always
# computes it (free: same pass).


def _result_dtype(x: torch.Tensor) -> torch.dtype:
    return torch.float64 if x.dtype == torch.float64 else torch.float32


@torch.library.custom_op("grpokit::token_logprobs", mutates_args=())
def _token_logprobs_op(
    logits: torch.Tensor, token_ids: torch.Tensor, temperature: float, sum_sq_probs: bool, inplace_grad: bool
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r = _logprobs.token_logprobs(logits, token_ids, temperature=temperature, entropy=True, sum_sq_probs=sum_sq_probs)
    sq = r.sum_sq_probs if sum_sq_probs else r.logp.new_empty((0,))
    return r.logp, r.entropy, r.lse, sq


@_token_logprobs_op.register_fake
def _(logits, token_ids, temperature, sum_sq_probs, inplace_grad):
    shape, dt = logits.shape[:-1], _result_dtype(logits)
    return (
        logits.new_empty(shape, dtype=dt),
        logits.new_empty(shape, dtype=dt),
        logits.new_empty(shape, dtype=dt),
        logits.new_empty(shape if sum_sq_probs else (0,), dtype=dt),
    )


@torch.library.custom_op("grpokit::token_logprobs_backward", mutates_args=())
def _token_logprobs_backward_op(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: Optional[torch.Tensor],
    grad_entropy: Optional[torch.Tensor],
    temperature: float,
) -> torch.Tensor:
    saved = _logprobs.TokenLogprobs(logp=None, entropy=entropy, lse=lse, temperature=temperature)
    return _logprobs.token_logprobs_backward(logits, token_ids, saved, grad_logp, grad_entropy)


@_token_logprobs_backward_op.register_fake
def _(logits, token_ids, lse, entropy, grad_logp, grad_entropy, temperature):
    return logits.new_empty(logits.shape)  # the engine's gradient is a fresh contiguous buffer


# inplace_grad=True: the gradient overwrites the logits' buffer (a mutating op; returns nothing).
@torch.library.custom_op("grpokit::token_logprobs_backward_", mutates_args=("logits",))
def _token_logprobs_backward_inplace_op(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    lse: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: Optional[torch.Tensor],
    grad_entropy: Optional[torch.Tensor],
    temperature: float,
) -> None:
    saved = _logprobs.TokenLogprobs(logp=None, entropy=entropy, lse=lse, temperature=temperature)
    _logprobs.token_logprobs_backward(logits, token_ids, saved, grad_logp, grad_entropy, inplace_grad=True)


@_token_logprobs_backward_inplace_op.register_fake
def _(logits, token_ids, lse, entropy, grad_logp, grad_entropy, temperature):
    return None


def refuse_double_backward(op: str) -> None:
    """Raise where autograd would record a graph through a backward (create_graph=True, gradgradcheck):
    the engine's gradients are exact but not themselves differentiable, so a second derivative would
    silently come out as zero."""
    if torch.is_grad_enabled():
        raise RuntimeError(
            f"{op}: double backward is not supported (backward ran with create_graph=True); "
            "the gradient it returns is not differentiable"
        )


def _token_logprobs_setup(ctx, inputs, output):
    logits, token_ids, temperature, _, inplace_grad = inputs
    ctx.save_for_backward(logits, token_ids, output[2], output[1])
    ctx.temperature = temperature
    ctx.inplace_grad = inplace_grad
    ctx.mark_non_differentiable(output[2], output[3])


def _token_logprobs_backward(ctx, grad_logp, grad_entropy, _g_lse, _g_sq):
    refuse_double_backward("grpokit.torch.token_logprobs")
    logits, token_ids, lse, entropy = ctx.saved_tensors
    if grad_logp is None and grad_entropy is None or not ctx.needs_input_grad[0]:
        return None, None, None, None, None
    if ctx.inplace_grad:
        torch.ops.grpokit.token_logprobs_backward_(
            logits, token_ids, lse, entropy, grad_logp, grad_entropy, ctx.temperature
        )
        grad = logits
    else:
        grad = torch.ops.grpokit.token_logprobs_backward(
            logits, token_ids, lse, entropy, grad_logp, grad_entropy, ctx.temperature
        )
    return grad, None, None, None, None


_token_logprobs_op.register_autograd(_token_logprobs_backward, setup_context=_token_logprobs_setup)


# ---- under the sampler's truncation (top_k / top_p / min_p) -----------------------------------------
#
# ``grpokit::token_logprobs_sampler`` returns (logp, entropy, lse, kept_logmass, keep_min); the last
# three are saved for the backward (the kept set is {x ≥ keep_min}) and non-differentiable.


def _sampler_kwargs(temperature, top_k, top_p, min_p, sampler, over: bool) -> dict:
    """The NumPy-level functions' keyword arguments from the sampler ops' arguments."""
    entropy = "sampler" if over else "full"
    return dict(temperature=temperature, top_k=top_k, top_p=top_p, min_p=min_p, sampler=sampler, entropy=entropy)


def _sampler_saved(entropy, lse, kept_logmass, keep_min, temperature: float, over: bool) -> _logprobs.TokenLogprobs:
    """What the NumPy-level backwards read of a truncated forward."""
    return _logprobs.TokenLogprobs(
        logp=None,
        entropy=entropy,
        lse=lse,
        temperature=temperature,
        kept_logmass=kept_logmass,
        keep_min=keep_min,
        entropy_over="sampler" if over else "full",
    )


@torch.library.custom_op("grpokit::token_logprobs_sampler", mutates_args=())
def _token_logprobs_sampler_op(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    temperature: float,
    top_k: Optional[torch.Tensor],
    top_p: Optional[torch.Tensor],
    min_p: Optional[torch.Tensor],
    sampler: str,
    over: bool,
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    r = _logprobs.token_logprobs(logits, token_ids, **_sampler_kwargs(temperature, top_k, top_p, min_p, sampler, over))
    return r.logp, r.entropy, r.lse, r.kept_logmass, r.keep_min


@_token_logprobs_sampler_op.register_fake
def _(logits, token_ids, temperature, top_k, top_p, min_p, sampler, over):
    shape, dt = logits.shape[:-1], _result_dtype(logits)
    return tuple(logits.new_empty(shape, dtype=dt) for _ in range(5))


@torch.library.custom_op("grpokit::token_logprobs_sampler_backward", mutates_args=())
def _token_logprobs_sampler_backward_op(
    logits: torch.Tensor,
    token_ids: torch.Tensor,
    lse: torch.Tensor,
    kept_logmass: torch.Tensor,
    keep_min: torch.Tensor,
    entropy: torch.Tensor,
    grad_logp: Optional[torch.Tensor],
    grad_entropy: Optional[torch.Tensor],
    temperature: float,
    entropy_over_kept: bool,
) -> torch.Tensor:
    saved = _sampler_saved(entropy, lse, kept_logmass, keep_min, temperature, entropy_over_kept)
    return _logprobs.token_logprobs_backward(logits, token_ids, saved, grad_logp, grad_entropy)


@_token_logprobs_sampler_backward_op.register_fake
def _(logits, token_ids, lse, kept_logmass, keep_min, entropy, grad_logp, grad_entropy, temperature, over):
    return logits.new_empty(logits.shape)


def _sampler_setup(ctx, inputs, output):
    logits, token_ids, temperature, _, _, _, _, over = inputs
    ctx.save_for_backward(logits, token_ids, output[2], output[3], output[4], output[1])
    ctx.temperature = temperature
    ctx.over = over
    ctx.mark_non_differentiable(output[2], output[3], output[4])


def _sampler_backward(ctx, grad_logp, grad_entropy, _g_lse, _g_mass, _g_min):
    logits, token_ids, lse, mass, kmin, entropy = ctx.saved_tensors
    none = (None,) * 7
    if grad_logp is None and grad_entropy is None or not ctx.needs_input_grad[0]:
        return (None,) + none
    grad = torch.ops.grpokit.token_logprobs_sampler_backward(
        logits, token_ids, lse, mass, kmin, entropy, grad_logp, grad_entropy, ctx.temperature, ctx.over
    )
    return (grad,) + none


_token_logprobs_sampler_op.register_autograd(_sampler_backward, setup_context=_sampler_setup)


def _param(v) -> Optional[torch.Tensor]:
    """A sampler parameter as the op's tensor (a 0-dim one for a Python scalar)."""
    if v is None or isinstance(v, torch.Tensor):
        return v
    t = torch.as_tensor(v)
    return torch.as_tensor(v, dtype=torch.float64) if t.is_floating_point() else t  # 0.9, not float32's


def token_logprobs(
    logits: torch.Tensor,
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
    inplace_grad: bool = False,
) -> LogprobsOutput:
    """Differentiable per-token log-probabilities and entropies from logits.

    The forward is :func:`grpokit.token_logprobs` (one read of the logits); the backward is
    :func:`grpokit.token_logprobs_backward` (one read, one write), with whatever upstream gradients
    reach ``logp`` and ``entropy``. See those functions for shapes, dtypes and layouts: logits
    (N, V) or (B, T, V) with unit stride along V (``logits[:, :-1]`` is read without a copy),
    token_ids (N,) or (B, T); outputs float32 (float64 for float64 logits).

    Both directions are the custom ops ``torch.ops.grpokit.token_logprobs`` /
    ``token_logprobs_backward``: they work under ``torch.compile`` without a graph break.

    Args:
        top_k, top_p, min_p, sampler: the sampler's truncation, as in :func:`grpokit.token_logprobs`
            (scalars or per-row tensors; CPU and GPU). ``logp`` is then the log-probability under the
            sampler's distribution (−inf outside the kept set: count with
            ``torch.isneginf(out.logp).sum()``, mask before the loss); the gradient holds the kept
            set fixed and is 0 through a −inf ``logp``. Custom ops ``token_logprobs_sampler`` and
            its backward: no graph break under ``torch.compile``.
        keep: the sampler's own kept set, replayed (as in :func:`grpokit.token_logprobs`: a
            ``(keep_ids, keep_offsets)`` pair of tensors, vLLM's ``SamplingMask``, or a boolean
            mask); custom op ``token_logprobs_keep`` and its backward. CPU and GPU.
        entropy: ``True``/``"full"`` (whole vocabulary), ``"sampler"`` (the kept set), ``False``.
        sum_sq_probs: also return Σ_v p_v² per row (same pass; e.g. for the optimal token baseline).
            A diagnostic: it does not require grad.
        inplace_grad: write the logits gradient into the logits' own buffer in the backward (no
            second (N, V) buffer). Only when nothing else reads those logits afterwards — autograd
            cannot see the overwrite. Refused for a leaf tensor that requires grad.

    Returns:
        ``LogprobsOutput(logp, entropy, sum_sq_probs)``; ``entropy`` is ``None`` with
        ``entropy=False``, ``sum_sq_probs`` unless ``sum_sq_probs=True``.

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
    over = _logprobs._entropy_over(entropy)
    temperature, sampler = _logprobs.sampler_options(temperature, sampler)
    if keep is not None:
        if sum_sq_probs or inplace_grad or top_k is not None or top_p is not None or min_p is not None:
            raise ValueError("keep: not available with top_k/top_p/min_p, sum_sq_probs or inplace_grad")
        logp, ent = keep_logprobs(logits, token_ids, keep, temperature, over == "sampler")
        return LogprobsOutput(logp, ent if over else None, None)
    if top_k is not None or top_p is not None or min_p is not None:
        if sum_sq_probs or inplace_grad:
            name = "sum_sq_probs" if sum_sq_probs else "inplace_grad"
            raise ValueError(f"{name}: not available with top_k/top_p/min_p")
        logp, ent, _, _, _ = torch.ops.grpokit.token_logprobs_sampler(
            logits,
            token_ids,
            temperature,
            _param(top_k),
            _param(top_p),
            _param(min_p),
            sampler,
            over == "sampler",
        )
        return LogprobsOutput(logp, ent if over else None, None)
    logp, ent, _, sq = torch.ops.grpokit.token_logprobs(
        logits, token_ids, temperature, bool(sum_sq_probs), bool(inplace_grad)
    )
    return LogprobsOutput(logp, ent if over else None, sq if sum_sq_probs else None)
