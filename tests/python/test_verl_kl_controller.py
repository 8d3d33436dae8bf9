"""verl's KL controller through grpokit.integrations.verl (issue 22): ``kl_controller(algorithm.kl_ctrl)``
equals verl 0.9.1's own ``core_algos.get_kl_controller`` step by step, and drives grpokit's KL in the loss.
Skipped without verl."""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("verl.trainer.ppo.core_algos", exc_type=ImportError)

from verl.trainer.config.algorithm import KLControlConfig  # noqa: E402
from verl.trainer.ppo import core_algos  # noqa: E402

import grpokit.integrations.verl as gv  # noqa: E402
import grpokit.torch as gkt  # noqa: E402


def _kl_trace(seed=0, steps=40):
    g = np.random.default_rng(seed)  # KLs far below, near and far above the target; varied batch sizes
    return [(float(k), int(n)) for k, n in zip(g.uniform(0.0, 0.4, steps), g.integers(1, 512, steps))]


@pytest.mark.parametrize(
    "cfg",
    [
        KLControlConfig(type="adaptive", kl_coef=0.05, target_kl=0.1, horizon=1000),
        KLControlConfig(type="adaptive", kl_coef=0.001, target_kl=0.02, horizon=10000),
        KLControlConfig(type="fixed", kl_coef=0.2),
        {"type": "adaptive", "kl_coef": 0.1, "target_kl": 0.05, "horizon": 300},
    ],
)
def test_equals_verl_controller_step_by_step(cfg):
    ours = gv.kl_controller(cfg)
    theirs = core_algos.get_kl_controller(cfg if isinstance(cfg, KLControlConfig) else KLControlConfig(**cfg))
    assert ours.value == theirs.value
    for kl, n in _kl_trace():
        ours.update(current_kl=kl, n_steps=n)
        theirs.update(current_kl=kl, n_steps=n)
        assert ours.value == theirs.value  # bit for bit: the same operations in the same order


def test_adaptive_moves_toward_the_target_and_caps_the_step():
    c = gv.KLController(0.1, type="adaptive", target_kl=0.1, horizon=100)
    c.update(current_kl=10.0, n_steps=10)  # far above: the error is capped at +20%
    assert c.value == pytest.approx(0.1 * (1 + 0.2 * 10 / 100))
    c.update(current_kl=0.0, n_steps=10)  # far below: capped at −20%
    assert c.value == pytest.approx(0.1 * (1 + 0.02) * (1 - 0.02))


def test_drives_grpokit_kl_in_the_loss_like_verl():
    # grpokit's KL in the loss with verl's adaptive coefficient: beta from the controller, the loss's own
    # "kl" metric fed back; the coefficient sequence is verl's controller fed the same KLs
    g = torch.Generator().manual_seed(0)
    B, T = 4, 6
    mask = torch.ones(B, T, dtype=torch.bool)
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    ref = torch.log(torch.rand(B, T, generator=g, dtype=torch.float64) * 0.9 + 0.05)
    cfg = KLControlConfig(type="adaptive", kl_coef=0.04, target_kl=0.01, horizon=50)
    ours, theirs = gv.kl_controller(cfg), core_algos.get_kl_controller(cfg)
    for step in range(3):
        lp = (ref + 0.1 * (step + 1) * torch.randn(B, T, generator=g, dtype=torch.float64)).requires_grad_()
        out = gkt.policy_loss(lp, lp.detach(), adv, mask, spec="trl.grpo", ref_logp=ref, beta=ours.value)
        base = gkt.policy_loss(lp, lp.detach(), adv, mask, spec="trl.grpo", ref_logp=ref, beta=0.0)
        kl = float(out.metrics["kl"])
        assert kl > 0 and float((out.loss - base.loss).detach()) == pytest.approx(theirs.value * kl, rel=1e-12)
        ours.update(kl, n_steps=B)
        theirs.update(current_kl=kl, n_steps=B)
        assert ours.value == theirs.value


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"type": "pid"}, "kl_ctrl.type: expected 'fixed' or 'adaptive', got 'pid'"),
        ({"type": "adaptive", "horizon": 0}, "kl_ctrl.horizon: expected a value > 0"),
        ({"type": "adaptive", "target_kl": 0.0}, "kl_ctrl.target_kl: expected a finite value > 0"),
        ({"kl_coef": -1.0}, "kl_ctrl.kl_coef: expected a finite value >= 0"),
    ],
)
def test_bad_config_names_the_field(kwargs, match):
    cfg = {"kl_coef": 0.1, **kwargs}
    with pytest.raises(ValueError, match=match):
        gv.kl_controller(cfg)


def test_bad_kl_is_refused():
    c = gv.KLController(0.1, type="adaptive")
    with pytest.raises(ValueError, match="current_kl: expected a finite KL"):
        c.update(float("nan"), n_steps=4)
    assert c.value == 0.1
