"""TRL's adaptive entropy controller (GRPOConfig ``use_adaptive_entropy``, Skywork-OR1) through
grpokit's GRPOTrainer: the same coefficient at every optimizer step and the same parameters after three
steps as TRL 1.16.0's own trainer (``GRPOTrainer._compute_loss``, the "Adaptive update" block), with the
controller raising the coefficient (entropy below the target), lowering it, and on the high-entropy
tokens only (``top_entropy_quantile``)."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
gtrl = pytest.importorskip("grpokit.integrations.trl")

import trl_tiny as tt  # noqa: E402

# three optimizer steps, two micro-batches each (the controller sums its window), generations reused
BASE = dict(
    num_iterations=2,
    gradient_accumulation_steps=2,
    steps_per_generation=4,
    max_steps=3,
    use_adaptive_entropy=True,
    entropy_coef_delta=0.05,
)
ATOL = 5e-5  # float32 sums in another order, enlarged by Adam near zero gradients (test_trl_dropin)


def _run(cls, tmp_path, over):
    data = dict(train_dataset=tt.dataset(), processing_class=tt.tokenizer(), reward_funcs=tt.reward_count_a)
    trainer = cls(model=tt.model(), args=tt.config(tmp_path / cls.__module__, loss_type="dapo", **BASE, **over), **data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    coefs = [h["entropy_coef"] for h in trainer.state.log_history if "entropy_coef" in h]
    params = [p.detach().clone() for p in trainer.model.parameters()]
    return trainer, coefs, params


@pytest.mark.parametrize(
    "over,direction",
    [  # the tiny model's entropy is ≈ 2.3 nats: below a target of 10 (raise, on), above 0.5 (lower, off)
        ({"entropy_coef": 0.1, "entropy_target": 10.0, "top_entropy_quantile": 0.5}, +1),
        ({"entropy_coef": 0.3, "entropy_target": 0.5, "entropy_coef_min": 0.22}, -1),  # down to the floor
    ],
    ids=["raise_top_entropy_quantile", "lower"],
)
def test_controller_equals_trl(tmp_path, over, direction):
    """Equal parameters also prove the bonus is applied (raise) and gated off (lower) as TRL does."""
    want_t, want_coefs, want = _run(trl.GRPOTrainer, tmp_path, over)
    got_t, got_coefs, got = _run(gtrl.GRPOTrainer, tmp_path, over)
    assert len(want_coefs) == len(got_coefs) == 3
    np.testing.assert_allclose(got_coefs, want_coefs, rtol=0, atol=1e-12)
    steps = np.diff([over["entropy_coef"], *want_coefs])
    assert np.all(np.sign(steps) == direction) or (direction < 0 and want_coefs[-1] == over["entropy_coef_min"])
    assert got_t.entropy_coef == want_t.entropy_coef
    assert got_t._last_world_entropy == pytest.approx(want_t._last_world_entropy, rel=1e-5)
    moved = max(float((w - s.detach()).abs().max()) for w, s in zip(want, tt.model().parameters()))
    assert moved > 100 * ATOL  # the run trained
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=ATOL, err_msg=f"parameter {i}")
