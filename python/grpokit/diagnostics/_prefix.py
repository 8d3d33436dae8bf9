"""Shared-prefix gradient bias (Prop. 1 of "On the Hidden Objective Biases of Group-based RL")."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional

import numpy as np

from .. import _core
from . import _inputs
from ._report import Report, fmt

_GROUP_COLUMNS = (
    "prefix_len",
    "prefix_coef",
    "prefix_bias",
    "prefix_abs",
    "shared_bias",
    "shared_abs",
    "weight_length_corr",
)


def _safe_ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    """|num| / den with 0/0 := 0 (a node whose completions all have ω·A = 0 carries no bias)."""
    num = np.abs(np.asarray(num, dtype=np.float64))
    den = np.asarray(den, dtype=np.float64)
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


@dataclass(repr=False)
class PrefixBiasReport(Report):
    """The prefix trie of each group and the coefficient on every shared prefix.

    Per-token arrays have the shape of ``ids`` (padded (B, T), or packed (N,) for ragged input with
    ``cu_seqlens``); position (i, t) describes the node of prefix y_{i,≤t}:

    * ``node``: node id within the group (−1 past the completion's end); equal ids = same prefix.
    * ``count``: |G̃|, the completions sharing that prefix (0 past the end).
    * ``coef``: W = Σ_{j∈G̃} ω_{j,t} A_j, the factor on ∇log π of that token (ascent convention).
    * ``reference``: ω̄ Σ_{j∈G̃} A_j, what uniform weights (ω̄ = mean of ω over G̃) would give.
    * ``bias``: W − reference = Σ_{j∈G̃} (ω_{j,t} − ω̄) A_j, the weight-induced part.
    * ``abs_sum``: Σ_{j∈G̃} |ω_{j,t} A_j|; ``normalized`` = |bias| / abs_sum (0/0 := 0).

    Per-group arrays (num_groups,): ``prefix_len`` (depth shared by the whole group),
    ``prefix_coef`` / ``prefix_bias`` / ``prefix_abs`` (sums over that prefix's tokens; on it Σ A = 0
    for centred advantages, so W = bias = G·Cov_pop(ω, A) per token), ``prefix_normalized``,
    ``shared_bias`` / ``shared_abs`` (sums over every node shared by ≥ 2 completions) and
    ``weight_length_corr`` (Pearson correlation over the group between a completion's mean ω and
    its number of valid tokens: negative for 1/|o_i| weights, where any bias is a length preference,
    and −1 only for exactly two distinct lengths (1/L is not linear in L); NaN when undefined, e.g.
    uniform weights or equal lengths).
    """

    node: np.ndarray
    count: np.ndarray
    coef: np.ndarray
    bias: np.ndarray
    abs_sum: np.ndarray
    group: Dict[str, np.ndarray]
    group_size: int
    cu_seqlens: Optional[np.ndarray] = None
    unclipped: Optional["PrefixBiasReport"] = None
    title = "Shared-prefix bias (Prop. 1)"
    n_panels = 2

    # ---- derived views -------------------------------------------------------------------
    @property
    def reference(self) -> np.ndarray:
        return self.coef - self.bias

    @property
    def normalized(self) -> np.ndarray:
        return _safe_ratio(self.bias, self.abs_sum)

    def __getattr__(self, name: str) -> Any:
        group = self.__dict__.get("group")
        if group is not None and name in group:
            return group[name]
        raise AttributeError(f"{type(self).__name__} has no attribute {name!r}")

    @property
    def clip_contribution(self) -> Optional[np.ndarray]:
        """Per token, W − W_unclipped: what the sign-dependent clipped branch adds to each prefix's
        coefficient (needs ``omega_unclipped``; None otherwise). At inner step 1 (s = 1) it is 0;
        later, a shared prefix whose ratio left the trust region keeps only one sign of A."""
        return None if self.unclipped is None else self.coef - self.unclipped.coef

    @property
    def prefix_clip_contribution(self) -> Optional[np.ndarray]:
        """Per group, the same on the whole-group prefix (sum over its tokens)."""
        if self.unclipped is None:
            return None
        return self.group["prefix_coef"] - self.unclipped.group["prefix_coef"]

    @property
    def prefix_normalized(self) -> np.ndarray:
        return _safe_ratio(self.group["prefix_bias"], self.group["prefix_abs"])

    @property
    def num_groups(self) -> int:
        return int(self.group["prefix_len"].shape[0])

    def per_completion(self, name: str) -> List[np.ndarray]:
        """A per-token array split into one array per completion (valid tokens only)."""
        arr = getattr(self, name)
        if self.cu_seqlens is not None:
            cu = self.cu_seqlens
            return [arr[cu[i] : cu[i + 1]] for i in range(cu.shape[0] - 1)]
        lengths = (self.node >= 0).sum(axis=1)
        return [arr[i, : lengths[i]] for i in range(arr.shape[0])]

    # ---- Report --------------------------------------------------------------------------
    def to_dict(self) -> Dict[str, Any]:
        g = self.group
        shared = float(np.sum(g["shared_abs"]))
        out = {
            "groups": self.num_groups,
            "mean_prefix_len": float(np.mean(g["prefix_len"])),
            "prefix_bias_total": float(np.sum(g["prefix_bias"])),
            "prefix_bias_abs_mean": float(np.mean(np.abs(g["prefix_bias"]))),
            "prefix_normalized_mean": float(np.mean(self.prefix_normalized)),
            "shared_bias_total": float(np.sum(g["shared_bias"])),
            "shared_normalized": float(abs(np.sum(g["shared_bias"])) / shared) if shared > 0 else 0.0,
            "weight_length_corr_mean": float(np.nanmean(g["weight_length_corr"]))
            if np.any(np.isfinite(g["weight_length_corr"]))
            else float("nan"),
        }
        if self.unclipped is not None:
            out["prefix_clip_contribution_total"] = float(np.sum(self.prefix_clip_contribution))
        return out

    def _lines(self) -> List[str]:
        d = self.to_dict()
        lines = [
            f"groups: {d['groups']} of {self.group_size} completions; mean whole-group prefix: "
            f"{fmt(d['mean_prefix_len'])} tokens",
            f"bias on the whole-group prefixes: total {fmt(d['prefix_bias_total'])}, mean |bias| per group "
            f"{fmt(d['prefix_bias_abs_mean'])}, mean |bias|/Σ|ωA| {fmt(d['prefix_normalized_mean'])}",
            f"bias on all shared prefixes: total {fmt(d['shared_bias_total'])} "
            f"(|bias|/Σ|ωA| = {fmt(d['shared_normalized'])})",
            f"corr(mean ω, length) over completions: {fmt(d['weight_length_corr_mean'])} "
            "(−1: the bias is a length preference, n/a: uniform weights)",
        ]
        worst = int(np.argmax(np.abs(self.group["prefix_bias"])))
        lines.append(
            f"largest whole-group prefix bias: group {worst}, {fmt(self.group['prefix_bias'][worst])} over "
            f"{int(self.group['prefix_len'][worst])} tokens"
        )
        if self.unclipped is not None:
            lines.append(
                f"clipping's contribution to the whole-group prefix coefficients: total "
                f"{fmt(float(np.sum(self.prefix_clip_contribution)))}"
            )
        if d["prefix_bias_abs_mean"] == 0.0 and d["shared_bias_total"] == 0.0:
            lines.append("verdict: uniform weights on every shared prefix; shared prefixes cancel (Case 1)")
        return lines

    def _plot(self, axes: Any) -> None:
        ax0, ax1 = axes
        g = int(np.argmax(np.abs(self.group["prefix_bias"]))) if self.num_groups else 0
        rows = range(g * self.group_size, (g + 1) * self.group_size)
        coefs, biases = self.per_completion("coef"), self.per_completion("bias")
        for i in rows:
            ax0.plot(coefs[i], lw=0.8, alpha=0.7)
        ax0.plot(biases[rows[0]], "k--", lw=1.0, label="bias, completion 0")
        ax0.axvline(self.group["prefix_len"][g], color="grey", lw=0.6)
        ax0.set_xlabel("token position")
        ax0.set_ylabel("prefix coefficient W")
        ax0.set_title(f"group {g}: W per token (line: whole-group prefix end)", fontsize=9)
        ax0.legend(fontsize=7)
        ax1.bar(np.arange(self.num_groups), self.group["prefix_bias"], color="C3")
        ax1.set_xlabel("group")
        ax1.set_ylabel("bias on the whole-group prefix")
        ax1.set_title("Σ_t Σ_i (ω − ω̄) A over the shared prefix", fontsize=9)


def prefix_bias_from_weights(
    ids: Any,
    advantages: Any,
    omega: Any,
    group_size: int,
    *,
    mask: Any = None,
    cu_seqlens: Any = None,
    omega_unclipped: Any = None,
) -> PrefixBiasReport:
    """Shared-prefix bias of a batch, given each token's effective weight ω (Prop. 1).

    For every prefix shared by a subset G̃ of a group's completions, the gradient on that prefix's
    tokens is ∇log π(y_t) · W with W = Σ_{i∈G̃} ω_{i,t} A_i. With uniform ω a prefix shared by the
    whole group cancels (Σ A = 0); non-uniform ω (1/|o_i|, CPPO's pruning, sequence-level ratios,
    the sign-dependent clipped branch after the first inner step) leaves the weight-induced bias
    Σ (ω_i − ω̄) A_i.

    Args:
        ids: completion token ids: padded (B, T) int32/int64 with ``mask``, packed (N,) with
            ``cu_seqlens`` (B+1,), or a list of B per-completion sequences (ragged).
        advantages: (B,) the advantages the loss received (with σ if the preset divides by it).
        omega: per-token weights ω_{i,t} = effective α · ratio factor, 0 where the clipped branch
            binds (``policy_loss(..., return_weights=True).weights``), in the layout of ``ids``
            (ragged: a list of sequences of the same lengths).
        group_size: completions per prompt; groups are contiguous blocks of rows.
        mask: (B, T) (or (N,)) bool/int/float, nonzero = valid; a completion ends at its last valid
            token, masked tokens inside it are context with weight 0. Absent: every token is valid.
        cu_seqlens: (B+1,) offsets for packed ``ids``.
        omega_unclipped: optional weights in the layout of ``omega`` with the clipped branch not
            applied (α · ratio factor everywhere); the report's ``clip_contribution`` is then the
            part of each coefficient due to the sign-dependent clipping at inner steps > 1.

    Returns:
        PrefixBiasReport (per-token and per-group NumPy arrays; ``print`` it or ``.plot()`` it).
        CPU arrays are read in place; device arrays are copied to the host.
    """
    if omega_unclipped is not None:
        unclipped = prefix_bias_from_weights(
            ids, advantages, omega_unclipped, group_size, mask=mask, cu_seqlens=cu_seqlens
        )
        rep = prefix_bias_from_weights(ids, advantages, omega, group_size, mask=mask, cu_seqlens=cu_seqlens)
        rep.unclipped = unclipped
        return rep
    if _inputs.is_ragged(ids):
        if cu_seqlens is not None:
            raise ValueError("cu_seqlens: not used with ragged ids (a list of sequences)")
        if mask is not None and not _inputs.is_ragged(mask):
            raise ValueError("mask: with ragged ids the mask must be ragged too (or None)")
        ids_p, cu = _inputs.pack(ids, "ids", "int64")
        lengths = np.diff(cu)
        if not _inputs.is_ragged(omega):
            raise ValueError("omega: with ragged ids, pass omega as a list of per-completion sequences")
        if len(omega) != len(ids):
            raise ValueError(f"omega: expected {len(ids)} completions (as ids), got {len(omega)}")
        omega_p, _ = _inputs.pack(omega, "omega", "float64", lengths)
        mask_p = None
        if mask is not None:
            if len(mask) != len(ids):
                raise ValueError(f"mask: expected {len(ids)} completions (as ids), got {len(mask)}")
            mask_p, _ = _inputs.pack(mask, "mask", "bool", lengths)
        ids, omega, mask, cu_seqlens = ids_p, omega_p, mask_p, cu
    else:
        ids = _inputs.host(ids, "ids", default="int64")
        omega = _inputs.host(omega, "omega")
        mask = _inputs.host(mask, "mask", default="bool")
        cu_seqlens = _inputs.host(cu_seqlens, "cu_seqlens", default="int64")
    advantages = _inputs.host(advantages, "advantages")

    shape = _inputs.shape_of(ids)
    expected_ndim = 2 if cu_seqlens is None else 1
    if len(shape) != expected_ndim:
        layout = "padded (B, T)" if cu_seqlens is None else "packed (N,) with cu_seqlens"
        raise ValueError(f"ids: expected a {expected_ndim}-D array ({layout}), got shape {tuple(shape)}")
    B = shape[0] if cu_seqlens is None else _inputs.shape_of(cu_seqlens)[0] - 1
    g = _inputs.check_group_size(group_size, B)
    node = np.empty(shape, np.int64)
    count = np.empty(shape, np.int64)
    coef, bias, abs_sum = (np.empty(shape, np.float64) for _ in range(3))
    group = np.empty((B // g, len(_GROUP_COLUMNS)), np.float64)
    _core.prefix_bias(ids, mask, cu_seqlens, advantages, omega, g, node, count, coef, bias, abs_sum, group)
    cols = {name: group[:, k].copy() for k, name in enumerate(_GROUP_COLUMNS)}
    cols["prefix_len"] = cols["prefix_len"].astype(np.int64)
    cu = None if cu_seqlens is None else np.asarray(cu_seqlens, dtype=np.int64)
    return PrefixBiasReport(node, count, coef, bias, abs_sum, cols, g, cu)


def _field(batch: Any, *names: str, required: bool = True) -> Any:
    for n in names:
        if isinstance(batch, Mapping) and n in batch:
            return batch[n]
        if not isinstance(batch, Mapping) and hasattr(batch, n):
            return getattr(batch, n)
    if required:
        raise ValueError(f"batch: missing field {names[0]!r} (accepted names: {', '.join(names)})")
    return None


_OPTIONAL_LOSS_INPUTS = ("entropies", "sampling_logp", "keep", "token_weights")


def prefix_bias(batch: Any, preset: str = "trl.grpo", **overrides: Any) -> PrefixBiasReport:
    """Shared-prefix bias of a batch under a loss preset (the per-token weights come from the loss).

    ``batch`` is a mapping (or object) with ``completion_ids`` (or ``ids``), ``logp``, ``old_logp``,
    ``advantages``, ``group_size``, and optionally ``completion_mask`` (or ``mask``),
    ``ref_logp``, ``cu_seqlens`` (packed layout) and the inputs some presets need (``entropies``,
    ``sampling_logp``, ``keep``, ``token_weights``), passed on when present. Calls ``grpokit.policy_loss(logp,
    old_logp, advantages, mask, spec=preset,
    ref_logp=..., return_weights=True, **overrides)`` and passes its ``.weights`` (ω per token:
    effective α × ratio factor, 0 where the clipped branch binds) to
    :func:`prefix_bias_from_weights`.
    """
    from .. import _loss

    ids = _field(batch, "completion_ids", "ids")
    mask = _field(batch, "completion_mask", "mask", required=False)
    advantages = _field(batch, "advantages")
    cu_seqlens = _field(batch, "cu_seqlens", required=False)
    # Inputs some presets need (CPPO's keep flags, GTPO's token weights, ...), passed when present.
    extra = {k: v for k in _OPTIONAL_LOSS_INPUTS if (v := _field(batch, k, required=False)) is not None}
    result = _loss.policy_loss(
        _field(batch, "logp", "per_token_logps"),
        _field(batch, "old_logp", "old_per_token_logps"),
        advantages,
        mask,
        spec=preset,
        ref_logp=_field(batch, "ref_logp", "ref_per_token_logps", required=False),
        cu_seqlens=cu_seqlens,
        return_weights=True,
        **extra,
        **overrides,
    )
    weights = getattr(result, "weights", None)
    if weights is None:
        raise RuntimeError(f"grpokit.policy_loss(spec={preset!r}, return_weights=True) returned no weights")
    return prefix_bias_from_weights(
        ids, advantages, weights, _field(batch, "group_size"), mask=mask, cu_seqlens=cu_seqlens
    )
