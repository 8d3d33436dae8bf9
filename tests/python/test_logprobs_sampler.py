"""Log-probabilities under the sampler's distribution (top-k / top-p / min-p after the temperature)
against the independent float64 reference in logprobs_reference.py (sort-based, from the semantics
written in docs/logprobs.md)."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grpokit
from logprobs_reference import ref_sampler_backward, ref_sampler_forward, ref_sampler_keep


def check(x, ids, t=1.0, conv="vllm", entropy="full", tol=2e-5, **kw):
    """Engine vs reference for one call; rows whose nucleus boundary lies within float32 rounding of
    p are compared only where both agree on the kept set."""
    r = grpokit.token_logprobs(x, ids, temperature=t, sampler=conv, entropy=entropy, **kw)
    keep, margin = ref_sampler_keep(x, t, convention=conv, **kw)
    engine_keep = np.asarray(x, np.float64) >= np.asarray(r.keep_min, np.float64)[..., None]
    clear = margin > (1e-9 if x.dtype == np.float64 else 1e-4)
    np.testing.assert_array_equal(engine_keep[clear], keep[clear])
    keep = np.where(clear[..., None], keep, engine_keep)  # boundary rows: the engine's own set
    logp, h_kept, h_full, mass = ref_sampler_forward(x, ids, keep, t)
    out = np.isneginf(logp)
    np.testing.assert_array_equal(np.isneginf(r.logp), out)
    assert r.num_outside == int(out.sum())
    np.testing.assert_allclose(np.asarray(r.logp)[~out], logp[~out], atol=tol, rtol=tol)
    np.testing.assert_allclose(r.entropy, h_kept if entropy == "sampler" else h_full, atol=tol, rtol=tol)
    np.testing.assert_allclose(r.kept_logmass, mass, atol=tol, rtol=tol)
    assert r.entropy_over == entropy
    return r, keep


def rows_with_ties(rng, n=6, v=40):
    x = rng.integers(-3, 4, (n, v)).astype(np.float32)  # many exact ties, at k-th value and boundary
    x[0] = 0.0  # a uniform row
    x[1, :] = -np.inf
    x[1, 3] = 1.0  # a one-hot row
    return x


@pytest.mark.parametrize("conv", ["vllm", "sglang"])
@pytest.mark.parametrize(
    "kw",
    [
        {"top_k": 1},
        {"top_k": 5},
        {"top_k": 40},
        {"top_k": 1000},
        {"top_k": 0},
        {"top_p": 1.0},
        {"top_p": 0.5},
        {"top_p": 0.9},
        {"top_p": 1e-9},
        {"min_p": 0.1},
        {"min_p": 1.0},
        {"min_p": 0.0},
        {"top_k": 7, "top_p": 0.8, "min_p": 0.05},
    ],
)
def test_ties_and_edge_values(conv, kw):
    rng = np.random.default_rng(1)
    x = rows_with_ties(rng)
    ids = rng.integers(0, 40, 6)
    ids[1] = 3
    r, keep = check(x, ids, conv=conv, **kw)
    assert keep.any(-1).all()  # at least one token is always kept
    if kw.get("top_k", 0) in (0, 40, 1000) and kw.get("top_p", 1.0) == 1.0 and kw.get("min_p", 0.0) == 0.0:
        full = grpokit.token_logprobs(x, ids)  # every filter off: the untruncated result
        np.testing.assert_array_equal(r.logp, full.logp)


def test_ties_at_kth_value_are_kept():
    x = np.array([[3.0, 2.0, 2.0, 2.0, 1.0]], np.float32)
    r = grpokit.token_logprobs(x, [3], top_k=2)
    assert r.keep_min[0] == 2.0 and r.num_outside == 0
    np.testing.assert_allclose(r.logp, np.log(np.exp(2) / (np.exp(3) + 3 * np.exp(2))), rtol=1e-6)


def test_nucleus_boundary_conventions():
    # p = (0.5, 0.25, 0.25): with top_p = 0.5 vLLM keeps only the first (mass above the second
    # is 0.5, not < 0.5), SGLang keeps all three (0.5 ≤ 0.5).
    x = np.log(np.array([[0.5, 0.25, 0.25]]))
    assert grpokit.token_logprobs(x, [1], top_p=0.5).num_outside == 1
    assert grpokit.token_logprobs(x, [1], top_p=0.5, sampler="sglang").num_outside == 0
    # vLLM's top-p sees the distribution after top-k: (0.5, 0.25) renormalised is (2/3, 1/3).
    x = np.log(np.array([[0.5, 0.25, 0.15, 0.1]]))
    assert grpokit.token_logprobs(x, [1], top_k=2, top_p=0.6).num_outside == 1
    assert grpokit.token_logprobs(x, [1], top_k=2, top_p=0.6, sampler="sglang").num_outside == 0


@pytest.mark.parametrize("t", [1e-3, 0.05, 0.7, 1.0, 2.5])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_random_rows_and_temperatures(t, dtype):
    rng = np.random.default_rng(int(t * 1000) + dtype().itemsize)
    v = 3000  # more than one 2048-entry chunk
    x = (rng.standard_normal((5, v)) * 3).astype(dtype)
    ids = rng.integers(0, v, 5)
    ids[0] = int(np.argmax(x[0]))
    tol = 2e-5 if dtype == np.float32 else 1e-10
    kw = {"top_k": np.array([0, 1, 50, 3000, 20]), "top_p": np.array([0.95, 1.0, 0.3, 0.7, 0.99]), "min_p": 0.01}
    for entropy in ("full", "sampler"):
        check(x, ids, t, entropy=entropy, tol=tol, **kw)
        check(x, ids, t, conv="sglang", entropy=entropy, tol=tol, **kw)


@pytest.mark.parametrize("conv", ["vllm", "sglang"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_long_rows_bounds_and_fallbacks(conv, dtype):
    # Rows long enough for the group-maxima bounds (V ≥ 1024): peaky rows (a small nucleus, bounded),
    # flat rows (a nucleus beyond the group maxima: the whole row is the candidate set), ties at the
    # boundary, k on both sides of the 256 group maxima, each filter alone and together.
    rng = np.random.default_rng(21 + dtype().itemsize)
    v = 5000
    scale = np.array([0.05, 1.0, 3.0, 8.0, 30.0, 3.0, 1.0, 8.0])[:, None]
    x = rng.standard_normal((8, v)) * scale
    x[5] = np.round(x[5])  # many ties, at the k-th value and at the nucleus boundary
    x[6, ::7] = -np.inf
    x = x.astype(dtype)
    ids = rng.integers(0, v, 8)
    ids[::2] = np.argmax(x[::2], -1)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    ks = np.array([1, 50, 256, 257, 1000, 30, 5, 200])
    ps = np.array([0.9, 0.5, 0.99, 0.95, 0.3, 0.8, 1e-6, 0.999])
    for kw in [
        {"top_p": ps},
        {"top_p": 0.9},
        {"top_k": ks},
        {"min_p": 0.05},
        {"top_k": ks, "top_p": ps},
        {"top_k": ks, "top_p": ps, "min_p": 1e-3},
        {"top_p": ps, "min_p": 0.2},
    ]:
        check(x, ids, 0.7 if dtype == np.float32 else 1.3, conv=conv, entropy="sampler", tol=tol, **kw)


def test_top_k_bound_from_folded_group_maxima():
    # V = 20000: 2048 group maxima, folded to 8·k..16·k coarser groups (at least 256) for the k bound;
    # ties (rounded values) at the k-th value, and k on both sides of every fold
    rng = np.random.default_rng(5)
    v = 20000
    x = np.round(rng.standard_normal((6, v)) * np.array([3.0, 3.0, 0.3, 8.0, 3.0, 1.0])[:, None], 1)
    x = x.astype(np.float32)
    ids = rng.integers(0, v, 6)
    ids[::2] = np.argmax(x[::2], -1)
    ks = np.array([1, 16, 17, 50, 64, 129])
    for kw in [{"top_k": ks}, {"top_k": ks, "top_p": 0.9}]:
        check(x, ids, 0.7, conv="vllm", entropy="sampler", tol=2e-5, **kw)


@settings(max_examples=40, deadline=None)
@given(
    seed=st.integers(0, 2**31),
    v=st.integers(1, 300),
    t=st.sampled_from([0.01, 0.5, 1.0, 3.0]),
    k=st.integers(-1, 310),
    p=st.floats(1e-6, 1.0),
    mp=st.sampled_from([0.0, 1e-4, 0.2, 0.9]),
    conv=st.sampled_from(["vllm", "sglang"]),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
)
def test_hypothesis_random(seed, v, t, k, p, mp, conv, scale):
    rng = np.random.default_rng(seed)
    x = np.round(rng.standard_normal((3, v)) * scale, 1)  # rounding makes ties likely
    ids = rng.integers(0, v, 3)
    check(x, ids, t, conv=conv, tol=1e-9, top_k=k, top_p=p, min_p=mp)


@pytest.mark.parametrize("entropy", ["full", "sampler"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_gradient_against_reference(entropy, dtype):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 300)) * 2).astype(dtype)
    ids = rng.integers(0, 300, 6)
    ids[:3] = np.argmax(x[:3], -1)
    kw = {"top_k": 30, "top_p": 0.8, "min_p": 0.02}
    r, keep = check(x, ids, 0.7, entropy=entropy, tol=2e-5 if dtype == np.float32 else 1e-10, **kw)
    a, b = rng.standard_normal(6), rng.standard_normal(6)
    g = grpokit.token_logprobs_backward(x, ids, r, a.astype(dtype), b.astype(dtype))
    want = ref_sampler_backward(x, ids, keep, a, b, 0.7, entropy)
    np.testing.assert_allclose(g, want, atol=1e-5 if dtype == np.float32 else 1e-12)
    # in place: the same numbers in the logits' buffer
    y = x.copy()
    g2 = grpokit.token_logprobs_backward(y, ids, r, a.astype(dtype), b.astype(dtype), inplace_grad=True)
    np.testing.assert_array_equal(g2, g)


@pytest.mark.parametrize("entropy", ["full", "sampler"])
def test_gradient_finite_differences(entropy):
    rng = np.random.default_rng(9)
    x = rng.standard_normal((4, 50)) * 2
    ids = np.argsort(-x, -1)[:, 2]  # kept for every row
    kw = {"top_k": 10, "top_p": 0.9}
    a, b = rng.standard_normal(4), rng.standard_normal(4)

    def loss(z):
        r = grpokit.token_logprobs(z, ids, temperature=0.8, entropy=entropy, **kw)
        return float(np.sum(a * r.logp + b * r.entropy))

    r = grpokit.token_logprobs(x, ids, temperature=0.8, entropy=entropy, **kw)
    g = grpokit.token_logprobs_backward(x, ids, r, a, b)
    eps = 1e-6
    for i, j in [(0, 0), (1, int(ids[1])), (2, int(np.argmax(x[2]))), (3, int(np.argmin(x[3])))]:
        e = np.zeros_like(x)
        e[i, j] = eps
        fd = (loss(x + e) - loss(x - e)) / (2 * eps)
        np.testing.assert_allclose(g[i, j], fd, rtol=1e-6, atol=1e-8)


def test_outside_tokens_are_counted_not_raised():
    x = np.array([[5.0, 1.0, 0.0, -1.0], [0.0, 0.0, 0.0, 0.0]], np.float32)
    r = grpokit.token_logprobs(x, [3, 2], top_k=1)
    assert np.isneginf(r.logp[0]) and r.num_outside == 1  # row 1 is all ties: all kept
    g = grpokit.token_logprobs_backward(x, [3, 2], r, np.ones(2, np.float32), None)
    assert np.all(g[0] == 0)  # no gradient through a −inf log-probability


def test_bad_parameters_name_the_argument():
    x = np.zeros((2, 4), np.float32)
    for kw, msg in [
        ({"top_p": 0.0}, "top_p: row 0 holds 0"),
        ({"top_p": [0.5, 1.5]}, "top_p: row 1 holds 1.5"),
        ({"min_p": -0.1}, "min_p: row 0"),
        ({"min_p": float("nan")}, "min_p: row 0 holds nan"),
        ({"top_k": 2.5}, "top_k: expected integers"),
        ({"top_k": [1, 2, 3]}, "top_k: expected a scalar or shape (2,)"),
        ({"top_k": 2, "sampler": "hf"}, 'sampler: expected "vllm" or "sglang"'),
        ({"top_k": 2, "sum_sq_probs": True}, "sum_sq_probs: not available"),
        ({"entropy": "kept"}, "entropy: expected True, False"),
    ]:
        with pytest.raises(ValueError, match=None) as e:
            grpokit.token_logprobs(x, [0, 1], **kw)
        assert msg in str(e.value), (kw, str(e.value))
    with pytest.raises(TypeError, match="top_p"):
        grpokit.token_logprobs(x, [0, 1], top_p="high")


def test_16bit_and_3d_and_strided_inputs():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(2)
    x = torch.from_numpy(rng.standard_normal((2, 5, 65)).astype(np.float32)).to(torch.bfloat16)
    ids = torch.from_numpy(rng.integers(0, 64, (2, 4)))
    view = x[:, :-1]  # row-strided, read in place
    r = grpokit.token_logprobs(view, ids, top_k=8, top_p=0.9, temperature=0.6)
    xf = view.float().numpy()
    keep, _ = ref_sampler_keep(xf, 0.6, top_k=8, top_p=0.9)
    logp, _, _, _ = ref_sampler_forward(xf, ids.numpy(), keep, 0.6)
    fin = np.isfinite(logp)
    np.testing.assert_array_equal(np.isfinite(r.logp.numpy()), fin)
    np.testing.assert_allclose(r.logp.numpy()[fin], logp[fin], atol=2e-5)


# ---- from hidden states: linear_token_logprobs with truncation ------------------------------------


@pytest.mark.parametrize("entropy", ["full", "sampler"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_linear_matches_logits_path(entropy, dtype, monkeypatch):
    rng = np.random.default_rng(11)
    # small integers × multiples of 1/8: the GEMM is exact in any order, so x is the engine's logits
    h = rng.integers(-3, 4, (2, 5, 16)).astype(dtype)
    w = (rng.integers(-4, 5, (70, 16)) / 8).astype(dtype)
    ids = rng.integers(0, 70, (2, 5))
    x = (h.astype(np.float64) @ w.T.astype(np.float64)).astype(dtype)
    ids[0] = np.argmax(x[0], -1)
    kw = {"top_k": np.array([[5, 0, 70, 3, 20]] * 2), "top_p": 0.8, "min_p": 0.01}
    r = grpokit.linear_token_logprobs(h, w, ids, temperature=0.9, entropy=entropy, **kw)
    keep, margin = ref_sampler_keep(x, 0.9, **kw)
    clear = margin > 1e-4
    engine_keep = x >= np.asarray(r.keep_min)[..., None]
    np.testing.assert_array_equal(engine_keep[clear], keep[clear])
    logp, h_kept, h_full, _ = ref_sampler_forward(x, ids, engine_keep, 0.9)
    fin = np.isfinite(logp)
    tol = 2e-5 if dtype == np.float32 else 1e-10
    np.testing.assert_array_equal(np.isfinite(r.logp), fin)
    assert r.num_outside == int((~fin).sum())
    np.testing.assert_allclose(r.logp[fin], logp[fin], atol=tol)
    np.testing.assert_allclose(r.entropy, h_kept if entropy == "sampler" else h_full, atol=tol)
    a, b = rng.standard_normal((2, 5)), rng.standard_normal((2, 5))
    gh, gw = grpokit.linear_token_logprobs_backward(h, w, ids, r, a.astype(dtype), b.astype(dtype))
    gx = ref_sampler_backward(x, ids, engine_keep, a, b, 0.9, entropy)
    np.testing.assert_allclose(gh, gx @ w.astype(np.float64), atol=tol * 10)
    np.testing.assert_allclose(gw, np.einsum("btv,bth->vh", gx, h.astype(np.float64)), atol=tol * 10)


def test_linear_blocks_of_whole_rows():
    # V large enough that a tile of whole rows holds fewer rows than N (2^24 / V = 64 rows)
    rng = np.random.default_rng(12)
    v, n = 1 << 18, 70
    w = np.zeros((v, 2), np.float32)
    w[:, 0] = rng.standard_normal(v).astype(np.float32)
    h = np.stack([np.ones(n), rng.standard_normal(n)], -1).astype(np.float32)
    h[:, 1] = 0.0
    ids = rng.integers(0, v, n)
    r = grpokit.linear_token_logprobs(h, w, ids, top_k=1000, top_p=0.9)
    x = np.ascontiguousarray(w[:, 0])[None]
    r1 = grpokit.token_logprobs(x, ids[:1], top_k=1000, top_p=0.9)
    assert np.all(r.keep_min == r1.keep_min[0])
    assert r.num_outside == int(np.sum(w[ids, 0] < r1.keep_min[0]))
