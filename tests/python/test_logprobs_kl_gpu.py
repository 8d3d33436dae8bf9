"""The full-vocabulary KL against a reference on the GPU (cuda/logprobs_kl.cu) against the CPU engine:
values and gradients within float32 rounding, 16-bit logits, in-place gradients, bad rows marked NaN.
Skipped without CUDA; the same kernels run on host threads in every CI run
(tests/cuda_emulation/emulate_logprobs.cpp, check_kl)."""

import pytest

import grpokit

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu
gkt = pytest.importorskip("grpokit.torch")


def pair(seed, n, v, dtype=torch.float32):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, v, generator=g) * 2.5
    y = x + torch.randn(n, v, generator=g) * 0.7
    x[:, 5::11] = -float("inf")
    y[:, 5::11] = -float("inf")
    return x.to(dtype), y.to(dtype), torch.randint(0, v, (n,), generator=g) // 11 * 11


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("v", [1, 33, 3001, 151936])
def test_matches_cpu(v, dtype):
    x, y, ids = pair(v, 6, v, dtype)
    cpu = grpokit.token_logprobs_kl(x, y, ids, temperature=0.8)
    gpu = grpokit.token_logprobs_kl(x.cuda(), y.cuda(), ids.cuda(), temperature=0.8, check_finite=True)
    for name in ("logp", "entropy", "kl", "lse", "ref_lse"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=2e-5, atol=2e-5)
    g = torch.Generator().manual_seed(1)
    a, b, k = (torch.randn(6, generator=g) for _ in range(3))
    want = grpokit.token_logprobs_kl_backward(x, y, ids, cpu, a, b, k)
    xg = x.cuda()  # the gradient written over the logits (in place)
    got = grpokit.token_logprobs_kl_backward(xg, y.cuda(), ids.cuda(), gpu, a.cuda(), b.cuda(), k.cuda(), out=xg)
    tol = 1e-2 if dtype != torch.float32 else 1e-4
    torch.testing.assert_close(got.cpu().float(), want.float(), rtol=tol, atol=2e-6)


def test_torch_autograd_on_gpu():
    x, y, ids = pair(3, 4, 500)
    xc = x.cuda().requires_grad_()
    out = gkt.token_logprobs_kl(xc, y.cuda(), ids.cuda())
    (out.kl.sum() - out.logp.sum()).backward()
    xr = x.clone().requires_grad_()
    ref = gkt.token_logprobs_kl(xr, y, ids)
    (ref.kl.sum() - ref.logp.sum()).backward()
    torch.testing.assert_close(xc.grad.cpu(), xr.grad, rtol=1e-4, atol=1e-6)


def test_bad_rows_are_nan_and_checked():
    x, y, ids = pair(4, 3, 40)
    y[1, 2] = float("nan")
    r = grpokit.token_logprobs_kl(x.cuda(), y.cuda(), ids.cuda())
    assert torch.isnan(r.kl[1]).item() and torch.isfinite(r.kl[0]).item()
    with pytest.raises(ValueError, match="ref_logits"):
        grpokit.token_logprobs_kl(x.cuda(), y.cuda(), ids.cuda(), check_finite=True)
