"""The drop-in promise (issue 19 §3): TRL's own ``GRPOTrainer`` and grpokit's, given the same ``GRPOConfig``
and seed, train the tiny random model of ``trl_tiny`` to the same parameters — every TRL ``loss_type``,
with ``num_iterations`` > 1, gradient accumulation and ``steps_per_generation`` ≠ K, over three optimizer
steps — and the known trap in TRL's defaults (CISPO without ``epsilon_high``) is reproduced and warned."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trl = pytest.importorskip("trl")
gtrl = pytest.importorskip("grpokit.integrations.trl")

import trl_tiny as tt  # noqa: E402

# three optimizer steps; each generation batch serves two steps, and is reused (num_iterations = 2)
BASE = dict(num_iterations=2, gradient_accumulation_steps=2, steps_per_generation=4, max_steps=3)
CASES = [(lt, {}) for lt in gtrl.TRL_LOSS_TYPES] + [
    ("grpo", {"beta": 0.04, "delta": 1.5}),
    ("dapo", {"beta": 0.04, "use_bias_correction_kl": True, "epsilon_high": 0.28}),
    ("grpo", {"importance_sampling_level": "sequence"}),
    ("dapo", {"top_entropy_quantile": 0.5, "entropy_coef": 0.01}),
    ("bnpo", {"off_policy_mask_threshold": 0.5, "scale_rewards": "none"}),
    ("cispo", {"epsilon_high": 5.0}),
    ("dapo", {"mask_truncated_completions": True}),  # some micro-batches have no valid token
    ("dapo", {"steps_per_generation": 2, "gradient_accumulation_steps": 4}),  # one step, two generations
    ("luspo", {"num_iterations": 1, "steps_per_generation": 2}),  # on-policy: TRL's old_logp = None path
]
# Adam divides each gradient coordinate by its own running RMS, so float32 round-off in a coordinate whose
# gradient is near 0 shows in the parameters at ~1e-6 (differently ordered sums); a real departure (the
# CISPO cap) moves them by ~1e-2, the size of the whole update.
ATOL = 5e-5


def _train(cls, tmp_path, model, loss_type, over):
    args = tt.config(tmp_path / cls.__module__, loss_type=loss_type, **{**BASE, **over})
    trainer = cls(
        model=model,
        reward_funcs=tt.reward_count_a,
        args=args,
        train_dataset=tt.dataset(),
        processing_class=tt.tokenizer(),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        trainer.train()
    losses = [h["loss"] for h in trainer.state.log_history if "loss" in h]
    return [p.detach().clone() for p in trainer.model.parameters()], losses


@pytest.mark.parametrize("loss_type,over", CASES, ids=lambda x: repr(x))
def test_dropin_reproduces_stock_trainer(tmp_path, loss_type, over):
    path = None
    if over.get("beta", 0.0) != 0.0:  # TRL builds the reference model from the policy's name_or_path
        path = str(tmp_path / "model")
        tt.model().save_pretrained(path)
    want, want_losses = _train(trl.GRPOTrainer, tmp_path, path or tt.model(), loss_type, over)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        got, got_losses = _train(gtrl.GRPOTrainer, tmp_path, path or tt.model(), loss_type, over)
    start = list(tt.model().parameters())
    moved = max(float((w - s.detach()).abs().max()) for w, s in zip(want, start))
    assert moved > 100 * ATOL  # the run trained
    for i, (g, w) in enumerate(zip(got, want)):
        np.testing.assert_allclose(g.numpy(), w.numpy(), rtol=0, atol=ATOL, err_msg=f"parameter {i}")
    assert len(got_losses) == len(want_losses) == 3
    np.testing.assert_allclose(got_losses, want_losses, rtol=1e-3, atol=1e-4)


def test_cispo_default_is_reproduced_and_warned_once(tmp_path):
    def make(**over):
        with warnings.catch_warnings(record=True) as seen:
            warnings.simplefilter("always")
            t = gtrl.GRPOTrainer(
                model=tt.model(),
                reward_funcs=tt.reward_count_a,
                args=tt.config(tmp_path, loss_type="cispo", **over),
                train_dataset=tt.dataset(),
                processing_class=tt.tokenizer(),
            )
        return t, [str(w.message) for w in seen if "epsilon_high unset" in str(w.message)]

    t, said = make()
    assert t.loss_spec.epsilon_high == pytest.approx(0.2)  # TRL's: epsilon_high = epsilon
    assert len(said) == 1 and "epsilon_high=5.0" in said[0]
    t, said = make(epsilon_high=5.0)
    assert t.loss_spec.epsilon_high == 5.0 and said == []
    assert gtrl.config_traps(t.args, "paper.cispo") == []  # a non-TRL preset keeps its own cap
