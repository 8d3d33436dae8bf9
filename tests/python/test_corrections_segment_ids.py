"""Segment-level importance weights (ROLL's multi-turn level) with explicit segment ids (issue 22): a
segment is a row's selected tokens sharing an id. Against an fp64 reference, and equal to the mask-derived
form (segments = runs of the mask) where both apply."""

import numpy as np
import pytest

import grpokit as gk


def _batch(seed=0, B=5, T=12):
    g = np.random.default_rng(seed)
    trn = np.log(g.uniform(0.05, 0.95, (B, T)))
    smp = trn + 0.3 * g.standard_normal((B, T))
    mask = g.uniform(size=(B, T)) < 0.75
    mask[0] = True  # a row without gaps
    mask[1, :] = False  # an all-masked row
    trn[~mask] = np.nan  # padding is never read
    return trn, smp, mask


def _run_ids(mask):
    """Ids that number the runs of the mask (what the mask-derived form uses); -3 where unselected."""
    ids = np.full(mask.shape, -3, dtype=np.int64)
    for i, row in enumerate(mask):
        k, prev = -1, False
        for t, on in enumerate(row):
            k += on and not prev
            if on:
                ids[i, t] = k
            prev = on
    return ids


def ref_segment_weights(trn, smp, mask, ids, clip_max, geo_eps):
    """ROLL's segment level, truncate: ρ = min(exp(Σ_seg lr / (n_seg + ε)), C) on each selected token."""
    w = np.zeros(trn.shape)
    for i in range(trn.shape[0]):
        sel = np.where(mask[i])[0]
        for s in np.unique(ids[i, sel]):
            toks = sel[ids[i, sel] == s]
            lr = trn[i, toks] - smp[i, toks]
            w[i, toks] = min(np.exp(lr.sum() / (len(toks) + geo_eps)), clip_max)
    return w


@pytest.mark.parametrize("mode", ["truncate", "mask", "geo_mask"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_ids_of_the_mask_runs_equal_the_mask_form(mode, dtype):
    trn, smp, mask = _batch()
    kw = dict(level="segment", mode=mode, clip_min=0.5, clip_max=1.5)
    want = gk.importance_weights(trn, smp, mask, **kw)
    got = gk.importance_weights(trn, smp, mask, segment_ids=_run_ids(mask).astype(dtype), **kw)
    np.testing.assert_array_equal(got.weights, want.weights)
    for k in want.metrics:
        np.testing.assert_array_equal(got.metrics[k], want.metrics[k], err_msg=k)


@pytest.mark.parametrize("geo_eps", [0.0, 1e-8])
def test_turns_without_gaps_and_across_gaps_match_the_reference(geo_eps):
    trn, smp, mask = _batch(1)
    g = np.random.default_rng(5)
    # a new turn at a third of the selected tokens: adjacent turns without a masked gap, and turns that
    # span masked positions (tool output) under one id
    ids = np.cumsum(mask & (g.uniform(size=mask.shape) < 0.3), axis=1)
    ids[~mask] = -1
    got = gk.importance_weights(
        trn, smp, mask, level="segment", mode="truncate", clip_max=1.2, geo_eps=geo_eps, segment_ids=ids
    )
    want = ref_segment_weights(trn, smp, mask, ids, 1.2, geo_eps)
    np.testing.assert_allclose(got.weights, want, rtol=1e-13, atol=0)
    mask_form = gk.importance_weights(trn, smp, mask, level="segment", mode="truncate", clip_max=1.2, geo_eps=geo_eps)
    assert not np.allclose(got.weights, mask_form.weights)  # the ids do change the segments


def test_correction_preset_and_torch_take_them():
    torch = pytest.importorskip("torch")
    trn, smp, mask = _batch(2)
    ids = np.cumsum(mask, axis=1) // 3
    want = gk.importance_weights(trn, smp, mask, level="segment", mode="truncate", clip_max=1.2, segment_ids=ids)
    c = gk.correction("roll.segment_is", trn, smp, mask, segment_ids=ids)  # ROLL: C 1.2, ε_g 0
    np.testing.assert_allclose(c.weights, ref_segment_weights(trn, smp, mask, ids, 1.2, 0.0), rtol=1e-13)
    t = gk.importance_weights(
        torch.from_numpy(trn),
        torch.from_numpy(smp),
        torch.from_numpy(mask),
        level="segment",
        mode="truncate",
        clip_max=1.2,
        segment_ids=torch.from_numpy(ids),
    )
    np.testing.assert_array_equal(t.weights.numpy(), want.weights)


def test_bad_ids_name_the_argument():
    trn, smp, mask = _batch(3)
    ids = _run_ids(mask)
    seg = dict(level="segment", mode="truncate")
    neg = ids.copy()
    neg[0, 4] = -1
    with pytest.raises(ValueError, match=r"segment_ids: element \(0, 4\) is -1; ids must be >= 0"):
        gk.importance_weights(trn, smp, mask, segment_ids=neg, **seg)
    down = np.zeros_like(ids)
    down[0, 5:] = 2
    down[0, 8] = 1
    with pytest.raises(ValueError, match=r"segment_ids: element \(0, 8\) is 1 after 2 .* must not decrease"):
        gk.importance_weights(trn, smp, mask, segment_ids=down, **seg)
    with pytest.raises(ValueError, match="segment_ids: only level='segment'"):
        gk.importance_weights(trn, smp, mask, segment_ids=ids, level="token", mode="truncate")
    with pytest.raises(ValueError, match="segment_ids"):
        gk.importance_weights(trn, smp, mask, segment_ids=ids[:, :-1], **seg)
    with pytest.raises((TypeError, ValueError), match="segment_ids"):
        gk.importance_weights(trn, smp, mask, segment_ids=ids.astype(np.float64), **seg)
    keep = ids.copy()
    gk.importance_weights(trn, smp, mask, segment_ids=ids, **seg)
    np.testing.assert_array_equal(ids, keep)  # inputs are never written
