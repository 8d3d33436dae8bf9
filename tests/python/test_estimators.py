"""Advantage estimators: fp64 NumPy references written from the peers' definitions
(docs/estimators.md), TRL parity (TRL's own lines, with TRL's nanstd), properties and bad inputs."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grpokit as gk
from estimators_reference import (
    groups,
    ref_combine,
    ref_gdpo,
    ref_gpg,
    ref_opo,
    ref_otb,
    ref_passk,
    ref_reinforce_pp,
    ref_remax,
    ref_reward_to_go,
    ref_rloo,
    ref_rpp_baseline,
)

# ---- data ----------------------------------------------------------------------------------------

rng = np.random.default_rng(1234)


def right_padded_mask(B, T, rng, min_len=1):
    lens = rng.integers(min_len, T + 1, size=B)
    return (np.arange(T)[None, :] < lens[:, None]), lens


# ---- reference tests ----------------------------------------------------------------------------


@pytest.mark.parametrize("normalize", [False, True])
def test_rloo_matches_reference(normalize):
    R = rng.normal(size=12)
    got = gk.advantages(R, 4, estimator="rloo", normalize=normalize)
    np.testing.assert_allclose(got, ref_rloo(R, 4, normalize), rtol=1e-12, atol=1e-12)


def test_rloo_equals_verl_scaling():
    """verl's rloo G/(G−1)(R − μ) is TRL's leave-one-out (no NaN)."""
    R = rng.normal(size=10)
    G = 5
    verl = np.concatenate([G / (G - 1) * (R[g] - R[g].mean()) for g in groups(10, G)])
    np.testing.assert_allclose(gk.advantages(R, G, estimator="rloo"), verl, rtol=1e-12, atol=1e-14)


def test_reinforce_pp_matches_reference():
    B, T = 5, 7
    m, _ = right_padded_mask(B, T, rng)
    m[1, 2] = False  # an interior unselected token (tool output) carries the return through
    r = rng.normal(size=(B, T))
    r[~m] = np.nan  # padding may hold anything
    adv, ret = gk.advantages(r, estimator="reinforce_pp", mask=m, gamma=0.9, return_returns=True)
    want_adv, want_ret = ref_reinforce_pp(np.where(m, r, 0.0), m.astype(float), 0.9)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-12, atol=1e-12)


def test_outcome_rewards_go_on_the_last_selected_token():
    B, T = 4, 5
    m, lens = right_padded_mask(B, T, rng)
    R = rng.normal(size=B)
    r = np.zeros((B, T))
    r[np.arange(B), lens - 1] = R
    np.testing.assert_allclose(
        gk.advantages(R, estimator="reinforce_pp", mask=m),
        gk.advantages(r, estimator="reinforce_pp", mask=m),
        rtol=0,
        atol=0,
    )


def test_reinforce_pp_baseline_matches_reference():
    B, T, G = 8, 6, 4
    m, lens = right_padded_mask(B, T, rng)
    R = rng.normal(size=B)
    got = gk.advantages(R, G, estimator="reinforce_pp_baseline", mask=m)
    np.testing.assert_allclose(got, ref_rpp_baseline(R, G, lens), rtol=1e-12, atol=1e-12)
    # lengths instead of a mask, and the verl spelling
    got2 = gk.advantages(R, G, estimator="reinforce_plus_plus_baseline", lengths=lens)
    np.testing.assert_allclose(got2, got, rtol=0, atol=0)


def test_remax_matches_reference():
    B, T = 4, 6
    m, _ = right_padded_mask(B, T, rng)
    r = rng.normal(size=(B, T))
    b = rng.normal(size=B)
    adv, ret = gk.advantages(r, estimator="remax", mask=m, baseline_rewards=b, return_returns=True)
    want_adv, want_ret = ref_remax(r, m.astype(float), b)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-12, atol=1e-12)


def test_opo_matches_reference():
    R = rng.normal(size=9)
    L = rng.integers(1, 20, size=9)
    np.testing.assert_allclose(
        gk.advantages(R, 3, estimator="opo", lengths=L), ref_opo(R, 3, L), rtol=1e-12, atol=1e-13
    )
    m = np.arange(20)[None, :] < L[:, None]
    np.testing.assert_allclose(gk.advantages(R, 3, estimator="opo", mask=m), ref_opo(R, 3, L), rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("std", ["sample", "none"])
def test_grpo_passk_matches_reference(std):
    R = rng.normal(size=12)
    got = gk.advantages(R, 4, estimator="grpo_passk", std=std)
    np.testing.assert_allclose(got, ref_passk(R, 4, std == "sample"), rtol=1e-12, atol=1e-14)


def test_gpg_matches_reference():
    R = np.array([1.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.5])
    np.testing.assert_allclose(gk.advantages(R, 3, estimator="gpg", f_norm=2.0), ref_gpg(R, 3, 2.0), rtol=1e-12)


def test_gdpo_matches_reference():
    B, K, G, T = 8, 3, 4, 5
    Rk = rng.normal(size=(B, K))
    w = np.array([1.0, 0.5, 2.0])
    m, lens = right_padded_mask(B, T, rng)
    got = gk.advantages(Rk, G, estimator="gdpo", reward_weights=w, mask=m)
    np.testing.assert_allclose(got, ref_gdpo(Rk, G, w, lens), rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("with_is", [False, True])
@pytest.mark.parametrize("zero_tail", [True, False])
def test_optimal_token_baseline_matches_reference(with_is, zero_tail):
    B, T, G = 6, 7, 3
    m, _ = right_padded_mask(B, T, rng, min_len=2)
    m[0] = np.arange(T) < 7  # a unique longest completion in the first group
    m[1] = np.arange(T) < 4
    m[2] = np.arange(T) < 3
    r = np.where(m, rng.normal(size=(B, T)), 0.0)
    logp = np.log(rng.uniform(0.05, 1.0, size=(B, T)))
    sps = rng.uniform(0.1, 1.0, size=(B, T))
    rho = rng.uniform(0.5, 2.0, size=(B, T)) if with_is else None
    adv, ret = gk.advantages(
        r,
        G,
        estimator="optimal_token_baseline",
        mask=m,
        logp=logp,
        sum_pi_squared=sps,
        is_weights=rho,
        handle_zero_tail=zero_tail,
        return_returns=True,
    )
    want_adv, want_ret = ref_otb(r, m.astype(float), G, logp, sps, rho, zero_tail)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-12, atol=1e-12)


def ref_tir_otb(r, m, G, logp, sps, zero_tail=True, eps=1e-8):
    """verl's multi-turn variant: each row's selected tokens packed to the left, baseline per rank."""
    ret = ref_reward_to_go(r, m)
    W = np.cumsum((1 - 2 * np.exp(logp) + sps) * m, -1)
    B, T = r.shape
    L = m.sum(-1).astype(int)
    packed_R, packed_W = np.zeros((B, T)), np.zeros((B, T))
    for i in range(B):
        packed_R[i, : L[i]] = ret[i][m[i] > 0]
        packed_W[i, : L[i]] = W[i][m[i] > 0]
    base = np.zeros((B, T))
    for g in groups(B, G):
        g = [i for i in g if L[i] > 0]
        if len(g) < 2:
            continue
        base[g] = (packed_R[g] * packed_W[g]).sum(0) / (packed_W[g].sum(0) + eps)
        srt = np.sort(L[g])
        longest = [i for i in g if L[i] == srt[-1]]
        if zero_tail and len(longest) == 1 and srt[-1] > srt[-2]:
            base[longest[0], srt[-2] :] = 0.0
    adv = np.zeros((B, T))
    for i in range(B):
        adv[i][m[i] > 0] = (packed_R[i] - base[i])[: L[i]]
    return adv, ret


def test_tir_optimal_token_baseline_matches_reference():
    B, T, G = 6, 8, 3
    m = rng.uniform(size=(B, T)) < 0.7  # gaps: tool outputs inside the completion
    m[:, 0] = True
    m[3] = False  # an empty row drops out of its group (which keeps 2)
    r = np.where(m, rng.normal(size=(B, T)), 0.0)
    logp = np.log(rng.uniform(0.05, 1.0, size=(B, T)))
    sps = rng.uniform(0.1, 1.0, size=(B, T))
    adv, ret = gk.advantages(
        r, G, estimator="verl.tir_optimal_token_baseline", mask=m, logp=logp, sum_pi_squared=sps, return_returns=True
    )
    want_adv, want_ret = ref_tir_otb(r, m.astype(float), G, logp, sps)
    np.testing.assert_allclose(adv, want_adv, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(ret, want_ret, rtol=1e-12, atol=1e-12)


def test_tir_equals_otb_without_gaps():
    B, T, G = 6, 5, 3
    m, _ = right_padded_mask(B, T, rng)
    r = np.where(m, rng.normal(size=(B, T)), 0.0)
    logp = np.log(rng.uniform(0.05, 1.0, size=(B, T)))
    sps = rng.uniform(0.1, 1.0, size=(B, T))
    kw = dict(mask=m, logp=logp, sum_pi_squared=sps)
    np.testing.assert_allclose(
        gk.advantages(r, G, estimator="tir_optimal_token_baseline", **kw),
        gk.advantages(r, G, estimator="optimal_token_baseline", **kw),
        rtol=0,
        atol=1e-15,
    )


def test_peer_presets():
    R = rng.normal(size=8)
    np.testing.assert_array_equal(
        gk.advantages(R, 4, estimator="verl.grpo"), gk.advantages(R, 4, std="sample", epsilon=1e-6)
    )
    np.testing.assert_array_equal(
        gk.advantages(R, 4, estimator="trl.grpo_batch_std"),
        gk.advantages(R, 4, std="sample", epsilon=1e-4, std_scope="batch"),
    )
    # explicit options override the preset's
    np.testing.assert_array_equal(
        gk.advantages(R, 4, estimator="verl.grpo", epsilon=0.0), gk.advantages(R, 4, std="sample")
    )
    for name, (est, _opts) in gk.ESTIMATOR_PRESETS.items():
        assert est in gk.ESTIMATORS, name


def test_multi_reward_grpo_is_sum_then_normalize():
    Rk = rng.normal(size=(6, 2))
    Rk[1, 0] = np.nan  # one reward function could not score it: its other reward still counts
    w = [0.3, 1.7]
    got = gk.advantages(Rk, 3, reward_weights=w, std="sample", epsilon=1e-4)
    want = gk.advantages(ref_combine(Rk, w), 3, std="sample", epsilon=1e-4)
    np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-15)


def test_grpo_default_behaviour_unchanged():
    np.testing.assert_array_equal(gk.advantages([1.0, 0.0, 1.0, 1.0], group_size=2), [0.5, -0.5, 0.0, 0.0])


def test_token_estimators_keep_float32_and_torch():
    torch = pytest.importorskip("torch")
    B, T = 4, 5
    m, _ = right_padded_mask(B, T, rng)
    r = rng.normal(size=(B, T))
    got = gk.advantages(torch.tensor(r, dtype=torch.float32), estimator="reinforce_pp", mask=torch.tensor(m))
    assert isinstance(got, torch.Tensor) and got.dtype == torch.float32 and got.shape == (B, T)
    want, _ = ref_reinforce_pp(np.where(m, r, 0), m.astype(float), 1.0)
    np.testing.assert_allclose(got.numpy(), want, rtol=1e-5, atol=1e-5)
    R = torch.tensor(rng.normal(size=6))
    out = gk.advantages(R, 3, estimator="rloo")
    assert isinstance(out, torch.Tensor) and out.dtype == torch.float64


# ---- properties ---------------------------------------------------------------------------------

finite = st.floats(-10, 10, allow_nan=False, allow_infinity=False)


@given(st.lists(finite, min_size=8, max_size=8), st.integers(0, 7), finite)
def test_leave_one_out_baseline_excludes_the_row_itself(R, i, delta):
    R = np.array(R)
    R2 = R.copy()
    R2[i] += delta
    b1 = R - gk.advantages(R, 4, estimator="rloo")
    b2 = R2 - gk.advantages(R2, 4, estimator="rloo")
    assert b2[i] == pytest.approx(b1[i], abs=1e-9)


@given(
    st.lists(finite, min_size=6, max_size=6).filter(lambda v: np.ptp(v) > 1e-3),
    st.lists(st.integers(1, 5), min_size=6, max_size=6),
)
def test_whitening_gives_zero_mean_unit_variance_over_the_mask(R, lens):
    R, lens = np.array(R), np.array(lens)
    m = np.arange(5)[None, :] < lens[:, None]
    A = gk.advantages(R, 3, estimator="reinforce_pp_baseline", mask=m)
    tok = np.broadcast_to(A[:, None], m.shape)[m]
    if np.ptp(tok) < 1e-6:  # every group constant: nothing to whiten
        return
    assert abs(tok.mean()) < 1e-6
    assert np.var(tok, ddof=1) == pytest.approx(1.0, rel=1e-5)


@given(st.lists(finite, min_size=6, max_size=6), st.lists(finite, min_size=6, max_size=6))
def test_reinforce_pp_whitening_over_the_mask(a, b):
    r = np.array([a, b]).T.reshape(3, 4)
    m = np.array([[1, 1, 1, 0], [1, 1, 0, 0], [1, 1, 1, 1]], bool)
    A = gk.advantages(r, estimator="reinforce_pp", mask=m, gamma=0.95)
    assert np.all(A[~m] == 0)
    sel = A[m]
    if np.ptp(sel) < 1e-6:
        return
    assert abs(sel.mean()) < 1e-6
    assert np.var(sel, ddof=1) == pytest.approx(1.0, rel=1e-5)


@given(st.lists(finite, min_size=8, max_size=8))
def test_passk_credits_only_the_best_of_each_group(R):
    R = np.array(R)
    A = gk.advantages(R, 4, estimator="grpo_passk")
    for g in groups(8, 4):
        nz = [i for i in g if A[i] != 0]
        assert len(nz) <= 1
        if nz:
            assert R[nz[0]] == R[g].max() and A[nz[0]] > 0


def test_inputs_are_not_modified():
    R = rng.normal(size=(6, 2))
    keep = R.copy()
    m = np.ones((6, 3), bool)
    gk.advantages(R, 3, estimator="gdpo", mask=m)
    np.testing.assert_array_equal(R, keep)


def test_nan_reward_is_unscorable():
    R = np.array([1.0, np.nan, 0.0, 0.5, 0.5, 1.0])
    for est in ["rloo", "reinforce_pp_baseline", "gpg", "grpo_passk", "opo"]:
        kw = {"lengths": [1, 2, 3, 4, 5, 6]} if est == "opo" else {}
        A = gk.advantages(R, 3, estimator=est, **kw)
        assert A[1] == 0.0 and np.all(np.isfinite(A)), est


# ---- bad inputs ---------------------------------------------------------------------------------


def test_reward_weights_of_the_wrong_length():
    with pytest.raises(ValueError, match=r"reward_weights: expected 3 weights .* got 2"):
        gk.advantages(np.zeros((4, 3)), 2, reward_weights=[1.0, 2.0])


def test_mismatched_K_for_gdpo_weights():
    with pytest.raises(ValueError, match=r"reward_weights: expected 2 weights"):
        gk.advantages(np.zeros((4, 2)), 2, estimator="gdpo", reward_weights=[1.0, 2.0, 3.0])


@pytest.mark.parametrize("est", ["rloo", "reinforce_pp_baseline", "grpo_passk", "gpg", "gdpo", "normalize_then_sum"])
def test_groups_of_one_are_an_error(est):
    with pytest.raises(ValueError, match="single completion"):
        gk.advantages([1.0, 0.0, 1.0], 1, estimator=est)
    with pytest.raises(ValueError, match="single completion"):
        gk.advantages([1.0, 0.0, 1.0], group_ids=[0, 0, 1], estimator=est)


def test_uneven_groups():
    with pytest.raises(ValueError, match="not a whole number of groups"):
        gk.advantages([1.0, 0.0, 1.0], 2, estimator="rloo")


def test_unknown_estimator_and_option():
    with pytest.raises(ValueError, match="estimator: expected one of"):
        gk.advantages([1.0, 0.0], 2, estimator="ppo")
    with pytest.raises(TypeError, match="estimator 'rloo' takes no option 'gamma'"):
        gk.advantages([1.0, 0.0], 2, estimator="rloo", gamma=0.9)
    with pytest.raises(TypeError, match="takes no option 'std'"):
        gk.advantages([1.0, 0.0], 2, estimator="gpg", std="sample")


def test_token_estimator_needs_mask_and_inputs():
    with pytest.raises(ValueError, match="needs mask"):
        gk.advantages(np.zeros((2, 3)), estimator="reinforce_pp")
    with pytest.raises(ValueError, match="needs mask, baseline_rewards"):
        gk.advantages(np.zeros((2, 3)), estimator="remax")
    with pytest.raises(ValueError, match=r"rewards: expected shape \(2, 4\)|rewards.*shape"):
        gk.advantages(np.zeros((2, 3)), estimator="reinforce_pp", mask=np.ones((2, 4), bool))


def test_nan_token_reward_at_selected_position():
    r = np.zeros((2, 3))
    r[0, 1] = np.nan
    with pytest.raises(ValueError, match=r"rewards: element \(0, 1\) is nan at a selected position"):
        gk.advantages(r, estimator="reinforce_pp", mask=np.ones((2, 3), bool))


def test_inf_reward():
    with pytest.raises(ValueError, match="rewards: element 1 is inf"):
        gk.advantages([1.0, np.inf], 2, estimator="rloo")


def test_whitening_needs_two_tokens():
    with pytest.raises(ValueError, match="masked whitening needs more than one selected token"):
        gk.advantages(np.ones((2, 2)), estimator="reinforce_pp", mask=np.array([[1, 0], [0, 0]], bool))


def test_opo_zero_length_group():
    with pytest.raises(ValueError, match="group 0 has total length 0"):
        gk.advantages([1.0, 0.0], 2, estimator="opo", lengths=[0, 0])


def test_opo_needs_lengths():
    with pytest.raises(ValueError, match="estimator 'opo' weighs rewards by completion length"):
        gk.advantages([1.0, 0.0], 2, estimator="opo")


def test_mask_and_lengths_together():
    with pytest.raises(ValueError, match="either mask or lengths"):
        gk.advantages([1.0, 0.0], 2, estimator="opo", lengths=[1, 2], mask=np.ones((2, 2), bool))


def test_estimator_table_is_complete():
    names = set(gk.ESTIMATORS)
    assert {
        "grpo",
        "rloo",
        "reinforce_pp",
        "reinforce_pp_baseline",
        "remax",
        "opo",
        "grpo_passk",
        "gpg",
        "gdpo",
        "normalize_then_sum",
        "optimal_token_baseline",
    } <= names
    for info in gk.ESTIMATORS.values():
        assert info.peer and info.summary


def test_strided_inputs_read_correctly():
    big = rng.normal(size=(6, 6))
    m = np.asfortranarray(rng.uniform(size=(6, 3)) < 0.8)
    m[:, 0] = True
    r = big[:, ::2]  # a non-contiguous (6, 3) view
    np.testing.assert_array_equal(
        gk.advantages(r, estimator="reinforce_pp", mask=m),
        gk.advantages(np.ascontiguousarray(r), estimator="reinforce_pp", mask=np.ascontiguousarray(m)),
    )
    np.testing.assert_array_equal(
        gk.advantages(r, 3, estimator="gdpo", mask=m),
        gk.advantages(np.ascontiguousarray(r), 3, estimator="gdpo", mask=np.ascontiguousarray(m)),
    )


@pytest.mark.parametrize("est", ["rloo", "gpg", "grpo_passk", "reinforce_pp_baseline", "normalize_then_sum"])
def test_float32_in_float32_out(est):
    R = rng.normal(size=8)
    got = gk.advantages(R.astype(np.float32), 4, estimator=est)
    assert got.dtype == np.float32
    np.testing.assert_allclose(
        got, gk.advantages(R.astype(np.float32).astype(np.float64), 4, estimator=est), rtol=1e-6, atol=1e-6
    )


@given(st.integers(2, 5), st.integers(1, 4), st.integers(0, 2**31 - 1))
def test_outcome_estimators_match_references_on_random_batches(G, n_groups, seed):
    g = np.random.default_rng(seed)
    B = G * n_groups
    R = np.round(g.normal(size=B), 2)  # ties happen
    L = g.integers(1, 9, size=B)
    np.testing.assert_allclose(gk.advantages(R, G, estimator="rloo"), ref_rloo(R, G), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(gk.advantages(R, G, estimator="gpg"), ref_gpg(R, G), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        gk.advantages(R, G, estimator="opo", lengths=L), ref_opo(R, G, L), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(gk.advantages(R, G, estimator="grpo_passk"), ref_passk(R, G), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(
        gk.advantages(R, G, estimator="reinforce_pp_baseline", lengths=L),
        ref_rpp_baseline(R, G, L),
        rtol=1e-9,
        atol=1e-9,
    )


def test_every_preset_runs_on_one_batch_with_filtered_inputs():
    """The calling pattern of docs/estimators.md: one batch, every preset, inputs filtered by the table."""
    B, T, G = 6, 5, 3
    m, _ = right_padded_mask(B, T, rng, min_len=2)
    batch_arrays = {
        "mask": m,
        "baseline_rewards": rng.normal(size=B),
        "logp": np.log(rng.uniform(0.1, 1, (B, T))),
        "sum_pi_squared": rng.uniform(0.1, 1, (B, T)),
    }
    R = rng.normal(size=B)
    for name in gk.ESTIMATOR_PRESETS:
        est, _ = gk.ESTIMATOR_PRESETS[name]
        info = gk.ESTIMATORS[est]
        inputs = {k: v for k, v in batch_arrays.items() if k in info.inputs}
        A = gk.advantages(R, G, estimator=name, **inputs)
        assert A.shape == ((B, T) if info.kind == "token" else (B,)), name
        assert np.all(np.isfinite(A)), name


# ---- CUDA inputs go to the GPU backend (the kernels are tested in test_estimators_gpu.py) -------


def _has_cuda_device():
    from grpokit import _backend

    module, _ = _backend.load_cuda()
    return module is not None and module.device_count()[0] > 0


@pytest.mark.skipif(_has_cuda_device(), reason="the fake CUDA array holds host memory")
@pytest.mark.parametrize("estimator, kw", [("rloo", {"group_size": 2}), ("reinforce_pp", {"mask": None})])
def test_cuda_inputs_dispatch_to_the_gpu_backend(estimator, kw):
    from dlpack_fakes import FakeProducer

    r = FakeProducer(np.array([1.0, 0.0, 1.0, 1.0]), device_type=2)  # labelled CUDA
    if "mask" in kw:
        kw = {"mask": FakeProducer(np.ones((4, 1), dtype=bool), device_type=2)}
    with pytest.raises(RuntimeError, match="inputs are on cuda:0 but"):
        gk.advantages(r, estimator=estimator, **kw)
