"""The CPU engine's fast row loops (token ratio, one advantage per row, no per-token outputs) against
its general path, which every other loss test checks against the fp64 reference.

Asking for per-token terms (`return_per_token=True`) forces the general path, so the same call with
and without it compares the two loops on the same inputs. Shapes cover the vector tails (rows of
1..33 tokens around 16-lane boundaries), masks with holes, NaN padding and every advantage sign. The
hand-written AVX-512 loop is also compared with the portable one in a subprocess with
GRPOKIT_NO_AVX512=1 (the same machine otherwise picks the AVX-512 loop whenever it can).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import grpokit

# (preset, overrides): the interval clip, the general clip (δ, dual-clip), the other fast surrogates,
# and the log-ratio clamp
CONFIGS = [
    ("trl.dapo", {}),
    ("trl.grpo", {}),
    ("trl.dr_grpo", {}),
    ("trl.bnpo", {}),
    ("verl.vanilla", {"clip_ratio_c": float("inf")}),
    ("verl.vanilla", {}),  # dual-clip c = 3
    ("trl.dapo", {"delta": 1.5}),
    ("trl.cispo", {}),
    ("trl.sapo", {}),
    ("verl.gpg", {}),
    ("verl.cispo", {}),
    ("verl.dppo_tv", {}),
    ("verl.dppo_kl", {}),
    ("verl.dppo_kl", {"epsilon_low": 0.01, "epsilon_high": 0.02, "beta": 0.04}),  # the mask binds often
    ("verl.dro", {}),
    # the KL term (every estimator, its clamps, straight-through and IS-corrected forms)
    ("trl.grpo", {"beta": 0.04}),
    ("trl.dapo", {"beta": 0.1, "kl": "k1"}),
    ("trl.dapo", {"beta": 0.1, "kl": "k2"}),
    ("trl.dapo", {"beta": 0.1, "kl": "abs"}),
    ("trl.dapo", {"beta": 0.1, "kl": "k3", "kl_log_clamp": 0.2, "kl_value_clamp": 0.01}),
    ("trl.dapo", {"beta": 0.1, "kl": "k3", "kl_straight_through": True}),
    ("trl.dapo", {"beta": 0.1, "kl": "k3", "use_bias_correction_kl": True}),
    ("verl.vanilla", {"beta": 0.1, "kl": "k3"}),
    ("trl.sapo", {"beta": 0.04}),
    ("trl.cispo", {"beta": 0.04}),
    # the interval clip with a KL term; log-π surrogates with a KL term or the IS-corrected KL
    ("verl.vanilla", {"clip_ratio_c": float("inf"), "beta": 0.1, "kl": "k1"}),
    ("trl.dapo", {"beta": 0.1, "kl": "k2", "use_bias_correction_kl": True}),
    ("paper.gpg", {}),
    ("verl.gpg", {"beta": 0.04, "kl": "k2"}),
    ("verl.reinforce", {"beta": 0.04}),
    ("verl.cispo", {"beta": 0.04, "use_bias_correction_kl": True}),
    ("verl.dro", {"beta": 0.04, "kl": "abs"}),
    # one ratio per row: GSPO, GSPO-token, GCPO, GMPO (the row sweep of loss_fast.cpp's seq_row)
    ("paper.gspo", {}),
    ("paper.gspo", {"beta": 0.04, "kl": "k3"}),
    ("paper.gspo", {"epsilon_low": 0.05, "epsilon_high": 0.05}),  # rows on both sides of the clip
    ("paper.gspo_token", {}),
    ("paper.gspo_token", {"epsilon_low": 0.05, "epsilon_high": 0.05, "beta": 0.1, "kl": "k2"}),
    ("verl.gspo", {}),
    ("verl.gspo", {"beta": 0.04}),
    ("verl.gspo", {"log_ratio_max": 0.02}),  # the clamp binds
    ("paper.gcpo", {}),
    ("paper.gcpo", {"beta": 0.04, "kl": "k1"}),
    ("trl.luspo", {}),
    ("verl.geo_mean", {}),
    ("verl.geo_mean", {"beta": 0.04, "kl": "abs"}),
    # TOPR's weight and the trust regions (ROLL, prime-rl), alone and beside the other rules (a trust
    # region with a KL term other than k3 runs the general loop: both sides are then the same loop)
    ("roll.topr", {}),
    ("roll.topr", {"beta": 0.04}),
    ("roll.cispo_unified_mask", {}),
    ("roll.cispo_unified_mask", {"epsilon_low": 0.05, "epsilon_high": 0.05}),
    ("roll.cispo_unified_mask", {"beta": 0.04}),  # beside the k3 KL: the vector row
    ("prime.ipo", {"beta": 0.1, "kl": "k3", "use_bias_correction_kl": True}),
    ("trl.sapo", {"trust_region": "ppo", "beta": 0.1, "kl": "k3", "kl_log_clamp": 0.2, "kl_value_clamp": 0.01}),
    ("prime.default", {}),
    ("prime.default", {"epsilon_low": 0.05, "epsilon_high": 0.05}),  # the region binds often
    ("prime.ipo", {}),
    ("trl.dapo", {"trust_region": "ppo"}),  # not the interval form
    ("trl.dapo", {"trust_region": "tv", "epsilon_low": 0.05, "epsilon_high": 0.05}),
    ("verl.vanilla", {"trust_region": "dppo_tv"}),
    ("trl.sapo", {"trust_region": "tv", "epsilon_low": 0.05, "epsilon_high": 0.05}),
    ("paper.gspo", {"trust_region": "ppo"}),  # one ratio per row: PPO's region is the row's
    ("verl.reinforce_seq", {"trust_region": "ppo", "beta": 0.04}),
    # M2PO: the token pass runs on the mask less the tokens it drops (a threshold that drops some)
    ("areal.m2po", {"m2_threshold": 0.05}),
    ("areal.m2po_paper", {"m2_threshold": 0.05, "beta": 0.04}),
]

# row lengths around the SIMD widths of the row loops, and one of several hundred tokens
TS = [1, 7, 15, 16, 17, 31, 33, 100, 300]


def batch(T, dtype, seed=0, B=6, spread=0.4):
    rng = np.random.default_rng(seed + T)
    lengths = rng.integers(0, T + 1, size=B)
    lengths[0] = T
    mask = np.arange(T)[None, :] < lengths[:, None]
    mask &= rng.random((B, T)) < 0.85  # holes inside rows
    lp = np.log(rng.uniform(0.05, 0.95, size=(B, T)))
    old = lp + rng.normal(0, spread, size=(B, T))
    A = rng.normal(size=B)
    A[1 % B] = 0.0
    A[2 % B] = -abs(A[2 % B])
    lp[~mask] = np.nan  # never read
    old[~mask] = np.inf
    return lp.astype(dtype), old.astype(dtype), A.astype(dtype), mask


def ref_of(lp, T):
    ref = lp + np.random.default_rng(T + 7).normal(0, 0.3, size=lp.shape).astype(lp.dtype)
    ref[np.isnan(lp)] = -np.inf  # never read
    return ref


def smp_of(old, mask, T):
    """sampling_logp near old_logp, NaN (unscored) at some valid tokens, ±inf at padding (never read)."""
    rng = np.random.default_rng(T + 11)
    smp = old + rng.normal(0, 0.3, size=old.shape).astype(old.dtype)
    smp[mask & (rng.random(old.shape) < 0.1)] = np.nan
    smp[~mask] = np.where(rng.random(old.shape) < 0.5, np.inf, -np.inf)[~mask]
    return smp


def both_paths(name, overrides, T, dtype, mask_dtype=bool, extra=None):
    lp, old, A, mask = batch(T, dtype)
    m = mask.astype(mask_dtype)
    kw = dict(overrides, ref_logp=ref_of(lp, T))
    kw.update({k: (v(old, mask, T) if callable(v) else v) for k, v in (extra or {}).items()})
    fast = grpokit.policy_loss(lp, old, A, m, spec=name, **kw)
    general = grpokit.policy_loss(lp, old, A, m, spec=name, return_per_token=True, **kw)
    return fast, general, mask


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,overrides", CONFIGS, ids=[f"{n}{'+' if o else ''}{','.join(o)}" for n, o in CONFIGS])
def test_fast_loops_match_the_general_path(name, overrides, dtype):
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    for T in TS:
        fast, general, mask = both_paths(name, overrides, T, dtype)
        assert fast.grad_logp.dtype == dtype
        np.testing.assert_allclose(float(fast.loss), float(general.loss), rtol=rtol, atol=1e-7 * (dtype == np.float32))
        # β·KL's gradient and the surrogate's cancel in places: those compare to the row's scale
        atol = rtol * np.abs(general.grad_logp).max() if overrides.get("beta") else 0
        np.testing.assert_allclose(fast.grad_logp, general.grad_logp, rtol=rtol, atol=atol)
        assert np.all(fast.grad_logp[~mask] == 0)
        assert fast.metrics.keys() == general.metrics.keys()
        for k in fast.metrics:
            a, b = float(fast.metrics[k]), float(general.metrics[k])
            if "clip" in k or "region" in k:  # counts of tokens: exact
                assert a == b or (np.isnan(a) and np.isnan(b)), (k, a, b, T)
            else:
                np.testing.assert_allclose(a, b, rtol=rtol * 10, atol=1e-6 * (dtype == np.float32), err_msg=k)


def _compare(fast, general, mask, rtol, beta):
    np.testing.assert_allclose(float(fast.loss), float(general.loss), rtol=rtol, atol=1e-7 * (rtol > 1e-9))
    atol = rtol * np.abs(general.grad_logp).max() if beta else 0
    np.testing.assert_allclose(fast.grad_logp, general.grad_logp, rtol=rtol, atol=atol)
    assert np.all(fast.grad_logp[~mask] == 0)
    assert fast.metrics.keys() == general.metrics.keys()
    for k in fast.metrics:
        a, b = float(fast.metrics[k]), float(general.metrics[k])
        if "clip" in k or "region" in k:
            assert a == b or (np.isnan(a) and np.isnan(b)), (k, a, b)
        else:
            np.testing.assert_allclose(a, b, rtol=rtol * 10, atol=1e-6 * (rtol > 1e-9), err_msg=k)


# the weight rule's inputs the fast rows take: the sampler IS (per token and per sequence, truncated or
# masked, NaN for an unscored token), keep flags and CPPO's pruning
WEIGHTED = [
    ("trl.grpo", {}),
    ("trl.grpo", {"beta": 0.04}),
    ("trl.grpo", {"sampler_is": "token_truncate"}),
    ("trl.grpo", {"sampler_is": "token_mask", "is_min": 0.7, "is_max": 1.3, "beta": 0.04}),
    ("trl.grpo", {"sampler_is": "sequence_truncate", "is_min": 0.5, "is_max": 2.0}),
    ("trl.cispo", {"sampler_is": "token_truncate", "beta": 0.04}),
    ("trl.sapo", {"sampler_is": "token_mask"}),
    ("verl.vanilla", {"sampler_is": "token_truncate", "is_max": 2.0}),
    ("paper.gspo", {"sampler_is": "sequence_mask", "is_min": 0.5, "is_max": 2.0}),
    ("verl.gspo", {"sampler_is": "sequence_truncate", "is_max": 2.0, "beta": 0.04}),
    ("paper.cppo", {"prune_threshold": 0.5}),
    ("paper.cppo", {"prune_threshold": 0.5, "beta": 0.0}),
    ("roll.topr", {"sampler_is": "token_mask", "is_min": 0.7, "is_max": 1.3}),
    ("prime.default", {"sampler_is": "token_truncate", "is_max": 2.0}),
    ("prime.ipo", {"sampler_is": "sequence_truncate", "is_max": 2.0}),
    ("areal.m2po", {"m2_threshold": 0.05}),  # the moment of log π_old/π_smp; the IS mask at 5
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,overrides", WEIGHTED, ids=[f"{n}+{','.join(o)}" for n, o in WEIGHTED])
def test_fast_loops_match_the_general_path_with_weights(name, overrides, dtype):
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    for T in TS:
        keep = np.random.default_rng(T).random(6) < 0.7
        for extra in ({"sampling_logp": smp_of}, {"sampling_logp": smp_of, "keep": keep}, {"keep": keep}):
            fast, general, mask = both_paths(name, overrides, T, dtype, extra=extra)
            _compare(fast, general, mask, rtol, overrides.get("beta", name == "paper.cppo"))


@pytest.mark.parametrize("sampler_is", ["token_truncate", "sequence_mask"])
def test_fast_loops_report_a_bad_sampling_logp(sampler_is):
    lp, old, A, mask = batch(20, np.float32)
    mask[0, :] = True
    lp[0], old[0] = np.log(0.5), np.log(0.4)
    smp = smp_of(old, mask, 20)
    smp[0, 5] = -np.inf
    lp[0, 9] = np.nan  # a later bad value: the first one is reported
    with pytest.raises(ValueError, match=r"sampling_logp.*row 0, token 5"):
        grpokit.policy_loss(lp, old, A, mask, spec="trl.grpo", sampler_is=sampler_is, sampling_logp=smp)


@pytest.mark.parametrize("mask_dtype", [np.float32, np.int64, np.uint8])
def test_fast_loops_read_masks_of_any_dtype(mask_dtype):
    for name, overrides in (("trl.dapo", {}), ("trl.grpo", {"beta": 0.04}), ("trl.sapo", {})):
        for T in (7, 33):
            fast, general, _ = both_paths(name, overrides, T, np.float32, mask_dtype)
            want, _, _ = both_paths(name, overrides, T, np.float32)
            np.testing.assert_allclose(
                fast.grad_logp, general.grad_logp, rtol=2e-6, atol=2e-6 * np.abs(general.grad_logp).max()
            )
            np.testing.assert_array_equal(fast.grad_logp, want.grad_logp)
            assert float(fast.loss) == float(want.loss)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_kl_loop_reports_a_bad_ref_logp(dtype):
    lp, old, A, mask = batch(20, dtype)
    mask[0, :] = True
    ref = ref_of(lp, 20)
    ref[0, 3] = np.inf
    for kw in ({}, {"kl_log_clamp": 20.0, "kl_value_clamp": 10.0}):  # a clamp must not hide it
        with pytest.raises(ValueError, match=r"ref_logp.*row 0, token 3"):
            grpokit.policy_loss(lp, old, A, mask, spec="trl.grpo", beta=0.04, ref_logp=ref, **kw)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_fast_loop_reports_the_first_bad_value(dtype):
    for T in (5, 16, 40):
        lp, old, A, mask = batch(T, dtype)
        mask[0, :] = True
        lp[0], old[0] = np.log(0.5), np.log(0.4)
        for which in ("logp", "old_logp"):
            x, y = lp.copy(), old.copy()
            (x if which == "logp" else y)[0, T - 2] = np.nan
            x[0, T - 1] = np.nan  # a later bad value: the first one is reported
            with pytest.raises(ValueError, match=rf"{which}.*row 0, token {T - 2}"):
                grpokit.policy_loss(x, y, A, mask, spec="trl.dapo")
        x = lp.copy()
        x[0, 1] = -np.inf
        with pytest.raises(ValueError, match="logp.*-inf"):
            grpokit.policy_loss(x, old, A, mask, spec="trl.dapo")


def test_all_masked_rows_and_all_masked_batch():
    lp, old, A, mask = batch(33, np.float32)
    mask[1:] = False
    r = grpokit.policy_loss(lp, old, A, mask, spec="trl.dapo")
    want = grpokit.policy_loss(lp[:1], old[:1], A[:1], mask[:1], spec="trl.dapo")
    assert float(r.loss) == float(want.loss)
    np.testing.assert_array_equal(r.grad_logp[0], want.grad_logp[0])
    assert np.all(r.grad_logp[1:] == 0)
    mask[:] = False
    with pytest.raises(ValueError, match="mask: no valid token"):
        grpokit.policy_loss(lp, old, A, mask, spec="trl.dapo")


_CHILD = r"""
import json, sys
import numpy as np
import grpokit
sys.path.insert(0, sys.argv[1])
from test_loss_fast_path import batch
out = {}
for T in (1, 15, 16, 17, 100, 2049):
    lp, old, A, mask = batch(T, np.float32)
    for name, kw in (("trl.dapo", {}), ("verl.vanilla", {"clip_ratio_c": float("inf")})):
        r = grpokit.policy_loss(lp, old, A, mask, spec=name, **kw)
        out[f"{name}/{T}"] = [float(r.loss), r.grad_logp.tolist(), {k: float(v) for k, v in r.metrics.items()}]
print(json.dumps(out))
"""


def _run_child(env_extra):
    env = {**os.environ, **env_extra}
    here = os.path.dirname(os.path.abspath(__file__))
    p = subprocess.run([sys.executable, "-c", _CHILD, here], env=env, capture_output=True, text=True, check=True)
    return json.loads(p.stdout)


def test_avx512_loop_matches_the_portable_loop():
    with_simd = _run_child({})
    portable = _run_child({"GRPOKIT_NO_AVX512": "1"})
    assert with_simd.keys() == portable.keys()
    for key, (loss_a, grad_a, met_a) in with_simd.items():
        loss_b, grad_b, met_b = portable[key]
        np.testing.assert_allclose(loss_a, loss_b, rtol=2e-6, atol=1e-8, err_msg=key)
        np.testing.assert_allclose(np.array(grad_a), np.array(grad_b), rtol=2e-6, atol=0, err_msg=key)
        for k in met_a:
            if "clip" in k or "region" in k:
                assert met_a[k] == met_b[k] or (np.isnan(met_a[k]) and np.isnan(met_b[k])), (key, k)
            else:
                np.testing.assert_allclose(met_a[k], met_b[k], rtol=2e-5, atol=1e-6, err_msg=f"{key} {k}")


@pytest.mark.parametrize("T", [1, 63, 64, 65, 200])
def test_uint8_masks_count_any_nonzero_byte(T):
    lp, old, A, mask = batch(T, np.float32)
    m8 = np.where(mask, np.random.default_rng(T).choice([1, 3, 255], size=mask.shape), 0).astype(np.uint8)
    for spec in ("trl.dapo", "trl.grpo"):  # token mean (global count) and sequence mean (per-row counts)
        want = grpokit.policy_loss(lp, old, A, mask, spec=spec)
        got = grpokit.policy_loss(lp, old, A, m8, spec=spec)
        assert float(got.loss) == float(want.loss)
        np.testing.assert_array_equal(got.grad_logp, want.grad_logp)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name,overrides",
    [
        ("trl.grpo", {"beta": 0.04}),
        ("trl.cispo", {"beta": 0.04}),
        ("paper.gspo", {}),
        ("paper.gspo", {"beta": 0.04, "kl": "k3"}),
        ("verl.gspo", {"beta": 0.04}),
        ("paper.gcpo", {}),
        ("verl.geo_mean", {}),
        ("areal.m2po", {"m2_threshold": 0.05}),
    ],
)
def test_rows_do_not_depend_on_the_thread_count(name, overrides, dtype):
    # 64 rows of 2048 tokens: enough elements for several threads (≥ 16k per thread)
    lp, old, A, mask = batch(2048, dtype, B=64)
    kw = dict(overrides, ref_logp=ref_of(lp, 2048))
    one = grpokit.policy_loss(lp, old, A, mask, spec=name, num_threads=1, **kw)
    for nt in (2, 3, 8):
        r = grpokit.policy_loss(lp, old, A, mask, spec=name, num_threads=nt, **kw)
        assert float(r.loss) == float(one.loss)
        np.testing.assert_array_equal(r.grad_logp, one.grad_logp)
        for k in one.metrics:
            np.testing.assert_array_equal(float(r.metrics[k]), float(one.metrics[k]), err_msg=k)
    general = grpokit.policy_loss(lp, old, A, mask, spec=name, return_per_token=True, **kw)
    rtol = 2e-5 if dtype == np.float32 else 1e-11  # rows of 2048 tokens: sums in another order
    atol = rtol * np.abs(general.grad_logp).max()
    np.testing.assert_allclose(one.grad_logp, general.grad_logp, rtol=rtol, atol=atol)
    np.testing.assert_allclose(float(one.loss), float(general.loss), rtol=rtol)


# ---- the extended token-ratio rows (per-token inputs) and the remaining sequence-ratio rules ----------


def extras_of(lp, mask, T, *, tw=False, ent=False, sel=False, adv=False, dtype=np.float32):
    """Per-token inputs (NaN / inf at padding: never read) for the extended rows."""
    rng = np.random.default_rng(T + 23)
    out = {}
    if tw:
        out["token_weights"] = np.where(mask, rng.uniform(0.0, 2.0, lp.shape), np.nan).astype(dtype)
    if ent:
        h = rng.uniform(0.1, 2.0, lp.shape)
        h[mask & (rng.random(lp.shape) < 0.2)] = 1.25  # ties at the top-entropy threshold
        out["entropies"] = np.where(mask, h, np.inf).astype(dtype)
    if sel:
        out["selection"] = rng.random(lp.shape) < 0.3
    if adv:
        a = rng.normal(size=lp.shape)
        a[:, ::5] = 0.0
        out["advantages"] = np.where(mask, a, np.nan).astype(dtype)
    return out


def extended_paths(name, overrides, T, dtype, mask_dtype=bool, **which):
    lp, old, A, mask = batch(T, dtype)
    kw = dict(overrides, ref_logp=ref_of(lp, T), **extras_of(lp, mask, T, dtype=dtype, **which))
    adv = kw.pop("advantages", A)
    m = mask.astype(mask_dtype)
    fast = grpokit.policy_loss(lp, old, adv, m, spec=name, **kw)
    general = grpokit.policy_loss(lp, old, adv, m, spec=name, return_per_token=True, **kw)
    return fast, general, mask


# (preset, overrides, per-token inputs)
EXTENDED = [
    ("trl.grpo", {}, dict(ent=True)),  # the entropy metric only
    ("trl.dapo", {}, dict(tw=True)),
    ("trl.dapo", {"beta": 0.04}, dict(adv=True)),
    ("verl.vanilla", {}, dict(adv=True, tw=True)),
    ("trl.sapo", {}, dict(adv=True)),
    ("trl.cispo", {"beta": 0.04}, dict(tw=True, adv=True)),
    ("verl.dppo_tv", {}, dict(adv=True)),
    ("verl.dppo_kl", {}, dict(adv=True, tw=True)),
    ("verl.dro", {}, dict(tw=True)),
    ("paper.gtpo", {}, dict(ent=True, tw=True)),
    ("paper.gtpo", {"beta": 0.0}, dict(ent=True)),
    ("paper.gtpo", {"kl": "k3"}, dict(ent=True, adv=True)),
    ("trl.grpo", {"top_entropy_quantile": 0.3}, dict(ent=True)),
    ("trl.grpo", {"entropy_coef": 0.01}, dict(ent=True)),
    ("verl.vanilla", {"entropy_coef": 0.01, "top_entropy_quantile": 0.5}, dict(ent=True, adv=True)),
    ("verl.clip_cov", {}, dict(sel=True)),
    ("verl.clip_cov", {"beta": 0.04}, dict(sel=True, adv=True)),
    ("verl.kl_cov", {}, dict(sel=True)),
    ("verl.kl_cov", {"beta": 0.04}, dict(sel=True, tw=True)),
    ("paper.cppo", {"prune_threshold": 0.5}, dict(adv=True)),
    ("roll.topr", {"beta": 0.04}, dict(adv=True, tw=True)),
    ("roll.cispo_unified_mask", {}, dict(adv=True, sel=True)),
    ("prime.default", {"entropy_coef": 0.01}, dict(ent=True, adv=True)),
    ("prime.ipo", {}, dict(tw=True)),
    # VAPO's positive-example NLL (a selection outside φ and c_i), beside the other rules
    ("nemo.vapo", {}, dict(sel=True)),
    ("nemo.vapo", {"beta": 0.04, "positive_example_nll_weight": 0.5}, dict(sel=True, adv=True, tw=True)),
    ("nemo.vapo", {"aggregation": "seq_mean_token_mean"}, dict(sel=True, ent=True)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize(
    "name,overrides,which", EXTENDED, ids=[f"{n}+{','.join(o)}+{','.join(w)}" for n, o, w in EXTENDED]
)
def test_extended_rows_match_the_general_path(name, overrides, which, dtype):
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    for T in TS:
        fast, general, mask = extended_paths(name, overrides, T, dtype, **which)
        _compare(fast, general, mask, rtol, True)
        if general.grad_entropy is not None:
            atol = rtol * max(np.abs(general.grad_entropy).max(), 1e-30)
            np.testing.assert_allclose(fast.grad_entropy, general.grad_entropy, rtol=rtol, atol=atol)
            assert np.all(fast.grad_entropy[~mask] == 0)


# the sequence-ratio rows' remaining rules: the IS-corrected KL, the log-π surrogate with a row weight,
# and VESPO's row weight (token ratio, from pass A)
SEQUENCE = [
    ("trl.luspo", {"beta": 0.04}),
    ("paper.gspo", {"beta": 0.04, "kl": "k3", "use_bias_correction_kl": True}),
    ("paper.gspo_token", {"beta": 0.1, "kl": "k2", "use_bias_correction_kl": True}),
    ("verl.gspo", {"beta": 0.04, "use_bias_correction_kl": True, "log_ratio_max": 0.02}),
    ("verl.geo_mean", {"beta": 0.04, "use_bias_correction_kl": True}),
    ("verl.reinforce_seq", {}),
    ("verl.reinforce_seq", {"beta": 0.04}),
    ("verl.reinforce_seq", {"epsilon_high": 1.0}),  # the cap binds on some rows
    ("trl.vespo", {}),
    ("trl.vespo", {"beta": 0.04}),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,overrides", SEQUENCE, ids=[f"{n}+{','.join(o)}" for n, o in SEQUENCE])
def test_sequence_rules_match_the_general_path(name, overrides, dtype):
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    for T in TS:
        fast, general, mask = both_paths(name, overrides, T, dtype)
        _compare(fast, general, mask, rtol, True)


@pytest.mark.parametrize("mask_dtype", [np.float32, np.int64, np.uint8, np.int8])
def test_extended_rows_read_masks_of_any_dtype(mask_dtype):
    for name, overrides, which in EXTENDED[9:17:3]:
        for T in (7, 33):
            fast, general, mask = extended_paths(name, overrides, T, np.float32, mask_dtype, **which)
            want, _, _ = extended_paths(name, overrides, T, np.float32, **which)
            np.testing.assert_array_equal(fast.grad_logp, want.grad_logp)
            assert float(fast.loss) == float(want.loss)
            _compare(fast, general, mask, 2e-6, True)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("which", ["advantages", "token_weights", "entropies"])
def test_extended_rows_report_the_first_bad_value(which, dtype):
    for T in (5, 16, 40):
        lp, old, A, mask = batch(T, dtype)
        mask[0, :] = True
        lp[0], old[0] = np.log(0.5), np.log(0.4)
        ex = extras_of(lp, mask, T, tw=True, ent=True, adv=True, dtype=dtype)
        ex[which][0, T - 2] = np.nan
        ex[which][0, T - 1] = np.inf  # a later bad value: the first one is reported
        adv = ex.pop("advantages")
        with pytest.raises(ValueError, match=rf"{which}.*row 0, token {T - 2}"):
            grpokit.policy_loss(lp, old, adv, mask, spec="paper.gtpo", **ex)


def test_vapo_row_without_a_selected_token():
    # no positive token: the NLL term is 0 (NeMo-RL's mean over none), on both paths
    lp, old, A, mask = batch(33, np.float32)
    sel = np.zeros(mask.shape, bool)
    sel[~mask] = True  # selected padding is not a selected token
    fast = grpokit.policy_loss(lp, old, A, mask, spec="nemo.vapo", selection=sel)
    general = grpokit.policy_loss(lp, old, A, mask, spec="nemo.vapo", selection=sel, return_per_token=True)
    plain = grpokit.policy_loss(lp, old, A, mask, spec="nemo.vapo", selection=sel, positive_example_nll_weight=0.0)
    _compare(fast, general, mask, 2e-6, True)
    assert float(fast.loss) == float(plain.loss)
    np.testing.assert_array_equal(fast.grad_logp, plain.grad_logp)


def test_empty_rows_in_extended_and_sequence_rows():
    lp, old, A, mask = batch(33, np.float32)
    mask[1:3] = False
    ex = extras_of(lp, mask, 33, tw=True, ent=True)
    for name, kw in (("paper.gtpo", ex), ("verl.reinforce_seq", {}), ("trl.vespo", {})):
        fast = grpokit.policy_loss(lp, old, A, mask, spec=name, **kw)
        general = grpokit.policy_loss(lp, old, A, mask, spec=name, return_per_token=True, **kw)
        _compare(fast, general, mask, 2e-6, True)
        assert np.all(fast.grad_logp[1:3] == 0)


@pytest.mark.parametrize("name,overrides,which", [EXTENDED[9], EXTENDED[14], EXTENDED[17], EXTENDED[25]])
def test_extended_rows_do_not_depend_on_the_thread_count(name, overrides, which):
    lp, old, A, mask = batch(2048, np.float32, B=64)
    kw = dict(overrides, ref_logp=ref_of(lp, 2048), **extras_of(lp, mask, 2048, **which))
    adv = kw.pop("advantages", A)
    one = grpokit.policy_loss(lp, old, adv, mask, spec=name, num_threads=1, **kw)
    for nt in (2, 3):
        r = grpokit.policy_loss(lp, old, adv, mask, spec=name, num_threads=nt, **kw)
        assert float(r.loss) == float(one.loss)
        np.testing.assert_array_equal(r.grad_logp, one.grad_logp)
        if one.grad_entropy is not None:
            np.testing.assert_array_equal(r.grad_entropy, one.grad_entropy)
        for k in one.metrics:
            np.testing.assert_array_equal(float(r.metrics[k]), float(one.metrics[k]), err_msg=k)


# ---- packed rows (cu_seqlens): the same vectorised rows over each completion's slice --------------------


def packed(lp, old, A, mask, extras):
    """The rows of a padded batch packed back to back, each cut at a random length (0 included)."""
    rng = np.random.default_rng(lp.shape[1] + 31)
    lengths = rng.integers(0, lp.shape[1] + 1, size=lp.shape[0])
    lengths[0] = lp.shape[1]
    cu = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    cat = lambda x: np.concatenate([x[i, :n] for i, n in enumerate(lengths)])  # noqa: E731
    per_token = {k: cat(v) if np.ndim(v) == 2 else v for k, v in extras.items()}
    return cat(lp), cat(old), A, cat(mask), cu, per_token


PACKED = [
    ("trl.dapo", {}, {}),
    ("trl.grpo", {"beta": 0.04}, {}),
    ("verl.vanilla", {}, dict(adv=True)),
    ("roll.topr", {}, {}),
    ("prime.default", {}, dict(tw=True)),
    ("paper.gtpo", {}, dict(ent=True)),
    ("paper.gspo", {"beta": 0.04}, {}),
    ("trl.vespo", {}, {}),
    ("nemo.vapo", {}, dict(sel=True)),
]


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("name,overrides,which", PACKED, ids=[f"{n}+{','.join(o)}+{','.join(w)}" for n, o, w in PACKED])
def test_packed_rows_match_the_general_path(name, overrides, which, dtype):
    rtol = 2e-6 if dtype == np.float32 else 1e-12
    for T in (1, 17, 100):
        lp, old, A, mask = batch(T, dtype)
        ex = dict(ref_logp=ref_of(lp, T), **extras_of(lp, mask, T, dtype=dtype, **which))
        lp, old, A, m, cu, ex = packed(lp, old, A, mask, ex)
        adv = ex.pop("advantages", A)
        kw = dict(overrides, cu_seqlens=cu, **ex)
        fast = grpokit.policy_loss(lp, old, adv, m, spec=name, **kw)
        general = grpokit.policy_loss(lp, old, adv, m, spec=name, return_per_token=True, **kw)
        _compare(fast, general, m, rtol, True)
        if general.grad_entropy is not None:
            atol = rtol * max(np.abs(general.grad_entropy).max(), 1e-30)
            np.testing.assert_allclose(fast.grad_entropy, general.grad_entropy, rtol=rtol, atol=atol)
