"""The CUDA correction kernels (cuda/corrections.cu) against the CPU engine (skipped without a GPU).

The CPU engine is checked against fp64 NumPy references in test_corrections.py. Here every
importance-weight mode and rejection criterion runs on torch CUDA tensors and on the same values on
the CPU; half-precision log-probs are compared with the CPU engine on their float64 values.
"""

import math

import numpy as np
import pytest

import grpokit

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

import test_estimators_gpu  # noqa: E402
from torch_batches import ragged_logprobs  # noqa: E402

# Weights are computed in double and rounded once to the log-probs' dtype (the estimators' tolerances,
# a tighter float32 atol); metrics stay float64.
TOL = {**test_estimators_gpu.TOL, torch.float32: (2e-6, 1e-7)}

SHAPES = [(6, 5), (12, 33), (10, 1), (130, 17), (256, 300)]

IMPORTANCE = [
    dict(level="token", mode="truncate", clip_max=3.0),
    dict(level="token", mode="mask", clip_max=3.0),
    dict(level="sequence", mode="truncate", clip_max=3.0),
    dict(level="sequence", mode="mask", clip_max=3.0),
    dict(level="token", mode="truncate", clip_max=2.0, log_clamp=20.0),
    dict(level="sequence", mode="truncate", clip_max=2.0, log_clamp=20.0, batch_normalize=True),
    dict(level="token", mode="mask", clip_min=0.5, clip_max=5.0, log_clamp=20.0, batch_normalize=True),
    dict(level="token", mode="truncate", clip_max=None),
    dict(level="sequence", mode="mask", clip_min=0.8, clip_max=1.2, log_clamp=0.1),
]

REJECTION = [
    ("token_k1", "0.8_1.25"),
    ("token_k2", 0.01),
    ("token_k3", 0.01),
    ("seq_sum_k1", "0.5_2.0"),
    ("seq_sum_k2", 0.05),
    ("seq_sum_k3", 0.05),
    ("seq_mean_k1", "0.95_1.05"),
    ("seq_mean_k2", 0.01),
    ("seq_mean_k3", 0.01),
    ("seq_max_k2", 0.03),
    ("seq_max_k3", 0.03),
    (["token_k1", "seq_mean_k3", "seq_max_k2"], ["0.8_1.25", 0.01, 0.03]),
]


def logprobs(B, T, noise, seed):
    """trainer/sampler log-probs with NaN sampler values (unscored tokens), padding holding inf/NaN,
    row 2 all masked, a gap in some rows."""
    gen = torch.Generator().manual_seed(seed)
    mask, a, b = ragged_logprobs(B, T, gen, noise, empty_row=True, gap=True)
    b[mask & (torch.rand(B, T, generator=gen) < 0.09)] = float("nan")
    a = torch.where(mask, a, torch.where(torch.arange(T)[None, :] % 2 == 1, float("inf"), float("nan")))
    return a, b, mask


def metric_close(name, g, c, rtol, tok_mean):
    if name == "std":  # verl's E[c²] − mean² cancels for nearly equal weights: compare variances
        assert abs(g * g - c * c) <= 1e-9 * (1.0 + tok_mean**2) + rtol * c * c, (name, g, c)
        return
    if math.isnan(c) or math.isinf(c):
        assert g == c or (math.isnan(g) and math.isnan(c)), (name, g, c)
        return
    assert abs(g - c) <= max(rtol, 1e-9) * abs(c) + 1e-12, (name, g, c)


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16, torch.float16], ids=str)
@pytest.mark.parametrize("opts", IMPORTANCE, ids=str)
def test_importance_weights_match_cpu(opts, dtype, shape):
    B, T = shape
    a, b, m = logprobs(B, T, 0.4, B * 7 + T)
    a_dev, b_dev, m_dev = a.to(dtype).cuda(), b.to(dtype).cuda(), m.cuda()
    cpu = grpokit.importance_weights(a_dev.double().cpu(), b_dev.double().cpu(), m, **opts)
    gpu = grpokit.importance_weights(a_dev, b_dev, m_dev, **opts)
    rtol, atol = TOL[dtype]
    assert gpu.weights.is_cuda and gpu.weights.dtype == dtype and gpu.weights.shape == cpu.weights.shape
    c = cpu.weights.numpy()
    np.testing.assert_allclose(
        gpu.weights.double().cpu().numpy(), c, rtol=rtol, atol=atol * max(float(np.abs(c).max()), 1e-30)
    )
    assert set(gpu.metrics) == set(cpu.metrics)
    for name, value in gpu.metrics.items():
        assert torch.is_tensor(value) and value.is_cuda and value.dim() == 0 and value.dtype == torch.float64
        metric_close(name, float(value), float(cpu.metrics[name]), 1e-9, float(cpu.metrics["ratio_token_mean"]))


@pytest.mark.parametrize("shape", SHAPES, ids=str)
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("criteria, thresholds", REJECTION, ids=str)
def test_rejection_mask_matches_cpu(criteria, thresholds, dtype, shape):
    B, T = shape
    a, b, m = logprobs(B, T, 0.15, B * 3 + T)
    a_dev, b_dev = a.to(dtype).cuda(), b.to(dtype).cuda()
    mask = m.to(torch.uint8)  # any mask dtype
    cpu = grpokit.rejection_mask(a_dev.double().cpu(), b_dev.double().cpu(), mask, criteria, thresholds)
    gpu = grpokit.rejection_mask(a_dev, b_dev, mask.cuda(), criteria, thresholds)
    assert gpu.mask.is_cuda and gpu.mask.dtype == torch.bool
    assert torch.equal(gpu.mask.cpu(), cpu.mask)
    for name, value in gpu.metrics.items():
        assert value.is_cuda and value.dim() == 0
        metric_close(name, float(value), float(cpu.metrics[name]), 1e-9, 1.0)


def test_correction_presets_match_cpu():
    a, b, m = logprobs(64, 40, 0.2, 1)
    for name in grpokit.CORRECTIONS:
        cpu = grpokit.correction(name, a, b, m)
        gpu = grpokit.correction(name, a.cuda(), b.cuda(), m.cuda())
        assert torch.equal(gpu.mask.cpu().bool(), torch.as_tensor(cpu.mask).bool())
        if cpu.weights is not None:
            np.testing.assert_allclose(gpu.weights.cpu().numpy(), cpu.weights.numpy(), rtol=1e-10, atol=1e-12)
        for k, v in gpu.metrics.items():
            metric_close(k.split("/", 1)[1], float(v), float(cpu.metrics[k]), 1e-9, 1.0)


def test_deterministic_side_stream_and_errors():
    a, b, m = logprobs(256, 300, 0.3, 2)
    a, b, m = a.cuda(), b.cuda(), m.cuda()
    x = grpokit.importance_weights(a, b, m, level="token", mode="truncate")
    y = grpokit.importance_weights(a, b, m, level="token", mode="truncate")
    assert torch.equal(x.weights, y.weights)
    assert all(torch.equal(x.metrics[k], y.metrics[k]) for k in x.metrics)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        z = grpokit.rejection_mask(a, b, m, "seq_mean_k3", 0.01)
    s.synchronize()
    cpu = grpokit.rejection_mask(a.cpu(), b.cpu(), m.cpu(), "seq_mean_k3", 0.01)
    assert torch.equal(z.mask.cpu(), cpu.mask)
    with pytest.raises(ValueError, match="same device"):
        grpokit.importance_weights(a, b, m.cpu())
    with pytest.raises(ValueError, match="clip_max"):
        grpokit.importance_weights(a, b, m, clip_max=-1.0)


def test_segment_ids_match_cpu():
    B, T = 12, 33
    a, b, m = logprobs(B, T, 0.4, 5)
    gen = torch.Generator().manual_seed(3)
    ids = torch.cumsum(m & (torch.rand(B, T, generator=gen) < 0.3), dim=1)
    opts = dict(level="segment", mode="truncate", clip_max=1.2)
    cpu = grpokit.importance_weights(a, b, m, segment_ids=ids, **opts)
    gpu = grpokit.importance_weights(a.cuda(), b.cuda(), m.cuda(), segment_ids=ids.cuda(), **opts)
    np.testing.assert_allclose(gpu.weights.cpu().numpy(), cpu.weights.numpy(), rtol=1e-12, atol=1e-15)
