"""Loss methods as data: the LossSpec record, the preset table and the override names.

A preset is one row of rules (ratio × surrogate/clip × weight × regulariser × aggregation) and its
hyper-parameters. Every row runs through the same engine (cpp/include/grpokit/math/loss.hpp); nothing
here computes a loss.

Namespaces say whose semantics a preset reproduces: ``paper.*`` the unified surrogate's Table 1
(Fontana et al. 2026), ``trl.*`` TRL 1.16.0's ``GRPOTrainer``, ``verl.*`` verl's ``core_algos``.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Dict, Mapping, Optional, Tuple, cast

from . import _core
from ._overrides import ALIASES as _ALIASES
from ._presets_frameworks import ROWS as _MORE_FRAMEWORK_ROWS

# ---- the record: built from the engine's one declaration of its fields --------------------------

_DOC_HEAD = """One GRPO-style method: rules and hyper-parameters (see docs/losses.md).

    Rules (names, as strings; ℓ = log π of a token, r = π/π_old, A its advantage). ``sampler_is`` applies
    when ``sampling_logp`` is given; the tokens of ``selection`` come from ``policy_loss(selection=...)``."""
_DOC_TAIL = """
    ``None`` switches a bound or count off (δ, dual clip c, OPSM threshold, CPPO γ, IS bounds) or
    means "count it in this call" (``num_items_in_batch``, ``num_sequences``, ``max_completion_length``).

    Fields, defaults, rule names and unset values come from the engine (grpokit/math/loss_spec.def,
    through ``_core.loss_spec_fields()``).
"""

# (name, kind, default, unset, values, docs) per field, in record order; kind is rule | real | flag |
# unsettable | count; `unset` is the engine's value for None (None: the field cannot be unset).
_FIELDS = tuple(_core.loss_spec_fields())
_FIELD_NAMES = frozenset(f["name"] for f in _FIELDS)
_UNSET = {f["name"]: f["unset"] for f in _FIELDS if "unset" in f}
_COUNTS = frozenset(f["name"] for f in _FIELDS if f["kind"] == "count")


def _same(a: float, b: float) -> bool:
    return a == b or (math.isnan(a) and math.isnan(b))


def _python_field(f: Mapping[str, Any]) -> Tuple[str, Any, Any]:
    """(name, type, dataclass field): ``None`` is the default where the engine's default is unset."""
    types = {"rule": str, "real": float, "flag": bool}
    if f["kind"] in types:
        return f["name"], types[f["kind"]], field(default=f["default"])
    default = None if _same(f["default"], f["unset"]) else f["default"]
    return f["name"], Optional[float], field(default=default)


def _docstring() -> str:
    lines = [_DOC_HEAD]
    for f in _FIELDS:
        if f["kind"] == "rule":
            lines.append(f"        {f['name']}:")
            lines += [f"            ``{n}``: {d}." for n, d in zip(f["values"], f["docs"])]
    return "\n".join(lines) + "\n" + _DOC_TAIL


class _Methods:
    """The methods of LossSpec (its fields come from the engine)."""

    __slots__ = ()

    def replace(self, **changes: Any) -> "LossSpec":
        """A copy with fields changed (field names, TRL names or verl aliases; see ``policy_loss``)."""
        return apply_overrides(cast("LossSpec", self), changes)

    def engine_fields(self) -> Dict[str, Any]:
        """The record as the engine reads it (None → the field's unset value)."""
        out: Dict[str, Any] = {}
        for f in _FIELDS:
            name, v = f["name"], getattr(self, f["name"])
            if v is None:
                if name not in _UNSET:
                    raise ValueError(f"{name}: None is not allowed (it has no unset value)")
                v = _UNSET[name]
            else:
                if hasattr(v, "item"):  # NumPy / torch scalars
                    v = v.item()
                if name in _COUNTS and isinstance(v, (int, float)) and v < 0:  # the engine reads it as unset
                    raise ValueError(f"{name}: expected a positive count or None (count it in this call), got {v}")
            out[name] = v
        return out


if TYPE_CHECKING:  # what a type checker sees: the fields exist only at run time

    @dataclass(frozen=True, init=False)
    class LossSpec(_Methods):
        def __init__(self, **fields: Any) -> None: ...
        def __getattr__(self, name: str) -> Any: ...

else:
    LossSpec = dataclasses.make_dataclass(
        "LossSpec",
        [_python_field(f) for f in _FIELDS],
        bases=(_Methods,),
        frozen=True,
        namespace={"__module__": __name__, "__doc__": _docstring()},
    )


def epsilon_high_is_cap(spec: LossSpec) -> bool:
    """Whether ``epsilon_high`` is a raw cap on the ratio (TRL CISPO, verl REINFORCE), not 1 + ε."""
    return spec.surrogate == "logp" and spec.logp_weight == "cap"


def apply_overrides(spec: LossSpec, overrides: Mapping[str, Any]) -> LossSpec:
    """``spec`` with overrides applied (field names, TRL names, verl aliases), validated."""
    changes: Dict[str, Any] = {}
    for name, value in overrides.items():
        if name in _ALIASES:
            changes.update(_ALIASES[name](value))
        elif name in _FIELD_NAMES:
            changes[name] = value
        else:
            valid = sorted(_FIELD_NAMES | set(_ALIASES))
            raise TypeError(f"unknown loss option {name!r}; valid options: {', '.join(valid)}")
    if "rollout_is" in overrides and not epsilon_high_is_cap(spec):
        raise ValueError(
            "rollout_is: applies to verl's bypass loss_type='reinforce' (preset verl.reinforce); in bypass "
            "ppo_clip verl applies no IS weight (the clip's ratio is already taken against the rollout log-probs)"
        )
    # TRL: epsilon_high defaults to epsilon (the CISPO cap is a separate, raw parameter)
    if (
        "epsilon_low" in changes
        and "epsilon_high" not in changes
        and spec.epsilon_high == spec.epsilon_low
        and not epsilon_high_is_cap(spec)
    ):
        changes["epsilon_high"] = changes["epsilon_low"]
    new = dataclasses.replace(spec, **changes)
    try:
        validate(new)
    except (TypeError, ValueError) as exc:  # name the option the caller wrote, not the field it sets
        msg = str(exc)
        for name in overrides:
            for field in _ALIASES[name](overrides[name]) if name in _ALIASES else ():
                if msg.startswith(f"{field}:"):
                    raise type(exc)(f"{name} ({field}){msg[len(field) :]}") from None
        raise
    return new


def validate(spec: LossSpec) -> None:
    """Raises ValueError for invalid hyper-parameters; warns where TRL warns."""
    for f in _FIELDS:
        if f["kind"] == "rule" and getattr(spec, f["name"]) not in f["values"]:
            raise ValueError(f"{f['name']}: expected one of {f['values']}, got {getattr(spec, f['name'])!r}")
    _core.validate_loss_spec(spec.engine_fields())
    if spec.surrogate == "clip" and spec.delta is not None and spec.delta <= 1 + spec.epsilon_high:
        warnings.warn(
            f"delta = {spec.delta} <= 1 + epsilon_high = {1 + spec.epsilon_high}: the two-sided clip then "
            "caps ratios inside the trust region (TRL recommends delta > 1 + epsilon)",
            UserWarning,
            stacklevel=4,
        )


# ---- the presets ----------------------------------------------------------------------------------

# Advantage conventions (keyword arguments of ``grpokit.advantages``): a row's ``advantages`` column.
_CENTRED = {"std": "none", "epsilon": 0.0, "std_scope": "group"}  # centred rewards, no σ
_PAPER_STD = {"std": "population", "epsilon": 0.0, "std_scope": "group"}  # Table 1 rows whose α carries 1/σ
_TRL_ADV = {"std": "sample", "epsilon": 1e-4, "std_scope": "group"}  # TRL scale_rewards="group"
_VERL_ADV = {"std": "sample", "epsilon": 1e-6, "std_scope": "group"}  # verl norm_adv_by_std_in_grpo=True
# GSPO and GSPO-token share the paper's aggregation, clip range and advantages; they differ in the ratio.
_GSPO = {"aggregation": "seq_mean_token_mean", "epsilon_low": 3e-4, "epsilon_high": 4e-4, "advantages": _PAPER_STD}


@dataclass(frozen=True)
class Preset:
    """One row: the loss (``spec``) and the advantage convention that goes with it (``advantages``)."""

    name: str
    description: str
    spec: LossSpec
    notes: str = ""
    advantages: Optional[Mapping[str, Any]] = None  # None: its namespace's (namespace_advantages)

    def __post_init__(self) -> None:
        adv = namespace_advantages(self.name) if self.advantages is None else dict(self.advantages)
        object.__setattr__(self, "advantages", adv)

    def defaults(self) -> Dict[str, Any]:
        return dataclasses.asdict(self.spec)


def _p(
    name: str, description: str, notes: str = "", advantages: Optional[Mapping[str, Any]] = None, **fields: Any
) -> Preset:
    return Preset(name, description, LossSpec(**fields), notes, advantages)


def namespace_advantages(name: str) -> Dict[str, Any]:
    """The advantage convention of a row that states none, or of a name outside the table: its peer's
    (``trl.*``, ``verl.*``), else centred rewards."""
    return dict({"trl": _TRL_ADV, "verl": _VERL_ADV}.get(name.partition(".")[0], _CENTRED))


_KL_R1: Dict[str, Any] = dict(kl="k3", beta=0.04)  # DeepSeekMath's β; pass beta=0 to drop the KL term
_PAPER = [
    _p(
        "paper.grpo_r1",
        "GRPO (DeepSeekMath/R1): α = 1/(G|o_i|σ), token ratio, PPO clip, k3 KL",
        "σ lives in the advantages: use advantages(std='population').",
        aggregation="seq_mean_token_mean",
        **_KL_R1,
        advantages=_PAPER_STD,
    ),
    _p(
        "paper.grpo_v32",
        "GRPO (DeepSeek-V3.2): α = M/(G|o_i|), token ratio, IS-corrected k3 KL",
        "M is the off-policy sequence mask (set off_policy_mask_threshold; it reads sampling_logp, else "
        "old_logp). No σ: advantages(std='none').",
        aggregation="seq_mean_token_mean",
        kl="k3",
        beta=0.04,
        kl_is_corrected=True,
    ),
    _p(
        "paper.gspo",
        "GSPO: sequence ratio (geometric mean), clipped per sequence, α = 1/(G|o_i|σ)",
        ratio="sequence",
        **_GSPO,
    ),
    _p(
        "paper.gspo_token",
        "GSPO-token: sg[s_i/π]·π (value s_i, gradient s_i·∇log π_t), α = 1/(G|o_i|σ)",
        ratio="sequence_token",
        **_GSPO,
    ),
    _p(
        "paper.gtpo",
        "GTPO: α = δ_i λ_{i,t}/(G|o_i|), entropy regulariser β·δ_i⟨H⟩_i·I·λ",
        "keep flags δ_i and token weights λ are inputs (keep=, token_weights=); the entropy term needs "
        "entropies. beta = 0.1 is our default (the paper gives none).",
        aggregation="seq_mean_token_mean",
        gtpo_entropy=True,
        beta=0.1,
    ),
    _p(
        "paper.dapo",
        "DAPO: α = 1/(σ Σ|o_i|) (token mean), clip-higher 0.2/0.28",
        aggregation="token_mean",
        epsilon_low=0.2,
        epsilon_high=0.28,
        advantages=_PAPER_STD,
    ),
    _p(
        "paper.cppo",
        "CPPO: GRPO-R1 with completions pruned where |A_i| <= γ",
        "γ is prune_threshold (alias gamma); the pruning indicator multiplies the policy term only.",
        aggregation="seq_mean_token_mean",
        prune_threshold=0.0,
        **_KL_R1,
        advantages=_PAPER_STD,
    ),
    _p(
        "paper.dr_grpo",
        "Dr GRPO: α = 1/G (token sum per completion), k3 KL",
        aggregation="seq_mean_token_sum",
        **_KL_R1,
    ),
    _p(
        "paper.gpg",
        "GPG: −A·log π, token mean (α̂ and F_norm live in the advantages)",
        aggregation="token_mean",
        surrogate="logp",
        logp_weight="one",
    ),
    _p(
        "paper.cispo",
        "CISPO: sg[I]·log π, token mean (M is the mask)",
        "Table 1 has no clip; logp_weight='clip' or 'cap' adds one.",
        aggregation="token_mean",
        surrogate="logp",
        logp_weight="ratio",
        advantages=_PAPER_STD,
    ),
    _p(
        "paper.gcpo",
        "GCPO: raw sequence ratio π(y|x)/π_old(y|x), α = 1/(σG), one term per completion",
        "The ratio is per sequence, so its clipped term counts once per completion (a token sum would "
        "multiply it by |o_i| and break the uniform weights Table 1 gives GCPO).",
        aggregation="seq_mean_token_mean",
        ratio="sequence_sum",
        advantages=_PAPER_STD,
    ),
]

# TRL 1.16.0 GRPOConfig defaults: epsilon 0.2 (= epsilon_high), beta 0.0 (k3), use_bias_correction_kl
# True, max_completion_length 512, vLLM IS "sequence_mask" with C_max 3.0.
_TRL: Dict[str, Any] = dict(
    kl="k3",
    kl_is_corrected=True,
    sampler_is="sequence_mask",
    is_max=3.0,
    max_completion_length=512,
    advantages=_TRL_ADV,
)
_TRL_PRESETS = [
    _p(
        "trl.grpo",
        "TRL loss_type='grpo': per-sequence token mean, mean over sequences (÷K)",
        aggregation="seq_mean_token_mean",
        divide_by_ga=True,
        **_TRL,
    ),
    _p(
        "trl.bnpo",
        "TRL loss_type='bnpo': token mean over the call's tokens (÷K)",
        "TRL normalises bnpo by the micro-batch's own token count: leave num_items_in_batch unset.",
        aggregation="token_mean",
        divide_by_ga=True,
        **_TRL,
    ),
    _p(
        "trl.dr_grpo",
        "TRL loss_type='dr_grpo': Σ φ / (B · max_completion_length) (÷K)",
        aggregation="seq_mean_token_sum_norm",
        divide_by_ga=True,
        **_TRL,
    ),
    _p(
        "trl.dapo",
        "TRL loss_type='dapo' (TRL's default): Σ φ / num_items_in_batch (global tokens)",
        aggregation="token_mean",
        **_TRL,
    ),
    _p(
        "trl.cispo",
        "TRL loss_type='cispo': −sg(min(r, ε_high))·A·log π, ε_high a raw cap (5.0)",
        aggregation="token_mean",
        surrogate="logp",
        logp_weight="cap",
        epsilon_high=5.0,
        **_TRL,
    ),
    _p(
        "trl.sapo",
        "TRL loss_type='sapo': soft gate (4/τ)σ(τ(r−1)), τ 1.0/1.05, per-sequence mean (÷K)",
        aggregation="seq_mean_token_mean",
        surrogate="sapo",
        divide_by_ga=True,
        **_TRL,
    ),
    _p(
        "trl.luspo",
        "TRL loss_type='luspo': sequence ratio, each sequence weighted by its length (÷K)",
        aggregation="seq_mean_token_sum",
        ratio="sequence",
        divide_by_ga=True,
        **_TRL,
    ),
    _p(
        "trl.vespo",
        "TRL loss_type='vespo': −sg(φ_γ(W_i))·A·log π, Gamma weight of the sequence IS ratio",
        "TRL folds token-level sampler IS weights into W (use a token_* sampler mode).",
        aggregation="token_mean",
        surrogate="logp",
        logp_weight="vespo",
        **{**_TRL, "sampler_is": "token_truncate"},
    ),
]

# verl 0.9.1 ActorConfig defaults: clip_ratio 0.2, clip_ratio_c 3.0, loss_agg_mode "token-mean",
# kl_loss_type "low_var_kl" (k3 with its ±20 / ±10 clamps), use_kl_loss False (beta 0; kl_loss_coef
# 0.001 once enabled), entropy aggregated like the policy term, log-ratio clamp ±20.
_VERL: Dict[str, Any] = dict(
    kl="k3",
    kl_log_clamp=20.0,
    kl_value_clamp=10.0,
    entropy_aggregation="policy",
    sampler_is="none",
    is_max=None,
    advantages=_VERL_ADV,
)
_CLAMP20: Dict[str, Any] = dict(log_ratio_min=-20.0, log_ratio_max=20.0)
_SEQ_MEAN_TOKEN_MEAN: Dict[str, Any] = dict(aggregation="seq_mean_token_mean", seq_count_nonempty=True)
_VERL_PRESETS = [
    _p(
        "verl.vanilla",
        "verl loss_mode='vanilla': PPO clip with dual clip c = 3 for A < 0, log-ratio clamp ±20",
        clip_ratio_c=3.0,
        **_CLAMP20,
        **_VERL,
    ),
    _p(
        "verl.gspo",
        "verl loss_mode='gspo': GSPO-token ratio exp(sg(log s_i) + ℓ − sg ℓ), clamp ≤ 10",
        "Defaults from GSPO's recipe (clip 3e-4 / 4e-4, seq-mean-token-mean); verl's config default is token-mean.",
        ratio="sequence_token",
        log_ratio_max=10.0,
        epsilon_low=3e-4,
        epsilon_high=4e-4,
        **_SEQ_MEAN_TOKEN_MEAN,
        **_VERL,
    ),
    _p(
        "verl.geo_mean",
        "verl loss_mode='geo_mean' (GMPO): geometric mean of sign-aware clipped token ratios",
        "The policy term is a plain mean over sequences (verl ignores loss_agg_mode for it).",
        surrogate="geo_mean",
        aggregation="seq_mean_token_mean",
        **_VERL,
    ),
    _p("verl.gpg", "verl loss_mode='gpg': −A·log π", surrogate="logp", logp_weight="one", **_VERL),
    _p(
        "verl.cispo",
        "verl loss_mode='cispo': −sg(clip(r, 1 − ε_low, 1 + ε_high))·A·log π (two-sided)",
        surrogate="logp",
        logp_weight="clip",
        **_CLAMP20,
        **_VERL,
    ),
    _p(
        "verl.sapo",
        "verl loss_mode='sapo': soft gate, τ 1.0/1.05, seq-mean-token-mean (forced by verl)",
        surrogate="sapo",
        **_CLAMP20,
        **_SEQ_MEAN_TOKEN_MEAN,
        **_VERL,
    ),
    _p(
        "verl.clip_cov",
        "verl loss_mode='clip_cov': PPO clip; the selected tokens get no policy gradient",
        "verl picks the tokens at random among those with covariance in (lb, ub): pass them as selection=.",
        selection="clip_cov",
        **_VERL,
    ),
    _p(
        "verl.kl_cov",
        "verl loss_mode='kl_cov': −A·r unclipped, + ppo_kl_coef·|log r| on the selected tokens",
        "verl selects the top kl_cov_ratio tokens by covariance: pass them as selection=.",
        surrogate="unclipped",
        selection="kl_cov",
        ppo_kl_coef=0.1,
        **_VERL,
    ),
    _p(
        "verl.dppo_tv",
        "verl loss_mode='dppo_tv': −sg(min(r, c))·A·log π on tokens inside the TV trust region",
        "c is clip_ratio_c (3.0: ActorConfig's value, which config.get returns).",
        surrogate="logp",
        logp_weight="dppo_tv",
        clip_ratio_c=3.0,
        **_CLAMP20,
        **_VERL,
    ),
    _p(
        "verl.dppo_kl",
        "verl loss_mode='dppo_kl': −sg(min(r, c))·A·log π inside the binary-KL trust region",
        surrogate="logp",
        logp_weight="dppo_kl",
        clip_ratio_c=3.0,
        **_CLAMP20,
        **_VERL,
    ),
    _p(
        "verl.dro",
        "verl loss_mode='dro': −(A·log π − ½β_dro (log r)²)",
        "verl requires dro_beta (no default); 0.1 is ours.",
        surrogate="logp",
        logp_weight="one",
        dro_beta=0.1,
        **_VERL,
    ),
    _p(
        "verl.reinforce",
        "verl bypass mode, loss_type='reinforce': −sg(min(r, C))·A·log π, r vs the sampler",
        "Pass the rollout (sampler) log-probs as old_logp; C = rollout_is_threshold (2.0) is epsilon_high. "
        "Bypass ppo_clip is verl.vanilla with old_logp = the rollout log-probs.",
        surrogate="logp",
        logp_weight="cap",
        epsilon_high=2.0,
        **_CLAMP20,
        **_VERL,
    ),
    _p(
        "verl.reinforce_seq",
        "verl bypass mode, loss_type='reinforce', rollout_is='sequence': "
        "−sg(min(Π_t r_t, C))·A·log π, r vs the sampler",
        "verl.reinforce with rollout_is='sequence': one detached weight per completion, "
        "min(exp(clamp(Σ_t log r_t, ±20)), C).",
        surrogate="logp",
        logp_weight="cap",
        ratio="sequence_sum",
        epsilon_high=2.0,
        **_CLAMP20,
        **_VERL,
    ),
]

# The newer frameworks (issue 22): ROLL (alibaba/ROLL roll/pipeline/rlvr/actor_pg_worker.py; loss_agg_mode
# "seq-mean-token-mean" over the samples with a valid token, KL k3 once use_kl_loss), prime-rl
# (src/prime_rl/trainer/rl/loss.py: a token sum ÷ the step's loss tokens, r against the inference
# log-probs: pass them as old_logp; kl_tau 1e-3), AReaL (areal/utils/functional/functional.py
# ppo_actor_loss_fn: eps_clip 0.2, token mean).
_ROLL: Dict[str, Any] = dict(surrogate="logp", kl="k3", sampler_is="none", is_max=None, **_SEQ_MEAN_TOKEN_MEAN)
_ROLL_CISPO: Dict[str, Any] = dict(logp_weight="clip", epsilon_low=0.1, epsilon_high=0.1, **_ROLL)
_PRIME: Dict[str, Any] = dict(surrogate="unclipped", dro_beta=2e-3, aggregation="token_mean", sampler_is="none")
_FRAMEWORK_PRESETS = [
    _p(
        "roll.topr",
        "ROLL pg_variant='topr' (TOPR): −A·log π for A > 0, −sg(clamp(r, 0, 1))·A·log π for A ≤ 0",
        "ROLL splits by scores > 0, grpokit by A > 0: the same loss where A > 0 rows score > 0 and A < 0 rows "
        "score ≤ 0 (0/1 rewards, group-mean baseline). The paper weighs raw rewards: pass them as advantages.",
        logp_weight="topr",
        **_ROLL,
    ),
    _p("roll.cispo", "ROLL pg_variant='cispo': −sg(clip(r, 0.9, 1.1))·A·log π", **_ROLL_CISPO),
    _p(
        "roll.cispo_unified_mask",
        "ROLL cispo_use_unified_mask: roll.cispo on the tokens PPO's clip keeps (MiniMax-M1 eq. 7)",
        trust_region="ppo",
        **_ROLL_CISPO,
    ),
    _p(
        "prime.default",
        "prime-rl loss 'default': −A·r inside the DPPO-TV trust region (0.2/0.2) + τ·(log r)², τ = 1e-3",
        "τ is kl_tau (dro_beta = 2τ); adv_tau scales A. prime-rl's loss_weights also scale τ·(log r)².",
        trust_region="dppo_tv",
        **_PRIME,
    ),
    _p(
        "prime.ipo",
        "prime-rl loss 'ipo': −A·r on tokens with |p − p_old| ≤ 0.1, + τ·(log r)² on all, τ = 1e-3",
        "The threshold is ipo_threshold (epsilon_low = epsilon_high).",
        trust_region="tv",
        epsilon_low=0.1,
        epsilon_high=0.1,
        **_PRIME,
    ),
    _p(
        "areal.decoupled_ppo",
        "AReaL use_decoupled_loss: PPO clip of π/π_prox, × π_prox/π_behave zeroed above 5 (rejection)",
        "Pass the proximal log-probs as old_logp, the behaviour (rollout) ones as sampling_logp; without "
        "sampling_logp it is AReaL's default rejection_sampling=None (no behaviour weight). The log-linear "
        "proximal approximation is an old_logp: see docs/losses.md.",
        aggregation="token_mean",
        sampler_is="token_mask",
        is_max=5.0,
    ),
    _p(
        "areal.decoupled_ppo_paper",
        "AReaL paper's decoupled PPO: PPO clip of π/π_prox × π_prox/π_behave, unbounded",
        "As areal.decoupled_ppo; the paper's behaviour weight has no bound (AReaL's code masks above 5).",
        aggregation="token_mean",
        sampler_is="token_truncate",
        is_max=None,
    ),
]

_FRAMEWORK_PRESETS += [_p(name, desc, notes, **fields) for name, desc, notes, fields in _MORE_FRAMEWORK_ROWS]
_PRESETS: Dict[str, Preset] = {p.name: p for p in _PAPER + _TRL_PRESETS + _VERL_PRESETS + _FRAMEWORK_PRESETS}


def presets() -> Dict[str, Dict[str, Any]]:
    """Every preset: ``{name: {"description", "notes", "defaults", "advantages"}}`` (defaults = the
    LossSpec fields; advantages = the keyword arguments of ``grpokit.advantages`` that go with it)."""
    return {
        n: {
            "description": p.description,
            "notes": p.notes,
            "defaults": p.defaults(),
            "advantages": dict(p.advantages or {}),
        }
        for n, p in _PRESETS.items()
    }


def preset_advantages(name: str) -> Dict[str, Any]:
    """A preset's advantage convention (its ``advantages`` column; see :func:`namespace_advantages`
    for a name outside the table)."""
    return dict(_PRESETS[name].advantages or {}) if name in _PRESETS else namespace_advantages(name)


def resolve(spec: Any, overrides: Mapping[str, Any]) -> LossSpec:
    """A preset name or a LossSpec, with overrides applied."""
    if isinstance(spec, str):
        if spec not in _PRESETS:
            raise ValueError(f"unknown loss preset {spec!r}; valid presets: {', '.join(sorted(_PRESETS))}")
        base = _PRESETS[spec].spec
    elif isinstance(spec, LossSpec):
        base = spec
    else:
        raise TypeError(f"spec: expected a preset name or a grpokit.LossSpec, got {type(spec).__name__}")
    return apply_overrides(base, overrides)
