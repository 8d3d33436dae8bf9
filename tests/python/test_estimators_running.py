"""ROLL's running reward normalisation (issue 22): ``estimator="running"`` / ``roll.running`` against an
fp64 replay of ROLL's own update, written from its source (ROLL does not import here):

- alibaba/ROLL, roll/utils/functionals.py, ``RunningMoments.update`` and ``reward_norm``
  (``norm_mean_type="running"``, ``norm_std_type="running"`` or None), commit
  8eb27cc2dc34c4d1310b169d9b86d339004d811a.

AReaL (inclusionAI/AReaL, areal/utils/data.py, ``Normalization``, commit
4aef98d8d818af55b43621aaadba047ae10f4e77) has no running or EMA form: its mean and std levels are
"batch", "group" or None only.
"""

from fractions import Fraction

import numpy as np
import pytest

import grpokit as gk


class RollReplay:
    """ROLL's RunningMoments in a float dtype of choice (ROLL itself runs it in float32): mean 0, var 1 and
    count 1e-24 at the start; each batch is merged in (Chan's update from the batch's population variance)
    before reward_norm reads mean and the sample std (divisor tot_count − 1)."""

    def __init__(self, dtype=np.float64):
        self.dt = dtype
        self.mean, self.var, self.count, self.std = dtype(0), dtype(1), 1e-24, dtype(1)

    def update(self, xs):
        xs = np.asarray(xs, dtype=np.float64)
        n = xs.size
        xs_mean, xs_var = self.dt(xs.mean()), self.dt(xs.var())
        delta = xs_mean - self.mean
        tot = self.count + n
        new_sum = xs_var * self.dt(n)
        old_sum = self.var * self.dt(self.count) + delta**2 * self.dt(self.count * n / tot)
        self.mean = self.mean + delta * self.dt(n / tot)
        self.var = (old_sum + new_sum) / self.dt(tot)
        self.std = np.sqrt(self.var * self.dt(tot / (tot - 1)))
        self.count = tot

    def norm(self, rewards, with_std=True):
        self.update(rewards)
        r = np.asarray(rewards, dtype=np.float64)
        return (r - self.mean) / (self.std + 1e-6) if with_std else r - self.mean


def _batches(seed=0):
    g = np.random.default_rng(seed)  # different sizes, drifting means and scales, ties (0/1 rewards)
    return [
        g.integers(0, 2, size=16).astype(float),
        g.normal(0.3, 1.0, size=7),
        g.normal(2.0, 0.1, size=32),
        g.integers(0, 2, size=1).astype(float),
        g.normal(-1.0, 3.0, size=12),
    ]


@pytest.mark.parametrize("preset, with_std", [("roll.running", True), ("roll.running_mean", False)])
def test_matches_roll_replay_over_batches(preset, with_std):
    ref, state = RollReplay(), gk.RunningMoments()
    for r in _batches():
        want = ref.norm(r, with_std)
        got = gk.advantages(r, estimator=preset, state=state)  # state: updated in place, as ROLL's
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)
        assert state.count == pytest.approx(ref.count, rel=1e-15)
        assert state.mean == pytest.approx(float(ref.mean), rel=1e-12, abs=1e-15)
        assert state.std**2 == pytest.approx(float(ref.var), rel=1e-12)  # ROLL keeps the variance


def test_float32_roll_agrees_to_float32_rounding():
    ref, state = RollReplay(np.float32), gk.RunningMoments()
    for r in _batches(1):
        want = ref.norm(r.astype(np.float32))
        got = gk.advantages(r.astype(np.float32), estimator="roll.running", state=state)
        assert got.dtype == np.float32
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_state_is_exact_where_sums_of_squares_cancel():
    # rewards 1e9 + k: a one-pass Σx² loses every digit of the variance; the two-pass batch moments and
    # the weighted merge keep it to rounding
    batches = [1e9 + np.arange(k, k + 5, dtype=float) for k in (0, 3, 10)]
    state = gk.RunningMoments()
    for b in batches:
        gk.advantages(b, estimator="running", state=state)
    allv = [Fraction(v) for b in batches for v in b]
    mean = sum(allv) / len(allv)
    var = sum((v - mean) ** 2 for v in allv) / len(allv)
    assert state.count == len(allv)
    assert state.mean == pytest.approx(float(mean), rel=1e-15)
    assert state.std**2 == pytest.approx(float(var), rel=1e-12)


def test_split_and_merge_equal_one_call():
    # data parallel: each rank's batch moments from an empty state, merged (any order) into the prior
    # state, give the state of one call over the whole batch; update=False then normalises each shard
    # with it exactly as that call does
    g = np.random.default_rng(4)
    prior = gk.RunningMoments(count=40, mean=0.2, std=0.7)
    full = g.normal(0.5, 2.0, size=24)
    one = gk.RunningMoments(*prior.as_tuple())
    want = gk.advantages(full, estimator="roll.running", state=one)
    shards = [full[:5], full[5:17], full[17:]]
    parts = [gk.RunningMoments() for _ in shards]
    for s, part in zip(shards, parts):
        gk.advantages(s, estimator="roll.running", state=part)
    for order in ([0, 1, 2], [2, 0, 1]):
        merged = prior
        for k in order:
            merged = merged.merge(parts[k])
        np.testing.assert_allclose(merged.as_tuple(), one.as_tuple(), rtol=1e-13)
    assert prior == gk.RunningMoments(40, 0.2, 0.7)  # merge returns a new state
    got = [gk.advantages(s, estimator="roll.running", state=merged, update=False) for s in shards]
    np.testing.assert_allclose(np.concatenate(got), want, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(merged.as_tuple(), one.as_tuple(), rtol=1e-13)  # update=False: untouched


def test_merge_identity_and_symmetry():
    a, b = gk.RunningMoments(3, 1.0, 2.0), gk.RunningMoments(5, -2.0, 0.5)
    assert a.merge(gk.RunningMoments()) == a and gk.RunningMoments().merge(b) == b
    np.testing.assert_allclose(a.merge(b).as_tuple(), b.merge(a).as_tuple(), rtol=1e-15)
    n, mean = 8, (3 * 1.0 + 5 * -2.0) / 8
    var = (3 * (2.0**2 + (1.0 - mean) ** 2) + 5 * (0.5**2 + (-2.0 - mean) ** 2)) / 8
    np.testing.assert_allclose(a.merge(b).as_tuple(), (n, mean, np.sqrt(var)), rtol=1e-15)
    big = gk.RunningMoments(2, 1e308, 1e307).merge(gk.RunningMoments(2, -1e308, 1e307))  # no overflow
    np.testing.assert_allclose(big.as_tuple(), (4, 0.0, 1e308 * np.sqrt(1.01)), rtol=1e-15)


def test_nan_rewards_are_excluded_and_inputs_unchanged():
    r = np.array([1.0, np.nan, 0.0, 1.0, np.nan])
    state = gk.RunningMoments(4, 0.5, 0.25)
    keep = r.copy()
    got = gk.advantages(r, estimator="roll.running", state=state)
    np.testing.assert_array_equal(r, keep)
    ref = RollReplay()
    ref.mean, ref.var, ref.count = 0.5, 0.25**2, 4.0
    want = ref.norm(r[~np.isnan(r)])
    np.testing.assert_allclose(got[~np.isnan(r)], want, rtol=1e-12)
    assert (got[np.isnan(r)] == 0).all() and state.count == 7
    # without a state: a fresh one each call (nothing is kept); a failed call leaves the state as it was
    np.testing.assert_array_equal(gk.advantages(r, estimator="roll.running"), gk.advantages(r, estimator="running"))
    with pytest.raises(ValueError, match="epsilon"):
        gk.advantages(r, estimator="roll.running", state=state, epsilon=-1.0)
    assert state.count == 7


def test_torch_in_torch_out():
    torch = pytest.importorskip("torch")
    r = torch.tensor([0.0, 1.0, 1.0, 0.5], dtype=torch.float64)
    state, want_state = gk.RunningMoments(2, 0.0, 1.0), gk.RunningMoments(2, 0.0, 1.0)
    got = gk.advantages(r, estimator="roll.running", state=state)
    want = gk.advantages(r.numpy(), estimator="roll.running", state=want_state)
    assert isinstance(got, torch.Tensor) and state == want_state and state.count == 6
    np.testing.assert_array_equal(got.numpy(), want)


@pytest.mark.parametrize(
    "kwargs, err, match",
    [
        ({"state": (1.0, 0.0, 1.0)}, TypeError, "state: expected a grpokit.RunningMoments"),
        ({"update": "yes"}, TypeError, "update: expected a bool"),
        ({"baseline": "leave_one_out"}, TypeError, "takes no option 'baseline'"),
        ({"epsilon": -1.0}, ValueError, "epsilon"),
        ({"return_returns": True}, TypeError, "takes no option 'return_returns'"),
    ],
)
def test_bad_input_names_the_argument(kwargs, err, match):
    with pytest.raises(err, match=match):
        gk.advantages([1.0, 0.0], estimator="running", **kwargs)


@pytest.mark.parametrize(
    "fields, match",
    [((-1, 0, 0), "count >= 0"), ((1, float("nan"), 0), "finite mean"), ((1, 0, -0.5), "finite std >= 0")],
)
def test_bad_state_names_the_field(fields, match):
    with pytest.raises(ValueError, match="state: expected a " + match):
        gk.RunningMoments(*fields)
    with pytest.raises(TypeError, match="state: expected a number for count"):
        gk.RunningMoments("3")


def test_a_state_spoiled_after_construction_is_refused_by_the_engine():
    state = gk.RunningMoments()
    state.std = float("inf")
    with pytest.raises(ValueError, match="state: expected a finite std >= 0, got inf"):
        gk.advantages([1.0, 0.0], estimator="running", state=state)
