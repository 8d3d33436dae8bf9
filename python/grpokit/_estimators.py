"""The table of advantage estimators: each one's peer, inputs and option defaults.

An estimator is named data — ``(name, options)`` — so a loss preset can say which advantages it uses
(``estimator="rloo", normalize=True``) and :func:`grpokit.advantages` computes them in the engine.
docs/estimators.md has the exact definitions.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Mapping, Optional, Tuple

import numpy as np

from . import _arrays, _backend

# Array inputs an estimator may take (besides rewards and group_ids).
ARRAY_INPUTS = (
    "reward_weights",
    "mask",
    "lengths",
    "baseline_rewards",
    "logp",
    "ref_logp",
    "sum_pi_squared",
    "is_weights",
)


@dataclass(frozen=True)
class EstimatorInfo:
    """One estimator: what it reproduces, what it needs, and its option defaults."""

    name: str
    engine: str  # the engine's estimator
    kind: str  # "outcome": advantages (B,); "token": advantages (B, T)
    peer: str  # whose definition it reproduces
    summary: str
    defaults: Mapping[str, Any] = field(default_factory=dict)  # options and their defaults
    inputs: Tuple[str, ...] = ()  # array inputs it accepts
    required: Tuple[str, ...] = ()  # of which these are required
    grouped: bool = True  # needs group_size / group_ids


def _info(name, engine, kind, peer, summary, defaults=None, inputs=(), required=(), grouped=True):
    return EstimatorInfo(
        name,
        engine,
        kind,
        peer,
        summary,
        MappingProxyType(dict(defaults or {})),
        tuple(inputs),
        tuple(required),
        grouped,
    )


_GROUP_STD = {"baseline": "mean", "std": "none", "std_scope": "group", "epsilon": 0.0}
# The optimal token baseline's defaults, inputs and required inputs (whole rows or selected tokens).
_OTB_OPTIONS = (
    {"handle_zero_tail": True, "epsilon": 1e-8, "return_returns": False},
    ("mask", "logp", "sum_pi_squared", "is_weights", "logprobs"),
    ("mask", "logp", "sum_pi_squared"),
)

ESTIMATORS: Mapping[str, EstimatorInfo] = MappingProxyType(
    {
        e.name: e
        for e in (
            _info(
                "grpo",
                "grpo",
                "outcome",
                "paper; TRL scale_rewards / sum_then_normalize; verl grpo",
                "(R − group mean) [/ (std + epsilon)]",
                _GROUP_STD,
                ("reward_weights",),
            ),
            _info(
                "rloo",
                "rloo",
                "outcome",
                "TRL RLOOTrainer; verl rloo (identical: G/(G−1)(R − mean))",
                "R − mean of the other completions; normalize=True adds TRL's batch standardising; "
                "reward_clip_range and beta (KL in the reward) as TRL's RLOOTrainer",
                {"normalize": False, "final_epsilon": 1e-4, "reward_clip_range": None, "beta": 0.0},
                ("reward_weights", "mask", "logp", "ref_logp"),
            ),
            _info(
                "reinforce_pp",
                "reinforce_pp",
                "token",
                "verl reinforce_plus_plus",
                "discounted return-to-go, whitened over the mask",
                {"gamma": 1.0, "return_returns": False},
                ("mask",),
                ("mask",),
                grouped=False,
            ),
            _info(
                "reinforce_pp_baseline",
                "reinforce_pp_baseline",
                "outcome",
                "verl reinforce_plus_plus_baseline",
                "R − group mean, whitened over the mask (rows weigh by length)",
                {},
                ("reward_weights", "mask", "lengths"),
            ),
            _info(
                "remax",
                "remax",
                "token",
                "verl remax",
                "return-to-go − greedy completion's reward",
                {"return_returns": False},
                ("mask", "baseline_rewards"),
                ("mask", "baseline_rewards"),
                grouped=False,
            ),
            _info(
                "opo",
                "opo",
                "outcome",
                "verl opo",
                "R − Σ L_j R_j / Σ L_j over the group",
                {},
                ("reward_weights", "mask", "lengths"),
            ),
            _info(
                "grpo_passk",
                "grpo_passk",
                "outcome",
                "verl grpo_passk",
                "only the group's best gets (R_max − R_2nd) [/ (std + epsilon)]",
                {"std": "sample", "epsilon": 1e-6},
                ("reward_weights",),
            ),
            _info(
                "gpg",
                "gpg",
                "outcome",
                "verl gpg",
                "α (R − group mean) / f_norm, α = B / #non-zero rewards",
                {"f_norm": 1.0},
                ("reward_weights",),
            ),
            _info(
                "gdpo",
                "normalize_then_sum",
                "outcome",
                "verl gdpo",
                "Σ_k w_k (r_k − mean_k)/(std_k + epsilon) per group, then masked whitening",
                {"std": "sample", "epsilon": 1e-6},
                ("reward_weights", "mask", "lengths"),
            ),
            _info(
                "normalize_then_sum",
                "normalize_then_sum",
                "outcome",
                "TRL multi_objective_aggregation='normalize_then_sum'",
                "Σ_k w_k (r_k − mean_k)/(std_k + epsilon) per group, then (x − mean)/(std + final_epsilon)",
                {"std": "sample", "epsilon": 1e-4, "final_epsilon": 1e-4},
                ("reward_weights",),
            ),
            _info(
                "optimal_token_baseline",
                "optimal_token_baseline",
                "token",
                "verl optimal_token_baseline",
                "A_t = G_t − Σ_j G_jt W_jt / Σ_j W_jt, W = cumulative 1 − 2π + Σπ² (× ρ²)",
                *_OTB_OPTIONS,
            ),
            _info(
                "tir_optimal_token_baseline",
                "tir_optimal_token_baseline",
                "token",
                "verl tir_optimal_token_baseline",
                "the optimal token baseline over each row's selected tokens only (multi-turn: gaps removed)",
                *_OTB_OPTIONS,
            ),
            _info(
                "maxrl",
                "maxrl",
                "outcome",
                "SkyRL maxrl (MaxRL: maximum-likelihood RL)",
                "(R − group mean) / (group mean + epsilon); a group of one keeps R",
                {"epsilon": 1e-6},
                ("reward_weights",),
            ),
            _info(
                "running",
                "running",
                "outcome",
                "ROLL reward_norm(norm_mean_type='running', norm_std_type='running')",
                "R − running mean [/ (running σ + epsilon)]: the caller's RunningMoments state (state=) "
                "updated in place with the batch first (update=False: used as given)",
                {"std": "sample", "epsilon": 1e-6, "state": None, "update": True},
                ("reward_weights",),
                grouped=False,
            ),
            _info(
                "batch_mean",
                "batch_mean",
                "outcome",
                "AReaL Normalization(mean_level='batch')",
                "R − batch mean (baseline='leave_one_out': of the others) [/ (σ + epsilon)], σ around that "
                "baseline over the batch or each group (std_scope='group' needs group_size or group_ids)",
                {"baseline": "mean", "std": "sample", "std_scope": "batch", "epsilon": 1e-5},
                ("reward_weights",),
                grouped=False,
            ),
        )
    }
)

# verl's spellings, accepted as aliases.
ALIASES: Mapping[str, str] = MappingProxyType(
    {
        "reinforce_plus_plus": "reinforce_pp",
        "reinforce_plus_plus_baseline": "reinforce_pp_baseline",
        "sum_then_normalize": "grpo",
    }
)


def _p(estimator: str, **options: Any) -> Tuple[str, Mapping[str, Any]]:
    return estimator, MappingProxyType(options)


# Peer-named presets: an estimator with the options that reproduce the peer's default configuration.
# `advantages(..., estimator="verl.grpo")`; explicit options still override them.
PRESETS: Mapping[str, Tuple[str, Mapping[str, Any]]] = MappingProxyType(
    {
        "paper.grpo": _p("grpo", std="population"),  # the papers' σ: population std, ε = 0
        "trl.grpo": _p("grpo", std="sample", epsilon=1e-4),  # scale_rewards="group" (TRL's default)
        "trl.grpo_batch_std": _p("grpo", std="sample", std_scope="batch", epsilon=1e-4),  # scale_rewards="batch"
        "trl.grpo_no_std": _p("grpo"),  # scale_rewards="none" (Dr. GRPO)
        "trl.normalize_then_sum": _p("normalize_then_sum"),
        "trl.rloo": _p("rloo"),  # RLOOTrainer, normalize_advantages=False (its default)
        "verl.grpo": _p("grpo", std="sample", epsilon=1e-6),  # norm_adv_by_std_in_grpo=True
        "verl.grpo_no_std": _p("grpo"),  # norm_adv_by_std_in_grpo=False
        "verl.rloo": _p("rloo"),
        "verl.reinforce_plus_plus": _p("reinforce_pp", gamma=1.0),
        "verl.reinforce_plus_plus_baseline": _p("reinforce_pp_baseline"),
        "verl.remax": _p("remax"),
        "verl.opo": _p("opo"),
        "verl.grpo_passk": _p("grpo_passk", std="sample", epsilon=1e-6),
        "verl.gpg": _p("gpg", f_norm=1.0),
        "verl.gdpo": _p("gdpo", std="sample", epsilon=1e-6),
        "verl.optimal_token_baseline": _p("optimal_token_baseline", handle_zero_tail=True, epsilon=1e-8),
        "verl.tir_optimal_token_baseline": _p("tir_optimal_token_baseline", handle_zero_tail=True, epsilon=1e-8),
        "skyrl.maxrl": _p("maxrl", epsilon=1e-6),
        # NormConfig's defaults (std_level="batch", std_unbiased=True, eps=1e-5) and its other std levels.
        "areal.batch_mean": _p("batch_mean", std="sample", std_scope="batch", epsilon=1e-5),
        "areal.batch_mean_group_std": _p("batch_mean", std="sample", std_scope="group", epsilon=1e-5),
        "areal.batch_mean_no_std": _p("batch_mean", std="none"),
        # ROLL's reward_norm: norm_mean_type="running" with norm_std_type="running" (its sample std, 1e-6), or None
        "roll.running": _p("running", std="sample", epsilon=1e-6),
        "roll.running_mean": _p("running", std="none"),
    }
)

# Engine batch normalisation of each engine estimator (fixed by the definition, or by an option).
_BATCH_NORM = {"reinforce_pp_baseline": "masked_whiten", "gdpo": "masked_whiten", "normalize_then_sum": "standardise"}


def lookup(name: str) -> Tuple[EstimatorInfo, Mapping[str, Any]]:
    """The estimator called `name` (an estimator, a verl alias or a peer preset such as
    ``"verl.grpo"``) and the preset's options; unknown names list the valid ones."""
    if not isinstance(name, str):
        raise TypeError(f"estimator: expected a name (str), got {type(name).__name__}")
    preset: Mapping[str, Any] = {}
    if name in PRESETS:
        name, preset = PRESETS[name]
    info = ESTIMATORS.get(ALIASES.get(name, name))
    if info is None:
        raise ValueError(
            f"estimator: expected one of {sorted(ESTIMATORS)}, a verl alias {sorted(ALIASES)} or a preset "
            f"{sorted(PRESETS)}, got {name!r}"
        )
    return info, preset


def _unpack_logprobs(given: Mapping[str, Any]) -> Mapping[str, Any]:
    """The optimal-token-baseline estimators' ``logprobs=``: a result of ``grpokit.token_logprobs``
    / ``linear_token_logprobs`` (or their ``grpokit.torch`` forms) computed with
    ``sum_sq_probs=True`` on the (B, T) rows, supplying ``logp`` and ``sum_pi_squared``."""
    r = given.get("logprobs")
    if r is None:
        return given
    if not (hasattr(r, "logp") and hasattr(r, "sum_sq_probs")):
        raise TypeError(
            f"logprobs: expected the result of grpokit.token_logprobs (with sum_sq_probs=True), got {type(r).__name__}"
        )
    if r.sum_sq_probs is None:
        raise ValueError(
            "logprobs: the result has no sum_sq_probs; compute it with token_logprobs(..., sum_sq_probs=True)"
        )
    both = [k for k in ("logp", "sum_pi_squared") if given.get(k) is not None]
    if both:
        raise ValueError(f"logprobs: pass either logprobs= or {'/'.join(both)}=, not both")
    out = {k: v for k, v in given.items() if k != "logprobs"}
    out.update(logp=r.logp, sum_pi_squared=r.sum_sq_probs)
    return out


def resolve_options(
    info: EstimatorInfo, given: Mapping[str, Any], preset: Mapping[str, Any] = MappingProxyType({})
) -> dict:
    """The estimator's defaults, updated with the preset's options, then with `given` (None values
    are "not given"); names the estimator does not take are a TypeError."""
    if "logprobs" in info.inputs:
        given = _unpack_logprobs(given)
    allowed = set(info.defaults) | set(info.inputs)
    unknown = sorted(k for k, v in given.items() if k not in allowed and v is not None)
    if unknown:
        raise TypeError(
            f"estimator {info.name!r} takes no option {', '.join(map(repr, unknown))}; "
            f"its options are {sorted(info.defaults)} and its inputs {list(info.inputs)}"
        )
    missing = [k for k in info.required if given.get(k) is None]
    if missing:
        raise ValueError(f"estimator {info.name!r} needs {', '.join(missing)} (see grpokit.advantages)")
    opts = dict(info.defaults)
    opts.update(preset)
    opts.update({k: v for k, v in given.items() if v is not None})
    return opts


def _weights(w: Any) -> Optional[np.ndarray]:
    """reward_weights as a float64 NumPy vector (a handful of numbers; any framework accepted)."""
    if w is None:
        return None
    if _arrays._is_torch(w):
        w = w.detach().cpu().numpy()
    arr = np.asarray(w, dtype=np.float64)
    if arr.ndim != 1:
        raise ValueError(f"reward_weights: expected a 1-D sequence of weights, got shape {arr.shape}")
    return arr


def engine_options(info: EstimatorInfo, opts: Mapping[str, Any]) -> dict:
    """The engine's scalar options of a resolved estimator, by the names of ``_core.estimator_advantages``
    (and of grpokit.jax's custom call)."""
    clip = opts.get("reward_clip_range") or (None, None)
    if len(clip) != 2:
        raise ValueError(f"reward_clip_range: expected (min, max), got {clip!r}")
    otb = info.engine.endswith("optimal_token_baseline")  # its epsilon is the baseline's denominator's
    return dict(
        estimator=info.engine,
        baseline=opts.get("baseline", "mean"),
        std=opts.get("std", "none"),
        std_scope=opts.get("std_scope", "group"),
        epsilon=0.0 if otb else float(opts.get("epsilon", 0.0)),
        batch_norm=_BATCH_NORM.get(info.name, "standardise" if opts.get("normalize") else "none"),
        final_epsilon=float(opts.get("final_epsilon", 1e-4)),
        gamma=float(opts.get("gamma", 1.0)),
        f_norm=float(opts.get("f_norm", 1.0)),
        handle_zero_tail=bool(opts.get("handle_zero_tail", True)),
        otb_epsilon=float(opts["epsilon"]) if otb else 1e-8,
        reward_clip_min=float(clip[0]) if clip[0] is not None else -math.inf,
        reward_clip_max=float(clip[1]) if clip[1] is not None else math.inf,
        beta=float(opts.get("beta", 0.0)),
        **_running_options(opts),
    )


@dataclass
class RunningMoments:
    """The state of the ``running`` estimator (ROLL's running reward normalisation), kept by the caller:
    the number of rewards seen, their mean and their population std (ROLL keeps the variance,
    ``std ** 2``; the std stays finite for rewards up to the largest double). ``advantages(...,
    estimator="running", state=s)`` merges the batch into ``s`` (in place: passing a state is the opt-in,
    as with ROLL's object) and normalises with it; ``update=False`` uses ``s`` as it is and leaves it so.
    ``a.merge(b)`` is a new state of both streams (Chan's parallel update: one state per data-parallel
    rank, merged in any order)."""

    count: float = 0.0
    mean: float = 0.0
    std: float = 0.0

    def __post_init__(self) -> None:
        for name in ("count", "mean", "std"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, float, np.floating, np.integer)):
                raise TypeError(f"state: expected a number for {name}, got {type(v).__name__}")
            setattr(self, name, float(v))
        if not (self.count >= 0 and math.isfinite(self.count)):
            raise ValueError(f"state: expected a count >= 0, got {self.count}")
        if not math.isfinite(self.mean):
            raise ValueError(f"state: expected a finite mean, got {self.mean}")
        if not (self.std >= 0 and math.isfinite(self.std)):
            raise ValueError(f"state: expected a finite std >= 0, got {self.std}")

    def merge(self, other: "RunningMoments") -> "RunningMoments":
        if not isinstance(other, RunningMoments):
            raise TypeError(f"other: expected a grpokit.RunningMoments, got {type(other).__name__}")
        from . import _core  # the engine's merge (math::RunningMoments), not a second copy

        return RunningMoments(*_core.running_moments_merge(*self.as_tuple(), *other.as_tuple()))

    def as_tuple(self) -> Tuple[float, float, float]:
        return (self.count, self.mean, self.std)


def _running_options(opts: Mapping[str, Any]) -> dict:
    """The running estimator's state and update flag as engine options (an empty state by default)."""
    state = opts.get("state")
    if state is None:
        state = RunningMoments()
    if not isinstance(state, RunningMoments):
        raise TypeError(f"state: expected a grpokit.RunningMoments (or None: none yet), got {type(state).__name__}")
    update = opts.get("update", True)
    if not isinstance(update, (bool, np.bool_)):
        raise TypeError(f"update: expected a bool, got {type(update).__name__}")
    count, mean, std = state.as_tuple()
    return dict(running_count=count, running_mean=mean, running_std=std, running_update=bool(update))


def compute(
    rewards: Any,
    group_size: Optional[int],
    group_ids: Any,
    info: EstimatorInfo,
    opts: dict,
    stream: Any = None,
    check_finite: bool = False,
) -> Any:
    """Runs the engine (CPU or CUDA, by the arrays' device) for a resolved estimator. `rewards` is
    already an accepted float array. On the GPU, `check_finite` checks the rewards for ±inf (one
    host synchronisation); the CPU engine always checks."""
    arrays = {k: opts.pop(k, None) for k in ARRAY_INPUTS}
    arrays["reward_weights"] = _weights(arrays["reward_weights"])
    defaults = {"mask": "bool", "lengths": "int64"}
    for k in ARRAY_INPUTS:
        if k != "reward_weights":
            arrays[k] = _arrays.as_input(arrays[k], k, default=defaults.get(k, "float64"))
    ids = _arrays.as_input(group_ids, "group_ids", default="int64")
    named = {"rewards": rewards, "group_ids": ids, **{k: v for k, v in arrays.items() if k != "reward_weights"}}
    place = _arrays.common_placement(named)
    backend = _backend.for_placement(place)
    if place.is_cuda and check_finite:
        _arrays.raise_if_inf(rewards, "rewards")
    if info.grouped and group_ids is None and group_size is None:
        raise ValueError("group_size: pass the number of completions per prompt, or group_ids")
    dtype = _arrays.dtype_name(rewards)
    if info.kind == "token":
        mask = arrays["mask"]
        shape = tuple(int(s) for s in mask.shape)
        if len(shape) != 2:
            raise ValueError(f"mask: expected shape (B, T), got {shape}")
    else:
        shape = (int(rewards.shape[0]) if len(rewards.shape) else 0,)
    handle = _arrays.resolve_stream(place, stream)
    with _arrays.allocating_on(place, handle):  # from the pool of the stream the kernels write on
        out = _arrays.empty(place, shape, dtype, like=rewards)
        returns = _arrays.empty(place, shape, dtype, like=rewards) if opts.get("return_returns") else None
        state = opts.get("state") if info.engine == "running" else None
        if state is not None and opts.get("update", True):  # the new state, in the second output
            returns = _arrays.empty(place, (3,), "float64", like=rewards)
        else:
            state = None
        workspace = None
        if place.is_cuda:  # scratch from the caller's framework: the kernels never allocate
            mask = arrays["mask"]
            tokens = int(mask.shape[1]) if mask is not None and len(mask.shape) == 2 else 0
            rows = int(rewards.shape[0]) if len(rewards.shape) else 0
            size = backend.estimator_workspace_size(info.engine, rows, tokens)
            if size > 0:
                workspace = _arrays.empty(place, (size,), "float64", like=rewards)
    backend.estimator_advantages(
        rewards,
        ids,
        arrays["reward_weights"],
        arrays["mask"],
        arrays["lengths"],
        arrays["baseline_rewards"],
        arrays["logp"],
        arrays["ref_logp"],
        arrays["sum_pi_squared"],
        arrays["is_weights"],
        out,
        returns,
        group_size=int(group_size) if group_size is not None else 0,
        **engine_options(info, opts),
        workspace=workspace,
        stream=handle,
    )
    out = _arrays.finish(place, out)
    if state is not None:  # three numbers to the host (one synchronisation on a GPU)
        state.count, state.mean, state.std = returns.tolist()
        return out
    if returns is not None:
        return out, _arrays.finish(place, returns)
    return out
