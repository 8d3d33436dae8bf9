"""The KL divergence of the policy from a reference over the whole vocabulary, per token, fused with the
token log-probabilities and entropies: one pass over the policy's and the reference's logits, no
(N, V) array (ROLL's and TRL's ``kl_penalty="full"``; docs/logprobs.md)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from . import _arrays, _backend
from ._logprobs import _prepare, _raise_if_bad_rows, _result_dtype


@dataclass(frozen=True)
class TokenLogprobsKL:
    """What :func:`token_logprobs_kl` returns.

    Attributes:
        logp: log π(token_t | row t) of the policy, shape ``logits.shape[:-1]``.
        entropy: −Σ_v p_v log p_v of the policy's row, same shape.
        kl: KL(π ‖ π_ref) = Σ_v p_v (log p_v − log q_v) over the whole vocabulary, same shape (≥ 0;
            +inf where the reference gives probability 0 to a token the policy does not).
        lse, ref_lse: log Σ_v exp(logits_v / τ) of the policy and of the reference; saved for the
            backward.
        temperature: the temperature used (needed by the backward).

    The arrays are float32 (float64 for float64 logits), of the caller's kind and device.
    """

    logp: Any
    entropy: Any
    kl: Any
    lse: Any
    ref_lse: Any
    temperature: float


def _prepare_ref(x: Any, ref_logits: Any) -> Any:
    y = _arrays.as_input(ref_logits, "ref_logits", default="float64")
    _arrays.common_placement({"logits": x, "ref_logits": y})
    return y


def token_logprobs_kl(
    logits: Any,
    ref_logits: Any,
    token_ids: Any,
    *,
    temperature: float = 1.0,
    check_finite: bool = False,
    stream: Any = None,
) -> TokenLogprobsKL:
    """Log-probability of each row's token, the row's entropy and its KL from the reference over the
    whole vocabulary, in one pass over both rows of logits.

    With a = logits / τ, b = ref_logits / τ, p = softmax(a), q = softmax(b) for one row:
    ``kl = Σ_v p_v (log p_v − log q_v)`` = KL(π_θ ‖ π_ref), ROLL's ``kl_penalty="full"``
    (``F.kl_div(ref_logprobs, logprobs, log_target=True).sum(-1)`` over full log-softmax rows) and
    TRL's former PPO trainer's; ``logp`` and ``entropy`` exactly as :func:`token_logprobs`.

    Args:
        logits: the policy's (N, V) or (B, T, V) logits, as in :func:`token_logprobs` (unit stride
            along V, any leading strides). float32, bfloat16 or float16 (float32 math); float64
            (float64 math). CPU.
        ref_logits: the reference model's logits for the same positions: same shape and dtype (its
            own strides). No gradient reaches it.
        token_ids: (N,) or (B, T) int32/int64 ids in [0, V).
        temperature: > 0; divides both logits (as TRL divides the policy's and the reference's).
        check_finite, stream: as in :func:`token_logprobs`.

    −inf logits are allowed on either side (probability 0).

    Returns:
        :class:`TokenLogprobsKL` (``logp``, ``entropy``, ``kl``, and ``lse``/``ref_lse`` for the
        backward), float32 (float64 for float64 logits), shape ``logits.shape[:-1]``.

    Example:
        >>> import numpy as np, grpokit
        >>> r = grpokit.token_logprobs_kl(np.zeros((1, 2)), np.log([[0.25, 0.75]]), [0])
        >>> round(float(r.kl[0]), 6)  # 0.5·log(0.5/0.25) + 0.5·log(0.5/0.75)
        0.143841
    """
    x, ids, place = _prepare(logits, token_ids)
    y = _prepare_ref(x, ref_logits)
    temperature = _arrays.as_real(temperature, "temperature")
    shape = tuple(int(s) for s in x.shape[:-1])
    dtype = _result_dtype(x)
    handle = _arrays.resolve_stream(place, stream)
    with _arrays.allocating_on(place, handle):  # from the pool of the stream the kernels write on
        logp, ent, kl, lse, ref_lse = (_arrays.empty(place, shape, dtype, like=x) for _ in range(5))
    backend = _backend.for_placement(place)
    backend.token_logprobs_kl(x, y, ids, logp, ent, kl, lse, ref_lse, float(temperature), handle)
    if place.is_cuda and check_finite:
        _raise_if_bad_rows(lse, "logits", handle)
        _raise_if_bad_rows(ref_lse, "ref_logits", handle)
    out = [_arrays.finish(place, a) for a in (logp, ent, kl, lse, ref_lse)]
    return TokenLogprobsKL(*out, temperature=float(temperature))


def token_logprobs_kl_backward(
    logits: Any,
    ref_logits: Any,
    token_ids: Any,
    saved: TokenLogprobsKL,
    grad_logp: Any = None,
    grad_entropy: Any = None,
    grad_kl: Any = None,
    *,
    out: Any = None,
    stream: Any = None,
) -> Any:
    """The policy logits' gradient from upstream gradients of :func:`token_logprobs_kl`'s outputs.

    For one row (y the token, a, b, k the upstream gradients of logp, entropy and kl):
    ``∂L/∂logits_v = (a·[v = y] − p_v·(a + b·(log p_v + entropy)) + k·p_v·(log p_v − log q_v − kl)) / τ``,
    in one read of both rows and one write. The reference gets no gradient.

    Args:
        logits, ref_logits, token_ids: exactly as passed to :func:`token_logprobs_kl`.
        saved: the :class:`TokenLogprobsKL` that call returned.
        grad_logp, grad_entropy, grad_kl: ∂L/∂logp, ∂L/∂entropy, ∂L/∂kl, shape
            ``logits.shape[:-1]``, float32/float64; ``None`` means zero.
        out: a preallocated gradient buffer (shape and dtype of ``logits``, unit stride along V),
            or the logits themselves (in-place); it must not overlap ``ref_logits``.
        stream: CUDA stream for GPU inputs (default: the caller's current stream).

    Returns:
        The gradient (``out`` when given), shaped and typed like ``logits``.
    """
    if not isinstance(saved, TokenLogprobsKL):
        raise TypeError(
            f"saved: expected the TokenLogprobsKL returned by token_logprobs_kl, got {type(saved).__name__}"
        )
    x, ids, place = _prepare(logits, token_ids)
    y = _prepare_ref(x, ref_logits)
    arrays = {
        name: _arrays.as_input(value, name)
        for name, value in (
            ("lse", saved.lse),
            ("ref_lse", saved.ref_lse),
            ("entropy", saved.entropy),
            ("kl", saved.kl),
            ("grad_logp", grad_logp),
            ("grad_entropy", grad_entropy),
            ("grad_kl", grad_kl),
        )
    }
    _arrays.common_placement({"logits": x, **arrays})
    handle = _arrays.resolve_stream(place, stream)
    if out is None:
        with _arrays.allocating_on(place, handle):
            out = _arrays.empty(place, tuple(int(s) for s in x.shape), _arrays.dtype_name(x), like=x)
    else:
        out = _arrays.as_input(out, "out", writable=True)
        _arrays.common_placement({"logits": x, "out": out})
    backend = _backend.for_placement(place)
    backend.token_logprobs_kl_backward(x, y, ids, *arrays.values(), out, saved.temperature, handle)
    return _arrays.finish(place, out)
