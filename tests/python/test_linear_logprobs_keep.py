"""linear_token_logprobs(..., keep=...): replaying the sampler's kept set from hidden states × weight,
against the logits form on hidden @ weight.T and the float64 reference of logprobs_reference.py,
by finite differences (hidden and weight), across tiles of whole rows, the bad-input errors, and the
torch custom ops (autograd, opcheck, torch.compile)."""

import numpy as np
import pytest
import torch

import grpokit
import grpokit.torch as gkt
from logprobs_reference import ref_sampler_backward, ref_sampler_forward
from test_logprobs_keep import SamplingMask, csr, full_where_empty


def exact_case(rng, lead, v, hsize, dtype, density=0.25):
    """Small integers × multiples of 1/8: the GEMM is exact in any order, so the engine's logits are
    hidden @ weight.T exactly. Row 0 keeps everything (an empty row), the last row's token lies outside."""
    h = rng.integers(-3, 4, lead + (hsize,)).astype(dtype)
    w = (rng.integers(-4, 5, (v, hsize)) / 8).astype(dtype)
    ids = rng.integers(0, v, lead)
    mask = rng.random(lead + (v,)) < density
    np.put_along_axis(mask, ids[..., None], True, -1)
    flat = mask.reshape(-1, v)
    flat[0, :] = False
    flat[-1, :] = False
    flat[-1, (ids.reshape(-1)[-1] + 1) % v] = True
    x = h.astype(np.float64) @ w.T.astype(np.float64)
    return h, w, ids, mask, x


def assert_same(r, q, tol):
    """The hidden-state result equals the logits form's (the same row code; only the rows' addresses,
    hence possibly the vector loops' alignment, differ)."""
    np.testing.assert_array_equal(np.isneginf(r.logp), np.isneginf(q.logp))
    for name in ("logp", "entropy", "lse", "kept_logmass"):
        a, b = np.asarray(getattr(r, name)), np.asarray(getattr(q, name))
        fin = np.isfinite(b)
        np.testing.assert_allclose(a[fin], b[fin], rtol=tol, atol=tol, err_msg=name)


@pytest.mark.parametrize("dtype,tol", [(np.float64, 1e-11), (np.float32, 2e-5)])
@pytest.mark.parametrize("lead", [(7,), (2, 4)])
@pytest.mark.parametrize("over", ["full", "sampler"])
def test_against_the_logits_form_and_reference(dtype, tol, lead, over):
    rng = np.random.default_rng(len(lead) * 10 + (over == "full"))
    h, w, ids, mask, x = exact_case(rng, lead, 41, 8, dtype)
    h_in, w_in = h.copy(), w.copy()
    keep = csr(mask)
    r = grpokit.linear_token_logprobs(h, w, ids, temperature=0.7, keep=keep, entropy=over)
    q = grpokit.token_logprobs(x.astype(dtype), ids, temperature=0.7, keep=keep, entropy=over)
    assert r.logp.shape == lead and r.logp.dtype == q.logp.dtype and r.keep_min is None
    assert r.num_outside == q.num_outside == 1 and r.entropy_over == over
    assert_same(r, q, 1e-14 if dtype == np.float64 else 1e-6)
    ref_mask = full_where_empty(mask)
    logp, h_kept, h_full, mass = ref_sampler_forward(x, ids, ref_mask, 0.7)
    fin = np.isfinite(logp)
    np.testing.assert_array_equal(np.isfinite(r.logp), fin)
    np.testing.assert_allclose(r.logp[fin], logp[fin], rtol=tol, atol=tol)
    np.testing.assert_allclose(r.entropy, h_kept if over == "sampler" else h_full, rtol=tol, atol=tol)
    np.testing.assert_allclose(r.kept_logmass, mass, rtol=tol, atol=tol)
    a, b = rng.standard_normal(lead), rng.standard_normal(lead)
    gh, gw = grpokit.linear_token_logprobs_backward(h, w, ids, r, a.astype(dtype), b.astype(dtype))
    gx = ref_sampler_backward(x, ids, ref_mask, a, b, 0.7, over)
    assert gh.shape == h.shape and gh.dtype == dtype and gw.shape == w.shape
    np.testing.assert_allclose(gh, gx @ w.astype(np.float64), rtol=10 * tol, atol=10 * tol)
    gw_ref = gx.reshape(-1, gx.shape[-1]).T @ h.reshape(-1, h.shape[-1]).astype(np.float64)
    np.testing.assert_allclose(gw, gw_ref, rtol=10 * tol, atol=10 * tol)
    only_h = grpokit.linear_token_logprobs_backward(h, w, ids, r, a.astype(dtype), weight_grad=False)
    assert only_h[1] is None and only_h[0].shape == h.shape
    np.testing.assert_array_equal(h, h_in)  # inputs are never written
    np.testing.assert_array_equal(w, w_in)


def test_finite_differences_for_hidden_and_weight():
    rng = np.random.default_rng(3)
    h = rng.standard_normal((4, 3))
    w = rng.standard_normal((9, 3))
    ids = rng.integers(0, 9, 4)
    mask = rng.random((4, 9)) < 0.4
    np.put_along_axis(mask, ids[:, None], True, -1)
    mask[1] = False  # the whole vocabulary
    keep, t = csr(mask), 0.8
    a, b = rng.standard_normal(4), rng.standard_normal(4)
    for over in ("full", "sampler"):

        def loss(hh, ww, over=over):
            r = grpokit.linear_token_logprobs(hh, ww, ids, temperature=t, keep=keep, entropy=over)
            return float(a @ r.logp + b @ r.entropy)

        r = grpokit.linear_token_logprobs(h, w, ids, temperature=t, keep=keep, entropy=over)
        gh, gw = grpokit.linear_token_logprobs_backward(h, w, ids, r, a, b)
        for arr, g, other in ((h, gh, "h"), (w, gw, "w")):
            fd = np.zeros_like(arr)
            for i in np.ndindex(arr.shape):
                e = np.zeros_like(arr)
                e[i] = 1e-6
                plus = loss(h + e, w) if other == "h" else loss(h, w + e)
                minus = loss(h - e, w) if other == "h" else loss(h, w - e)
                fd[i] = (plus - minus) / 2e-6
            np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_tiles_of_whole_rows():
    """V large enough that a tile of whole rows holds 64 rows (2^24 / V): the kept set's offsets are
    rebased per tile and grad_weight sums over the tiles. Every row has the same logits row x."""
    rng = np.random.default_rng(12)
    v, n = 1 << 18, 66
    w = np.zeros((v, 2), np.float32)
    w[:, 0] = (rng.standard_normal(v) * 2).astype(np.float32)
    h = np.zeros((n, 2), np.float32)
    h[:, 0] = 1.0
    ids = rng.integers(0, v, n)
    sizes = rng.integers(0, 40, n)
    # every 7th row's token is (almost surely) outside its set
    sets = [
        np.unique(np.append(rng.integers(0, v, k), [ids[i]] if i % 7 else [])).astype(np.int64)
        for i, k in enumerate(sizes)
    ]
    sets[65] = np.zeros(0, np.int64)  # an empty row in the second tile (rows 64, 65): the whole vocabulary
    k_ids = np.concatenate(sets).astype(np.int64)
    k_off = np.cumsum([0] + [len(s) for s in sets]).astype(np.int64)
    r = grpokit.linear_token_logprobs(h, w, ids, temperature=0.9, keep=(k_ids, k_off), entropy="sampler")
    x = np.ascontiguousarray(w[:, 0])
    q = grpokit.token_logprobs(np.broadcast_to(x, (n, v)), ids, temperature=0.9, keep=(k_ids, k_off), entropy="sampler")
    assert_same(r, q, 1e-6)
    assert r.num_outside == q.num_outside > 0
    a = rng.standard_normal(n).astype(np.float32)
    b = rng.standard_normal(n).astype(np.float32)
    gh, gw = grpokit.linear_token_logprobs_backward(h, w, ids, r, a, b)
    gw_ref, gh_ref = np.zeros(v), np.zeros(n)
    for i in range(n):  # the logits form's gradient row by row (no (n, V) buffer in the test either)
        one = (sets[i], np.array([0, len(sets[i])]))
        ri = grpokit.token_logprobs(x[None], ids[i : i + 1], temperature=0.9, keep=one, entropy="sampler")
        gi = grpokit.token_logprobs_backward(x[None], ids[i : i + 1], ri, a[i : i + 1], b[i : i + 1])[0]
        gw_ref += gi
        gh_ref[i] = gi.astype(np.float64) @ x
    np.testing.assert_allclose(gw[:, 0], gw_ref, rtol=1e-4, atol=1e-5 * np.abs(gw_ref).max())
    np.testing.assert_array_equal(gw[:, 1], 0.0)
    np.testing.assert_allclose(gh[:, 0], gh_ref, rtol=1e-4, atol=1e-4 * np.abs(gh_ref).max())


def test_forms_and_an_all_empty_set():
    rng = np.random.default_rng(7)
    h, w, ids, mask, _ = exact_case(rng, (3, 4), 20, 5, np.float64)
    k_ids, k_off = csr(mask)
    ref = grpokit.linear_token_logprobs(h, w, ids, keep=(k_ids, k_off))
    for keep in (mask, SamplingMask(k_ids.tolist(), k_off.tolist()), (k_ids.astype(np.int32), k_off.astype(np.int32))):
        np.testing.assert_array_equal(grpokit.linear_token_logprobs(h, w, ids, keep=keep).logp, ref.logp)
    full = grpokit.linear_token_logprobs(h, w, ids)
    r = grpokit.linear_token_logprobs(h, w, ids, keep=(np.zeros(0, np.int64), np.zeros(13, np.int64)))
    np.testing.assert_allclose(r.logp, full.logp, rtol=1e-13, atol=1e-13)
    np.testing.assert_array_equal(r.kept_logmass, 0.0)


@pytest.mark.parametrize(
    "keep,match",
    [
        ((np.array([0, 9, 1]), np.array([0, 2, 3])), r"keep_ids: row 0 holds 9, outside the vocabulary \[0, 5\)"),
        ((np.array([3, 1, 1]), np.array([0, 2, 3])), "keep_ids: row 0 holds 1 after 3; expected each row's ids"),
        ((np.array([0, 1, 1]), np.array([0, 2, 1, 3])), r"keep_offsets: expected 3 offsets \(one per row of hidden"),
        ((np.array([0, 1, 1]), np.array([1, 2, 3])), "keep_offsets: expected 0 first, got 1"),
        ((np.array([0, 1, 1]), np.array([0, 3, 2])), "keep_offsets: row 1 ends at 2 before it begins at 3"),
        ((np.array([0, 1, 1]), np.array([0, 2, 2])), r"keep_offsets: the last offset is 2; expected len\(keep_ids\)"),
        ((np.array([0.0, 1.0, 1.0]), np.array([0, 2, 3])), "keep_ids: expected dtype"),
        (np.zeros((2, 4), bool), r"keep: expected .keep_ids, keep_offsets.* logits' shape \(2, 5\)"),
    ],
)
def test_bad_keep(keep, match):
    h, w = np.ones((2, 3)), np.ones((5, 3))
    with pytest.raises((ValueError, TypeError), match=match):
        grpokit.linear_token_logprobs(h, w, [0, 1], keep=keep)
    if isinstance(keep, tuple):
        r = grpokit.linear_token_logprobs(h, w, [0, 1], keep=(np.array([0, 1, 1]), np.array([0, 2, 3])))
        bad = grpokit.TokenLogprobs(**{**r.__dict__, "keep": keep})
        with pytest.raises((ValueError, TypeError), match=match):
            grpokit.linear_token_logprobs_backward(h, w, [0, 1], bad, [1.0, 1.0])


def test_bad_combinations_and_a_set_without_finite_logits():
    h, w = np.ones((2, 3)), np.ones((5, 3))
    keep = (np.array([0, 1]), np.array([0, 1, 2]))
    with pytest.raises(ValueError, match="keep: replays the sampler's kept set; pass it or top_k"):
        grpokit.linear_token_logprobs(h, w, [0, 1], keep=keep, top_k=2)
    with pytest.raises(ValueError, match="sum_sq_probs: not available with top_k/top_p/min_p/keep"):
        grpokit.linear_token_logprobs(h, w, [0, 1], keep=keep, sum_sq_probs=True)
    with pytest.raises(ValueError, match="keep: not available with top_k/top_p/min_p or sum_sq_probs"):
        gkt.linear_token_logprobs(torch.ones(2, 3), torch.ones(5, 3), torch.tensor([0, 1]), keep=keep, top_p=0.5)
    w_inf = np.ones((5, 3))
    w_inf[1] = -np.inf  # logit −inf for id 1 (h ≥ 0)
    with pytest.raises(ValueError, match="holds no finite logit"):
        grpokit.linear_token_logprobs(h, w_inf, [0, 1], keep=(np.array([0, 1]), np.array([0, 1, 2])))


def _step(h, w, ids, k_ids, k_off, m):
    out = gkt.linear_token_logprobs(h * 1.5, w, ids, temperature=0.9, keep=(k_ids, k_off), entropy="sampler")
    lp = torch.where(m & torch.isfinite(out.logp), out.logp, 0.0)
    return -(lp.sum() + 0.1 * out.entropy.sum())


def test_torch_autograd_opcheck_and_compile():
    rng = np.random.default_rng(11)
    h, w, ids, mask, _ = exact_case(rng, (2, 3), 19, 6, np.float64)
    ht, wt, it = torch.from_numpy(h), torch.from_numpy(w), torch.from_numpy(ids)
    k_ids, k_off = (torch.from_numpy(a) for a in csr(mask))
    for over in ("full", "sampler"):
        hr, wr = ht.clone().requires_grad_(), wt.clone().requires_grad_()
        out = gkt.linear_token_logprobs(hr, wr, it, temperature=0.7, keep=(k_ids, k_off), entropy=over)
        xr = (ht @ wt.T).requires_grad_()
        ref = gkt.token_logprobs(xr, it, temperature=0.7, keep=(k_ids, k_off), entropy=over)
        torch.testing.assert_close(out.logp, ref.logp)
        torch.testing.assert_close(out.entropy, ref.entropy)
        a = torch.from_numpy(rng.standard_normal((2, 3)))
        for o in (out, ref):
            (torch.where(torch.isfinite(o.logp), o.logp, 0.0) * a + o.entropy).sum().backward()
        torch.testing.assert_close(hr.grad, xr.grad @ wt)
        torch.testing.assert_close(wr.grad, torch.einsum("btv,bth->vh", xr.grad, ht))
        frozen = gkt.linear_token_logprobs(ht.clone().requires_grad_(), wt, it, keep=(k_ids, k_off), entropy=over)
        frozen.logp.nan_to_num(neginf=0.0).sum().backward()  # weight_grad=False inside: no error
        torch.library.opcheck(
            torch.ops.grpokit.linear_token_logprobs_keep.default,
            (ht.clone().requires_grad_(), wt.clone().requires_grad_(), it, k_ids, k_off, 0.7, over == "sampler"),
            test_utils=("test_schema", "test_autograd_registration", "test_faketensor", "test_aot_dispatch_dynamic"),
        )
    hb, wb = ht.float(), wt.float()
    m = torch.from_numpy(rng.random((2, 3)) > 0.2)
    h_e, w_e = hb.clone().requires_grad_(), wb.clone().requires_grad_()
    _step(h_e, w_e, it, k_ids, k_off, m).backward()
    h_c, w_c = hb.clone().requires_grad_(), wb.clone().requires_grad_()
    loss_c = torch.compile(_step, backend="aot_eager", fullgraph=True)(h_c, w_c, it, k_ids, k_off, m)
    loss_c.backward()
    torch.testing.assert_close(loss_c, _step(hb, wb, it, k_ids, k_off, m), rtol=1e-6, atol=0)
    torch.testing.assert_close(h_c.grad, h_e.grad, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(w_c.grad, w_e.grad, rtol=1e-6, atol=1e-9)


@pytest.mark.gpu
def test_gpu_inputs_are_refused_for_now():
    """The CUDA engine has no hidden-state replay yet: a clear NotImplementedError, not a wrong result."""
    h, w, ids = torch.ones(2, 3, device="cuda"), torch.ones(5, 3, device="cuda"), torch.tensor([0, 1], device="cuda")
    keep = (torch.tensor([0, 1], device="cuda"), torch.tensor([0, 1, 2], device="cuda"))
    with pytest.raises(NotImplementedError, match="keep: replay is not implemented on cuda yet"):
        grpokit.linear_token_logprobs(h, w, ids, keep=keep)
