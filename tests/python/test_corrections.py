"""Train–inference corrections: fp64 NumPy references from TRL's and verl's definitions (docs/estimators.md),
TRL parity (TRL 1.16.0's own lines), properties and bad inputs."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grpokit as gk

rng = np.random.default_rng(77)


def batch(B=5, T=6, scale=0.3, seed=0, min_len=1):
    g = np.random.default_rng(seed)
    lens = g.integers(min_len, T + 1, size=B)
    m = np.arange(T)[None, :] < lens[:, None]
    trn = np.log(g.uniform(0.05, 1.0, size=(B, T)))
    smp = trn + g.normal(scale=scale, size=(B, T))
    trn[~m] = np.nan  # padding may hold anything
    smp[~m] = np.inf
    return trn, smp, m


# ---- references ---------------------------------------------------------------------------------


def ref_weights(trn, smp, m, level, mode, lo=-np.inf, hi=np.inf, clamp=np.inf):
    """(weights at selected tokens (B,T) or per row (B,), raw ones)."""
    lr = np.where(m, trn - smp, 0.0)
    if level == "token":
        raw = np.where(m, np.exp(np.clip(lr, -clamp, clamp)), 0.0)
    else:
        raw = np.exp(np.clip(lr.sum(-1), -clamp, clamp))
    if mode == "truncate":
        w = np.clip(raw, lo, hi)
    else:
        w = np.where((raw < lo) | (raw > hi), 0.0, raw)
    if level == "token":
        w = np.where(m, w, 0.0)
    return w, raw


def masked_mean(x, m):  # verl_F.masked_mean
    return (x * m).sum() / (m.sum() + 1e-8)


def ref_verl_metrics(trn, smp, m, level, w, raw, hi, lo=None):
    """verl compute_is_metrics + compute_offpolicy_metrics (the parts grpokit reports)."""
    mf = m.astype(float)
    lo_m = 1.0 / hi if lo is None else lo
    wt = np.broadcast_to(w[:, None], m.shape) * mf if level == "sequence" else w
    out = {"ratio_token_mean": masked_mean(wt, mf)}
    lr = np.where(m, trn - smp, 0.0)
    if level == "token":
        out["fraction_high"] = masked_mean((raw > hi).astype(float), mf)
        out["fraction_low"] = masked_mean((raw < lo_m).astype(float), mf)
    else:
        s = lr.sum(-1)
        out["fraction_high"] = np.mean(s > math.log(hi))
        out["fraction_low"] = np.mean(s < math.log(lo_m))
    c = np.clip(wt, 0, hi)
    mc = masked_mean(c, mf)
    out["std"] = math.sqrt(max(masked_mean(c**2, mf) - mc**2, 0.0))
    out["ess"] = 1.0 / masked_mean((c / (mc + 1e-8)) ** 2, mf)
    out["kl"] = masked_mean(-lr, mf)
    out["k3_kl"] = masked_mean(np.exp(lr) - lr - 1, mf)
    out["chi2_token"] = masked_mean(np.exp(np.clip(lr, -20, 20)) ** 2, mf) - 1
    out["chi2_seq"] = np.mean(np.exp(2 * np.clip(lr.sum(-1), -20, 20))) - 1
    return out


# ---- TRL parity (GRPOTrainer._generate_and_score_completions, TRL 1.16.0) ------------------------

torch = pytest.importorskip("torch")


def trl_is(old, smp, mask, mode, cmin, cmax):
    diff = torch.nan_to_num((old - smp) * mask, nan=0.0)
    seq = mode in ["sequence_mask", "sequence_truncate"]
    ratio = torch.exp(diff.sum(dim=-1, keepdim=True) if seq else diff)
    if mode in ["sequence_truncate", "token_truncate"]:
        ratio = torch.clamp(ratio, min=cmin, max=cmax)
    else:
        lo = cmin if cmin is not None else -math.inf
        hi = cmax if cmax is not None else math.inf
        ratio = ratio.masked_fill((ratio < lo) | (ratio > hi), value=0.0)
    delta = torch.abs(old - smp)[mask.bool() & ~torch.isnan(torch.abs(old - smp))]
    flat = ratio.flatten() if seq else ratio[mask.bool()]
    metrics = {
        "ratio_min": flat.min(),
        "ratio_mean": flat.mean(),
        "ratio_max": flat.max(),
        "logp_diff_mean": delta.mean(),
        "logp_diff_max": delta.max(),
    }
    return ratio, metrics


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
@pytest.mark.parametrize("bounds", [(None, 3.0), (0.8, 1.25)])
def test_trl_parity(mode, bounds):
    trn, smp, m = batch(6, 5, scale=0.15, seed=3)
    smp[2, 0] = np.nan  # vLLM could not score this token
    cmin, cmax = bounds
    t_trn = torch.tensor(np.where(m, trn, 0.0))
    t_smp = torch.tensor(np.where(m, smp, 0.0))
    t_smp[2, 0] = float("nan")
    want, want_metrics = trl_is(t_trn, t_smp, torch.tensor(m, dtype=torch.float64), mode, cmin, cmax)
    level, kind = mode.split("_")
    got = gk.importance_weights(trn, smp, m, level=level, mode=kind, clip_min=cmin, clip_max=cmax)
    if level == "token":
        np.testing.assert_allclose(got.weights[m], want.numpy()[m], rtol=1e-13)
    else:
        np.testing.assert_allclose(got.weights, want.numpy()[:, 0], rtol=1e-13)
    for k, v in want_metrics.items():
        assert got.metrics[k] == pytest.approx(float(v), rel=1e-12), k


def test_defaults_are_trls():
    trn, smp, m = batch(seed=4, scale=0.6)
    default = gk.importance_weights(trn, smp, m)
    explicit = gk.importance_weights(trn, smp, m, level="sequence", mode="mask", clip_max=3.0)
    np.testing.assert_array_equal(default.weights, explicit.weights)
    preset = gk.correction("trl.sequence_mask", trn, smp, m)
    np.testing.assert_array_equal(preset.weights, default.weights)


# ---- verl references ---------------------------------------------------------------------------


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("bounds", [(None, 2.0), (0.5, 5.0)])  # TIS; IcePop
def test_verl_weights_and_metrics(level, bounds):
    trn, smp, m = batch(6, 7, scale=0.25, seed=5)
    lo, hi = bounds
    mode = "truncate" if lo is None else "mask"
    got = gk.importance_weights(trn, smp, m, level=level, mode=mode, clip_min=lo, clip_max=hi, log_clamp=20.0)
    w, raw = ref_weights(trn, smp, m, level, mode, -np.inf if lo is None else lo, hi, 20.0)
    np.testing.assert_allclose(got.weights, w, rtol=1e-13, atol=0)
    want = ref_verl_metrics(trn, smp, m, level, w, raw, hi, lo)
    for k, v in want.items():
        assert got.metrics[k] == pytest.approx(v, rel=1e-10, abs=1e-14), k
    if mode == "mask" and level == "token":  # verl rollout_is_oob_ratio
        oob = masked_mean((((raw < lo) | (raw > hi)) & m).astype(float), m.astype(float))
        assert got.metrics["masked_fraction"] == pytest.approx(oob, rel=1e-12)


@pytest.mark.parametrize("level", ["token", "sequence"])
def test_batch_normalisation(level):
    trn, smp, m = batch(5, 6, scale=0.2, seed=6)
    plain = gk.importance_weights(trn, smp, m, level=level, mode="truncate", clip_max=2.0, log_clamp=20.0)
    normed = gk.importance_weights(
        trn, smp, m, level=level, mode="truncate", clip_max=2.0, log_clamp=20.0, batch_normalize=True
    )
    w = plain.weights
    if level == "token":
        mean = masked_mean(w, m.astype(float))
    else:
        L = m.sum(-1)
        seq_w = w * L / (L + 1e-8)  # verl: masked_mean over each row of the broadcast weight
        mean = seq_w[L > 0].sum() / (L > 0).sum()
    np.testing.assert_allclose(normed.weights, w / mean, rtol=1e-13)
    assert normed.metrics["batch_norm_factor"] == pytest.approx(mean, rel=1e-13)
    sel = normed.weights[m] if level == "token" else normed.weights
    assert np.mean(sel) == pytest.approx(1.0, rel=1e-6)


def ref_rejection(trn, smp, m, name, lower, upper):
    lr = np.clip(np.where(m, trn - smp, 0.0), -20, 20)
    agg, k = name.rsplit("_", 1)
    stat = {"k1": -lr, "k2": 0.5 * lr**2, "k3": np.exp(lr) - 1 - lr}[k]
    if agg != "token":
        L = m.sum(-1)
        if agg == "seq_sum":
            s = (stat * m).sum(-1)
        elif agg == "seq_mean":
            s = (stat * m).sum(-1) / (L + 1e-8)
        else:
            s = np.where(L > 0, np.where(m, stat, -np.inf).max(-1), 0.0)
        stat = np.broadcast_to(s[:, None], m.shape)
    keep = (stat >= math.log(lower)) & (stat <= math.log(upper)) if k == "k1" else stat <= upper
    return keep & m


@pytest.mark.parametrize(
    "name,thr",
    [
        ("token_k1", "0.8_1.25"),
        ("token_k2", 0.02),
        ("token_k3", 0.02),
        ("seq_sum_k1", 1.5),
        ("seq_sum_k2", 0.1),
        ("seq_sum_k3", 0.1),
        ("seq_mean_k1", "0.9_1.1"),
        ("seq_mean_k2", 0.02),
        ("seq_mean_k3", 0.02),
        ("seq_max_k2", 0.05),
        ("seq_max_k3", 0.05),
    ],
)
def test_rejection_criteria(name, thr):
    trn, smp, m = batch(8, 6, scale=0.2, seed=7)
    got = gk.rejection_mask(trn, smp, m, name, thr)
    if isinstance(thr, str):
        lo, hi = map(float, thr.split("_"))
    else:
        hi = float(thr)
        lo = 1.0 / hi if name.endswith("k1") else 0.0
    want = ref_rejection(trn, smp, m, name, lo, hi)
    np.testing.assert_array_equal(got.mask, want)
    rejected = (m & ~want).sum()
    assert got.metrics["masked_fraction"] == pytest.approx(rejected / (m.sum() + 1e-8), rel=1e-12)
    assert got.metrics["seq_masked_fraction"] == pytest.approx(np.mean((m & ~want).any(-1)), rel=1e-12)


def test_rejection_criteria_are_and_ed():
    trn, smp, m = batch(8, 6, scale=0.3, seed=8)
    both = gk.rejection_mask(trn, smp, m, "token_k1,seq_mean_k3", "0.7_1.4,0.03")
    a = gk.rejection_mask(trn, smp, m, "token_k1", (0.7, 1.4)).mask
    b = gk.rejection_mask(trn, smp, m, ["seq_mean_k3"], [0.03]).mask
    np.testing.assert_array_equal(both.mask, a & b)
    assert "token_k1_masked_fraction" in both.metrics and "seq_mean_k3_seq_masked_fraction" in both.metrics


def test_correction_presets_combine_rejection_and_weights():
    trn, smp, m = batch(6, 6, scale=0.3, seed=9)
    c = gk.correction("verl.seq_is_rs", trn, smp, m)
    np.testing.assert_array_equal(c.mask, gk.rejection_mask(trn, smp, m, "seq_sum_k1", "0.5_2.0").mask)
    want = gk.importance_weights(trn, smp, m, level="sequence", mode="truncate", clip_max=2.0, log_clamp=20.0)
    np.testing.assert_array_equal(c.weights, want.weights)
    assert "is/ess" in c.metrics and "rs/masked_fraction" in c.metrics
    only_rs = gk.correction("verl.geo_rs", trn, smp, m)
    assert only_rs.weights is None
    overridden = gk.correction("trl.token_truncate", trn, smp, m, clip_max=1.1)
    assert np.max(overridden.weights) <= 1.1
    for name in gk.CORRECTIONS:
        gk.correction(name, trn, smp, m)


# ---- properties ---------------------------------------------------------------------------------


@given(st.floats(-2, 2), st.floats(0.01, 1.0), st.floats(1.0, 5.0), st.sampled_from(["token", "sequence"]))
def test_weights_respect_the_bounds(shift, lo, hi, level):
    trn, smp, m = batch(4, 5, seed=10)
    smp = smp + shift
    t = gk.importance_weights(trn, smp, m, level=level, mode="truncate", clip_min=lo, clip_max=hi)
    sel = t.weights[m] if level == "token" else t.weights
    assert np.all((sel >= lo) & (sel <= hi))
    k = gk.importance_weights(trn, smp, m, level=level, mode="mask", clip_min=lo, clip_max=hi)
    sel = k.weights[m] if level == "token" else k.weights
    assert np.all((sel == 0) | ((sel >= lo) & (sel <= hi)))


def test_identical_policies_give_unit_weights_and_no_mismatch():
    trn, _, m = batch(4, 5, seed=11)
    out = gk.importance_weights(trn, trn.copy(), m, level="token", mode="truncate", clip_max=2.0)
    np.testing.assert_array_equal(out.weights[m], 1.0)
    for k in ("kl", "k3_kl", "chi2_token", "chi2_seq", "logp_diff_max"):
        assert out.metrics[k] == pytest.approx(0.0, abs=1e-7), k
    assert out.metrics["ess"] == pytest.approx(1.0, rel=1e-7)


def test_inputs_not_modified_and_torch_in_torch_out():
    trn, smp, m = batch(seed=12)
    a, b = torch.tensor(trn, dtype=torch.float32), torch.tensor(smp, dtype=torch.float32)
    a0, b0 = a.clone(), b.clone()
    out = gk.importance_weights(a, b, torch.tensor(m), level="token")
    assert isinstance(out.weights, torch.Tensor) and out.weights.dtype == torch.float32
    assert torch.equal(a.nan_to_num(), a0.nan_to_num()) and torch.equal(b.nan_to_num(), b0.nan_to_num())
    keep = gk.rejection_mask(a, b, torch.tensor(m), "token_k2", 0.05).mask
    assert isinstance(keep, torch.Tensor) and keep.dtype == torch.bool


# ---- bad inputs ---------------------------------------------------------------------------------


def test_bad_inputs():
    trn, smp, m = batch(seed=13)
    with pytest.raises(ValueError, match="level: expected one of"):
        gk.importance_weights(trn, smp, m, level="tok")
    with pytest.raises(ValueError, match="mode: expected one of"):
        gk.importance_weights(trn, smp, m, mode="clip")
    with pytest.raises(ValueError, match="clip_min <= clip_max"):
        gk.importance_weights(trn, smp, m, clip_min=2.0, clip_max=1.0)
    with pytest.raises(ValueError, match="clip_max: expected a positive bound"):
        gk.importance_weights(trn, smp, m, clip_max=-1.0)
    with pytest.raises(ValueError, match="clip_min: expected a bound >= 0"):
        gk.importance_weights(trn, smp, m, clip_min=-0.5)
    with pytest.raises(ValueError, match="mask: no position is selected"):
        gk.importance_weights(trn, smp, np.zeros_like(m))
    with pytest.raises(ValueError, match="sampler_logp: .*shape"):
        gk.importance_weights(trn, smp[:, :-1], m)
    bad = trn.copy()
    bad[0, 0] = np.nan
    with pytest.raises(ValueError, match=r"trainer_logp: element \(0, 0\) is nan at a selected position"):
        gk.importance_weights(bad, smp, m)
    bad = smp.copy()
    bad[0, 0] = -np.inf
    with pytest.raises(ValueError, match=r"sampler_logp: element \(0, 0\) is -inf"):
        gk.importance_weights(trn, bad, m)
    with pytest.raises(ValueError, match="criteria: expected names among"):
        gk.rejection_mask(trn, smp, m, "seq_max_k1", 2.0)
    with pytest.raises(ValueError, match="exactly 2"):
        gk.rejection_mask(trn, smp, m, "token_k2,token_k3", [0.1, 0.2, 0.3])
    with pytest.raises(ValueError, match="single upper bound"):
        gk.rejection_mask(trn, smp, m, "token_k2", "0.1_0.2")
    with pytest.raises(ValueError, match="0 < lower <= upper"):
        gk.rejection_mask(trn, smp, m, "token_k1", "2.0_1.0")
    with pytest.raises(ValueError, match="correction: expected one of"):
        gk.correction("verl.nope", trn, smp, m)
    with pytest.raises(TypeError, match="unknown option"):
        gk.correction("verl.token_is", trn, smp, m, threshold=2.0)


@given(
    st.integers(1, 6),
    st.integers(1, 6),
    st.integers(0, 2**31 - 1),
    st.sampled_from(["token", "sequence"]),
    st.sampled_from(["truncate", "mask"]),
    st.sampled_from([(None, 3.0), (0.5, 2.0), (0.9, None)]),
    st.sampled_from([None, 20.0, 1.0]),
)
def test_weights_match_reference_on_random_batches(B, T, seed, level, mode, bounds, clamp):
    trn, smp, m = batch(B, T, scale=0.5, seed=seed)
    lo = -np.inf if bounds[0] is None else bounds[0]
    hi = np.inf if bounds[1] is None else bounds[1]
    got = gk.importance_weights(
        trn, smp, m, level=level, mode=mode, clip_min=bounds[0], clip_max=bounds[1], log_clamp=clamp
    )
    want, _ = ref_weights(trn, smp, m, level, mode, lo, hi, np.inf if clamp is None else clamp)
    np.testing.assert_allclose(got.weights, want, rtol=1e-13, atol=0)


# ---- CUDA inputs go to the GPU backend (the kernels are tested in test_corrections_gpu.py) ------


def _has_cuda_device():
    from grpokit import _backend

    module, _ = _backend.load_cuda()
    return module is not None and module.device_count()[0] > 0


@pytest.mark.skipif(_has_cuda_device(), reason="the fake CUDA arrays hold host memory")
def test_cuda_inputs_dispatch_to_the_gpu_backend():
    from dlpack_fakes import FakeProducer

    a, b, m = (FakeProducer(np.zeros((2, 3)), device_type=2) for _ in range(3))
    with pytest.raises(RuntimeError, match="inputs are on cuda:0 but"):
        gk.importance_weights(a, b, m)
    a, b, m = (FakeProducer(np.zeros((2, 3)), device_type=2) for _ in range(3))
    with pytest.raises(RuntimeError, match="inputs are on cuda:0 but"):
        gk.rejection_mask(a, b, m, "token_k1", 2.0)
