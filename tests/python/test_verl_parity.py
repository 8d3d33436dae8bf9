"""Parity with verl's own functions (`verl.trainer.ppo.core_algos`, `rollout_corr_helper`), imported
from the installed verl (verl_source.py; skipped when verl or the `verl` extra is absent). Inputs are
finite, groups have >= 2 completions and every row has tokens: where verl and grpokit agree by design
(docs/estimators.md)."""

import types

import numpy as np
import pytest

import grpokit as gk

torch = pytest.importorskip("torch")

import verl_source  # noqa: E402

B, T, G = 12, 7, 4


@pytest.fixture(scope="module")
def ca():
    return verl_source.core_algos()


@pytest.fixture(scope="module")
def rc():
    return verl_source.rollout_corr_helper()


def make(seed, gaps=False):
    g = np.random.default_rng(seed)
    lens = g.integers(2, T + 1, size=B)
    m = np.arange(T)[None, :] < lens[:, None]
    if gaps:
        m &= g.uniform(size=(B, T)) < 0.8
        m[:, 0] = True
    R = np.round(g.normal(size=B), 3)
    r_tok = np.zeros((B, T))
    last = np.array([np.flatnonzero(row)[-1] for row in m])
    r_tok[np.arange(B), last] = R
    index = np.repeat(np.arange(B // G), G)
    return R, r_tok, m, index, g


def tt(x):
    return torch.tensor(x, dtype=torch.float64)


@pytest.mark.parametrize("norm", [True, False])
def test_grpo(ca, norm):
    R, r_tok, m, index, _ = make(0)
    want, _ = ca.compute_grpo_outcome_advantage(tt(r_tok), tt(m), index, norm_adv_by_std_in_grpo=norm)
    got = gk.advantages(R, G, estimator="verl.grpo" if norm else "verl.grpo_no_std")
    np.testing.assert_allclose(got[:, None] * m, want.numpy(), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize(
    "name,fn,kw",
    [
        ("verl.rloo", "compute_rloo_outcome_advantage", {}),
        ("verl.reinforce_plus_plus_baseline", "compute_reinforce_plus_plus_baseline_outcome_advantage", {"mask": True}),
        ("verl.opo", "compute_opo_outcome_advantage", {"mask": True}),
        ("verl.gpg", "compute_gpg_outcome_advantage", {}),
        ("verl.grpo_passk", "compute_grpo_passk_outcome_advantage", {}),
    ],
)
def test_outcome_estimators(ca, name, fn, kw):
    R, r_tok, m, index, _ = make(1)
    config = {"norm_adv_by_std_in_grpo": True}
    want, _ = getattr(ca, fn)(token_level_rewards=tt(r_tok), response_mask=tt(m), index=index, config=config)
    got = gk.advantages(R, G, estimator=name, **({"mask": m} if kw.get("mask") else {}))
    np.testing.assert_allclose(got[:, None] * m, want.numpy(), rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("gaps", [False, True])
def test_reinforce_plus_plus(ca, gaps):
    _, r_tok, m, _, g = make(2, gaps)
    r_tok = np.where(m, g.normal(size=(B, T)), 0.0)
    want_adv, want_ret = ca.compute_reinforce_plus_plus_outcome_advantage(
        tt(r_tok), tt(m), config=types.SimpleNamespace(gamma=0.9)
    )
    adv, ret = gk.advantages(r_tok, estimator="verl.reinforce_plus_plus", mask=m, gamma=0.9, return_returns=True)
    np.testing.assert_allclose(adv, want_adv.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ret, want_ret.numpy(), rtol=1e-12, atol=1e-12)


def test_remax(ca):
    _, r_tok, m, _, g = make(3)
    b = g.normal(size=B)
    want_adv, want_ret = ca.compute_remax_outcome_advantage(tt(r_tok), tt(b), tt(m))
    adv, ret = gk.advantages(r_tok, estimator="verl.remax", mask=m, baseline_rewards=b, return_returns=True)
    np.testing.assert_allclose(adv, want_adv.numpy(), rtol=1e-12, atol=1e-12)  # right padding: 0 there in both
    np.testing.assert_allclose(ret, want_ret.numpy(), rtol=1e-12, atol=1e-12)


def test_gdpo_multi_reward(ca):
    R, r_tok, m, index, g = make(4)
    K = 3
    Rk = np.round(g.normal(size=(B, K)), 3).astype(np.float32).astype(np.float64)  # verl reads float32
    w = [1.0, 0.5, 2.0]
    P = 3
    attention = np.concatenate([np.ones((B, P)), m], axis=1)
    keys = [f"r{k}" for k in range(K)]
    want, _ = ca.compute_gdpo_outcome_advantage(
        tt(r_tok),
        tt(m),
        index,
        config={"gdpo_reward_keys": keys, "gdpo_reward_weights": w},
        non_tensor_batch={k: Rk[:, i] for i, k in enumerate(keys)},
        batch={"prompts": torch.zeros(B, P), "attention_mask": torch.tensor(attention, dtype=torch.long)},
    )
    got = gk.advantages(Rk, G, estimator="verl.gdpo", reward_weights=w, mask=m)
    np.testing.assert_allclose(got[:, None] * m, want.numpy(), rtol=1e-5, atol=1e-5)  # verl: float32 weights


@pytest.mark.parametrize(
    "estimator,fn",
    [
        ("verl.optimal_token_baseline", "compute_optimal_token_baseline_advantage"),
        ("verl.tir_optimal_token_baseline", "compute_multi_turn_optimal_token_baseline_advantage"),
    ],
)
@pytest.mark.parametrize("with_is", [False, True])
@pytest.mark.parametrize("gaps", [False, True])
def test_optimal_token_baseline(ca, estimator, fn, with_is, gaps):
    _, r_tok, m, index, g = make(5, gaps)
    r_tok = np.where(m, g.normal(size=(B, T)), 0.0)
    logp = np.log(g.uniform(0.05, 1.0, size=(B, T)))
    sps = g.uniform(0.1, 1.0, size=(B, T))
    rho = g.uniform(0.5, 2.0, size=(B, T)) if with_is else None
    want_adv, want_ret = getattr(ca, fn)(
        tt(r_tok), tt(m), index, tt(logp), tt(sps), rollout_is_weights=None if rho is None else tt(rho)
    )
    adv, ret = gk.advantages(
        r_tok, G, estimator=estimator, mask=m, logp=logp, sum_pi_squared=sps, is_weights=rho, return_returns=True
    )
    np.testing.assert_allclose(adv, want_adv.numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ret, want_ret.numpy(), rtol=1e-12, atol=1e-12)


def logps(seed, scale=0.3):
    g = np.random.default_rng(seed)
    lens = g.integers(1, T + 1, size=B)
    m = np.arange(T)[None, :] < lens[:, None]
    trn = np.log(g.uniform(0.05, 1.0, size=(B, T)))
    smp = trn + g.normal(scale=scale, size=(B, T))
    return trn, smp, m


# verl averages some indicator metrics in float32 (`.float().mean()`), hence rel 1e-6 on metrics.
METRIC_REL = 1e-6

IS_METRICS = {
    "rollout_is_mean": "ratio_token_mean",
    "rollout_is_ratio_fraction_high": "fraction_high",
    "rollout_is_ratio_fraction_low": "fraction_low",
    "rollout_is_std": "std",
    "rollout_is_eff_sample_size": "ess",
    "rollout_is_batch_norm_factor": "batch_norm_factor",
    "rollout_is_oob_ratio": "masked_fraction",
}


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("threshold", [2.0, "0.5_5.0"])
@pytest.mark.parametrize("normalize", [False, True])
def test_rollout_is(rc, level, threshold, normalize):
    trn, smp, m = logps(6)
    want, metrics = rc.compute_rollout_correction_weights(
        tt(trn - smp), tt(m), rollout_is=level, rollout_is_threshold=threshold, rollout_is_batch_normalize=normalize
    )
    if isinstance(threshold, str):
        lo, hi = map(float, threshold.split("_"))
        kw = {"mode": "mask", "clip_min": lo, "clip_max": hi}
    else:
        kw = {"mode": "truncate", "clip_max": threshold}
    got = gk.importance_weights(trn, smp, m, level=level, log_clamp=20.0, batch_normalize=normalize, **kw)
    w = got.weights if level == "token" else got.weights[:, None] * m
    np.testing.assert_allclose(w, want.numpy(), rtol=1e-12, atol=1e-12)
    for theirs, ours in IS_METRICS.items():
        if theirs in metrics:
            assert got.metrics[ours] == pytest.approx(metrics[theirs], rel=METRIC_REL, abs=1e-12), theirs
    if level == "token":
        assert got.metrics["ratio_max"] == pytest.approx(metrics["rollout_is_max"], rel=1e-12)
        assert got.metrics["ratio_min"] == pytest.approx(metrics["rollout_is_min"], rel=1e-12)


@pytest.mark.parametrize(
    "criteria,thresholds",
    [
        ("token_k1", "0.8_1.25"),
        ("token_k2", "0.02"),
        ("token_k3", "0.02"),
        ("seq_sum_k1", "1.5"),
        ("seq_sum_k2", "0.1"),
        ("seq_sum_k3", "0.1"),
        ("seq_mean_k1", "0.9_1.1"),
        ("seq_mean_k2", "0.02"),
        ("seq_mean_k3", "0.02"),
        ("seq_max_k2", "0.05"),
        ("seq_max_k3", "0.05"),
        ("token_k1,seq_mean_k3", "0.7_1.4,0.03"),
    ],
)
def test_rollout_rs(rc, criteria, thresholds):
    trn, smp, m = logps(7, scale=0.2)
    want, metrics = rc.compute_rollout_rejection_mask(
        tt(trn - smp), tt(m), rollout_rs=criteria, rollout_rs_threshold=thresholds
    )
    got = gk.rejection_mask(trn, smp, m, criteria, thresholds)
    np.testing.assert_array_equal(got.mask, want.numpy().astype(bool))
    for name in criteria.split(","):
        for s in ("mean", "max", "min", "masked_fraction", "seq_masked_fraction"):
            assert got.metrics[f"{name}_{s}"] == pytest.approx(
                metrics[f"rollout_rs_{name}_{s}"], rel=METRIC_REL, abs=1e-12
            )
    assert got.metrics["masked_fraction"] == pytest.approx(
        metrics["rollout_rs_masked_fraction"], rel=METRIC_REL, abs=1e-12
    )
    assert got.metrics["seq_masked_fraction"] == pytest.approx(
        metrics["rollout_rs_seq_masked_fraction"], rel=METRIC_REL
    )


def test_offpolicy_metrics(rc):
    trn, smp, m = logps(8)
    want = rc.compute_offpolicy_metrics(tt(trn), tt(smp), tt(m))
    got = gk.importance_weights(trn, smp, m, level="token", mode="truncate", clip_max=2.0).metrics
    for k in ("kl", "k3_kl", "chi2_token", "chi2_seq"):
        assert got[k] == pytest.approx(want[k], rel=1e-9, abs=1e-12), k
