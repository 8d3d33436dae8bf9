"""Shared-prefix bias (Prop. 1): worked checks 1–5 (docs/diagnostics.md, Tests), an independent fp64 trie
reference, properties."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import grpokit
from grpokit import diagnostics as gd

# ---- independent reference: a dict keyed by the prefix tuple -----------------------------------


def reference(ids, adv, omega, G, valid=None):
    """Per-token (count, W, bias, abs) and per-group whole-prefix sums, from the definitions."""
    B = len(ids)
    valid = valid or [[True] * len(r) for r in ids]
    lens = []
    for i in range(B):
        v = [t for t in range(len(ids[i])) if valid[i][t]]
        lens.append(v[-1] + 1 if v else 0)
    tok = {}
    groups = []
    for g in range(B // G):
        rows = range(g * G, (g + 1) * G)
        nodes = {}
        for i in rows:
            for t in range(lens[i]):
                nodes.setdefault(tuple(ids[i][: t + 1]), []).append(i)
        prefix_len, sums = 0, np.zeros(3)
        for key, members in nodes.items():
            t = len(key) - 1
            w = np.array([omega[i][t] if valid[i][t] else 0.0 for i in members])
            a = np.array([adv[i] for i in members])
            W = float(np.sum(w * a))
            bias = float(np.sum((w - w.mean()) * a))
            ab = float(np.sum(np.abs(w * a)))
            for i in members:
                tok[(i, t)] = (len(members), W, bias, ab)
            if len(members) == G and G > 1:
                prefix_len = max(prefix_len, t + 1)
                sums += (W, bias, ab)
        groups.append((prefix_len, *sums))
    return tok, lens, groups


def pad(rows, fill=0, dtype=np.int64):
    T = max([len(r) for r in rows] + [1])
    out = np.full((len(rows), T), fill, dtype=dtype)
    mask = np.zeros((len(rows), T), dtype=bool)
    for i, r in enumerate(rows):
        out[i, : len(r)] = r
        mask[i, : len(r)] = True
    return out, mask


def shared_group(lengths, prefix=3):
    """Completions that share `prefix` tokens, then differ (token ids 100+i from position prefix)."""
    return [[7, 8, 9][:prefix] + [100 + i] * (n - prefix) for i, n in enumerate(lengths)]


def whole_prefix_W(alpha, A, lengths, s=None):
    ids = shared_group(lengths)
    s = s if s is not None else [1.0] * len(lengths)
    omega = [[a * si] * n for a, si, n in zip(alpha, s, lengths)]
    rep = gd.prefix_bias_from_weights(ids, A, omega, len(lengths))
    assert rep.prefix_len[0] == 3
    # every token of the shared prefix carries the same W (ω constant along a completion)
    return rep, rep.coef[:3]


# ---- worked checks 1–5 -------------------------------------------------------------------------


def test_check_1a_grpo_r1_and_gspo_weights():
    A, L, G, sig = [0.5, 0.5, -0.5, -0.5], [10, 30, 20, 40], 4, 0.5
    alpha = [1 / (G * n * sig) for n in L]
    np.testing.assert_allclose(alpha, [0.05, 0.016667, 0.025, 0.0125], atol=1e-6)
    rep, W = whole_prefix_W(alpha, A, L)
    np.testing.assert_allclose(W, 0.01458333, atol=1e-8)
    # on a prefix shared by the whole group Σ A = 0, so W is all bias
    np.testing.assert_allclose(rep.bias[:3], 0.01458333, atol=1e-8)
    np.testing.assert_allclose(rep.prefix_bias[0], 3 * 0.01458333, atol=1e-7)
    assert rep.weight_length_corr[0] < -0.8  # 1/|o| weights: the bias is a length preference


def test_check_1b_grpo_v32():
    A, L, G = [0.5, 0.5, -0.5, -0.5], [10, 30, 20, 40], 4
    _, W = whole_prefix_W([1 / (G * n) for n in L], A, L)
    np.testing.assert_allclose(W, 0.00729167, atol=1e-8)


@pytest.mark.parametrize("alpha", [0.25, 1 / (0.5 * 100), 0.5])  # Dr GRPO, DAPO (0.02), GCPO
def test_check_1c_uniform_weights_cancel(alpha):
    A, L = [0.5, 0.5, -0.5, -0.5], [10, 30, 20, 40]
    rep, W = whole_prefix_W([alpha] * 4, A, L)
    assert np.all(W == 0.0)
    assert rep.prefix_bias[0] == 0.0 and rep.shared_bias[0] == 0.0
    assert math.isnan(rep.weight_length_corr[0])  # uniform weights: no weight/length relation


@pytest.mark.parametrize("lengths,expected", [((10, 100), 0.045), ((100, 10), -0.045), ((50, 50), 0.0)])
def test_check_2_sign_set_by_the_shorter_completion(lengths, expected):
    alpha = [1 / (2 * n * 0.5) for n in lengths]
    _, W = whole_prefix_W(alpha, [0.5, -0.5], list(lengths))
    np.testing.assert_allclose(W, expected, atol=1e-12)


def test_check_3_cppo_pruning():
    r = np.array([1.0, 0, 0, 0])
    A = r - r.mean()
    sig = r.std()
    np.testing.assert_allclose(sig, 0.433013, atol=1e-6)
    keep = np.abs(A) > 0.3
    alpha = keep / (4 * 20 * sig)
    np.testing.assert_allclose(alpha[0], 0.028868, atol=1e-6)
    _, W = whole_prefix_W(list(alpha), list(A), [20] * 4)
    np.testing.assert_allclose(W, 0.02165064, atol=1e-8)
    _, W_all = whole_prefix_W([1 / (4 * 20 * sig)] * 4, list(A), [20] * 4)
    np.testing.assert_allclose(W_all, 0.0, atol=1e-15)


def test_check_4_gcpo_sequence_ratios():
    _, W = whole_prefix_W([0.5] * 4, [0.5, 0.5, -0.5, -0.5], [6, 7, 8, 9], s=[1.10, 1.05, 0.95, 0.90])
    np.testing.assert_allclose(W, 0.075, atol=1e-12)


@pytest.mark.parametrize("s,expected", [(1.0, 0.0), (1.1, 0.0), (1.3, -0.325), (0.7, 0.175)])
def test_check_5_sign_dependent_clipping(s, expected):
    # One shared token with the same token ratio for all; ω = α·s outside ℛ_clip, 0 inside it —
    # the clip region from the engine's own sign-aware rule.
    A = np.array([0.5, 0.5, -0.5, -0.5])
    ratios = np.full((4, 1), s)
    clipped = gd.clip_region(ratios, A, epsilon=0.2).excess > 0
    omega = np.where(clipped, 0.0, 0.25 * ratios)
    rep = gd.prefix_bias_from_weights(np.full((4, 1), 5), A, omega, 4, omega_unclipped=0.25 * ratios)
    np.testing.assert_allclose(rep.coef[0, 0], expected, atol=1e-12)
    # uniform α: without the clipped branch the shared token cancels, so all of W is clipping's
    np.testing.assert_allclose(rep.clip_contribution[0, 0], expected, atol=1e-12)
    np.testing.assert_allclose(rep.prefix_clip_contribution[0], expected, atol=1e-12)


# ---- the reference on random batches -------------------------------------------------------------


@st.composite
def batches(draw):
    G = draw(st.integers(1, 5))
    groups = draw(st.integers(1, 3))
    B = G * groups
    vocab = draw(st.integers(1, 3))  # tiny vocabularies make long shared prefixes
    ids = [draw(st.lists(st.integers(0, vocab - 1), min_size=0, max_size=7)) for _ in range(B)]
    adv = draw(st.lists(st.floats(-2, 2, allow_nan=False), min_size=B, max_size=B))
    omega = [draw(st.lists(st.floats(0, 1, allow_nan=False), min_size=len(r), max_size=len(r))) for r in ids]
    holes = [draw(st.lists(st.booleans(), min_size=len(r), max_size=len(r))) for r in ids]
    return ids, adv, omega, G, holes


def check_against_reference(rep, ids, adv, omega, G, valid=None, padded=True):
    tok, lens, groups = reference(ids, adv, omega, G, valid)
    for i, r in enumerate(ids):
        for t in range(len(r)):
            at = (i, t) if padded else (rep.cu_seqlens[i] + t,)
            if t >= lens[i]:
                assert rep.node[at] == -1 and rep.count[at] == 0
                continue
            c, W, bias, ab = tok[(i, t)]
            assert rep.count[at] == c
            np.testing.assert_allclose([rep.coef[at], rep.bias[at], rep.abs_sum[at]], [W, bias, ab], atol=1e-12)
    for g, (plen, W, bias, ab) in enumerate(groups):
        assert rep.prefix_len[g] == plen
        np.testing.assert_allclose(
            [rep.prefix_coef[g], rep.prefix_bias[g], rep.prefix_abs[g]], [W, bias, ab], atol=1e-12
        )


@given(batches())
def test_padded_packed_and_ragged_match_the_reference(batch):
    ids, adv, omega, G, _ = batch
    ragged = gd.prefix_bias_from_weights(ids, adv, omega, G)
    check_against_reference(ragged, ids, adv, omega, G, padded=False)
    ids_p, mask = pad(ids)
    om_p, _ = pad(omega, 0.0, np.float64)
    padded = gd.prefix_bias_from_weights(ids_p, np.array(adv), om_p, G, mask=mask)
    check_against_reference(padded, ids, adv, omega, G)
    # node ids: equal ids within a group ⇔ equal prefix
    for i in range(len(ids)):
        for j in range(len(ids)):
            if i // G != j // G or i == j:
                continue
            for t in range(min(len(ids[i]), len(ids[j]))):
                assert (padded.node[i, t] == padded.node[j, t]) == (ids[i][: t + 1] == ids[j][: t + 1])


@given(batches())
def test_masked_tokens_inside_a_completion_are_context_with_weight_zero(batch):
    ids, adv, omega, G, holes = batch
    ids_p, _ = pad(ids)
    om_p, _ = pad(omega, np.nan, np.float64)  # padding may hold anything, NaN included
    mask = np.zeros(ids_p.shape, dtype=bool)
    for i, h in enumerate(holes):
        mask[i, : len(h)] = h
    rep = gd.prefix_bias_from_weights(ids_p, np.array(adv), om_p, G, mask=mask)
    check_against_reference(rep, ids, adv, omega, G, valid=[list(h) for h in holes])


@given(st.integers(2, 8), st.integers(1, 6), st.data())
def test_uniform_weights_on_a_whole_group_prefix_give_zero_and_bias_is_G_cov(G, k, data):
    rewards = np.array(data.draw(st.lists(st.floats(0, 1), min_size=G, max_size=G)))
    A = rewards - rewards.mean()
    ids = [[1] * k + [10 + i] for i in range(G)]
    uniform = gd.prefix_bias_from_weights(ids, A, [[0.3] * (k + 1)] * G, G)
    np.testing.assert_allclose(uniform.bias[:k], 0.0, atol=1e-15)
    np.testing.assert_allclose(uniform.prefix_bias, 0.0, atol=1e-15)
    w = np.array(data.draw(st.lists(st.floats(0, 2), min_size=G, max_size=G)))
    rep = gd.prefix_bias_from_weights(ids, A, [[wi] * (k + 1) for wi in w], G)
    cov_pop = np.mean((w - w.mean()) * (A - A.mean()))
    np.testing.assert_allclose(rep.coef[:k], G * cov_pop, atol=1e-12)
    np.testing.assert_allclose(rep.bias[:k], G * cov_pop, atol=1e-12)
    np.testing.assert_allclose(rep.prefix_bias[0], k * G * cov_pop, atol=1e-11)


def test_float32_and_torch_inputs_are_read_in_place():
    torch = pytest.importorskip("torch")
    ids = torch.tensor([[1, 2, 3], [1, 2, 4]], dtype=torch.int32)
    A = torch.tensor([0.5, -0.5], dtype=torch.float32)
    om = torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.3, 0.3]], dtype=torch.float32)
    rep = gd.prefix_bias_from_weights(ids, A, om, 2, mask=torch.ones(2, 3, dtype=torch.bool))
    np.testing.assert_allclose(rep.coef[0, :2], 0.05 - 0.15, rtol=1e-6)
    assert rep.prefix_len[0] == 2
    np.testing.assert_allclose(rep.normalized[0, 0], 0.1 / 0.2, rtol=1e-6)


def test_report_summary_dict_and_plot():
    import matplotlib

    matplotlib.use("Agg")
    L = [10, 30, 20, 40]
    rep = gd.prefix_bias_from_weights(shared_group(L), [0.5, 0.5, -0.5, -0.5], [[1 / (2 * n)] * n for n in L], 4)
    text = str(rep)
    assert "Shared-prefix bias" in text and "length" in text
    d = rep.to_dict()
    assert d["groups"] == 1 and d["prefix_bias_total"] > 0
    fig = rep.plot()
    assert len(fig.axes) == 2
    assert len(rep.per_completion("coef")[1]) == 30


# ---- bad input -----------------------------------------------------------------------------------


def test_errors():
    ids = np.zeros((4, 3), np.int64)
    om = np.ones((4, 3))
    A = np.zeros(4)
    with pytest.raises(ValueError, match="group_size: the batch of 4 completions"):
        gd.prefix_bias_from_weights(ids, A, om, 3)
    with pytest.raises(ValueError, match="advantages: expected one advantage per completion"):
        gd.prefix_bias_from_weights(ids, np.zeros(3), om, 2)
    with pytest.raises(ValueError, match=r"omega: expected shape \(4, 3\)"):
        gd.prefix_bias_from_weights(ids, A, np.ones((4, 2)), 2)
    with pytest.raises(TypeError, match="ids: expected dtype int32, int64, got float64"):
        gd.prefix_bias_from_weights(ids.astype(np.float64), A, om, 2)
    bad = om.copy()
    bad[1, 1] = np.nan
    with pytest.raises(ValueError, match=r"omega: completion 1, token 1 is nan"):
        gd.prefix_bias_from_weights(ids, A, bad, 2)
    mask = np.ones((4, 3), bool)
    mask[1, 1:] = False
    gd.prefix_bias_from_weights(ids, A, bad, 2, mask=mask)  # NaN at a masked position is fine
    with pytest.raises(ValueError, match="advantages: element 2 is inf"):
        gd.prefix_bias_from_weights(ids, np.array([0, 0, np.inf, 0]), om, 2)
    with pytest.raises(ValueError, match="omega: completion 1 has 2 entries but ids has 3 tokens"):
        gd.prefix_bias_from_weights([[1, 2], [1, 2, 3]], [0.5, -0.5], [[1, 1], [1, 1]], 2)
    with pytest.raises(ValueError, match="omega: with ragged ids"):
        gd.prefix_bias_from_weights([[1, 2], [1, 2, 3]], [0.5, -0.5], np.ones((2, 3)), 2)
    with pytest.raises(ValueError, match="cu_seqlens: the last offset"):
        gd.prefix_bias_from_weights(np.arange(5), [0.5, -0.5], np.ones(5), 2, cu_seqlens=np.array([0, 2, 4]))
    with pytest.raises(ValueError, match="cu_seqlens: offsets must be non-decreasing"):
        gd.prefix_bias_from_weights(np.arange(5), [0.5, -0.5, 0.0], np.ones(5), 1, cu_seqlens=np.array([0, 4, 3, 5]))


def test_inputs_are_not_modified():
    ids, mask = pad([[1, 2, 3], [1, 2], [4], [4, 5]])
    om = np.random.default_rng(0).random(ids.shape)
    A = np.array([0.5, -0.5, 1.0, -1.0])
    copies = [x.copy() for x in (ids, mask, om, A)]
    gd.prefix_bias_from_weights(ids, A, om, 2, mask=mask)
    for a, b in zip((ids, mask, om, A), copies):
        np.testing.assert_array_equal(a, b)


# ---- the convenience layer over grpokit.policy_loss --------------------------------------------


def test_prefix_bias_through_the_loss_engine_check_1a():
    """Worked check 1a end to end: GRPO-R1 weights from the real engine (paper.grpo_r1, σ in the
    advantages), r = (1, 1, 0, 0), |o| = (10, 30, 20, 40), s = 1: W on a shared token = 0.01458333."""
    L = np.array([10, 30, 20, 40])
    T = L.max()
    ids = np.full((4, T), 7)
    ids[:, 1:] = np.arange(4)[:, None] + 10  # token 0 shared by the whole group, then distinct
    mask = np.arange(T) < L[:, None]
    r = np.array([1.0, 1.0, 0.0, 0.0])
    adv = grpokit.advantages(r, group_size=4, std="population")  # A/σ: Table 1's α_i^S · A_i
    logp = np.full((4, T), -1.0)
    batch = dict(completion_ids=ids, completion_mask=mask, logp=logp, old_logp=logp, advantages=adv, group_size=4)
    rep = gd.prefix_bias(batch, "paper.grpo_r1", beta=0.0)
    assert rep.group["prefix_len"][0] == 1
    assert rep.group["prefix_coef"][0] == pytest.approx(0.01458333, abs=1e-8)
    assert rep.group["prefix_bias"][0] == pytest.approx(0.01458333, abs=1e-8)  # ω̄ Σ A = 0 here


def test_prefix_bias_passes_the_loss_weights(monkeypatch):
    calls = {}

    class Result:
        weights = np.array([[0.05, 0.05, 0.0], [0.0125, 0.0125, 0.0125]])

    def fake_policy_loss(
        logp, old_logp, advantages, mask=None, *, spec, ref_logp=None, cu_seqlens=None, return_weights=False, **kw
    ):
        calls.update(spec=spec, return_weights=return_weights, kw=kw, mask=mask)
        return Result()

    monkeypatch.setattr(grpokit._loss, "policy_loss", fake_policy_loss)
    batch = {
        "completion_ids": np.array([[1, 2, 0], [1, 2, 3]]),
        "completion_mask": np.array([[1, 1, 0], [1, 1, 1]], dtype=bool),
        "logp": np.zeros((2, 3)),
        "old_logp": np.zeros((2, 3)),
        "advantages": np.array([0.5, -0.5]),
        "group_size": 2,
    }
    rep = gd.prefix_bias(batch, "paper.grpo_r1", epsilon=0.3)
    assert calls["spec"] == "paper.grpo_r1" and calls["return_weights"] and calls["kw"] == {"epsilon": 0.3}
    gd.prefix_bias({**batch, "keep": np.array([True, False])}, "paper.cppo")
    assert calls["kw"]["keep"].tolist() == [True, False]
    np.testing.assert_allclose(rep.coef[0, :2], 0.5 * 0.05 - 0.5 * 0.0125)
    with pytest.raises(ValueError, match="batch: missing field 'advantages'"):
        gd.prefix_bias({k: v for k, v in batch.items() if k != "advantages"})
