"""Per-token log-probabilities and entropies from logits, and their logits gradient, computed by the
engine in one pass over the logits (no softmax is materialised)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Optional, Tuple

import numpy as np

from . import _arrays, _backend
from ._logprobs_keep import prepare_keep


@dataclass(frozen=True)
class TokenLogprobs:
    """What :func:`token_logprobs` returns.

    Attributes:
        logp: log π(token_t | row t), shape ``logits.shape[:-1]``.
        entropy: −Σ_v p_v log p_v of the row's (temperature-scaled) distribution, same shape, or
            ``None`` when ``entropy=False``.
        lse: log Σ_v exp(logits_v / temperature), same shape; saved for the backward.
        temperature: the temperature used (needed by the backward).
        sum_sq_probs: Σ_v p_v² of the row's (temperature-scaled) distribution, same shape, or
            ``None`` unless ``sum_sq_probs=True``. A forward-only diagnostic (no gradient).
        kept_logmass: with ``top_k``/``top_p``/``min_p``: log Σ_{v kept} p_v (≤ 0), the log of the
            full distribution's mass that the sampler keeps; ``None`` without truncation.
        keep_min: with truncation: the smallest kept logit of each row (raw, before the
            temperature); the kept set is ``{v : logits_v ≥ keep_min}``. ``None`` without.
        num_outside: with truncation: how many tokens have logp = −inf, i.e. lie outside the
            kept set (or have a −inf logit). ``None`` without truncation. (On the GPU, counting
            synchronises the host once.)
        entropy_over: ``"full"`` (the whole vocabulary) or ``"sampler"`` (the kept set).
        keep: with ``keep=``: the ``(keep_ids, keep_offsets)`` pair replayed (the backward reads it);
            ``kept_logmass`` and ``num_outside`` are then those of that set, ``keep_min`` is ``None``.

    The arrays are float32 (float64 for float64 logits), of the caller's kind and device.
    """

    logp: Any
    entropy: Any
    lse: Any
    temperature: float
    sum_sq_probs: Any = None
    kept_logmass: Any = None
    keep_min: Any = None
    num_outside: Optional[int] = None
    entropy_over: str = "full"
    keep: Any = None


def _result_dtype(logits: Any) -> str:
    return "float64" if _arrays.dtype_name(logits) == "float64" else "float32"


def _prepare(logits: Any, token_ids: Any):
    x = _arrays.as_input(logits, "logits", default="float64")
    ids = _arrays.as_input(token_ids, "token_ids", default="int64")
    place = _arrays.common_placement({"logits": x, "token_ids": ids})
    if len(x.shape) not in (2, 3):
        raise ValueError(f"logits: expected a (N, V) or (B, T, V) array, got shape {tuple(x.shape)}")
    return x, ids, place


def _raise_if_bad_rows(values: Any, name: str, handle: int = 0) -> None:
    """Opt-in check of GPU results: the kernels mark bad rows with NaN/±inf instead of raising. The
    check reads them on the stream the kernels ran on (`handle`), not the current one."""
    if _arrays._is_torch(values):
        import torch

        with _on_stream(values, handle):
            bad = not bool(torch.isfinite(values).all().item())
    else:
        mod = __import__(_arrays._module_name(values))
        with _on_stream(values, handle):
            bad = not bool(mod.isfinite(values).all())
    if bad:
        raise ValueError(f"{name}: a row has a token id outside [0, V), NaN or +inf logits, or no finite logit")


def _on_stream(like: Any, handle: int) -> Any:
    """A context that makes the explicit stream `handle` current for torch/CuPy work (a no-op when it
    already is, or for the default streams 0-2)."""
    if handle > 2 and _arrays._is_torch(like):
        import torch

        if handle != torch.cuda.current_stream(like.device).cuda_stream:
            return torch.cuda.stream(torch.cuda.ExternalStream(handle, device=like.device))
    elif handle > 2 and _arrays._module_name(like) == "cupy":
        import cupy

        if handle != cupy.cuda.get_current_stream().ptr:
            return cupy.cuda.ExternalStream(handle)
    return contextlib.nullcontext()


def sampler_options(temperature: Any, sampler: Any) -> Tuple[float, str]:
    """temperature as a float (its range is the engine's check) and the sampler convention's name."""
    if sampler not in ("vllm", "sglang"):
        raise ValueError(f'sampler: expected "vllm" or "sglang", got {sampler!r}')
    return _arrays.as_real(temperature, "temperature"), sampler


def _entropy_over(entropy: Any) -> Optional[str]:
    """entropy= as None (not computed), "full" or "sampler"; True is "full"."""
    if entropy is True or entropy == "full":
        return "full"
    if entropy is False or entropy is None:
        return None
    if entropy == "sampler":
        return "sampler"
    raise ValueError(f'entropy: expected True, False, "full" or "sampler", got {entropy!r}')


def _row_param(value: Any, name: str, shape: tuple, integer: bool) -> Any:
    """A per-row sampler parameter as a NumPy array of the leading shape (a scalar broadcast with
    stride 0); range checks are the engine's."""
    if value is None:
        return None
    if _arrays._is_torch(value):
        value = value.detach().cpu().numpy()
    a = np.asarray(value)
    if a.dtype == bool or a.dtype.kind not in "iuf":
        what = f"{type(value).__name__} of {a.dtype}" if a.dtype.kind != "O" else _arrays._short(value)
        raise TypeError(f"{name}: expected a number or an array of numbers within the int64/float64 range, got {what}")
    if integer:
        if a.dtype.kind == "f":
            if not np.all(np.isfinite(a) & (a == np.round(a))):
                raise ValueError(f"{name}: expected integers, got {value!r}")
        a = a.astype(np.int64)
    else:
        a = a.astype(np.float64)
    if a.ndim == 0:
        return np.broadcast_to(a, shape)
    if tuple(a.shape) != shape:
        raise ValueError(
            f"{name}: expected a scalar or shape {shape} (logits without its last dimension), got {a.shape}"
        )
    return a


_PARAM_RANGES = {
    "top_p": ("a value in (0, 1]", lambda a: (a > 0) & (a <= 1)),
    "min_p": ("a value in [0, 1]", lambda a: (a >= 0) & (a <= 1)),
}


def _on_device(place: Any, params: list, like: Any) -> list:
    """The per-row sampler parameters (host NumPy arrays from `_row_param`) as arrays on the logits'
    device; the range checks the CPU engine makes on its own arrays are made here, on the host."""
    if not place.is_cuda:
        return params
    out = []
    for name, a in zip(("top_k", "top_p", "min_p"), params):
        if a is not None and name in _PARAM_RANGES:
            expects, ok = _PARAM_RANGES[name]
            bad = np.flatnonzero(~ok(a.reshape(-1)))
            if bad.size:
                raise ValueError(f"{name}: row {bad[0]} holds {a.reshape(-1)[bad[0]]:g}; expected {expects}")
        if a is None:
            out.append(None)
        elif place.kind == "torch":
            import torch

            out.append(torch.from_numpy(np.ascontiguousarray(a)).to(like.device))
        elif place.kind == "cupy":
            import cupy

            with cupy.cuda.Device(place.device_index):
                out.append(cupy.asarray(np.ascontiguousarray(a)))
        else:
            raise ValueError(f"top_k/top_p/min_p: pass torch or CuPy arrays on the GPU, got a {place.describe()}")
    return out


def _count_outside(lp: Any, handle: int = 0) -> int:
    """How many log-probabilities are −inf (tokens outside the kept set), on the array's device and
    the stream the kernels wrote it on (`handle`)."""
    if _arrays._is_torch(lp):
        import torch

        with _on_stream(lp, handle):
            return int(torch.isneginf(lp).sum().item())
    mod = np if isinstance(lp, np.ndarray) else __import__(_arrays._module_name(lp))
    with _on_stream(lp, handle):
        return int(mod.count_nonzero(mod.isneginf(lp)))


def token_logprobs(
    logits: Any,
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
    check_finite: bool = False,
    stream: Any = None,
) -> TokenLogprobs:
    """Log-probability of each row's token and the row's entropy, from logits, in one pass.

    With z = logits / temperature for one row: ``lse = log Σ_v exp(z_v)``,
    ``logp = z[token] − lse`` and ``entropy = lse − Σ_v softmax(z)_v · z_v``. The same as
    ``torch.log_softmax(logits / temperature, -1).gather(-1, ids[..., None])`` and the softmax
    entropy (TRL's ``selective_log_softmax`` and ``entropy_from_logits``), without materialising any
    (N, V) array.

    Args:
        logits: (N, V) or (B, T, V). Row t scores token t; nothing is shifted. The vocabulary
            dimension must have stride 1; the leading dimensions may have any strides, so views such
            as ``logits[:, :-1]`` are read without a copy. float32, bfloat16 or float16 (float32
            math) on CPU and GPU; float64 (float64 math) on CPU.
        token_ids: (N,) or (B, T) int32/int64 ids in [0, V), any strides.
        temperature: > 0; logits are divided by it (TRL's ``temperature``).
        top_k, top_p, min_p: the sampler's truncation (vLLM's / SGLang's ``top_k``, ``top_p``,
            ``min_p``), each a scalar or a per-row array of the leading shape; ``None``, top_k ≤ 0
            or ≥ V, top_p = 1 and min_p = 0 are off. With any of them, ``logp`` is the
            log-probability under the distribution the sampler drew from: the temperature-scaled
            softmax restricted to the kept set and renormalised; a token outside it gets −inf
            (counted in ``num_outside``). CPU and GPU. Semantics in docs/logprobs.md.
        keep: the sampler's own kept set per row, replayed instead of recomputed from these logits:
            ``(keep_ids, keep_offsets)`` (CSR over the flattened rows: row r keeps
            ``keep_ids[keep_offsets[r]:keep_offsets[r + 1]]``, ascending; an empty row keeps the
            whole vocabulary), an object with ``token_ids`` and ``offsets`` (vLLM's
            ``SamplingMask``), or a boolean mask shaped like the logits; on the logits' device. Not
            with top_k/top_p/min_p. CPU and GPU (the GPU marks a row with bad ids NaN).
        sampler: ``"vllm"`` (default) or ``"sglang"``: whose order and boundary convention.
        entropy: ``True``/``"full"``: the entropy of the full temperature-scaled softmax (what TRL
            and verl log and regularise); ``"sampler"``: of the kept, renormalised distribution;
            ``False``: not computed. Free on CPU and GPU (same pass).
        sum_sq_probs: also compute Σ_v softmax(z)_v² per row (the collision probability; verl's
            ``sum_pi_squared`` for the optimal token baseline), from a third accumulator of the same
            pass. Off by default: the default kernels carry no extra work. Forward only — no
            gradient flows through it (:func:`token_logprobs_backward` ignores it).
        check_finite: on GPU, check the results for rows with an out-of-range token id, NaN/+inf
            logits or no finite logit (synchronises the host). The CPU always checks and raises.
        stream: CUDA stream for GPU inputs (default: the caller's current stream).

    −inf logits are allowed (probability 0; they get a zero gradient).

    Returns:
        :class:`TokenLogprobs` with ``logp``, ``entropy``, ``lse`` (and ``sum_sq_probs``) of shape
        ``logits.shape[:-1]``, float32 (float64 for float64 logits), of the caller's kind and device.

    Example:
        >>> import numpy as np, grpokit
        >>> r = grpokit.token_logprobs(np.zeros((2, 4), np.float32), [0, 3])
        >>> r.logp, r.entropy
        (array([-1.3862944, -1.3862944], dtype=float32), array([1.3862944, 1.3862944], dtype=float32))
    """
    x, ids, place = _prepare(logits, token_ids)
    temperature, sampler = sampler_options(temperature, sampler)
    shape = tuple(int(s) for s in x.shape[:-1])
    dtype = _result_dtype(x)
    over = _entropy_over(entropy)
    params = [_row_param(top_k, "top_k", shape, True), _row_param(top_p, "top_p", shape, False)]
    params.append(_row_param(min_p, "min_p", shape, False))
    truncated = any(v is not None for v in params)
    if keep is not None:
        if truncated:
            raise ValueError("keep: replays the sampler's kept set; pass it or top_k/top_p/min_p, not both")
        keep = prepare_keep(keep, x.shape)
        _arrays.common_placement({"logits": x, "keep_ids": keep[0], "keep_offsets": keep[1]})
    if (truncated or keep is not None) and sum_sq_probs:
        raise ValueError("sum_sq_probs: not available with top_k/top_p/min_p/keep; call without them for Σπ²")
    if over == "sampler" and not truncated and keep is None:
        over = "full"  # the same distribution
    handle = _arrays.resolve_stream(place, stream)
    with _arrays.allocating_on(place, handle):  # from the pool of the stream the kernels write on
        logp = _arrays.empty(place, shape, dtype, like=x)
        lse = _arrays.empty(place, shape, dtype, like=x)
        ent = _arrays.empty(place, shape, dtype, like=x) if over else None
        sq = _arrays.empty(place, shape, dtype, like=x) if sum_sq_probs else None
        kept = [_arrays.empty(place, shape, dtype, like=x) for _ in range(2)] if truncated else None
        params = _on_device(place, params, x) if truncated else params
    backend = _backend.for_placement(place)
    if keep is not None:
        with _arrays.allocating_on(place, handle):
            kept_logmass = _arrays.empty(place, shape, dtype, like=x)
        backend.token_logprobs_keep(
            x, ids, logp, ent, lse, kept_logmass, float(temperature), *keep, over == "sampler", handle
        )
        if place.is_cuda and check_finite:  # the kernels mark a bad id, span or row with NaN
            _raise_if_bad_rows(lse, "logits/keep", handle)
        lp = _arrays.finish(place, logp)
        return TokenLogprobs(
            logp=lp,
            entropy=_arrays.finish(place, ent) if ent is not None else None,
            lse=_arrays.finish(place, lse),
            temperature=float(temperature),
            kept_logmass=_arrays.finish(place, kept_logmass),
            num_outside=_count_outside(lp, handle),
            entropy_over=over or "full",
            keep=keep,
        )
    if kept is not None:
        backend.token_logprobs_sampler(
            x, ids, logp, ent, lse, kept[0], kept[1], float(temperature), *params, sampler, over == "sampler", handle
        )
        if place.is_cuda and check_finite:
            _raise_if_bad_rows(lse, "logits", handle)
        out = [_arrays.finish(place, a) for a in (logp, ent, lse, kept[0], kept[1]) if a is not None]
        lp = out[0]
        return TokenLogprobs(
            logp=lp,
            entropy=out[1] if ent is not None else None,
            lse=out[-3],
            temperature=float(temperature),
            kept_logmass=out[-2],
            keep_min=out[-1],
            num_outside=_count_outside(lp, handle),
            entropy_over=over or "full",
        )
    backend.token_logprobs(x, ids, logp, ent, lse, temperature=float(temperature), sum_sq_probs=sq, stream=handle)
    if place.is_cuda and check_finite:
        _raise_if_bad_rows(lse, "logits", handle)
    return TokenLogprobs(
        logp=_arrays.finish(place, logp),
        entropy=_arrays.finish(place, ent) if ent is not None else None,
        lse=_arrays.finish(place, lse),
        temperature=float(temperature),
        sum_sq_probs=_arrays.finish(place, sq) if sq is not None else None,
    )


def token_logprobs_backward(
    logits: Any,
    token_ids: Any,
    saved: TokenLogprobs,
    grad_logp: Any = None,
    grad_entropy: Any = None,
    *,
    inplace_grad: bool = False,
    out: Any = None,
    stream: Any = None,
) -> Any:
    """The logits gradient ∂L/∂logits from upstream gradients of :func:`token_logprobs`' outputs.

    For one row (z = logits / τ, p = softmax(z), y the token, a = ∂L/∂logp, b = ∂L/∂entropy):
    ``∂L/∂logits_v = (a·[v = y] − p_v·(a + b·(log p_v + entropy))) / τ``, computed in one read of
    the logits and one write, from the saved log-sum-exp.

    Args:
        logits, token_ids: exactly as passed to :func:`token_logprobs`.
        saved: the :class:`TokenLogprobs` that call returned (its ``lse``, ``entropy`` and
            ``temperature`` are used).
        grad_logp: ∂L/∂logp, shape ``logits.shape[:-1]``, float32/float64; ``None`` means zero.
        grad_entropy: ∂L/∂entropy, same shape; ``None`` means zero. Needs ``saved.entropy``.
        inplace_grad: write the gradient into the logits buffer itself (saves an (N, V) buffer; the
            logits are destroyed). Refused for read-only arrays and for JAX arrays (immutable).
        out: a preallocated gradient buffer (shape and dtype of ``logits``, unit stride along V),
            e.g. reused across steps; must not overlap the logits. Not with ``inplace_grad``.
        stream: CUDA stream for GPU inputs (default: the caller's current stream).

    Returns:
        The gradient (``out`` when given), shaped and typed like ``logits`` (the logits buffer itself, detached from
        autograd, with ``inplace_grad=True``), of the caller's kind and device.
    """
    if not isinstance(saved, TokenLogprobs):
        raise TypeError(f"saved: expected the TokenLogprobs returned by token_logprobs, got {type(saved).__name__}")
    x, ids, place = _prepare(logits, token_ids)
    lse = _arrays.as_input(saved.lse, "lse")
    ent = _arrays.as_input(saved.entropy, "entropy")
    ga = _arrays.as_input(grad_logp, "grad_logp")
    gb = _arrays.as_input(grad_entropy, "grad_entropy")
    _arrays.common_placement({"logits": x, "lse": lse, "entropy": ent, "grad_logp": ga, "grad_entropy": gb})
    if inplace_grad:
        if place.kind == "jax":
            raise ValueError("inplace_grad=True: JAX arrays are immutable; use inplace_grad=False")
        if isinstance(x, np.ndarray) and not x.flags.writeable:
            raise ValueError("inplace_grad=True: logits is read-only; use inplace_grad=False")
        if out is not None:
            raise ValueError("out: pass either out= or inplace_grad=True, not both")
        out = x
    elif out is not None:
        out = _arrays.as_input(out, "out", writable=True)
        _arrays.common_placement({"logits": x, "out": out})
    handle = _arrays.resolve_stream(place, stream)
    if out is None:
        with _arrays.allocating_on(place, handle):
            out = _arrays.empty(place, tuple(int(s) for s in x.shape), _arrays.dtype_name(x), like=x)
    backend = _backend.for_placement(place)
    if saved.keep is not None:  # the replayed kept set
        km = _arrays.as_input(saved.kept_logmass, "kept_logmass")
        backend.token_logprobs_keep_backward(
            x, ids, lse, km, ent, ga, gb, out, saved.temperature, *saved.keep, saved.entropy_over == "sampler", handle
        )
        return _arrays.finish(place, out)
    if saved.keep_min is not None:  # under the sampler's truncation: the kept set as saved
        km = _arrays.as_input(saved.kept_logmass, "kept_logmass")
        kn = _arrays.as_input(saved.keep_min, "keep_min")
        backend.token_logprobs_sampler_backward(
            x, ids, lse, km, kn, ent, ga, gb, out, saved.temperature, saved.entropy_over == "sampler", handle
        )
        return _arrays.finish(place, out)
    backend.token_logprobs_backward(x, ids, lse, ent, ga, gb, out, temperature=saved.temperature, stream=handle)
    return _arrays.finish(place, out)


def _chunk(chunk_size: Optional[int]) -> int:
    """chunk_size= of the hidden-state forms (vocabulary entries per logits tile); 0 is the engine's default."""
    if chunk_size is None:
        return 0
    try:
        return _arrays.as_count(chunk_size, "chunk_size")
    except (TypeError, ValueError):
        raise ValueError(f"chunk_size: expected a positive integer, got {_arrays._short(chunk_size)}") from None
