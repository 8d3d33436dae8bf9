"""The outcome estimators of the newer RL frameworks (issue 22) against fp64 references written from each
framework's own source; neither SkyRL nor AReaL imports here (they need Ray and their trainers), so the
references are the parity check.

- SkyRL maxrl: NovaSky-AI/SkyRL, skyrl/backends/skyrl_train/utils/ppo_utils.py, compute_maxrl_advantage,
  commit a9564572eb8e91076be43c1bd5e4615e3de17265.
- AReaL batch-mean normalisation: inclusionAI/AReaL, areal/utils/data.py, Normalization.__call__ /
  _compute_mean / _compute_std (and NormConfig's defaults in areal/api/cli_args.py), commit
  4aef98d8d818af55b43621aaadba047ae10f4e77.
"""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grpokit as gk


def ref_maxrl(R, ids, eps=1e-6):
    """SkyRL: per prompt index, (r − μ) / (μ + ε); a prompt with one response has μ := 0 (A = r)."""
    A = np.empty(len(R))
    for g in np.unique(ids):
        rows = np.where(ids == g)[0]
        mu = R[rows].mean() if len(rows) > 1 else 0.0
        A[rows] = (R[rows] - mu) / (mu + eps) if len(rows) > 1 else R[rows] - mu
    return A


def ref_areal(x, group_size=None, leave1out=False, std_level="batch", unbiased=True, eps=1e-5):
    """AReaL Normalization(mean_level="batch") of a (B,) reward vector without a mask."""
    n = len(x)
    if leave1out:
        mean = (x.sum() - x) / (n - 1) if n > 1 else np.zeros(n)
    else:
        mean = np.full(n, x.mean())
    centred = x - mean

    def std(sl):
        f = len(x[sl])
        if unbiased:
            return 1.0 if f <= 1 else np.sqrt(np.sum((x[sl] - mean[sl]) ** 2) / (f - 1))
        return 1.0 if f == 0 else np.sqrt(np.sum((x[sl] - mean[sl]) ** 2) / f)

    if std_level is None:
        return centred
    if std_level == "batch":
        s = np.full(n, std(slice(0, n)))
    else:
        s = np.concatenate([np.full(group_size, std(slice(i, i + group_size))) for i in range(0, n, group_size)])
    return centred / (s + eps)


@given(st.integers(2, 6), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_maxrl_matches_skyrl(G, n_groups, seed):
    g = np.random.default_rng(seed)
    R = g.integers(0, 2, size=G * n_groups).astype(np.float64)  # pass/fail rewards, as MaxRL assumes
    R[: G // 2] = g.uniform(0, 1, size=G // 2)
    ids = np.repeat(np.arange(n_groups), G)
    want = ref_maxrl(R, ids)
    np.testing.assert_allclose(gk.advantages(R, G, estimator="skyrl.maxrl"), want, rtol=1e-12, atol=1e-12)
    perm = g.permutation(len(R))
    np.testing.assert_allclose(
        gk.advantages(R[perm], group_ids=ids[perm], estimator="maxrl"), want[perm], rtol=1e-12, atol=1e-12
    )


def test_maxrl_lone_completion_keeps_its_reward_and_nan_is_unscorable():
    R = np.array([0.7, 1.0, 0.0, 1.0, np.nan])
    ids = np.array([0, 1, 1, 1, 2])
    got = gk.advantages(R, group_ids=ids, estimator="maxrl")
    want = ref_maxrl(R[:4], ids[:4])
    np.testing.assert_allclose(got, np.append(want, 0.0), rtol=1e-12)
    assert got[0] == 0.7  # SkyRL: μ := 0 for a prompt with one response


@pytest.mark.parametrize(
    "opts, ref",
    [
        (dict(estimator="areal.batch_mean"), dict()),
        (dict(estimator="areal.batch_mean_no_std"), dict(std_level=None)),
        (dict(estimator="areal.batch_mean_group_std", group_size=4), dict(std_level="group", group_size=4)),
        (dict(estimator="batch_mean", std="population", epsilon=0.0), dict(unbiased=False, eps=0.0)),
        (dict(estimator="batch_mean", baseline="leave_one_out"), dict(leave1out=True)),
        (
            dict(estimator="batch_mean", baseline="leave_one_out", std_scope="group", group_size=2),
            dict(leave1out=True, std_level="group", group_size=2),
        ),
    ],
)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 3e-6)])
def test_batch_mean_matches_areal(opts, ref, dtype, tol):
    x = np.random.default_rng(5).normal(size=12)
    opts = dict(opts)
    got = gk.advantages(x.astype(dtype), opts.pop("group_size", None), **opts)
    assert got.dtype == dtype
    want = ref_areal(x.astype(dtype).astype(np.float64), **ref)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


def test_batch_mean_edge_cases_follow_areal():
    # One value: AReaL's unbiased σ is 1 (a divisor of 0) and its leave-one-out mean 0.
    np.testing.assert_allclose(gk.advantages([2.0], estimator="areal.batch_mean"), [0.0])
    np.testing.assert_allclose(
        gk.advantages([2.0], estimator="batch_mean", baseline="leave_one_out"), [2.0 / (1.0 + 1e-5)]
    )
    # NaN rewards are unscorable: excluded from the batch statistics, advantage 0.
    x = np.array([1.0, np.nan, 0.0, 3.0])
    got = gk.advantages(x, estimator="areal.batch_mean")
    np.testing.assert_allclose(got, np.insert(ref_areal(x[[0, 2, 3]]), 1, 0.0), rtol=1e-12)


def test_batch_mean_group_std_needs_groups_and_options_are_checked():
    with pytest.raises(ValueError, match="group_size"):
        gk.advantages([1.0, 0.0, 2.0, 1.0], estimator="areal.batch_mean_group_std")
    with pytest.raises(ValueError, match="std_scope"):
        gk.advantages([1.0, 0.0], estimator="batch_mean", std_scope="prompt")
    with pytest.raises(ValueError, match="epsilon"):
        gk.advantages([1.0, 0.0], 2, estimator="maxrl", epsilon=-1.0)
    with pytest.raises(TypeError, match="takes no option"):
        gk.advantages([1.0, 0.0], 2, estimator="maxrl", std="sample")


def test_presets_are_in_the_framework_namespaces():
    presets = gk.ESTIMATOR_PRESETS
    assert presets["skyrl.maxrl"][0] == "maxrl"
    assert {presets[n][0] for n in presets if n.startswith("areal.")} == {"batch_mean"}
