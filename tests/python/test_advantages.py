"""grpokit.advantages against an fp64 reference, its properties, bad input and the tensor boundary."""

import sys

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grpokit
import reference

OPTIONS = [
    dict(baseline="mean", std="none"),
    dict(baseline="mean", std="population"),
    dict(baseline="mean", std="sample", epsilon=1e-4),
    dict(baseline="mean", std="sample", std_scope="batch", epsilon=1e-4),
    dict(baseline="mean", std="population", std_scope="batch"),
    dict(baseline="leave_one_out", std="none"),
    dict(baseline="leave_one_out", std="sample", epsilon=1e-6),
]


def test_readme_example():
    out = grpokit.advantages([1.0, 0.0, 1.0, 1.0], group_size=2)
    np.testing.assert_array_equal(out, [0.5, -0.5, 0.0, 0.0])
    assert out.dtype == np.float64


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("dtype, tol", [(np.float64, 1e-12), (np.float32, 2e-6)])
def test_matches_fp64_reference(opts, dtype, tol):
    rng = np.random.default_rng(7)
    r = rng.normal(size=24).astype(dtype)
    r[5] = np.nan  # an unscorable completion
    got = grpokit.advantages(r, group_size=6, **opts)
    assert got.dtype == dtype
    want = reference.advantages(r.astype(np.float64), group_size=6, **opts)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol)


@pytest.mark.parametrize("opts", OPTIONS)
def test_explicit_group_ids_match_contiguous_groups(opts):
    rng = np.random.default_rng(3)
    r = rng.normal(size=12)
    perm = rng.permutation(12)
    ids = (np.arange(12) // 4)[perm]
    got = grpokit.advantages(r[perm], group_ids=ids, **opts)
    want = grpokit.advantages(r, group_size=4, **opts)[perm]
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


def test_trl_scale_rewards_group_formula():
    # TRL: A = (R − mean_group) / (std_group (Bessel) + 1e-4)
    r = np.array([1.0, 0.0, 0.0, 1.0, 0.5, 0.25, 0.0, 1.0])
    g = r.reshape(2, 4)
    want = ((g - g.mean(1, keepdims=True)) / (g.std(1, ddof=1, keepdims=True) + 1e-4)).ravel()
    got = grpokit.advantages(r, group_size=4, std="sample", epsilon=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-12)


@pytest.mark.parametrize("value", [0.1, 1.0 / 3.0, 7.123456789, -2.5e-7])
@pytest.mark.parametrize("opts", OPTIONS)
def test_all_equal_groups_give_exact_zero(value, opts):
    r = np.full(9, value)
    np.testing.assert_array_equal(grpokit.advantages(r, group_size=3, **opts), np.zeros(9))
    np.testing.assert_array_equal(grpokit.advantages(r.astype(np.float32), group_size=3, **opts), 0)


def test_nan_rewards_are_unscorable():
    r = np.array([1.0, np.nan, 0.0, np.nan, np.nan, np.nan])
    got = grpokit.advantages(r, group_size=3, std="sample")
    assert np.all(np.isfinite(got))
    # valid rewards (1, 0): mean 0.5, sample std sqrt(0.5); the all-NaN group gets zeros
    np.testing.assert_allclose(got, [np.sqrt(0.5), 0, -np.sqrt(0.5), 0, 0, 0], rtol=1e-12)


group_rewards = st.lists(st.floats(min_value=-1e3, max_value=1e3, allow_nan=False, width=64), min_size=2, max_size=8)


@given(groups=st.lists(group_rewards, min_size=1, max_size=5).filter(lambda gs: len({len(g) for g in gs}) == 1))
def test_centred_advantages_sum_to_zero_per_group(groups):
    G = len(groups[0])
    r = np.array([x for g in groups for x in g])
    a = grpokit.advantages(r, group_size=G).reshape(-1, G)
    scale = np.abs(r).max() + 1.0
    np.testing.assert_allclose(a.sum(axis=1), 0.0, atol=1e-12 * scale * G)


@given(
    r=st.lists(st.floats(min_value=-100, max_value=100, allow_nan=False), min_size=4, max_size=4),
    phi=st.floats(min_value=1e-3, max_value=1e3),
)
def test_reward_scale(r, phi):
    r = np.array(r)
    centred = grpokit.advantages(r, group_size=4)
    np.testing.assert_allclose(
        grpokit.advantages(phi * r, group_size=4), phi * centred, rtol=1e-9, atol=1e-9 * phi * (np.abs(r).max() + 1)
    )
    normed = grpokit.advantages(r, group_size=4, std="population")
    scaled = grpokit.advantages(phi * r, group_size=4, std="population")
    # σ-normalised advantages do not depend on a positive reward scale (epsilon = 0).
    np.testing.assert_allclose(scaled, normed, rtol=1e-7, atol=1e-7)


@given(r=st.lists(st.floats(min_value=-10, max_value=10, allow_nan=False), min_size=3, max_size=3))
def test_leave_one_out_excludes_the_row_itself(r):
    a = grpokit.advantages(np.array(r), group_size=3, baseline="leave_one_out")
    for i in range(3):
        others = [r[j] for j in range(3) if j != i]
        assert a[i] == pytest.approx(r[i] - np.mean(others), abs=1e-9)


# ---- bad input ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda: grpokit.advantages([1.0, 2.0, 3.0], group_size=2), ValueError, "whole number of groups"),
        (lambda: grpokit.advantages([1.0, 2.0], group_size=1, std="sample"), ValueError, "at least 2"),
        (lambda: grpokit.advantages([1.0, 2.0], group_size=1, baseline="leave_one_out"), ValueError, "at least 2"),
        (
            lambda: grpokit.advantages([1.0, 2.0, 5.0], group_ids=[0, 0, 1], std="population"),
            ValueError,
            "single completion",
        ),
        (lambda: grpokit.advantages([1.0, np.inf], group_size=2), ValueError, "finite"),
        (lambda: grpokit.advantages(np.ones((2, 2, 2)), group_size=2), ValueError, "rewards: expected a 1-D"),
        (lambda: grpokit.advantages(np.ones(4, np.float16), group_size=2), TypeError, "rewards: expected dtype"),
        (lambda: grpokit.advantages([], group_size=2), ValueError, "empty"),
        (lambda: grpokit.advantages([1.0, 2.0], group_ids=[0, 0, 1]), ValueError, "group_ids: expected shape"),
        (lambda: grpokit.advantages([1.0, 2.0], group_ids=[0.5, 1.5]), TypeError, "group_ids: expected int64"),
        (lambda: grpokit.advantages([1.0, 2.0], group_size=2, std="bessel"), ValueError, "std: expected one of"),
        (lambda: grpokit.advantages([1.0, 2.0], group_size=2, baseline="median"), ValueError, "baseline"),
        (lambda: grpokit.advantages([1.0, 2.0], group_size=2, std_scope="global"), ValueError, "std_scope"),
        (lambda: grpokit.advantages([1.0, 2.0], group_size=2, epsilon=-1.0), ValueError, "epsilon"),
        (lambda: grpokit.advantages([1.0, 2.0], group_size=0), ValueError, "group_size"),
        (lambda: grpokit.advantages([1.0, 2.0]), ValueError, "group_size"),
        (lambda: grpokit.advantages([1.0, 2.0], group_size=2.5), TypeError, "group_size"),
        (lambda: grpokit.advantages(["a", "b"], group_size=2), TypeError, "rewards"),
        (lambda: grpokit.advantages({"a": 1}, group_size=2), TypeError, "rewards"),
    ],
)
def test_bad_input_errors(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_inputs_are_not_modified_and_strided_views_work():
    base = np.arange(16, dtype=np.float64)
    view = base[::2]  # stride 2, not contiguous
    before = base.copy()
    got = grpokit.advantages(view, group_size=4, std="population")
    np.testing.assert_array_equal(base, before)
    np.testing.assert_allclose(got, reference.advantages(view.copy(), group_size=4, std="population"))


def test_read_only_input_is_accepted():
    r = np.array([1.0, 0.0, 0.5, 0.5])
    r.setflags(write=False)
    np.testing.assert_array_equal(grpokit.advantages(r, group_size=2), [0.5, -0.5, 0.0, 0.0])


def test_integer_rewards_become_float64():
    out = grpokit.advantages(np.array([3, 0, 0]), group_size=3)
    assert out.dtype == np.float64
    np.testing.assert_allclose(out, [2.0, -1.0, -1.0])


# ---- the tensor boundary --------------------------------------------------------------------


def test_torch_round_trip():
    torch = pytest.importorskip("torch")
    r = torch.tensor([1.0, 0.0, 1.0, 1.0], requires_grad=True)
    out = grpokit.advantages(r, group_size=2, std="sample", epsilon=1e-4)
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float32 and out.device.type == "cpu"
    want = reference.advantages([1.0, 0.0, 1.0, 1.0], group_size=2, std="sample", epsilon=1e-4)
    np.testing.assert_allclose(out.numpy(), want, rtol=1e-6)
    assert r.grad is None and r.requires_grad  # the caller's tensor is untouched
    ids = torch.tensor([0, 0, 1, 1], dtype=torch.int32)
    np.testing.assert_allclose(grpokit.advantages(r.detach().double(), group_ids=ids).numpy(), [0.5, -0.5, 0, 0])


def test_torch_strided_view_is_read_without_copy():
    torch = pytest.importorskip("torch")
    x = torch.arange(24, dtype=torch.float64).reshape(6, 4)
    col = x[:, 1]  # stride 4
    out = grpokit.advantages(col, group_size=3)
    np.testing.assert_allclose(out.numpy(), reference.advantages(col.numpy().copy(), group_size=3))


def test_jax_round_trip():
    jnp = pytest.importorskip("jax.numpy")
    out = grpokit.advantages(jnp.asarray([1.0, 0.0, 1.0, 1.0]), group_size=2)
    assert type(out).__module__.startswith("jax")
    np.testing.assert_allclose(np.asarray(out), [0.5, -0.5, 0.0, 0.0])


class _CountingProducer:
    """A DLPack producer that counts how often its capsule is made."""

    def __init__(self, arr, capsule_factory=None):
        self.arr = arr
        self.shape = arr.shape
        self.dtype = arr.dtype
        self.calls = 0
        self.capsule_factory = capsule_factory

    def __dlpack_device__(self):
        return self.arr.__dlpack_device__()

    def __dlpack__(self, **kwargs):
        self.calls += 1
        if self.capsule_factory is not None:
            return self.capsule_factory()
        return self.arr.__dlpack__(**kwargs)


def test_dlpack_capsule_consumed_once_and_deleter_called_once():
    arr = np.array([1.0, 0.0, 1.0, 1.0])
    producer = _CountingProducer(arr)
    before = sys.getrefcount(arr)
    for _ in range(200):
        np.testing.assert_array_equal(grpokit.advantages(producer, group_size=2), [0.5, -0.5, 0, 0])
    # Each capsule holds a reference to arr until its deleter runs: an unchanged count means every
    # deleter ran exactly once (never would leak, twice would free arr's owner early).
    assert sys.getrefcount(arr) == before
    assert producer.calls == 200


def test_used_or_bogus_capsules_are_refused():
    arr = np.array([1.0, 0.0])
    used = arr.__dlpack__()
    np.from_dlpack(_CountingProducer(arr, lambda: used))  # NumPy consumes it: renamed "used_dltensor"
    with pytest.raises(ValueError, match="unused DLPack capsule"):
        grpokit.advantages(_CountingProducer(arr, lambda: used), group_size=2)
    with pytest.raises(ValueError, match="unused DLPack capsule"):
        grpokit.advantages(_CountingProducer(arr, lambda: "not a capsule"), group_size=2)


def test_objects_without_dlpack_are_refused():
    class Fake:
        shape = (2,)

    with pytest.raises(TypeError, match="rewards: expected a NumPy array"):
        grpokit.advantages(Fake(), group_size=2)


def test_bare_dlpack_producers_are_read_through_numpy():
    out = grpokit.advantages(DLPackOnly(np.array([2.0, 0.0])), group_size=2)
    np.testing.assert_array_equal(out, [1.0, -1.0])


# ---- hand-made DLPack producers -------------------------------------------------------------

from dlpack_fakes import DLPackOnly, FakeProducer  # noqa: E402


@pytest.mark.parametrize("versioned", [True, False])
def test_fake_producer_deleter_called_exactly_once(versioned):
    arr = np.array([1.0, 0.0, 1.0, 1.0])
    p = FakeProducer(arr, versioned=versioned)
    for _ in range(5):
        np.testing.assert_array_equal(grpokit.advantages(p, group_size=2), [0.5, -0.5, 0, 0])
    assert p.made == 5 and p.deleted == 5


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(null_data=True), "null data pointer"),
        (dict(shape=(-4,)), "negative"),
        (dict(ndim=5, shape=(1, 1, 1, 1, 4), strides=(4, 4, 4, 4, 1)), "at most 4 dimensions"),
        (dict(dtype_code=5, dtype_bits=128), "unsupported dtype"),
        (dict(lanes=4), "vector dtypes"),
        (dict(device_type=7), "device type 7"),
        (dict(major=2), "major version 2"),
        (dict(name=b"not_a_dltensor"), "unused DLPack capsule"),
    ],
)
def test_lying_producers_are_refused(kwargs, match):
    arr = np.array([1.0, 0.0, 1.0, 1.0])
    p = FakeProducer(arr, **kwargs)
    with pytest.raises((ValueError, TypeError), match=match):
        grpokit.advantages(p, group_size=2)
    # A capsule that was taken over is always released; a refused newer-major capsule stays the producer's.
    assert p.deleted == (0 if kwargs.get("major", 1) > 1 or "name" in kwargs else p.made)


def test_read_only_flag_is_respected_for_inputs():
    arr = np.array([1.0, 0.0])
    p = FakeProducer(arr, read_only=True)
    np.testing.assert_array_equal(grpokit.advantages(p, group_size=2), [0.5, -0.5])
    assert p.deleted == 1
