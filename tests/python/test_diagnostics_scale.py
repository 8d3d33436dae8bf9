"""Reward scale under Adam (Props 2, 5, 6): worked checks 7–10, 16 (docs/diagnostics.md, Tests), against
torch.optim state."""

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import grpokit  # noqa: E402
from grpokit import diagnostics as gd  # noqa: E402


class Scalar(torch.nn.Module):
    def __init__(self, init):
        super().__init__()
        self.theta = torch.nn.Parameter(torch.tensor(init, dtype=torch.float64))


def linear_loss_fn(grads, reg=None):
    """loss(model, φ) whose gradient at call n is φ·g_n − g_R: the worked checks' gradient sequences
    (Eq. 21: g = g_A − g_R, g_R = β∇R, unscaled by φ)."""
    calls = {"n": 0}
    seq = torch.tensor(grads, dtype=torch.float64)

    def loss_fn(model, phi):
        g = seq[calls["n"] % len(seq)]
        calls["n"] += 1
        loss = phi * (g * model.theta).sum()
        if reg is not None:
            loss = loss - (torch.tensor(reg, dtype=torch.float64) * model.theta).sum()
        return loss

    return loss_fn


CHECK8_SEQ = [3, -1, 2, 2.5, -0.5, 1]


@pytest.mark.parametrize(
    "eps,scale,expected",
    [
        (1e-8, 1e-3, (0.999961, 1.000004)),
        (1e-8, 1e-6, (0.962219, 1.003946)),
        (1e-5, 1e-3, (0.962219, 1.003946)),
        (1e-5, 1e-6, (0.121060, 3.688020)),
    ],
)
def test_check_8_replay_against_the_worked_values(eps, scale, expected):
    model = Scalar(0.0)
    opt = torch.optim.Adam(model.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=eps)
    for phi, want in zip((0.1, 10.0), expected):
        rep = gd.reward_scale_replay(model, opt, linear_loss_fn([g * scale for g in CHECK8_SEQ]), phi=phi, steps=6)
        np.testing.assert_allclose(rep.measured_ratio, want, atol=2e-6)
        # β = 0: the prediction from ρ is exact, step by step (Prop. 6; docs/diagnostics.md §2)
        np.testing.assert_allclose(rep.predicted_ratio, want, atol=2e-6)
        assert rep.prediction_error < 1e-9
    assert float(model.theta.detach()) == 0.0 and not opt.state  # the originals are untouched


def test_check_8b_8c_weight_decay_and_sign():
    model = Scalar(0.5)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-6, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.1)
    rep = gd.reward_scale_replay(model, opt, linear_loss_fn([g * 1e-3 for g in CHECK8_SEQ]), phi=10.0, steps=6)
    np.testing.assert_allclose(0.5 + rep.displacement_1[0], 0.499995826215, atol=2e-12)
    np.testing.assert_allclose(0.5 + rep.displacement_phi[0], 0.499995826230, atol=2e-12)
    plain = Scalar(0.0)
    opt = torch.optim.Adam(plain.parameters(), lr=1e-6, eps=1e-8)
    rep = gd.reward_scale_replay(plain, opt, linear_loss_fn([g * 1e-3 for g in CHECK8_SEQ]), phi=10.0, steps=6)
    np.testing.assert_allclose(rep.displacement_1[0], -3.873771e-6, rtol=1e-6)  # 8c: φ = −1 would flip it
    with pytest.raises(ValueError, match="phi: expected a reward scale > 0"):
        gd.reward_scale_replay(plain, opt, linear_loss_fn([1.0]), phi=-1.0)


def single_coordinate_state(sqrt_vhat, eps, beta2=0.999):
    """An Adam state at step 1 whose √v̂ is the given value (m of the same sign)."""
    p = torch.nn.Parameter(torch.zeros(1, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.9, beta2), eps=eps)
    p.grad = torch.ones(1, dtype=torch.float64) * sqrt_vhat
    opt.step()
    st = opt.state[p]
    np.testing.assert_allclose(np.sqrt(float(st["exp_avg_sq"]) / (1 - beta2)), sqrt_vhat, rtol=1e-12)
    return opt


@pytest.mark.parametrize(
    "sqrt_vhat,eps,expected",
    [
        (1e-3, 1e-8, (0.9999, 1.0000)),
        (1e-6, 1e-8, (0.9182, 1.0090)),
        (1e-6, 1e-5, (0.1089, 5.5000)),
        (1e-4, 1e-5, (0.5500, 1.0891)),
    ],
)
def test_check_9_predicted_step_ratio(sqrt_vhat, eps, expected):
    rep = gd.reward_scale(single_coordinate_state(sqrt_vhat, eps), phis=(0.1, 10.0))
    np.testing.assert_allclose([rep.predicted_step_ratio[0.1], rep.predicted_step_ratio[10.0]], expected, atol=5e-5)


@pytest.mark.parametrize("rho,expected", [(1e-5, 0.000010), (1e-2, 0.009901), (10, 0.909091), (0.1, 0.090909)])
def test_check_16_elasticity(rho, expected):
    np.testing.assert_allclose(gd.reward_scale_elasticity(rho), expected, atol=5e-7)
    rep = gd.reward_scale(single_coordinate_state(1e-3, 1e-3 * rho))
    np.testing.assert_allclose(rep.elasticity, expected, atol=5e-7)
    # the numeric derivative of the predicted step at φ = 1 is the closed form
    h = 1e-4
    up = gd.reward_scale(single_coordinate_state(1e-3, 1e-3 * rho), phis=(np.exp(h), np.exp(-h)))
    num = (np.log(up.predicted_step_ratio[np.exp(h)]) - np.log(up.predicted_step_ratio[np.exp(-h)])) / (2 * h)
    np.testing.assert_allclose(num, expected, atol=1e-6)


def test_check_10_regulariser_breaks_invariance():
    gA = [[1e-3, -2e-3], [-0.5e-3, 1e-3], [2e-3, 0.2e-3]]
    expected_plain = {1.0: (1.9244, -1.4144), 10.0: (1.9244, -1.4144), 0.1: (1.9243, -1.4144)}
    expected_reg = {1.0: (0.9771, -1.9781), 10.0: (1.8420, -1.4800), 0.1: (-2.9581, -2.9095)}
    lr = 1e-3
    for reg, expected in ((None, expected_plain), ([0.5e-3, 0.5e-3], expected_reg)):
        for phi, want in expected.items():
            model = Scalar([0.0, 0.0])
            opt = torch.optim.Adam(model.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)
            rep = gd.reward_scale_replay(model, opt, linear_loss_fn(gA, reg), phi=phi, steps=3)
            np.testing.assert_allclose(-rep.displacement_phi / lr, want, atol=6e-5)
            if reg is None:
                assert rep.prediction_error < 1e-9
            elif phi != 1.0:
                assert rep.prediction_error > 0.05  # the ρ-only prediction misses the KL term


def test_check_7_sigma_in_alpha_cancels_the_scale():
    r = np.array([0.2, 0.9, 0.4, 0.7])
    L = np.array([10, 20, 30, 40])
    expected = [-0.032497, 0.016248, -0.004642, 0.003482]
    for phi in (1.0, 7.5):
        A = grpokit.advantages(phi * r, 4)
        np.testing.assert_allclose(A, phi * np.array([-0.35, 0.35, -0.15, 0.15]), atol=1e-12)
        A_sigma = grpokit.advantages(phi * r, 4, std="population")  # σ lives in the advantages
        np.testing.assert_allclose(A_sigma / (4 * L), expected, atol=5e-7)


def trained_adamw(eps=1e-8, steps=3):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(5, 4), torch.nn.Tanh(), torch.nn.Linear(4, 3))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2, betas=(0.9, 0.95), eps=eps, weight_decay=0.01)
    x = torch.randn(7, 5)
    for _ in range(steps):
        opt.zero_grad()
        (model(x) ** 2).mean().backward()
        opt.step()
    return model, opt


def test_reward_scale_matches_a_numpy_reference_of_the_state():
    model, opt = trained_adamw(eps=1e-3)
    rep = gd.reward_scale(opt, named=model, rho_threshold=0.01)
    b1, b2 = opt.param_groups[0]["betas"]
    eps = opt.param_groups[0]["eps"]
    rho, u = [], []
    for p in model.parameters():
        st = opt.state[p]
        t = float(st["step"])
        m = st["exp_avg"].double().numpy().ravel() / (1 - b1**t)
        v = st["exp_avg_sq"].double().numpy().ravel() / (1 - b2**t)
        rho.append(eps / np.sqrt(v))
        u.append(m / (np.sqrt(v) + eps))
    rho, u = np.concatenate(rho), np.concatenate(u)
    e = rho / (1 + rho)
    assert rep.n == rho.size
    np.testing.assert_allclose(rep.frac_rho_above, np.mean(rho > 0.01))
    np.testing.assert_allclose(rep.elasticity, np.sum(np.abs(u) * e) / np.sum(np.abs(u)), rtol=1e-6)
    np.testing.assert_allclose(rep.mean_elasticity, e.mean(), rtol=1e-6)
    np.testing.assert_allclose(rep.max_rho, rho.max(), rtol=1e-6)
    for phi in (0.1, 10.0):
        scaled = np.abs(u) * (1 + rho) / (1 + rho / phi)
        np.testing.assert_allclose(rep.predicted_step_ratio[phi], scaled.sum() / np.abs(u).sum(), rtol=1e-6)
    assert rep.log10_rho_hist.sum() == rho.size
    per = gd.rho_per_coordinate(opt, named=model)
    flat_rho = np.concatenate([per[n][0].numpy().ravel() for n, _ in model.named_parameters()])
    flat_e = np.concatenate([per[n][1].numpy().ravel() for n, _ in model.named_parameters()])
    np.testing.assert_allclose(flat_rho, rho, rtol=1e-6)
    np.testing.assert_allclose(flat_e, e, rtol=1e-6)
    assert per["0.weight"][0].shape == model[0].weight.shape
    assert [r["name"] for r in rep.per_tensor] == [n for n, _ in model.named_parameters()]
    assert "verdict: sensitive" in str(rep)


def test_verdicts_and_regulariser_share():
    model, opt = trained_adamw()
    assert "invariant (Prop. 2" in gd.reward_scale(opt).verdict
    assert "cancels before the optimizer" in gd.reward_scale(opt, sigma_in_alpha=True).verdict
    x = torch.randn(4, 5)
    out = model(x)
    adv_loss, reg_loss = out.sum(), 0.5 * (out**2).sum()
    share = gd.regulariser_share(model, adv_loss, reg_loss)
    ga = torch.autograd.grad(adv_loss, list(model.parameters()), retain_graph=True)
    gr = torch.autograd.grad(reg_loss, list(model.parameters()), retain_graph=True)
    na = torch.sqrt(sum((g.double() ** 2).sum() for g in ga))
    nr = torch.sqrt(sum((g.double() ** 2).sum() for g in gr))
    np.testing.assert_allclose(share["share"], float(nr / na), rtol=1e-10)
    rep = gd.reward_scale(opt, regulariser_share=share["share"])
    assert "balance between reward and regulariser" in rep.verdict


def test_report_plot_and_dict():
    import matplotlib

    matplotlib.use("Agg")
    model, opt = trained_adamw()
    rep = gd.reward_scale(opt, named=model)
    assert set(rep.to_dict()) >= {"frac_rho_above", "elasticity", "step_ratio_phi_10"}
    assert len(rep.plot().axes) == 2
    replay = gd.reward_scale_replay(model, opt, lambda m, phi: phi * m(torch.ones(2, 5)).sum(), phi=3.0)
    assert "rewards × 3" in str(replay)
    assert len(replay.plot().axes) == 1


def test_errors():
    p = torch.nn.Parameter(torch.zeros(3))
    with pytest.raises(TypeError, match="SGD has no Adam hyper-parameters"):
        gd.reward_scale(torch.optim.SGD([p], lr=0.1))
    with pytest.raises(ValueError, match="holds no Adam state yet"):
        gd.reward_scale(torch.optim.Adam([p]))
    with pytest.raises(NotImplementedError, match="amsgrad"):
        gd.reward_scale(torch.optim.Adam([p], amsgrad=True))
    with pytest.raises(TypeError, match="expected a torch.optim optimizer"):
        gd.reward_scale(object())
    opt = single_coordinate_state(1e-3, 1e-8)
    with pytest.raises(ValueError, match="phis: reward scales must be > 0"):
        gd.reward_scale(opt, phis=(0.0,))
    with pytest.raises(ValueError, match="steps: expected an integer >= 1"):
        gd.reward_scale_replay(Scalar(0.0), torch.optim.Adam(Scalar(0.0).parameters()), linear_loss_fn([1.0]), steps=0)


def test_optimizer_state_is_read_in_place_and_not_modified():
    from grpokit.diagnostics import _optim

    model, opt = trained_adamw()
    for s in _optim.param_states(opt):
        assert s.exp_avg_sq.data_ptr() == opt.state[s.param]["exp_avg_sq"].data_ptr()  # zero-copy
        assert s.exp_avg.data_ptr() == opt.state[s.param]["exp_avg"].data_ptr()
    snapshot = {p: {k: v.clone() for k, v in opt.state[p].items()} for p in model.parameters()}
    gd.reward_scale(opt)
    for p in model.parameters():
        for k, v in snapshot[p].items():
            assert torch.equal(opt.state[p][k], v)


def test_large_tensors_take_the_chunked_parallel_path_with_the_same_results():
    torch.manual_seed(3)
    n = 200_003  # several chunks of 2^15, not a multiple
    p = torch.nn.Parameter(torch.zeros(n, dtype=torch.float64))
    opt = torch.optim.Adam([p], lr=1e-3, betas=(0.9, 0.99), eps=1e-6)
    for _ in range(2):
        p.grad = torch.randn(n, dtype=torch.float64) * torch.logspace(-9, -3, n, dtype=torch.float64)
        opt.step()
    st = opt.state[p]
    t = float(st["step"])
    m = st["exp_avg"].numpy() / (1 - 0.9**t)
    sv = np.sqrt(st["exp_avg_sq"].numpy() / (1 - 0.99**t))
    rho = 1e-6 / sv
    u = m / (sv + 1e-6)
    rep = gd.reward_scale(opt, phis=(3.0,))
    np.testing.assert_allclose(rep.frac_rho_above, np.mean(rho > 0.01))
    np.testing.assert_allclose(rep.elasticity, np.sum(np.abs(u) * rho / (1 + rho)) / np.sum(np.abs(u)), rtol=1e-10)
    np.testing.assert_allclose(
        rep.predicted_step_ratio[3.0], np.sum(np.abs(3 * m / (3 * sv + 1e-6))) / np.sum(np.abs(u)), rtol=1e-10
    )
    assert rep.log10_rho_hist.sum() == n
    again = gd.reward_scale(opt, phis=(3.0,))
    assert again.elasticity == rep.elasticity  # deterministic reductions
    # the tracker's split on the same state
    g = torch.randn(n, dtype=torch.float64) * 1e-4
    p.grad = g
    rec = gd.MomentumTracker(opt).step()
    vt = 0.99 * st["exp_avg_sq"].numpy() + 0.01 * g.numpy() ** 2
    d = (1 - 0.9 ** (t + 1)) * (np.sqrt(vt / (1 - 0.99 ** (t + 1))) + 1e-6)
    ut = (0.9 * st["exp_avg"].numpy() + 0.1 * g.numpy()) / d
    np.testing.assert_allclose(rec.u_norm, np.linalg.norm(ut), rtol=1e-10)
    np.testing.assert_allclose(rec.u_prev_norm, np.linalg.norm(u), rtol=1e-10)
    p.grad = g.clone()
    p.grad[150_000] = float("nan")
    with pytest.raises(ValueError, match="grad: element 150000 is nan"):
        gd.MomentumTracker(opt).step()
