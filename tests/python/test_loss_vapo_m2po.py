"""VAPO's positive-example NLL (NeMo-RL) and M2PO's second-moment mask (AReaL), issue 22.

Each is checked against a float64 torch reference written from the framework's own source (the loss as
the framework writes it, gradient by autograd); neither framework imports here. Sources, by commit:

- NeMo-RL: NVIDIA-NeMo/RL 7ea279abfbeb698b092856d0dab61e7cf39bc909, nemo_rl/algorithms/loss/loss_functions.py
  (``ClippedPGLossFn``: the clipped PG with dual clip, ``positive_example_nll_weight``) and
  examples/configs/ppo_math_1B.yaml (the DAPO/VAPO settings: clip 0.2/0.28, c = 10, token-level loss).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import grpokit
from grpokit._compare import FACTORS
from test_loss import check, make_batch


def _t(x, m):
    return torch.tensor(np.where(m, x, 0.0), dtype=torch.float64)


def _batch(seed, B=8, T=9, spread=0.3):
    b = make_batch(seed=seed, B=B, T=T, spread=spread)
    rewards = np.random.default_rng(seed + 100).integers(0, 2, size=B).astype(np.float64)
    rewards[:2] = [1.0, 0.0]  # a positive and a negative sample at least
    b.update(rewards=rewards, positive=np.broadcast_to((rewards > 0)[:, None], b["lp"].shape))
    return b


# ---- NeMo-RL: VAPO's positive-example NLL -----------------------------------------------------------


def _nemo_clipped_pg(b, nll_weight=0.1, el=0.2, eh=0.28, c=10.0):
    """ClippedPGLossFn (token_level_loss, no KL, no IS correction) with positive_example_nll_weight."""

    def ref(lp, m):
        prev = _t(b["old"], b["mask"])
        A = torch.tensor(b["A"])[:, None].expand_as(lp)
        mask = m.double()
        ratios = (lp - prev).exp()
        loss1 = -A * ratios
        loss2 = -A * ratios.clamp(1.0 - el, 1.0 + eh)
        clip_loss = torch.max(loss1, loss2)
        clip_loss = torch.where(A < 0, torch.min(clip_loss, -A * c), clip_loss)
        actor_loss = (clip_loss * mask).sum() / mask.sum()
        correct_mask = mask * torch.tensor(b["rewards"] > 0).double()[:, None]
        nll = torch.tensor(0.0, dtype=torch.float64)
        if correct_mask.sum() > 0:
            nll = (-lp * correct_mask).sum() / correct_mask.sum()
        return actor_loss + nll_weight * nll

    return ref


def _vapo(b, **kw):
    return grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec="nemo.vapo", selection=b["positive"], **kw)


def _check_against(b, name, ref_fn, **kw):
    m = torch.tensor(b["mask"])
    lp = _t(b["lp"], b["mask"]).requires_grad_(True)
    want = ref_fn(lp, m)
    want.backward()
    res = grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec=name, **kw)
    np.testing.assert_allclose(float(res.loss), float(want.detach()), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(res.grad_logp, lp.grad.numpy(), rtol=1e-9, atol=1e-13)
    return res


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_nemo_vapo_equals_nemo_rl(seed):
    b = _batch(seed, spread=0.4)
    _check_against(b, "nemo.vapo", _nemo_clipped_pg(b), selection=b["positive"])
    # μ by NeMo-RL's name; 0 switches the term off
    _check_against(b, "nemo.vapo", _nemo_clipped_pg(b, 0.5), selection=b["positive"], positive_example_nll_weight=0.5)
    _check_against(b, "nemo.vapo", _nemo_clipped_pg(b, 0.0), selection=b["positive"], positive_example_nll_weight=0)


def test_vapo_without_positive_tokens_has_no_nll_term():
    b = _batch(3)
    b["rewards"][:] = 0.0
    none = np.zeros(b["lp"].shape, dtype=bool)
    _check_against(b, "nemo.vapo", _nemo_clipped_pg(b), selection=none)


def test_vapo_nll_is_outside_phi_and_the_weights():
    """The NLL is not an advantage-weighted term: per_token and ω are the clipped PG's alone."""
    b = _batch(4)
    on, off = (
        _vapo(b, positive_example_nll_weight=mu, return_per_token=True, return_weights=True) for mu in (0.1, 0.0)
    )
    np.testing.assert_array_equal(on.per_token, off.per_token)
    np.testing.assert_array_equal(on.weights, off.weights)
    pos = b["positive"] & b["mask"]
    np.testing.assert_allclose((on.grad_logp - off.grad_logp)[pos], -0.1 / pos.sum(), rtol=1e-12)
    assert np.all((on.grad_logp - off.grad_logp)[~pos] == 0)


@pytest.mark.parametrize("agg", ["token_mean", "seq_mean_token_mean", "token_sum"])
def test_positive_nll_on_other_rows_matches_the_generic_reference(agg):
    b = make_batch(seed=21, B=6, T=8, empty_row=True)
    check("nemo.vapo", b, overrides=dict(aggregation=agg, dp_size=2.0))
    check("trl.dapo", b, overrides=dict(selection="positive_nll", positive_example_nll_weight=0.3))


def test_vapo_float32_agrees():
    b = _batch(9)
    f32 = {k: (v.astype(np.float32) if k in ("lp", "old", "A") else v) for k, v in b.items()}
    r64, r32 = (_vapo(x) for x in (b, f32))
    np.testing.assert_allclose(float(r32.loss), float(r64.loss), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(r32.grad_logp, r64.grad_logp, rtol=1e-4, atol=1e-6)


def test_vapo_bad_input():
    b = _batch(5)
    with pytest.raises(ValueError, match="positive_example_nll_weight: expected a finite value >= 0, got -0.1"):
        _vapo(b, positive_example_nll_weight=-0.1)
    with pytest.raises(ValueError, match="selection: required by the clip_cov / kl_cov rules and by positive_nll"):
        grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec="nemo.vapo")


def test_vapo_listed_documented_compared_and_explained():
    table = grpokit.presets()
    doc = open(__file__.rsplit("/tests/", 1)[0] + "/docs/losses.md", encoding="utf-8").read()
    assert "nemo.vapo" in table and "`nemo.vapo`" in doc and 'selection="positive_nll"' in doc
    assert "positive_example_nll_weight" in FACTORS["other terms"]
    b = _batch(6)
    batch = dict(logp=b["lp"], old_logp=b["old"], rewards=b["rewards"], group_size=4, mask=b["mask"])
    # without a selection in the batch, compare selects NeMo-RL's positive samples: rewards > 0
    c = grpokit.compare(batch, ["nemo.vapo", "nemo.vapo:positive_example_nll_weight=0"])
    pos = b["positive"] & b["mask"]
    nll = 0.1 * -np.where(pos, b["lp"], 0.0).sum() / pos.sum()  # independent of the advantages
    assert c.rows[0]["loss"] - c.rows[1]["loss"] == pytest.approx(nll, rel=1e-9)
    e = grpokit.explain(batch, "nemo.vapo:positive_example_nll_weight=0", "nemo.vapo")
    by = {f.name: f for f in e.factors}
    assert [n for n, f in by.items() if f.differs] == ["other terms"]
    assert by["other terms"].delta_loss == pytest.approx(e.loss_b - e.loss_a, rel=1e-9, abs=1e-12)
    assert by["other terms"].delta_loss == pytest.approx(nll, rel=1e-9)
