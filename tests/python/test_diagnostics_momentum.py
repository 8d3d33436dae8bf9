"""Momentum past the clip region (Props 3, 7): worked checks 11–13, 15, 18, 19 (docs/diagnostics.md,
Tests), and references."""

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

torch = pytest.importorskip("torch")

from grpokit import diagnostics as gd  # noqa: E402

# ---- closed forms (checks 11, 13, 18) -----------------------------------------------------------


def test_check_11_overshoot_coefficients():
    b = (0.9, 0.95)
    np.testing.assert_allclose(gd.overshoot_coefficient(None, 0, b), 0.923381, atol=1e-6)
    np.testing.assert_allclose(gd.overshoot_coefficient(None, 4, b), 0.671280, atol=1e-6)
    T = [2, 3, 5, 10, 50, 1000]
    np.testing.assert_allclose(
        [gd.overshoot_coefficient(t, 0, b) for t in T],
        [0.678648, 0.782998, 0.856344, 0.904707, 0.924880, 0.923381],
        atol=1e-6,
    )
    np.testing.assert_allclose(
        [gd.overshoot_coefficient(t, 4, b) for t in T],
        [0.329763, 0.430024, 0.532063, 0.627624, 0.676343, 0.671280],
        atol=1e-6,
    )
    np.testing.assert_allclose(gd.overshoot_coefficient(None, 0, (0.9, 0.999)), 0.900450, atol=1e-6)
    np.testing.assert_allclose(gd.overshoot_coefficient(None, 4, (0.9, 0.999)), 0.591969, atol=1e-6)
    np.testing.assert_allclose(gd.overshoot_coefficient(10, 0, (0.9, 0.999)), 0.892477, atol=1e-6)
    np.testing.assert_allclose(gd.overshoot_coefficient(None, 0, (0.9, 0.99)), 0.904534, atol=1e-6)
    np.testing.assert_allclose(gd.overshoot_coefficient(None, 4, (0.9, 0.99)), 0.605515, atol=1e-6)


def test_check_13_eps_factor():
    np.testing.assert_allclose(gd.overshoot_eps_factor(1e-3, math.sqrt(0.95) * 1e-3, 1e-8), 1.025978, atol=1e-6)
    np.testing.assert_allclose(gd.overshoot_eps_factor(1e-8, math.sqrt(0.95) * 1e-8, 1e-8), 1.012823, atol=1e-6)


def test_check_18_predicted_drift():
    np.testing.assert_allclose(
        [gd.predicted_drift(k, (0.9, 0.95)) for k in range(8)],
        [0.9234, 1.7760, 2.5633, 3.2903, 3.9616, 4.5814, 5.1538, 5.6823],
        atol=1e-4,
    )
    np.testing.assert_allclose(
        [gd.predicted_drift(k, (0.9, 0.999)) for k in range(8)],
        [0.9005, 1.7113, 2.4414, 3.0988, 3.6907, 4.2238, 4.7038, 5.1359],
        atol=1e-4,
    )
    r = 0.9 / math.sqrt(0.95)
    np.testing.assert_allclose(gd.predicted_drift(2000, (0.9, 0.95)), r / (1 - r), rtol=1e-9)  # 12.05


def test_closed_form_errors():
    with pytest.raises(ValueError, match="T: expected an integer >= 2"):
        gd.overshoot_coefficient(1, 0)
    with pytest.raises(ValueError, match="k: expected an integer >= 0"):
        gd.predicted_drift(-1)
    with pytest.raises(ValueError, match="betas: expected 0 <= beta1 < 1"):
        gd.overshoot_coefficient(5, 0, (1.0, 0.9))


# ---- Adam runs through the tracker (checks 12, 19) ---------------------------------------------


def constant_then_zero(T, g, eps, betas, extra=6):
    """torch Adam: constant gradient g for T−1 steps, then 0; the tracker records every step."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=1e-3, betas=betas, eps=eps)
    tracker = gd.MomentumTracker(opt)
    for t in range(1, T + extra):
        p.grad = torch.full((1,), g if t < T else 0.0, dtype=torch.float64)
        tracker.step()
        opt.step()
    return tracker.report()


@pytest.mark.parametrize(
    "betas,T,expected",
    [
        ((0.9, 0.95), 20, [0.922853, 0.852173, 0.787302, 0.727671, 0.672788, 0.622218]),
        ((0.9, 0.999), 20, [0.909409, None, None, None, None, 0.568891]),
        ((0.9, 0.95), 3, [0.782998, None, None, None, None, 0.384203]),
    ],
)
def test_check_12_simulated_overshoot_equals_eq36(betas, T, expected):
    rep = constant_then_zero(T, 1e-3, 0.0, betas)
    assert rep.onset == T - 1  # the record of Adam step T is the first with a zero gradient
    assert rep.records[T - 1].adam_step == T
    measured = rep.measured_C
    for k, want in enumerate(expected):
        if want is not None:
            np.testing.assert_allclose(measured[k], want, atol=1e-6)
    np.testing.assert_allclose(measured, rep.predicted_C, atol=1e-6)  # ϵ = 0: Eq. 36 is exact
    for r in rep.records[T - 1 :]:
        assert r.stale_share == 1.0 and r.fresh_norm == 0.0


@pytest.mark.parametrize(
    "g,eps,k0,k4",
    [(1e-3, 1e-8, 0.922853, 0.672786), (1e-8, 1e-8, 0.904134, 0.608240), (1e-9, 1e-8, 0.889374, 0.563970)],
)
def test_check_19_eps_dampens_the_overshoot(g, eps, k0, k4):
    rep = constant_then_zero(20, g, eps, (0.9, 0.95))
    np.testing.assert_allclose(rep.measured_C[[0, 4]], [k0, k4], atol=1e-6)


# ---- check 15: the one-token toy ----------------------------------------------------------------


def toy(optimizer_factory, mu=12, track=True):
    z = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = optimizer_factory([z])
    tracker = gd.MomentumTracker(opt, epsilon=0.2, mu=mu) if track else None
    A = torch.ones(1, dtype=torch.float64)
    ratios, zs = [], [0.0]
    for _ in range(mu):
        s = torch.sigmoid(z) / 0.5
        ratios.append(float(s.detach()))
        loss = -torch.min(s * A, torch.clamp(s, 0.8, 1.2) * A).sum()
        opt.zero_grad()
        loss.backward()
        if tracker is not None:
            tracker.step(s.detach().reshape(1, 1), A)
        opt.step()
        zs.append(float(z.detach()))
    final = float(torch.sigmoid(z.detach()) / 0.5)
    return ratios, np.diff(zs), final, tracker


def test_check_15_adam_carries_the_ratio_past_the_bound():
    ratios, steps, final, tracker = toy(lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.9, 0.95), eps=1e-8))
    rep = tracker.report()
    np.testing.assert_allclose(ratios[9], 1.2212, atol=5e-5)  # ratio before inner step 10: past 1.2
    np.testing.assert_allclose(steps[9:], [0.04515, 0.04102, 0.03740], atol=5e-6)
    np.testing.assert_allclose(final, 1.2791, atol=5e-5)
    # the tracker sees it: in ℛ_clip from k = 9 on, zero current gradient, all-momentum steps
    fractions = rep.column("clip_fraction")
    assert np.all(fractions[:9] == 0) and np.all(fractions[9:] == 1)
    assert rep.onset == 9 and rep.pure_momentum_steps == [9, 10, 11]
    np.testing.assert_allclose(rep.column("stale_share")[9:], 1.0)
    # the excess of the clipped token keeps growing although its gradient is 0
    assert [r.clip.n_growing for r in rep.records[10:]] == [1, 1]
    # the first post-clip step over the last pre-clip step: 0.04515 / 0.04990 = 0.905 ≈ Eq. 32 at T = 10
    np.testing.assert_allclose(rep.records[9].overshoot, 0.905, atol=1e-3)
    np.testing.assert_allclose(rep.records[9].finite_T, 0.9047, atol=1e-4)
    np.testing.assert_allclose(rep.records[9].overshoot, steps[9] / steps[8], rtol=1e-9)
    np.testing.assert_allclose(rep.column("displacement"), np.abs(steps), rtol=1e-9)
    # predicted drift at k = 9 for the two remaining steps: (C_{11,0} + C_{11,1}) × this step
    np.testing.assert_allclose(
        rep.records[9].drift_if_clipped,
        (gd.overshoot_coefficient(11, 0, (0.9, 0.95)) + gd.overshoot_coefficient(11, 1, (0.9, 0.95))) * steps[9],
        rtol=1e-9,
    )
    assert "pure-momentum steps from k = 9" in str(rep)


def test_check_15_sgd_stops_at_the_bound():
    ratios, steps, final, _ = toy(lambda p: torch.optim.SGD(p, lr=0.2), track=False)
    np.testing.assert_allclose(final, 1.2415, atol=5e-5)
    assert np.all(steps[6:] == 0.0)  # frozen from step 6: no momentum, no motion once clipped
    ex = gd.clip_region(np.array([[final]]), [1.0], epsilon=0.2)
    np.testing.assert_allclose(ex.excess[0, 0], 0.0415, atol=5e-5)


# ---- the tracker against a NumPy reference on a real model --------------------------------------


def test_tracker_predicts_the_actual_adamw_step_and_splits_it():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 3), torch.nn.Tanh(), torch.nn.Linear(3, 2)).double()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.8, 0.9), eps=1e-6, weight_decay=0.1)
    tracker = gd.MomentumTracker(opt, named=model)
    x = torch.randn(5, 4, dtype=torch.float64)
    for k in range(4):
        opt.zero_grad()
        (model(x) ** 2).sum().backward()
        params = list(model.parameters())
        before = [p.detach().clone().double() for p in params]
        prev = [
            (
                opt.state[p]["exp_avg"].clone().double(),
                opt.state[p]["exp_avg_sq"].clone().double(),
                float(opt.state[p]["step"]),
            )
            if p in opt.state
            else None
            for p in params
        ]
        rec = tracker.step()
        opt.step()
        # reference split, from the definitions
        stale2 = fresh2 = sf = prev2 = wd2 = 0.0
        for p, b, pv in zip(params, before, prev):
            g = p.grad.double()
            m, v, t = pv if pv is not None else (torch.zeros_like(g), torch.zeros_like(g), 0.0)
            t1 = t + 1
            vt = 0.9 * v + 0.1 * g * g
            d = (1 - 0.8**t1) * (torch.sqrt(vt / (1 - 0.9**t1)) + 1e-6)
            us, uf = 0.8 * m / d, 0.2 * g / d
            stale2 += float((us**2).sum())
            fresh2 += float((uf**2).sum())
            sf += float((us * uf).sum())
            if t >= 1:
                prev2 += float(((m / (1 - 0.8**t)) / (torch.sqrt(v / (1 - 0.9**t)) + 1e-6)).pow(2).sum())
            wd2 += float(((1e-2 * 0.1 * b) ** 2).sum())
            # the predicted step is what AdamW applied
            actual = (p.detach().double() - b * (1 - 1e-2 * 0.1)) / -1e-2
            np.testing.assert_allclose(actual.numpy(), (us + uf).numpy(), rtol=1e-9, atol=1e-12)
        u2 = stale2 + fresh2 + 2 * sf
        np.testing.assert_allclose(rec.u_norm, math.sqrt(u2), rtol=1e-9)
        np.testing.assert_allclose(rec.stale_share, (stale2 + sf) / u2, rtol=1e-9, atol=1e-15)
        np.testing.assert_allclose(rec.weight_decay, math.sqrt(wd2), rtol=1e-6)
        if k == 0:
            assert rec.u_prev_norm == 0.0 and math.isnan(rec.overshoot) and rec.stale_share == 0.0
        else:
            np.testing.assert_allclose(rec.u_prev_norm, math.sqrt(prev2), rtol=1e-6)
    assert len(tracker.report().records) == 4
    tracker.reset()
    assert tracker.records == []


# ---- clip region against a reference -----------------------------------------------------------


@given(st.data())
def test_clip_region_matches_the_definition(data):
    B = data.draw(st.integers(1, 4))
    T = data.draw(st.integers(1, 5))
    rng = np.random.default_rng(data.draw(st.integers(0, 1000)))
    r = rng.uniform(0.5, 1.5, size=(B, T))
    A = rng.choice([-1.0, 0.0, 0.7], size=B)
    mask = rng.random((B, T)) > 0.3
    lo, hi = 0.2, 0.28
    prev = np.abs(rng.normal(0, 0.1, size=(B, T))) * (rng.random((B, T)) > 0.5)
    res = gd.clip_region(r, A, mask=mask, epsilon=lo, epsilon_high=hi, prev_excess=prev)
    ref = np.where(A[:, None] > 0, r - (1 + hi), np.where(A[:, None] < 0, (1 - lo) - r, 0.0))
    ref = np.where(mask & (ref > 0), ref, 0.0)
    np.testing.assert_allclose(res.excess, ref, atol=1e-15)
    assert res.n_valid == mask.sum() and res.n_in_region == (ref > 0).sum()
    assert res.n_in_region_pos == ((ref > 0) & (A[:, None] > 0)).sum()
    both = (ref > 0) & (prev > 0)
    assert res.n_in_both == both.sum() and res.n_growing == (both & (ref > prev)).sum()
    if both.any():
        np.testing.assert_allclose(res.mean_growth, (ref - prev)[both].mean(), atol=1e-12)
    seq = gd.clip_region(r[:, 0], A, epsilon=lo, epsilon_high=hi)  # sequence level: (B,)
    assert seq.excess.shape == (B,)


# ---- momentum look-ahead -------------------------------------------------------------------------


def test_lookahead_equals_an_optimizer_step_with_zero_gradient():
    torch.manual_seed(2)
    model = torch.nn.Linear(3, 5)
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randn(4, 3)
    tokens = torch.randint(0, 5, (4,))

    def logp_fn(forward):
        return torch.log_softmax(forward(x), -1).gather(-1, tokens[:, None]).T  # (1, 4): one completion

    with torch.no_grad():
        old = logp_fn(model)
    A = torch.tensor([1.0])
    for _ in range(6):  # push the ratios up, past 1.2
        opt.zero_grad()
        (-(logp_fn(model) - old).exp().sum()).backward()
        opt.step()
    rep = gd.momentum_lookahead(model, opt, logp_fn, old, A, epsilon=0.2, include_weight_decay=True)
    # reference: a real optimizer step with a zero gradient on a copy is the momentum-only step
    import copy

    m2 = copy.deepcopy(model)
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    o2.load_state_dict(opt.state_dict())
    for p in m2.parameters():
        p.grad = torch.zeros_like(p)
    o2.step()
    with torch.no_grad():
        ratio_next = (logp_fn(m2) - old).exp().numpy()
        ratio_now = (logp_fn(model) - old).exp().numpy()
    np.testing.assert_allclose(rep.ratio_now, ratio_now, rtol=1e-6)
    np.testing.assert_allclose(rep.ratio_next, ratio_next, rtol=1e-5)
    assert rep.n_clipped == int((ratio_now > 1.2).sum()) and rep.n_clipped > 0
    assert rep.n_moving_deeper == int(((ratio_now > 1.2) & (ratio_next > ratio_now)).sum())
    assert "momentum alone moves" in str(rep)
    before = [p.detach().clone() for p in model.parameters()]
    gd.momentum_lookahead(model, opt, logp_fn, old, A)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def test_report_plot():
    import matplotlib

    matplotlib.use("Agg")
    _, _, _, tracker = toy(lambda p: torch.optim.Adam(p, lr=0.05, betas=(0.9, 0.95)))
    rep = tracker.report()
    assert len(rep.plot().axes) == 2
    d = rep.to_dict()
    assert d["clip_fraction_last"] == 1.0 and d["pure_momentum_steps"] == 3
    both = gd.Combined(rep, rep)
    assert len(both.plot().axes) == 4 and "momentum/inner_steps" in both.to_dict()


def test_errors():
    p = torch.nn.Parameter(torch.zeros(2))
    opt = torch.optim.Adam([p])
    tracker = gd.MomentumTracker(opt)
    with pytest.raises(ValueError, match="no parameter has a gradient"):
        tracker.step()
    p.grad = torch.ones(2)
    with pytest.raises(ValueError, match="advantages: required with ratios"):
        tracker.step(np.ones((1, 2)))
    with pytest.raises(ValueError, match="no inner step recorded"):
        tracker.report()
    with pytest.raises(TypeError, match="SGD has no Adam hyper-parameters"):
        gd.MomentumTracker(torch.optim.SGD([p], lr=0.1))
    with pytest.raises(NotImplementedError, match="maximize"):
        gd.MomentumTracker(torch.optim.Adam([p], maximize=True))
    with pytest.raises(ValueError, match="mu: expected an integer >= 1"):
        gd.MomentumTracker(opt, mu=0)
    with pytest.raises(ValueError, match="advantages: expected one advantage per completion"):
        gd.clip_region(np.ones((3, 2)), [1.0, 1.0])
    with pytest.raises(ValueError, match="epsilon: expected finite clip widths >= 0"):
        gd.clip_region(np.ones((1, 2)), [1.0], epsilon=-0.1)
    with pytest.raises(ValueError, match=r"ratios: element \(0, 1\) is inf"):
        gd.clip_region(np.array([[1.0, np.inf]]), [1.0])
    with pytest.raises(ValueError, match="mask: expected shape"):
        gd.clip_region(np.ones((1, 2)), [1.0], mask=np.ones((1, 3), bool))
