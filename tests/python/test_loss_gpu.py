"""The CUDA policy_loss against the CPU engine, every preset and dtype (skipped without a GPU).

The CPU engine is itself checked against the independent fp64 reference (test_loss.py), so equality
with it on the same inputs is the GPU's correctness criterion. The CPU engine runs in float64 on the
very same values the GPU reads (float32/bfloat16/float16 values are exact in float64); tolerances
(docs/gpu.md):
  float64: 1e-9 relative (different reduction order; device exp/log are within 1–2 ulp of libm)
  float32: 2e-5 relative, atol 1e-6 of the largest value (the GPU's per-token math is float:
           ~1e-7 relative per operation, float block sums; sequence-level rules sum ∂/∂u over a row)
  bfloat16: 2^-7 relative (outputs are rounded to 8 significant bits, twice where a sequence-level
           term is added to a stored gradient), float16: 2^-9 relative, plus atol 2^-24·scale
           (float16 gradients of token means over many tokens are subnormal).
"""

from __future__ import annotations

import json
import pathlib

import numpy as np
import pytest

import grpokit
from grpokit._presets import resolve

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

# M2PO (m2_threshold) runs on the CPU engine only: the CUDA backend refuses it (test below)
PRESETS = sorted(n for n, p in grpokit.presets().items() if p["defaults"]["m2_threshold"] is None)
DEVICE = "cuda"
TOL = {  # dtype: (rtol, atol as a fraction of the largest |value|)
    "float64": (1e-9, 1e-12),
    "float32": (2e-5, 1e-6),
    "bfloat16": (2**-7, 2**-8),
    "float16": (2**-9, 2**-10),
}


def batch(B, T, seed=0, empty_rows=(), dtype=torch.float32, device="cpu"):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    for r in empty_rows:
        lengths[r] = 0
    mask = np.arange(T)[None, :] < lengths[:, None]
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
    b = dict(
        lp=lp,
        old=lp + rng.normal(0, 0.2, size=(B, T)),
        ref=lp + rng.normal(0, 0.2, size=(B, T)),
        H=rng.uniform(0.1, 2.0, size=(B, T)),
        A=rng.normal(size=B),
    )
    b["smp"] = b["old"] + rng.normal(0, 0.05, size=(B, T))
    for k in ("lp", "old", "ref", "smp", "H"):
        b[k][~mask] = np.nan  # padding is never read
    out = {k: torch.tensor(v, dtype=dtype, device=device) for k, v in b.items()}
    out["mask"] = torch.tensor(mask, device=device)
    return out


def kwargs_for(spec, b):
    kw = {"sampling_logp": b["smp"]}
    if spec.kl != "none" and spec.beta != 0.0:
        kw["ref_logp"] = b["ref"]
    if spec.gtpo_entropy or spec.entropy_coef != 0.0 or spec.top_entropy_quantile < 1.0:
        kw["entropies"] = b["H"]
    return kw


def loss_of(b, **kw):
    """policy_loss on a batch's log-probs, old log-probs, advantages and mask."""
    return grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], **kw)


def to_dev(b, dtype):
    return {k: (v.to(DEVICE) if v.dtype == torch.bool else v.to(DEVICE, dtype)) for k, v in b.items()}


def compare(name, b, dtype, overrides=None, cu_seqlens=None):
    """Runs the GPU in `dtype` and the CPU engine in float64 on the same rounded values."""
    overrides = overrides or {}
    spec = resolve(name, overrides)
    gb = to_dev(b, dtype)
    cb = {k: (v if v.dtype == torch.bool else v.to(dtype).double()) for k, v in b.items()}

    def run(bb, cu):
        extra = {"cu_seqlens": cu} if cu is not None else {}
        return loss_of(
            bb,
            spec=name,
            return_per_token=True,
            return_weights=True,
            **kwargs_for(spec, bb),
            **extra,
            **overrides,
        )

    g = run(gb, None if cu_seqlens is None else cu_seqlens.to(DEVICE))
    c = run(cb, cu_seqlens)
    rtol, afrac = TOL[str(dtype).replace("torch.", "")]
    assert g.loss.device.type == DEVICE and g.loss.dim() == 0 and g.loss.dtype == dtype
    assert g.grad_logp.device.type == DEVICE and g.grad_logp.dtype == dtype
    for field in ("loss", "grad_logp", "per_token", "weights", "grad_entropy"):
        want = getattr(c, field)
        got = getattr(g, field)
        assert (want is None) == (got is None), field
        if want is None:
            continue
        want = want.numpy()
        got = got.double().cpu().numpy()
        scale = max(float(np.max(np.abs(want))), 1e-30)
        np.testing.assert_allclose(got, want, rtol=rtol, atol=afrac * scale, err_msg=f"{name} {field}")
    assert set(g.metrics) == set(c.metrics)
    for k, v in c.metrics.items():
        got = g.metrics[k]
        assert got.device.type == DEVICE and got.dim() == 0, k
        np.testing.assert_allclose(float(got), float(v), rtol=max(rtol, 1e-4), atol=1e-5, err_msg=f"{name} {k}")
    return g, c


DTYPES = [torch.float64, torch.float32, torch.bfloat16, torch.float16]


@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_padded_odd_shape(name, dtype):
    compare(name, batch(B=7, T=45, seed=len(name), empty_rows=(3,)), dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=str)
@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_packed(name, dtype):
    b = batch(B=5, T=33, seed=2, empty_rows=(2,))
    m = b.pop("mask")
    cu = torch.zeros(m.shape[0] + 1, dtype=torch.int32)
    cu[1:] = torch.cumsum(m.sum(1), 0)
    packed = {k: (v[m] if v.dim() == 2 else v) for k, v in b.items()}  # A stays (B,)
    packed["mask"] = torch.ones(int(cu[-1]), dtype=torch.bool)
    compare(name, packed, dtype, cu_seqlens=cu)


@pytest.mark.parametrize("name", ["trl.dapo", "trl.grpo", "paper.gspo", "trl.vespo", "paper.gtpo"])
@pytest.mark.parametrize("B, T", [(1, 1), (3, 1), (2, 65536), (33, 31)])
def test_edge_shapes(name, B, T):
    compare(name, batch(B=B, T=T, seed=B + T), torch.float32)
    compare(name, batch(B=B, T=T, seed=B + T), torch.bfloat16)


# The rule options beyond the presets: one list, also run by the host emulation of cuda/loss.cu
# (tests/cuda_emulation/loss_cases.py).
RULE_OPTIONS = json.loads((pathlib.Path(__file__).parents[1] / "loss_cases.json").read_text())["rule_options"]


@pytest.mark.parametrize("case", RULE_OPTIONS, ids=lambda c: c["name"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=str)
def test_rule_options(case, dtype):
    b = batch(B=6, T=40, seed=9, empty_rows=(5,))
    compare(case["preset"], b, dtype, dict(case["overrides"]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_prompt_mean_groups(dtype):
    """aggregation='prompt_mean' with groups of 3 rows (the shared case list has G = 1, which every
    emulated shape divides): each row's coefficient reads its group's token count on the device."""
    b = batch(B=6, T=40, seed=21, empty_rows=(4,))
    compare("trl.dapo", b, dtype, dict(aggregation="prompt_mean", group_size=3))


TRL_PRESETS = [n for n in PRESETS if n.startswith("trl.")]


@pytest.mark.parametrize("quantile", [0.2, 0.5, 1.0])
@pytest.mark.parametrize("dtype", DTYPES, ids=str)
@pytest.mark.parametrize("name", TRL_PRESETS)
def test_top_entropy_quantile_trl_presets(name, dtype, quantile):
    """TRL's top-entropy masking: the threshold is selected on the device (no host sync) and is the CPU
    engine's exactly, so the same tokens are kept; with and without TRL's entropy bonus."""
    compare(name, batch(B=7, T=45, seed=11, empty_rows=(3,)), dtype, dict(top_entropy_quantile=quantile))
    compare(name, batch(B=4, T=33, seed=12), dtype, dict(top_entropy_quantile=quantile, entropy_coef=0.2))


@pytest.mark.parametrize("quantile", [0.2, 0.5, 0.7])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16], ids=str)
def test_top_entropy_quantile_ties_keep_the_same_tokens(dtype, quantile):
    """Entropies on 4 levels (ties everywhere, ±0 among them), padded and packed: a threshold off by one
    ulp, or a rank off by one, would change the kept set, hence which tokens get the entropy gradient."""
    b = batch(B=6, T=64, seed=3)
    levels = torch.tensor([-0.0, 0.0, 0.5, 1.25], dtype=torch.float64)
    b["H"] = levels[torch.randint(0, 4, b["H"].shape, generator=torch.Generator().manual_seed(0))].to(b["H"].dtype)
    g, c = compare("trl.dapo", b, dtype, dict(top_entropy_quantile=quantile, entropy_coef=0.1))
    assert torch.equal(g.grad_entropy.cpu() != 0, c.grad_entropy != 0)
    m = b.pop("mask")
    cu = torch.zeros(m.shape[0] + 1, dtype=torch.int64)
    cu[1:] = torch.cumsum(m.sum(1), 0)
    packed = {k: (v[m] if v.dim() == 2 else v) for k, v in b.items()}
    packed["mask"] = torch.ones(int(cu[-1]), dtype=torch.bool)
    g, c = compare("trl.dapo", packed, dtype, dict(top_entropy_quantile=quantile, entropy_coef=0.1), cu_seqlens=cu)
    assert torch.equal(g.grad_entropy.cpu() != 0, c.grad_entropy != 0)


def test_top_entropy_quantile_is_deterministic_and_never_syncs():
    b = to_dev(batch(B=16, T=300, seed=1), torch.float32)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        r1, r2 = (
            loss_of(b, spec="trl.grpo", entropies=b["H"], top_entropy_quantile=0.3, entropy_coef=0.1) for _ in range(2)
        )
    s.synchronize()
    assert torch.equal(r1.grad_logp, r2.grad_logp) and torch.equal(r1.loss, r2.loss)  # bitwise
    assert torch.equal(r1.grad_entropy, r2.grad_entropy)


def test_per_token_advantages_keep_and_token_weights():
    b = batch(B=4, T=37, seed=4)
    b["A"] = torch.randn(4, 37, dtype=torch.float32)
    g = torch.Generator().manual_seed(0)
    tw = torch.rand(4, 37, generator=g)
    keep = torch.tensor([True, False, True, True])
    res = {}
    for dev in ("cpu", "cuda"):
        x = {k: v.to(dev) for k, v in b.items()}
        res[dev] = loss_of(
            x,
            spec="paper.gtpo",
            entropies=x["H"],
            keep=keep.to(dev),
            token_weights=tw.to(dev),
        )
    np.testing.assert_allclose(res["cuda"].grad_logp.cpu().numpy(), res["cpu"].grad_logp.numpy(), rtol=2e-5, atol=1e-7)
    np.testing.assert_allclose(float(res["cuda"].loss), float(res["cpu"].loss), rtol=2e-5)


def test_side_stream_zero_copy_and_determinism():
    b = batch(B=16, T=300, seed=1)
    s = torch.cuda.Stream()
    with torch.cuda.stream(s):
        x = to_dev(b, torch.float32)  # produced on the side stream
        lp = x["lp"] * 1.0
        r1 = grpokit.policy_loss(lp, x["old"], x["A"], x["mask"], spec="trl.grpo")
        r2 = grpokit.policy_loss(lp, x["old"], x["A"], x["mask"], spec="trl.grpo")
    s.synchronize()
    c = loss_of(b, spec="trl.grpo")
    assert r1.grad_logp.device == lp.device
    np.testing.assert_allclose(r1.grad_logp.cpu().numpy(), c.grad_logp.numpy(), rtol=2e-5, atol=1e-9)
    assert torch.equal(r1.grad_logp, r2.grad_logp) and torch.equal(r1.loss, r2.loss)  # bitwise
    ext = torch.cuda.Stream()
    res = grpokit.policy_loss(lp, x["old"], x["A"], x["mask"], spec="trl.grpo", stream=ext)
    ext.synchronize()
    assert torch.equal(res.loss, r1.loss)


def test_inputs_never_modified_and_strided():
    b = to_dev(batch(B=5, T=64, seed=3), torch.float32)
    lp_t = b["lp"].t().contiguous().t()  # column-major view
    before = lp_t.clone()
    r = grpokit.policy_loss(lp_t, b["old"], b["A"], b["mask"], spec="trl.dapo")
    c = loss_of(b, spec="trl.dapo")
    assert torch.equal(lp_t, before)
    assert torch.equal(r.grad_logp, c.grad_logp)


def test_errors():
    b = to_dev(batch(B=3, T=8, seed=0), torch.float32)
    with pytest.raises(ValueError, match="same device"):
        grpokit.policy_loss(b["lp"], b["old"].cpu(), b["A"], b["mask"])
    with pytest.raises(TypeError, match="dtype"):
        grpokit.policy_loss(b["lp"].bfloat16(), b["old"], b["A"], b["mask"])
    bad = b["old"].clone()
    bad[1, 0] = float("inf")
    grpokit.policy_loss(b["lp"], bad, b["A"], b["mask"])  # unchecked by default: no host sync
    with pytest.raises(ValueError, match=r"old_logp: non-finite value at a valid position \(row 1, token 0\)"):
        grpokit.policy_loss(b["lp"], bad, b["A"], b["mask"], check_finite=True)
    with pytest.raises(ValueError, match="no valid token"):
        grpokit.policy_loss(b["lp"], b["old"], b["A"], torch.zeros_like(b["mask"]), check_finite=True)
    flat = b["lp"][b["mask"]]
    with pytest.raises(ValueError, match="cu_seqlens: the last offset"):
        grpokit.policy_loss(
            flat,
            None,
            torch.zeros(2, device="cuda"),
            None,
            cu_seqlens=torch.tensor([0, 1, 2], device="cuda"),
            check_finite=True,
        )


def test_m2po_is_refused_on_the_gpu():
    lp = torch.log(torch.full((2, 3), 0.5, device=DEVICE, dtype=torch.float64))
    adv = torch.ones(2, device=DEVICE, dtype=torch.float64)
    with pytest.raises(ValueError, match="m2_threshold: M2PO runs on the CPU engine only"):
        grpokit.policy_loss(lp, lp, adv, None, spec="areal.m2po_paper")
