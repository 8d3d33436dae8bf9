"""Exact replay of the sampler's kept set (token_logprobs(..., keep=...)) against the independent
float64 reference of logprobs_reference.py (any kept set, given as a dense mask there), by finite
differences, against recomputation from top_k/top_p where the sets agree, and the bad-input errors."""

import numpy as np
import pytest
import torch

import grpokit
import grpokit.torch as gkt
from grpokit._logprobs_keep import keep_from_mask
from logprobs_reference import ref_sampler_backward, ref_sampler_forward


def csr(mask):
    """(ids, offsets) of a dense mask, written row by row (independent of keep_from_mask)."""
    rows = mask.reshape(-1, mask.shape[-1])
    ids = [np.flatnonzero(r) for r in rows]
    return np.concatenate(ids).astype(np.int64), np.cumsum([0] + [len(i) for i in ids]).astype(np.int64)


def random_case(rng, shape, v, dtype=np.float64, density=0.2):
    x = (rng.standard_normal(shape + (v,)) * 3).astype(dtype)
    ids = rng.integers(0, v, shape)
    mask = rng.random(shape + (v,)) < density  # any set: not an upper set of values
    np.put_along_axis(mask, ids[..., None], True, -1)
    flat = mask.reshape(-1, v)
    flat[0, :] = False  # an empty row: the whole vocabulary
    flat[-1, :] = False
    flat[-1, (ids.reshape(-1)[-1] + 1) % v] = True  # the token outside its kept set
    return x, ids, mask


def full_where_empty(mask):
    return np.where(mask.any(-1, keepdims=True), mask, True)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-12), (np.float32, 2e-5)])
@pytest.mark.parametrize("shape", [(7,), (2, 5)])
@pytest.mark.parametrize("over", ["full", "sampler"])
@pytest.mark.parametrize("t", [0.7, 1.0, 2.5])
def test_against_reference(dtype, tol, shape, over, t):
    rng = np.random.default_rng(hash((shape, over, t)) % 2**32)
    x, ids, mask = random_case(rng, shape, 53, dtype)
    x_in = x.copy()
    r = grpokit.token_logprobs(x, ids, temperature=t, keep=csr(mask), entropy=over)
    ref_mask = full_where_empty(mask)
    logp, h_kept, h_full, mass = ref_sampler_forward(x, ids, ref_mask, t)
    out = np.isneginf(logp)
    assert out.sum() == 1 and r.num_outside == 1 and r.keep_min is None
    np.testing.assert_array_equal(np.isneginf(r.logp), out)
    np.testing.assert_allclose(np.asarray(r.logp)[~out], logp[~out], rtol=tol, atol=tol)
    np.testing.assert_allclose(r.entropy, h_kept if over == "sampler" else h_full, rtol=tol, atol=tol)
    np.testing.assert_allclose(r.kept_logmass, mass, rtol=tol, atol=tol)
    assert r.kept_logmass.reshape(-1)[0] == 0.0  # the empty row keeps everything
    a, b = rng.standard_normal(shape), rng.standard_normal(shape)
    g = grpokit.token_logprobs_backward(x, ids, r, a, b)
    gr = ref_sampler_backward(x, ids, ref_mask, a, b, t, over)
    np.testing.assert_allclose(g, gr, rtol=10 * tol, atol=10 * tol)
    np.testing.assert_array_equal(x, x_in)  # inputs are never written


def test_finite_differences():
    rng = np.random.default_rng(3)
    x, ids, mask = random_case(rng, (4,), 11)
    keep, t = csr(mask), 0.8
    a, b = rng.standard_normal(4), rng.standard_normal(4)
    for over in ("full", "sampler"):

        def loss(z, over=over):
            r = grpokit.token_logprobs(z, ids, temperature=t, keep=keep, entropy=over)
            lp = np.where(np.isfinite(r.logp), r.logp, 0.0)
            return float(a @ lp + b @ r.entropy)

        r = grpokit.token_logprobs(x, ids, temperature=t, keep=keep, entropy=over)
        g = grpokit.token_logprobs_backward(x, ids, r, a, b)
        fd = np.zeros_like(x)
        for i in np.ndindex(x.shape):
            e = np.zeros_like(x)
            e[i] = 1e-6
            fd[i] = (loss(x + e) - loss(x - e)) / 2e-6
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("kw", [{"top_k": 5}, {"top_p": 0.8}, {"top_k": 9, "top_p": 0.9, "min_p": 0.02}])
def test_replay_of_the_recomputed_set_matches_recomputation(kw):
    rng = np.random.default_rng(5)
    x = (rng.standard_normal((6, 70)) * 3).astype(np.float32)
    ids = rng.integers(0, 70, 6)
    r = grpokit.token_logprobs(x, ids, temperature=0.6, entropy="sampler", **kw)
    mask = x >= r.keep_min[:, None]
    q = grpokit.token_logprobs(x, ids, temperature=0.6, entropy="sampler", keep=mask)
    np.testing.assert_array_equal(np.isneginf(q.logp), np.isneginf(r.logp))
    fin = np.isfinite(r.logp)
    np.testing.assert_allclose(q.logp[fin], r.logp[fin], rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(q.entropy, r.entropy, rtol=2e-6, atol=2e-6)
    np.testing.assert_allclose(q.kept_logmass, r.kept_logmass, rtol=2e-6, atol=2e-6)
    a, b = rng.standard_normal(6), rng.standard_normal(6)
    g_r = grpokit.token_logprobs_backward(x, ids, r, a, b)
    g_q = grpokit.token_logprobs_backward(x, ids, q, a, b)
    np.testing.assert_allclose(g_q, g_r, rtol=1e-5, atol=1e-6)


class SamplingMask:  # vLLM's form: CSR token ids and offsets
    def __init__(self, token_ids, offsets):
        self.token_ids, self.offsets = token_ids, offsets


def test_forms_and_dtypes():
    rng = np.random.default_rng(7)
    x, ids, mask = random_case(rng, (3, 4), 20)
    ref = grpokit.token_logprobs(x, ids, keep=csr(mask))
    k_ids, k_off = csr(mask)
    forms = [
        mask,
        keep_from_mask(mask),
        SamplingMask(k_ids.tolist(), k_off.tolist()),
        (k_ids.astype(np.int32), k_off.astype(np.int32)),
        (k_ids[::-1].copy()[::-1], k_off),  # a negative-stride view
    ]
    for keep in forms:
        r = grpokit.token_logprobs(x, ids, keep=keep)
        np.testing.assert_array_equal(r.logp, ref.logp)
    np.testing.assert_array_equal(keep_from_mask(torch.from_numpy(mask))[0].numpy(), k_ids)
    rt = grpokit.token_logprobs(torch.from_numpy(x), torch.from_numpy(ids), keep=torch.from_numpy(mask))
    np.testing.assert_array_equal(rt.logp.numpy(), ref.logp)
    # a whole-vocabulary set and all-empty rows: the untruncated result
    full = grpokit.token_logprobs(x, ids)
    for keep in (np.ones_like(mask), (np.zeros(0, np.int64), np.zeros(13, np.int64))):
        r = grpokit.token_logprobs(x, ids, keep=keep)
        np.testing.assert_allclose(r.logp, full.logp, rtol=1e-13, atol=1e-13)
        np.testing.assert_array_equal(r.kept_logmass, 0.0)


def test_neg_inf_logits():
    x = np.array([[0.0, -np.inf, 1.0, 2.0], [-np.inf, 3.0, -np.inf, 0.0]])
    keep = (np.array([0, 1, 2, 0, 1]), np.array([0, 3, 5]))  # each token kept, at a −inf logit
    r = grpokit.token_logprobs(x, [1, 0], keep=keep, entropy="sampler")
    assert np.isneginf(r.logp).all() and r.num_outside == 2
    assert np.isfinite(r.entropy).all() and r.entropy[1] == 0.0
    g = grpokit.token_logprobs_backward(x, [1, 0], r, np.ones(2), np.ones(2))
    assert np.isfinite(g).all() and g[0, 1] == 0.0
    with pytest.raises(ValueError, match="keep_ids: the kept set of row 1 holds no finite logit"):
        grpokit.token_logprobs(x, [1, 0], keep=(np.array([0, 1, 2, 0]), np.array([0, 3, 4])))


@pytest.mark.parametrize(
    "keep,match",
    [
        ((np.array([0, 9, 1]), np.array([0, 2, 3])), r"keep_ids: row 0 holds 9, outside the vocabulary \[0, 5\)"),
        ((np.array([0, -1, 1]), np.array([0, 2, 3])), r"keep_ids: row 0 holds -1, outside"),
        (
            (np.array([3, 1, 1]), np.array([0, 2, 3])),
            "keep_ids: row 0 holds 1 after 3; expected each row's ids ascending",
        ),
        ((np.array([1, 1, 1]), np.array([0, 2, 3])), "keep_ids: row 0 holds 1 after 1"),
        ((np.array([0, 1, 1]), np.array([0, 2, 1, 3])), "keep_offsets: expected 3 offsets"),
        ((np.array([0, 1, 1]), np.array([0, 3, 2])), "keep_offsets: row 1 ends at 2 before it begins at 3"),
        ((np.array([0, 1, 1]), np.array([1, 2, 3])), "keep_offsets: expected 0 first, got 1"),
        (
            (np.array([0, 1, 1]), np.array([0, 2, 2])),
            r"keep_offsets: the last offset is 2; expected len\(keep_ids\) = 3",
        ),
        ((np.array([0, 1, 1]), np.array([0, 2, 4])), r"keep_offsets: row 1 ends at 4, beyond len\(keep_ids\) = 3"),
        ((np.array([0.0, 1.0, 1.0]), np.array([0, 2, 3])), "keep_ids: expected dtype"),
        ((np.array([[0, 1, 1]]), np.array([0, 2, 3])), "keep_ids: expected"),
    ],
)
def test_bad_keep(keep, match):
    x = np.zeros((2, 5))
    with pytest.raises((ValueError, TypeError), match=match):
        grpokit.token_logprobs(x, [0, 1], keep=keep)
    r = grpokit.token_logprobs(x, [0, 1], keep=(np.array([0, 1, 1]), np.array([0, 2, 3])))
    with pytest.raises((ValueError, TypeError), match=match):
        grpokit.token_logprobs_backward(x, [0, 1], grpokit.TokenLogprobs(**{**r.__dict__, "keep": keep}), [1.0, 1.0])


def test_bad_combinations():
    x = np.zeros((2, 5))
    keep = (np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="keep: replays the sampler's kept set; pass it or top_k"):
        grpokit.token_logprobs(x, [0, 1], keep=keep, top_p=0.9)
    with pytest.raises(ValueError, match="sum_sq_probs: not available with top_k/top_p/min_p/keep"):
        grpokit.token_logprobs(x, [0, 1], keep=keep, sum_sq_probs=True)
    with pytest.raises(TypeError, match="keep: expected .keep_ids, keep_offsets."):
        grpokit.token_logprobs(x, [0, 1], keep=np.zeros((2, 4), bool))
    with pytest.raises(ValueError, match="keep: not available with top_k"):
        gkt.token_logprobs(torch.zeros(2, 5), torch.tensor([0, 1]), keep=keep, top_k=3)


def _keep_step(x, ids, k_ids, k_off, mask):
    out = gkt.token_logprobs(x * 1.5, ids, temperature=0.9, keep=(k_ids, k_off), entropy="sampler")
    lp = torch.where(mask & torch.isfinite(out.logp), out.logp, 0.0)
    return -(lp.sum() + 0.1 * out.entropy.sum())


def test_torch_autograd_opcheck_and_compile():
    rng = np.random.default_rng(11)
    x, ids, mask = random_case(rng, (2, 3), 19)
    xt, it = torch.from_numpy(x), torch.from_numpy(ids)
    k_ids, k_off = (torch.from_numpy(a) for a in csr(mask))
    for over in ("full", "sampler"):
        xr = xt.clone().requires_grad_()
        out = gkt.token_logprobs(xr, it, temperature=0.7, keep=(k_ids, k_off), entropy=over)
        a = torch.from_numpy(rng.standard_normal((2, 3)))
        (torch.where(torch.isfinite(out.logp), out.logp, 0.0) * a + out.entropy).sum().backward()
        ref = ref_sampler_backward(x, ids, full_where_empty(mask), a.numpy(), np.ones((2, 3)), 0.7, over)
        np.testing.assert_allclose(xr.grad.numpy(), ref, rtol=1e-10, atol=1e-12)
        torch.library.opcheck(
            torch.ops.grpokit.token_logprobs_keep.default,
            (xt.clone().requires_grad_(), it, k_ids, k_off, 0.7, over == "sampler"),
            test_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
        )
    base = torch.from_numpy(x.astype(np.float32))
    m = torch.from_numpy(rng.random((2, 3)) > 0.2)
    x_e = base.clone().requires_grad_()
    _keep_step(x_e, it, k_ids, k_off, m).backward()
    x_c = base.clone().requires_grad_()
    loss_c = torch.compile(_keep_step, backend="aot_eager", fullgraph=True)(x_c, it, k_ids, k_off, m)
    loss_c.backward()
    torch.testing.assert_close(loss_c, _keep_step(base, it, k_ids, k_off, m), rtol=1e-6, atol=0)
    torch.testing.assert_close(x_c.grad, x_e.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_a_set_far_below_the_maximum(dtype):
    """A kept set without the row's maximum whose mass underflows float32 (e^-300): q ≫ p, finite
    values and gradients, as the float64 reference."""
    x = np.array([[300.0, 0.0, 1.0, 2.0, -1.0], [0.0, 1.0, 2.0, 3.0, 400.0]], dtype)
    ids, keep = np.array([2, 1]), (np.array([1, 2, 3, 0, 1]), np.array([0, 3, 5]))
    mask = np.zeros(x.shape, bool)
    mask[0, [1, 2, 3]] = mask[1, [0, 1]] = True
    a, b = np.array([1.0, -0.5]), np.array([0.3, 0.7])
    for over in ("full", "sampler"):
        r = grpokit.token_logprobs(x, ids, keep=keep, entropy=over)
        logp, h_kept, h_full, mass = ref_sampler_forward(x.astype(np.float64), ids, mask)
        np.testing.assert_allclose(r.logp, logp, rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(r.entropy, h_kept if over == "sampler" else h_full, rtol=1e-5, atol=1e-5)
        assert np.isfinite(r.logp).all()
        np.testing.assert_allclose(r.kept_logmass, mass, rtol=1e-6)
        g = grpokit.token_logprobs_backward(x, ids, r, a, b)
        gr = ref_sampler_backward(x.astype(np.float64), ids, mask, a, b, 1.0, over)
        tol = 1e-12 if dtype == np.float64 else 5e-5  # float32: the saved lse ≈ 400 rounds by 3e-5
        np.testing.assert_allclose(g, gr, rtol=tol, atol=tol)
