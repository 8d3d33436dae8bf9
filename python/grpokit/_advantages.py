"""Group advantages (the papers' A_i and the peers' normalisations), computed in the engine."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from . import _arrays, _backend, _estimators

_STD_NAMES = ("none", "population", "sample")
_SCOPES = ("group", "batch")
_BASELINES = ("mean", "leave_one_out")


def _float_rewards(r: Any) -> Any:
    """Integer or bool rewards are converted to float64 (the intent is clear); floats are kept."""
    if isinstance(r, np.ndarray) and r.dtype.kind in "biu":
        return r.astype(np.float64)
    if _arrays._is_torch(r) and not r.is_floating_point():
        return r.double()
    return r


def advantages(
    rewards: Any,
    group_size: Optional[int] = None,
    *,
    group_ids: Any = None,
    estimator: str = "grpo",
    baseline: Optional[str] = None,
    std: Optional[str] = None,
    std_scope: Optional[str] = None,
    epsilon: Optional[float] = None,
    check_finite: bool = False,
    stream: Any = None,
    **options: Any,
) -> Any:
    """Advantages of a batch of rewards, one per completion (or per token).

    A_i = (r_i − b_i) / (σ + epsilon), where b_i is the group mean (``baseline="mean"``, the papers'
    centred advantage) or the mean of the *other* completions of the group
    (``baseline="leave_one_out"``, RLOO), and σ is a standard deviation or nothing (``std="none"``).

    Args:
        rewards: (B,) float32/float64 rewards (NumPy, torch, CuPy, JAX or a sequence). NaN marks an
            unscorable completion: excluded from every statistic, advantage 0 (as TRL).
        group_size: completions per prompt; groups are contiguous blocks of rows.
        group_ids: (B,) integer ids instead of ``group_size`` (groups need not be contiguous).
        baseline: ``"mean"`` or ``"leave_one_out"``.
        std: ``"none"``, ``"population"`` (divisor n, the papers') or ``"sample"`` (n − 1: TRL, verl).
        std_scope: ``"group"`` or ``"batch"`` (the std of all rewards of the batch: TRL's
            ``scale_rewards="batch"``).
        epsilon: added to σ before dividing (TRL 1e-4, verl 1e-6, the papers 0).
        check_finite: on GPU, check for ±inf rewards (synchronises the host). The CPU always checks.
        stream: CUDA stream for GPU inputs (default: the caller's current stream).

    A group whose rewards are all equal gets advantage 0 (0/0 := 0). A group of one completion is an
    error when ``std`` is not ``"none"`` or with ``"leave_one_out"``.

    Reproducing the peers: TRL ``scale_rewards="group"`` is ``std="sample", epsilon=1e-4``;
    ``"batch"`` adds ``std_scope="batch"``; ``"none"`` is ``std="none"``. verl's ``grpo`` is
    ``std="sample", epsilon=1e-6``.

    Other estimators (``estimator=``, every one TRL and verl offer; exact definitions, defaults and
    the peer each reproduces are in docs/estimators.md and ``grpokit.ESTIMATORS``):

    - ``"grpo"`` (default): the above. ``rewards`` may be (B, K) for K reward functions, combined as
      TRL's ``sum_then_normalize``: R_i = Σ_k w_k r_ik over non-NaN r_ik (``reward_weights`` (K,),
      default ones), NaN when every r_ik is NaN.
    - ``"rloo"``: leave-one-out baseline (TRL and verl agree); ``normalize=True`` adds TRL's
      ``normalize_advantages`` batch standardising with ``final_epsilon`` (1e-4); TRL's
      ``reward_clip_range`` and KL in the reward (``beta`` with ``logp``, ``ref_logp``, ``mask``).
    - ``"reinforce_pp"`` (token): discounted return-to-go (``gamma``, 1.0) whitened over ``mask``.
    - ``"reinforce_pp_baseline"``: R − group mean, whitened over the mask (rows weigh by length).
    - ``"remax"`` (token): return-to-go − ``baseline_rewards`` (B,) (greedy completions' rewards).
    - ``"opo"``: R − Σ L_j R_j / Σ L_j with lengths from ``mask`` or ``lengths``.
    - ``"grpo_passk"``: only each group's best gets (R_max − R_2nd) / (σ + epsilon).
    - ``"gpg"``: α (R − group mean) / ``f_norm``, α = B / #non-zero rewards.
    - ``"gdpo"`` (verl) and ``"normalize_then_sum"`` (TRL): per-reward group standardising of (B, K)
      rewards, weighted sum, then verl's masked whitening or TRL's batch standardising.
    - ``"optimal_token_baseline"`` (token): per-position baseline Σ G W / Σ W from ``logp`` and
      ``sum_pi_squared`` (B, T) (and ``is_weights``), ``handle_zero_tail`` (True), ``epsilon`` (1e-8);
      ``logprobs=`` a ``token_logprobs(..., sum_sq_probs=True)`` result supplies both at once;
      ``"tir_optimal_token_baseline"`` compares each row's selected tokens by rank (multi-turn).
    - ``"running"`` (ROLL ``norm_mean_type="running"``; preset ``"roll.running"``): R − running mean
      [/ (running σ + ε)], ``state=`` a :class:`grpokit.RunningMoments` the batch is merged into (in
      place) first; ``update=False`` normalises with it as given.

    ``estimator`` may also name a peer preset — an estimator with the peer's default options, e.g.
    ``"trl.grpo"`` (sample std, ε 1e-4), ``"verl.grpo"`` (sample std, ε 1e-6), ``"verl.gdpo"``
    (``grpokit.ESTIMATOR_PRESETS``); explicit options override the preset's.

    Token estimators take ``rewards`` (B, T) token rewards, or (B,) rewards placed on each row's last
    selected token, with a (B, T) ``mask``; they return (B, T) advantages (0 where the mask is unset),
    and ``(advantages, returns)`` with ``return_returns=True``. An option an estimator does not take is
    a TypeError; ``baseline``/``std``/``std_scope``/``epsilon`` left as None take its defaults. Every
    estimator runs on the GPU too (CUDA arrays in; bfloat16/float16 rewards there as well), without
    host synchronisation: value checks the CPU engine makes are skipped there (docs/gpu.md).

    Returns:
        (B,) advantages (or (B, T) for token estimators), the same kind, device and dtype as ``rewards``.

    Example:
        >>> import grpokit
        >>> grpokit.advantages([1.0, 0.0, 1.0, 1.0], group_size=2)
        array([ 0.5, -0.5,  0. ,  0. ])
    """
    info, preset = _estimators.lookup(estimator)
    given = {"baseline": baseline, "std": std, "std_scope": std_scope, "epsilon": epsilon, **options}
    opts = _estimators.resolve_options(info, given, preset)
    if group_size is not None:
        group_size = _arrays.as_count(group_size, "group_size", minimum=1)
    if opts.get("epsilon") is not None:
        opts["epsilon"] = _arrays.as_real(opts["epsilon"], "epsilon")
    r = _float_rewards(_arrays.as_input(rewards, "rewards"))
    half = _arrays.dtype_name(r) in ("bfloat16", "float16")  # GPU-only dtypes: the estimator kernels read them
    if info.name != "grpo" or any(v is not None for v in options.values()) or len(r.shape) == 2 or half:
        return _estimators.compute(r, group_size, group_ids, info, opts, stream=stream, check_finite=check_finite)
    baseline, std, std_scope, epsilon = opts["baseline"], opts["std"], opts["std_scope"], opts["epsilon"]

    if baseline not in _BASELINES:
        raise ValueError(f"baseline: expected one of {_BASELINES}, got {baseline!r}")
    if std not in _STD_NAMES:
        raise ValueError(f"std: expected one of {_STD_NAMES}, got {std!r}")
    if std_scope not in _SCOPES:
        raise ValueError(f"std_scope: expected one of {_SCOPES}, got {std_scope!r}")
    if group_ids is None and group_size is None:
        raise ValueError("group_size: pass the number of completions per prompt, or group_ids")

    ids = _arrays.as_input(group_ids, "group_ids", default="int64")
    place = _arrays.common_placement({"rewards": r, "group_ids": ids})
    if place.is_cuda and check_finite:
        _arrays.raise_if_inf(r, "rewards")
    shape = tuple(int(s) for s in r.shape)
    handle = _arrays.resolve_stream(place, stream)
    with _arrays.allocating_on(place, handle):  # from the pool of the stream the kernel writes on
        out = _arrays.empty(place, shape, _arrays.dtype_name(r) if len(shape) else "float64", like=r)
    backend = _backend.for_placement(place)
    backend.advantages(
        r,
        ids,
        out,
        group_size=int(group_size) if group_size is not None else 0,
        baseline=baseline,
        std=std,
        std_scope=std_scope,
        epsilon=float(epsilon),
        stream=handle,
    )
    return _arrays.finish(place, out)
