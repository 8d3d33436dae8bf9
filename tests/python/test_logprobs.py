"""token_logprobs / token_logprobs_backward: fp64 references, finite differences, torch and TRL parity,
extreme values, layouts, in-place gradients and bad input."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grpokit

torch = pytest.importorskip("torch")

from logprobs_reference import rand_logits, ref_backward, ref_forward  # noqa: E402

# ---- forward against the reference ---------------------------------------------------------------

VOCABS = [1, 2, 7, 15, 16, 17, 31, 33, 2047, 2048, 2049, 5003]


@pytest.mark.parametrize("vocab", VOCABS)
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_matches_reference(vocab, dtype):
    rng = np.random.default_rng(vocab)
    x = rand_logits(rng, (5, vocab), dtype=dtype)
    ids = rng.integers(0, vocab, size=5)
    r = grpokit.token_logprobs(x, ids)
    logp, h, lse = ref_forward(x, ids)
    # float64 math: a few ulps of the row's magnitude; float32 math: float32 rounding of logits of
    # size ~10 plus a float32 exp (about 1 ulp) summed into a float64 accumulator.
    tol = 1e-12 if dtype == np.float64 else 2e-5
    assert r.logp.dtype == dtype and r.entropy.dtype == dtype and r.lse.dtype == dtype
    np.testing.assert_allclose(r.logp, logp, rtol=tol, atol=tol)
    np.testing.assert_allclose(r.entropy, h, rtol=tol, atol=tol)
    np.testing.assert_allclose(r.lse, lse, rtol=tol, atol=tol)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature(temperature):
    rng = np.random.default_rng(1)
    x = rand_logits(rng, (2, 3, 101))
    ids = rng.integers(0, 101, size=(2, 3))
    r = grpokit.token_logprobs(x, ids, temperature=temperature)
    logp, h, lse = ref_forward(x, ids, temperature)
    np.testing.assert_allclose(r.logp, logp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.entropy, h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.lse, lse, rtol=1e-12, atol=1e-12)


def test_entropy_false_and_3d_shapes():
    rng = np.random.default_rng(2)
    x = rand_logits(rng, (2, 4, 9), dtype=np.float32)
    ids = rng.integers(0, 9, size=(2, 4)).astype(np.int32)
    r = grpokit.token_logprobs(x, ids, entropy=False)
    assert r.entropy is None and r.logp.shape == (2, 4) and r.lse.shape == (2, 4)
    np.testing.assert_allclose(r.logp, ref_forward(x, ids)[0], rtol=2e-5, atol=2e-5)


@pytest.mark.parametrize("n, vocab", [(3, 1), (3, 3), (4, 17), (4, 1000), (3, 32001), (2, 151936), (1, 262144)])
def test_matches_torch_log_softmax_gather_and_entropy(n, vocab):
    gen = torch.Generator().manual_seed(vocab)
    x = torch.randn(n, vocab, generator=gen) * 4
    ids = torch.randint(0, vocab, (n,), generator=gen)
    r = grpokit.token_logprobs(x, ids)
    assert isinstance(r.logp, torch.Tensor) and r.logp.dtype == torch.float32
    xd = x.double()
    want_logp = torch.log_softmax(xd, -1).gather(-1, ids[:, None])[:, 0]
    p = torch.softmax(xd, -1)
    want_h = -(p * torch.log_softmax(xd, -1)).sum(-1)
    # float32 logits of magnitude ~16: absolute rounding of z is ~1e-6; the float64 accumulation
    # keeps V = 262,144 at that level.
    torch.testing.assert_close(r.logp.double(), want_logp, rtol=0, atol=5e-5)
    torch.testing.assert_close(r.entropy.double(), want_h, rtol=0, atol=5e-5)


def test_matches_trl_selective_log_softmax_and_entropy():
    utils = pytest.importorskip("trl.trainer.utils")
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(3, 5, 257, generator=gen) * 3
    ids = torch.randint(0, 257, (3, 5), generator=gen)
    r = grpokit.token_logprobs(x, ids, temperature=0.7)
    torch.testing.assert_close(r.logp, utils.selective_log_softmax(x, ids, temperature=0.7), rtol=0, atol=2e-5)
    torch.testing.assert_close(r.entropy, utils.entropy_from_logits(x / 0.7), rtol=0, atol=2e-5)


@pytest.mark.parametrize("tdtype", ["bfloat16", "float16"])
def test_low_precision_logits_use_float32_math(tdtype):
    gen = torch.Generator().manual_seed(4)
    x = (torch.randn(4, 3001, generator=gen) * 3).to(getattr(torch, tdtype))
    ids = torch.randint(0, 3001, (4,), generator=gen)
    r = grpokit.token_logprobs(x, ids, temperature=0.9)
    assert r.logp.dtype == torch.float32
    # The reference sees the same (exactly representable) 16-bit values, so only float32 math error
    # remains.
    logp, h, lse = ref_forward(x.double().numpy(), ids.numpy(), 0.9)
    np.testing.assert_allclose(r.logp.numpy(), logp, rtol=0, atol=2e-5)
    np.testing.assert_allclose(r.entropy.numpy(), h, rtol=0, atol=2e-5)
    np.testing.assert_allclose(r.lse.numpy(), lse, rtol=0, atol=2e-5)


# ---- extreme values -------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_extreme_logits_and_minus_inf_entries(dtype):
    x = np.array(
        [
            [1e4, -1e4, 0.0, 1e4 - 1.0, -np.inf],
            [-np.inf, -np.inf, 3.0, -np.inf, -np.inf],  # one finite entry: a point mass
            [-1e4, -1e4, -1e4, -1e4, -1e4],
            [0.0, -np.inf, 1.0, 2.0, -np.inf],
        ],
        dtype=dtype,
    )
    ids = np.array([0, 2, 4, 1])
    r = grpokit.token_logprobs(x, ids)
    logp, h, lse = ref_forward(x, ids)
    assert not np.isnan(r.logp).any() and not np.isnan(r.entropy).any()
    np.testing.assert_allclose(r.logp[:3], logp[:3], rtol=1e-6, atol=1e-6)
    assert r.logp[3] == -np.inf  # a token of probability 0
    np.testing.assert_allclose(r.entropy, h, rtol=1e-6, atol=1e-6)
    assert r.entropy[1] == 0.0 and r.logp[1] == 0.0
    np.testing.assert_allclose(r.lse, lse, rtol=1e-6)

    a = np.array([1.0, -2.0, 0.5, 0.0])
    b = np.array([0.3, 1.0, -1.0, 2.0])
    g = grpokit.token_logprobs_backward(x, ids, r, a.astype(dtype), b.astype(dtype))
    assert np.isfinite(g).all()
    assert (g[np.isneginf(x)] == 0).all()  # −inf logits get exactly zero gradient
    # float32: the saved lse ≈ 1e4 carries float32's absolute rounding ulp(1e4)/2 ≈ 5e-4 into
    # p = exp(z − lse), the same as the logits' own rounding at that magnitude.
    tol = 1e-9 if dtype == np.float64 else 2e-3
    np.testing.assert_allclose(g, ref_backward(x, ids, a, b), rtol=tol, atol=tol)


# ---- backward -------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [1, 5, 16, 33, 2049])
@pytest.mark.parametrize("temperature", [1.0, 0.6])
def test_backward_matches_reference_fp64(vocab, temperature):
    rng = np.random.default_rng(vocab)
    x = rand_logits(rng, (2, 3, vocab))
    ids = rng.integers(0, vocab, size=(2, 3))
    a, b = rng.standard_normal((2, 3)), rng.standard_normal((2, 3))
    r = grpokit.token_logprobs(x, ids, temperature=temperature)
    g = grpokit.token_logprobs_backward(x, ids, r, a, b)
    assert g.dtype == np.float64 and g.shape == x.shape
    np.testing.assert_allclose(g, ref_backward(x, ids, a, b, temperature), rtol=1e-10, atol=1e-12)


def test_backward_finite_differences():
    rng = np.random.default_rng(5)
    x = rand_logits(rng, (3, 11), scale=2.0)
    ids = rng.integers(0, 11, size=3)
    a, b = rng.standard_normal(3), rng.standard_normal(3)
    temperature = 0.8

    def loss(xx):
        r = grpokit.token_logprobs(xx, ids, temperature=temperature)
        return float((a * r.logp).sum() + (b * r.entropy).sum())

    g = grpokit.token_logprobs_backward(x, ids, grpokit.token_logprobs(x, ids, temperature=temperature), a, b)
    eps = 1e-6
    fd = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        xp, xm = x.copy(), x.copy()
        xp[i] += eps
        xm[i] -= eps
        fd[i] = (loss(xp) - loss(xm)) / (2 * eps)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_backward_matches_torch_autograd_float32():
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(4, 6, 333, generator=gen) * 2
    ids = torch.randint(0, 333, (4, 6), generator=gen)
    a, b = torch.randn(4, 6, generator=gen), torch.randn(4, 6, generator=gen)
    r = grpokit.token_logprobs(x, ids, temperature=1.3)
    g = grpokit.token_logprobs_backward(x, ids, r, a, b)
    xd = x.double().requires_grad_()
    logps = torch.log_softmax(xd / 1.3, -1)
    h = -(logps.exp() * logps).sum(-1)
    ((logps.gather(-1, ids[..., None])[..., 0] * a).sum() + (h * b).sum()).backward()
    torch.testing.assert_close(g.double(), xd.grad, rtol=0, atol=2e-6)


def test_backward_optional_upstreams_and_zero_rows():
    rng = np.random.default_rng(7)
    x = rand_logits(rng, (4, 40), dtype=np.float32)
    ids = rng.integers(0, 40, size=4)
    a = np.array([1.0, 0.0, -0.5, 0.0], np.float32)
    r = grpokit.token_logprobs(x, ids, entropy=False)
    g = grpokit.token_logprobs_backward(x, ids, r, grad_logp=a)
    np.testing.assert_allclose(g, ref_backward(x, ids, a, np.zeros(4)), rtol=1e-5, atol=1e-7)
    assert (g[1] == 0).all() and (g[3] == 0).all()
    g0 = grpokit.token_logprobs_backward(x, ids, r)
    assert (g0 == 0).all()
    with pytest.raises(ValueError, match="entropy=True"):
        grpokit.token_logprobs_backward(x, ids, r, a, np.ones(4, np.float32))


@pytest.mark.parametrize("tdtype", ["bfloat16", "float16"])
def test_backward_low_precision(tdtype):
    gen = torch.Generator().manual_seed(8)
    x = (torch.randn(3, 777, generator=gen) * 2).to(getattr(torch, tdtype))
    ids = torch.randint(0, 777, (3,), generator=gen)
    a, b = torch.randn(3, generator=gen), torch.randn(3, generator=gen)
    r = grpokit.token_logprobs(x, ids)
    g = grpokit.token_logprobs_backward(x, ids, r, a, b)
    assert g.dtype == x.dtype
    want = ref_backward(x.double().numpy(), ids.numpy(), a.numpy(), b.numpy())
    # One rounding to the 16-bit type at the end: relative 2^-8 (bf16) / 2^-11 (f16) of each entry.
    rel = 2.0**-8 if tdtype == "bfloat16" else 2.0**-11
    np.testing.assert_allclose(g.double().numpy(), want, rtol=rel, atol=1e-6)


# ---- layouts, in-place, inputs untouched ----------------------------------------------------------


def test_row_strided_view_is_read_in_place():
    gen = torch.Generator().manual_seed(9)
    base = torch.randn(2, 6, 50, generator=gen)
    view = base[:, :-1]  # logits for tokens 1..T of a (B, T+1, V) model output
    assert not view.is_contiguous()
    ids = torch.randint(0, 50, (2, 5), generator=gen)
    ids_view = torch.randint(0, 50, (5, 2), generator=gen).t()  # strided ids
    r = grpokit.token_logprobs(view, ids_view)
    want = grpokit.token_logprobs(view.contiguous(), ids_view.contiguous())
    torch.testing.assert_close(r.logp, want.logp, rtol=0, atol=0)
    torch.testing.assert_close(r.entropy, want.entropy, rtol=0, atol=0)

    a = torch.randn(2, 5, generator=gen)
    g = grpokit.token_logprobs_backward(view, ids, grpokit.token_logprobs(view, ids), a)
    assert g.shape == view.shape
    # In place into the view: the base's buffer receives it, the dropped last position is untouched.
    last = base[:, -1].clone()
    g2 = grpokit.token_logprobs_backward(view, ids, grpokit.token_logprobs(view, ids), a, inplace_grad=True)
    assert g2.data_ptr() == view.data_ptr()
    torch.testing.assert_close(base[:, :-1], g, rtol=0, atol=0)
    torch.testing.assert_close(base[:, -1], last, rtol=0, atol=0)


def test_inputs_are_not_modified():
    rng = np.random.default_rng(10)
    x = rand_logits(rng, (3, 20), dtype=np.float32)
    ids = rng.integers(0, 20, size=3)
    x0, ids0 = x.copy(), ids.copy()
    r = grpokit.token_logprobs(x, ids)
    a, b = np.ones(3, np.float32), np.ones(3, np.float32)
    grpokit.token_logprobs_backward(x, ids, r, a, b)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(ids, ids0)


def test_inplace_grad_equals_out_of_place_and_refuses_read_only():
    rng = np.random.default_rng(11)
    x = rand_logits(rng, (3, 70), dtype=np.float32)
    ids = rng.integers(0, 70, size=3)
    a, b = rng.standard_normal(3).astype(np.float32), rng.standard_normal(3).astype(np.float32)
    r = grpokit.token_logprobs(x, ids)
    g = grpokit.token_logprobs_backward(x, ids, r, a, b)
    g2 = grpokit.token_logprobs_backward(x, ids, r, a, b, inplace_grad=True)
    assert g2 is x
    np.testing.assert_array_equal(x, g)
    y = rand_logits(rng, (3, 70), dtype=np.float32)
    y.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        grpokit.token_logprobs_backward(y, ids, grpokit.token_logprobs(y, ids), a, inplace_grad=True)


def test_out_buffer_is_filled_and_checked():
    rng = np.random.default_rng(12)
    x = rand_logits(rng, (3, 30), dtype=np.float32)
    ids = rng.integers(0, 30, size=3)
    a = rng.standard_normal(3).astype(np.float32)
    r = grpokit.token_logprobs(x, ids)
    buf = np.full((3, 30), np.nan, np.float32)
    g = grpokit.token_logprobs_backward(x, ids, r, a, out=buf)
    assert g is buf
    np.testing.assert_array_equal(buf, grpokit.token_logprobs_backward(x, ids, r, a))
    with pytest.raises(ValueError, match=r"grad_logits: expected shape \(3, 30\)"):
        grpokit.token_logprobs_backward(x, ids, r, a, out=np.empty((3, 31), np.float32))
    with pytest.raises(TypeError, match="grad_logits: expected dtype float32, got float64"):
        grpokit.token_logprobs_backward(x, ids, r, a, out=np.empty((3, 30)))
    with pytest.raises(ValueError, match="either out= or inplace_grad"):
        grpokit.token_logprobs_backward(x, ids, r, a, out=buf, inplace_grad=True)


class _JaxLike:
    """Stands in for a JAX array (grpokit recognises JAX by the type's module): immutable."""

    __module__ = "jaxlib.xla_extension"

    def __init__(self, a):
        self._a = a
        self.shape, self.dtype = a.shape, a.dtype

    def __dlpack__(self, **kwargs):
        return self._a.__dlpack__(**kwargs)

    def __dlpack_device__(self):
        return self._a.__dlpack_device__()


def test_inplace_grad_refuses_jax_arrays():
    x = np.random.default_rng(13).standard_normal((2, 6)).astype(np.float32)
    ids = np.array([1, 2])
    r = grpokit.token_logprobs(x, ids)
    with pytest.raises(ValueError, match="JAX arrays are immutable"):
        grpokit.token_logprobs_backward(_JaxLike(x), ids, r, np.ones(2, np.float32), inplace_grad=True)


# ---- properties -----------------------------------------------------------------------------------


@given(
    rows=st.integers(1, 4),
    vocab=st.integers(1, 300),
    scale=st.floats(0.01, 30.0),
    temperature=st.floats(0.2, 5.0),
    seed=st.integers(0, 2**31 - 1),
)
def test_properties(rows, vocab, scale, temperature, seed):
    rng = np.random.default_rng(seed)
    x = rand_logits(rng, (rows, vocab), scale=scale, dtype=np.float32)
    ids = rng.integers(0, vocab, size=rows)
    r = grpokit.token_logprobs(x, ids, temperature=temperature)
    assert (r.logp <= 1e-6).all()
    assert (r.entropy >= 0).all() and (r.entropy <= np.log(vocab) + 1e-5).all()
    # Probabilities of every token of a row sum to 1 (each row repeated once per token).
    if vocab <= 64:
        every = grpokit.token_logprobs(np.repeat(x, vocab, 0), np.tile(np.arange(vocab), rows), temperature=temperature)
        np.testing.assert_allclose(np.exp(every.logp.astype(np.float64)).reshape(rows, vocab).sum(1), 1.0, rtol=1e-5)
    # Softmax is shift invariant, so every gradient row sums to 0.
    a, b = rng.standard_normal(rows), rng.standard_normal(rows)
    g = grpokit.token_logprobs_backward(x, ids, r, a.astype(np.float32), b.astype(np.float32))
    scale_g = np.abs(a).max() + np.abs(b).max() * (1 + np.abs(x).max() / temperature)
    np.testing.assert_allclose(g.astype(np.float64).sum(1), 0.0, atol=1e-5 * scale_g * max(1, vocab / 100))


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_inputs():
    x = np.zeros((3, 10), np.float32)
    ids = np.array([0, 1, 2])
    with pytest.raises(ValueError, match=r"row 1 holds 10, outside the vocabulary \[0, 10\)"):
        grpokit.token_logprobs(x, [0, 10, 2])
    with pytest.raises(ValueError, match="row 0 holds -1"):
        grpokit.token_logprobs(x, [-1, 0, 2])
    with pytest.raises(ValueError, match=r"token_ids: expected shape \(3,\)"):
        grpokit.token_logprobs(x, [0, 1])
    with pytest.raises(TypeError, match="token_ids: expected dtype int32, int64, got float32"):
        grpokit.token_logprobs(x, np.zeros(3, np.float32))
    with pytest.raises(TypeError, match="logits: expected dtype"):
        grpokit.token_logprobs(np.zeros((3, 10), np.int32), ids)
    with pytest.raises(ValueError, match=r"logits: expected a \(N, V\) or \(B, T, V\) array"):
        grpokit.token_logprobs(np.zeros(10, np.float32), 0)
    with pytest.raises(ValueError, match="vocabulary dimension is empty"):
        grpokit.token_logprobs(np.zeros((3, 0), np.float32), ids)
    with pytest.raises(ValueError, match="stride 1"):
        grpokit.token_logprobs(np.zeros((10, 3), np.float32).T, ids)
    for t in (0.0, -1.0, float("inf"), float("nan")):
        with pytest.raises(ValueError, match="temperature: expected a finite value > 0"):
            grpokit.token_logprobs(x, ids, temperature=t)
    bad = x.copy()
    bad[2, 3] = np.nan
    with pytest.raises(ValueError, match="logits: row 2 contains NaN or \\+inf"):
        grpokit.token_logprobs(bad, ids)
    bad[2, 3] = np.inf
    with pytest.raises(ValueError, match="logits: row 2 contains NaN or \\+inf"):
        grpokit.token_logprobs(bad, ids)
    bad[1] = -np.inf
    with pytest.raises(ValueError, match="logits: row 1 has no finite value"):
        grpokit.token_logprobs(bad, ids)

    r = grpokit.token_logprobs(x, ids)
    with pytest.raises(TypeError, match="saved: expected the TokenLogprobs"):
        grpokit.token_logprobs_backward(x, ids, r.lse)
    with pytest.raises(ValueError, match=r"grad_logp: expected shape \(3,\)"):
        grpokit.token_logprobs_backward(x, ids, r, np.ones(4, np.float32))
    with pytest.raises(TypeError, match="grad_logp: expected dtype float32, float64, got int64"):
        grpokit.token_logprobs_backward(x, ids, r, np.ones(3, np.int64))
    with pytest.raises(ValueError, match=r"lse: expected shape \(2,\)"):
        grpokit.token_logprobs_backward(x[:2], ids[:2], r, np.ones(2, np.float32))
    with pytest.raises(TypeError, match="lse: expected dtype float64"):
        grpokit.token_logprobs_backward(x.astype(np.float64), ids, r, np.ones(3))


def test_engine_refuses_partially_overlapping_grad():
    from grpokit import _core

    x = np.random.default_rng(0).standard_normal((4, 8)).astype(np.float32)
    ids = np.zeros(3, np.int64)
    r = grpokit.token_logprobs(x[:3], ids)
    with pytest.raises(ValueError, match="overlaps logits"):
        _core.token_logprobs_backward(x[:3], ids, r.lse, None, np.ones(3, np.float32), None, x[1:], 1.0)


# ---- GPU: the CPU engine is the oracle ------------------------------------------------------------


def gpu_case(tdtype, vocab):
    """The GPU comparisons' inputs: logits (3, 5, vocab) in `tdtype` with −inf entries, ids (3, 4), and
    the generator for more."""
    gen = torch.Generator().manual_seed(vocab)
    base = (torch.randn(3, 5, vocab, generator=gen) * 4).to(getattr(torch, tdtype))
    base[0, 0, : min(3, vocab - 1)] = -float("inf")
    ids = torch.randint(0, vocab, (3, 4), generator=gen)
    return base, ids, gen


@pytest.mark.gpu
@pytest.mark.parametrize("tdtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("vocab", [1, 7, 4097, 151936])
def test_gpu_matches_cpu(tdtype, vocab):
    base, ids, gen = gpu_case(tdtype, vocab)
    a, b = torch.randn(3, 4, generator=gen), torch.randn(3, 4, generator=gen)
    view = base[:, :-1]
    cpu = grpokit.token_logprobs(view, ids, temperature=0.8)
    gcpu = grpokit.token_logprobs_backward(view, ids, cpu, a, b)
    dev = base.cuda()[:, :-1]
    gpu = grpokit.token_logprobs(dev, ids.cuda(), temperature=0.8, check_finite=True)
    ggpu = grpokit.token_logprobs_backward(dev, ids.cuda(), gpu, a.cuda(), b.cuda())
    # Both float32 math; the GPU's __expf and reduction order differ by a few float32 ulps.
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gpu.entropy.cpu(), cpu.entropy, rtol=1e-5, atol=1e-4)
    torch.testing.assert_close(gpu.lse.cpu(), cpu.lse, rtol=1e-5, atol=1e-4)
    tol = {"float32": 1e-5, "bfloat16": 2.0**-7, "float16": 2.0**-10}[tdtype]
    torch.testing.assert_close(ggpu.cpu().double(), gcpu.double(), rtol=tol, atol=1e-6)
    # In place on the GPU equals out of place.
    g_in = grpokit.token_logprobs_backward(dev, ids.cuda(), gpu, a.cuda(), b.cuda(), inplace_grad=True)
    torch.testing.assert_close(g_in, ggpu, rtol=0, atol=0)


@pytest.mark.gpu
def test_gpu_bad_ids_give_nan_and_check_finite_raises():
    x = torch.zeros(3, 10, device="cuda")
    ids = torch.tensor([0, 10, 2], device="cuda")
    r = grpokit.token_logprobs(x, ids)
    assert torch.isnan(r.logp[1]) and not torch.isnan(r.logp[0])
    with pytest.raises(ValueError, match="outside"):
        grpokit.token_logprobs(x, ids, check_finite=True)
