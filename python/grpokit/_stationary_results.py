"""The results of ``grpokit.stationary`` (re-exported there): stationary policies, equilibria, the
preference estimate and the comparison table, with their plots and text tables."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np


class ConvergenceError(RuntimeError):
    """A solver stopped without reaching its tolerance. ``.result`` holds the last iterate."""

    def __init__(self, message: str, result: "StationaryPolicy"):
        super().__init__(message)
        self.result = result


# ---- results ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Equilibrium:
    """One stationary policy: ``pi`` (K,), whether the expected GRPO flow is attracted to it, and
    whether it lies on the boundary of the simplex (some supported output has π = 0)."""

    pi: np.ndarray
    stable: bool
    boundary: bool

    def __repr__(self) -> str:
        kind = ("stable" if self.stable else "unstable") + (", boundary" if self.boundary else "")
        return f"Equilibrium(pi={_fmt_vec(self.pi)}, {kind})"


@dataclass(frozen=True)
class StationaryPolicy:
    """A stationary policy and how it was obtained.

    Attributes:
        pi: (K,) the policy (float64). When ``converged`` is False it is the last iterate only.
        converged: whether the solver reached its tolerance.
        residual: sup_o |R_o| with R_o = π_o(β − P_o + E_π P) − β π_ref,o (k3) or
            −π_o[(P_o − E_π P) − β(log(π_o/π_ref,o) − KL(π‖π_ref))] (k3_is); the expected GRPO
            update of the logits is −R. NaN when P_G is not exact (Monte Carlo).
        fixed_point_residual: sup_o of the residual of eq. (11) (k3) or of π = π_ref e^{P/β}/Z
            (k3_is, over the support of π).
        iterations, stages: Newton iterations / flow steps, and β-continuation stages.
        method: the solver or closed form used (e.g. ``"closed_form:eq14"``, ``"newton"``,
            ``"flow"``).
        message: why it did not converge, or a note (e.g. a boundary solution).
        stable: whether the expected GRPO flow is attracted to it (per-level logits, see docs).
        stability_known: False when stability was not assessed (more than 256 reward levels:
            a dense eigenvalue problem); ``stable`` is then False.
        boundary: whether some output with π_ref > 0 has π = 0.
        equilibria: every stationary policy found (all of them for binary problems).
        preference_std_error: 0 for exact P_G; with a Monte Carlo P_G, the sup of its standard
            error at ``pi``.
        problem: a one-line description of the problem.
    """

    pi: np.ndarray
    converged: bool
    residual: float
    fixed_point_residual: float
    iterations: int
    stages: int
    method: str
    message: str
    stable: bool
    boundary: bool
    equilibria: Tuple[Equilibrium, ...]
    stability_known: bool
    preference_std_error: float
    beta: float
    penalty: str
    problem: str
    pi_ref: np.ndarray = field(repr=False)

    def __repr__(self) -> str:
        state = "converged" if self.converged else "NOT converged"
        return (
            f"StationaryPolicy(pi={_fmt_vec(self.pi)}, {state}, method={self.method!r}, residual={self.residual:.1e})"
        )

    def __str__(self) -> str:
        state = "converged" if self.converged else "NOT CONVERGED"
        lines = [
            f"Stationary policy ({state}): {self.problem}, penalty {self.penalty}, beta = {self.beta:g}",
            f"  method {self.method}: {self.iterations} iterations"
            + (f", {self.stages} continuation stages" if self.stages else "")
            + f"; residual {self.residual:.1e}, fixed-point residual {self.fixed_point_residual:.1e}; "
            + ("stable" if self.stable else "not stable" if self.stability_known else "stability not assessed")
            + (", boundary" if self.boundary else ""),
        ]
        if self.message:
            lines.append(f"  note: {self.message}")
        lines.append(_table(["pi_ref", "pi"], [self.pi_ref, self.pi]))
        if len(self.equilibria) > 1:
            lines.append(
                f"  {len(self.equilibria)} stationary policies: " + "; ".join(repr(e) for e in self.equilibria)
            )
        return "\n".join(lines)


@dataclass(frozen=True)
class PreferenceEstimate:
    """P_G(o|π) per output, exact or Monte Carlo (then ``std_error`` holds standard errors)."""

    values: np.ndarray
    std_error: Optional[np.ndarray]
    method: str  # "exact" | "monte_carlo"
    terms: float  # terms of the exact enumeration (compositions × reward levels)
    problem: str

    def __repr__(self) -> str:
        se = "" if self.std_error is None else f", std_error≤{float(np.max(self.std_error)):.1e}"
        return f"PreferenceEstimate({_fmt_vec(self.values)}, {self.method}{se})"


@dataclass(frozen=True)
class Comparison:
    """Stationary policies of GRPO (several G) next to RLHF's log pooling (and NLHF) for one problem.

    ``rows`` are (label, π) pairs; ``rewards``, ``pi_ref`` and ``beta`` describe the problem.
    ``str()`` gives a table (π per output for K <= 8, plus E_π[r], the mass on the best reward and
    KL(π‖π_ref)); :meth:`plot` draws it.
    """

    rewards: np.ndarray
    pi_ref: np.ndarray
    beta: float
    rows: Tuple[Tuple[str, np.ndarray], ...]

    def summary(self) -> List[Tuple[str, float, float, float]]:
        """(label, E_π[r], π(best reward), KL(π‖π_ref)) per row."""
        best = self.rewards == self.rewards[self.pi_ref > 0].max()
        out = []
        for label, pi in self.rows:
            s = pi > 0
            kl = float(np.sum(pi[s] * np.log(pi[s] / self.pi_ref[s])))
            out.append((label, float(pi @ self.rewards), float(pi[best].sum()), kl))
        return out

    def __str__(self) -> str:
        K = len(self.rewards)
        head = f"{'policy':<24}" + ("".join(f"{'pi[' + str(o) + ']':>11}" for o in range(K)) if K <= 8 else "")
        head += f"{'E[r]':>10}{'pi(best)':>10}{'KL':>10}"
        lines = [f"beta = {self.beta:g}, rewards = {_fmt_vec(self.rewards)}", head]
        lines.append(
            f"{'pi_ref':<24}"
            + ("".join(f"{x:>11.6f}" for x in self.pi_ref) if K <= 8 else "")
            + f"{float(self.pi_ref @ self.rewards):>10.4f}"
            + f"{float(self.pi_ref[self.rewards == self.rewards[self.pi_ref > 0].max()].sum()):>10.4f}"
            + f"{0.0:>10.4f}"
        )
        for (label, pi), (_, er, pb, kl) in zip(self.rows, self.summary()):
            vals = "".join(f"{x:>11.6f}" for x in pi) if K <= 8 else ""
            lines.append(f"{label:<24}{vals}{er:>10.4f}{pb:>10.4f}{kl:>10.4f}")
        return "\n".join(lines)

    __repr__ = __str__

    def plot(self, ax: Any = None) -> Any:
        """Grouped bars of π per output (K <= 30) for π_ref and every row. Returns the Axes."""
        plt = _pyplot()
        if ax is None:
            _, ax = plt.subplots(figsize=(max(5.0, 0.6 * len(self.rewards) * (len(self.rows) + 1) / 3), 3.6))
        series = [("pi_ref", self.pi_ref)] + list(self.rows)
        K = len(self.rewards)
        if K > 30:
            raise ValueError(f"plot: {K} outputs are too many for bars; plot comparison.summary() instead")
        width = 0.8 / len(series)
        x = np.arange(K)
        for i, (label, pi) in enumerate(series):
            ax.bar(x + (i - (len(series) - 1) / 2) * width, pi, width, label=label)
        ax.set_xticks(x)
        ax.set_xticklabels([f"o{o}\nr={r:g}" for o, r in enumerate(self.rewards)])
        ax.set_ylabel("probability")
        ax.set_title(f"Stationary policies, beta = {self.beta:g}")
        ax.legend(fontsize="small")
        return ax


# ---- helpers of the results' plots and tables ----------------------------------------------------


def _pyplot() -> Any:
    import matplotlib.pyplot as plt

    return plt


def _fmt_vec(v: np.ndarray, limit: int = 8) -> str:
    v = np.asarray(v)
    items = [f"{x:.6g}" for x in v[:limit]]
    if v.size > limit:
        items.append(f"... ({v.size} values)")
    return "[" + ", ".join(items) + "]"


def _table(names: Sequence[str], cols: Sequence[np.ndarray], limit: int = 20) -> str:
    K = len(cols[0])
    lines = ["  output " + "".join(f"{n:>14}" for n in names)]
    for o in range(min(K, limit)):
        lines.append(f"  {o:<6} " + "".join(f"{c[o]:>14.9f}" for c in cols))
    if K > limit:
        lines.append(f"  ... {K - limit} more outputs")
    return "\n".join(lines)
