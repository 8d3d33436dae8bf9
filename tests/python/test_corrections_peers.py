"""Train–inference corrections of ROLL, OpenRLHF and NeMo-RL: fp64 references written from each
framework's own source (none of them imports here), properties and bad inputs.

Sources read (docs/estimators.md names the semantics):
- ROLL, github.com/alibaba/ROLL @ 8eb27cc2dc34c4d1310b169d9b86d339004d811a:
  roll/utils/train_infer_corrections.py (_compute_all_granularity, compute_train_infer_correction),
  roll/pipeline/agentic/utils.py (compute_segment_masked_mean), roll/utils/functionals.py
  (masked_mean, masked_sum: Σ / (n + 1e-8), 0 for an empty row; n sums the .long() mask, so n + 1e-8
  is float32 and equals n), roll/configs/base_config.py
  (TrainInferISWeightConfig: upper_bound 1.2; TrainInferFilterConfig: ratio [0.8, 1.2], diff [-0.2, 0.2]).
- OpenRLHF, github.com/OpenRLHF/OpenRLHF @ 3c3be6234e0cb353e76bb8019947db9dfe99fca7:
  openrlhf/models/loss.py (PolicyLoss.forward, vllm_is_correction_type), openrlhf/models/utils.py
  (masked_mean: Σ / n), openrlhf/cli/train_ppo_ray.py (is_correction_threshold default [0.5, 5.0]).
- NeMo-RL, github.com/NVIDIA-NeMo/RL @ 7ea279abfbeb698b092856d0dab61e7cf39bc909:
  nemo_rl/algorithms/loss/loss_functions.py (ClippedPGLossFn, truncated_importance_sampling_type),
  nemo_rl/algorithms/utils.py (masked_mean: Σ / (n + 1e-8)).
"""

import numpy as np
import pytest

import grpokit as gk

torch = pytest.importorskip("torch")


def turns(B=6, T=12, scale=0.2, seed=0):
    """A multi-turn batch: each row's selected tokens form one to three runs (turns) separated by
    masked tool output; row 1 is empty. Padding holds what the peers' pipelines hold (0)."""
    g = np.random.default_rng(seed)
    m = np.zeros((B, T), dtype=bool)
    for i in range(B):
        if i == 1:
            continue
        t = 0
        for _ in range(g.integers(1, 4)):
            t += int(g.integers(0, 3))
            n = int(g.integers(1, 4))
            m[i, t : t + n] = True
            t += n
    trn = np.log(g.uniform(0.05, 1.0, size=(B, T)))
    smp = trn + g.normal(scale=scale, size=(B, T))
    return np.where(m, trn, 0.0), np.where(m, smp, 0.0), m


# ---- ROLL (float64 torch, following roll/utils/train_infer_corrections.py) ----------------------


def roll_masked_mean(x, m, dim):
    n = m.sum(dim)
    return torch.where(n > 0, (x * m).sum(dim) / (n + 1e-8), torch.zeros_like(n, dtype=x.dtype))


def roll_segment_mean(x, m):
    """compute_segment_masked_mean: each maximal run of 1s in a row gets Σ / (n + 1e-8)."""
    out = torch.zeros_like(x)
    for b in range(m.shape[0]):
        t, T = 0, m.shape[1]
        while t < T:
            if not m[b, t]:
                t += 1
                continue
            e = t
            while e < T and m[b, e]:
                e += 1
            out[b, t:e] = x[b, t:e].sum() / (m[b, t:e].sum() + 1e-8)  # a long sum: the 1e-8 rounds away
            t = e
    return out


def roll_granularities(old, infer, mask):
    """{"ratio": {...}, "diff": {...}} of _compute_all_granularity, each (B, T)."""
    m = mask.long()
    lr = old - infer
    diff = old.exp() - infer.exp()
    geo = roll_masked_mean(lr, m, -1)
    seq = torch.where(m.sum(-1) > 0, (lr * m).sum(-1), torch.zeros(m.shape[0], dtype=lr.dtype))
    dseq = torch.where(m.sum(-1) > 0, (diff * m).sum(-1), torch.zeros(m.shape[0], dtype=lr.dtype))
    return {
        "ratio": {
            "token": lr.exp(),
            "geometric": geo.exp()[:, None].expand_as(lr),
            "sequence": seq.exp()[:, None].expand_as(lr),
            "segment": roll_segment_mean(lr, m).exp(),
        },
        "diff": {
            "token": diff,
            "geometric": roll_masked_mean(diff, m, -1)[:, None].expand_as(lr),
            "sequence": dseq[:, None].expand_as(lr),
            "segment": roll_segment_mean(diff, m),
        },
    }


LEVELS = ("token", "geometric", "sequence", "segment")


@pytest.mark.parametrize("level", LEVELS)
def test_roll_is_weights(level):
    trn, smp, m = turns(B=10, seed=1, scale=0.3)
    t = {k: torch.tensor(v) for k, v in (("trn", trn), ("smp", smp), ("m", m))}
    ratio = roll_granularities(t["trn"], t["smp"], t["m"])["ratio"][level]
    ub = 1.05  # TrainInferISWeightConfig upper_bound (default 1.2, the preset's)
    want = ratio.clamp(min=0.0, max=ub).numpy()
    clipfrac = ((ratio > ub).double() * t["m"]).sum() / t["m"].sum()  # is_weight_clipfrac (padding: ratio 1)
    assert gk.CORRECTIONS[f"roll.{level}_is"]["importance"]["clip_max"] == 1.2
    c = gk.correction(f"roll.{level}_is", trn, smp, m, clip_max=ub)
    w = np.asarray(c.weights)
    got = np.broadcast_to(w[:, None], m.shape) if w.ndim == 1 else w
    np.testing.assert_allclose(got[m], want[m], rtol=1e-13)
    assert c.mask is not None and np.array_equal(np.asarray(c.mask), m)  # IS only: the mask is unchanged
    assert c.metrics["is/fraction_high_token"] == pytest.approx(float(clipfrac), rel=1e-8)  # n + 1e-8 (verl)
    assert 0.0 < float(clipfrac) < 1.0  # the case clips some tokens, not all


@pytest.mark.parametrize("level", LEVELS)
@pytest.mark.parametrize("stat,bounds", [("ratio", (0.8, 1.2)), ("diff", (-0.02, 0.02))])
def test_roll_filters(level, stat, bounds):
    trn, smp, m = turns(seed=2, scale=0.2)
    t = {k: torch.tensor(v) for k, v in (("trn", trn), ("smp", smp), ("m", m))}
    x = roll_granularities(t["trn"], t["smp"], t["m"])[stat][level]
    lo, hi = bounds
    keep = ((x >= lo) & (x <= hi)).long() * t["m"].long()  # filter_mask · response_mask
    got = gk.rejection_mask(trn, smp, m, f"{level}_{stat}", bounds)
    np.testing.assert_array_equal(np.asarray(got.mask), keep.bool().numpy())
    final_mask_mean = (keep.double() * t["m"]).sum() / (t["m"].sum() + 1e-8)  # train_infer_final_mask_mean
    assert 1.0 - got.metrics["masked_fraction"] == pytest.approx(float(final_mask_mean), rel=1e-7)
    assert 0 < int(keep.sum()) < int(m.sum()), "the case should keep some tokens and drop others"


def test_roll_presets_are_the_config_defaults():
    trn, smp, m = turns(seed=3, scale=0.3)
    c = gk.correction("roll.segment_ratio_filter", trn, smp, m)
    assert c.weights is None
    np.testing.assert_array_equal(c.mask, gk.rejection_mask(trn, smp, m, "segment_ratio", "0.8_1.2").mask)
    d = gk.correction("roll.token_diff_filter", trn, smp, m)
    np.testing.assert_array_equal(d.mask, gk.rejection_mask(trn, smp, m, "token_diff", 0.2).mask)


def test_segments_by_hand():
    """Two turns of a row: each turn's tokens get the geometric-mean ratio of that turn."""
    lr = np.array([[0.1, 0.3, 9.0, -0.2, 0.0, 0.0]])
    m = np.array([[1, 1, 0, 1, 1, 0]], dtype=bool)
    trn = np.zeros_like(lr)
    out = gk.importance_weights(trn, -lr, m, level="segment", mode="truncate", clip_max=None, geo_eps=0.0)
    want = np.exp([0.2, 0.2, 0.0, -0.1, -0.1, 0.0]) * m
    np.testing.assert_allclose(out.weights, want, rtol=1e-15)
    geo = gk.importance_weights(trn, -lr, m, level="geometric", mode="truncate", clip_max=None, geo_eps=0.0)
    np.testing.assert_allclose(geo.weights, [np.exp(0.2 / 4)], rtol=1e-15)
    keep = gk.rejection_mask(trn, -lr, m, "segment_ratio", (np.exp(0.15), 2.0)).mask
    np.testing.assert_array_equal(keep, [[1, 1, 0, 0, 0, 0]])


# ---- seq-mask-tis: OpenRLHF and NeMo-RL -----------------------------------------------------------


def openrlhf_seq_mask_tis(old, rollout, mask, lo, hi):
    """PolicyLoss.forward, vllm_is_correction_type='seq-mask-tis': the factor multiplying the loss."""
    lr = old - rollout
    seq_is = torch.exp((lr * mask).sum(-1) / mask.sum(-1))  # openrlhf masked_mean: Σ / n
    seq_mask = (seq_is >= lo) & (seq_is <= hi)
    return seq_mask.unsqueeze(-1) * torch.exp(lr)


def nemo_seq_mask_tis(prev, gen, mask, lo, hi):
    """ClippedPGLossFn (token-level weights), truncated_importance_sampling_type='seq-mask-tis'."""
    w = torch.nan_to_num(torch.exp(prev - gen), nan=0.0, posinf=0.0, neginf=0.0)
    lr = torch.nan_to_num(prev - gen, nan=0.0, posinf=0.0, neginf=0.0)
    geo = torch.exp((lr * mask).sum(-1) / (mask.sum(-1) + 1e-8))
    kept = ((geo >= lo) & (geo <= hi)).double()
    return w * kept.unsqueeze(-1), (1.0 - kept).sum() / (kept.numel() + 1e-8)


@pytest.mark.parametrize("bounds", [(0.5, 5.0), (0.97, 1.03)])
def test_openrlhf_seq_mask_tis(bounds):
    trn, smp, m = turns(B=8, seed=4, scale=0.1)
    m[1, 0] = True  # OpenRLHF divides by the row's count: every row has tokens
    lo, hi = bounds
    want = openrlhf_seq_mask_tis(torch.tensor(trn), torch.tensor(smp), torch.tensor(m).double(), lo, hi).numpy()
    got = gk.correction("openrlhf.seq_mask_tis", trn, smp, m, clip_min=lo, clip_max=hi)
    np.testing.assert_allclose(np.asarray(got.weights)[m], want[m], rtol=1e-13)
    np.testing.assert_array_equal(np.asarray(got.mask), m)  # the denominator keeps the zeroed rows
    if bounds == (0.97, 1.03):
        assert 0 < (want[m] == 0).sum() < m.sum(), "some rows are zeroed, not all"


def test_nemo_seq_mask_tis_and_the_two_definitions():
    trn, smp, m = turns(B=10, seed=5, scale=0.002)
    m[1, 0] = True
    ref, oob = nemo_seq_mask_tis(torch.tensor(trn), torch.tensor(smp), torch.tensor(m).double(), 0.999, 1.002)
    got = gk.correction("nemo.seq_mask_tis", trn, smp, m)
    np.testing.assert_allclose(np.asarray(got.weights)[m], ref.numpy()[m], rtol=1e-13)
    assert got.metrics["is/seq_masked_fraction"] == pytest.approx(float(oob), rel=1e-7)  # NeMo is_oob_ratio
    assert 0.0 < float(oob) < 1.0
    # The two frameworks differ only in the geometric mean's ε (OpenRLHF Σ/n, NeMo-RL Σ/(n + 1e-8)).
    o = gk.correction("openrlhf.seq_mask_tis", trn, smp, m, clip_min=0.999, clip_max=1.002)
    n = gk.correction("nemo.seq_mask_tis", trn, smp, m, geo_eps=0.0)
    np.testing.assert_array_equal(o.weights, n.weights)


# ---- properties and bad inputs ---------------------------------------------------------------------


@pytest.mark.parametrize("level", LEVELS)
def test_identical_policies_give_unit_weights_at_every_level(level):
    trn, _, m = turns(seed=6)
    out = gk.importance_weights(trn, trn.copy(), m, level=level, mode="geo_mask", clip_min=0.9, clip_max=1.1)
    w = np.asarray(out.weights)
    np.testing.assert_allclose(w[m] if w.ndim == 2 else w[m.any(-1)], 1.0, rtol=1e-7)
    keep = gk.rejection_mask(trn, trn.copy(), m, [f"{level}_ratio", f"{level}_diff"], [(0.99, 1.01), 1e-12])
    np.testing.assert_array_equal(keep.mask, m)


@pytest.mark.parametrize("name", ["roll.segment_is", "roll.token_ratio_filter", "openrlhf.seq_mask_tis"])
def test_compare_and_explain_take_the_new_rows(name):
    trn, smp, m = turns(B=8, seed=8, scale=0.1)
    m[1, 0] = True
    g = np.random.default_rng(8)
    b = dict(rewards=g.integers(0, 2, 8).astype(float), group_size=4, logp=trn + g.normal(0, 0.1, trn.shape))
    b.update(old_logp=trn, mask=m, sampling_logp=smp)
    label = f"trl.dapo:correction={name}"
    t = gk.compare(b, presets=[label])
    c = gk.correction(name, trn, smp, m)
    w = None if c.weights is None else np.asarray(c.weights)
    w = np.ascontiguousarray(np.broadcast_to(w[:, None], m.shape)) if w is not None and w.ndim == 1 else w
    want = gk.policy_loss(b["logp"], trn, t.advantages[label], np.asarray(c.mask), spec="trl.dapo", token_weights=w)
    assert t.rows[0]["loss"] == pytest.approx(float(want.loss), rel=1e-12, abs=1e-15)
    e = gk.explain(b, "trl.dapo", label)
    assert "correction" in str(e)


def test_bad_peer_inputs():
    trn, smp, m = turns(seed=7)
    with pytest.raises(ValueError, match="geo_eps: expected a number in"):
        gk.importance_weights(trn, smp, m, geo_eps=-1.0)
    with pytest.raises(ValueError, match="mode: expected one of"):
        gk.importance_weights(trn, smp, m, mode="seq_mask_tis")
    with pytest.raises(ValueError, match="lower <= upper"):
        gk.rejection_mask(trn, smp, m, "token_diff", (0.2, -0.2))
    with pytest.raises(ValueError, match="'segment_ratio'"):
        gk.rejection_mask(trn, smp, m, "turn_ratio", 1.2)
