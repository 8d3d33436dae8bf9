"""token_logprobs(..., sum_sq_probs=True) and linear_token_logprobs: Σ_v π_v² against an fp64 NumPy
reference (softmax, squared, summed), its bounds, and that the default outputs are unchanged."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grpokit
from grpokit import _core

torch = pytest.importorskip("torch")

import test_logprobs  # noqa: E402
from logprobs_reference import rand_logits, ref_forward, ref_sum_sq_probs  # noqa: E402
from torch_batches import linear_head  # noqa: E402

# test_logprobs's vocabularies (around the 16 float32 lanes and the 2048-entry chunk) and a large one.
VOCABS = [*test_logprobs.VOCABS, 151_936]


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_matches_fp64_reference(vocab, dtype):
    rng = np.random.default_rng(vocab)
    n = 3 if vocab > 10_000 else 6
    x = rand_logits(rng, (n, vocab), scale=4.0, dtype=dtype)
    ids = rng.integers(0, vocab, size=n)
    r = grpokit.token_logprobs(x, ids, sum_sq_probs=True)
    want = ref_sum_sq_probs(x)
    assert r.sum_sq_probs.dtype == dtype and r.sum_sq_probs.shape == (n,)
    # float32: positive terms summed in float32 lanes, merged in float64, so a few float32 ulps
    # relative, whatever V; float64: rounding only.
    rtol = 1e-12 if dtype == np.float64 else 4e-6
    np.testing.assert_allclose(r.sum_sq_probs, want, rtol=rtol, atol=0)


@pytest.mark.parametrize("temperature", [0.3, 0.7, 2.5])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_temperature(temperature, dtype):
    rng = np.random.default_rng(7)
    x = rand_logits(rng, (4, 301), dtype=dtype)
    r = grpokit.token_logprobs(x, rng.integers(0, 301, 4), temperature=temperature, sum_sq_probs=True)
    rtol = 1e-12 if dtype == np.float64 else 4e-6
    np.testing.assert_allclose(r.sum_sq_probs, ref_sum_sq_probs(x, temperature), rtol=rtol)


def test_default_outputs_unchanged_and_no_sum_sq_unless_asked():
    rng = np.random.default_rng(1)
    x = rand_logits(rng, (5, 2049), dtype=np.float32)
    ids = rng.integers(0, 2049, 5)
    plain = grpokit.token_logprobs(x, ids, temperature=0.9)
    with_sq = grpokit.token_logprobs(x, ids, temperature=0.9, sum_sq_probs=True)
    assert plain.sum_sq_probs is None
    # The Σπ² instantiation computes logp, entropy and lse exactly as the default one.
    for name in ("logp", "entropy", "lse"):
        np.testing.assert_array_equal(getattr(with_sq, name), getattr(plain, name))
    only = grpokit.token_logprobs(x, ids, temperature=0.9, entropy=False, sum_sq_probs=True)
    assert only.entropy is None
    np.testing.assert_array_equal(only.sum_sq_probs, with_sq.sum_sq_probs)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_logits_and_minus_inf(dtype):
    x = np.array(
        [
            [1e4, -1e4, 0.0, 1e4 - 1.0, -np.inf],
            [-np.inf, -np.inf, 3.0, -np.inf, -np.inf],  # a point mass: Σπ² = 1
            [-1e4, -1e4, -1e4, -1e4, -1e4],  # uniform: Σπ² = 1/V
            [0.0, -np.inf, 1.0, 2.0, -np.inf],
            [1e4, 1e4, -1e4, -np.inf, -1e4],  # two tied at the top: 1/2
        ],
        dtype=dtype,
    )
    ids = np.array([0, 2, 4, 1, 0])
    r = grpokit.token_logprobs(x, ids, sum_sq_probs=True)
    want = ref_sum_sq_probs(x)
    np.testing.assert_allclose(r.sum_sq_probs, want, rtol=1e-6 if dtype == np.float32 else 1e-14)
    assert r.sum_sq_probs[1] == 1.0
    np.testing.assert_allclose(r.sum_sq_probs[[2, 4]], [0.2, 0.5], rtol=1e-7)
    # and the other outputs are the default path's
    plain = grpokit.token_logprobs(x, ids)
    np.testing.assert_array_equal(r.logp, plain.logp)
    np.testing.assert_array_equal(r.entropy, plain.entropy)


def test_tiny_probabilities_do_not_underflow_the_sum():
    # Entries 50..87 below the maximum: squares below float32's smallest normal are dropped, which
    # changes Σπ² by less than e^-87 per entry; the result is still exact to float32 rounding.
    z = np.zeros((1, 4000), np.float32)
    z[0, 1:] = -np.linspace(40.0, 87.0, 3999, dtype=np.float32)
    r = grpokit.token_logprobs(z, [0], sum_sq_probs=True)
    np.testing.assert_allclose(r.sum_sq_probs, ref_sum_sq_probs(z), rtol=1e-7)


@pytest.mark.parametrize("tdtype", ["bfloat16", "float16"])
def test_low_precision_logits(tdtype):
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(4, 3001, generator=gen) * 3).to(getattr(torch, tdtype))
    ids = torch.randint(0, 3001, (4,), generator=gen)
    r = grpokit.token_logprobs(x, ids, temperature=0.9, sum_sq_probs=True)
    assert r.sum_sq_probs.dtype == torch.float32
    # The reference sees the same 16-bit values; only float32 math error remains.
    np.testing.assert_allclose(r.sum_sq_probs.numpy(), ref_sum_sq_probs(x.double().numpy(), 0.9), rtol=4e-6)


def test_row_strided_view_and_3d_shape():
    rng = np.random.default_rng(3)
    base = rand_logits(rng, (3, 6, 517), dtype=np.float32)
    view = base[:, :-1]  # rows at stride 517 with a gap after each sequence
    ids = rng.integers(0, 517, (3, 5))
    r = grpokit.token_logprobs(view, ids, temperature=1.3, sum_sq_probs=True)
    assert r.sum_sq_probs.shape == (3, 5)
    contiguous = grpokit.token_logprobs(np.ascontiguousarray(view), ids, temperature=1.3, sum_sq_probs=True)
    np.testing.assert_array_equal(r.sum_sq_probs, contiguous.sum_sq_probs)
    np.testing.assert_allclose(r.sum_sq_probs, ref_sum_sq_probs(view, 1.3), rtol=4e-6)


def test_backward_ignores_it():
    rng = np.random.default_rng(5)
    x = rand_logits(rng, (4, 40))
    ids = rng.integers(0, 40, 4)
    a, b = rng.standard_normal(4), rng.standard_normal(4)
    r = grpokit.token_logprobs(x, ids, sum_sq_probs=True)
    plain = grpokit.token_logprobs(x, ids)
    np.testing.assert_array_equal(
        grpokit.token_logprobs_backward(x, ids, r, a, b), grpokit.token_logprobs_backward(x, ids, plain, a, b)
    )


@settings(max_examples=40, deadline=None)
@given(
    rows=st.integers(1, 4),
    vocab=st.integers(1, 300),
    scale=st.sampled_from([0.0, 0.1, 3.0, 30.0]),
    temperature=st.floats(0.2, 3.0),
    seed=st.integers(0, 2**16),
)
def test_bounds(rows, vocab, scale, temperature, seed):
    # 1/V ≤ Σπ² ≤ 1, and Σπ² ≥ e^{−H} (Rényi-2 entropy −log Σπ² ≤ Shannon entropy H).
    rng = np.random.default_rng(seed)
    x = rand_logits(rng, (rows, vocab), scale=scale)
    r = grpokit.token_logprobs(x, rng.integers(0, vocab, rows), temperature=temperature, sum_sq_probs=True)
    s = r.sum_sq_probs
    assert np.all(s <= 1.0) and np.all(s >= (1.0 / vocab) * (1 - 1e-12))
    assert np.all(s >= np.exp(-r.entropy) * (1 - 1e-12))


def test_bad_output_buffer():
    x = np.zeros((2, 5), np.float32)
    ids = np.array([0, 1])
    out = [np.empty(2, np.float32) for _ in range(3)]
    with pytest.raises(TypeError, match="sum_sq_probs: expected dtype float32"):
        _core.token_logprobs(x, ids, *out, temperature=1.0, sum_sq_probs=np.empty(2, np.float64))
    with pytest.raises(ValueError, match="sum_sq_probs"):
        _core.token_logprobs(x, ids, *out, temperature=1.0, sum_sq_probs=np.empty(3, np.float32))


# ---- hidden states × weight ----------------------------------------------------------------------


@pytest.mark.parametrize("chunk", [None, 3, 64])
@pytest.mark.parametrize("v", [1, 13, 200])
def test_linear_matches_fp64_reference(chunk, v):
    rng = np.random.default_rng(v)
    hidden = rng.standard_normal((9, 6))
    weight = rng.standard_normal((v, 6)) / np.sqrt(6) * 3
    ids = rng.integers(0, v, 9)
    r = grpokit.linear_token_logprobs(hidden, weight, ids, temperature=0.8, chunk_size=chunk, sum_sq_probs=True)
    np.testing.assert_allclose(r.sum_sq_probs, ref_sum_sq_probs(hidden @ weight.T, 0.8), rtol=1e-12)
    plain = grpokit.linear_token_logprobs(hidden, weight, ids, temperature=0.8, chunk_size=chunk)
    assert plain.sum_sq_probs is None
    np.testing.assert_array_equal(r.logp, plain.logp)
    np.testing.assert_array_equal(r.entropy, plain.entropy)


def test_linear_float32_3d():
    rng = np.random.default_rng(2)
    hidden = rng.standard_normal((2, 7, 8)).astype(np.float32)
    weight = (rng.standard_normal((1001, 8)) * 0.6).astype(np.float32)
    ids = rng.integers(0, 1001, (2, 7))
    r = grpokit.linear_token_logprobs(hidden, weight, ids, chunk_size=100, sum_sq_probs=True)
    assert r.sum_sq_probs.shape == (2, 7) and r.sum_sq_probs.dtype == np.float32
    logits = hidden.astype(np.float64) @ weight.T.astype(np.float64)
    # float32 GEMM (H = 8 terms) shifts each logit by ~1e-6, plus float32 softmax math.
    np.testing.assert_allclose(r.sum_sq_probs, ref_sum_sq_probs(logits), rtol=2e-5)


# ---- GPU: the CPU engine is the oracle ------------------------------------------------------------


@pytest.mark.gpu
@pytest.mark.parametrize("tdtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("vocab", [1, 7, 4097, 151936])
def test_gpu_matches_cpu(tdtype, vocab):
    base, ids, _ = test_logprobs.gpu_case(tdtype, vocab)
    base[1, 1, :: max(vocab // 3, 1)] = 1e4  # extreme logits
    view = base[:, :-1]
    cpu = grpokit.token_logprobs(view, ids, temperature=0.8, sum_sq_probs=True)
    gpu = grpokit.token_logprobs(base.cuda()[:, :-1], ids.cuda(), temperature=0.8, sum_sq_probs=True, check_finite=True)
    # Both float32 math; __expf and the reduction order differ by a few float32 ulps. The 1e4 rows
    # too: both engines scale differences from the raw maximum once (math/logprobs.hpp).
    torch.testing.assert_close(gpu.sum_sq_probs.cpu(), cpu.sum_sq_probs, rtol=2e-5, atol=1e-7)
    torch.testing.assert_close(gpu.entropy.cpu(), cpu.entropy, rtol=1e-5, atol=2e-5)
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(gpu.lse.cpu(), cpu.lse, rtol=2e-5, atol=2e-5)
    plain = grpokit.token_logprobs(base.cuda()[:, :-1], ids.cuda(), temperature=0.8)
    assert plain.sum_sq_probs is None
    torch.testing.assert_close(plain.logp, gpu.logp, rtol=0, atol=0)


@pytest.mark.gpu
def test_gpu_bad_id_row_is_nan():
    x = torch.zeros(2, 10, device="cuda")
    r = grpokit.token_logprobs(x, torch.tensor([0, 10], device="cuda"), sum_sq_probs=True)
    assert torch.isnan(r.sum_sq_probs[1]) and abs(r.sum_sq_probs[0].item() - 0.1) < 1e-7


@pytest.mark.gpu
@pytest.mark.parametrize("tdtype", ["float32", "bfloat16", "float16"])
def test_gpu_linear_matches_cpu(tdtype):
    hd, wd, ids = linear_head(torch.Generator().manual_seed(6), tdtype)
    cpu = grpokit.linear_token_logprobs(hd.float(), wd.float(), ids, chunk_size=300, sum_sq_probs=True)
    gpu = grpokit.linear_token_logprobs(hd.cuda(), wd.cuda(), ids.cuda(), chunk_size=300, sum_sq_probs=True)
    # cuBLAS and Eigen round the logits differently (1e-6 relative), then float32 softmax math.
    torch.testing.assert_close(gpu.sum_sq_probs.cpu(), cpu.sum_sq_probs, rtol=1e-4, atol=1e-6)
    plain = grpokit.linear_token_logprobs(hd.cuda(), wd.cuda(), ids.cuda(), chunk_size=300)
    torch.testing.assert_close(plain.logp, gpu.logp, rtol=0, atol=0)


# ---- into the optimal token baseline (verl's Σπ² consumer) ---------------------------------------


def _otb_batch(seed=0, B=4, T=6, V=50):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(B, T, V)).astype(np.float32) * 2
    ids = rng.integers(0, V, (B, T))
    mask = np.arange(T)[None, :] < np.array([6, 4, 5, 3])[:, None]
    return x, ids, mask, rng.normal(size=B)


@pytest.mark.parametrize("estimator", ["optimal_token_baseline", "verl.tir_optimal_token_baseline"])
def test_optimal_token_baseline_takes_the_result(estimator):
    x, ids, mask, r = _otb_batch()
    res = grpokit.token_logprobs(x, ids, temperature=0.9, sum_sq_probs=True)
    got = grpokit.advantages(r, 2, estimator=estimator, mask=mask, logprobs=res)
    # The same estimator on fp64 reference inputs computed from the definitions.
    logp, _, _ = ref_forward(x, ids, 0.9)
    want = grpokit.advantages(r, 2, estimator=estimator, mask=mask, logp=logp, sum_pi_squared=ref_sum_sq_probs(x, 0.9))
    # float32 logp and Σπ² (a few ulps) enter the weights 1 − 2π + Σπ².
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    explicit = grpokit.advantages(r, 2, estimator=estimator, mask=mask, logp=res.logp, sum_pi_squared=res.sum_sq_probs)
    np.testing.assert_array_equal(got, explicit)


def test_optimal_token_baseline_takes_the_torch_result():
    x, ids, mask, r = _otb_batch(1)
    xt = torch.from_numpy(x).requires_grad_()
    out = grpokit.torch.token_logprobs(xt, torch.from_numpy(ids), sum_sq_probs=True)
    got = grpokit.advantages(
        torch.from_numpy(r), 2, estimator="optimal_token_baseline", mask=torch.from_numpy(mask), logprobs=out
    )
    res = grpokit.token_logprobs(x, ids, sum_sq_probs=True)
    want = grpokit.advantages(r, 2, estimator="optimal_token_baseline", mask=mask, logprobs=res)
    np.testing.assert_array_equal(got.numpy(), want)


def test_logprobs_option_errors():
    x, ids, mask, r = _otb_batch(2)
    res = grpokit.token_logprobs(x, ids, sum_sq_probs=True)
    with pytest.raises(
        ValueError, match=r"no sum_sq_probs; compute it with token_logprobs\(\.\.\., sum_sq_probs=True\)"
    ):
        grpokit.advantages(r, 2, estimator="optimal_token_baseline", mask=mask, logprobs=grpokit.token_logprobs(x, ids))
    with pytest.raises(ValueError, match="pass either logprobs= or logp=, not both"):
        grpokit.advantages(r, 2, estimator="optimal_token_baseline", mask=mask, logprobs=res, logp=res.logp)
    with pytest.raises(TypeError, match="logprobs: expected the result of grpokit.token_logprobs"):
        grpokit.advantages(r, 2, estimator="optimal_token_baseline", mask=mask, logprobs=res.logp)
    with pytest.raises(TypeError, match="takes no option 'logprobs'"):
        grpokit.advantages(r, 2, estimator="grpo", logprobs=res)
