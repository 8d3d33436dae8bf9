"""Does momentum-aware clipping work? grpokit.optim.MomentumGuard against plain Adam/AdamW (issue 23).

    python benchmarks/eval_momentum_guard.py [--seeds 5] [--steps 40] [--trl-steps 8] [--trl-seeds 2]
                                             [--plot docs/images/momentum_guard.png] [--quick]
                                             [--only "AdamW;look-ahead"]

Three settings, every remedy against plain AdamW in the same runs (same seeds, same samples until the
trajectories part):

1. The hidden-biases paper's one-token toy (notes check 15): final ratio, first inner step with
   ratio >= 1.19, excess past 1.2.
2. ``grpokit demo``'s task (trl.grpo, μ = 4 and 8, ``--seeds`` seeds): mean / max excess past the
   bound after the μ steps, exact KL(π_old ‖ π) per token after the μ steps, clip fraction at inner
   steps k >= 1, reward and length drift (last fifth vs first fifth), mean η, seconds per optimizer
   step. "μ = 1" is the paper's no-clipping baseline (one step per batch; the ratio never leaves 1).
3. TRL's GRPOTrainer on the tiny offline Qwen2 (tests/python/trl_tiny.py, num_iterations = 4):
   excess past the bound of the ratios the loss sees at inner steps k >= 1, reward, step time.

Each cell is mean ± std over seeds. Times are wall-clock on whatever machine runs it (a shared one
gives noisy numbers); they are per optimizer step, guard included.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "python"))
warnings.filterwarnings("ignore")

import torch  # noqa: E402

from grpokit import demo  # noqa: E402
from grpokit.optim import MomentumGuard  # noqa: E402

# (label, MomentumGuard options or None for plain, μ override)
REMEDIES = (
    ("AdamW", {"momentum_guard": "off"}, None),
    ("reset m", {"momentum_guard": "reset"}, None),
    ("look-ahead", {"momentum_guard": "lookahead"}, None),
    ("look-ahead 5%", {"momentum_guard": "lookahead", "guard_fraction": 0.05}, None),
    ("reset + look-ahead", {"momentum_guard": "reset+lookahead"}, None),
    ("clip-consistent m", {"momentum_guard": "consistent"}, None),
    ("per-token projection", {"momentum_guard": "project"}, None),
    ("projection, margin 0.02", {"momentum_guard": "project", "guard_margin": 0.02}, None),
    ("projection (hold momentum)", {"momentum_guard": "project", "guard_hold": "momentum"}, None),
    ("μ = 1 (no clip)", {"momentum_guard": "off"}, 1),
    ("AdamW lr 5e-3", {"momentum_guard": "off", "lr": 5e-3}, None),  # reward against step size, no guard
)


def cell(x) -> str:
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return "n/a"
    sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
    m = float(np.mean(x))
    f = ".3g" if abs(m) < 1e-2 and m != 0 else ".3f"
    return f"{m:{f}} ± {sd:{f}}"


# ---- 1. the toy ------------------------------------------------------------------------------------


def toy(mode: str, mu: int = 12, **options):
    z = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))
    model = torch.nn.Module()
    model.z = z
    model.forward = lambda: model.z
    opt = torch.optim.Adam([z], lr=0.05, betas=(0.9, 0.95))
    guard = MomentumGuard(opt, mode, model=model, **options)
    old, adv = torch.tensor([math.log(0.5)], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)

    def logp(forward):
        return torch.nn.functional.logsigmoid(forward()).reshape(1)

    guard.new_batch()
    ratios = []
    for _ in range(mu):
        opt.zero_grad()
        r = torch.exp(logp(lambda: z) - old)
        (-torch.min(r * adv, r.clamp(0.8, 1.2) * adv).sum()).backward()
        guard.step(logp, old, adv)
        ratios.append(float(torch.exp(logp(lambda: z) - old)))
    return np.array(ratios)


def toy_table() -> str:
    rows = [
        ("Adam", toy("off")),
        ("reset m (and v)", toy("reset", reset_second_moment=True)),
        ("look-ahead, JVP, margin 0", toy("lookahead", margin=0.0)),
        ("look-ahead, JVP, margin 0.01", toy("lookahead", margin=0.01)),
        ("look-ahead, secant, margin 0.01", toy("lookahead", margin=0.01, predict="secant")),
        ("clip-consistent momentum", toy("consistent")),
        ("per-token projection, margin 0.01", toy("project", margin=0.01)),
        ("μ = 1 (no clip)", toy("off", mu=1)),
    ]
    out = [
        "| remedy | final ratio | first step ≥ 1.19 | excess past 1.2 |",
        "|---|---|---|---|",
    ]
    for name, r in rows:
        k = int(np.argmax(r >= 1.19)) if np.any(r >= 1.19) else None
        out.append(f"| {name} | {r[-1]:.4f} | {'never' if k is None else k} | {max(0.0, r[-1] - 1.2):.4f} |")
    return "\n".join(out)


# ---- 2. the demo's task -----------------------------------------------------------------------------


def demo_rows(mu: int, seeds, steps: int):
    rows = []
    for label, opts, mu_over in REMEDIES:
        stats = {
            k: []
            for k in ("mean_ex", "max_ex", "kl", "clip", "reward", "drift", "eta", "time", "reward_curve", "clip_k")
        }
        for s in seeds:
            cfg = demo.DemoConfig(
                variants=("trl.grpo",),
                inner_steps=mu_over or mu,
                steps=steps,
                seed=s,
                progress=False,
                plots=False,
                **opts,
            )
            t0 = time.perf_counter()
            (run,), _ = demo.run_demo(cfg)
            dt = time.perf_counter() - t0
            summ = run.summary()
            stats["mean_ex"].append(np.mean(run.overshoot))
            stats["max_ex"].append(np.mean(run.max_overshoot))
            stats["kl"].append(np.mean(run.kl))
            stats["clip"].append(summ["clip_fraction"])
            stats["reward"].append(summ["reward"])
            stats["drift"].append(summ["length_drift"])
            stats["eta"].append(np.mean(run.eta))
            stats["time"].append(1e3 * dt / (steps * (mu_over or mu)))
            stats["reward_curve"].append(run.reward)
            stats["clip_k"].append(np.mean(np.asarray(run.clip_fraction), axis=0))
        rows.append((label, stats))
    return rows


def demo_table(rows) -> str:
    out = [
        "| remedy | mean excess | max excess | KL(π_old‖π) | clip frac k≥1 | reward | Δlength | mean η | ms/step |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for label, s in rows:
        keys = ("mean_ex", "max_ex", "kl", "clip", "reward", "drift", "eta", "time")
        out.append(f"| {label} | " + " | ".join(cell(s[k]) for k in keys) + " |")
    return "\n".join(out)


def clip_per_k(rows) -> str:
    out = []
    for label, s in rows:
        per_k = np.mean(np.stack(s["clip_k"]), axis=0) if len(s["clip_k"][0]) > 1 else None
        if per_k is not None:
            out.append(f"- {label}: " + ", ".join(f"k={k}: {v:.3f}" for k, v in enumerate(per_k)))
    return "\n".join(out)


# ---- 3. TRL's GRPOTrainer on the tiny model -----------------------------------------------------------


def trl_rows(seeds, steps: int, only=None):
    from transformers import TrainerCallback

    import trl_tiny as tt
    from grpokit.diagnostics import clip_region
    from grpokit.integrations.trl import DiagnosticsCallback, GRPOTrainer

    class Excess(TrainerCallback):
        """Excess past the bound of the ratios the loss saw at inner steps k >= 1."""

        def __init__(self):
            self.trainer, self.mean, self.max = None, [], []

        def on_pre_optimizer_step(self, args, state, control, **kw):
            w = self.trainer.grpokit_window
            if not w:
                return
            k = (w[-1]["step"] // args.steps_per_generation) % args.num_iterations
            if k == 0:
                return
            T = max(x["logp"].shape[1] for x in w)
            pad = lambda x, v: torch.nn.functional.pad(x, (0, T - x.shape[1]), value=v)  # noqa: E731
            ratio = torch.exp(torch.cat([pad(x["logp"] - x["old_logp"], 0.0) for x in w]).double())
            adv = torch.cat([x["advantages"].reshape(-1) for x in w]).double()
            mask = torch.cat([pad(x["mask"].bool(), False) for x in w])
            c = clip_region(ratio, adv, mask=mask, epsilon=0.2)
            self.mean.append(c.mean_excess)  # over the tokens past the bound, as the demo
            self.max.append(c.max_excess)

    rows = []
    remedies = (
        ("AdamW", None),
        ("reset m", "reset"),
        ("look-ahead", "lookahead"),
        ("clip-consistent m", "consistent"),
        ("per-token projection", "project"),
    )
    remedies = tuple(r for r in remedies if only is None or r[0] in only)
    for label, guard in remedies:
        stats = {k: [] for k in ("mean_ex", "max_ex", "reward", "clip", "eta", "gamma", "time")}
        for s in seeds:
            ex = Excess()
            trainer = GRPOTrainer(
                model=tt.model(s),
                reward_funcs=tt.reward_count_a,
                args=tt.config(tempfile.mkdtemp(), num_iterations=4, max_steps=steps, learning_rate=2e-2, seed=s),
                train_dataset=tt.dataset(32),
                processing_class=tt.tokenizer(),
                callbacks=[DiagnosticsCallback(warn=False, prefix_every=0, eps_every=0, momentum_every=0)],
                momentum_guard=guard,
            )
            ex.trainer = trainer
            trainer.callback_handler.callbacks.insert(0 if guard is None else 1, ex)
            with contextlib.redirect_stdout(io.StringIO()):  # the trainer prints every log line
                trainer.train()
            logs = [h for h in trainer.state.log_history if "loss" in h]
            rewards = [h["reward"] for h in logs if "reward" in h]  # logged at generation steps
            tail = max(1, len(rewards) // 4)
            stats["mean_ex"].append(np.mean(ex.mean) if ex.mean else 0.0)
            stats["max_ex"].append(np.max(ex.max) if ex.max else 0.0)
            stats["reward"].append(np.mean(rewards[-tail:]))
            stats["clip"].append(np.mean([h.get("clip_ratio/region_mean", np.nan) for h in logs]))
            records = trainer.momentum_guard.records if trainer.momentum_guard else []
            stats["eta"].append(np.mean([r.eta for r in records]) if records else 1.0)
            stats["gamma"].append(np.mean([r.momentum_scale for r in records]) if records else 1.0)
            stats["time"].append(1e3 * np.median([h["step_time"] for h in logs]))
        rows.append((label, stats))
    out = [
        "| remedy | mean excess (k≥1) | max excess (k≥1) | clip frac | reward (end) | mean η | mean γ | ms/step |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for label, s in rows:
        out.append(
            f"| {label} | "
            + " | ".join(cell(s[k]) for k in ("mean_ex", "max_ex", "clip", "reward", "eta", "gamma", "time"))
            + " |"
        )
    return "\n".join(out)


def plot(rows_by_mu, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.4))
    mu = max(rows_by_mu)
    labels = [lab for lab, _ in rows_by_mu[mu]]
    # one colour per remedy in every panel (plain AdamW black, the others tab10's), one marker per μ
    others = [lab for lab in labels if lab != "AdamW"]
    colour = {"AdamW": "black", **{lab: plt.get_cmap("tab10")(i % 10) for i, lab in enumerate(others)}}
    for label, s in rows_by_mu[mu]:
        r = np.mean(np.asarray(s["reward_curve"]), axis=0)
        w = max(1, len(r) // 8)
        style = "--" if label.startswith("AdamW") else "-"
        axes[0].plot(np.convolve(r, np.ones(w) / w, mode="valid"), style, color=colour[label], label=label)
    axes[0].set(xlabel="batch", ylabel="mean reward (seed mean, smoothed)", title=f"demo task, μ = {mu}")
    markers = dict(zip(sorted(rows_by_mu), "os^D"))
    for m, rows in sorted(rows_by_mu.items()):
        x = np.arange(len(rows))
        ex = [np.mean(s["mean_ex"]) for _, s in rows]
        sd = [np.std(s["mean_ex"], ddof=1) if len(s["mean_ex"]) > 1 else 0 for _, s in rows]
        axes[1].errorbar(x + 0.15 * (m == mu), ex, yerr=sd, fmt=markers[m], color="0.3", label=f"μ = {m}")
        for lab, s in rows:
            axes[2].scatter(np.mean(s["kl"]), np.mean(s["reward"]), marker=markers[m], color=colour[lab], s=36)
    axes[1].set_xticks(np.arange(len(labels)), labels, rotation=35, ha="right", fontsize=7)
    axes[1].set(ylabel="mean excess past the bound after μ steps", title="overshoot (mean ± std over seeds)")
    axes[1].legend(fontsize=7)
    axes[2].set(
        xlabel="KL(π_old‖π) per token after μ steps",
        ylabel="final reward (seed mean)",
        title="reward vs how far the policy moved",
    )
    for m in sorted(rows_by_mu):
        axes[2].scatter([], [], marker=markers[m], color="0.3", label=f"μ = {m}")
    axes[2].legend(fontsize=7, loc="lower right")
    fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=6, fontsize=7, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(path, dpi=90)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=40, help="sampled batches per demo run")
    ap.add_argument("--mus", default="4,8")
    ap.add_argument("--trl-seeds", type=int, default=2)
    ap.add_argument("--trl-steps", type=int, default=8, help="optimizer steps per TRL run (0: skip)")
    ap.add_argument("--plot", default=None, help="write the demo figure to this PNG")
    ap.add_argument("--quick", action="store_true", help="a tiny run that only checks the script works")
    ap.add_argument("--only", default=None, help="';'-separated remedy labels to run (default: all)")
    a = ap.parse_args()
    if a.quick:
        a.seeds, a.steps, a.mus, a.trl_seeds, a.trl_steps = 2, 3, "2", 1, 0
    torch.set_num_threads(1)
    if a.only:
        global REMEDIES
        REMEDIES = tuple(r for r in REMEDIES if r[0] in a.only.split(";"))
    print("## The one-token toy (σ(z), π_old = ½, A = +1, ε = 0.2, μ = 12, Adam lr 0.05, β = (0.9, 0.95))\n")
    print(toy_table())
    seeds = list(range(a.seeds))
    rows_by_mu = {}
    for mu in (int(x) for x in a.mus.split(",") if x):
        rows_by_mu[mu] = demo_rows(mu, seeds, a.steps)
        print(f"\n## grpokit demo task, trl.grpo, μ = {mu}, {a.steps} batches, seeds {seeds}\n")
        print(demo_table(rows_by_mu[mu]))
        print("\nclip fraction per inner step k (seed mean):\n")
        print(clip_per_k(rows_by_mu[mu]))
    if a.trl_steps:
        trl_seeds = list(range(a.trl_seeds))
        print(f"\n## TRL GRPOTrainer, tiny Qwen2, num_iterations = 4, {a.trl_steps} steps, seeds {trl_seeds}\n")
        print(trl_rows(trl_seeds, a.trl_steps, a.only and a.only.split(";")))
    if a.plot:
        plot(rows_by_mu, a.plot)
        print(f"\nwrote {a.plot}")


if __name__ == "__main__":
    main()
