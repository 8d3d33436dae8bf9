"""grpokit.variance_proxy: verl's variance-proxy metrics (compute_variance_proxy_metrics) against an
fp64 NumPy reference written from verl 0.9.1's verl/trainer/ppo/metric_utils.py, and against verl's
own function where verl imports; the Σπ² comes from the fused log-prob op."""

import numpy as np
import pytest

import grpokit as gk

NAMES = ("proxy1_signal_strength", "proxy2_total_power", "proxy3_pure_noise", "expected_a_squared", "expected_w")


def batch(B=6, T=7, seed=0, V=11):
    g = np.random.default_rng(seed)
    logits = g.normal(size=(B, T, V))
    ids = g.integers(0, V, size=(B, T))
    lens = g.integers(1, T + 1, size=B)
    lens[2] = 0  # an empty row: Ā = 0, W = 0, and it still counts in the batch means
    m = np.arange(T)[None, :] < lens[:, None]
    A = np.broadcast_to(g.normal(size=(B, 1)), (B, T)).copy()  # outcome advantages over the tokens
    rho = np.exp(g.normal(scale=0.3, size=(B, T)))
    rho[0, 0] = 0.0  # a zeroed IS weight (verl divides by max(ρ², 1e-10))
    return logits, ids, m, A, rho


def reference(logp, spp, A, m, rho=None, g=None):
    mf = m.astype(float)
    w_tok = 1 - 2 * np.exp(logp) + spp
    if rho is not None:
        w_tok = w_tok * rho**2
    a = (A * mf).sum(-1) / (mf.sum(-1) + 1e-8)
    W = (w_tok * mf).sum(-1)
    if rho is None:
        p2 = np.mean(a**2 * np.maximum(W, 0))
    else:
        r = (rho * mf).sum(-1) / (mf.sum(-1) + 1e-8)
        w0 = np.maximum((w_tok / np.maximum(rho**2, 1e-10) * mf).sum(-1), 0)
        p2 = np.mean(r**2 * a**2 * w0)
    p1 = 0.0 if g is None else g * g
    p3 = 0.0 if g is None else max(0.0, (p2 - g * g) / (len(a) - 1))
    return dict(zip(NAMES, (p1, p2, p3, np.mean(a**2), np.mean(W))))


@pytest.mark.parametrize("with_is", [False, True])
@pytest.mark.parametrize("grad_norm", [None, 0.05])
def test_matches_the_reference_from_the_log_prob_op(with_is, grad_norm):
    logits, ids, m, A, rho = batch(seed=1)
    r = gk.token_logprobs(logits, ids, sum_sq_probs=True)
    got = gk.variance_proxy(A, m, logprobs=r, is_weights=rho if with_is else None, gradient_norm=grad_norm)
    want = reference(np.asarray(r.logp), np.asarray(r.sum_sq_probs), A, m, rho if with_is else None, grad_norm)
    assert set(got) == set(NAMES)
    for k in NAMES:
        assert float(got[k]) == pytest.approx(want[k], rel=1e-12, abs=1e-15), k
    if grad_norm is not None:
        assert float(got["proxy3_pure_noise"]) > 0.0
    same = gk.variance_proxy(A, m, logp=r.logp, sum_pi_squared=r.sum_sq_probs, is_weights=rho if with_is else None)
    assert float(same["proxy2_total_power"]) == float(got["proxy2_total_power"])


@pytest.mark.parametrize("with_is", [False, True])
def test_verl_parity(with_is):
    metric_utils = pytest.importorskip("verl.trainer.ppo.metric_utils", exc_type=ImportError)
    torch = pytest.importorskip("torch")
    from verl import DataProto

    logits, ids, m, A, rho = batch(seed=2)
    r = gk.token_logprobs(logits, ids, sum_sq_probs=True)
    tensors = {
        "old_log_probs": torch.tensor(np.asarray(r.logp)),
        "sum_pi_squared": torch.tensor(np.asarray(r.sum_sq_probs)),
        "advantages": torch.tensor(A),
        "response_mask": torch.tensor(m.astype(np.float64)),
    }
    if with_is:
        tensors["rollout_is_weights"] = torch.tensor(rho)
    want = metric_utils.compute_variance_proxy_metrics(DataProto.from_dict(tensors=tensors), gradient_norm=0.02)
    got = gk.variance_proxy(A, m, logprobs=r, is_weights=rho if with_is else None, gradient_norm=0.02)
    for k in NAMES:
        assert float(got[k]) == pytest.approx(float(want[f"variance_proxy/{k}"]), rel=1e-12, abs=1e-15), k


def test_torch_in_torch_out_and_bad_inputs():
    torch = pytest.importorskip("torch")
    logits, ids, m, A, rho = batch(seed=3)
    r = gk.token_logprobs(torch.tensor(logits, dtype=torch.float32), torch.tensor(ids), sum_sq_probs=True)
    got = gk.variance_proxy(torch.tensor(A, dtype=torch.float32), torch.tensor(m), logprobs=r)
    assert isinstance(got["expected_w"], torch.Tensor) and got["expected_w"].dtype == torch.float64
    lp = np.asarray(gk.token_logprobs(logits, ids).logp)
    with pytest.raises(ValueError, match="sum_pi_squared: required"):
        gk.variance_proxy(A, m, logp=lp)
    with pytest.raises(ValueError, match="logprobs: the result has no sum_sq_probs"):
        gk.variance_proxy(A, m, logprobs=gk.token_logprobs(logits, ids))
    spp = np.full(lp.shape, 0.2)
    bad = A.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"advantages: element \(0, 0\) is nan at a selected position"):
        gk.variance_proxy(bad, m, logp=lp, sum_pi_squared=spp)
    with pytest.raises(ValueError, match="gradient_norm: expected a norm >= 0"):
        gk.variance_proxy(A, m, logp=lp, sum_pi_squared=spp, gradient_norm=-1.0)
    with pytest.raises(ValueError, match="is_weights: .*shape"):
        gk.variance_proxy(A, m, logp=lp, sum_pi_squared=spp, is_weights=rho[:, :-1])


@pytest.mark.gpu
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("with_is", [False, True])
def test_cuda_kernel_equals_the_cpu_engine(dtype, with_is):
    """The CUDA kernel on device tensors (Σπ² from the fused op on the GPU) against the CPU engine on the
    very values the GPU read; results stay on the device."""
    torch = pytest.importorskip("torch")  # conftest skips gpu tests without a usable CUDA build and device
    logits, ids, m, A, rho = batch(B=33, T=70, V=517, seed=4)
    dt = getattr(torch, dtype)
    on = lambda x, t=dt: torch.tensor(x, dtype=t, device="cuda")  # noqa: E731
    r = gk.token_logprobs(on(logits), on(ids, torch.int64), sum_sq_probs=True)
    kw = dict(is_weights=on(rho) if with_is else None, gradient_norm=0.05)
    got = gk.variance_proxy(on(A), on(m, torch.bool), logprobs=r, **kw)
    host = lambda x: None if x is None else x.double().cpu().numpy()  # noqa: E731
    want = gk.variance_proxy(
        host(on(A)),
        m,
        logp=host(r.logp),
        sum_pi_squared=host(r.sum_sq_probs),
        is_weights=host(kw["is_weights"]),
        gradient_norm=0.05,
    )
    for k in NAMES:
        assert got[k].device.type == "cuda", k
        assert float(got[k]) == pytest.approx(float(want[k]), rel=1e-9, abs=1e-12), k
