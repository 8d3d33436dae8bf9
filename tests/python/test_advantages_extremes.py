"""Advantages and outcome estimators at the float64 limits (issue 21): finite rewards up to ±DBL_MAX
never overflow, rewards one float step apart give advantages that sum to zero, and the results equal
an exact reference (Python's decimal at 1200 digits, never the engine)."""

import decimal
import sys

import numpy as np
import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

import grpokit

DMAX = sys.float_info.max
EPS = np.finfo(np.float64).eps
TINY = np.finfo(np.float64).smallest_subnormal
OPTIONS = [
    dict(baseline="mean", std="none"),
    dict(baseline="mean", std="population"),
    dict(baseline="mean", std="sample", epsilon=1e-4),
    dict(baseline="mean", std="sample", std_scope="batch", epsilon=1e-4),
    dict(baseline="leave_one_out", std="none"),
]
_CTX = decimal.Context(prec=1200, Emax=10**6, Emin=-(10**6))  # every float and their sums exact


def exact_advantages(r, group_size, baseline="mean", std="none", std_scope="group", epsilon=0.0):
    """The advantages in 1200-digit decimal arithmetic (exact inputs), rounded once to float64."""
    with decimal.localcontext(_CTX):
        D = [decimal.Decimal(float(x)) for x in r]  # exact
        eps = decimal.Decimal(epsilon)

        def sigma(v):
            m = sum(v) / len(v)
            return (sum((x - m) * (x - m) for x in v) / (len(v) - (std == "sample"))).sqrt()

        out = []
        for g in range(0, len(D), group_size):
            v = D[g : g + group_size]
            s = sigma(D) if std_scope == "batch" else sigma(v)
            for i, x in enumerate(v):
                others = v[:i] + v[i + 1 :] if baseline == "leave_one_out" else v
                c = x - sum(others) / len(others)
                out.append(float(c) if std == "none" else (0.0 if c == 0 else float(c / (s + eps))))
        return np.array(out)


def _close(got, want, group_size, std):
    """Within a few ulps of the exact value: of the result when σ scales it, else of the largest |r|."""
    if std == "none":
        tol = 16 * group_size * EPS * np.abs(want).max()
    else:
        tol = 64 * group_size * EPS
    np.testing.assert_allclose(got, want, rtol=0, atol=tol)


finite = st.floats(allow_nan=False, allow_infinity=False, width=64)


@pytest.mark.parametrize("opts", OPTIONS)
@given(r=st.lists(finite, min_size=4, max_size=4))
def test_whole_float64_range_matches_the_exact_reference(opts, r):
    r = np.array(r)
    want = exact_advantages(r, 2, **opts)
    assume(np.all(np.isfinite(want)))  # without σ, |r − mean| beyond DBL_MAX is not representable
    got = grpokit.advantages(r, group_size=2, **opts)
    assert np.all(np.isfinite(got))
    _close(got, want, 2, opts["std"])


@given(x=finite, steps=st.lists(st.integers(0, 3), min_size=2, max_size=7))
def test_rewards_a_few_float_steps_apart_sum_to_zero(x, steps):
    r = np.array([x] * len(steps))
    for i, k in enumerate(steps):
        for _ in range(k):
            r[i] = np.nextafter(r[i], np.inf)
    assume(np.all(np.isfinite(r)))
    a = grpokit.advantages(r, group_size=len(r))
    # To the rounding of the values themselves (absolute steps of TINY among subnormals).
    bound = len(r) * (2 * EPS * np.abs(a).max() + TINY)
    assert abs(a.sum()) <= bound
    np.testing.assert_allclose(a, exact_advantages(r, len(r)), rtol=0, atol=2 * bound)


@pytest.mark.parametrize("big", [9e307, DMAX])
@pytest.mark.parametrize("opts", OPTIONS)
def test_rewards_at_the_float64_maximum(big, opts):
    r = np.array([big, -big, big, big, -big, -big, big, -big])
    got = grpokit.advantages(r, group_size=4, **opts)
    want = exact_advantages(r, 4, **opts)  # leave-one-out without σ: −2·big is beyond DBL_MAX
    np.testing.assert_array_equal(np.isfinite(got), np.isfinite(want))
    ok = np.isfinite(want)
    _close(got[ok], want[ok], 4, opts["std"])


def _outcome_cases():
    """Every outcome estimator preset, and the options that reach each of its branches."""
    names = [n for n, (est, _) in grpokit.ESTIMATOR_PRESETS.items() if grpokit.ESTIMATORS[est].kind == "outcome"]
    return names + ["rloo_normalized"]


@pytest.mark.parametrize("name", _outcome_cases())
@pytest.mark.parametrize("big", [9e307, 0.7 * DMAX])
def test_outcome_estimators_never_overflow(name, big):
    # Groups whose every exact intermediate (R − baseline, the batch statistics) is finite; MaxRL
    # divides by the group mean: positive rewards (pass rates), as it assumes.
    r = np.array([big, -big, 0.5 * big, -0.5 * big, big, -big, -0.25 * big, 0.25 * big])
    if name == "skyrl.maxrl":
        r = np.abs(r)
    extra = {"normalize": True} if name == "rloo_normalized" else {}
    est = "trl.rloo" if name == "rloo_normalized" else name
    lengths = np.array([3, 5, 2, 4, 2, 2, 2, 2])
    kw = {"lengths": lengths} if "lengths" in grpokit.ESTIMATORS[grpokit.ESTIMATOR_PRESETS[est][0]].inputs else {}
    got = grpokit.advantages(r, group_size=4, estimator=est, **kw, **extra)
    assert np.all(np.isfinite(got)), got
    # The same rewards scaled down by a power of two give the same advantages (σ-normalised) or the
    # same scaled down (centred only): the scaled arithmetic lost nothing.
    c = 2.0**-1000
    small = grpokit.advantages(r * c, group_size=4, estimator=est, **kw, **extra)
    tol = 1e-9 * np.abs(small).max()
    assert np.allclose(got, small, rtol=1e-9, atol=tol) or np.allclose(got * c, small, rtol=1e-9, atol=tol)
