"""Fuzzing the Python boundary: random shapes, dtypes, strides, NaN/inf, empty arrays.

Every call must end in a correct-looking result or a Python exception of an expected type with a
message that names an argument — never a crash, a hang or a write to an input. The run is bounded
(hypothesis' "ci" profile, derandomised); `HYPOTHESIS_PROFILE=dev pytest -k fuzz` runs longer.
"""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grpokit

EXPECTED = (ValueError, TypeError, NotImplementedError)
DTYPES = [np.float64, np.float32, np.float16, np.int64, np.int32, np.bool_]


@st.composite
def arrays(draw, max_dims=3, max_side=6, dtypes=DTYPES):
    """A NumPy array, possibly a strided or reversed view, possibly with NaN/inf injected."""
    ndim = draw(st.integers(0, max_dims))
    shape = tuple(draw(st.integers(0, max_side)) for _ in range(ndim))
    dtype = draw(st.sampled_from(dtypes))
    step = draw(st.sampled_from([1, 1, 2]))
    base_shape = tuple(s * step for s in shape)
    rng = np.random.default_rng(draw(st.integers(0, 2**16)))
    base = (rng.normal(size=base_shape) * draw(st.sampled_from([0.1, 1.0, 30.0]))).astype(dtype)
    arr = base[tuple(slice(None, None, step) for _ in shape)] if ndim else base
    if arr.size and np.issubdtype(arr.dtype, np.floating) and draw(st.booleans()):
        flat = arr.reshape(-1) if arr.flags.c_contiguous else arr.copy().reshape(-1)
        flat[draw(st.integers(0, flat.size - 1))] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
        arr = flat.reshape(arr.shape)
    return arr


def _snapshot(args):
    return [a.copy() if isinstance(a, np.ndarray) else a for a in args]


def _unchanged(before, after):
    for b, a in zip(before, after):
        if isinstance(b, np.ndarray):
            assert b.tobytes() == a.tobytes(), "an input array was modified"


def _check_outcome(call, args):
    before = _snapshot(args)
    try:
        result = call(*args)
    except EXPECTED as exc:
        msg = str(exc)
        assert msg and len(msg) > 10, f"uninformative error: {msg!r}"
        result = None
    _unchanged(before, args)
    return result


@given(rewards=arrays(max_dims=2), group_size=st.integers(-1, 5), std=st.sampled_from(["none", "sample", "population"]))
def test_fuzz_advantages(rewards, group_size, std):
    out = _check_outcome(lambda r: grpokit.advantages(r, group_size, std=std), [rewards])
    if out is not None and rewards.ndim == 1 and rewards.dtype.kind == "f":
        assert np.all(np.isfinite(out)), "finite rewards (NaN = unscorable) must give finite advantages"


@given(
    logp=arrays(max_dims=2),
    old=arrays(max_dims=2),
    adv=arrays(max_dims=2),
    mask=arrays(max_dims=2, dtypes=[np.bool_, np.int64, np.float32]),
    spec=st.sampled_from(sorted(grpokit.presets())),
)
def test_fuzz_policy_loss(logp, old, adv, mask, spec):
    _check_outcome(lambda a, b, c, d: grpokit.policy_loss(a, b, c, d, spec=spec), [logp, old, adv, mask])


@given(
    B=st.integers(1, 4),
    T=st.integers(1, 7),
    spec=st.sampled_from(sorted(grpokit.presets())),
    scale=st.sampled_from([1e-3, 0.1, 1.0, 50.0]),
    seed=st.integers(0, 1000),
)
def test_fuzz_policy_loss_valid_inputs_give_finite_results(B, T, spec, scale, seed):
    """Well-formed inputs, extreme log-ratios (±50): a finite loss and gradient or a documented error."""
    rng = np.random.default_rng(seed)
    logp = -np.abs(rng.normal(size=(B, T)))
    old = logp + scale * rng.normal(size=(B, T))
    adv = rng.normal(size=B)
    mask = rng.random((B, T)) < 0.8
    mask[:, 0] = True
    extra = {}
    info = grpokit.presets()[spec]["defaults"]
    if info.get("beta", 0) and info.get("kl", "none") != "none":
        extra["ref_logp"] = logp + rng.normal(size=(B, T)) * 0.1
    if info.get("selection", "none") != "none":
        extra["selection"] = rng.random((B, T)) < 0.3
    try:
        res = grpokit.policy_loss(logp, old, adv, mask, spec=spec, **extra)
    except EXPECTED as exc:
        assert len(str(exc)) > 10
        return
    assert np.isfinite(res.loss), f"{spec}: non-finite loss"
    assert np.all(np.isfinite(res.grad_logp)), f"{spec}: non-finite gradient"


@given(
    logits=arrays(max_dims=3),
    ids=arrays(max_dims=2, dtypes=[np.int64, np.int32, np.float32]),
    temperature=st.sampled_from([1.0, 0.5, 0.0, -1.0]),
)
def test_fuzz_token_logprobs(logits, ids, temperature):
    if ids.dtype.kind == "i" and logits.ndim:
        ids = np.abs(ids) % max(logits.shape[-1], 1)
    _check_outcome(lambda a, b: grpokit.token_logprobs(a, b, temperature=temperature), [logits, ids])


@given(
    a=arrays(max_dims=2),
    b=arrays(max_dims=2),
    m=arrays(max_dims=2, dtypes=[np.bool_, np.float32]),
    level=st.sampled_from(["token", "sequence"]),
    mode=st.sampled_from(["truncate", "mask"]),
)
def test_fuzz_importance_weights(a, b, m, level, mode):
    _check_outcome(lambda x, y, z: grpokit.importance_weights(x, y, z, level=level, mode=mode), [a, b, m])


def test_int32_overflowing_logits_via_zero_stride_view():
    """A (N, V) logits view with N·V > 2^31 elements (zero row stride, no multi-GB buffer)."""
    V = 1 << 20
    row = np.linspace(-3.0, 3.0, V, dtype=np.float32)
    N = (1 << 11) + 1  # N·V = 2^31 + 2^20
    logits = np.broadcast_to(row, (N, V))
    ids = np.arange(N, dtype=np.int64) * 997 % V
    try:
        res = grpokit.token_logprobs(logits, ids, entropy=False)
    except EXPECTED as exc:  # a clear refusal is acceptable; silent wrap-around is not
        pytest.skip(f"refused: {exc}")
    want = row.astype(np.float64)[ids] - np.log(np.sum(np.exp(row.astype(np.float64))))
    np.testing.assert_allclose(res.logp, want, rtol=1e-4, atol=1e-4)


@given(
    rewards=arrays(max_dims=2),
    group_size=st.integers(0, 4),
    estimator=st.sampled_from(sorted(grpokit.ESTIMATORS)),
    mask=arrays(max_dims=2, dtypes=[np.bool_, np.float32]),
)
def test_fuzz_estimators(rewards, group_size, estimator, mask):
    info = grpokit.ESTIMATORS[estimator]
    kwargs = {"mask": mask} if "mask" in info.inputs else {}
    _check_outcome(lambda r: grpokit.advantages(r, group_size or None, estimator=estimator, **kwargs), [rewards])


@given(
    ids=arrays(max_dims=2, dtypes=[np.int64, np.int32, np.float64]),
    adv=arrays(max_dims=1),
    omega=arrays(max_dims=2),
    group_size=st.integers(0, 4),
)
def test_fuzz_prefix_bias(ids, adv, omega, group_size):
    if ids.dtype.kind == "i":
        ids = np.abs(ids) % 5
    _check_outcome(
        lambda a, b, c: grpokit.diagnostics.prefix_bias_from_weights(a, b, c, group_size=group_size), [ids, adv, omega]
    )


@given(ratios=arrays(max_dims=2), adv=arrays(max_dims=2), eps=st.sampled_from([0.2, 0.0, -0.1, float("nan")]))
def test_fuzz_clip_region(ratios, adv, eps):
    _check_outcome(lambda r, a: grpokit.diagnostics.clip_region(r, a, epsilon=eps), [ratios, adv])


@given(
    rewards=arrays(max_dims=1, max_side=5),
    pi_ref=arrays(max_dims=1, max_side=5),
    beta=st.sampled_from([0.5, 0.0, -1.0, float("inf"), 1e-3]),
    G=st.sampled_from([2, 3, 8, 1, 0, float("inf")]),
)
@settings(max_examples=40)
def test_fuzz_stationary(rewards, pi_ref, beta, G):
    def call(r, p):
        try:
            return grpokit.stationary.solve(r, p, beta, G)
        except grpokit.stationary.ConvergenceError as exc:  # a documented, flagged outcome
            assert "converge" in str(exc).lower()
            return None

    out = _check_outcome(call, [rewards, pi_ref])
    if out is not None:
        pi = np.asarray(out.pi)
        assert np.all(pi >= 0) and abs(pi.sum() - 1.0) < 1e-9


@given(hidden=arrays(max_dims=2), weight=arrays(max_dims=2), ids=arrays(max_dims=1, dtypes=[np.int64, np.float32]))
def test_fuzz_linear_token_logprobs(hidden, weight, ids):
    if ids.dtype.kind == "i" and weight.ndim:
        ids = np.abs(ids) % max(weight.shape[0], 1)
    _check_outcome(lambda h, w, i: grpokit.linear_token_logprobs(h, w, i), [hidden, weight, ids])


@given(logits=arrays(max_dims=2, max_side=5), grad=arrays(max_dims=1, max_side=5), inplace=st.booleans())
def test_fuzz_token_logprobs_backward(logits, grad, inplace):
    ids = np.zeros(logits.shape[:-1], np.int64) if logits.ndim >= 1 else np.zeros((), np.int64)
    try:
        saved = grpokit.token_logprobs(logits, ids)
    except EXPECTED:
        return
    target = logits.copy() if inplace else logits  # in-place writes only the caller's opted-in buffer
    _check_outcome(
        lambda lg, g: grpokit.token_logprobs_backward(target, ids, saved, g, inplace_grad=inplace), [logits, grad]
    )


@given(
    a=arrays(max_dims=2),
    b=arrays(max_dims=2),
    m=arrays(max_dims=2, dtypes=[np.bool_, np.float32]),
    crit=st.sampled_from(["token_k1", "token_k3", "seq_sum_k2", "seq_mean_k3", "seq_max_k2", "bogus"]),
    thr=st.sampled_from([1.0, 0.5, -1.0, float("nan")]),
)
def test_fuzz_rejection_mask(a, b, m, crit, thr):
    _check_outcome(lambda x, y, z: grpokit.rejection_mask(x, y, z, crit, thr), [a, b, m])
