"""Many presets on one batch (``compare``) and why two presets differ (``explain``).

Every number comes from the engine (``policy_loss``, ``advantages``, the prefix-bias diagnostic); this
module only runs them on the same batch and lays the results side by side.
"""

from __future__ import annotations

import dataclasses
import os
import zipfile
import zlib
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from . import _arrays, _variants
from ._presets import LossSpec
from ._presets import presets as _all_presets

BATCH_KEYS = {
    "rewards": "(B,) rewards; advantages follow each preset's convention (needs group_size)",
    "group_size": "completions per prompt G (scalar); groups are contiguous blocks of rows",
    "advantages": "(B,) advantages used as they are for every preset (instead of rewards)",
    "logp": "(B, T) current per-token log-probabilities (required)",
    "old_logp": "(B, T) log-probabilities of the sampling policy (absent: on-policy, ratio 1)",
    "mask": "(B, T) valid tokens (absent: all valid)",
    "selection": "(B, T) tokens clip_cov / kl_cov / positive_nll act on (absent: none; positive_nll: rewards > 0)",
    "completion_ids": "(B, T) token ids (needed for the prefix bias)",
    "ref_logp": "(B, T) reference-model log-probabilities (absent: KL terms are switched off)",
    "sampling_logp": "(B, T) the sampler's (vLLM's) log-probabilities (TRL's IS correction)",
}
_ALIASES = {
    "ids": "completion_ids",
    "completion_mask": "mask",
    "per_token_logps": "logp",
    "old_per_token_logps": "old_logp",
    "ref_per_token_logps": "ref_logp",
}


def _batch(batch: Any) -> Dict[str, Any]:
    if not isinstance(batch, Mapping):
        batch = {k: getattr(batch, k) for k in list(BATCH_KEYS) + list(_ALIASES) if hasattr(batch, k)}
    out: Dict[str, Any] = {}
    for k, v in batch.items():
        key = _ALIASES.get(k, k)
        if key not in BATCH_KEYS:
            raise ValueError(f"batch: unknown field {k!r}; expected some of {', '.join(BATCH_KEYS)}")
        out[key] = v
    if out.get("logp") is None:
        raise ValueError("batch: missing field 'logp' (the current per-token log-probabilities, (B, T))")
    if out.get("advantages") is None:
        if out.get("rewards") is None:
            raise ValueError("batch: give 'rewards' with 'group_size', or 'advantages'")
        if out.get("group_size") is None:
            raise ValueError("batch: 'rewards' need 'group_size' (completions per prompt)")
    if out.get("group_size") is not None:
        out["group_size"] = _arrays.as_count(out["group_size"], "group_size", minimum=1)
    return out


def load_batch(path: str) -> Dict[str, Any]:
    """A batch saved with ``np.savez(path, rewards=..., group_size=..., logp=..., ...)`` (keys:
    ``grpokit._compare.BATCH_KEYS``)."""
    if os.path.isdir(path):
        raise ValueError(f"{path}: is a directory; expected a .npz file")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (EOFError, zipfile.BadZipFile, ValueError) as exc:  # empty, truncated, not NumPy
        raise ValueError(f"{path}: not a readable .npz file ({exc or type(exc).__name__})") from None
    if not hasattr(loaded, "files"):  # np.load returned one array, not an NpzFile
        raise ValueError(f"{path}: is a .npy file (one array); expected a .npz file (np.savez) of named arrays")
    try:
        with loaded as f:
            return _batch({k: f[k] for k in f.files})
    except (EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: the .npz file is damaged ({exc})") from None


@dataclass
class _Run:
    variant: _variants.Variant
    spec: LossSpec
    advantages: np.ndarray
    loss: float
    grad: np.ndarray
    weights: np.ndarray
    metrics: Dict[str, float]


def _advantages(b: Dict[str, Any], v: _variants.Variant) -> np.ndarray:
    if b.get("advantages") is not None:
        return np.asarray(b["advantages"], dtype=np.float64)
    return np.asarray(v.advantages(np.asarray(b["rewards"], dtype=np.float64), b["group_size"], mask=b.get("mask")))


def _selection(b: Dict[str, Any], spec: LossSpec) -> Any:
    """The batch's selection; for VAPO's positive_nll without one, NeMo-RL's positive samples (rewards > 0)."""
    if b.get("selection") is not None or spec.selection != "positive_nll" or b.get("rewards") is None:
        return b.get("selection")
    positive = np.asarray(b["rewards"], dtype=np.float64) > 0
    return np.broadcast_to(positive[:, None], np.shape(b["logp"]))


def _spec_for_batch(b: Dict[str, Any], spec: LossSpec) -> LossSpec:
    # without reference log-probabilities a KL term cannot be evaluated: switch it off (documented)
    if b.get("ref_logp") is None and spec.kl != "none" and spec.beta != 0.0:
        spec = spec.replace(beta=0.0)
    if _selection(b, spec) is None and spec.selection != "none":
        spec = spec.replace(selection="none")  # clip_cov / kl_cov act on the tokens the caller selects
    if spec.aggregation == "prompt_mean" and spec.group_size is None and b.get("group_size") is not None:
        spec = spec.replace(group_size=b["group_size"])  # the batch's prompt groups
    return spec


def _correct(b: Dict[str, Any], v: _variants.Variant, trainer_logp: np.ndarray) -> Tuple[Any, Any]:
    """The variant's train–inference correction of the batch: (mask with rejections removed, IS weights
    per token or None)."""
    from ._corrections import correction

    if b.get("sampling_logp") is None:
        raise ValueError(
            f"{v.label}: correction {v.correction!r} needs the batch's sampling_logp "
            "(the sampler's per-token log-probabilities)"
        )
    mask = b.get("mask")
    mask = np.ones(trainer_logp.shape, dtype=bool) if mask is None else np.asarray(mask).astype(bool)
    c = correction(v.correction, trainer_logp, np.asarray(b["sampling_logp"], dtype=np.float64), mask)
    if not np.asarray(c.mask).any():
        raise ValueError(f"{v.label}: correction {v.correction!r} rejected every token of the batch")
    w = None
    if c.weights is not None:
        w = np.asarray(c.weights, dtype=np.float64)
        w = np.ascontiguousarray(np.broadcast_to(w[:, None], trainer_logp.shape) if w.ndim == 1 else w)
    return np.asarray(c.mask).astype(bool), w


def _run(
    b: Dict[str, Any], v: _variants.Variant, spec: Optional[LossSpec] = None, adv: Optional[np.ndarray] = None
) -> _Run:
    from ._loss import policy_loss

    spec = _spec_for_batch(b, v.spec if spec is None else spec)
    a = _advantages(b, v) if adv is None else adv
    lp = np.asarray(b["logp"], dtype=np.float64)
    # absent: on-policy, old = logp (ratio 1; the same loss and gradient as old_logp=None, which the
    # presets that require the old policy, such as DPPO's trust region, refuse)
    old = lp if b.get("old_logp") is None else np.asarray(b["old_logp"], dtype=np.float64)
    mask, sampling, token_weights = b.get("mask"), b.get("sampling_logp"), None
    if v.correction is not None:
        mask, token_weights = _correct(b, v, old)
        sampling = None  # the correction replaces the preset's own sampler IS weight
    r = policy_loss(
        lp,
        old,
        a,
        mask,
        spec=spec,
        ref_logp=b.get("ref_logp"),
        sampling_logp=sampling,
        selection=_selection(b, spec),
        token_weights=token_weights,
        return_weights=True,
    )
    return _Run(
        v,
        spec,
        a,
        float(r.loss),
        np.asarray(r.grad_logp),
        np.asarray(r.weights),
        {k: float(x) for k, x in r.metrics.items()},
    )


# ---- compare -------------------------------------------------------------------------------------

# The table's clip columns: the engine's clip metrics (TRL's names; docs/losses.md defines them).
_CLIP_COLUMNS = {
    "clip_low": "clip_ratio/low_mean",
    "clip_high": "clip_ratio/high_mean",
    "clip_region": "clip_ratio/region_mean",
}


@dataclass
class PresetComparison:
    """``grpokit.compare``'s table: one row per preset on the same batch.

    ``rows``: one dict per preset with ``preset``, ``loss`` (the value to minimise), ``grad_norm``
    (‖∂loss/∂logp‖ over the batch's tokens: what the engine hands to autograd), ``clip_low`` /
    ``clip_high`` / ``clip_region`` (the engine's ``clip_ratio/low_mean``, ``high_mean`` and
    ``region_mean``: fractions of tokens clipped at the lower bound, the upper bound, either; NaN for
    methods without a clip), ``prefix_bias`` (mean |Σ (ω − ω̄) A| over the whole-group
    prefixes) and ``weight_length_corr`` (corr(mean ω, length): −1 is 1/|o| weighting), the last two
    when the batch has ``completion_ids``. ``weights[preset]``: (B,) effective weight per completion
    Σ_t ω_{i,t} (ω = effective α × ratio factor, 0 where the clip binds); ``grads[preset]``: (B, T)
    ∂loss/∂logp; ``advantages[preset]``: (B,) the advantages the preset received; ``metrics[preset]``:
    every metric the engine returned.
    """

    rows: List[Dict[str, Any]]
    weights: Dict[str, np.ndarray]
    grads: Dict[str, np.ndarray]
    advantages: Dict[str, np.ndarray]
    lengths: np.ndarray
    notes: List[str]
    metrics: Dict[str, Dict[str, float]] = dataclasses.field(default_factory=dict)

    @property
    def columns(self) -> List[str]:
        cols: List[str] = []
        for r in self.rows:
            cols += [k for k in r if k not in cols]
        return cols

    def to_dict(self) -> Dict[str, Any]:
        return {"rows": self.rows, "weights": {k: v.tolist() for k, v in self.weights.items()}, "notes": self.notes}

    def to_pandas(self) -> Any:
        import pandas as pd

        return pd.DataFrame(self.rows).set_index("preset")

    def __str__(self) -> str:
        from .diagnostics._report import fmt

        cols = [c for c in self.columns if c != "preset"]
        width = max([6] + [len(r["preset"]) for r in self.rows])
        cw = max([9] + [len(c) for c in cols]) + 1
        lines = [f"{'preset':<{width}}  " + "  ".join(f"{c:>{cw}}" for c in cols)]
        lines.append("-" * len(lines[0]))
        for r in self.rows:
            lines.append(f"{r['preset']:<{width}}  " + "  ".join(f"{fmt(r.get(c, float('nan'))):>{cw}}" for c in cols))
        lines.append("")
        lines.append("effective weight per completion Σ_t ω_{i,t} (rows: presets; columns: completions):")
        for name, w in self.weights.items():
            shown = " ".join(f"{x:.3g}" for x in w[:12]) + (" ..." if len(w) > 12 else "")
            lines.append(f"  {name:<{width}}  {shown}")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<PresetComparison: {len(self.rows)} presets>"

    def plot(self, **fig_kw: Any) -> Any:
        """Three panels: loss, gradient norm, and per-completion weight against length per preset."""
        import matplotlib.pyplot as plt

        fig_kw.setdefault("figsize", (14, 4))
        fig, (a0, a1, a2) = plt.subplots(1, 3, **fig_kw)
        names = [r["preset"] for r in self.rows]
        y = np.arange(len(names))
        a0.barh(y, [r["loss"] for r in self.rows], color="C0")
        a1.barh(y, [r["grad_norm"] for r in self.rows], color="C1")
        for a, t in ((a0, "loss (to minimise)"), (a1, "‖∂loss/∂logp‖")):
            a.set_yticks(y)
            a.set_yticklabels(names, fontsize=7)
            a.set_title(t)
        a1.set_yticklabels([])
        for name, w in self.weights.items():
            total = np.sum(np.abs(w))
            a2.plot(self.lengths, w / total if total > 0 else w, "o", ms=3, label=name)
        a2.set(
            xlabel="completion length",
            ylabel="Σ_t ω (normalised over the batch)",
            title="effective weight per completion",
        )
        a2.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        fig.tight_layout()
        return fig


def compare(batch: Any, presets: Optional[Sequence[Any]] = None) -> PresetComparison:
    """Runs many presets on the same batch and returns one table (:class:`PresetComparison`).

    Args:
        batch: a mapping (or object) with ``logp`` (B, T) and either ``rewards`` (B,) with
            ``group_size`` (each preset then gets the advantages of its own convention: TRL's sample
            std + 1e-4, verl's sample std + 1e-6, the paper's population std or none) or ``advantages``
            (B,) used as they are; optional ``old_logp`` (absent: on-policy), ``mask``,
            ``completion_ids`` (for the prefix bias), ``ref_logp`` (absent: KL terms are off),
            ``sampling_logp``. TRL's names (``completion_mask``, ``per_token_logps``, ...) work too.
        presets: preset names (``grpokit.presets()``), ``"preset:key=value,..."`` strings,
            ``(preset, overrides)`` pairs or ``LossSpec``s; default: every preset.

    Returns:
        :class:`PresetComparison` (``print`` it, ``.rows``, ``.to_pandas()``, ``.plot()``).

    Example:
        >>> import numpy as np, grpokit
        >>> rng = np.random.default_rng(0)
        >>> batch = dict(rewards=[1.0, 0.0, 0.0, 1.0], group_size=4, logp=np.log(rng.uniform(0.2, 0.9, (4, 5))))
        >>> t = grpokit.compare(batch, presets=["trl.grpo", "trl.dapo"])
        >>> [r["preset"] for r in t.rows]
        ['trl.grpo', 'trl.dapo']
    """
    from .diagnostics import prefix_bias_from_weights

    b = _batch(batch)
    names = list(_all_presets()) if presets is None else list(presets)
    if not names:
        raise ValueError("presets: expected at least one preset")
    mask = None if b.get("mask") is None else np.asarray(b["mask"]).astype(bool)
    lp = np.asarray(b["logp"])
    lengths = (mask.sum(1) if mask is not None else np.full(lp.shape[0], lp.shape[1])).astype(np.float64)
    rows, weights, grads, advs, notes, metrics = [], {}, {}, {}, [], {}
    if b.get("ref_logp") is None:
        notes.append("no ref_logp in the batch: KL terms are switched off (beta = 0)")
    if b.get("old_logp") is None:
        notes.append("no old_logp in the batch: on-policy (ratio 1, clip fractions 0)")
    if b.get("completion_ids") is None or b.get("group_size") is None:
        notes.append("no completion_ids and group_size in the batch: no prefix-bias columns")
    selection_note = "no selection in the batch: verl's clip_cov / kl_cov select no token"
    for p in names:
        v = _variants.make(p)
        if v.spec.selection != "none" and b.get("selection") is None and selection_note not in notes:
            notes.append(selection_note)
        r = _run(b, v)
        row: Dict[str, Any] = {"preset": v.label, "loss": r.loss, "grad_norm": float(np.linalg.norm(r.grad))}
        for col, metric in _CLIP_COLUMNS.items():
            row[col] = r.metrics.get(metric, float("nan"))
        w = r.weights * (mask if mask is not None else 1.0)
        if b.get("completion_ids") is not None and b.get("group_size") is not None:
            d = prefix_bias_from_weights(
                b["completion_ids"], r.advantages, r.weights, b["group_size"], mask=mask
            ).to_dict()
            row["prefix_bias"] = d["prefix_bias_abs_mean"]
            row["weight_length_corr"] = d["weight_length_corr_mean"]
        rows.append(row)
        weights[v.label] = w.sum(axis=1)
        grads[v.label] = r.grad
        advs[v.label] = r.advantages
        metrics[v.label] = r.metrics
    return PresetComparison(rows, weights, grads, advs, lengths, notes, metrics)


# ---- explain -------------------------------------------------------------------------------------

# Which LossSpec fields make up each factor (every field belongs to exactly one).
FACTORS: Dict[str, Tuple[str, ...]] = {
    "normaliser": (
        "aggregation",
        "num_items_in_batch",
        "num_sequences",
        "max_completion_length",
        "group_size",
        "num_prompts",
        "dp_size",
        "gradient_accumulation_steps",
        "divide_by_ga",
        "seq_count_nonempty",
    ),
    "advantages": (),  # estimator and σ convention: not loss fields (the preset row's advantages column)
    "correction": (),  # the train–inference correction (IS weights, rejection): not a loss field
    "clip rule": (
        "surrogate",
        "logp_weight",
        "trust_region",
        "epsilon_low",
        "epsilon_high",
        "delta",
        "clip_ratio_c",
        "log_ratio_min",
        "log_ratio_max",
        "sapo_temperature_pos",
        "sapo_temperature_neg",
        "vespo_k_pos",
        "vespo_lambda_pos",
        "vespo_k_neg",
        "vespo_lambda_neg",
    ),
    "KL placement": ("kl", "beta", "kl_is_corrected", "kl_straight_through", "kl_log_clamp", "kl_value_clamp"),
    "IS weights": ("ratio", "sampler_is", "is_min", "is_max", "off_policy_mask_threshold", "m2_threshold"),
    "other terms": (
        "entropy_coef",
        "entropy_aggregation",
        "top_entropy_quantile",
        "gtpo_entropy",
        "dro_beta",
        "prune_threshold",
        "selection",
        "ppo_kl_coef",
        "positive_example_nll_weight",
    ),
}


@dataclass
class Factor:
    """One factor of :func:`explain`: the rule's values in a and b and its effect on this batch when
    only it is switched from a's value to b's (``delta_loss``, ``delta_grad`` (B, T), ``grad_norm``
    of the switched spec). ``error``: why it could not be switched alone (its effect is then in the
    interaction)."""

    name: str
    a: Dict[str, Any]
    b: Dict[str, Any]
    delta_loss: float = 0.0
    delta_grad: Optional[np.ndarray] = None
    grad_norm: float = float("nan")
    error: str = ""

    @property
    def differs(self) -> bool:
        return self.a != self.b

    @property
    def delta_grad_norm(self) -> float:
        return 0.0 if self.delta_grad is None else float(np.linalg.norm(self.delta_grad))


@dataclass
class Explanation:
    """Why presets a and b give different losses and gradients on a batch (:func:`explain`).

    ``loss_a``/``loss_b``, ``grad_a``/``grad_b`` (∂loss/∂logp), ``factors`` (:class:`Factor`, in the
    order normaliser, advantages, correction, clip rule, KL placement, IS weights, other terms) and the
    ``interaction``: what switching the factors one at a time does not account for, so that
    loss_b − loss_a = Σ factors' Δloss + interaction_loss exactly (likewise for the gradient).
    """

    a: str
    b: str
    loss_a: float
    loss_b: float
    grad_a: np.ndarray
    grad_b: np.ndarray
    factors: List[Factor]
    interaction_loss: float
    interaction_grad: np.ndarray
    notes: List[str]

    @property
    def grad_norm_a(self) -> float:
        return float(np.linalg.norm(self.grad_a))

    @property
    def grad_norm_b(self) -> float:
        return float(np.linalg.norm(self.grad_b))

    def to_dict(self) -> Dict[str, Any]:
        d: Dict[str, Any] = {
            "a": self.a,
            "b": self.b,
            "loss_a": self.loss_a,
            "loss_b": self.loss_b,
            "grad_norm_a": self.grad_norm_a,
            "grad_norm_b": self.grad_norm_b,
            "delta_grad_norm": float(np.linalg.norm(self.grad_b - self.grad_a)),
        }
        for f in self.factors:
            if f.differs:
                d[f"{f.name}/delta_loss"] = f.delta_loss
                d[f"{f.name}/delta_grad_norm"] = f.delta_grad_norm
        d["interaction/delta_loss"] = self.interaction_loss
        d["interaction/delta_grad_norm"] = float(np.linalg.norm(self.interaction_grad))
        return d

    def __str__(self) -> str:
        from .diagnostics._report import fmt

        total = float(np.linalg.norm(self.grad_b - self.grad_a))
        lines = [
            f"{self.a}  vs  {self.b}",
            f"loss {fmt(self.loss_a)} vs {fmt(self.loss_b)} (Δ {fmt(self.loss_b - self.loss_a)}); "
            f"‖∂loss/∂logp‖ {fmt(self.grad_norm_a)} vs {fmt(self.grad_norm_b)} "
            f"(ratio {fmt(self.grad_norm_b / self.grad_norm_a) if self.grad_norm_a > 0 else 'n/a'}); "
            f"‖Δgrad‖ {fmt(total)}",
            "",
            f"{'factor':<15} {'Δloss':>11} {'‖Δgrad‖':>11} {'‖grad‖ after':>13}  a → b",
        ]
        for f in self.factors:
            if not f.differs:
                lines.append(f"{f.name:<15} {'same':>11}")
                continue
            change = "; ".join(
                f"{k}: {f.a.get(k, '-')!r} → {f.b.get(k, '-')!r}" for k in {**f.a, **f.b} if f.a.get(k) != f.b.get(k)
            )
            if f.error:
                lines.append(f"{f.name:<15} {'n/a':>11} {'n/a':>11} {'':>13}  {change} ({f.error})")
            else:
                idle = " (no effect on this batch)" if f.delta_loss == 0.0 and f.delta_grad_norm == 0.0 else ""
                lines.append(
                    f"{f.name:<15} {fmt(f.delta_loss):>11} {fmt(f.delta_grad_norm):>11} "
                    f"{fmt(f.grad_norm):>13}  {change}{idle}"
                )
        lines.append(
            f"{'interaction':<15} {fmt(self.interaction_loss):>11} "
            f"{fmt(float(np.linalg.norm(self.interaction_grad))):>11}"
        )
        lines.append("(each factor: a with only that rule switched to b's value; interaction: the rest)")
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def __repr__(self) -> str:
        return f"<Explanation {self.a} vs {self.b}: Δloss={self.loss_b - self.loss_a:.4g}>"

    def plot(self, **fig_kw: Any) -> Any:
        """Bar charts of each factor's Δloss and ‖Δgrad‖ (and the interaction)."""
        import matplotlib.pyplot as plt

        fs = [f for f in self.factors if f.differs and not f.error]
        names = [f.name for f in fs] + ["interaction"]
        dl = [f.delta_loss for f in fs] + [self.interaction_loss]
        dg = [f.delta_grad_norm for f in fs] + [float(np.linalg.norm(self.interaction_grad))]
        fig_kw.setdefault("figsize", (10, 3.2))
        fig, (a0, a1) = plt.subplots(1, 2, **fig_kw)
        a0.barh(names, dl, color="C0")
        a0.axvline(0, color="k", lw=0.6)
        a0.set_title(f"Δloss (total {self.loss_b - self.loss_a:.3g})")
        a1.barh(names, dg, color="C1")
        a1.set_title(f"‖Δ∂loss/∂logp‖ (total {np.linalg.norm(self.grad_b - self.grad_a):.3g})")
        fig.suptitle(f"{self.a} → {self.b}")
        fig.tight_layout()
        return fig


def explain(batch: Any, a: Any, b: Any) -> Explanation:
    """Names the factors behind the difference in loss and gradient between presets ``a`` and ``b`` on
    ``batch``, with each factor's size on this batch.

    Factors: the normaliser (aggregation and its counts), the advantages (estimator and σ convention), the
    train–inference correction, the
    clip rule (surrogate, weight rule, clip widths, δ, dual clip), the KL placement (estimator, β, IS
    correction), the IS weights (ratio level, sampler correction) and other terms (entropy, pruning).
    Each factor's size is measured through the engine: spec ``a`` with only that factor's rules set
    to ``b``'s values, minus ``a`` (Δloss, and Δ of ∂loss/∂logp). What one-at-a-time switching does
    not explain is reported as the interaction, so the parts add up to b − a exactly.

    Args:
        batch: as for :func:`compare` (rewards with group_size, or advantages; logp; optional
            old_logp, mask, ref_logp, sampling_logp).
        a, b: presets as for :func:`compare` (e.g. ``"trl.dapo"`` and
            ``"verl.vanilla:loss_agg_mode=token-mean"``, or ``"paper.grpo_r1"`` and ``"trl.grpo"``).

    Returns:
        :class:`Explanation` (``print`` it, ``.factors``, ``.to_dict()``, ``.plot()``).
    """
    bt = _batch(batch)
    va, vb = _variants.make(a), _variants.make(b)
    ra, rb = _run(bt, va), _run(bt, vb)
    sa, sb = ra.spec, rb.spec  # with the batch's adjustments (KL off without ref_logp)
    factors: List[Factor] = []
    notes: List[str] = []
    if bt.get("ref_logp") is None:
        notes.append("no ref_logp in the batch: KL terms are switched off (beta = 0)")
    if bt.get("selection") is None and (va.spec.selection, vb.spec.selection) != ("none", "none"):
        notes.append("no selection in the batch: verl's clip_cov / kl_cov select no token")
    for name, fields in FACTORS.items():
        if name == "advantages":
            fa, fb = dict(va.advantage_options), dict(vb.advantage_options)
            if bt.get("advantages") is not None:
                fb = fa  # the batch's advantages are used as they are
                notes.append("the batch carries advantages: the advantage convention is not compared")
        elif name == "correction":
            fa, fb = {"correction": va.correction or "none"}, {"correction": vb.correction or "none"}
        else:
            fa = {k: getattr(sa, k) for k in fields}
            fb = {k: getattr(sb, k) for k in fields}
        f = Factor(name, fa, fb)
        if f.differs:
            try:
                if name == "advantages":
                    r = _run(bt, va, spec=sa, adv=_advantages(bt, vb))
                elif name == "correction":
                    r = _run(bt, dataclasses.replace(va, correction=vb.correction), spec=sa)
                else:
                    changed = {k: fb[k] for k in fields if fa[k] != fb[k]}
                    r = _run(bt, va, spec=dataclasses.replace(sa, **changed))
                f.delta_loss = r.loss - ra.loss
                f.delta_grad = r.grad - ra.grad
                f.grad_norm = float(np.linalg.norm(r.grad))
            except (ValueError, TypeError) as exc:
                f.error = f"not switchable alone: {exc}"
        factors.append(f)
    il = (rb.loss - ra.loss) - sum(f.delta_loss for f in factors if f.differs and not f.error)
    ig = (rb.grad - ra.grad) - sum((f.delta_grad for f in factors if f.delta_grad is not None), np.zeros_like(ra.grad))
    return Explanation(va.label, vb.label, ra.loss, rb.loss, ra.grad, rb.grad, factors, il, ig, notes)
