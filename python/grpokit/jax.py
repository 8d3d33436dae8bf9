"""JAX ops over the grpokit engine (``import grpokit.jax``; docs/jax.md).

Each op is an XLA FFI custom call into the same engine functions as ``grpokit`` and ``grpokit.torch``,
so it runs inside ``jax.jit``, ``jax.grad``, ``jax.vmap`` (one call per example), ``jax.lax.scan`` and
``shard_map`` (one call per shard), with no host callback. Presets and hyper-parameters are static:
they are attributes of the compiled call (a new value compiles a new program); shapes are static per
trace, as everywhere in JAX. Bad shapes and dtypes raise at trace time, with the engine's messages.

Without ``jax_enable_x64`` (JAX's default) float64 arrays do not exist: the metrics come back as
float32 and integer inputs as int32.
"""

from __future__ import annotations

import functools
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from . import _advantages, _arguments, _estimators, _loss, _presets

try:
    import jax
    import jax.numpy as jnp
except ImportError as e:  # pragma: no cover - the extra installs it
    raise ImportError(
        'grpokit.jax needs JAX: pip install "grpokit[jax]" (from a checkout: pip install ".[jax]")'
    ) from e
try:
    from . import _jax_ffi
except ImportError as e:  # pragma: no cover - builds with jax importable have it
    raise ImportError(
        "grpokit.jax: this grpokit was built without its JAX extension (jax was not importable when it was "
        'built); install jax first, then rebuild grpokit: pip install "grpokit[jax]" (from a checkout: '
        'pip install ".[jax]")'
    ) from e

__all__ = [
    "LogprobsOutput",
    "PolicyLossOutput",
    "advantages",
    "global_counts",
    "linear_token_logprobs",
    "policy_loss",
    "token_logprobs",
]

_TARGET = "grpokit"
_HANDLERS = dict(_jax_ffi.handlers())
try:  # built with the CUDA kernels (docs/jax.md); its import needs no GPU
    from . import _jax_ffi_cuda

    _HANDLERS.update(_jax_ffi_cuda.handlers())
except ImportError:
    pass
for _platform, _capsule in _HANDLERS.items():
    jax.ffi.register_ffi_target(_TARGET, _capsule, platform=_platform)

# Every op's arrays, in the order the handler reads them (python/bindings/jax_ffi.hpp): (inputs, outputs).
_LOSS_INPUTS = ("logp", "old_logp", "advantages", "mask", "ref_logp", "entropies", "sampling_logp")
_LOSS_INPUTS += ("cu_seqlens", "keep", "token_weights", "selection")
_OPS: Dict[str, Tuple[int, int]] = {
    "policy_loss": (len(_LOSS_INPUTS), 6),  # loss, grad_logp, grad_entropy, metrics, per_token, weights
    "token_logprobs": (2, 4),  # logits, ids -> logp, entropy, lse, sum_sq_probs
    "token_logprobs_backward": (6, 1),  # logits, ids, lse, entropy, grad_logp, grad_entropy -> grad_logits
    "linear_token_logprobs": (3, 4),  # hidden, weight, ids -> as token_logprobs
    "linear_token_logprobs_backward": (7, 2),  # hidden, weight, ids, lse, entropy, grads -> grad_hidden, grad_weight
    "advantages": (2, 1),  # rewards, group_ids -> advantages
    # rewards, group_ids, then _estimators.ARRAY_INPUTS but reward_weights (a static list) -> advantages, returns
    "estimator_advantages": (2 + len(_estimators.ARRAY_INPUTS) - 1, 2),
}

Spec = Optional[jax.ShapeDtypeStruct]


def _params(values: Dict[str, Any]) -> str:
    """Options as the handler's ``params`` attribute ("name=value;..."): hashable and static."""

    def text(v: Any) -> str:
        if isinstance(v, bool):
            return str(int(v))
        return repr(float(v)) if isinstance(v, (int, float)) else str(v)

    return ";".join(f"{k}={text(v)}" for k, v in sorted(values.items()))


def _call(op: str, params: str, inputs: Sequence[Any], outputs: Sequence[Spec]) -> List[Any]:
    """One custom call: the absent (None) inputs and outputs are left out, their bits unset."""
    n_in, n_out = _OPS[op]
    if len(inputs) != n_in or len(outputs) != n_out:  # internal wiring, not user input
        raise RuntimeError(f"grpokit.jax: {op} wired with {len(inputs)}/{len(outputs)} arrays, expects {n_in}/{n_out}")

    def desc(x: Any) -> Any:
        return None if x is None else (np.dtype(x.dtype).name, tuple(int(d) for d in x.shape))

    _jax_ffi.check(op, params, [desc(x) for x in inputs], [desc(o) for o in outputs])
    bits = lambda xs: np.int64(sum(1 << i for i, x in enumerate(xs) if x is not None))  # noqa: E731
    typed = _manual_axes(next(x for x in inputs if x is not None))
    results_spec = [jax.ShapeDtypeStruct(o.shape, o.dtype, **typed) for o in outputs if o is not None]
    results = jax.ffi.ffi_call(_TARGET, results_spec, vmap_method="sequential")(
        *[x for x in inputs if x is not None],
        op=op,
        params=params,
        inputs=bits(inputs),
        outputs=bits(outputs),
        num_inputs=np.int64(n_in),
        num_outputs=np.int64(n_out),
    )
    it = iter(results)
    return [None if o is None else next(it) for o in outputs]


def _manual_axes(x: Any) -> Dict[str, Any]:
    """Inside shard_map the results vary over the mesh axes the inputs vary over (JAX's type of them)."""
    aval = jax.typeof(x) if hasattr(jax, "typeof") else None
    mat = getattr(aval, "manual_axis_type", None)
    if not mat:
        return {}
    return {
        "manual_axis_type": mat,
        "sharding": jax.sharding.NamedSharding(aval.sharding.mesh, jax.sharding.PartitionSpec()),
    }


def _array(x: Any, name: str) -> Any:
    if x is None:
        return None
    try:
        return jnp.asarray(x)
    except TypeError as e:
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}") from e


def _float64() -> Any:
    """float64 where JAX has it (jax_enable_x64), else float32."""
    return jax.dtypes.canonicalize_dtype(np.float64)


def _from_float64_bytes(raw: Any) -> Any:
    """(8·M,) uint8, the engine's float64 values (little-endian) → (M,) float64, or float32 rounded
    from them without jax_enable_x64 (float64 arrays do not exist then)."""
    if _float64() == np.float64:
        return jax.lax.bitcast_convert_type(raw.reshape(-1, 8), jnp.float64)
    words = jax.lax.bitcast_convert_type(raw.reshape(-1, 2, 4), jnp.uint32)  # (M, 2): low, high word
    lo, hi = words[:, 0], words[:, 1]
    exponent = ((hi >> 20) & 0x7FF).astype(jnp.int32)
    fraction = (hi & 0xFFFFF).astype(jnp.float32) * 2.0**-20 + lo.astype(jnp.float32) * 2.0**-52
    value = jnp.where(exponent == 0, 0.0, jnp.ldexp(1.0 + fraction, exponent - 1023))  # subnormals → 0
    value = jnp.where(exponent == 0x7FF, jnp.where(fraction == 0, jnp.inf, jnp.nan), value)
    return jnp.where(hi >> 31 == 1, -value, value)


# ---- the policy loss -------------------------------------------------------------------------------


class PolicyLossOutput(NamedTuple):
    """``loss``: 0-d, differentiable with respect to ``logp`` (and ``entropies`` where they enter the
    loss); ``metrics``: {name: 0-d array} (float64 with jax_enable_x64, else float32), without
    gradient; ``per_token`` / ``weights`` (``return_per_token`` / ``return_weights``), else None."""

    loss: Any
    metrics: Dict[str, Any]
    per_token: Any = None
    weights: Any = None


# static: (params, number of metrics, entropies get a gradient, return_per_token, return_weights)
_LossStatic = Tuple[str, int, bool, bool, bool]


def _loss_forward(static: _LossStatic, logp: Any, entropies: Any, rest: Tuple[Any, ...]):
    params, n_metrics, ent_grad, per_token, weights = static
    like = jax.ShapeDtypeStruct(logp.shape, logp.dtype)
    outs = (
        jax.ShapeDtypeStruct((), logp.dtype),
        like,
        like if ent_grad else None,
        jax.ShapeDtypeStruct((8 * n_metrics,), jnp.uint8),  # float64 bytes: _from_float64_bytes
        like if per_token else None,
        like if weights else None,
    )
    old, adv, mask, ref = rest[:4]
    loss, g, g_ent, metrics, pt, w = _call(
        "policy_loss", params, (logp, old, adv, mask, ref, entropies, *rest[4:]), outs
    )
    return (loss, _from_float64_bytes(metrics), pt, w), (g, g_ent)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _loss_op(static: _LossStatic, logp: Any, entropies: Any, rest: Tuple[Any, ...]):
    return _loss_forward(static, logp, entropies, rest)[0]


def _loss_backward(static: _LossStatic, saved: Tuple[Any, Any], cotangents: Tuple[Any, ...]):
    g, g_ent = saved  # the engine's exact gradient, from the forward: no second engine call
    ct = cotangents[0]
    return (ct.astype(g.dtype) * g, None if g_ent is None else ct.astype(g_ent.dtype) * g_ent, None)


_loss_op.defvjp(_loss_forward, _loss_backward)


# The arguments of grpokit.policy_loss / grpokit.advantages, less their GPU options (XLA owns the stream).
_LOSS_ARGUMENTS = _arguments.Arguments(_loss.policy_loss, drop=("stream", "check_finite"))
_ADVANTAGE_ARGUMENTS = _arguments.Arguments(_advantages.advantages, drop=("stream", "check_finite"))


@_LOSS_ARGUMENTS
def policy_loss(logp: Any, old_logp: Any, advantages: Any, mask: Any = None, **kw: Any) -> PolicyLossOutput:
    """Differentiable GRPO-family loss: :func:`grpokit.policy_loss` as a JAX op.

    Same arrays, layouts, options and presets as :func:`grpokit.policy_loss` (JAX arrays or anything
    ``jnp.asarray`` takes; float32/float64 ``logp``, or bfloat16/float16 on a GPU with every float
    array in that dtype: the CPU refuses them when the call runs). ``spec`` and ``**overrides`` are static: plain
    Python values, not traced arrays. The forward runs the engine once, which also yields ∂loss/∂logp
    (and ∂loss/∂entropies); the backward multiplies them by the incoming cotangent.

    Global counts: under data parallelism (``shard_map``, ``pjit``) each shard computes its part of
    the loss; pass the whole step's counts (``**global_counts(mask)``) and sum the shards' losses
    (``jax.lax.psum``) for the loss of the whole batch (docs/jax.md).

    Example:
        >>> import jax, jax.numpy as jnp, grpokit.jax as gkj
        >>> lp = jnp.log(jnp.full((2, 3), 0.5))
        >>> f = lambda lp: gkj.policy_loss(lp, jax.lax.stop_gradient(lp), jnp.array([1.0, -1.0]),
        ...                                spec="paper.dapo").loss
        >>> float(jax.jit(jax.grad(f))(lp)[0, 0])
        -0.1666666716337204
    """
    o, overrides = _LOSS_ARGUMENTS.split("policy_loss", kw)  # grpokit.policy_loss's, less the GPU options
    o.update(logp=logp, old_logp=old_logp, advantages=advantages, mask=mask)
    a = {name: _array(o[name], name) for name in _LOSS_INPUTS}
    lp = a["logp"]
    if np.dtype(lp.dtype).name not in ("float32", "float64", "bfloat16", "float16"):
        raise TypeError(f"logp: expected dtype float32, float64, bfloat16 or float16, got {np.dtype(lp.dtype).name}")
    has_ent, has_smp = o["entropies"] is not None, o["sampling_logp"] is not None
    fields, names, ent_grad = _loss._plan(o["spec"], overrides, has_ent, has_smp)
    static = (
        _params({**fields, "num_threads": int(o["num_threads"])}),
        len(names),
        bool(ent_grad),
        bool(o["return_per_token"]),
        bool(o["return_weights"]),
    )
    rest = tuple(a[n] for n in _LOSS_INPUTS if n not in ("logp", "entropies"))
    loss, metrics, per_token, weights = _loss_op(static, lp, a["entropies"], rest)
    metrics = jax.lax.stop_gradient(metrics)
    return PolicyLossOutput(
        loss,
        {n: metrics[k] for k, n in enumerate(names)},
        None if per_token is None else jax.lax.stop_gradient(per_token),
        None if weights is None else jax.lax.stop_gradient(weights),
    )


def global_counts(masks: Any, *, spec: Any = "trl.grpo", dp_size: int = 1) -> Dict[str, float]:
    """The counts of a whole optimizer step as ``policy_loss`` options (Python numbers: they are static).

    ``masks``: the (B, T) loss mask of the whole step (one array or a list of micro-batches' masks),
    concrete (outside ``jit``). ``dp_size``: the number of shards whose gradients are averaged
    (``jax.lax.pmean``); 1 when they are summed (``psum``). Returns ``{"num_items_in_batch",
    "num_sequences", "dp_size"}``; ``num_sequences`` counts rows with a valid token where the spec's
    aggregation does (verl's ``seq-mean-*``), else every row.
    """
    s = _presets.resolve(spec, {})
    ms = [np.asarray(masks)] if hasattr(masks, "shape") else [np.asarray(m) for m in masks]
    if not ms:
        raise ValueError("masks: expected at least one mask")
    tok = sum(int((m != 0).sum()) for m in ms)
    seq = sum(int(((m != 0).sum(-1) > 0).sum()) if s.seq_count_nonempty else int(m.shape[0]) for m in ms)
    return {"num_items_in_batch": float(tok), "num_sequences": float(seq), "dp_size": float(dp_size)}


# ---- advantages ------------------------------------------------------------------------------------


@_ADVANTAGE_ARGUMENTS
def advantages(rewards: Any, group_size: Optional[int] = None, **kw: Any) -> Any:
    """:func:`grpokit.advantages` as a JAX op (no gradient: advantages are constants), for every
    estimator and peer preset of ``grpokit.ESTIMATORS`` / ``ESTIMATOR_PRESETS``.

    Array inputs (``mask``, ``lengths``, ``baseline_rewards``, ``logp``, ``ref_logp``,
    ``sum_pi_squared``, ``is_weights``; ``logprobs=`` a :func:`token_logprobs` result with
    ``sum_sq_probs``) are traced; ``group_size``, ``reward_weights`` and the other options are static.
    Returns the advantages, or ``(advantages, returns)`` with ``return_returns=True``, as
    :func:`grpokit.advantages` does; the values are bit-equal to it.
    """
    o, options = _ADVANTAGE_ARGUMENTS.split("advantages", kw)
    group_ids, estimator = o.pop("group_ids"), o.pop("estimator")
    info, preset = _estimators.lookup(estimator)
    opts = _estimators.resolve_options(info, {**o, **options}, preset)  # o: baseline, std, std_scope, epsilon
    if group_size is not None and (isinstance(group_size, bool) or int(group_size) != group_size):
        raise TypeError(f"group_size: expected an integer, got {group_size!r}")
    if info.grouped and group_ids is None and group_size is None:
        raise ValueError("group_size: pass the number of completions per prompt, or group_ids")
    r = jax.lax.stop_gradient(_array(rewards, "rewards"))
    if not jnp.issubdtype(r.dtype, jnp.floating):
        r = r.astype(_float64())
    ids = _array(group_ids, "group_ids")
    if info.name == "grpo" and not any(v is not None for v in options.values()) and r.ndim == 1:
        params = _params(
            {"group_size": int(group_size or 0), **{k: opts[k] for k in ("baseline", "std", "std_scope", "epsilon")}}
        )
        return _call("advantages", params, (r, ids), (jax.ShapeDtypeStruct(r.shape, r.dtype),))[0]
    if info.engine == "running":  # its state is host data carried between calls, not a traced value
        raise ValueError("estimator: 'running' updates a host state object each call; use grpokit.advantages")
    arrays = {k: opts.pop(k, None) for k in _estimators.ARRAY_INPUTS}
    weights = _estimators._weights(arrays.pop("reward_weights"))
    traced = {k: None if v is None else jax.lax.stop_gradient(_array(v, k)) for k, v in arrays.items()}
    engine = _estimators.engine_options(info, opts)
    if weights is not None:
        engine["reward_weights"] = ",".join(repr(float(w)) for w in weights)
    params = _params({"group_size": int(group_size or 0), **engine})
    mask = traced["mask"]
    shape = tuple(mask.shape) if info.kind == "token" and mask is not None else (r.shape[0] if r.ndim else 0,)
    out = jax.ShapeDtypeStruct(shape, r.dtype)
    a, ret = _call(
        "estimator_advantages", params, (r, ids, *traced.values()), (out, out if opts.get("return_returns") else None)
    )
    return (a, ret) if ret is not None else a


# ---- token log-probabilities -----------------------------------------------------------------------


class LogprobsOutput(NamedTuple):
    """``logp`` and ``entropy`` of shape ``logits.shape[:-1]`` (float32; float64 for float64 inputs),
    both differentiable."""

    logp: Any
    entropy: Any


def _result_dtype(x: Any) -> Any:
    return x.dtype if np.dtype(x.dtype).name == "float64" else jnp.float32


def _rows(x: Any, n: Tuple[int, ...]) -> Tuple[Spec, Spec, Spec, None]:
    s = jax.ShapeDtypeStruct(n, _result_dtype(x))
    return (s, s, s, None)


def _logprobs_forward(params: str, logits: Any, ids: Any):
    logp, ent, lse, _ = _call("token_logprobs", params, (logits, ids), _rows(logits, logits.shape[:-1]))
    return (logp, ent), (logits, ids, lse, ent)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _logprobs_op(params: str, logits: Any, ids: Any):
    return _logprobs_forward(params, logits, ids)[0]


def _logprobs_backward(params: str, saved: Tuple[Any, ...], cotangents: Tuple[Any, Any]):
    logits, ids, lse, ent = saved
    g_lp, g_ent = (c.astype(lse.dtype) for c in cotangents)
    out = (jax.ShapeDtypeStruct(logits.shape, logits.dtype),)
    (g,) = _call("token_logprobs_backward", params, (logits, ids, lse, ent, g_lp, g_ent), out)
    return (g, None)


_logprobs_op.defvjp(_logprobs_forward, _logprobs_backward)


def token_logprobs(logits: Any, token_ids: Any, *, temperature: float = 1.0) -> LogprobsOutput:
    """:func:`grpokit.token_logprobs` as a differentiable JAX op: log π(token) and the entropy of each
    row of (N, V) or (B, T, V) ``logits`` (float32, float64), without a (N, V) buffer in the forward;
    the backward writes ∂/∂logits in one pass. ``temperature`` is static."""
    x, ids = _array(logits, "logits"), _array(token_ids, "token_ids")
    if x.ndim not in (2, 3):
        raise ValueError(f"logits: expected a (N, V) or (B, T, V) array, got shape {tuple(x.shape)}")
    return LogprobsOutput(*_logprobs_op(_params({"temperature": temperature}), x, ids))


def _linear_forward(params: str, hidden: Any, weight: Any, ids: Any):
    outs = _rows(hidden, (hidden.shape[0],))
    logp, ent, lse, _ = _call("linear_token_logprobs", params, (hidden, weight, ids), outs)
    return (logp, ent), (hidden, weight, ids, lse, ent)


@functools.partial(jax.custom_vjp, nondiff_argnums=(0,))
def _linear_op(params: str, hidden: Any, weight: Any, ids: Any):
    return _linear_forward(params, hidden, weight, ids)[0]


def _linear_backward(params: str, saved: Tuple[Any, ...], cotangents: Tuple[Any, Any]):
    hidden, weight, ids, lse, ent = saved
    g_lp, g_ent = (c.astype(lse.dtype) for c in cotangents)
    outs = (jax.ShapeDtypeStruct(hidden.shape, hidden.dtype), jax.ShapeDtypeStruct(weight.shape, weight.dtype))
    inputs = (hidden, weight, ids, lse, ent, g_lp, g_ent)
    g_h, g_w = _call("linear_token_logprobs_backward", params, inputs, outs)
    return (g_h, g_w, None)


_linear_op.defvjp(_linear_forward, _linear_backward)


def linear_token_logprobs(
    hidden: Any, weight: Any, token_ids: Any, *, temperature: float = 1.0, chunk_size: Optional[int] = None
) -> LogprobsOutput:
    """:func:`grpokit.linear_token_logprobs` as a differentiable JAX op: :func:`token_logprobs` of
    ``hidden · weightᵀ`` ((N, H) or (B, T, H) hidden, (V, H) weight) one vocabulary tile at a time;
    gradients for ``hidden`` and ``weight``. ``temperature`` and ``chunk_size`` are static."""
    h, w, ids = _array(hidden, "hidden"), _array(weight, "weight"), _array(token_ids, "token_ids")
    if h.ndim not in (2, 3):
        raise ValueError(f"hidden: expected a (N, H) or (B, T, H) array, got shape {tuple(h.shape)}")
    lead = tuple(h.shape[:-1])
    if tuple(ids.shape) != lead:
        raise ValueError(f"token_ids: expected shape {lead} (hidden without its last dimension), got {ids.shape}")
    if chunk_size is not None and (isinstance(chunk_size, bool) or int(chunk_size) != chunk_size or chunk_size <= 0):
        raise ValueError(f"chunk_size: expected a positive integer, got {chunk_size!r}")
    params = _params({"temperature": temperature, "chunk_size": int(chunk_size or 0)})
    logp, ent = _linear_op(params, h.reshape(-1, h.shape[-1]), w, ids.reshape(-1))
    return LogprobsOutput(logp.reshape(lead), ent.reshape(lead))
