"""The worked checks (docs/diagnostics.md, Tests) that concern the loss: the
shared-prefix coefficient W_agg = Σ_i ω_i A_i from the returned weights (checks 1–5), the loss value
of Prop. 4 (check 6) and the k3 values (check 14)."""

from __future__ import annotations

import math

import numpy as np
import pytest

import grpokit


def shared_prefix_batch(lengths, seq_log_ratio=None, token_ratio=None):
    """G completions whose first token is shared (same log-prob); padded to max length."""
    G, T = len(lengths), max(lengths)
    mask = np.arange(T)[None, :] < np.asarray(lengths)[:, None]
    lp = np.full((G, T), math.log(0.3))
    old = lp.copy()
    if token_ratio is not None:
        old = lp - math.log(token_ratio)
    if seq_log_ratio is not None:  # the whole sequence log-ratio on the last token of each row
        for i, n in enumerate(lengths):
            old[i, n - 1] -= seq_log_ratio[i]
    return lp, old, mask


def W_agg(res, A):
    return float(np.sum(res.weights[:, 0] * A))


R = np.array([1.0, 1.0, 0.0, 0.0])
LENS = [10, 30, 20, 40]


def test_check_1a_grpo_r1_and_gspo_weights():
    A = grpokit.advantages(R, 4, std="population")  # σ lives in the advantages: A/σ
    lp, old, mask = shared_prefix_batch(LENS)
    for name in ("paper.grpo_r1", "paper.gspo", "paper.gspo_token"):
        res = grpokit.policy_loss(lp, old, A, mask, spec=name, beta=0.0, return_weights=True)
        # α_i = 1/(G|o_i|σ) = (0.05, 0.016667, 0.025, 0.0125) once the 1/σ of A is folded back
        np.testing.assert_allclose(res.weights[:, 0] / 0.5, [0.05, 1 / 60, 0.025, 0.0125], rtol=1e-12)
        assert W_agg(res, A) == pytest.approx(0.01458333, abs=5e-9)


def test_check_1b_grpo_v32():
    A = grpokit.advantages(R, 4)  # centred only
    lp, old, mask = shared_prefix_batch(LENS)
    res = grpokit.policy_loss(lp, old, A, mask, spec="paper.grpo_v32", beta=0.0, return_weights=True)
    assert W_agg(res, A) == pytest.approx(0.00729167, abs=5e-9)


@pytest.mark.parametrize(
    "name,std", [("paper.dr_grpo", "none"), ("paper.dapo", "population"), ("paper.gcpo", "population")]
)
def test_check_1c_uniform_weights_cancel(name, std):
    A = grpokit.advantages(R, 4, std=std)
    lp, old, mask = shared_prefix_batch(LENS)
    res = grpokit.policy_loss(lp, old, A, mask, spec=name, beta=0.0, return_weights=True)
    if name == "paper.dapo":  # α = 1/(σ Σ|o|) = 0.02
        np.testing.assert_allclose(res.weights[:, 0] / 0.5, 0.02, rtol=1e-12)
    assert W_agg(res, A) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("lens,want", [([10, 100], 0.045), ([100, 10], -0.045), ([50, 50], 0.0)])
def test_check_2_sign_set_by_the_shorter_completion(lens, want):
    A = grpokit.advantages([1.0, 0.0], 2, std="population")
    lp, old, mask = shared_prefix_batch(lens)
    res = grpokit.policy_loss(lp, old, A, mask, spec="paper.grpo_r1", beta=0.0, return_weights=True)
    assert W_agg(res, A) == pytest.approx(want, abs=1e-12)


def test_check_3_cppo_pruning_breaks_cancellation():
    r = [1.0, 0.0, 0.0, 0.0]
    A = grpokit.advantages(r, 4, std="population")
    sigma = 0.4330127018922193
    lp, old, mask = shared_prefix_batch([20] * 4)
    # γ = 0.3 on the centred advantages is 0.3/σ on the standardised ones we pass
    res = grpokit.policy_loss(lp, old, A, mask, spec="paper.cppo", gamma=0.3 / sigma, beta=0.0, return_weights=True)
    assert res.weights[0, 0] / sigma == pytest.approx(0.028868, abs=5e-7)
    np.testing.assert_array_equal(res.weights[1:, 0], 0.0)
    assert W_agg(res, A) == pytest.approx(0.02165064, abs=5e-9)
    unpruned = grpokit.policy_loss(lp, old, A, mask, spec="paper.cppo", gamma=None, beta=0.0, return_weights=True)
    assert W_agg(unpruned, A) == pytest.approx(0.0, abs=1e-15)


def test_check_4_gcpo_sequence_ratios():
    A = grpokit.advantages(R, 4, std="population")
    s = np.array([1.10, 1.05, 0.95, 0.90])
    lp, old, mask = shared_prefix_batch(LENS, seq_log_ratio=np.log(s))
    res = grpokit.policy_loss(lp, old, A, mask, spec="paper.gcpo", return_weights=True)
    assert W_agg(res, A) == pytest.approx(0.075, abs=1e-12)


@pytest.mark.parametrize("s,want", [(1.0, 0.0), (1.1, 0.0), (1.3, -0.325), (0.7, 0.175)])
def test_check_5_sign_dependent_clipping(s, want):
    A = grpokit.advantages(R, 4)  # (0.5, 0.5, −0.5, −0.5)
    lp, old, mask = shared_prefix_batch([3, 3, 3, 3], token_ratio=s)
    res = grpokit.policy_loss(lp, old, A, mask, spec="paper.dr_grpo", beta=0.0, return_weights=True)
    assert W_agg(res, A) == pytest.approx(want, abs=1e-12)


def test_check_6_surrogate_value_is_not_progress():
    r = [1.0, 0.0, 1.0, 0.0]
    lens = [12, 30, 8, 50]
    A = grpokit.advantages(r, 4)
    lp, _, mask = shared_prefix_batch(lens)
    # Case 2 (constant weight per token, C = 1/G): J = C Σ A_i |o_i| = −7.5, the loss is −J
    case2 = grpokit.policy_loss(lp, None, A, mask, spec="paper.dr_grpo", beta=0.0)
    assert float(case2.loss) == pytest.approx(7.5, abs=1e-12)
    # Case 1 (C/|o_i|): the reward part cancels exactly
    case1 = grpokit.policy_loss(lp, None, A, mask, spec="paper.grpo_v32", beta=0.0)
    assert float(case1.loss) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("p,want", [(1.0, 0.0), (0.5, 0.193147), (2.0, 0.306853), (0.9, 0.005361)])
def test_check_14_k3_values(p, want):
    lp = np.array([[math.log(0.4)]])
    ref = lp + math.log(p)  # p = π_ref / π_θ
    res = grpokit.policy_loss(lp, None, [0.0], spec="trl.dapo", beta=1.0, ref_logp=ref, return_per_token=True)
    assert float(res.per_token[0, 0]) == pytest.approx(want, abs=5e-7)
