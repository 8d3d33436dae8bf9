"""The optimizer-state diagnostics on CUDA Adam states against the CPU engine (skipped without a GPU).

The CPU engine is checked against NumPy references (test_diagnostics_scale.py, _momentum.py), so
equality with it on the very same state values is the GPU's criterion. The CPU side reads a copy of
the state moved to the host (low-precision states widened to float32: exact). Tolerances (docs/gpu.md):
per-coordinate values 1e-14 relative (the device contracts a·b + c into FMAs: an ulp or two);
per-tensor sums of positive terms and their ratios 1e-11 relative (another summation order over 2·10^5
terms), signed sums (⟨u, g⟩, ⟨u_stale, u_fresh⟩) 1e-9; counts, min and max exact; the log10 ρ histogram may move
a coordinate lying within an ulp of a bin edge (device log10 is
within 1 ulp), so its total is exact and at most 2 counts move.
"""

from __future__ import annotations

import copy
import math

import numpy as np
import pytest

pytestmark = pytest.mark.gpu
torch = pytest.importorskip("torch")

from grpokit import diagnostics as gd  # noqa: E402
from grpokit.diagnostics import _optim  # noqa: E402


def trained(dtype=torch.float32, device="cuda", big=200_003, steps=3, opt_cls=torch.optim.AdamW, **opt_kw):
    """A model with odd-sized tensors (none a multiple of the kernels' block shares) and one large one,
    some coordinates never updated (v = 0), trained a few steps."""
    torch.manual_seed(0)
    model = torch.nn.ModuleDict(
        {"a": torch.nn.Linear(19, 111), "b": torch.nn.Linear(111, 7), "emb": torch.nn.Embedding(big // 37, 37)}
    ).to(device=device, dtype=dtype)
    kw = dict(lr=1e-3, betas=(0.9, 0.99), eps=1e-6, weight_decay=0.01)
    kw.update(opt_kw)
    opt = opt_cls(model.parameters(), **kw)
    x = torch.randn(13, 19, device=device, dtype=dtype)
    ids = torch.randint(0, big // 37 // 2, (29,), device=device)  # half the rows stay untouched
    for _ in range(steps):
        opt.zero_grad()
        loss = (model["b"](torch.tanh(model["a"](x))) ** 2).mean() + (model["emb"](ids) ** 2).mean() * 1e-3
        loss.backward()
        opt.step()
    return model, opt


def host_copy(model, opt):
    """The same model and optimizer on the CPU, state values unchanged."""
    m = copy.deepcopy(model).cpu()
    o = type(opt)(m.parameters())
    o.load_state_dict(opt.state_dict())  # the groups' hyper-parameters; the state moves to the parameters' device
    return m, o


def assert_hist_close(got, want):
    assert int(np.sum(got)) == int(np.sum(want))
    assert int(np.abs(np.asarray(got) - np.asarray(want)).sum()) <= 2


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16, torch.float64], ids=str)
def test_reward_scale_on_device_state_equals_the_cpu_engine(dtype):
    model, opt = trained(dtype)
    states = _optim.stepped_states(opt, model)
    for s in states:  # read in place: views of the optimizer's own device tensors
        assert s.exp_avg_sq.device.type == "cuda" and s.exp_avg_sq.dtype == dtype
        assert s.exp_avg_sq.data_ptr() == opt.state[s.param]["exp_avg_sq"].data_ptr()
    g = gd.reward_scale(opt, named=model, phis=(0.1, 3.0, 10.0))
    hm, ho = host_copy(model, opt)
    c = gd.reward_scale(ho, named=hm, phis=(0.1, 3.0, 10.0))
    assert (g.n, g.n_zero_v) == (c.n, c.n_zero_v) and g.n_zero_v > 0
    assert g.frac_rho_above == c.frac_rho_above and g.min_rho == c.min_rho and g.max_rho == c.max_rho
    for k in ("elasticity", "mean_elasticity"):
        np.testing.assert_allclose(getattr(g, k), getattr(c, k), rtol=1e-11)
    for phi in (0.1, 3.0, 10.0):
        np.testing.assert_allclose(g.predicted_step_ratio[phi], c.predicted_step_ratio[phi], rtol=1e-11)
    assert_hist_close(g.log10_rho_hist, c.log10_rho_hist)
    for rg, rc in zip(g.per_tensor, c.per_tensor):
        assert rg["name"] == rc["name"] and rg["n"] == rc["n"] and rg["frac_rho_above"] == rc["frac_rho_above"]
        np.testing.assert_allclose(rg["elasticity"], rc["elasticity"], rtol=1e-11)
    again = gd.reward_scale(opt, named=model, phis=(0.1, 3.0, 10.0))
    assert again.elasticity == g.elasticity and np.array_equal(again.log10_rho_hist, g.log10_rho_hist)  # bitwise


def test_rho_and_updates_stay_on_the_device():
    model, opt = trained()
    hm, ho = host_copy(model, opt)
    rg, rc = gd.rho_per_coordinate(opt, named=model), gd.rho_per_coordinate(ho, named=hm)
    for name, (rho, e) in rg.items():
        assert rho.device.type == "cuda" and rho.dtype == torch.float64
        np.testing.assert_allclose(rho.cpu().numpy(), rc[name][0].numpy(), rtol=1e-14)
        np.testing.assert_allclose(e.cpu().numpy(), rc[name][1].numpy(), rtol=1e-14)
    by_host = {n: s for n, s in ((s.name, s) for s in _optim.stepped_states(ho, hm))}
    for s in _optim.stepped_states(opt, model):
        for phi, nxt in ((1.0, False), (10.0, False), (1.0, True)):
            u = _optim.preconditioned_update(s, phi, momentum_only_next=nxt)
            assert u.device.type == "cuda"
            want = _optim.preconditioned_update(by_host[s.name], phi, momentum_only_next=nxt)
            np.testing.assert_allclose(u.cpu().numpy(), want.numpy(), rtol=1e-14, atol=0)


def test_fused_adam_with_the_step_on_the_device():
    model, opt = trained(opt_cls=torch.optim.Adam, fused=True)
    assert all(st["step"].device.type == "cuda" for st in opt.state.values())
    hm, ho = host_copy(model, opt)
    g, c = gd.reward_scale(opt, named=model), gd.reward_scale(ho, named=hm)
    np.testing.assert_allclose(g.elasticity, c.elasticity, rtol=1e-11)
    assert g.n == c.n


@pytest.mark.parametrize("opt_cls", [torch.optim.AdamW, torch.optim.Adam])
def test_momentum_tracker_on_device_equals_the_cpu_engine(opt_cls):
    model, opt = trained(opt_cls=opt_cls)
    hm, ho = host_copy(model, opt)
    torch.manual_seed(4)
    x = torch.randn(13, 19)
    recs = []
    for mdl, o in ((model, opt), (hm, ho)):
        tr = gd.MomentumTracker(o, named=mdl)
        o.zero_grad()
        dev = next(mdl.parameters()).device
        (mdl["b"](torch.tanh(mdl["a"](x.to(dev)))) ** 2).mean().backward()
        mdl["emb"].weight.grad = None  # a parameter without a gradient is skipped
        recs.append(tr.step())
    g, c = recs
    for k in (
        "u_norm",
        "u_prev_norm",
        "stale_share",
        "stale_norm",
        "fresh_norm",
        "cos_grad",
        "displacement",
        "weight_decay",
    ):
        np.testing.assert_allclose(getattr(g, k), getattr(c, k), rtol=1e-9, err_msg=k)
    assert g.adam_step == c.adam_step


def test_first_step_and_non_finite_gradients():
    model = torch.nn.Linear(3, 2).cuda()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    tr = gd.MomentumTracker(opt, named=model)
    model(torch.ones(1, 3, device="cuda")).sum().backward()
    rec = tr.step()  # no state yet: Adam starts from m = v = 0
    assert rec.u_prev_norm == 0.0 and rec.stale_norm == 0.0 and rec.fresh_norm > 0
    model.weight.grad[1, 2] = float("nan")
    with pytest.raises(ValueError, match=r"grad: element 5 is nan; gradients must be finite"):
        tr.step()


def test_lookahead_on_device():
    torch.manual_seed(2)
    model = torch.nn.Linear(3, 5).cuda()
    opt = torch.optim.AdamW(model.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    x = torch.randn(4, 3, device="cuda")
    tokens = torch.randint(0, 5, (4,), device="cuda")

    def logp_fn(forward):
        return torch.log_softmax(forward(x), -1).gather(-1, tokens[:, None]).T

    with torch.no_grad():
        old = logp_fn(model)
    for _ in range(6):
        opt.zero_grad()
        (-(logp_fn(model) - old).exp().sum()).backward()
        opt.step()
    rep = gd.momentum_lookahead(model, opt, logp_fn, old, torch.tensor([1.0]), epsilon=0.2)
    m2 = copy.deepcopy(model)
    o2 = torch.optim.AdamW(m2.parameters(), lr=0.05, betas=(0.9, 0.95), weight_decay=0.1)
    o2.load_state_dict(opt.state_dict())
    with torch.no_grad():
        for p2, p in zip(m2.parameters(), model.parameters()):
            p2.copy_(p)
    for p in m2.parameters():
        p.grad = torch.zeros_like(p)
    o2.param_groups[0]["weight_decay"] = 0.0
    o2.step()
    with torch.no_grad():
        ratio_next = (logp_fn(m2) - old).exp().cpu().numpy()
    np.testing.assert_allclose(rep.ratio_next, ratio_next, rtol=1e-5)
    assert math.isfinite(rep.mean_deeper)
