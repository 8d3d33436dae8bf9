"""token_logprobs_kl / token_logprobs_kl_backward (the full-vocabulary KL against a reference): fp64
references, ROLL's own formula, finite differences, properties, extreme values, layouts and bad input.

ROLL's kl_penalty="full" (alibaba/ROLL, roll/utils/functionals.py, compute_approx_kl, commit
8eb27cc2dc34c4d1310b169d9b86d339004d811a):
    F.kl_div(log_probs_base, log_probs, log_target=True, reduction="none").sum(-1)
over full log-softmax rows, i.e. Σ_v p_v (log p_v − log q_v) = KL(π ‖ π_ref) per position."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import grpokit

torch = pytest.importorskip("torch")

from logprobs_reference import rand_logits, ref_backward, ref_forward, ref_kl, ref_kl_backward  # noqa: E402


def pair(seed, shape, dtype=np.float64, scale=3.0, spread=0.5):
    """Policy logits and a nearby reference (as after some training)."""
    rng = np.random.default_rng(seed)
    x = rand_logits(rng, shape, scale=scale)
    y = x + rng.standard_normal(shape) * spread
    ids = rng.integers(0, shape[-1], size=shape[:-1])
    return x.astype(dtype), y.astype(dtype), ids


def roll_full_kl(logits, ref_logits, temperature=1.0):
    """ROLL's formula, in torch float64 on the full log-softmax rows."""
    lp = torch.log_softmax(torch.as_tensor(logits, dtype=torch.float64) / temperature, -1)
    lq = torch.log_softmax(torch.as_tensor(ref_logits, dtype=torch.float64) / temperature, -1)
    return torch.nn.functional.kl_div(lq, lp, log_target=True, reduction="none").sum(-1)


# ---- forward --------------------------------------------------------------------------------------


@pytest.mark.parametrize("vocab", [1, 2, 17, 2047, 2049, 5003])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_forward_matches_reference(vocab, dtype):
    x, y, ids = pair(vocab, (5, vocab), dtype)
    r = grpokit.token_logprobs_kl(x, y, ids)
    logp, h, lse = ref_forward(x, ids)
    tol = 1e-12 if dtype == np.float64 else 2e-5
    for got in (r.logp, r.entropy, r.kl, r.lse, r.ref_lse):
        assert got.dtype == dtype and got.shape == (5,)
    np.testing.assert_allclose(r.kl, ref_kl(x, y), rtol=tol, atol=tol)
    np.testing.assert_allclose(r.logp, logp, rtol=tol, atol=tol)
    np.testing.assert_allclose(r.entropy, h, rtol=tol, atol=tol)
    np.testing.assert_allclose(r.lse, lse, rtol=tol, atol=tol)
    np.testing.assert_allclose(r.ref_lse, ref_forward(y, ids)[2], rtol=tol, atol=tol)


@pytest.mark.parametrize("temperature", [0.3, 1.0, 2.5])
def test_temperature_and_roll_formula(temperature):
    x, y, ids = pair(3, (2, 3, 101), spread=2.0)
    r = grpokit.token_logprobs_kl(x, y, ids, temperature=temperature)
    np.testing.assert_allclose(r.kl, ref_kl(x, y, temperature), rtol=1e-12, atol=1e-13)
    np.testing.assert_allclose(r.kl, roll_full_kl(x, y, temperature).numpy(), rtol=1e-12, atol=1e-13)


def test_torch_float32_against_roll_formula():
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(4, 32001, generator=gen) * 4
    y = x + torch.randn(4, 32001, generator=gen)
    r = grpokit.token_logprobs_kl(x, y, torch.zeros(4, dtype=torch.int64))
    assert isinstance(r.kl, torch.Tensor) and r.kl.dtype == torch.float32
    torch.testing.assert_close(r.kl.double(), roll_full_kl(x.double(), y.double()), rtol=1e-4, atol=1e-5)


def test_row_strided_views_and_3d():
    x, y, ids = pair(5, (2, 6, 40), np.float32)
    r = grpokit.token_logprobs_kl(x[:, :-1], y[:, 1:], ids[:, :-1])
    np.testing.assert_allclose(r.kl, ref_kl(x[:, :-1], y[:, 1:]), rtol=2e-5, atol=2e-6)
    assert r.kl.shape == (2, 5)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_16_bit_logits(dtype):
    gen = torch.Generator().manual_seed(6)
    x = (torch.randn(3, 3000, generator=gen) * 3).to(dtype)
    y = (x.float() + torch.randn(3, 3000, generator=gen) * 0.5).to(dtype)
    r = grpokit.token_logprobs_kl(x, y, torch.tensor([0, 1, 2]))
    assert r.kl.dtype == torch.float32
    want = ref_kl(x.float().numpy(), y.float().numpy())  # float32 math of the exact 16-bit values
    np.testing.assert_allclose(r.kl.numpy(), want, rtol=2e-5, atol=2e-6)


# ---- properties and extreme values ----------------------------------------------------------------


@settings(max_examples=40, deadline=None)
@given(
    vocab=st.integers(1, 300),
    rows=st.integers(1, 4),
    scale=st.sampled_from([0.1, 3.0, 30.0]),
    shift=st.floats(-1e4, 1e4),
    temperature=st.sampled_from([0.5, 1.0, 1.7]),
    seed=st.integers(0, 2**31),
)
def test_properties(vocab, rows, scale, shift, temperature, seed):
    x, y, ids = pair(seed, (rows, vocab), scale=scale, spread=scale)
    r = grpokit.token_logprobs_kl(x, y, ids, temperature=temperature)
    assert np.all(r.kl >= 0)
    np.testing.assert_allclose(r.kl, ref_kl(x, y, temperature), rtol=1e-9, atol=1e-9)
    # A reference that differs by a constant per row is the same distribution: KL exactly ~0, even
    # when the constant is large (no cancellation between the two log-sum-exps).
    same = grpokit.token_logprobs_kl(x, x + shift, ids, temperature=temperature)
    np.testing.assert_allclose(same.kl, 0.0, atol=1e-9)
    own = grpokit.token_logprobs_kl(x, x, ids, temperature=temperature)
    assert np.all(own.kl == 0.0)


def test_large_logits_no_cancellation():
    x, y, ids = pair(7, (3, 999), scale=3.0)
    r = grpokit.token_logprobs_kl(x + 1e4, y - 1e4, ids)
    np.testing.assert_allclose(r.kl, ref_kl(x, y), rtol=1e-10, atol=1e-12)


def test_negative_infinity_entries():
    x = np.array([[0.0, 1.0, -np.inf, 2.0], [0.0, 1.0, 2.0, 3.0], [-np.inf, 1.0, 2.0, 3.0]])
    y = np.array([[1.0, -np.inf, 0.5, 0.0], [0.0, 1.0, -np.inf, 3.0], [-np.inf, 0.0, 2.0, 2.0]])
    ids = np.array([0, 0, 1])
    r = grpokit.token_logprobs_kl(x[[2]], y[[2]], ids[[2]])  # −inf on both sides: a finite KL
    np.testing.assert_allclose(r.kl, ref_kl(x[[2]], y[[2]]), rtol=1e-12)
    r = grpokit.token_logprobs_kl(x, y, ids)
    # Row 0: the policy's mass on a token the reference excludes (KL = +inf); row 1 likewise.
    assert np.isposinf(r.kl[0]) and np.isposinf(r.kl[1]) and np.isfinite(r.kl[2])
    # Where only the policy has −inf (no mass there), the KL is finite.
    r = grpokit.token_logprobs_kl(x[[0]], np.zeros((1, 4)), ids[[0]])
    np.testing.assert_allclose(r.kl, ref_kl(x[[0]], np.zeros((1, 4))), rtol=1e-12)
    g = grpokit.token_logprobs_kl_backward(x[[0]], np.zeros((1, 4)), ids[[0]], r, grad_kl=[1.0])
    assert g[0, 2] == 0.0 and np.all(np.isfinite(g))


# ---- backward -------------------------------------------------------------------------------------


@pytest.mark.parametrize("temperature", [0.6, 1.0])
@pytest.mark.parametrize("vocab", [1, 5, 2049])
def test_backward_matches_reference(vocab, temperature):
    x, y, ids = pair(vocab + 10, (4, vocab), spread=1.0)
    rng = np.random.default_rng(vocab)
    a, b, k = (rng.standard_normal(4) for _ in range(3))
    r = grpokit.token_logprobs_kl(x, y, ids, temperature=temperature)
    g = grpokit.token_logprobs_kl_backward(x, y, ids, r, a, b, k)
    want = ref_backward(x, ids, a, b, temperature) + ref_kl_backward(x, y, k, temperature)
    np.testing.assert_allclose(g, want, rtol=1e-10, atol=1e-12)
    only_kl = grpokit.token_logprobs_kl_backward(x, y, ids, r, grad_kl=k)
    np.testing.assert_allclose(only_kl, ref_kl_backward(x, y, k, temperature), rtol=1e-10, atol=1e-12)
    assert np.all(grpokit.token_logprobs_kl_backward(x, y, ids, r) == 0.0)


def test_backward_finite_differences():
    x, y, ids = pair(11, (2, 7), spread=1.5)
    k = np.array([0.7, -1.3])
    r = grpokit.token_logprobs_kl(x, y, ids, temperature=0.8)
    g = grpokit.token_logprobs_kl_backward(x, y, ids, r, grad_kl=k)
    eps, num = 1e-6, np.zeros_like(x)
    for idx in np.ndindex(*x.shape):
        up, dn = x.copy(), x.copy()
        up[idx] += eps
        dn[idx] -= eps
        f = lambda z: float(np.dot(k, grpokit.token_logprobs_kl(z, y, ids, temperature=0.8).kl))  # noqa: E731
        num[idx] = (f(up) - f(dn)) / (2 * eps)
    np.testing.assert_allclose(g, num, rtol=1e-6, atol=1e-8)


def test_backward_float32_inplace_and_out():
    x, y, ids = pair(12, (3, 2050), np.float32)
    k = np.array([1.0, -0.5, 2.0], np.float32)
    r = grpokit.token_logprobs_kl(x, y, ids)
    want = ref_kl_backward(x, y, k)
    g = grpokit.token_logprobs_kl_backward(x, y, ids, r, grad_kl=k)
    assert g.dtype == np.float32
    np.testing.assert_allclose(g, want, rtol=1e-4, atol=1e-7)
    buf = x.copy()
    same = grpokit.token_logprobs_kl_backward(buf, y, ids, r, grad_kl=k, out=buf)
    assert same is buf
    np.testing.assert_allclose(buf, g, rtol=0, atol=0)


# ---- bad input ------------------------------------------------------------------------------------


def test_bad_input():
    x, y, ids = pair(13, (2, 9))
    x0, y0 = x.copy(), y.copy()
    with pytest.raises(ValueError, match=r"ref_logits: expected shape \(2, 9\)"):
        grpokit.token_logprobs_kl(x, y[:, :8], ids)
    with pytest.raises((TypeError, ValueError), match="ref_logits: .*float64"):
        grpokit.token_logprobs_kl(x, y.astype(np.float32), ids)
    bad = y.copy()
    bad[1, 3] = np.nan
    with pytest.raises(ValueError, match="ref_logits: row 1 contains NaN"):
        grpokit.token_logprobs_kl(x, bad, ids)
    with pytest.raises(ValueError, match="^logits: row 1 contains NaN"):
        grpokit.token_logprobs_kl(bad, y, ids)
    with pytest.raises(ValueError, match="ref_logits: row 0 has no finite value"):
        grpokit.token_logprobs_kl(x, np.full_like(y, -np.inf), ids)
    with pytest.raises(ValueError, match="token_ids: row 0 holds 9"):
        grpokit.token_logprobs_kl(x, y, [9, 0])
    with pytest.raises(ValueError, match="temperature"):
        grpokit.token_logprobs_kl(x, y, ids, temperature=0.0)
    r = grpokit.token_logprobs_kl(x, y, ids)
    with pytest.raises(TypeError, match="saved: expected the TokenLogprobsKL"):
        grpokit.token_logprobs_kl_backward(x, y, ids, grpokit.token_logprobs(x, ids))
    with pytest.raises(ValueError, match="grad_logits: overlaps ref_logits"):
        grpokit.token_logprobs_kl_backward(x, y, ids, r, grad_kl=[1.0, 1.0], out=y)
    np.testing.assert_array_equal(x, x0)
    np.testing.assert_array_equal(y, y0)


# ---- torch: autograd, custom ops, torch.compile ---------------------------------------------------

gkt = pytest.importorskip("grpokit.torch")


def test_torch_autograd_gradcheck_and_no_reference_gradient():
    gen = torch.Generator().manual_seed(14)
    x = torch.randn(2, 3, 11, generator=gen, dtype=torch.float64, requires_grad=True)
    y = (x.detach() + torch.randn(2, 3, 11, generator=gen, dtype=torch.float64)).requires_grad_()
    ids = torch.randint(0, 11, (2, 3), generator=gen)

    def f(z):
        out = gkt.token_logprobs_kl(z, y, ids, temperature=0.9)
        return out.logp, out.entropy, out.kl

    assert torch.autograd.gradcheck(f, (x,))
    out = gkt.token_logprobs_kl(x, y, ids, temperature=0.9)
    (out.kl.sum() + out.logp.sum()).backward()
    assert x.grad is not None and y.grad is None
    torch.testing.assert_close(out.kl, roll_full_kl(x.detach(), y.detach(), 0.9))


def test_opcheck():
    gen = torch.Generator().manual_seed(15)
    x = torch.randn(2, 3, 19, generator=gen, dtype=torch.float64)
    y = x + torch.randn(2, 3, 19, generator=gen, dtype=torch.float64)
    ids = torch.randint(0, 19, (2, 3), generator=gen)
    utils = ("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic")
    torch.library.opcheck(
        torch.ops.grpokit.token_logprobs_kl.default, (x.clone().requires_grad_(), y, ids, 0.7), test_utils=utils
    )
    r = grpokit.token_logprobs_kl(x, y, ids, temperature=0.7)
    k = torch.randn(2, 3, generator=gen, dtype=torch.float64)
    torch.library.opcheck(
        torch.ops.grpokit.token_logprobs_kl_backward.default,
        (x, y, ids, r.lse, r.ref_lse, r.entropy, r.kl, k, None, k, 0.7),
        test_utils=("test_schema", "test_faketensor", "test_aot_dispatch_dynamic"),
    )


def _step(x, y, ids, mask):
    # ROLL's use as a loss term: the masked token mean of β·KL, beside the log-probs.
    out = gkt.token_logprobs_kl((x * 1.5)[:, :-1], y[:, :-1], ids, temperature=0.9)
    return ((0.04 * out.kl - out.logp) * mask).sum() / mask.sum()


@pytest.mark.parametrize("backend", ["aot_eager", "inductor"])
def test_compiled_matches_eager(backend):
    gen = torch.Generator().manual_seed(16)
    base = torch.randn(3, 6, 40, generator=gen)
    y = base + torch.randn(3, 6, 40, generator=gen)
    ids = torch.randint(0, 40, (3, 5), generator=gen)
    mask = (torch.arange(5)[None, :] < torch.tensor([5, 2, 4])[:, None]).float()
    x_e = base.clone().requires_grad_()
    loss_e = _step(x_e, y, ids, mask)
    loss_e.backward()
    x_c = base.clone().requires_grad_()
    loss_c = torch.compile(_step, backend=backend, fullgraph=True)(x_c, y, ids, mask)
    loss_c.backward()
    torch.testing.assert_close(loss_c, loss_e, rtol=1e-6, atol=0)
    torch.testing.assert_close(x_c.grad, x_e.grad, rtol=1e-6, atol=1e-9)
