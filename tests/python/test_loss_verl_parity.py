"""Parity with verl's own policy-loss code (verl 0.9.1, ``verl/trainer/ppo/core_algos.py``), imported as it
is (verl_source.py) and run with verl's own ``ActorConfig``. Skipped when verl or the `verl` extra is
absent (docs/verl.md); the formula tests of test_loss.py cover the same presets without it.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import grpokit  # noqa: E402
import verl_source  # noqa: E402
from torch_batches import numpy_policy_loss, ragged_logprobs  # noqa: E402


@pytest.fixture(scope="module")
def verl():
    return verl_source.core_algos()


def batch(seed, B=6, T=8, spread=0.25):
    # A float32 response mask, as verl's: its `L + 1e-8` denominators then equal L exactly.
    g = torch.Generator().manual_seed(seed)
    mask, lp, old = ragged_logprobs(B, T, g, spread)
    mask = mask.float()
    ref = lp + 1.5 * torch.randn(B, T, generator=g, dtype=torch.float64)  # wide: exercises the k3 clamps
    A = torch.randn(B, generator=g, dtype=torch.float64)[:, None].expand(B, T).contiguous()
    H = torch.rand(B, T, generator=g, dtype=torch.float64) * 2
    return dict(lp=lp, old=old, ref=ref, A=A, mask=mask, H=H)


def config(global_batch_info=None):
    wc = verl_source.workers_config()
    cfg = wc.FSDPActorConfig(
        rollout_n=1,
        ppo_micro_batch_size_per_gpu=1,
        clip_ratio=0.2,
        clip_ratio_low=0.2,
        clip_ratio_high=0.2,
        clip_ratio_c=3.0,
        tau_pos=1.0,
        tau_neg=1.05,
        policy_loss=wc.PolicyLossConfig(
            clip_cov_ratio=0.2, clip_cov_lb=-10.0, clip_cov_ub=10.0, kl_cov_ratio=0.2, ppo_kl_coef=0.1, dro_beta=0.3
        ),
    )
    cfg.global_batch_info.update(global_batch_info or {})
    return cfg


def run_verl(verl, mode, b, agg, cfg, *, kl_type=None, kl_coef=0.0, entropy_coeff=0.0):
    """verl's actor: pg loss + kl_coef·agg(kl) − entropy_coeff·agg(entropy), differentiated by autograd."""
    lp = b["lp"].clone().requires_grad_(True)
    H = b["H"].clone().requires_grad_(True)
    fn = getattr(verl, f"compute_policy_loss_{mode}")
    pg_loss, metrics = fn(b["old"], lp, b["A"], b["mask"], loss_agg_mode=agg, config=cfg)
    loss = pg_loss
    if kl_type is not None:
        kld = verl.kl_penalty(lp, b["ref"], kl_type)
        loss = loss + kl_coef * verl.agg_loss(kld, b["mask"], agg, **cfg.global_batch_info)
    if entropy_coeff:
        loss = loss - entropy_coeff * verl.agg_loss(H, b["mask"], agg, **cfg.global_batch_info)
    loss.backward()
    return loss.item(), lp.grad.numpy(), (H.grad.numpy() if entropy_coeff else None), metrics


AGGS = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]


def ours(name, b, agg, **kw):
    extra = {} if name in ("verl.geo_mean", "verl.sapo") else {"loss_agg_mode": agg}
    return numpy_policy_loss(b, name, ref_logp=b["ref"], entropies=b["H"], **extra, **kw)


def compare(res, want_loss, want_grad, metrics=None, names=()):
    np.testing.assert_allclose(float(res.loss), want_loss, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.grad_logp, want_grad, rtol=1e-9, atol=1e-12)
    for ours_name, verl_name in names:
        np.testing.assert_allclose(
            float(res.metrics[ours_name]), metrics[verl_name], rtol=1e-6, atol=1e-7, err_msg=ours_name
        )


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("mode", ["vanilla", "gspo", "gpg", "cispo", "dppo_tv", "dppo_kl", "dro"])
def test_verl_policy_losses(verl, mode, agg):
    b = batch(seed=len(mode) * 7 + len(agg))
    cfg = config()
    kw = {"epsilon": 0.2, "epsilon_high": 0.2} if mode == "gspo" else {}
    if mode == "dro":
        kw["dro_beta"] = 0.3
    want = run_verl(verl, mode, b, agg, cfg)
    res = ours(f"verl.{mode}", b, agg, **kw)
    names = [("ppo_kl", "actor/ppo_kl")]
    if mode in ("vanilla", "gspo", "cispo", "dppo_tv", "dppo_kl"):
        names.append(("pg_clipfrac", "actor/pg_clipfrac"))
    if mode == "vanilla":
        names.append(("pg_clipfrac_lower", "actor/pg_clipfrac_lower"))
    if mode in ("gpg",):
        names = []
    # verl's ppo_kl is a masked mean with +1e-8 in the denominator: agrees to ~1e-9 relative
    compare(res, want[0], want[1], want[3], names)


@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_verl_sapo_and_geo_mean(verl, agg):
    b = batch(seed=4)
    for mode in ("sapo", "geo_mean"):
        want = run_verl(verl, mode, b, agg, config())
        compare(ours(f"verl.{mode}", b, agg), want[0], want[1])


@pytest.mark.parametrize("kl_type", ["kl", "k1", "abs", "mse", "k2", "low_var_kl", "k3", "k3+", "k1+", "abs+"])
@pytest.mark.parametrize("agg", ["token-mean", "seq-mean-token-mean"])
def test_verl_kl_estimators_and_entropy(verl, kl_type, agg):
    b = batch(seed=9)
    cfg = config()
    want = run_verl(verl, "vanilla", b, agg, cfg, kl_type=kl_type, kl_coef=0.05, entropy_coeff=0.01)
    res = ours("verl.vanilla", b, agg, kl_loss_type=kl_type, kl_loss_coef=0.05, entropy_coeff=0.01)
    compare(res, want[0], want[1])
    np.testing.assert_allclose(res.grad_entropy, want[2], rtol=1e-9, atol=1e-12)


def test_verl_global_counts(verl):
    b = batch(seed=5)
    for agg, info, over in [
        ("token-mean", dict(dp_size=4, batch_num_tokens=97), dict(dp_size=4, batch_num_tokens=97)),
        ("seq-mean-token-mean", dict(dp_size=2, global_batch_size=20), dict(dp_size=2, global_batch_size=20)),
        (
            "seq-mean-token-sum-norm",
            dict(dp_size=2, global_batch_size=20, loss_scale_factor=64),
            dict(dp_size=2, global_batch_size=20, loss_scale_factor=64),
        ),
    ]:
        cfg = config(global_batch_info=info)
        want = run_verl(verl, "vanilla", b, agg, cfg)
        compare(ours("verl.vanilla", b, agg, **over), want[0], want[1])


def test_verl_reinforce_bypass(verl):
    b = batch(seed=6)
    cfg = config()
    lp = b["lp"].clone().requires_grad_(True)
    # verl's bypass IS weight: exp(clamp(ℓ − ℓ_rollout, ±20)) truncated at rollout_is_threshold, detached
    w = torch.clamp(torch.exp(torch.clamp(lp - b["old"], -20, 20)), max=2.0).detach()
    loss, _ = verl.compute_policy_loss_reinforce(
        b["old"], lp, b["A"], b["mask"], loss_agg_mode="token-mean", config=cfg, rollout_is_weights=w
    )
    loss.backward()
    compare(ours("verl.reinforce", b, "token-mean"), loss.item(), lp.grad.numpy())


@pytest.fixture(scope="module")
def verl_rollout_weights():
    """verl's own compute_rollout_correction_weights (rollout_corr_helper.py)."""
    return verl_source.rollout_corr_helper().compute_rollout_correction_weights


@pytest.mark.parametrize("level", ["token", "sequence"])
@pytest.mark.parametrize("spread", [0.25, 4.0])  # 4.0: row sums beyond verl's ±20 safety bound
def test_verl_bypass_reinforce_with_verls_own_is_weights(verl, verl_rollout_weights, level, spread):
    b = batch(seed=11, spread=spread)
    cfg = config()
    lp = b["lp"].clone().requires_grad_(True)
    w, _ = verl_rollout_weights(lp.detach() - b["old"], b["mask"], rollout_is=level, rollout_is_threshold=1.5)
    loss, _ = verl.compute_policy_loss_reinforce(
        b["old"], lp, b["A"], b["mask"], loss_agg_mode="seq-mean-token-mean", config=cfg, rollout_is_weights=w
    )
    loss.backward()
    kw = dict(rollout_is=level, rollout_is_threshold=1.5)
    compare(ours("verl.reinforce", b, "seq-mean-token-mean", **kw), loss.item(), lp.grad.numpy())
    if level == "sequence":
        compare(
            ours("verl.reinforce_seq", b, "seq-mean-token-mean", rollout_is_threshold=1.5), loss.item(), lp.grad.numpy()
        )


def test_verl_bypass_reinforce_with_icepop_weights_from_grpokit_corrections(verl, verl_rollout_weights):
    # IcePop / batch-normalised weights come from grpokit.importance_weights and enter as token_weights
    b = batch(seed=12, spread=0.5)
    cfg = config()
    lp = b["lp"].clone().requires_grad_(True)
    for level, norm in (("sequence", False), ("token", True)):
        w, _ = verl_rollout_weights(
            lp.detach() - b["old"],
            b["mask"],
            rollout_is=level,
            rollout_is_threshold="0.5_2.5",
            rollout_is_batch_normalize=norm,
        )
        lp.grad = None
        loss, _ = verl.compute_policy_loss_reinforce(
            b["old"], lp, b["A"], b["mask"], loss_agg_mode="token-mean", config=cfg, rollout_is_weights=w
        )
        loss.backward()
        iw = grpokit.importance_weights(
            b["lp"].numpy(),
            b["old"].numpy(),
            b["mask"].numpy(),
            level=level,
            mode="mask",
            clip_min=0.5,
            clip_max=2.5,
            log_clamp=20,
            batch_normalize=norm,
        )
        tw = np.broadcast_to(iw.weights[:, None], b["lp"].shape) if level == "sequence" else iw.weights
        res = ours("verl.reinforce", b, "token-mean", logp_weight="one", token_weights=np.ascontiguousarray(tw))
        # the batch-normalisation factor is a mean taken in another order: 1e-9 relative
        np.testing.assert_allclose(float(res.loss), loss.item(), rtol=1e-9)
        np.testing.assert_allclose(res.grad_logp, lp.grad.numpy(), rtol=1e-9, atol=1e-12)


def test_rollout_is_is_refused_outside_bypass_reinforce():
    b = batch(seed=1)
    with pytest.raises(ValueError, match="rollout_is: applies to verl's bypass loss_type='reinforce'"):
        ours("verl.vanilla", b, "token-mean", rollout_is="sequence")
    with pytest.raises(ValueError, match="rollout_is: expected one of"):
        ours("verl.reinforce", b, "token-mean", rollout_is="geometric")


def test_verl_clip_cov_and_kl_cov_with_their_selection(verl):
    b = batch(seed=8)
    cfg = config()
    mask = b["mask"].bool()
    # kl_cov: verl's deterministic top-k selection, recomputed here from its formula
    adv, logp = b["A"][mask], b["lp"][mask]
    cov = (adv - adv.mean()) * (logp - logp.mean())
    k = max(1, int(len(cov) * cfg.policy_loss.kl_cov_ratio))
    idx = torch.nonzero(mask.reshape(-1), as_tuple=True)[0][torch.topk(cov, k).indices]
    sel = torch.zeros(mask.numel(), dtype=torch.bool)
    sel[idx] = True
    sel = sel.reshape(mask.shape)
    want = run_verl(verl, "kl_cov", b, "token-mean", cfg)
    compare(ours("verl.kl_cov", b, "token-mean", selection=sel.numpy()), want[0], want[1])
    # clip_cov: verl draws its tokens with torch.randperm; replay the same draw to know them
    torch.manual_seed(123)
    want = run_verl(verl, "clip_cov", b, "token-mean", cfg)
    ratio = torch.exp(b["lp"] - b["old"])
    clipped = (-b["A"] * torch.clamp(ratio, 0.8, 1.2) > -b["A"] * ratio) & mask
    cov_all = (b["A"] - (b["A"] * b["mask"]).sum() / (b["mask"].sum() + 1e-8)) * (
        b["lp"] - (b["lp"] * b["mask"]).sum() / (b["mask"].sum() + 1e-8)
    )
    cand = (cov_all < 10.0) & (cov_all > -10.0) & mask & ~clipped
    cidx = torch.nonzero(cand)
    torch.manual_seed(123)
    n = max(int(cfg.policy_loss.clip_cov_ratio * b["mask"].sum().item()), 1)
    cidx = cidx[torch.randperm(len(cidx))[: min(n, len(cidx))]]
    csel = torch.zeros_like(mask)
    csel[cidx[:, 0], cidx[:, 1]] = True
    compare(ours("verl.clip_cov", b, "token-mean", selection=csel.numpy()), want[0], want[1])
