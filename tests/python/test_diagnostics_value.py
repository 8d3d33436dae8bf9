"""The surrogate's value is not progress (Prop. 4): worked checks 6 and 17 (docs/diagnostics.md, Tests),
and a reference."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from grpokit import diagnostics as gd

R = np.array([1.0, 0.0, 1.0, 0.0])
L = np.array([12, 30, 8, 50])


def per_token(values, lengths):
    T = int(lengths.max())
    mask = np.arange(T)[None, :] < lengths[:, None]
    return np.where(mask, np.asarray(values, dtype=np.float64)[:, None], 0.0), mask


def test_check_6_case_1_length_normalised_weights_cancel_the_reward():
    A = R - R.mean()
    alpha, mask = per_token((1 / 4) / L, L)  # ω̃ = C/|o_i|, C = 1/G
    dec = gd.loss_decomposition(alpha, A, 4, mask=mask)
    np.testing.assert_allclose(dec.reward_part, 0.0, atol=1e-15)
    np.testing.assert_allclose(dec.omega_sum, 0.25)
    assert "cancels (Case 1)" in str(dec)


def test_check_6_case_2_constant_weights_measure_length():
    A = R - R.mean()
    alpha, mask = per_token(np.full(4, 0.25), L)  # ω̃ = C per token (Dr GRPO)
    dec = gd.loss_decomposition(alpha, A, 4, mask=mask)
    np.testing.assert_allclose(dec.reward_part, -7.5, atol=1e-12)
    np.testing.assert_allclose(dec.loss, 7.5, atol=1e-12)


def test_check_17_reward_part_is_G_cov():
    A = np.array([0.5, -0.5, 0.5, -0.5])
    omega = np.array([3, 7.5, 2, 12.5])
    alpha = omega[:, None]  # one token each, Ω_i = α_i
    dec = gd.loss_decomposition(alpha, A, 4)
    np.testing.assert_allclose(dec.reward_part, -7.5, atol=1e-12)
    np.testing.assert_allclose(dec.covariance_part, -7.5, atol=1e-12)


@given(st.integers(1, 4), st.integers(1, 3), st.integers(1, 6), st.integers(0, 10_000))
def test_decomposition_matches_a_reference(G, groups, T, seed):
    rng = np.random.default_rng(seed)
    B = G * groups
    alpha = rng.random((B, T))
    s = rng.uniform(0.6, 1.4, (B, T))
    reg = rng.random((B, T))
    mask = rng.random((B, T)) > 0.2
    A = rng.normal(size=B)
    beta, lo, hi = 0.04, 0.2, 0.28
    dec = gd.loss_decomposition(alpha, A, G, ratios=s, mask=mask, reg=reg, beta=beta, epsilon=lo, epsilon_high=hi)
    Ab = A[:, None]
    term = np.minimum(s * Ab, np.clip(s, 1 - lo, 1 + hi) * Ab)
    J = np.where(mask, alpha * term - beta * alpha * reg, 0.0).reshape(groups, G, T).sum(axis=(1, 2))
    Om = np.where(mask, alpha, 0).sum(axis=1)
    np.testing.assert_allclose(dec.omega_sum, Om, atol=1e-12)
    np.testing.assert_allclose(dec.reward_part + dec.ratio_part - dec.regulariser_part, J, atol=1e-12)
    np.testing.assert_allclose(dec.reward_part, (A * Om).reshape(groups, G).sum(1), atol=1e-12)
    Ag, Og = A.reshape(groups, G), Om.reshape(groups, G)
    cov = ((Ag - Ag.mean(1, keepdims=True)) * (Og - Og.mean(1, keepdims=True))).sum(1)
    np.testing.assert_allclose(dec.covariance_part, cov, atol=1e-12)
    np.testing.assert_allclose(dec.loss, -J.sum(), atol=1e-12)
    nocl = gd.loss_decomposition(alpha, A, G, ratios=s, mask=mask)
    np.testing.assert_allclose(
        nocl.ratio_part, np.where(mask, alpha * (s - 1) * Ab, 0).reshape(groups, G, T).sum((1, 2)), atol=1e-12
    )


def test_plot_and_errors():
    import matplotlib

    matplotlib.use("Agg")
    dec = gd.loss_decomposition(np.ones((4, 2)), [1.0, -1.0, 0.5, -0.5], 2)
    assert len(dec.plot().axes) == 1
    with pytest.raises(ValueError, match="group_size: the batch of 4 completions is not a whole number of groups of 3"):
        gd.loss_decomposition(np.ones((4, 2)), np.zeros(4), 3)
    with pytest.raises(ValueError, match="ratios: expected shape"):
        gd.loss_decomposition(np.ones((4, 2)), np.zeros(4), 2, ratios=np.ones((4, 3)))
    with pytest.raises(ValueError, match=r"alpha: element \(1, 0\) is nan"):
        gd.loss_decomposition(np.array([[1.0], [np.nan]]), np.zeros(2), 2)
    with pytest.raises(ValueError, match="epsilon: give the lower clip width too"):
        gd.loss_decomposition(np.ones((2, 1)), np.zeros(2), 2, epsilon_high=0.2)
