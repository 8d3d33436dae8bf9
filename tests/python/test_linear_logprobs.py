"""linear_token_logprobs: hidden states × weight, chunked, against materialised logits and fp64
references; gradients for hidden and weight; the torch autograd wrapper."""

from __future__ import annotations

import numpy as np
import pytest

import grpokit
from logprobs_reference import ref_backward, ref_forward

torch = pytest.importorskip("torch")

from torch_batches import linear_head  # noqa: E402


def problem(seed, n, h, v, dtype=np.float64):
    rng = np.random.default_rng(seed)
    hidden = rng.standard_normal((n, h)).astype(dtype)
    weight = (rng.standard_normal((v, h)) / np.sqrt(h) * 3).astype(dtype)
    ids = rng.integers(0, v, size=n)
    return rng, hidden, weight, ids


@pytest.mark.parametrize("chunk", [None, 3, 64])
@pytest.mark.parametrize("v", [1, 13, 200])
def test_forward_and_backward_match_fp64_reference(chunk, v):
    rng, hidden, weight, ids = problem(v, 9, 6, v)
    logits = hidden @ weight.T
    r = grpokit.linear_token_logprobs(hidden, weight, ids, temperature=0.8, chunk_size=chunk)
    logp, h, lse = ref_forward(logits, ids, 0.8)
    np.testing.assert_allclose(r.logp, logp, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.entropy, h, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(r.lse, lse, rtol=1e-12, atol=1e-12)
    a, b = rng.standard_normal(9), rng.standard_normal(9)
    gh, gw = grpokit.linear_token_logprobs_backward(hidden, weight, ids, r, a, b, chunk_size=chunk)
    gz = ref_backward(logits, ids, a, b, 0.8)
    np.testing.assert_allclose(gh, gz @ weight, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gw, gz.T @ hidden, rtol=1e-10, atol=1e-12)


def test_float32_and_row_blocks_and_3d():
    # N > 1024 crosses the CPU engine's row block.
    rng, hidden, weight, ids = problem(1, 1030, 4, 50, np.float32)
    r = grpokit.linear_token_logprobs(hidden.reshape(2, 515, 4), weight, ids.reshape(2, 515), chunk_size=16)
    assert r.logp.shape == (2, 515) and r.logp.dtype == np.float32
    logp, h, _ = ref_forward(hidden.astype(np.float64) @ weight.T.astype(np.float64), ids)
    # float32 GEMM over H = 4 terms of size ~3 plus float32 softmax math.
    np.testing.assert_allclose(r.logp.reshape(-1), logp, rtol=0, atol=2e-5)
    np.testing.assert_allclose(r.entropy.reshape(-1), h, rtol=0, atol=2e-5)
    a = rng.standard_normal(1030).astype(np.float32)
    gh, gw = grpokit.linear_token_logprobs_backward(
        hidden.reshape(2, 515, 4), weight, ids.reshape(2, 515), r, a.reshape(2, 515), chunk_size=16
    )
    gz = ref_backward(hidden.astype(np.float64) @ weight.T.astype(np.float64), ids, a, np.zeros(1030))
    assert gh.shape == (2, 515, 4)
    np.testing.assert_allclose(gh.reshape(-1, 4), gz @ weight, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(gw, gz.T @ hidden, rtol=1e-4, atol=1e-4)


def test_only_requested_gradients_and_finite_differences():
    rng, hidden, weight, ids = problem(2, 3, 4, 11)
    r = grpokit.linear_token_logprobs(hidden, weight, ids, chunk_size=4)
    a, b = rng.standard_normal(3), rng.standard_normal(3)
    gh, gw = grpokit.linear_token_logprobs_backward(hidden, weight, ids, r, a, b, weight_grad=False, chunk_size=4)
    assert gw is None and gh.shape == hidden.shape

    def loss(hh, ww):
        rr = grpokit.linear_token_logprobs(hh, ww, ids)
        return float((a * rr.logp).sum() + (b * rr.entropy).sum())

    _, gw = grpokit.linear_token_logprobs_backward(hidden, weight, ids, r, a, b, hidden_grad=False)
    eps = 1e-6
    for arr, g, is_h in ((hidden, gh, True), (weight, gw, False)):
        fd = np.zeros_like(arr)
        for i in np.ndindex(arr.shape):
            p, m = arr.copy(), arr.copy()
            p[i] += eps
            m[i] -= eps
            fd[i] = (
                (loss(p, weight) - loss(m, weight)) / (2 * eps)
                if is_h
                else (loss(hidden, p) - loss(hidden, m)) / (2 * eps)
            )
        np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-7)


def test_torch_autograd_matches_eager():
    gen = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 5, 8, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = (torch.randn(97, 8, generator=gen, dtype=torch.float64) * 0.5).requires_grad_()
    ids = torch.randint(0, 97, (2, 5), generator=gen)
    out = grpokit.torch.linear_token_logprobs(hidden, weight, ids, temperature=1.2, chunk_size=32)
    wa, wb = (
        torch.randn(2, 5, generator=gen, dtype=torch.float64),
        torch.randn(2, 5, generator=gen, dtype=torch.float64),
    )
    ((out.logp * wa).sum() + (out.entropy * wb).sum()).backward()
    h2, w2 = hidden.detach().clone().requires_grad_(), weight.detach().clone().requires_grad_()
    logps = torch.log_softmax((h2 @ w2.T) / 1.2, -1)
    ent = -(logps.exp() * logps).sum(-1)
    ((logps.gather(-1, ids[..., None])[..., 0] * wa).sum() + (ent * wb).sum()).backward()
    torch.testing.assert_close(out.logp, logps.gather(-1, ids[..., None])[..., 0].detach())
    torch.testing.assert_close(hidden.grad, h2.grad)
    torch.testing.assert_close(weight.grad, w2.grad)


def test_gradcheck_float64():
    gen = torch.Generator().manual_seed(4)
    hidden = torch.randn(3, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    weight = torch.randn(10, 4, generator=gen, dtype=torch.float64, requires_grad=True)
    ids = torch.randint(0, 10, (3,), generator=gen)
    assert torch.autograd.gradcheck(
        lambda hh, ww: tuple(grpokit.torch.linear_token_logprobs(hh, ww, ids, chunk_size=3))[:2], (hidden, weight)
    )


def test_bad_inputs():
    _, hidden, weight, ids = problem(5, 3, 4, 10, np.float32)
    with pytest.raises(ValueError, match=r"weight: expected shape \(V, 4\)"):
        grpokit.linear_token_logprobs(hidden, weight[:, :3], ids)
    with pytest.raises(TypeError, match="weight: expected dtype float32, got float64"):
        grpokit.linear_token_logprobs(hidden, weight.astype(np.float64), ids)
    with pytest.raises(ValueError, match=r"token_ids: expected shape \(3,\)"):
        grpokit.linear_token_logprobs(hidden, weight, ids[:2])
    with pytest.raises(ValueError, match="row 1 holds 10"):
        grpokit.linear_token_logprobs(hidden, weight, [0, 10, 1])
    with pytest.raises(ValueError, match="chunk_size: expected a positive integer"):
        grpokit.linear_token_logprobs(hidden, weight, ids, chunk_size=0)
    with pytest.raises(ValueError, match="hidden: expected a"):
        grpokit.linear_token_logprobs(hidden[0], weight, ids[0])
    with pytest.raises(NotImplementedError, match="on the CPU pass float32 or float64"):
        t = torch.from_numpy(hidden).bfloat16()
        grpokit.linear_token_logprobs(t, torch.from_numpy(weight).bfloat16(), torch.from_numpy(ids))
    with pytest.raises(ValueError, match="temperature"):
        grpokit.linear_token_logprobs(hidden, weight, ids, temperature=0.0)


@pytest.mark.gpu
@pytest.mark.parametrize("tdtype", ["float32", "bfloat16", "float16"])
def test_gpu_matches_cpu(tdtype):
    gen = torch.Generator().manual_seed(6)
    hd, wd, ids = linear_head(gen, tdtype)
    a, b = torch.randn(37, generator=gen), torch.randn(37, generator=gen)
    # The CPU oracle sees the same rounded inputs in float32.
    cpu = grpokit.linear_token_logprobs(hd.float(), wd.float(), ids, chunk_size=300)
    gh, gw = grpokit.linear_token_logprobs_backward(hd.float(), wd.float(), ids, cpu, a, b, chunk_size=300)
    gpu = grpokit.linear_token_logprobs(hd.cuda(), wd.cuda(), ids.cuda(), chunk_size=300, check_finite=True)
    ggh, ggw = grpokit.linear_token_logprobs_backward(
        hd.cuda(), wd.cuda(), ids.cuda(), gpu, a.cuda(), b.cuda(), chunk_size=300
    )
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=1e-4, atol=1e-3)
    torch.testing.assert_close(gpu.entropy.cpu(), cpu.entropy, rtol=1e-4, atol=1e-3)
    tol = {"float32": 1e-4, "bfloat16": 2.0**-6, "float16": 2.0**-9}[tdtype]
    torch.testing.assert_close(ggh.cpu().float(), gh, rtol=tol, atol=tol)
    torch.testing.assert_close(ggw.cpu().float(), gw, rtol=tol, atol=tol)


@pytest.mark.gpu
def test_gpu_strided_operands_and_side_stream():
    # One row of hidden as a transposed (H, 1) column (DLPack strides (1, 1): the row stride of a
    # single row is arbitrary, cuBLAS needs a leading dimension >= H) and weight rows padded; run on
    # an explicit side stream with check_finite (the check reads on that stream).
    gen = torch.Generator().manual_seed(8)
    col = torch.randn(48, 1, generator=gen)
    padded = torch.randn(300, 51, generator=gen) / 8
    ids = torch.tensor([17])
    a, b = torch.ones(1), torch.full((1,), 0.5)
    cpu = grpokit.linear_token_logprobs(col.T.contiguous(), padded[:, :48].contiguous(), ids, chunk_size=64)
    gh, gw = grpokit.linear_token_logprobs_backward(
        col.T.contiguous(), padded[:, :48].contiguous(), ids, cpu, a, b, chunk_size=64
    )
    hcol, wpad = col.cuda().T, padded.cuda()[:, :48]
    assert hcol.stride() == (1, 1) and wpad.stride() == (51, 1)
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    gpu = grpokit.linear_token_logprobs(hcol, wpad, ids.cuda(), chunk_size=64, check_finite=True, stream=side)
    ggh, ggw = grpokit.linear_token_logprobs_backward(
        hcol, wpad, ids.cuda(), gpu, a.cuda(), b.cuda(), chunk_size=64, stream=side
    )
    side.synchronize()
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=1e-4, atol=1e-4)
    torch.testing.assert_close(ggh.cpu(), gh, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(ggw.cpu(), gw, rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="rows must not overlap"):
        grpokit.linear_token_logprobs(
            torch.randn(2, 48).cuda(), padded.cuda()[:1, :48].expand(300, 48), ids.cuda().repeat(2)
        )
