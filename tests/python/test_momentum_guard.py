"""grpokit.optim.MomentumGuard: the look-ahead's update is Adam's, its prediction is first-order exact,
the guard never enlarges a step, is bitwise inert when off, keeps its state, and on the paper's
one-token toy (hidden-biases notes, check 15) stops the ratio at the bound."""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from grpokit.optim import MomentumGuard  # noqa: E402

# ---- the one-token toy: π = σ(z), π_old = ½, A = +1, ε = 0.2, μ = 12, Adam(0.05, (0.9, 0.95)) -------


class _Toy(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.z = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self):
        return self.z


OLD = torch.tensor([math.log(0.5)], dtype=torch.float64)
ADV = torch.tensor([1.0], dtype=torch.float64)


def _toy_logp(forward):
    return torch.nn.functional.logsigmoid(forward()).reshape(1)


def toy_run(mode="off", mu=12, **options):
    """The ratio after each inner step and the guard's records."""
    model = _Toy()
    opt = torch.optim.Adam(model.parameters(), lr=0.05, betas=(0.9, 0.95))
    guard = MomentumGuard(opt, mode, model=model, **options)
    guard.new_batch()
    ratios = []
    for _ in range(mu):
        opt.zero_grad()
        r = torch.exp(_toy_logp(model) - OLD)
        (-torch.min(r * ADV, r.clamp(0.8, 1.2) * ADV).sum()).backward()
        guard.step(_toy_logp, OLD, ADV)
        with torch.no_grad():
            ratios.append(float(torch.exp(_toy_logp(model) - OLD)))
    return np.array(ratios), guard


def test_toy_plain_adam_overshoots_as_the_notes_say():
    ratios, _ = toy_run("off")
    assert round(ratios[-1], 4) == 1.2791
    assert int(np.argmax(ratios >= 1.19)) == 7


def test_toy_reset_cannot_help_within_one_batch():
    plain, _ = toy_run("off")
    reset, _ = toy_run("reset")  # the batch starts from m = 0 anyway
    np.testing.assert_array_equal(reset, plain)


@pytest.mark.parametrize("predict", ["jvp", "secant"])
@pytest.mark.parametrize("margin", [0.0, 0.01])
def test_toy_lookahead_stops_at_the_bound(predict, margin):
    plain, _ = toy_run("off")
    ratios, guard = toy_run("lookahead", margin=margin, predict=predict)
    np.testing.assert_array_equal(ratios[:8], plain[:8])  # untouched until the bound comes near
    assert int(np.argmax(ratios >= 1.19)) == 7
    assert ratios[-1] <= 1.2 + margin + 2e-4  # the secant lands past by its own error (≈ 1e-4)
    assert ratios[-1] >= 1.19
    etas = [r.eta for r in guard.records]
    assert etas[:8] == [1.0] * 8 and all(0 <= e < 1 for e in etas[8:])
    assert guard.records[8].n_overshoot == 1 and guard.records[8].max_excess_full > margin


@pytest.mark.parametrize("predict", ["jvp", "secant"])
def test_toy_consistent_momentum_stops_the_token_once_clipped(predict):
    plain, _ = toy_run("off")
    ratios, guard = toy_run("consistent", predict=predict)
    np.testing.assert_array_equal(ratios[:9], plain[:9])  # the crossing step itself is not momentum's
    np.testing.assert_allclose(ratios[9:], plain[8], rtol=0, atol=1e-12)  # then γ = 0: it stays
    assert [r.momentum_scale for r in guard.records] == [1.0] * 9 + [0.0] + [1.0] * 2  # m = 0 after it
    assert guard.records[9].n_overshoot == 1 and guard.records[9].momentum_removed > 0


def test_toy_jvp_prediction_error_is_second_order():
    ratios, guard = toy_run("lookahead", margin=10.0)  # η = 1: the plain trajectory
    plain, _ = toy_run("off")
    np.testing.assert_array_equal(ratios, plain)
    # one more step from the end: prediction vs realised, for steps of decreasing size
    errors = []
    for lr in (0.05, 0.025, 0.0125):
        g = copy.deepcopy(guard)
        g.optimizer.param_groups[0]["lr"] = lr
        g.model.z.grad = torch.full((), -0.3, dtype=torch.float64)
        g.step(_toy_logp, OLD, ADV)
        with torch.no_grad():
            realised = float(_toy_logp(g.model) - OLD)
        errors.append(abs(float(g.predicted[0]) - realised))
    assert errors[0] < 1e-3
    assert 3.5 < errors[0] / errors[1] < 4.5 and 3.5 < errors[1] / errors[2] < 4.5


@pytest.mark.parametrize("predict", ["jvp", "secant"])
def test_toy_projection_stops_at_the_bound(predict):
    plain, _ = toy_run("off")
    ratios, guard = toy_run("project", margin=0.01, predict=predict)
    np.testing.assert_array_equal(ratios[:8], plain[:8])
    assert 1.19 <= ratios[-1] <= 1.21 + 2e-4
    assert [r.n_projected for r in guard.records[:8]] == [0] * 8
    assert all(r.n_projected == 1 for r in guard.records[8:])  # one token, one parameter: the step is its push


def test_toy_projection_holding_momentum_stops_the_clipped_token():
    """hold="momentum": the gradient's own part of a step (1 − β1 of it) never carries the token past
    bound + margin here, and once clipped its gradient is zero: momentum may not carry it either."""
    held, _ = toy_run("project", margin=0.01)
    ratios, guard = toy_run("project", margin=0.01, hold="momentum")
    np.testing.assert_allclose(ratios, held, rtol=0, atol=1e-12)
    assert [r.n_projected for r in guard.records] == [0] * 8 + [1] * 4


# ---- a tiny network -----------------------------------------------------------------------------


def _net(seed=0, vocab=5, hidden=8):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Embedding(vocab, hidden), torch.nn.Tanh(), torch.nn.Linear(hidden, vocab)
    ).double()


def _batch(seed=0, B=6, T=5, vocab=5):
    g = torch.Generator().manual_seed(seed)
    prev = torch.randint(vocab, (B, T), generator=g)
    tok = torch.randint(vocab, (B, T), generator=g)
    mask = torch.rand(B, T, generator=g) < 0.8
    adv = torch.randn(B, generator=g, dtype=torch.float64)
    return prev, tok, mask, adv


def _logp_fn(prev, tok):
    def logp(forward):
        return torch.log_softmax(forward(prev), -1).gather(-1, tok[..., None]).squeeze(-1)

    return logp


def _train(guard, model, batch, steps=4, old=None):
    """μ inner steps of the clipped loss (ε = 0.2) on one batch through the guard; returns old_logp."""
    prev, tok, mask, adv = batch
    fn = _logp_fn(prev, tok)
    if old is None:
        with torch.no_grad():
            old = fn(model)
    for _ in range(steps):
        guard.zero_grad()
        r = torch.exp(fn(model) - old)
        a = adv[:, None]
        per = -torch.min(r * a, r.clamp(0.8, 1.2) * a)
        (per * mask).sum().div(mask.sum()).backward()
        guard.step(fn, old, adv, mask)
    return old


@pytest.mark.parametrize("cls,wd", [(torch.optim.Adam, 0.0), (torch.optim.Adam, 0.1), (torch.optim.AdamW, 0.1)])
def test_pending_update_is_what_the_optimizer_applies(cls, wd):
    model = _net()
    opt = cls(model.parameters(), lr=0.03, weight_decay=wd)
    guard = MomentumGuard(opt, "off", model=model)
    batch = _batch()
    _train(guard, model, batch, steps=2)
    _, tok, mask, adv = batch
    (torch.log_softmax(model(batch[0]), -1).sum() * 0.1).backward()
    want = guard.pending_update()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    opt.step()
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach() - before[n], want[n], rtol=1e-9, atol=1e-12)


def test_network_prediction_matches_the_realised_ratios():
    model = _net(1)
    opt = torch.optim.AdamW(model.parameters(), lr=0.02, weight_decay=0.01)
    guard = MomentumGuard(opt, "lookahead", margin=10.0, model=model)  # η = 1: predict the full step
    batch = _batch(1)
    prev, tok, mask, _ = batch
    fn = _logp_fn(prev, tok)
    with torch.no_grad():
        old = fn(model)
    for _ in range(3):
        before = fn(model).detach()
        _train(guard, model, batch, steps=1, old=old)
        with torch.no_grad():
            realised = (fn(model) - old).numpy()
        change = np.abs(realised - (before - old).numpy())[mask.numpy()]
        err = np.abs(guard.predicted - realised)[mask.numpy()]
        assert change.max() > 1e-2  # the steps move the ratios
        assert err.max() < 0.05 * change.max()  # first order: the error is a small fraction of the move


def test_secant_is_exact_for_the_full_step():
    model = _net(2)
    guard = MomentumGuard(
        torch.optim.Adam(model.parameters(), lr=0.05), "lookahead", margin=10.0, predict="secant", model=model
    )
    prev, tok, mask, adv = _batch(2)
    old = _train(guard, model, (prev, tok, mask, adv), steps=2)
    with torch.no_grad():
        realised = (_logp_fn(prev, tok)(model) - old).numpy()
    assert guard.records[-1].eta == 1.0
    np.testing.assert_allclose(guard.predicted, realised, rtol=0, atol=1e-12)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("options", [{}, {"max_fraction": 0.1}, {"hold_outside": False, "margin": 0.0}])
def test_the_guard_only_shrinks_the_step(seed, options):
    model = _net(seed)
    plain_model = copy.deepcopy(model)
    guard = MomentumGuard(torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1), model=model, **options)
    plain = MomentumGuard(torch.optim.AdamW(plain_model.parameters(), lr=0.05, weight_decay=0.1), "off")
    batch = _batch(seed)
    old = _train(guard, model, batch, steps=3)
    _train(plain, plain_model, batch, steps=3)
    # one more step from the guard's state: the guarded step is η × the unguarded one
    guard.zero_grad()
    r = torch.exp(_logp_fn(batch[0], batch[1])(model) - old)
    (-(r * batch[3][:, None]) * batch[2]).sum().backward()
    free = guard.pending_update()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rec = guard.step(_logp_fn(batch[0], batch[1]), old, batch[3], batch[2])
    assert 0.0 <= rec.eta <= 1.0
    for n, p in model.named_parameters():
        torch.testing.assert_close(p.detach() - before[n], rec.eta * free[n], rtol=1e-6, atol=1e-12)
    assert any(r.eta < 1 for r in guard.records)  # these batches do trigger the guard


@pytest.mark.parametrize("seed", range(4))
def test_projection_holds_the_tokens_and_keeps_more_of_the_step(seed):
    """From the same state (after plain AdamW steps), the projected step leaves no token predicted past
    bound + margin (or further out), the prediction is the realised change to first order, no
    coordinate moves further than Adam's furthest, and more of Adam's step is kept than the
    look-ahead's one global η keeps."""
    batch = _batch(seed, B=8, T=6)
    fn = _logp_fn(batch[0], batch[1])
    model = _net(seed)
    guard = MomentumGuard(torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1), "off", model=model)
    old = _train(guard, model, batch, steps=2)
    guard.zero_grad()
    r = torch.exp(fn(model) - old)
    (-torch.min(r * batch[3][:, None], r.clamp(0.8, 1.2) * batch[3][:, None]) * batch[2]).sum().backward()
    free, r_now, m = guard.pending_update(), fn(model).detach(), batch[2].numpy()
    sign = np.sign(batch[3].numpy())[:, None] * m
    size = {}
    for mode in ("lookahead", "project"):
        g = copy.deepcopy(guard)
        g.mode = mode
        for p, q in zip(g.model.parameters(), model.parameters()):
            p.grad = q.grad.clone()  # deepcopy drops them
        before = {n: p.detach().clone() for n, p in g.model.named_parameters()}
        rec = g.step(fn, old, batch[3], batch[2])
        moved = {n: p.detach() - before[n] for n, p in g.model.named_parameters()}
        size[mode] = math.sqrt(sum(float((x**2).sum()) for x in moved.values()))
        room = g._room(g.predicted, sign, g.margin)
        assert np.all(room >= np.minimum(g._room((r_now - old).numpy(), sign, g.margin), 0.0) - 1e-9)
        with torch.no_grad():
            realised = (fn(g.model) - old).numpy()
        change = np.abs(realised - (r_now - old).numpy())[m].max()
        assert np.abs(g.predicted - realised)[m].max() <= 0.1 * change + 1e-12  # first order
        largest = [max(float(x.abs().max()) for x in d.values()) for d in (moved, free)]
        assert largest[0] <= largest[1] * (1 + 1e-9)
        assert (mode == "project") == (rec.n_projected > 0)
    full = math.sqrt(sum(float((x**2).sum()) for x in free.values()))
    assert size["lookahead"] < 0.99 * full  # the batch binds
    assert size["lookahead"] < size["project"]


@pytest.mark.parametrize("seed", range(3))
def test_projection_holding_momentum_lets_only_the_gradient_push(seed):
    """hold="momentum" from the same state: each token's predicted outward change is within
    max(room, the outward change of the step's gradient part alone), the rest as "project"."""
    batch = _batch(seed, B=8, T=6)
    fn = _logp_fn(batch[0], batch[1])
    model = _net(seed)
    guard = MomentumGuard(
        torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1), "project", hold="momentum", model=model
    )
    old = _train(guard, model, batch, steps=3)
    guard.zero_grad()
    r = torch.exp(fn(model) - old)
    (-torch.min(r * batch[3][:, None], r.clamp(0.8, 1.2) * batch[3][:, None]) * batch[2]).sum().backward()
    stale, fresh = guard.pending_update(split=True)
    r_now, (s_fresh,), sign, _ = guard._predict(fn, old, batch[3], batch[2], [fresh])
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rec = guard.step(fn, old, batch[3], batch[2])
    budget = np.maximum(np.maximum(guard._room(r_now, sign, guard.margin), 0.0), sign * s_fresh)
    assert np.all(sign * (guard.predicted - r_now) <= budget + 1e-9)
    largest = max(float((stale[n] + fresh[n]).abs().max()) for n in stale)  # Adam's furthest coordinate
    moved = max(float((p.detach() - before[n]).abs().max()) for n, p in model.named_parameters())
    assert 0.0 <= rec.eta <= 1.0 and moved <= largest * (1 + 1e-9)
    assert any(r.n_projected > 0 for r in guard.records)  # these batches do trigger it


class _Plain:
    """The optimizer itself, called as the guard is."""

    def __init__(self, opt):
        self.opt = opt

    def zero_grad(self):
        self.opt.zero_grad()

    def step(self, *args):
        self.opt.step()


@pytest.mark.parametrize("seed", range(3))
def test_consistent_momentum_removes_only_stale_momentum(seed):
    model = _net(seed)
    guard = MomentumGuard(torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1), "consistent", model=model)
    batch = _batch(seed)
    old = _train(guard, model, batch, steps=3)
    guard.zero_grad()
    r = torch.exp(_logp_fn(batch[0], batch[1])(model) - old)
    (-torch.min(r * batch[3][:, None], r.clamp(0.8, 1.2) * batch[3][:, None]) * batch[2]).sum().backward()
    stale, fresh = guard.pending_update(split=True)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    rec = guard.step(_logp_fn(batch[0], batch[1]), old, batch[3], batch[2])
    assert rec.eta == 1.0 and 0.0 <= rec.momentum_scale <= 1.0
    for n, p in model.named_parameters():
        want = fresh[n] + rec.momentum_scale * stale[n]
        torch.testing.assert_close(p.detach() - before[n], want, rtol=1e-6, atol=1e-12)
    assert any(r.momentum_scale < 1 for r in guard.records)


def test_off_and_unconstrained_guards_are_bitwise_adamw():
    batch = _batch(3)
    runs = []
    for mode, extra in (
        ("none", {}),
        ("off", {}),
        ("lookahead", {"margin": 1e6}),
        ("project", {"margin": 1e6}),
        ("project", {"margin": 1e6, "hold": "momentum"}),
    ):
        model = _net(3).float()
        opt = torch.optim.AdamW(model.parameters(), lr=0.05, weight_decay=0.1)
        step = _Plain(opt) if mode == "none" else MomentumGuard(opt, mode, model=model, **extra)
        for _ in range(2):
            _train(step, model, (batch[0], batch[1], batch[2], batch[3].float()), steps=3)
        runs.append(
            [p.detach().clone() for p in model.parameters()] + [opt.state[p]["exp_avg"] for p in model.parameters()]
        )
    for other in runs[1:]:
        for a, b in zip(runs[0], other):
            assert torch.equal(a, b)


def test_state_dict_round_trip():
    batch = _batch(4)
    model = _net(4)
    guard = MomentumGuard(
        torch.optim.Adam(model.parameters(), lr=0.05), "reset+lookahead", margin=0.02, hold="momentum", model=model
    )
    guard.new_batch()
    _train(guard, model, batch, steps=3)
    state = copy.deepcopy(guard.state_dict())
    model2 = copy.deepcopy(model)
    guard2 = MomentumGuard(torch.optim.Adam(model2.parameters(), lr=0.05), "off", model=model2)
    guard2.load_state_dict(state)
    assert (guard2.mode, guard2.margin, guard2.hold, guard2.steps, guard2.batches) == (
        "reset+lookahead",
        0.02,
        "momentum",
        3,
        1,
    )
    assert guard2.records == guard.records
    for g in (guard, guard2):
        g.new_batch()
    _train(guard, model, batch, steps=2)
    _train(guard2, model2, batch, steps=2)
    assert [r.eta for r in guard2.records] == [r.eta for r in guard.records]
    for a, b in zip(model.parameters(), model2.parameters()):
        assert torch.equal(a, b)
    with pytest.raises(ValueError, match="state: expected a MomentumGuard.state_dict"):
        guard2.load_state_dict(guard.optimizer.state_dict())
    with pytest.raises(ValueError, match="model: required with the loaded mode 'reset\\+lookahead'"):
        MomentumGuard(torch.optim.Adam(_net(4).parameters()), "off").load_state_dict(state)


@pytest.mark.parametrize("second", [False, True])
def test_reset_zeroes_the_moments(second):
    model = _net(5)
    opt = torch.optim.Adam(model.parameters(), lr=0.05)
    guard = MomentumGuard(opt, "reset", reset_second_moment=second)
    _train(guard, model, _batch(5), steps=2)
    guard.new_batch()
    for st in opt.state.values():
        assert not st["exp_avg"].any()
        assert bool(st["exp_avg_sq"].any()) is not second
        assert float(st["step"]) == (0.0 if second else 2.0)
    _train(guard, model, _batch(5), steps=1)
    assert guard.records[-1].momentum_removed > 0 and guard.records[-1].batch == 1
    assert guard.to_dict()["momentum_removed"] == guard.records[-1].momentum_removed


def test_bad_input():
    model = _net()
    adam = torch.optim.Adam(model.parameters())
    with pytest.raises(
        TypeError, match="optimizer: MomentumGuard supports torch.optim.Adam and torch.optim.AdamW, got SGD"
    ):
        MomentumGuard(torch.optim.SGD(model.parameters(), lr=0.1))
    with pytest.raises(TypeError, match="got NAdam"):
        MomentumGuard(torch.optim.NAdam(model.parameters()))
    with pytest.raises(NotImplementedError, match="amsgrad"):
        MomentumGuard(torch.optim.Adam(model.parameters(), amsgrad=True), "off")
    with pytest.raises(
        ValueError,
        match="mode: expected one of off, reset, lookahead, reset\\+lookahead, consistent, project, got 'clip'",
    ):
        MomentumGuard(adam, "clip", model=model)
    with pytest.raises(ValueError, match="model: required with mode 'lookahead'"):
        MomentumGuard(adam)
    with pytest.raises(ValueError, match="margin: expected a finite number >= 0, got -1"):
        MomentumGuard(adam, model=model, margin=-1)
    with pytest.raises(ValueError, match="max_fraction: expected a number in \\[0, 1\\), got 1"):
        MomentumGuard(adam, model=model, max_fraction=1)
    with pytest.raises(ValueError, match="rounds, max_constraints: expected integers >= 1, got 0, 256"):
        MomentumGuard(adam, "project", model=model, rounds=0)
    with pytest.raises(ValueError, match="hold: expected 'step' or 'momentum', got 'all'"):
        MomentumGuard(adam, "project", model=model, hold="all")
    with pytest.raises(ValueError, match="predict: expected 'jvp' or 'secant', got 'exact'"):
        MomentumGuard(adam, model=model, predict="exact")
    guard = MomentumGuard(adam, model=model)
    with pytest.raises(ValueError, match="step: mode 'lookahead' needs logp_fn, old_logp and advantages"):
        guard.step()


def test_demo_switch():
    from grpokit import demo

    kw = dict(variants=("trl.grpo",), steps=2, inner_steps=3, progress=False, plots=False)
    (off,), _ = demo.run_demo(**kw)
    (guarded,), _ = demo.run_demo(momentum_guard="lookahead", **kw)
    assert off.eta == [[1.0] * 3] * 2
    assert all(0 <= e <= 1 for row in guarded.eta for e in row) and len(guarded.kl) == 2
    assert max(guarded.max_overshoot) <= 0.01 + 0.01  # margin + the first-order error
    with pytest.raises(ValueError, match="mode: expected one of"):
        demo.run_demo(momentum_guard="on", **kw)
    with pytest.raises(ValueError, match="hold: expected 'step' or 'momentum', got 'all'"):
        demo.run_demo(momentum_guard="project", guard_hold="all", **kw)


def test_cli_switch(tmp_path, capsys):
    from grpokit import cli

    argv = ["demo", "--variants", "trl.grpo", "--steps", "1", "--mu", "2", "--no-progress", "--out", str(tmp_path)]
    assert cli.main(argv + ["--momentum-guard", "reset+lookahead", "--guard-margin", "0.02"]) == 0
    assert "trl.grpo" in capsys.readouterr().out
    assert cli.main(argv + ["--momentum-guard", "project", "--guard-hold", "momentum"]) == 0
    with pytest.raises(SystemExit):
        cli.main(argv + ["--momentum-guard", "on"])
    with pytest.raises(SystemExit):
        cli.main(argv + ["--momentum-guard", "project", "--guard-hold", "all"])


def test_trl_switch(tmp_path):
    gtrl = pytest.importorskip("grpokit.integrations.trl")
    import trl_tiny as tt

    def trainer(guard, callbacks=()):
        return gtrl.GRPOTrainer(
            model=tt.model(),
            reward_funcs=tt.reward_count_a,
            args=tt.config(tmp_path, num_iterations=2, max_steps=4, learning_rate=5e-2),
            train_dataset=tt.dataset(),
            processing_class=tt.tokenizer(),
            callbacks=list(callbacks),
            momentum_guard=guard,
        )

    t = trainer({"mode": "reset+lookahead", "margin": 0.0}, [gtrl.DiagnosticsCallback(warn=False)])
    t.train()
    guard = t.momentum_guard
    assert guard.optimizer is t.optimizer.optimizer and guard.predict == "secant"
    assert len(guard.records) == 4 and guard.batches == 2  # num_iterations = 2: two steps per generation batch
    assert any(r.eta < 1 for r in guard.records) and all(0 <= r.eta <= 1 for r in guard.records)
    logs = [h for h in t.state.log_history if "loss" in h]
    assert all("grpokit/guard/eta" in h for h in logs)
    assert [h["learning_rate"] for h in logs] == [pytest.approx(5e-2 * (1 - i / 4)) for i in range(4)]  # restored
    assert t.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)  # the schedule's, never η-scaled
    with pytest.raises(ValueError, match="momentum_guard: expected None, one of off, reset"):
        trainer("strict")
