"""The CUDA advantages kernel against the CPU engine (skipped without a GPU)."""

import numpy as np
import pytest

import grpokit

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

OPTIONS = [
    dict(),
    dict(std="population"),
    dict(std="sample", epsilon=1e-4),
    dict(std="sample", std_scope="batch", epsilon=1e-4),
    dict(baseline="leave_one_out"),
    dict(baseline="leave_one_out", std="sample"),
]


@pytest.mark.parametrize("opts", OPTIONS)
@pytest.mark.parametrize("dtype, tol", [(torch.float64, 1e-12), (torch.float32, 1e-6)])
@pytest.mark.parametrize("B, G", [(19 * 7, 7), (1024, 16), (6, 2)])
def test_cuda_matches_cpu(opts, dtype, tol, B, G):
    gen = torch.Generator().manual_seed(B)
    r = torch.randn(B, generator=gen, dtype=dtype)
    r[3] = float("nan")
    cpu = grpokit.advantages(r, group_size=G, **opts)
    gpu = grpokit.advantages(r.cuda(), group_size=G, **opts)
    assert gpu.is_cuda and gpu.dtype == dtype
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=tol, atol=tol)


@pytest.mark.parametrize("opts", OPTIONS)
def test_cuda_at_the_float64_maximum(opts):
    # The scaled group statistics (math/advantages.hpp) on the device: finite where the exact value is.
    r = torch.tensor(
        [9e307, -9e307, 1.7e308, -1.7e308, 5e307, 0.0, 1.0, float.fromhex("0x1.0000000000001p0")], dtype=torch.float64
    )
    cpu = grpokit.advantages(r, group_size=2, **opts)
    gpu = grpokit.advantages(r.cuda(), group_size=2, **opts)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-12, atol=0)


@pytest.mark.parametrize("opts", OPTIONS)
def test_cuda_group_ids(opts):
    r = torch.randn(12, dtype=torch.float64)
    ids = torch.tensor([3, 1, 3, 1, 2, 2, 3, 1, 2, 2, 3, 1])
    cpu = grpokit.advantages(r, group_ids=ids, **opts)
    gpu = grpokit.advantages(r.cuda(), group_ids=ids.cuda(), **opts)
    np.testing.assert_allclose(gpu.cpu().numpy(), cpu.numpy(), rtol=1e-12, atol=1e-12)


def test_side_stream_and_mixed_devices():
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        r = torch.randn(64, device="cuda")
        out = grpokit.advantages(r, group_size=8, std="sample")
    s.synchronize()
    np.testing.assert_allclose(
        out.cpu().numpy(), grpokit.advantages(r.cpu(), group_size=8, std="sample").numpy(), rtol=1e-6, atol=1e-6
    )
    with pytest.raises(ValueError, match="same device"):
        grpokit.advantages(r, group_ids=torch.zeros(64, dtype=torch.int64))
