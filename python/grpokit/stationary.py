"""What GRPO converges to: stationary policies, closed forms and solvers, compared with RLHF.

Vojnovic & Yun, "What is the Alignment Objective of GRPO?" (arXiv:2502.18548) characterise the
policies at which GRPO's expected update stops, for one context with a finite set of outputs:

    π(o) · [1 − (P_G(o|π) − E_π P_G) / β] = π_ref(o)          (eq. (11), GRPO's k3 penalty)

where P_G(o|π) is the expected group-normalised advantage of output o in a group of G drawn from π.
This is *not* RLHF's logarithmic pooling π ∝ π_ref·exp(r/β) (:func:`rlhf`): GRPO's penalty acts like
a reverse KL, which gives the 1/(1 − x) aggregation above, and the normalisation makes the result
invariant to affine changes of the rewards.

Everything is computed by the C++ engine (``grpokit._core``); this module validates arguments,
wraps results and plots. All probabilities are float64 NumPy arrays.

Conventions:
  * ``G`` is an integer >= 2 or ``math.inf`` (the law-of-large-numbers limit).
  * ``penalty="k3"``: GRPO's penalty π_ref/π − log(π_ref/π) − 1 (stationary points of β·KL(π_ref‖π)).
    ``penalty="k3_is"``: the importance-weighted penalty, i.e. direct KL(π‖π_ref) (paper §3).
  * ``normalisation="mean_std"``: A = (r − mean)/std with population std (divisor G) and 0/0 := 0,
    as the paper; ``std_ddof=1`` and ``std_eps`` reproduce trainers (TRL: ``std_ddof=1,
    std_eps=1e-4``). ``normalisation="mean_only"``: shift-only advantages A = r − mean.
  * Deterministic rewards (K,) or, for G = 2, ``pairwise`` (K, K) with Q[o, o'] = P(r > r' | o, o').
  * Outputs with π_ref(o) = 0 get π(o) = 0 (the penalty's support). If every supported output has
    the same reward, P_G = 0 and the stationary policy is π_ref itself.

Example:
    >>> from grpokit import stationary as st
    >>> res = st.solve([1.0, 0.0], [0.1, 0.9], beta=1.0, G=2)
    >>> round(float(res.pi[0]), 6)          # eq. (14) at β = γ = 1: sqrt(0.1)
    0.316228
"""

from __future__ import annotations

import math
from typing import Any, List, Optional, Sequence, Tuple

import numpy as np

from . import _core
from ._stationary_results import (
    Comparison,
    ConvergenceError,
    Equilibrium,
    PreferenceEstimate,
    StationaryPolicy,
    _fmt_vec,
    _pyplot,
)

__all__ = [
    "INF",
    "ConvergenceError",
    "Equilibrium",
    "StationaryPolicy",
    "PreferenceEstimate",
    "Comparison",
    "preference",
    "solve",
    "equilibria",
    "residuals",
    "binary",
    "right_limit",
    "rlhf",
    "nlhf",
    "compare",
    "plot_figure1",
    "plot_figure2",
    "plot_figure3",
    "plot_binary_comparison",
]

INF = math.inf
_DEFAULT_MAX_TERMS = 20_000_000


# ---- argument handling ---------------------------------------------------------------------------


def _group_size(G: Any) -> int:
    """The engine's encoding: an int >= 2, or -1 for G = ∞."""
    if isinstance(G, str) and G.lower() in ("inf", "infinity"):
        return -1
    if isinstance(G, bool) or not isinstance(G, (int, float, np.integer, np.floating)):
        raise TypeError(f"G: expected an integer >= 2 or math.inf, got {G!r}")
    if math.isinf(G) and G > 0:
        return -1
    if not float(G).is_integer() or G < 2 or G >= 2**31:
        raise ValueError(f"G: expected an integer >= 2 or math.inf, got {G!r}")
    return int(G)


def _vector(x: Any, name: str) -> np.ndarray:
    try:
        a = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a sequence of numbers, got {type(x).__name__}") from None
    if a.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array, got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name}: expected at least one element, got an empty array")
    return a


def _matrix(x: Any, name: str) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 2:
        raise ValueError(f"{name}: expected a (K, K) matrix, got shape {a.shape}")
    return a


def _model(
    rewards: Any, pairwise: Any, G: Any, normalisation: str, std_ddof: int, std_eps: float, max_terms: int
) -> Any:
    if (rewards is None) == (pairwise is None):
        raise ValueError(
            "rewards, pairwise: pass exactly one (deterministic rewards, or for G = 2 a pairwise-preference matrix)"
        )
    if pairwise is not None:
        if _group_size(G) != 2:
            raise ValueError(f"pairwise: preferences define P_G for G = 2 only, got G={G!r}")
        if normalisation != "mean_std" or std_ddof != 0 or std_eps != 0.0:
            raise ValueError(
                "pairwise: the pairwise model is the paper's G = 2 model (A = ±1); "
                "normalisation, std_ddof and std_eps do not apply"
            )
        return _core.stationary_model_pairwise(_matrix(pairwise, "pairwise"))
    return _core.stationary_model_rewards(
        _vector(rewards, "rewards"), _group_size(G), normalisation, int(std_ddof), float(std_eps), int(max_terms)
    )


def _wrap(
    r: Any, model: Any, beta: float, penalty: str, pi_ref: np.ndarray, allow_unconverged: bool
) -> StationaryPolicy:
    res = StationaryPolicy(
        pi=np.array(r.pi),
        converged=bool(r.converged),
        residual=float(r.residual),
        fixed_point_residual=float(r.fixed_point_residual),
        iterations=int(r.iterations),
        stages=int(r.stages),
        method=str(r.method),
        message=str(r.message),
        stable=bool(r.stable),
        boundary=bool(r.boundary),
        stability_known=bool(r.stability_known),
        preference_std_error=float(r.preference_std_error),
        equilibria=tuple(Equilibrium(np.array(e.pi), bool(e.stable), bool(e.boundary)) for e in r.equilibria),
        beta=float(beta),
        penalty=penalty,
        problem=model.describe(),
        pi_ref=pi_ref,
    )
    if not res.converged and not allow_unconverged:
        raise ConvergenceError(
            f"{res.method}: {res.message} (pass allow_unconverged=True to get the last iterate as a flagged result)",
            res,
        )
    return res


# ---- the preference model ---------------------------------------------------------------------------


def preference(
    pi: Any,
    rewards: Any = None,
    G: Any = 2,
    *,
    pairwise: Any = None,
    normalisation: str = "mean_std",
    std_ddof: int = 0,
    std_eps: float = 0.0,
    method: str = "auto",
    samples: int = 100_000,
    seed: int = 0,
    max_terms: int = _DEFAULT_MAX_TERMS,
) -> PreferenceEstimate:
    """The reward preference model P_G(o | π) for every output o (paper eq. (6)).

    P_G(o|π) = E[A_1 | o_1 = o, o_2..o_G iid ~ π], the expected advantage of o in a group whose other
    G − 1 members are drawn from π. E_π[P_G] = 0 for every π.

    Args:
        pi: (K,) the policy the other group members are drawn from.
        rewards: (K,) deterministic rewards (or ``pairwise`` instead, G = 2).
        G: group size, an integer >= 2 or ``math.inf``.
        method: ``"exact"`` (enumerates the compositions of G − 1 over the distinct reward levels,
            C(G + L − 2, L − 1) of them), ``"monte_carlo"`` (``samples`` groups, with standard
            errors; deterministic for a ``seed``) or ``"auto"`` (exact unless that exceeds
            ``max_terms`` terms).

    Returns:
        :class:`PreferenceEstimate` with ``values`` (K,) and, for Monte Carlo, ``std_error`` (K,).
    """
    if method not in ("auto", "exact", "monte_carlo"):
        raise ValueError(f"method: expected one of 'auto', 'exact', 'monte_carlo', got {method!r}")
    model = _model(rewards, pairwise, G, normalisation, std_ddof, std_eps, max_terms)
    p = _vector(pi, "pi")
    if p.shape[0] != model.num_outputs:
        raise ValueError(f"pi: expected {model.num_outputs} probabilities (one per output), got {p.shape[0]}")
    if not np.all(np.isfinite(p)) or np.any(p < 0) or abs(p.sum() - 1.0) > 1e-9:
        raise ValueError(f"pi: expected finite probabilities >= 0 summing to 1, got {_fmt_vec(p)}")
    if method == "monte_carlo" or (method == "auto" and not model.exact):
        values, se = model.preference_monte_carlo(p, int(samples), int(seed))
        return PreferenceEstimate(np.array(values), np.array(se), "monte_carlo", model.num_terms, model.describe())
    return PreferenceEstimate(np.array(model.preference(p)), None, "exact", model.num_terms, model.describe())


# ---- solvers ------------------------------------------------------------------------------------------


def solve(
    rewards: Any,
    pi_ref: Any,
    beta: float,
    G: Any = 2,
    *,
    pairwise: Any = None,
    penalty: str = "k3",
    normalisation: str = "mean_std",
    std_ddof: int = 0,
    std_eps: float = 0.0,
    method: str = "auto",
    tol: float = 1e-13,
    max_iter: int = 100,
    beta_start: float = 1e3,
    beta_factor: float = 1.5,
    inner_steps: int = 1,
    step: Optional[float] = None,
    rtol: float = 0.2,
    max_steps: int = 200_000,
    max_terms: int = _DEFAULT_MAX_TERMS,
    samples: int = 20_000,
    mc_rounds: int = 8,
    mc_tol: float = 2e-3,
    seed: int = 0,
    allow_unconverged: bool = False,
) -> StationaryPolicy:
    """The stationary policy of GRPO's expected update for one context.

    Solves eq. (11) (``penalty="k3"``, GRPO) or its log-pooling form π ∝ π_ref·exp(P_G(o|π)/β)
    (``penalty="k3_is"``, direct KL) for the given rewards, reference policy, β and group size.

    Args:
        rewards: (K,) deterministic rewards; or None with ``pairwise`` (K, K) for G = 2, where
            ``pairwise[o, o'] = P(r > r' | o, o')`` (ties allowed: Q + Qᵀ <= 1).
        pi_ref: (K,) reference policy: finite, >= 0, summing to 1 (within 1e-9). Zeros stay zeros.
        beta: the penalty weight, > 0.
        G: group size (integer >= 2) or ``math.inf``.
        penalty: ``"k3"`` (GRPO) or ``"k3_is"`` (direct KL).
        normalisation, std_ddof, std_eps: the advantage, see the module docstring.
        method:
            ``"auto"``: a closed form when one applies (binary G = 2 eq. (14), G = ∞ eq. (15), binary
            finite G by bisection, categorical G = 2 sequential form, categorical G = ∞ nested
            bisection, shift-only, direct KL binary G ∈ {2, ∞}, shift-only + direct KL = RLHF with
            β·G/(G − 1)); otherwise Newton.
            ``"closed_form"``: the closed form, or NotImplementedError.
            ``"newton"``: Newton on per-level logits with the analytic Jacobian and β-continuation
            from ``beta_start`` (β divided by an adaptive factor starting at ``beta_factor``).
            ``"flow"``: the expected on-policy GRPO ascent on per-output logits from log π_ref,
            Heun–Euler with relative-error step control (``rtol``, initial ``step``); with
            ``inner_steps`` = μ > 1, GRPO's loop: μ gradient steps of size ``step`` on the surrogate
            with π_old frozen. At most ``max_steps`` steps.
        tol: convergence threshold on sup|R|, relative to max(1, β) (see ``StationaryPolicy``).
        max_terms, samples, mc_rounds, mc_tol, seed: when exact P_G would need more than ``max_terms``
            terms, Newton runs on a Monte Carlo P_G instead (``method="auto"``/``"newton"``):
            rounds of ``samples`` groups, each drawn at the previous solution and reweighted by
            likelihood ratios (a smooth sample-average problem), until π moves by less than
            ``mc_tol`` between rounds (at most ``mc_rounds`` rounds, else not converged). The result's
            ``method`` is ``"newton_monte_carlo"`` and ``preference_std_error`` reports the Monte
            Carlo standard error of P_G at the solution.
        allow_unconverged: return a flagged result (``converged=False``) instead of raising.

    Returns:
        :class:`StationaryPolicy`; for binary problems ``equilibria`` lists every stationary policy
        with its stability (the direct-KL penalty at G = ∞ can have two interior ones and the
        boundary).

    Raises:
        ValueError: bad arguments (β <= 0, π_ref not a distribution, G < 2, shapes).
        NotImplementedError: ``method="closed_form"`` without a closed form; exact P_G too large.
        ConvergenceError: the solver did not converge (unless ``allow_unconverged``).
    """
    if method not in ("auto", "closed_form", "newton", "flow"):
        raise ValueError(f"method: expected one of 'auto', 'closed_form', 'newton', 'flow', got {method!r}")
    model = _model(rewards, pairwise, G, normalisation, std_ddof, std_eps, max_terms)
    p = _vector(pi_ref, "pi_ref")
    if method == "flow":
        r = _core.stationary_flow(
            model,
            p,
            float(beta),
            penalty,
            int(inner_steps),
            0.0 if step is None else float(step),
            float(rtol),
            float(tol),
            int(max_steps),
        )
    else:
        r = _core.stationary_solve(
            model,
            p,
            float(beta),
            method,
            penalty,
            float(tol),
            int(max_iter),
            float(beta_start),
            float(beta_factor),
            int(samples),
            int(mc_rounds),
            float(mc_tol),
            int(seed),
        )
    return _wrap(r, model, beta, penalty, p, allow_unconverged)


def equilibria(
    rewards: Any,
    pi_ref: Any,
    beta: float,
    G: Any = 2,
    *,
    pairwise: Any = None,
    penalty: str = "k3",
    normalisation: str = "mean_std",
    std_ddof: int = 0,
    std_eps: float = 0.0,
) -> List[Equilibrium]:
    """Every stationary policy, with stability: of a binary problem (two supported reward levels), and
    of any number of reward levels for the direct-KL penalty (``penalty="k3_is"``) at G = ∞, where every
    stationary policy is a tilt π_ref·e^{s·r} (the roots of one scalar equation) or the collapse onto
    the best level.

    Scans the stationarity residual over logit(π(a)) ∈ [−745, 745] and bisects every sign change;
    boundary points (π(a) ∈ {0, 1}) are listed when the expected GRPO flow is attracted to them.
    Example: direct KL at G = ∞ with β = 1, π_ref(a) = 0.1 has x1 ≈ 0.4531 (stable),
    x2 ≈ 0.9665 (unstable) and the boundary x = 1 (stable).
    """
    model = _model(rewards, pairwise, G, normalisation, std_ddof, std_eps, _DEFAULT_MAX_TERMS)
    eqs = _core.stationary_equilibria(model, _vector(pi_ref, "pi_ref"), float(beta), penalty)
    return [Equilibrium(np.array(e.pi), bool(e.stable), bool(e.boundary)) for e in eqs]


def residuals(
    pi: Any,
    rewards: Any,
    pi_ref: Any,
    beta: float,
    G: Any = 2,
    *,
    pairwise: Any = None,
    penalty: str = "k3",
    normalisation: str = "mean_std",
    std_ddof: int = 0,
    std_eps: float = 0.0,
) -> Tuple[np.ndarray, np.ndarray]:
    """(R, fixed-point residual), both (K,), of any policy ``pi`` (see :class:`StationaryPolicy`)."""
    model = _model(rewards, pairwise, G, normalisation, std_ddof, std_eps, _DEFAULT_MAX_TERMS)
    R, fp = _core.stationary_residuals(model, _vector(pi, "pi"), _vector(pi_ref, "pi_ref"), float(beta), penalty)
    return np.array(R), np.array(fp)


# ---- closed forms for the binary figures ----------------------------------------------------------


def binary(p: Any, beta: float, G: Any = 2, *, penalty: str = "k3", gamma: float = 1.0) -> Any:
    """π(a) of the binary closed forms, a being the better answer, at π_ref(a) = p (scalar or array).

    ``penalty="k3"``: eq. (14) for G = 2 (γ = P(a≻b) − P(b≻a), deterministic rewards: 1), the
    bisection of β(x − p) = φ_G(x) for finite G, eq. (15) for G = ∞. ``penalty="k3_is"``: the
    logistic form for G = 2 (odds × e^{γ/β}); for G = ∞ the equilibrium the flow from π_ref reaches
    (the stable root x1 or the collapse x = 1). At p = 0 the value is 0 (support); see
    :func:`right_limit` for the limit p → 0+.
    """
    arr = np.asarray(p, dtype=np.float64)
    out = _core.stationary_binary(np.atleast_1d(arr).ravel(), float(beta), _group_size(G), penalty, float(gamma))[:, 0]
    return float(out[0]) if arr.ndim == 0 else out.reshape(arr.shape)


def right_limit(beta: float, G: Any = 2, *, penalty: str = "k3", gamma: float = 1.0) -> float:
    """lim_{p→0+} π(a): max(1 − β/γ, 0) for G = 2, 1/(1 + β²) for G = ∞ (the jump at π_ref(a) = 0)."""
    return binary(1e-300, beta, G, penalty=penalty, gamma=gamma)


def rlhf(rewards: Any, pi_ref: Any, beta: float) -> np.ndarray:
    """RLHF's optimum, logarithmic pooling (paper eq. (4)): π ∝ π_ref · exp(r/β)."""
    return np.array(_core.stationary_log_pooling(_vector(rewards, "rewards"), _vector(pi_ref, "pi_ref"), float(beta)))


def nlhf(
    pi_ref: Any,
    beta: float,
    *,
    rewards: Any = None,
    preference_matrix: Any = None,
    method: str = "auto",
    tol: float = 1e-13,
    allow_unconverged: bool = False,
) -> StationaryPolicy:
    """NLHF's Nash equilibrium (paper eq. (5)): π ∝ π_ref · exp(E_{o'~π}[P(o ≻ o')] / β).

    Pass ``preference_matrix`` M (K, K) with M[o, o'] = P(o ≻ o') and M + Mᵀ = 1, or ``rewards``
    (then P(o ≻ o') = 1 if r(o) > r(o'), 1/2 on ties). Binary problems have a logistic closed form;
    otherwise Newton with β-continuation. Equals direct-KL GRPO with G = 2 at 2β.
    """
    if (rewards is None) == (preference_matrix is None):
        raise ValueError("rewards, preference_matrix: pass exactly one")
    if preference_matrix is None:
        r = _vector(rewards, "rewards")
        preference_matrix = (r[:, None] > r[None, :]) + 0.5 * (r[:, None] == r[None, :])
    model = _core.stationary_model_nlhf(_matrix(preference_matrix, "preference_matrix"))
    p = _vector(pi_ref, "pi_ref")
    r = _core.stationary_solve(model, p, float(beta), method, "k3_is", float(tol), 100, 1e3, 1.5)
    return _wrap(r, model, beta, "k3_is", p, allow_unconverged)


def compare(
    rewards: Any,
    pi_ref: Any,
    beta: float,
    G_values: Sequence[Any] = (2, 4, 8, 16, INF),
    *,
    penalty: str = "k3",
    include_nlhf: bool = False,
    **solve_kwargs: Any,
) -> Comparison:
    """GRPO's stationary policies for several group sizes next to RLHF's log pooling at the same β.

    Returns a :class:`Comparison`: ``print(cmp)`` gives the table, ``cmp.plot()`` a bar chart.
    Extra keyword arguments go to :func:`solve` (e.g. ``normalisation``, ``std_ddof``).
    """
    r = _vector(rewards, "rewards")
    p = _vector(pi_ref, "pi_ref")
    rows: List[Tuple[str, np.ndarray]] = []
    for G in G_values:
        res = solve(r, p, beta, G, penalty=penalty, **solve_kwargs)
        rows.append((f"GRPO {penalty} G={'inf' if _group_size(G) < 0 else int(G)}", res.pi))
    rows.append(("RLHF log-pooling", rlhf(r, p, beta)))
    if include_nlhf:
        rows.append(("NLHF", nlhf(p, beta, rewards=r).pi))
    return Comparison(r, p, float(beta), tuple(rows))


# ---- plots (the paper's figures) ----------------------------------------------------------------


def _binary_figure(G: Any, penalty: str, betas: Sequence[float], ax: Any, title: str, label: str, jump: bool) -> Any:
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4.0))
    p = np.linspace(0.0, 1.0, 401)[1:]
    for b in betas:
        (line,) = ax.plot(p, binary(p, b, G, penalty=penalty), label=f"{label} = {b:g}")
        if jump:  # the value at π_ref(a) = 0 is 0 (support); the curve's right-limit may not be
            lim = right_limit(b, G, penalty=penalty)
            ax.plot([0.0], [0.0], "o", color=line.get_color(), ms=4)
            if lim > 1e-9:
                ax.plot([0.0], [lim], "o", mfc="white", color=line.get_color(), ms=4)
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel(r"$\pi_{ref}(a)$")
    ax.set_ylabel(r"$\pi(a)$")
    ax.set_title(title, fontsize="medium")
    ax.legend(fontsize="small", loc="lower right")
    return ax


def plot_figure1(betas: Sequence[float] = (0.1, 0.5, 1.0, 2.0, 5.0), ax: Any = None) -> Any:
    """Paper Fig. 1: GRPO, binary, G = 2, π(a) against π_ref(a) for several β/γ (eq. (14)).

    The paper's legend values could not be recovered; the defaults are a stand-in (docs/stationary.md). Open
    circles mark the right-limit 1 − β/γ at π_ref(a) = 0 (the jump when β < γ). Returns the Axes.
    """
    return _binary_figure(2, "k3", betas, ax, "GRPO, G = 2 (eq. 14)", r"$\beta/\gamma$", True)


def plot_figure2(betas: Sequence[float] = (0.1, 0.5, 1.0, 2.0, 5.0), ax: Any = None) -> Any:
    """Paper Fig. 2: GRPO, binary, G → ∞ (eq. (15)); right-limit 1/(1 + β²) at π_ref(a) = 0."""
    return _binary_figure(INF, "k3", betas, ax, r"GRPO, $G\to\infty$ (eq. 15)", r"$\beta$", True)


def plot_figure3(betas: Sequence[float] = (0.1, 0.5, 1.0, 2.0, 5.0), ax: Any = None) -> Any:
    """Paper Fig. 3: GRPO reward model with the direct-KL penalty, binary, G = 2 (logistic form);
    continuous at π_ref(a) = 0."""
    return _binary_figure(2, "k3_is", betas, ax, "GRPO + direct KL, G = 2", r"$\beta/\gamma$", False)


def plot_binary_comparison(
    beta: float, G_values: Sequence[Any] = (2, 4, 8, 16, INF), reward_gap: float = 1.0, ax: Any = None
) -> Any:
    """π(a) against π_ref(a) for GRPO at several G and for RLHF log pooling with r(a) − r(b) =
    ``reward_gap`` (GRPO does not depend on the gap; RLHF does). Returns the Axes."""
    plt = _pyplot()
    if ax is None:
        _, ax = plt.subplots(figsize=(4.6, 4.0))
    p = np.linspace(0.0, 1.0, 401)[1:-1]
    for G in G_values:
        name = "inf" if _group_size(G) < 0 else str(int(G))
        ax.plot(p, binary(p, beta, G), label=f"GRPO G={name}")
    rl = [rlhf([reward_gap, 0.0], [x, 1.0 - x], beta)[0] for x in p]
    ax.plot(p, rl, "k--", label=f"RLHF (gap {reward_gap:g})")
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set_xlabel(r"$\pi_{ref}(a)$")
    ax.set_ylabel(r"$\pi(a)$")
    ax.set_title(f"GRPO vs RLHF, beta = {beta:g}", fontsize="medium")
    ax.legend(fontsize="small", loc="lower right")
    return ax
