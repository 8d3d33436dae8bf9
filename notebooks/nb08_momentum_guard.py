"""Cells of notebook 08_momentum_guard (imported by make_notebooks.py, which writes the .ipynb)."""

from make_notebooks_cells import SETUP, code, md

CELLS = [
    md("""
# 8. Momentum-aware clipping: `grpokit.optim.MomentumGuard`

Notebook 5 shows Adam carrying ratios past the clip bound. The guard wraps Adam/AdamW and either resets
the first moment per generation batch (`"reset"`) or scales each step by the largest η ∈ [0, 1] that
keeps every token's predicted ratio within `margin` of its bound (`"lookahead"`: Adam's real pending
update, one forward-mode JVP of the per-token log-probabilities), or (`"project"`) keeps the step and
removes from it only the push on the tokens predicted to cross, by projecting it off their log-prob
gradients. docs/diagnostics.md §5 has the full evaluation."""),
    code(
        SETUP
        + """
import math, torch
from grpokit.optim import MomentumGuard
from grpokit import demo"""
    ),
    md("""
## The paper's one-token toy
π = σ(z), π_old = ½, A = +1, ε = 0.2, μ = 12, Adam (lr 0.05, β = (0.9, 0.95)): plain Adam ends at 1.2791."""),
    code("""
def toy(mode, **options):
    model = torch.nn.Module(); model.z = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    model.forward = lambda: model.z
    opt = torch.optim.Adam(model.parameters(), lr=0.05, betas=(0.9, 0.95))
    guard = MomentumGuard(opt, mode, model=model, **options)
    old, adv = torch.tensor([math.log(0.5)], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    logp = lambda forward: torch.nn.functional.logsigmoid(forward()).reshape(1)
    ratios = []
    for k in range(12):
        opt.zero_grad()
        r = torch.exp(logp(model) - old)
        (-torch.min(r * adv, r.clamp(0.8, 1.2) * adv).sum()).backward()
        guard.step(logp, old, adv)
        ratios.append(float(torch.exp(logp(model) - old)))
    return ratios, guard

fig, ax = plt.subplots(figsize=(6, 3.5))
for label, mode, opts in [("Adam", "off", {}), ("look-ahead, margin 0", "lookahead", {"margin": 0.0}),
                          ("look-ahead, margin 0.01", "lookahead", {"margin": 0.01}),
                          ("look-ahead, secant", "lookahead", {"predict": "secant"}),
                          ("per-token projection", "project", {})]:
    ratios, guard = toy(mode, **opts)
    ax.plot(range(1, 13), ratios, "o-", ms=3, label=f"{label}: {ratios[-1]:.4f}")
ax.axhline(1.2, color="grey", lw=0.8)
ax.set(xlabel="inner step", ylabel="ratio after the step"); ax.legend(fontsize=7)
print("η per step (margin 0.01, secant):", [round(r.eta, 4) for r in guard.records])
"""),
    md("""
## The demo task, μ = 4
The same samples for every remedy; the strict look-ahead removes the overshoot, at the price of smaller
steps (lower reward after the same number of batches); the per-token projection removes it too and keeps
most of each step (η close to 1), at the cost of one batched backward pass per round of constraints.
`guard_hold="momentum"` lets a token still move as far as the step's gradient part alone takes it and
removes only what momentum adds. Over 40 batches and 5 seeds (docs/diagnostics.md §5), every projection
ends about 0.006–0.011 below AdamW's reward. That gap is the trust region itself: AdamW's extra reward
comes from pushing sampled wrong answers past 1 − ε, which is the overshoot the guard removes."""),
    code("""
runs = {}
for label, opts in [("AdamW", {}), ("reset m", {"momentum_guard": "reset"}),
                    ("look-ahead", {"momentum_guard": "lookahead"}),
                    ("look-ahead 5%", {"momentum_guard": "lookahead", "guard_fraction": 0.05}),
                    ("projection", {"momentum_guard": "project"}),
                    ("proj. hold m", {"momentum_guard": "project", "guard_hold": "momentum"})]:
    (run,), _ = demo.run_demo(variants=("trl.grpo",), steps=15, inner_steps=4, progress=False, plots=False, **opts)
    runs[label] = run
    print(f"{label:14s} mean excess {np.mean(run.overshoot):.4f}  max {np.mean(run.max_overshoot):.4f}  "
          f"KL {np.mean(run.kl):.4f}  reward {run.summary()['reward']:.3f}  mean η {np.mean(run.eta):.3f}")
fig, axes = plt.subplots(1, 2, figsize=(10, 3.5))
for label, run in runs.items():
    axes[0].plot(run.max_overshoot, label=label)
    axes[1].plot(np.mean(run.eta, axis=0), "o-", label=label)
axes[0].set(xlabel="batch", ylabel="max excess past the bound after μ steps"); axes[0].legend(fontsize=7)
axes[1].set(xlabel="inner step k", ylabel="mean η"); fig.tight_layout()
"""),
]
