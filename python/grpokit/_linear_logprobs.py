"""Per-token log-probabilities and entropies from hidden states and the output projection
(``logits = hidden · weightᵀ``), computed a tile of logits at a time (never the whole (N, V) matrix),
and their gradients with respect to the hidden states and the weight."""

from __future__ import annotations

from typing import Any, Optional

from . import _arrays, _backend
from ._logprobs import (
    TokenLogprobs,
    _chunk,
    _count_outside,
    _entropy_over,
    _raise_if_bad_rows,
    _result_dtype,
    _row_param,
    sampler_options,
)
from ._logprobs_keep import prepare_keep


def _prepare_linear(hidden: Any, weight: Any, token_ids: Any):
    h = _arrays.as_input(hidden, "hidden")
    w = _arrays.as_input(weight, "weight")
    ids = _arrays.as_input(token_ids, "token_ids", default="int64")
    place = _arrays.common_placement({"hidden": h, "weight": w, "token_ids": ids})
    if len(h.shape) not in (2, 3):
        raise ValueError(f"hidden: expected a (N, H) or (B, T, H) array, got shape {tuple(h.shape)}")
    lead = tuple(int(s) for s in h.shape[:-1])
    if tuple(int(s) for s in ids.shape) != lead:
        raise ValueError(
            f"token_ids: expected shape {lead} (hidden without its last dimension), got {tuple(ids.shape)}"
        )
    if len(lead) == 2:  # (B, T, H) -> (B·T, H): a view when the rows are evenly strided
        h = h.reshape(-1, h.shape[-1])
        ids = ids.reshape(-1)
    return h, w, ids, place, lead


def _flat(x: Any, lead: tuple) -> Any:
    return x.reshape(-1) if x is not None and len(lead) == 2 else x


def _workspace(backend: Any, place: Any, h: Any, w: Any, ids: Any, chunk: int, backward: bool, stream: int) -> Any:
    nbytes = backend.linear_workspace_bytes(h, w, ids, chunk, backward, stream)
    return _arrays.empty(place, (int(nbytes),), "uint8", like=h) if nbytes else None


def linear_token_logprobs(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    *,
    temperature: float = 1.0,
    top_k: Any = None,
    top_p: Any = None,
    min_p: Any = None,
    keep: Any = None,
    sampler: str = "vllm",
    entropy: Any = True,
    sum_sq_probs: bool = False,
    chunk_size: Optional[int] = None,
    check_finite: bool = False,
    stream: Any = None,
) -> TokenLogprobs:
    """:func:`token_logprobs` of ``logits = hidden · weightᵀ``, never holding more than one tile of
    logits (chunked GEMM plus online log-sum-exp): memory O(N·H + tile) instead of O(N·V).

    Args:
        hidden: (N, H) or (B, T, H) hidden states (unit stride along H); row t scores token t.
        weight: (V, H) output projection (the LM head), unit stride along H, same dtype as hidden.
        token_ids: (N,) or (B, T) int32/int64 ids in [0, V).
        temperature, top_k, top_p, min_p, keep, sampler, entropy, sum_sq_probs, check_finite, stream: as
            in :func:`token_logprobs` (``keep``'s rows are hidden's flattened rows; a boolean mask has
            the logits' shape ``hidden.shape[:-1] + (V,)``). With truncation or ``keep`` (CPU) a tile
            holds whole rows — blocks of max(1, 2²⁴ / V) rows × V — as the selections and the kept
            set's sums need the row (chunk_size is ignored).
        chunk_size: vocabulary entries per logits tile (default 4096 on CPU, 2048 on GPU). The tile
            holds min(N, 1024) × chunk_size float32 values on the CPU, N × chunk_size on the GPU.

    Dtypes: CPU float32 (float32 GEMM and math) or float64; GPU float32, bfloat16 or float16 with
    float32 accumulation (cuBLAS). Results are float32 (float64 for float64 inputs).

    Returns:
        :class:`TokenLogprobs` (logp, entropy, lse and sum_sq_probs of shape ``hidden.shape[:-1]``).
    """
    h, w, ids, place, lead = _prepare_linear(hidden, weight, token_ids)
    temperature, sampler = sampler_options(temperature, sampler)
    n = int(h.shape[0])
    dtype = _result_dtype(h)
    chunk = _chunk(chunk_size)
    backend = _backend.for_placement(place)
    s = _arrays.resolve_stream(place, stream)
    over = _entropy_over(entropy)
    params = [_row_param(v, name, lead, name == "top_k") for v, name in ((top_k, "top_k"), (top_p, "top_p"))]
    params.append(_row_param(min_p, "min_p", lead, False))
    truncated = any(v is not None for v in params)
    if keep is not None:
        if truncated:
            raise ValueError("keep: replays the sampler's kept set; pass it or top_k/top_p/min_p, not both")
        keep = prepare_keep(keep, lead + (int(w.shape[0]),))
        _arrays.common_placement({"hidden": h, "keep_ids": keep[0], "keep_offsets": keep[1]})
    if truncated or keep is not None:
        if sum_sq_probs:
            raise ValueError("sum_sq_probs: not available with top_k/top_p/min_p/keep; call without them for Σπ²")
        with _arrays.allocating_on(place, s):
            outs = [_arrays.empty(place, (n,), dtype, like=h) for _ in range(5 if truncated else 4)]
        if not over:
            outs[1] = None
        if keep is not None:
            backend.linear_token_logprobs_keep(h, w, ids, *outs, float(temperature), *keep, over == "sampler", s)
        else:
            flat = [None if v is None else v.reshape(-1) for v in params]
            backend.linear_token_logprobs_sampler(
                h, w, ids, *outs, float(temperature), *flat, sampler, over == "sampler", s
            )
        lp, ent, lse, mass, *kmin = (None if x is None else _arrays.finish(place, x.reshape(lead)) for x in outs)
        return TokenLogprobs(
            logp=lp,
            entropy=ent,
            lse=lse,
            temperature=float(temperature),
            kept_logmass=mass,
            keep_min=kmin[0] if kmin else None,
            num_outside=_count_outside(lp),
            entropy_over=over or "full",
            keep=keep,
        )
    with _arrays.allocating_on(place, s):  # from the pool of the stream the kernels write on
        logp = _arrays.empty(place, (n,), dtype, like=h)
        lse = _arrays.empty(place, (n,), dtype, like=h)
        ent = _arrays.empty(place, (n,), dtype, like=h) if entropy else None
        sq = _arrays.empty(place, (n,), dtype, like=h) if sum_sq_probs else None
        ws = _workspace(backend, place, h, w, ids, chunk, False, s)
    backend.linear_token_logprobs(
        h, w, ids, logp, ent, lse, ws, temperature=float(temperature), chunk_size=chunk, sum_sq_probs=sq, stream=s
    )
    if place.is_cuda and check_finite:
        _raise_if_bad_rows(lse, "hidden", s)

    def shaped(x: Any) -> Any:
        return None if x is None else _arrays.finish(place, x.reshape(lead))

    return TokenLogprobs(
        logp=shaped(logp), entropy=shaped(ent), lse=shaped(lse), temperature=float(temperature), sum_sq_probs=shaped(sq)
    )


def linear_token_logprobs_backward(
    hidden: Any,
    weight: Any,
    token_ids: Any,
    saved: TokenLogprobs,
    grad_logp: Any = None,
    grad_entropy: Any = None,
    *,
    hidden_grad: bool = True,
    weight_grad: bool = True,
    chunk_size: Optional[int] = None,
    stream: Any = None,
) -> tuple:
    """Gradients of :func:`linear_token_logprobs` with respect to ``hidden`` and ``weight``.

    Recomputes each tile of logits, turns it into ∂L/∂logits (the formula of
    :func:`token_logprobs_backward`) and accumulates ``grad_hidden += ∂L/∂logits · W_chunk`` and
    ``grad_weight[chunk] = ∂L/∂logitsᵀ · hidden``.

    Args:
        hidden, weight, token_ids: as passed to :func:`linear_token_logprobs`.
        saved: the :class:`TokenLogprobs` it returned.
        grad_logp, grad_entropy: upstream gradients (shape ``hidden.shape[:-1]``); ``None`` is zero.
        hidden_grad, weight_grad: which gradients to compute (skip the weight's for a frozen head).
        chunk_size, stream: as in :func:`linear_token_logprobs`.

    Returns:
        ``(grad_hidden, grad_weight)``, each shaped and typed like its input, or ``None`` when not
        requested.
    """
    if not isinstance(saved, TokenLogprobs):
        raise TypeError(
            f"saved: expected the TokenLogprobs returned by linear_token_logprobs, got {type(saved).__name__}"
        )
    h, w, ids, place, lead = _prepare_linear(hidden, weight, token_ids)
    lse = _flat(_arrays.as_input(saved.lse, "lse"), lead)
    ent = _flat(_arrays.as_input(saved.entropy, "entropy"), lead)
    ga = _flat(_arrays.as_input(grad_logp, "grad_logp"), lead)
    gb = _flat(_arrays.as_input(grad_entropy, "grad_entropy"), lead)
    _arrays.common_placement({"hidden": h, "lse": lse, "entropy": ent, "grad_logp": ga, "grad_entropy": gb})
    dt = _arrays.dtype_name(h)
    chunk = _chunk(chunk_size)
    backend = _backend.for_placement(place)
    s = _arrays.resolve_stream(place, stream)
    with _arrays.allocating_on(place, s):  # from the pool of the stream the kernels write on
        gh = _arrays.empty(place, tuple(int(d) for d in h.shape), dt, like=h) if hidden_grad else None
        gw = _arrays.empty(place, tuple(int(d) for d in w.shape), dt, like=h) if weight_grad else None
        whole_rows = saved.keep_min is not None or saved.keep is not None  # the CPU's own tiles
        ws = None if whole_rows else _workspace(backend, place, h, w, ids, chunk, True, s)
    if saved.keep is not None:  # the replayed kept set
        km = _flat(_arrays.as_input(saved.kept_logmass, "kept_logmass"), lead)
        backend.linear_token_logprobs_keep_backward(
            h, w, ids, lse, km, ent, ga, gb, gh, gw, saved.temperature, *saved.keep, saved.entropy_over == "sampler", s
        )
    elif saved.keep_min is not None:  # under the sampler's truncation: the kept set as saved
        km = _flat(_arrays.as_input(saved.kept_logmass, "kept_logmass"), lead)
        kn = _flat(_arrays.as_input(saved.keep_min, "keep_min"), lead)
        over = saved.entropy_over == "sampler"
        backend.linear_token_logprobs_sampler_backward(
            h, w, ids, lse, km, kn, ent, ga, gb, gh, gw, saved.temperature, over, s
        )
    else:
        backend.linear_token_logprobs_backward(
            h, w, ids, lse, ent, ga, gb, gh, gw, ws, temperature=saved.temperature, chunk_size=chunk, stream=s
        )
    if gh is not None:
        gh = _arrays.finish(place, gh.reshape(tuple(int(s) for s in hidden.shape)))
    return gh, (_arrays.finish(place, gw) if gw is not None else None)
