"""Advantage estimators against TRL 1.16.0's own lines (sum-then-normalise, normalise-then-sum, RLOO with
reward clipping and KL in the reward), with TRL's nanstd. The fp64 references, properties and bad inputs
are in test_estimators.py."""

import numpy as np
import pytest

import grpokit as gk

# ---- TRL parity: TRL 1.16.0's own lines, with its nanstd ------------------------------------------

trl_utils = pytest.importorskip("trl.trainer.utils")
torch = pytest.importorskip("torch")
nanstd = trl_utils.nanstd
# TRL's nanstd computes Bessel's n/(n−1) from integer counts in torch's default float32, so its fp64
# results carry a relative error of ~1e-8; grpokit uses the exact factor.
TRL_RTOL = 1e-7


def _trl_rewards(rewards_per_func, weights):
    unscorable = torch.isnan(rewards_per_func).all(dim=1)
    rewards = (rewards_per_func * weights.unsqueeze(0)).nansum(dim=1)
    rewards[unscorable] = torch.nan
    return rewards, unscorable


def trl_sum_then_normalize(rewards_per_func, weights, G, scale_rewards):
    rewards, _ = _trl_rewards(rewards_per_func, weights)
    mean = torch.nanmean(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    if scale_rewards in ["group", "none"]:
        std = nanstd(rewards.view(-1, G), dim=1).repeat_interleave(G, dim=0)
    else:
        std = nanstd(rewards).expand_as(rewards)
    adv = rewards - mean
    if scale_rewards != "none":
        adv = adv / (std + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


def trl_normalize_then_sum(rewards_per_func, weights, G):
    K = rewards_per_func.shape[1]
    grouped = rewards_per_func.view(-1, G, K)
    mean_k = torch.nanmean(grouped, dim=1, keepdim=True)
    std_k = nanstd(grouped, dim=1, keepdim=True)
    reward_k = ((grouped - mean_k) / (std_k + 1e-4)).view(-1, K)
    rewards = (reward_k * weights.unsqueeze(0)).nansum(dim=1)
    rewards[torch.isnan(rewards_per_func).all(dim=1)] = torch.nan
    std = nanstd(rewards).expand_as(rewards)
    return torch.nan_to_num((rewards - torch.nanmean(rewards)) / (std + 1e-4), nan=0.0)


def trl_rloo(rewards_per_func, weights, G, normalize, clip=None, beta=0.0, old=None, ref=None, mask=None):
    rewards, _ = _trl_rewards(rewards_per_func, weights)
    if clip:
        rewards = rewards.clamp(min=clip[0], max=clip[1])
    if beta != 0.0:
        rewards = rewards - beta * ((old - ref) * mask).sum(-1)
    grouped = rewards.view(-1, G)
    counts = (~torch.isnan(grouped)).sum(dim=1, keepdim=True)
    total = torch.nansum(grouped, dim=1, keepdim=True)
    adv = rewards - ((total - grouped) / (counts - 1)).view(-1)
    if normalize:
        adv = (adv - torch.nanmean(adv)) / (nanstd(adv) + 1e-4)
    return torch.nan_to_num(adv, nan=0.0)


def _reward_table(B, K, seed, nan_rows=(), nan_cells=()):
    g = np.random.default_rng(seed)
    x = np.round(g.normal(size=(B, K)), 2)
    for i in nan_rows:
        x[i] = np.nan
    for i, k in nan_cells:
        x[i, k] = np.nan
    return x


@pytest.mark.parametrize("scale", ["group", "batch", "none"])
def test_trl_parity_sum_then_normalize(scale):
    x = _reward_table(12, 3, 7, nan_rows=[2], nan_cells=[(5, 1)])
    w = np.array([1.0, 0.5, 2.0])
    want = trl_sum_then_normalize(torch.tensor(x), torch.tensor(w), 4, scale).numpy()
    kw = {
        "none": {},
        "group": {"std": "sample", "epsilon": 1e-4},
        "batch": {"std": "sample", "epsilon": 1e-4, "std_scope": "batch"},
    }[scale]
    got = gk.advantages(x, 4, reward_weights=w, **kw)
    np.testing.assert_allclose(got, want, rtol=TRL_RTOL, atol=TRL_RTOL)


def test_trl_parity_normalize_then_sum():
    x = _reward_table(12, 3, 8, nan_rows=[4], nan_cells=[(0, 2), (9, 0)])
    w = np.array([1.0, 0.25, 3.0])
    want = trl_normalize_then_sum(torch.tensor(x), torch.tensor(w), 4).numpy()
    got = gk.advantages(x, 4, estimator="normalize_then_sum", reward_weights=w)
    np.testing.assert_allclose(got, want, rtol=TRL_RTOL, atol=TRL_RTOL)


@pytest.mark.parametrize("normalize", [False, True])
def test_trl_parity_rloo(normalize):
    x = _reward_table(12, 2, 9, nan_rows=[1, 6, 7])  # group 2 keeps a lone scorable completion
    w = np.array([1.0, -0.5])
    want = trl_rloo(torch.tensor(x), torch.tensor(w), 4, normalize).numpy()
    got = gk.advantages(x, 4, estimator="rloo", reward_weights=w, normalize=normalize)
    np.testing.assert_allclose(got, want, rtol=TRL_RTOL, atol=TRL_RTOL)


def test_trl_parity_rloo_with_reward_clip_and_kl_in_reward():
    x = _reward_table(8, 2, 10, nan_rows=[3])
    w = np.array([1.0, 1.0])
    T = 5
    rng = np.random.default_rng(10)
    m = np.arange(T)[None, :] < rng.integers(1, T + 1, size=8)[:, None]
    old = np.log(rng.uniform(0.1, 1.0, size=(8, T)))
    ref = np.log(rng.uniform(0.1, 1.0, size=(8, T)))
    want = trl_rloo(
        torch.tensor(x),
        torch.tensor(w),
        4,
        True,
        clip=(-1.0, 1.0),
        beta=0.05,
        old=torch.tensor(old),
        ref=torch.tensor(ref),
        mask=torch.tensor(m, dtype=torch.float64),
    ).numpy()
    old[~m] = np.nan  # padding may hold anything
    got = gk.advantages(
        x,
        4,
        estimator="trl.rloo",
        reward_weights=w,
        normalize=True,
        reward_clip_range=(-1.0, 1.0),
        beta=0.05,
        logp=old,
        ref_logp=ref,
        mask=m,
    )
    np.testing.assert_allclose(got, want, rtol=TRL_RTOL, atol=TRL_RTOL)


def test_rloo_kl_needs_its_inputs():
    with pytest.raises(ValueError, match="estimator 'rloo' with beta != 0 needs"):
        gk.advantages([1.0, 0.0], 2, estimator="rloo", beta=0.1)
    with pytest.raises(ValueError, match="reward_clip_range: expected min <= max"):
        gk.advantages([1.0, 0.0], 2, estimator="rloo", reward_clip_range=(1.0, -1.0))
