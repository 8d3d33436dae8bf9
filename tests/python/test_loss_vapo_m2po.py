"""VAPO's positive-example NLL (NeMo-RL) and M2PO's second-moment mask (AReaL), issue 22.

Each is checked against a float64 torch reference written from the framework's own source (the loss as
the framework writes it, gradient by autograd); neither framework imports here. Sources, by commit:

- NeMo-RL: NVIDIA-NeMo/RL 7ea279abfbeb698b092856d0dab61e7cf39bc909, nemo_rl/algorithms/loss/loss_functions.py
  (``ClippedPGLossFn``: the clipped PG with dual clip, ``positive_example_nll_weight``) and
  examples/configs/ppo_math_1B.yaml (the DAPO/VAPO settings: clip 0.2/0.28, c = 10, token-level loss).
- AReaL: inclusionAI/AReaL 4aef98d8d818af55b43621aaadba047ae10f4e77, areal/trainer/ppo/actor.py
  (``grpo_loss_fn``, ``_apply_m2po_masking``, ``_get_m2po_loss_mask``), areal/utils/functional/functional.py
  (``ppo_actor_loss_fn``) and examples/math/gsm8k_m2po.yaml (eps_clip 0.0, decoupled loss, rejection ≤ 5,
  m2_threshold 0.04).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import grpokit
from grpokit._compare import FACTORS
from grpokit._presets import resolve
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


# ---- AReaL: M2PO ------------------------------------------------------------------------------------


def _areal_m2po_keep(behave, prox, m, threshold):
    """_apply_m2po_masking: drop the largest (behave − prox)², largest first, until the suffix mean is under
    the threshold (all but one if it never is). A stable sort fixes the order of ties."""
    m2 = (behave - prox) ** 2
    x, order = torch.sort(m2[m], descending=True, stable=True)
    n = x.numel()
    suffix_mean = x.flip(0).cumsum(0).flip(0) / torch.arange(n, 0, -1, dtype=x.dtype)
    below = torch.where(suffix_mean < threshold)[0]
    k = int(below[0]) if len(below) else n - 1
    keep_sorted = torch.ones(n, dtype=torch.bool)
    keep_sorted[:k] = False
    keep = torch.zeros_like(m)
    keep[m] = keep_sorted[torch.argsort(order)]
    return keep


def _areal_m2po(b, behave, threshold=0.04, eps=0.0, cap=5.0):
    """grpo_loss_fn with m2_threshold, use_decoupled_loss and ratio rejection (mask above cap)."""

    def ref(lp, m):
        prox = _t(b["old"], b["mask"])
        keep = _areal_m2po_keep(behave, prox, m, threshold)
        A = torch.tensor(b["A"])[:, None].expand_as(lp)
        ratio = torch.where(keep, torch.exp(lp - prox), 0)
        pg = torch.max(-A * ratio, -A * torch.clamp(ratio, 1 - eps, 1 + eps))
        w = torch.exp(prox - behave)
        pg = pg * torch.where(w <= cap, w, 0.0)
        return torch.where(keep, pg, 0).sum() / keep.sum()

    return ref


def _behaviour(b, seed=1, spread=0.4):
    return b["old"] + np.random.default_rng(seed).normal(0, spread, b["old"].shape)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_areal_m2po_equals_areal(seed):
    b = _batch(seed, spread=0.3)
    behave = _behaviour(b, seed)
    ref = _areal_m2po(b, _t(behave, b["mask"]))
    keep = _areal_m2po_keep(_t(behave, b["mask"]), _t(b["old"], b["mask"]), torch.tensor(b["mask"]), 0.04)
    assert 0 < int(keep.sum()) < int(b["mask"].sum())  # M2PO drops some tokens here, not all
    _check_against(b, "areal.m2po", ref, sampling_logp=behave)
    _check_against(b, "areal.m2po", _areal_m2po(b, _t(behave, b["mask"]), 0.2), sampling_logp=behave, m2_threshold=0.2)


def test_m2po_paper_form_uses_the_current_policy():
    """Without sampling_logp the moment is of log π/π_old: the current policy is the proximal one."""
    b = _batch(3, spread=0.4)

    def ref(lp, m):
        keep = _areal_m2po_keep(_t(b["old"], b["mask"]), lp.detach(), m, 0.04)
        A = torch.tensor(b["A"])[:, None].expand_as(lp)
        r = torch.where(keep, torch.exp(lp - _t(b["old"], b["mask"])), 0)
        return torch.where(keep, -A * r, 0).sum() / keep.sum()

    _check_against(b, "areal.m2po_paper", ref)


def test_m2po_drops_as_few_tokens_as_the_threshold_allows():
    b = _batch(4, B=16, T=12, spread=0.5)
    lp, old, m = b["lp"], b["old"], b["mask"]
    for thr in (1e-3, 0.04, 0.3, 5.0):
        full = grpokit.policy_loss(lp, old, b["A"], m, spec="trl.dapo", return_per_token=True)
        res = grpokit.policy_loss(lp, old, b["A"], m, spec="trl.dapo", m2_threshold=thr, return_per_token=True)
        m2 = np.where(m, lp - old, 0.0) ** 2
        kept = m & ((res.per_token != 0) | (full.per_token == 0))
        dropped = m & ~kept
        assert kept.any()
        if dropped.any():  # the rest passes, and keeping the smallest dropped token would not
            assert m2[kept].mean() < thr
            assert m2[dropped].min() >= m2[kept].max()
            assert np.append(m2[kept], m2[dropped].min()).mean() >= thr
        else:
            assert m2[m].mean() < thr


def test_m2po_packed_equals_padded_and_float32_agrees():
    b = _batch(5)
    behave = _behaviour(b)
    m = b["mask"]
    cu = np.concatenate([[0], np.cumsum(m.sum(1))]).astype(np.int64)
    pad = grpokit.policy_loss(b["lp"], b["old"], b["A"], m, spec="areal.m2po", sampling_logp=behave)
    packed = grpokit.policy_loss(
        b["lp"][m], b["old"][m], b["A"], None, spec="areal.m2po", sampling_logp=behave[m], cu_seqlens=cu
    )
    assert float(packed.loss) == pytest.approx(float(pad.loss), rel=1e-12)
    np.testing.assert_allclose(packed.grad_logp, pad.grad_logp[m], rtol=1e-12, atol=1e-15)
    f32 = grpokit.policy_loss(
        *(b[k].astype(np.float32) for k in ("lp", "old", "A")),
        m,
        spec="areal.m2po",
        sampling_logp=behave.astype(np.float32),
    )
    assert float(f32.loss) == pytest.approx(float(pad.loss), rel=1e-4, abs=1e-6)


@pytest.mark.parametrize("name", ["trl.dapo", "trl.grpo", "verl.cispo", "paper.gspo", "areal.m2po"])
def test_m2po_on_other_rows_matches_the_generic_reference(name):
    b = make_batch(seed=23, B=6, T=8, spread=0.5, empty_row=True)
    extra = {"sampling_logp": b["smp"]} if resolve(name, {}).sampler_is != "none" else {}
    check(name, b, overrides=dict(m2_threshold=0.05), extra=extra)


def test_m2po_bad_input_and_listed():
    b = _batch(6)
    with pytest.raises(ValueError, match=r"m2_threshold: expected a value >= 0 \(or None\), got -0.5"):
        grpokit.policy_loss(b["lp"], b["old"], b["A"], b["mask"], spec="areal.m2po", m2_threshold=-0.5)
    doc = open(__file__.rsplit("/tests/", 1)[0] + "/docs/losses.md", encoding="utf-8").read()
    for name in ("areal.m2po", "areal.m2po_paper"):
        assert name in grpokit.presets() and f"`{name}`" in doc
    assert "m2_threshold" in FACTORS["IS weights"]
    batch = dict(logp=b["lp"], old_logp=b["old"], advantages=b["A"], mask=b["mask"])
    e = grpokit.explain(batch, "trl.dapo", "trl.dapo:m2_threshold=0.01")
    by = {f.name: f for f in e.factors}
    assert [n for n, f in by.items() if f.differs] == ["IS weights"]
    assert by["IS weights"].delta_loss == pytest.approx(e.loss_b - e.loss_a, rel=1e-9, abs=1e-12)
    assert by["IS weights"].delta_loss != 0.0
