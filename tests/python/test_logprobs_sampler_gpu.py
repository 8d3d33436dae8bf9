"""The sampler's truncation (top-k / top-p / min-p) and large-magnitude temperatures on the GPU
(cuda/logprobs_sampler.cu, cuda/logprobs.cu), against the CPU engine: the kept set bit for bit, values
and gradients within float32 rounding. Skipped without CUDA; the same kernels run on host threads
in every CI run (tests/cuda_emulation/emulate_logprobs_sampler.cpp)."""

import numpy as np
import pytest

import grpokit

torch = pytest.importorskip("torch")
pytestmark = pytest.mark.gpu


def rows(seed, n=12, v=3001, kind="normal"):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, v, generator=g) * 2.5
    if kind == "ties":
        x = x.round()
        x[0] = 0.0  # a uniform row
    if kind == "neginf":
        x[:, 1::3] = -float("inf")
    return x


def both(x, ids, **kw):
    cpu = grpokit.token_logprobs(x, ids, **kw)
    gpu = grpokit.token_logprobs(x.cuda(), ids.cuda(), check_finite=True, **kw)
    return cpu, gpu


CASES = [
    {"top_k": 1},
    {"top_k": 50},
    {"top_k": 10**6},
    {"top_p": 0.9},
    {"top_p": 1e-9},
    {"top_p": 1.0, "top_k": 0},
    {"min_p": 0.05},
    {"min_p": 1.0},
    {"top_k": 20, "top_p": 0.8, "min_p": 0.02},
]


@pytest.mark.parametrize("conv,entropy", [("vllm", "full"), ("sglang", "sampler")])
@pytest.mark.parametrize("kind", ["normal", "ties", "neginf"])
@pytest.mark.parametrize("kw", CASES)
def test_matches_cpu(kw, kind, conv, entropy):
    x = rows(len(str(kw)) + len(kind), kind=kind)
    ids = torch.arange(x.shape[0]) * 7 % x.shape[1]
    if kind == "neginf":
        ids = ids - ids % 3  # finite logits
    cpu, gpu = both(x, ids, temperature=0.8, sampler=conv, entropy=entropy, **kw)
    assert torch.equal(gpu.keep_min.cpu(), cpu.keep_min), "the kept set differs"
    assert gpu.num_outside == cpu.num_outside
    assert torch.equal(torch.isneginf(gpu.logp.cpu()), torch.isneginf(cpu.logp))
    fin = ~torch.isneginf(cpu.logp)
    torch.testing.assert_close(gpu.logp.cpu()[fin], cpu.logp[fin], rtol=2e-5, atol=2e-5)
    for name in ("entropy", "lse", "kept_logmass"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=2e-5, atol=2e-5)
    ga = torch.randn(x.shape[0])
    gb = torch.randn(x.shape[0])
    g_cpu = grpokit.token_logprobs_backward(x, ids, cpu, ga, gb)
    g_gpu = grpokit.token_logprobs_backward(x.cuda(), ids.cuda(), gpu, ga.cuda(), gb.cuda())
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-4, atol=2e-6)


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bfloat16", "float16"])
def test_16bit_per_row_parameters_3d_and_strided(dtype):
    base = rows(3, n=8, v=1001).to(dtype).reshape(2, 4, 1001)
    view = base[:, :-1]  # rows strided in place
    ids = torch.tensor([[5, 9, 100], [0, 1000, 77]])
    kw = dict(top_k=torch.tensor([[3, 0, 40], [1, 2000, 9]]), top_p=np.array([[0.5, 0.9, 1.0], [0.3, 0.99, 0.7]]))
    cpu, gpu = both(view, ids, min_p=0.01, sampler="vllm", entropy="sampler", **kw)
    assert torch.equal(gpu.keep_min.cpu(), cpu.keep_min)
    fin = ~torch.isneginf(cpu.logp)
    torch.testing.assert_close(gpu.logp.cpu()[fin], cpu.logp[fin], rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(gpu.entropy.cpu(), cpu.entropy, rtol=2e-5, atol=2e-5)


def test_torch_autograd_and_compile_on_the_gpu():
    import grpokit.torch as gkt

    x = rows(5, n=6, v=500).cuda().requires_grad_()
    ids = torch.tensor([1, 2, 3, 4, 5, 6]).cuda()
    out = gkt.token_logprobs(x, ids, top_k=40, top_p=0.9, entropy="sampler")
    loss = out.logp[torch.isfinite(out.logp)].sum() + 0.5 * out.entropy.sum()
    loss.backward()
    xc = x.detach().cpu().requires_grad_()
    ref = gkt.token_logprobs(xc, ids.cpu(), top_k=40, top_p=0.9, entropy="sampler")
    (ref.logp[torch.isfinite(ref.logp)].sum() + 0.5 * ref.entropy.sum()).backward()
    torch.testing.assert_close(x.grad.cpu(), xc.grad, rtol=1e-4, atol=2e-6)
    compiled = torch.compile(lambda a: gkt.token_logprobs(a, ids, top_p=0.9).logp, fullgraph=True)
    torch.testing.assert_close(compiled(x.detach()), gkt.token_logprobs(x.detach(), ids, top_p=0.9).logp)


@pytest.mark.parametrize("entropy", ["full", "sampler"])
def test_keep_replay_matches_cpu(entropy):
    from grpokit._logprobs_keep import keep_from_mask

    x = rows(21, kind="neginf")
    g = torch.Generator().manual_seed(22)
    ids = torch.randint(0, x.shape[1], (x.shape[0],), generator=g)
    mask = torch.rand(x.shape, generator=g) < 0.05
    mask[:, 0] = True  # a finite logit in every set
    mask[torch.arange(x.shape[0]), ids] = True
    mask[0] = False  # the whole vocabulary
    mask[1, ids[1]] = ids[1] == 0  # the token outside its set
    k_ids, k_off = keep_from_mask(mask)
    cpu = grpokit.token_logprobs(x, ids, keep=(k_ids, k_off), entropy=entropy)
    gpu = grpokit.token_logprobs(
        x.cuda(), ids.cuda(), keep=(k_ids.cuda(), k_off.cuda()), entropy=entropy, check_finite=True
    )
    assert gpu.num_outside == cpu.num_outside
    fin = torch.isfinite(cpu.logp)
    assert torch.equal(torch.isfinite(gpu.logp.cpu()), fin)
    torch.testing.assert_close(gpu.logp.cpu()[fin], cpu.logp[fin], rtol=2e-5, atol=2e-5)
    for name in ("entropy", "lse", "kept_logmass"):
        torch.testing.assert_close(getattr(gpu, name).cpu(), getattr(cpu, name), rtol=2e-5, atol=2e-5)
    a = torch.randn(x.shape[0], generator=g)
    g_cpu = grpokit.token_logprobs_backward(x, ids, cpu, a, a)
    g_gpu = grpokit.token_logprobs_backward(x.cuda(), ids.cuda(), gpu, a.cuda(), a.cuda())
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-4, atol=2e-6)
    bad = (torch.tensor([2, 1], device="cuda"), torch.tensor([0, 2] + [2] * (x.shape[0] - 1), device="cuda"))
    with pytest.raises(ValueError, match="logits/keep"):
        grpokit.token_logprobs(x.cuda(), ids.cuda(), keep=bad, check_finite=True)


def test_bad_parameters_and_rows():
    x = torch.zeros(2, 10, device="cuda")
    ids = torch.tensor([0, 1], device="cuda")
    with pytest.raises(ValueError, match=r"top_p: row 1 holds 1.5; expected a value in \(0, 1\]"):
        grpokit.token_logprobs(x, ids, top_p=[0.5, 1.5])
    with pytest.raises(ValueError, match=r"min_p: row 0 holds -0.1"):
        grpokit.token_logprobs(x, ids, min_p=-0.1)
    with pytest.raises(ValueError, match="a row has a token id outside"):
        grpokit.token_logprobs(x, torch.tensor([0, 10], device="cuda"), top_k=3, check_finite=True)


@pytest.mark.parametrize("mag", [1e4, 1e20, 3.4e38])
@pytest.mark.parametrize("t", [1e-3, 0.7, 1e3])
def test_temperature_at_any_magnitude(mag, t):
    """The temperature rule on the GPU (logits and hidden × weight): differences from the raw
    maximum, scaled once, as the CPU engine; the CPU engine is exact here (test_logprobs_scale.py)."""
    g = torch.Generator().manual_seed(int(np.log10(mag)) + int(t * 10))
    x = (mag * (1.0 + 1e-6 * torch.randn(4, 300, generator=g, dtype=torch.float64))).clamp(-3.4e38, 3.4e38)
    x[1] = -x[1]
    x = x.float()
    ids = torch.tensor([5, 0, 1, 299])
    cpu, gpu = both(x, ids, temperature=t)
    torch.testing.assert_close(gpu.logp.cpu(), cpu.logp, rtol=2e-5, atol=2e-5)
    torch.testing.assert_close(gpu.entropy.cpu(), cpu.entropy, rtol=2e-5, atol=2e-5)
    assert torch.equal(torch.isinf(gpu.lse.cpu()), torch.isinf(cpu.lse))
    a, b = torch.randn(4), torch.randn(4)
    g_cpu = grpokit.token_logprobs_backward(x, ids, cpu, a, b)
    g_gpu = grpokit.token_logprobs_backward(x.cuda(), ids.cuda(), gpu, a.cuda(), b.cuda())
    torch.testing.assert_close(g_gpu.cpu(), g_cpu, rtol=1e-4, atol=1e-5 / min(t, 1.0))
    from grpokit.info import build_info

    if build_info()["cuda_paths"]["linear_logprobs_cublas"]:
        eye = torch.eye(300)
        lin = grpokit.linear_token_logprobs(x.cuda(), eye.cuda(), ids.cuda(), temperature=t)
        torch.testing.assert_close(lin.logp.cpu(), cpu.logp, rtol=2e-5, atol=2e-5)
