"""grpokit inside verl (grpokit.integrations.verl): verl's own entry points run grpokit's presets and match
verl's built-in losses and estimators. Needs verl and what its trainer imports (pip install 'grpokit[verl]');
skipped without them."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl.trainer.ppo.core_algos", exc_type=ImportError)

from verl.trainer.ppo import core_algos  # noqa: E402
from verl.workers.config import FSDPActorConfig, PolicyLossConfig  # noqa: E402

import grpokit  # noqa: E402
import grpokit.integrations.verl as gv  # noqa: E402

AGGS = ["token-mean", "token-sum", "seq-mean-token-sum", "seq-mean-token-mean", "seq-mean-token-sum-norm"]
# verl modes grpokit mirrors whose inputs verl's call carries (clip_cov / kl_cov select tokens inside)
# verl metrics grpokit does not compute for these modes (docs/verl.md)
MISSING = {
    "gspo": {"actor/pg_clipfrac_lower"},
    "cispo": {"actor/pg_clipfrac_lower"},
    "sapo": {"actor/pg_clipfrac", "actor/pg_clipfrac_lower"},
    "dppo_tv": {"actor/pg_clipfrac_lower"},
    "geo_mean": {"actor/pg_clipfrac", "actor/pg_clipfrac_lower"},
    "dppo_kl": {"actor/pg_clipfrac_lower"},
}
MODES = ["vanilla", "gspo", "gpg", "cispo", "sapo", "dppo_tv", "dppo_kl", "dro", "geo_mean", "clip_cov", "kl_cov"]


def actor_config(mode, agg="token-mean", info=None, **kw):
    base = dict(clip_ratio=0.2, clip_ratio_low=0.2, clip_ratio_high=0.28, clip_ratio_c=3.0)
    base.update(kw)
    cfg = FSDPActorConfig(
        rollout_n=4,
        ppo_micro_batch_size_per_gpu=2,
        loss_agg_mode=agg,
        policy_loss=PolicyLossConfig(
            loss_mode=mode, dro_beta=0.3, clip_cov_ratio=0.2, clip_cov_lb=-10.0, clip_cov_ub=10.0, kl_cov_ratio=0.2
        ),
        **base,
    )
    cfg.global_batch_info.update(info or {})
    return cfg


def batch(seed, B=6, T=8, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, T + 1, (B,), generator=g)
    lengths[0] = T
    mask = torch.arange(T)[None, :] < lengths[:, None]  # bool, as verl's ppo_loss passes it
    lp = torch.log(torch.rand(B, T, generator=g, dtype=torch.float64) * 0.9 + 0.05)
    old = lp + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    A = torch.randn(B, generator=g, dtype=torch.float64)[:, None].expand(B, T) * mask
    w = torch.rand(B, T, generator=g, dtype=torch.float64) + 0.5
    return dict(lp=lp, old=old, A=A, mask=mask, w=w)


def run(name, b, cfg, weights=True):
    """verl's policy loss ``name`` through verl's registry: loss, ∂loss/∂log_prob, metrics."""
    lp = b["lp"].clone().requires_grad_(True)
    fn = core_algos.get_policy_loss_fn(name)
    loss, metrics = fn(
        old_log_prob=b["old"],
        log_prob=lp,
        advantages=b["A"],
        response_mask=b["mask"],
        loss_agg_mode=cfg.loss_agg_mode,
        config=cfg,
        rollout_is_weights=b["w"] if weights else None,
    )
    loss.backward()
    return loss.item(), lp.grad, metrics


def check_same(mode, b, cfg, weights=True):
    torch.manual_seed(1)  # clip_cov draws its tokens from the global generator: the same draw for both
    want = run(mode, b, cfg, weights)
    torch.manual_seed(1)
    got = run(f"grpokit.verl.{mode}", b, cfg, weights)
    # geo_mean: verl's per-sequence means divide by (L + 1e-8), grpokit's by L: ~1e-9 relative
    rtol = 1e-8 if mode == "geo_mean" else 1e-10
    np.testing.assert_allclose(got[0], want[0], rtol=rtol, atol=1e-12)
    torch.testing.assert_close(got[1], want[1], rtol=10 * rtol, atol=1e-12)
    shared = set(got[2]) & set(want[2])
    for k in shared:  # verl's masked means carry +1e-8 in the denominator
        np.testing.assert_allclose(got[2][k], want[2][k], rtol=1e-6, atol=1e-7, err_msg=k)
    return got, want, shared


@pytest.mark.parametrize("agg", AGGS)
@pytest.mark.parametrize("mode", MODES)
def test_registered_loss_equals_verls_builtin(mode, agg):
    b = batch(seed=len(mode) * 5 + len(agg))
    # dro / kl_cov: verl also weights the penalty by the rollout weights; grpokit refuses them (tested below)
    got, want, shared = check_same(mode, b, actor_config(mode, agg), weights=mode not in ("dro", "kl_cov"))
    # verl's names for what grpokit computes; the rest under grpokit/
    assert set(want[2]) - shared == MISSING.get(mode, set())
    assert all(k.startswith(("actor/", "grpokit/")) for k in got[2])
    assert all(isinstance(v, float) for v in got[2].values())


@pytest.mark.parametrize("mode", ["vanilla", "cispo", "dro"])
def test_without_rollout_weights_and_with_clip_ratio_fallback(mode):
    b = batch(seed=3)
    check_same(mode, b, actor_config(mode, clip_ratio=0.25, clip_ratio_low=None, clip_ratio_high=None), weights=False)


@pytest.mark.parametrize(
    "agg,info",
    [
        ("token-mean", dict(dp_size=4, batch_num_tokens=97)),
        ("token-sum", dict(dp_size=2)),
        ("seq-mean-token-mean", dict(dp_size=2, global_batch_size=20)),
        ("seq-mean-token-sum", dict(dp_size=2, global_batch_size=20)),
        ("seq-mean-token-sum-norm", dict(dp_size=2, global_batch_size=20, loss_scale_factor=64)),
        # verl's ppo_loss always fills every key, None where unknown
        ("token-mean", dict(dp_size=1, batch_num_tokens=None, global_batch_size=None, loss_scale_factor=None)),
    ],
)
def test_global_batch_info(agg, info):
    check_same("vanilla", batch(seed=5), actor_config("vanilla", agg, info))


def test_clip_region_diagnostics():
    b = batch(seed=7, spread=0.6)
    _, _, m = run("grpokit.verl.vanilla", b, actor_config("vanilla"))
    ratio = torch.exp(b["lp"] - b["old"])[b["mask"]]
    adv = b["A"][b["mask"]]
    region = ((adv > 0) & (ratio > 1.28)) | ((adv < 0) & (ratio < 0.8))
    assert m["grpokit/clip_region/fraction"] == pytest.approx(region.double().mean().item())
    excess = torch.where(adv > 0, ratio - 1.28, 0.8 - ratio)[region]
    assert m["grpokit/clip_region/mean_excess"] == pytest.approx(excess.mean().item())
    assert m["grpokit/clip_region/max_excess"] == pytest.approx(excess.max().item())
    assert "grpokit/clip_ratio/region_mean" in m


def test_non_verl_presets_keep_their_own_rule():
    # grpokit.paper.dapo: the preset's clip (0.2 / 0.28) and token-mean, whatever verl's clip says
    b = batch(seed=8)
    cfg = actor_config("grpokit.paper.dapo", "seq-mean-token-mean", clip_ratio_high=0.5)
    loss, grad, _ = run("grpokit.paper.dapo", b, cfg, weights=False)
    ref = grpokit.policy_loss(b["lp"].numpy(), b["old"].numpy(), b["A"].numpy(), b["mask"].numpy(), spec="paper.dapo")
    np.testing.assert_allclose(loss, float(ref.loss), rtol=1e-12)
    np.testing.assert_allclose(grad.numpy(), ref.grad_logp, rtol=1e-12, atol=1e-15)


def test_every_registered_preset_runs_on_verls_call():
    b = batch(seed=9)
    names = [n for n in core_algos.POLICY_LOSS_REGISTRY if n.startswith(gv.PREFIX)]
    assert f"{gv.PREFIX}verl.vanilla" in names and f"{gv.PREFIX}trl.dapo" in names
    for name in names:
        # verl weights the DRO penalty too (the integration refuses rollout weights there) and KL-Cov's
        dro = grpokit.presets().get(name[len(gv.PREFIX) :], {}).get("defaults", {}).get("dro_beta", 0.0) != 0.0
        loss, grad, _ = run(name, b, actor_config(name), weights=not (dro or name.endswith(".kl_cov")))
        assert np.isfinite(loss) and torch.isfinite(grad).all(), name
        assert (grad[~b["mask"]] == 0).all(), name


def test_register_with_overrides_and_bad_input():
    gv.register_policy_loss("test.dapo_delta", "paper.dapo", delta=4.0)
    b = batch(seed=10, spread=1.0)
    loss, grad, _ = run("test.dapo_delta", b, actor_config("x"), weights=False)
    ref = grpokit.policy_loss(
        b["lp"].numpy(), b["old"].numpy(), b["A"].numpy(), b["mask"].numpy(), spec="paper.dapo", delta=4.0
    )
    np.testing.assert_allclose(grad.numpy(), ref.grad_logp, rtol=1e-12, atol=1e-15)
    with pytest.raises(TypeError, match="unknown loss option 'nonsense'"):
        gv.register_policy_loss("test.bad", "paper.dapo", nonsense=1)
    with pytest.raises(ValueError, match="unknown loss preset"):
        gv.register_policy_loss("test.bad", "no.such")
    with pytest.raises(ValueError, match="name:"):
        gv.register_policy_loss("", "paper.dapo")
    with pytest.raises(ValueError, match="policy_loss.dro_beta"):
        cfg = FSDPActorConfig(rollout_n=4, ppo_micro_batch_size_per_gpu=2, policy_loss=PolicyLossConfig())
        run("grpokit.verl.dro", b, cfg)
    with pytest.raises(ValueError, match="rollout_is_weights: grpokit.verl.dro"):
        run("grpokit.verl.dro", b, actor_config("dro"))
    with pytest.raises(ValueError, match="rollout_is_weights: grpokit.verl.kl_cov"):
        run("grpokit.verl.kl_cov", b, actor_config("kl_cov"))
    cfg = FSDPActorConfig(
        rollout_n=4, ppo_micro_batch_size_per_gpu=2, policy_loss=PolicyLossConfig(loss_mode="kl_cov", kl_cov_ratio=0.0)
    )
    with pytest.raises(
        ValueError, match="policy_loss.kl_cov_ratio: grpokit.verl.kl_cov needs kl_cov_ratio > 0, got 0.0"
    ):
        run("grpokit.verl.kl_cov", b, cfg, weights=False)
    with pytest.raises(ValueError, match="config:"):
        core_algos.get_policy_loss_fn("grpokit.verl.vanilla")(
            b["old"], b["lp"], b["A"], b["mask"], "token-mean", None, None
        )


def test_inputs_are_not_written():
    b = batch(seed=11)
    before = {k: v.clone() for k, v in b.items()}
    run("grpokit.verl.vanilla", b, actor_config("vanilla"))
    for k in b:
        assert torch.equal(b[k], before[k]), k


ESTIMATORS = [
    ("grpo", True),
    ("grpo", False),
    ("rloo", True),
    ("opo", True),
    ("gpg", True),
    ("grpo_passk", True),
    ("reinforce_plus_plus_baseline", True),
]


@pytest.mark.parametrize("name,norm", ESTIMATORS)
def test_registered_estimators_equal_verls(name, norm):
    g = np.random.default_rng(len(name))
    B, T = 12, 6
    lengths = g.integers(1, T + 1, size=B)
    mask = torch.as_tensor(np.arange(T)[None, :] < lengths[:, None])
    scores = torch.as_tensor(np.round(g.normal(size=B), 2))
    rewards = torch.zeros(B, T, dtype=torch.float64)
    rewards[torch.arange(B), torch.as_tensor(lengths - 1)] = scores
    if name == "grpo_passk":
        rewards = (rewards > 0).double()  # pass@k: binary outcomes
    index = np.array([f"uid-{i}" for i in g.permutation(np.repeat(np.arange(3), 4))], dtype=object)
    cfg = {"norm_adv_by_std_in_grpo": norm}
    kw = dict(token_level_rewards=rewards, response_mask=mask.double(), index=index, config=cfg)
    # verl's trainer passes its own grpo the switch as an argument, a registered estimator algorithm's config
    want, want_ret = core_algos.get_adv_estimator_fn(name)(
        **kw, **({"norm_adv_by_std_in_grpo": norm} if name == "grpo" else {})
    )
    got, got_ret = core_algos.get_adv_estimator_fn(f"grpokit.verl.{name}")(**kw)
    torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(got_ret, want_ret, rtol=1e-10, atol=1e-12)


def test_estimator_bad_input():
    with pytest.raises(ValueError, match="estimator:"):
        gv.register_adv_est("test.x", "verl.gae")
    fn = core_algos.get_adv_estimator_fn("grpokit.verl.grpo")
    with pytest.raises(ValueError, match="index:"):
        fn(token_level_rewards=torch.zeros(2, 3), response_mask=torch.ones(2, 3))


def _registered_in_fresh_process(env):
    import os
    import subprocess
    import sys

    code = (
        "import verl\nfrom verl.trainer.ppo import core_algos\n"
        "print('grpokit.verl.vanilla' in core_algos.POLICY_LOSS_REGISTRY)"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], env={**os.environ, **env}, capture_output=True, text=True, check=True
    )
    return out.stdout.strip() == "True"


def test_verl_loads_grpokit_by_itself():
    from importlib.metadata import entry_points

    if not any(ep.value == "grpokit.integrations.verl" for ep in entry_points(group="verl.plugins")):
        pytest.skip("grpokit's verl.plugins entry point is not installed (pip install -e .)")
    assert _registered_in_fresh_process({"VERL_USE_EXTERNAL_PLUGINS": "auto"})
    # verl's explicit route for external modules
    assert _registered_in_fresh_process(
        {"VERL_USE_EXTERNAL_PLUGINS": "none", "VERL_USE_EXTERNAL_MODULES": "grpokit.integrations.verl"}
    )
