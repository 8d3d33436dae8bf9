"""M2PO's selection (math/m2po_select.hpp: a radix selection with exact bin sums, shared by the CPU and
CUDA engines) against the sorting reference (loss_reference._m2po_keep), ties, zeros and a threshold
that no rest passes included; its metric m2po/masked_fraction. AReaL's own semantics and the loss values
are tested in test_loss_vapo_m2po.py."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grpokit
from loss_reference import _m2po_keep


def _kept(lp, old, mask, threshold, **kw):
    """The tokens the engine keeps: −r·A with A ≠ 0 (areal.m2po_paper) has a nonzero gradient exactly there."""
    A = np.ones(lp.shape[0], dtype=lp.dtype)
    r = grpokit.policy_loss(lp, old, A, mask, spec="areal.m2po_paper", m2_threshold=threshold, **kw)
    return np.asarray(r.grad_logp) != 0, r


def _levels_batch(rng, B, T, levels):
    """log r on a few levels (ties everywhere), a random mask with every row non-empty."""
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
    d = rng.choice(levels, size=(B, T)) * rng.choice([-1.0, 1.0], size=(B, T))
    mask = rng.uniform(size=(B, T)) < 0.8
    mask[:, 0] = True
    return lp, lp - d, mask


@settings(max_examples=60, deadline=None)
@given(
    seed=st.integers(0, 2**32 - 1),
    n_levels=st.integers(1, 5),
    threshold=st.sampled_from([0.0, 1e-6, 1e-3, 0.01, 0.05, 0.2, 1.0, 100.0]),
)
def test_ties_and_thresholds_match_the_sorting_reference(seed, n_levels, threshold):
    rng = np.random.default_rng(seed)
    levels = np.concatenate([[0.0], rng.uniform(0.0, 0.6, size=n_levels)])[: n_levels + 1]
    lp, old, mask = _levels_batch(rng, int(rng.integers(1, 6)), int(rng.integers(1, 12)), levels)
    kept, res = _kept(lp, old, mask, threshold)
    want = _m2po_keep(threshold, lp, old, None, mask)
    np.testing.assert_array_equal(kept, want)
    frac = 1.0 - want.sum() / mask.sum()
    assert float(res.metrics["m2po/masked_fraction"]) == pytest.approx(frac, abs=1e-15)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_many_tokens_spread_over_exponents(dtype):
    """40,000 moments over 12 decades (every radix pass refines a crowded bin), the same cut as sorting;
    the answer does not depend on the order of the tokens (exact sums)."""
    rng = np.random.default_rng(7)
    B, T = 40, 1000
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T))).astype(dtype)
    d = (10.0 ** rng.uniform(-6, 0, size=(B, T)) * rng.choice([-1, 1], size=(B, T))).astype(dtype)
    old = (lp - d).astype(dtype)
    mask = rng.uniform(size=(B, T)) < 0.9
    for threshold in (1e-5, 1e-3, 0.02):
        kept, _ = _kept(lp, old, mask, threshold)
        want = _m2po_keep(threshold, lp.astype(np.float64), old.astype(np.float64), None, mask)
        np.testing.assert_array_equal(kept, want)
        assert 0 < want.sum() < mask.sum()
        perm = rng.permutation(B)
        kept_p, _ = _kept(lp[perm], old[perm], mask[perm], threshold)
        np.testing.assert_array_equal(kept_p, kept[perm])


def test_masked_fraction_metric_only_with_m2po():
    rng = np.random.default_rng(3)
    lp, old, mask = _levels_batch(rng, 4, 9, [0.0, 0.1, 0.5])
    res = grpokit.policy_loss(lp, old, np.ones(4), mask, spec="trl.dapo")
    assert "m2po/masked_fraction" not in res.metrics
    kept, res = _kept(lp, old, mask, 1e9)  # every rest passes: nothing dropped
    assert kept.sum() == mask.sum() and float(res.metrics["m2po/masked_fraction"]) == 0.0
    kept, res = _kept(lp, old, mask, 0.0)  # no rest passes: all but the smallest moment (and its ties)
    assert float(res.metrics["m2po/masked_fraction"]) == pytest.approx(1.0 - kept.sum() / mask.sum())
    m2 = (lp - old) ** 2
    assert np.all(m2[kept] == m2[mask].min())
