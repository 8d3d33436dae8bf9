"""Train–inference corrections: importance weights between the trainer's and the sampler's
log-probabilities, verl's rejection sampling and ROLL's filters, and named peer presets of them.

The sampler (vLLM, SGLang) and the trainer compute slightly different log-probabilities for the
same tokens; each peer corrects the policy term for it. docs/estimators.md has the exact formulas.
"""

from __future__ import annotations

import math
from types import MappingProxyType
from typing import Any, Dict, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

from . import _arrays, _backend, _core


class ImportanceWeights(NamedTuple):
    """weights: (B, T) (token and segment level, 0 where the mask is unset) or (B,) (sequence and
    geometric level)."""

    weights: Any
    metrics: Dict[str, Any]


class RejectionMask(NamedTuple):
    """mask: (B, T) bool, the input mask with every rejected token removed."""

    mask: Any
    metrics: Dict[str, Any]


class Correction(NamedTuple):
    """What a loss needs from a correction: IS weights (None if the preset has none), the mask to
    use (rejections removed) and the metrics of both stages."""

    weights: Optional[Any]
    mask: Any
    metrics: Dict[str, Any]


def _inputs(trainer_logp: Any, sampler_logp: Any, mask: Any):
    a = _arrays.as_input(trainer_logp, "trainer_logp")
    b = _arrays.as_input(sampler_logp, "sampler_logp")
    m = _arrays.as_input(mask, "mask", default="bool")
    place = _arrays.common_placement({"trainer_logp": a, "sampler_logp": b, "mask": m})
    if len(a.shape) != 2:
        raise ValueError(f"trainer_logp: expected shape (B, T), got {tuple(a.shape)}")
    return a, b, m, place


def _metrics(names, values) -> Dict[str, Any]:
    """{name: value}: NumPy scalars on the CPU, 0-d views of the device array on the GPU (no sync)."""
    return {name: values[i] for i, name in enumerate(names)}


def _workspace(place: Any, size: int, like: Any) -> Any:
    """Scratch from the caller's framework (the CUDA kernels never allocate); None on the CPU."""
    return _arrays.empty(place, (size,), "float64", like=like) if place.is_cuda and size > 0 else None


def _bound(x: Optional[float], name: str, default: float) -> float:
    if x is None:
        return default
    if isinstance(x, bool) or not isinstance(x, (int, float)) or math.isnan(float(x)):
        raise TypeError(f"{name}: expected a number or None, got {x!r}")
    return float(x)


def importance_weights(
    trainer_logp: Any,
    sampler_logp: Any,
    mask: Any,
    *,
    level: str = "sequence",
    mode: str = "mask",
    clip_min: Optional[float] = None,
    clip_max: Optional[float] = 3.0,
    log_clamp: Optional[float] = None,
    batch_normalize: bool = False,
    geo_eps: float = 1e-8,
    segment_ids: Any = None,
    stream: Any = None,
) -> ImportanceWeights:
    """Importance weights ρ = π_trainer / π_sampler that correct the sampler–trainer mismatch.

    lr_t = trainer_logp − sampler_logp at selected positions. Token level: ρ_t = exp(lr_t);
    sequence level: ρ_i = exp(Σ_t lr_t); geometric level: ρ_i = exp(Σ_t lr_t / (L_i + geo_eps))
    (ROLL); segment level: per segment (a maximal run of selected tokens: a multi-turn row's turns,
    split by masked tool output) exp(Σ_seg lr / (n_seg + geo_eps)) on its tokens (ROLL). With
    ``log_clamp`` the log-ratio is clamped to ±log_clamp first (verl: 20). ``mode="truncate"``:
    clamp(ρ, clip_min, clip_max); ``mode="mask"``: ρ·1[clip_min ≤ ρ ≤ clip_max] (TRL's masked IS;
    IcePop with both bounds); ``mode="geo_mask"``: ρ·1[clip_min ≤ exp(Σ_t lr_t / (L_i + geo_eps))
    ≤ clip_max], whole rows zeroed by their geometric-mean ratio (OpenRLHF's and NeMo-RL's
    ``seq-mask-tis``: token level, geo_eps 0 / 1e-8). A missing bound is ∓inf. ``batch_normalize``
    divides by the batch mean weight (verl: over tokens, or over the sequences that have tokens),
    after the metrics are taken.

    Defaults are TRL's (``vllm_importance_sampling_mode="sequence_mask"``, C_max 3.0, C_min None).
    verl's ``rollout_is="token"``, threshold 2.0 is ``level="token", mode="truncate", clip_max=2.0,
    log_clamp=20``; its IcePop ``"0.5_5.0"`` is ``mode="mask", clip_min=0.5, clip_max=5.0``.
    ``grpokit.CORRECTIONS`` names them all.

    Args:
        trainer_logp, sampler_logp: (B, T) float32/float64 log-probabilities of the sampled tokens.
            A NaN sampler log-prob at a selected position (the sampler could not score it) gives
            ratio 1 there and is left out of the mismatch metrics (TRL).
        mask: (B, T) bool/int/float; selected where non-zero. At least one position.
        segment_ids: (B, T) int32/int64, segment level only: each token's segment (turn) id, >= 0 and
            non-decreasing along a row at selected positions; a segment is then the row's selected
            tokens sharing an id (adjacent turns need no masked gap). Without it a segment is a
            maximal run of selected tokens; ids that number those runs give the same weights.
        stream: CUDA stream for GPU inputs (default: the caller's current stream).

    CUDA inputs run on the GPU (float32/float64/bfloat16/float16 log-probs) with no host
    synchronisation: weights and metrics stay on the device (each metric a 0-d float64 array), and
    the CPU engine's value checks (finite log-probs, at least one selected position) are skipped.

    Returns:
        ``ImportanceWeights(weights, metrics)``: weights (B, T) (0 where unselected) or (B,) at
        sequence level, in the trainer_logp's dtype; metrics, a dict of scalars: ``ratio_mean``,
        ``ratio_min``, ``ratio_max`` (TRL: applied weights over tokens, or over rows at sequence
        level), ``ratio_token_mean``, ``fraction_high``, ``fraction_low``, ``ess``, ``std``,
        ``batch_norm_factor`` (verl ``rollout_is_*``), ``masked_fraction`` / ``seq_masked_fraction``
        (weights the mask mode zeroed), ``kl``, ``k3_kl``, ``chi2_token``, ``chi2_seq`` (verl's
        mismatch metrics), ``logp_diff_mean`` / ``logp_diff_max`` (TRL's) and
        ``fraction_high_token`` (ROLL's ``is_weight_clipfrac``: selected tokens whose raw ratio,
        broadcast over the row at row level, exceeds clip_max).
    """
    levels, modes = ("token", "sequence", "geometric", "segment"), ("truncate", "mask", "geo_mask")
    if level not in levels:
        raise ValueError(f"level: expected one of {levels}, got {level!r}")
    if mode not in modes:
        raise ValueError(f"mode: expected one of {modes}, got {mode!r}")
    eps = _bound(geo_eps, "geo_eps", 1e-8)
    lo = _bound(clip_min, "clip_min", -math.inf)
    hi = _bound(clip_max, "clip_max", math.inf)
    clamp = _bound(log_clamp, "log_clamp", math.inf)
    a, b, m, place = _inputs(trainer_logp, sampler_logp, mask)
    ids = _arrays.as_input(segment_ids, "segment_ids", default="int64")
    backend = _backend.for_placement(place)
    B = int(a.shape[0])
    shape = (B,) if level in ("sequence", "geometric") else tuple(int(s) for s in a.shape)
    names = _core.importance_metric_names()
    handle = _arrays.resolve_stream(place, stream)
    with _arrays.allocating_on(place, handle):  # from the pool of the stream the kernels write on
        weights = _arrays.empty(place, shape, _arrays.dtype_name(a), like=a)
        values = _arrays.empty(place, (len(names),), "float64", like=a)
        workspace = _workspace(place, backend.importance_workspace_size(B), a)
    backend.importance_weights(
        a,
        b,
        m,
        weights,
        values,
        level=level,
        mode=mode,
        clip_min=lo,
        clip_max=hi,
        log_clamp=clamp,
        batch_normalize=bool(batch_normalize),
        geo_eps=eps,
        segment_ids=ids,
        workspace=workspace,
        stream=handle,
    )
    return ImportanceWeights(_arrays.finish(place, weights), _metrics(names, _arrays.finish(place, values)))


Thresholds = Union[float, str, Tuple[float, float], Sequence[Union[float, str, Tuple[float, float]]]]


def _criteria(criteria: Union[str, Sequence[str]]) -> list:
    names = (
        [c.strip() for c in criteria.split(",")] if isinstance(criteria, str) else [str(c).strip() for c in criteria]
    )
    names = [c for c in names if c]
    if not names:
        raise ValueError("criteria: expected at least one rejection criterion, e.g. 'token_k1' or 'seq_mean_k3'")
    unique = []
    for c in names:  # verl de-duplicates, keeping the first
        if c not in unique:
            unique.append(c)
    return unique


def _threshold_pair(spec: Any, criterion: str) -> Tuple[float, float]:
    """verl's threshold spec of one criterion → (lower, upper). k1 and ROLL's ratio filters: ratio
    bounds 'lower_upper' (a single number u means [1/u, u]); ROLL's diff filters: 'lower_upper' (u
    means [−u, u]); k2/k3: a single upper bound."""
    diff = criterion.endswith("_diff")
    k1 = criterion.endswith("k1") or criterion.endswith("_ratio") or diff
    if isinstance(spec, tuple):
        if not k1:
            raise ValueError(f"thresholds: criterion {criterion!r} takes a single upper bound, got {spec!r}")
        lower, upper = (float(x) for x in spec)
    elif isinstance(spec, str) and "_" in spec:
        if not k1:
            raise ValueError(
                f"thresholds: criterion {criterion!r} takes a single upper bound without '_', got {spec!r}"
            )
        lower, upper = (float(x) for x in spec.split("_", 1))
    else:
        try:
            upper = float(spec)
        except (TypeError, ValueError):
            raise ValueError(f"thresholds: invalid threshold {spec!r} for criterion {criterion!r}") from None
        lower = -upper if diff else (1.0 / upper if (k1 and upper > 0) else 0.0)
    return lower, upper


def rejection_mask(
    trainer_logp: Any,
    sampler_logp: Any,
    mask: Any,
    criteria: Union[str, Sequence[str]],
    thresholds: Thresholds,
    *,
    stream: Any = None,
) -> RejectionMask:
    """verl's rejection sampling (``rollout_rs``): drop tokens or whole sequences whose divergence
    between the trainer and the sampler is out of bounds.

    With lr = clamp(trainer_logp − sampler_logp, ±20): k1 = −lr, k2 = ½lr², k3 = e^{lr} − 1 − lr per
    token; criteria ``token_k{1,2,3}``, ``seq_sum_k{1,2,3}``, ``seq_mean_k{1,2,3}`` (Σ/(L + 1e-8)),
    ``seq_max_k{2,3}``; several criteria (a list or verl's comma-separated string) must all pass.
    k1 keeps log(lower) ≤ statistic ≤ log(upper) (ratio bounds on π_sampler/π_trainer; a single
    number u means [1/u, u]); k2/k3 keep statistic ≤ upper.

    ROLL's filters (``TrainInferFilterConfig``), ``<agg>_ratio`` and ``<agg>_diff`` with agg one of
    ``token``, ``geometric`` (Σ / L), ``sequence`` (Σ), ``segment`` (per maximal run of selected
    tokens, Σ / n): the ratio exp(agg(lr)) or the probability difference
    agg(e^{trainer} − e^{sampler}) must lie in [lower, upper] (unclamped; a single number u means
    [1/u, u] for a ratio, [−u, u] for a difference).

    Args:
        thresholds: one spec shared by every criterion, or a list with one per criterion (or verl's
            comma-separated string). A spec is a number, verl's ``"lower_upper"`` string or a
            ``(lower, upper)`` tuple (the last two for k1 and ROLL's filters only).
        stream: CUDA stream for GPU inputs (default: the caller's current stream). CUDA inputs run
            on the GPU with no host synchronisation (mask and metrics stay on the device).

    Returns:
        ``RejectionMask(mask, metrics)``: the (B, T) bool mask with rejected tokens removed, and per
        criterion ``<name>_mean``, ``_max``, ``_min``, ``_masked_fraction``, ``_seq_masked_fraction``,
        then overall ``masked_fraction`` (of selected tokens) and ``seq_masked_fraction`` (of rows),
        as verl logs them.
    """
    names = _criteria(criteria)
    if isinstance(thresholds, list):
        specs = list(thresholds)
    elif isinstance(thresholds, str):
        specs = [t.strip() for t in thresholds.split(",") if t.strip()]
    else:  # a number, or one (lower, upper) pair
        specs = [thresholds]
    if len(specs) == 1:
        specs = specs * len(names)
    if len(specs) != len(names):
        raise ValueError(
            f"thresholds: expected one threshold shared by all criteria or exactly {len(names)} "
            f"(one per criterion {names}), got {len(specs)}"
        )
    pairs = [_threshold_pair(s, c) for s, c in zip(specs, names)]
    a, b, m, place = _inputs(trainer_logp, sampler_logp, mask)
    backend = _backend.for_placement(place)
    metric_names = _core.rejection_metric_names(names)
    handle = _arrays.resolve_stream(place, stream)
    with _arrays.allocating_on(place, handle):  # from the pool of the stream the kernels write on
        keep = _arrays.empty(place, tuple(int(s) for s in a.shape), "bool", like=a)
        values = _arrays.empty(place, (len(metric_names),), "float64", like=a)
        workspace = _workspace(place, backend.rejection_workspace_size(int(a.shape[0]), len(names)), a)
    backend.rejection_mask(
        a,
        b,
        m,
        keep,
        values,
        criteria=names,
        lower=[p[0] for p in pairs],
        upper=[p[1] for p in pairs],
        workspace=workspace,
        stream=handle,
    )
    return RejectionMask(_arrays.finish(place, keep), _metrics(metric_names, _arrays.finish(place, values)))


def _preset(importance: Optional[dict] = None, rejection: Optional[dict] = None, peer: str = "") -> Mapping:
    return MappingProxyType({"importance": importance, "rejection": rejection, "peer": peer})


_VERL = {"log_clamp": 20.0}

CORRECTIONS: Mapping[str, Mapping] = MappingProxyType(
    {
        "none": _preset(peer="no correction"),
        "trl.token_truncate": _preset(
            {"level": "token", "mode": "truncate", "clip_max": 3.0},
            peer="TRL vllm_importance_sampling_mode='token_truncate'",
        ),
        "trl.token_mask": _preset(
            {"level": "token", "mode": "mask", "clip_max": 3.0}, peer="TRL vllm_importance_sampling_mode='token_mask'"
        ),
        "trl.sequence_truncate": _preset(
            {"level": "sequence", "mode": "truncate", "clip_max": 3.0},
            peer="TRL vllm_importance_sampling_mode='sequence_truncate'",
        ),
        "trl.sequence_mask": _preset(
            {"level": "sequence", "mode": "mask", "clip_max": 3.0},
            peer="TRL vllm_importance_sampling_mode='sequence_mask' (TRL's default)",
        ),
        "verl.token_is": _preset(
            {"level": "token", "mode": "truncate", "clip_max": 2.0, **_VERL},
            peer="verl RolloutCorrectionConfig.decoupled_token_is()",
        ),
        "verl.seq_is": _preset(
            {"level": "sequence", "mode": "truncate", "clip_max": 2.0, **_VERL},
            peer="verl RolloutCorrectionConfig.decoupled_seq_is()",
        ),
        "verl.token_icepop": _preset(
            {"level": "token", "mode": "mask", "clip_min": 0.5, "clip_max": 5.0, **_VERL},
            peer="verl RolloutCorrectionConfig.decoupled_token_icepop()",
        ),
        "verl.seq_is_rs": _preset(
            {"level": "sequence", "mode": "truncate", "clip_max": 2.0, **_VERL},
            {"criteria": "seq_sum_k1", "thresholds": "0.5_2.0"},
            peer="verl RolloutCorrectionConfig.decoupled_seq_is_rs()",
        ),
        "verl.geo_rs": _preset(
            None,
            {"criteria": "seq_mean_k1", "thresholds": "0.999_1.001"},
            peer="verl RolloutCorrectionConfig.decoupled_geo_rs()",
        ),
        "verl.k3_rs": _preset(
            None,
            {"criteria": "seq_mean_k3", "thresholds": 0.01},
            peer="verl RolloutCorrectionConfig.bypass_ppo_clip_k3_rs() (its RS part)",
        ),
        # ROLL: TrainInferISWeightConfig(weight_type=..., upper_bound=1.2) (clamp(w, 0, 1.2)) and
        # TrainInferFilterConfig's defaults (ratio in [0.8, 1.2]; diff in [-0.2, 0.2]). ROLL's means
        # divide by n + 1e-8 with n an integer count, so the sum is float32 and the 1e-8 vanishes: ε 0.
        **{
            f"roll.{level}_is": _preset(
                {"level": level, "mode": "truncate", "clip_max": 1.2, "geo_eps": 0.0},
                peer=f"ROLL TrainInferISWeightConfig(weight_type='{level}')",
            )
            for level in ("token", "geometric", "sequence", "segment")
        },
        **{
            f"roll.{level}_{stat}_filter": _preset(
                None,
                {"criteria": f"{level}_{stat}", "thresholds": bounds},
                peer=f"ROLL TrainInferFilterConfig(agg_type='{level}', {stat}_enabled=True)",
            )
            for level in ("token", "geometric", "sequence", "segment")
            for stat, bounds in (("ratio", (0.8, 1.2)), ("diff", (-0.2, 0.2)))
        },
        # OpenRLHF: --algo.advantage.is_correction_type, thresholds [0.5, 5.0] by default; its seq-mask-tis
        # geometric mean is Σ lr / L (ε 0).
        **{
            f"openrlhf.{name.replace('-', '_')}": _preset(
                {"level": "token", "mode": mode, "clip_min": 0.5, "clip_max": 5.0, **extra},
                peer=f"OpenRLHF is_correction_type='{name}'",
            )
            for name, mode, extra in (
                ("tis", "truncate", {}),
                ("icepop", "mask", {}),
                ("seq-mask-tis", "geo_mask", {"geo_eps": 0.0}),
            )
        },
        # NeMo-RL: truncated_importance_sampling_type; its documented reference bounds.
        "nemo.seq_mask_tis": _preset(
            {"level": "token", "mode": "geo_mask", "clip_min": 0.999, "clip_max": 1.002},
            peer="NeMo-RL truncated_importance_sampling_type='seq-mask-tis', ratio_min 0.999, ratio 1.002",
        ),
        "nemo.icepop": _preset(
            {"level": "token", "mode": "mask", "clip_min": 0.5, "clip_max": 5.0},
            peer="NeMo-RL truncated_importance_sampling_type='icepop', ratio_min 0.5, ratio 5.0",
        ),
    }
)

_IMPORTANCE_KEYS = ("level", "mode", "clip_min", "clip_max", "log_clamp", "batch_normalize", "geo_eps", "segment_ids")
_REJECTION_KEYS = ("criteria", "thresholds")


def correction(name: str, trainer_logp: Any, sampler_logp: Any, mask: Any, **overrides: Any) -> Correction:
    """Apply the correction preset ``name`` (see ``grpokit.CORRECTIONS``): rejection sampling first
    (its mask), then importance weights. ``overrides`` replace the preset's options
    (``importance_weights``'s keywords and ``criteria``/``thresholds``).

    Metrics of the importance stage are prefixed ``is/``, of the rejection stage ``rs/``.
    """
    preset = CORRECTIONS.get(name)
    if preset is None:
        raise ValueError(f"correction: expected one of {sorted(CORRECTIONS)}, got {name!r}")
    unknown = sorted(set(overrides) - set(_IMPORTANCE_KEYS) - set(_REJECTION_KEYS))
    if unknown:
        raise TypeError(f"correction: unknown option(s) {unknown}; expected {list(_IMPORTANCE_KEYS + _REJECTION_KEYS)}")
    imp = dict(preset["importance"]) if preset["importance"] is not None else None
    rej = dict(preset["rejection"]) if preset["rejection"] is not None else None
    for k, v in overrides.items():
        if k in _IMPORTANCE_KEYS:
            if imp is None:
                imp = {}
            imp[k] = v
        else:
            if rej is None:
                rej = {}
            rej[k] = v
    metrics: Dict[str, Any] = {}
    keep = _arrays.as_input(mask, "mask", default="bool")
    if rej is not None:
        if "criteria" not in rej or "thresholds" not in rej:
            raise ValueError("correction: rejection sampling needs both criteria and thresholds")
        keep, rs_metrics = rejection_mask(trainer_logp, sampler_logp, mask, rej["criteria"], rej["thresholds"])
        metrics.update({f"rs/{k}": v for k, v in rs_metrics.items()})
    weights = None
    if imp is not None:
        # verl computes IS weights on the original mask; the rejection mask then removes tokens.
        weights, is_metrics = importance_weights(trainer_logp, sampler_logp, mask, **imp)
        metrics.update({f"is/{k}": v for k, v in is_metrics.items()})
    return Correction(weights, keep, metrics)


def variance_proxy(
    advantages: Any,
    mask: Any,
    *,
    logprobs: Any = None,
    logp: Any = None,
    sum_pi_squared: Any = None,
    is_weights: Any = None,
    gradient_norm: Optional[float] = None,
    stream: Any = None,
) -> Dict[str, Any]:
    """verl's variance-proxy metrics (``compute_variance_proxy_metrics``): how noisy the policy
    gradient of this batch is, from the score-norm proxy W(τ) = Σ_t (1 − 2π_t + Σ_v π_v²)·ρ_t².

    Per row Ā_i = masked_mean(A) and W_i = Σ_t m_t w_t; ``proxy2_total_power`` = mean_i Ā_i²·max(W_i, 0)
    (with ``is_weights``: mean_i ρ̄_i²·Ā_i²·max(W_orig_i, 0), ρ̄ the row's mean weight and W_orig the
    sum of w_t / max(ρ_t², 1e-10)); ``proxy1_signal_strength`` = ‖g‖² and ``proxy3_pure_noise`` =
    max(0, (proxy2 − ‖g‖²)/(B − 1)) given ``gradient_norm`` (0 otherwise); ``expected_a_squared`` =
    mean Ā², ``expected_w`` = mean W. masked_mean is verl's Σ / (n + 1e-8); means run over all B rows.

    Args:
        advantages, mask: (B, T) (the advantages broadcast over tokens, as verl stores them).
        logprobs: a ``grpokit.token_logprobs(..., sum_sq_probs=True)`` result on the (B, T) completion
            positions (or ``linear_token_logprobs``), supplying ``logp`` (π_t = e^logp, the old
            policy's, as verl) and ``sum_pi_squared`` (Σ_v π_v²) from the one fused pass; or pass both.
        is_weights: (B, T) rollout IS weights ρ (``importance_weights(...).weights`` at token level).
        gradient_norm: the batch gradient's norm (verl passes the optimizer step's grad norm).
        stream: CUDA stream for GPU inputs (the metrics stay on the device, 0-d float64 arrays).

    Returns:
        ``{"proxy1_signal_strength", "proxy2_total_power", "proxy3_pure_noise", "expected_a_squared",
        "expected_w"}`` (verl's names under ``variance_proxy/``).
    """
    from ._estimators import _unpack_logprobs

    given = _unpack_logprobs({"logprobs": logprobs, "logp": logp, "sum_pi_squared": sum_pi_squared})
    for name in ("logp", "sum_pi_squared"):
        if given.get(name) is None:
            raise ValueError(f"{name}: required (or pass logprobs=, a token_logprobs(..., sum_sq_probs=True) result)")
    g = _bound(gradient_norm, "gradient_norm", math.nan)
    arrays = {
        "logp": _arrays.as_input(given["logp"], "logp"),
        "sum_pi_squared": _arrays.as_input(given["sum_pi_squared"], "sum_pi_squared"),
        "advantages": _arrays.as_input(advantages, "advantages"),
        "mask": _arrays.as_input(mask, "mask", default="bool"),
    }
    if is_weights is not None:
        arrays["is_weights"] = _arrays.as_input(is_weights, "is_weights")
    place = _arrays.common_placement(arrays)
    backend = _backend.for_placement(place)
    names = _core.variance_proxy_metric_names()
    lp = arrays["logp"]
    handle = _arrays.resolve_stream(place, stream)
    with _arrays.allocating_on(place, handle):
        values = _arrays.empty(place, (len(names),), "float64", like=lp)
        workspace = _workspace(place, backend.variance_proxy_workspace_size(int(lp.shape[0])) if lp.shape else 0, lp)
    backend.variance_proxy(
        lp,
        arrays["sum_pi_squared"],
        arrays["advantages"],
        arrays["mask"],
        arrays.get("is_weights"),
        values,
        gradient_norm=g,
        workspace=workspace,
        stream=handle,
    )
    return _metrics(names, _arrays.finish(place, values))
