"""policy_loss against the independent fp64 reference: value, per-token terms and exact gradient
(finite differences of the reference, with stop-gradients held fixed), for every preset and the
options that change the per-token term."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

import grpokit
from grpokit._presets import resolve
from loss_reference import fd_grad, reference_loss

PRESETS = sorted(grpokit.presets())


def make_batch(seed=0, B=5, T=7, spread=0.25, empty_row=False):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, T + 1, size=B)
    lengths[0] = T
    if empty_row:
        lengths[-1] = 0
    mask = np.arange(T)[None, :] < lengths[:, None]
    p = rng.uniform(0.05, 0.95, size=(B, T))
    lp = np.log(p)
    old = lp + rng.normal(0, spread, size=(B, T))
    ref = lp + rng.normal(0, spread, size=(B, T))
    smp = old + rng.normal(0, 0.05, size=(B, T))
    H = rng.uniform(0.1, 2.0, size=(B, T))
    A = rng.normal(size=B)
    # padding holds garbage, including NaN: it must never be read
    for arr in (lp, old, ref, smp, H):
        arr[~mask] = np.nan
    return dict(lp=lp, old=old, A=A, mask=mask, ref=ref, H=H, smp=smp)


def inputs_for(spec, b):
    kw = {}
    if spec.kl != "none" and spec.beta != 0.0:
        kw["ref_logp"] = b["ref"]
    if spec.gtpo_entropy or spec.entropy_coef != 0.0 or spec.top_entropy_quantile < 1.0:
        kw["entropies"] = b["H"]
    return kw


def check(spec_or_name, b, overrides=None, extra=None, rtol=1e-10, gtol=2e-6):
    overrides = overrides or {}
    extra = extra or {}
    spec = resolve(spec_or_name, overrides)
    kw = {**inputs_for(spec, b), **extra}
    if spec.selection != "none" and "selection" not in kw:
        kw["selection"] = np.random.default_rng(12).random(b["lp"].shape) < 0.3
    res = grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec=spec, return_per_token=True, **kw)
    ref_kw = dict(
        ref=kw.get("ref_logp"),
        H=kw.get("entropies"),
        smp=kw.get("sampling_logp"),
        keep=kw.get("keep"),
        tw=kw.get("token_weights"),
        sel=kw.get("selection"),
    )
    want, phi = reference_loss(spec, b["lp"], b["old"], b["A"], b["mask"], **ref_kw)
    np.testing.assert_allclose(float(res.loss), want, rtol=rtol, atol=1e-12)
    np.testing.assert_allclose(res.per_token, phi, rtol=1e-9, atol=1e-12)
    lp0 = np.where(b["mask"], b["lp"], 0.0)
    g = fd_grad(lambda x: reference_loss(spec, x, b["old"], b["A"], b["mask"], lp_sg=lp0, **ref_kw)[0], lp0)
    np.testing.assert_allclose(res.grad_logp, g, rtol=1e-5, atol=gtol)
    assert np.all(res.grad_logp[~b["mask"]] == 0)
    return res, spec


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_matches_the_reference(name):
    check(name, make_batch(seed=hash(name) % 1000))


@pytest.mark.parametrize("name", PRESETS)
def test_every_preset_with_wide_clip_and_token_advantages(name):
    b = make_batch(seed=7)
    b["A"] = np.random.default_rng(3).normal(size=b["lp"].shape)
    over = {} if resolve(name, {}).logp_weight == "cap" else {"epsilon": 0.3, "epsilon_high": 0.35}
    check(name, b, over)


@pytest.mark.parametrize(
    "overrides",
    [
        dict(delta=1.5),
        dict(clip_ratio_c=1.2),
        dict(log_ratio_min=-0.1, log_ratio_max=0.1),
        dict(beta=0.1, kl="k1", kl_log_clamp=0.01),
        dict(beta=0.1, kl="k2"),
        dict(beta=0.1, kl="abs"),
        dict(beta=0.1, kl="k3", kl_log_clamp=0.2, kl_value_clamp=0.01),
        dict(beta=0.1, kl="k3", kl_straight_through=True),
        dict(beta=0.1, kl="k3", use_bias_correction_kl=True),
        dict(beta=0.1, kl="k3", use_bias_correction_kl=True, importance_sampling_level="sequence"),
        dict(importance_sampling_level="sequence", epsilon=0.3),
        dict(loss_agg_mode="token-sum"),
        dict(loss_agg_mode="seq-mean-token-sum"),
        dict(loss_agg_mode="seq-mean-token-mean"),
        dict(loss_agg_mode="seq-mean-token-sum-norm", loss_scale_factor=9),
        dict(num_items_in_batch=100, dp_size=4),
        dict(surrogate="unclipped"),
        dict(surrogate="sapo"),
        dict(surrogate="geo_mean", epsilon=0.1, epsilon_high=0.15, aggregation="seq_mean_token_mean"),
        dict(surrogate="logp", logp_weight="clip"),
        dict(surrogate="logp", logp_weight="dppo_tv", clip_ratio_c=3.0, epsilon=0.05, epsilon_high=0.05),
        dict(surrogate="logp", logp_weight="dppo_kl", clip_ratio_c=3.0, epsilon=0.02, epsilon_high=0.02),
        dict(surrogate="logp", logp_weight="one", dro_beta=0.5),
        dict(prune_threshold=0.5),
        dict(entropy_coef=0.3),
        dict(entropy_coef=0.3, entropy_aggregation="policy"),
        dict(top_entropy_quantile=0.4),
        dict(top_entropy_quantile=0.4, entropy_coef=0.2),
    ],
    ids=repr,
)
def test_rule_options_match_the_reference(overrides):
    check("trl.dapo", make_batch(seed=11), dict(overrides))


@pytest.mark.parametrize("mode", ["token_truncate", "token_mask", "sequence_truncate", "sequence_mask"])
def test_sampler_is_and_off_policy_mask(mode):
    b = make_batch(seed=5)
    b["smp"] = b["old"] + np.random.default_rng(1).normal(0, 0.3, size=b["lp"].shape)
    extra = dict(sampling_logp=b["smp"])
    over = dict(
        vllm_importance_sampling_mode=mode,
        vllm_importance_sampling_clip_max=1.3,
        vllm_importance_sampling_clip_min=0.8,
        off_policy_mask_threshold=0.05,
    )
    res, _ = check("trl.grpo", b, over, extra)
    assert "sampling/importance_sampling_ratio/mean" in res.metrics


def test_vespo_with_token_is():
    b = make_batch(seed=9)
    check("trl.vespo", b, dict(vllm_importance_sampling_clip_max=1.2), dict(sampling_logp=b["smp"]))


def test_gtpo_keep_flags_token_weights_and_entropy_term():
    b = make_batch(seed=4)
    rng = np.random.default_rng(0)
    keep = np.array([1, 0, 1, 1, 1], dtype=bool)
    tw = rng.uniform(0.5, 2.0, size=b["lp"].shape)
    res, _ = check("paper.gtpo", b, {}, dict(keep=keep, token_weights=tw, entropies=b["H"]))
    # the entropy term gives the entropies a gradient: check it by finite differences too
    spec = resolve("paper.gtpo", {})
    H0 = np.where(b["mask"], b["H"], 0.0)
    g = fd_grad(lambda h: reference_loss(spec, b["lp"], b["old"], b["A"], b["mask"], H=h, keep=keep, tw=tw)[0], H0)
    np.testing.assert_allclose(res.grad_entropy, g, rtol=1e-5, atol=2e-7)


def test_entropy_bonus_gradient():
    b = make_batch(seed=2)
    for over in (
        dict(entropy_coef=0.5),
        dict(entropy_coef=0.5, top_entropy_quantile=0.5),
        dict(entropy_coef=0.5, loss_agg_mode="seq-mean-token-mean", entropy_aggregation="policy"),
    ):
        spec = resolve("trl.grpo", over)
        res = grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec=spec, entropies=b["H"])
        H0 = np.where(b["mask"], b["H"], 0.0)
        g = fd_grad(lambda h, spec=spec: reference_loss(spec, b["lp"], b["old"], b["A"], b["mask"], H=h)[0], H0)
        # the top-entropy mask is piecewise constant in H: FD is exact away from the threshold
        np.testing.assert_allclose(res.grad_entropy, g, rtol=1e-5, atol=2e-7)


def test_on_policy_old_none_is_sg_logp():
    b = make_batch(seed=3)
    for name in ("trl.grpo", "paper.gspo", "trl.cispo", "trl.sapo"):
        on = grpokit.policy_loss(b["lp"], None, b["A"], b["mask"], spec=name)
        same = grpokit.policy_loss(b["lp"], b["lp"], b["A"], b["mask"], spec=name)
        np.testing.assert_array_equal(on.grad_logp, same.grad_logp)
        assert float(on.loss) == float(same.loss)


def test_float32_matches_float64():
    b = make_batch(seed=8)
    for name in PRESETS:
        spec = resolve(name, {})
        kw = inputs_for(spec, b)
        sel = (np.arange(b["lp"].size).reshape(b["lp"].shape) % 3 == 0) if spec.selection != "none" else None
        r64 = grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec=spec, selection=sel, **kw)
        kw32 = {k: v.astype(np.float32) for k, v in kw.items()}
        r32 = grpokit.policy_loss(
            b["lp"].astype(np.float32),
            b["old"].astype(np.float32),
            b["A"].astype(np.float32),
            b["mask"],
            spec=spec,
            selection=sel,
            **kw32,
        )
        assert r32.grad_logp.dtype == np.float32 and r32.loss.dtype == np.float32
        # float32 inputs round ratios at ~1e-7 relative; the sums here have < 40 terms
        np.testing.assert_allclose(float(r32.loss), float(r64.loss), rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(r32.grad_logp, r64.grad_logp, rtol=1e-3, atol=1e-5)


def test_spec_records_are_data():
    p = grpokit.presets()
    assert {"paper.grpo_r1", "paper.gcpo", "trl.dapo", "trl.vespo"} <= set(p)
    for row in p.values():
        assert row["description"] and isinstance(row["defaults"], dict)
    s = grpokit.LossSpec(aggregation="seq_mean_token_sum", epsilon_low=0.1, epsilon_high=0.1)
    assert s.replace(epsilon=0.3).epsilon_high == 0.3  # TRL: epsilon_high follows epsilon
    assert dataclasses.replace(s, beta=0.0) == s
