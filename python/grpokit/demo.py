"""`grpokit demo`: a small synthetic RL problem trained end to end under several GRPO variants.

The task: a prompt is one of K "questions"; a completion is a sequence of tokens ending in EOS. The
reward is verifiable and blind to length: 1 if the first token answers the question, else 0. A drift of
the length therefore comes from the training procedure (the variant's weights, the optimizer, sampling
noise), not from the reward; it varies between seeds (``run_seeds``), so variants are best compared
with each other, over several seeds.

The policy is a tiny autoregressive MLP (question, previous token, position → next-token logits),
trained with AdamW and μ inner steps per batch, exactly as GRPO trainers do: sample with the frozen
old policy, compute advantages, then μ optimizer steps on the same batch whose gradients come from
grpokit's engine (the loss gradient with respect to the per-token log-probabilities).
"""

from __future__ import annotations

import copy
import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

# The five default variants, by their preset names. GSPO is the paper's row (sequence ratio
# clipped at 3e-4/4e-4); TRL's GSPO is "trl.grpo:importance_sampling_level=sequence,epsilon=3e-4,epsilon_high=4e-4".
DEFAULT_VARIANTS = ("trl.grpo", "trl.dr_grpo", "trl.dapo", "paper.gspo", "trl.cispo")


@dataclass
class DemoConfig:
    """The demo's knobs (``grpokit demo --help`` documents the same ones)."""

    variants: Sequence[str] = DEFAULT_VARIANTS
    group_size: int = 8  # G completions per prompt
    prompts_per_step: int = 8
    inner_steps: int = 4  # μ optimizer steps per sampled batch
    steps: int = 40  # sampled batches per variant
    lr: float = 1e-2
    betas: Tuple[float, float] = (0.9, 0.999)
    adam_eps: float = 1e-8
    weight_decay: float = 0.0
    max_len: int = 12
    num_questions: int = 4
    hidden: int = 32
    seed: int = 0
    out_dir: str = "grpokit-demo"
    progress: bool = True
    plots: bool = True
    momentum_guard: str = "off"  # grpokit.optim.MomentumGuard mode ("off", "reset", "lookahead", ...)
    guard_margin: float = 0.01  # MomentumGuard margin (ratio units past the clip bound)
    guard_fraction: float = 0.0  # MomentumGuard max_fraction (tokens allowed past bound + margin per step)
    guard_hold: str = "step"  # MomentumGuard hold ("momentum": "project" lets the gradient alone push a token out)


@dataclass
class VariantRun:
    """The per-step history of one variant's training run."""

    variant: str
    reward: List[float] = field(default_factory=list)
    length: List[float] = field(default_factory=list)
    clip_fraction: List[List[float]] = field(default_factory=list)  # [step][inner step], before each update
    overshoot: List[float] = field(default_factory=list)  # mean excess past the bound after the μ steps
    eps_dominance: List[float] = field(default_factory=list)  # update-weighted elasticity ē of Adam's step
    momentum_ratio: List[float] = field(default_factory=list)  # ‖u_t‖/‖u_t−1‖ at the last inner step
    length_weight_corr: List[float] = field(default_factory=list)  # corr(mean ω, length) per batch
    max_overshoot: List[float] = field(default_factory=list)  # max excess past the bound after the μ steps
    kl: List[float] = field(default_factory=list)  # exact KL(π_old ‖ π) per valid token after the μ steps
    eta: List[List[float]] = field(default_factory=list)  # [step][inner step] MomentumGuard's step scale

    def summary(self) -> Dict[str, float]:
        """The table row: reward and length averaged over the last fifth of the run, length drift
        (last fifth − first fifth), the clip-region fraction over inner steps k ≥ 1 (k = 0 is always 0),
        the mean excess past the bound, the ε-dominance and corr(ω, length)."""
        tail = max(1, len(self.reward) // 5)
        clip = [float(np.mean(c[1:])) if len(c) > 1 else 0.0 for c in self.clip_fraction]
        return {
            "reward": float(np.mean(self.reward[-tail:])),
            "length": float(np.mean(self.length[-tail:])),
            "length_drift": float(np.mean(self.length[-tail:]) - np.mean(self.length[:tail])),
            "clip_fraction": float(np.mean(clip)) if clip else 0.0,
            "overshoot": float(np.mean(self.overshoot)) if self.overshoot else 0.0,
            "eps_dominance": _nanmean(self.eps_dominance),  # NaN for a batch without any update
            "weight_length_corr": _nanmean(self.length_weight_corr),
        }


def _nanmean(x: Sequence[float]) -> float:
    x = np.asarray(x, dtype=np.float64)
    return float(np.mean(x[np.isfinite(x)])) if np.any(np.isfinite(x)) else float("nan")


def _require_torch():
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - the demo's extra installs torch
        raise RuntimeError("grpokit demo needs PyTorch: pip install 'grpokit[torch]'") from exc
    return torch


class _Task:
    """K questions; the answer to question q is token (q + 1) mod K; then filler tokens until EOS."""

    def __init__(self, cfg: DemoConfig):
        self.K = cfg.num_questions
        self.filler = self.K
        self.eos = self.K + 1
        self.bos = self.K + 2
        self.vocab = self.K + 2  # tokens the policy can emit
        self.max_len = cfg.max_len

    def rewards(self, torch, q, tokens):
        return (tokens[:, 0] == (q + 1) % self.K).to(torch.float64)


def _policy(torch, task: _Task, hidden: int):
    nn = torch.nn

    class Policy(nn.Module):
        def __init__(self):
            super().__init__()
            self.question = nn.Embedding(task.K, hidden)
            self.previous = nn.Embedding(task.vocab + 1, hidden)  # + BOS
            self.position = nn.Embedding(task.max_len, hidden)
            self.body = nn.Sequential(nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(), nn.Linear(hidden, task.vocab))

        def forward(self, q, prev, pos):
            return self.body(self.question(q) + self.previous(prev) + self.position(pos))

    return Policy()


def _sample(torch, policy, task: _Task, q, gen):
    """Completions (B, T) with their mask and the sampling policy's per-token log-probabilities."""
    B, T = q.shape[0], task.max_len
    tokens = torch.full((B, T), task.eos, dtype=torch.long)
    mask = torch.zeros(B, T, dtype=torch.bool)
    alive = torch.ones(B, dtype=torch.bool)
    prev = torch.full((B,), task.bos, dtype=torch.long)
    with torch.no_grad():
        for t in range(T):
            logits = policy(q, prev, torch.full((B,), t, dtype=torch.long))
            tok = torch.multinomial(torch.softmax(logits, -1), 1, generator=gen).squeeze(1)
            tokens[:, t] = torch.where(alive, tok, tokens[:, t])
            mask[:, t] = alive
            alive = alive & (tok != task.eos)
            prev = tok
    return tokens, mask


def _token_logp(torch, policy, task: _Task, q, tokens):
    """Teacher-forced per-token log-probabilities (B, T), float64, through the engine's autograd
    function (``grpokit.torch.token_logprobs``)."""
    from . import torch as gkt

    B, T = tokens.shape
    prev = torch.cat([torch.full((B, 1), task.bos, dtype=torch.long), tokens[:, :-1]], dim=1)
    pos = torch.arange(T).expand(B, T)
    logits = policy(q[:, None].expand(B, T), prev, pos)
    return gkt.token_logprobs(logits.double(), tokens, entropy=False).logp


def _logits_logp(torch, forward, task: _Task, q, tokens):
    """Full next-token log-distributions (B, T, V) in float64, through plain torch ops (forward-mode
    AD works through them, as ``MomentumGuard``'s JVP needs)."""
    B, T = tokens.shape
    prev = torch.cat([torch.full((B, 1), task.bos, dtype=torch.long), tokens[:, :-1]], dim=1)
    return torch.log_softmax(forward(q[:, None].expand(B, T), prev, torch.arange(T).expand(B, T)).double(), -1)


def _guard_logp(torch, task: _Task, q, tokens, mask, sequence_level: bool):
    """``MomentumGuard``'s logp_fn: per-token log-probabilities, or GSPO's per-sequence mean (the
    quantity its ratio clips); ``logp`` given: that reduction of it."""
    n = mask.double().sum(1).clamp(min=1.0)

    def logp_fn(forward, logp=None):
        if logp is None:
            logp = _logits_logp(torch, forward, task, q, tokens).gather(-1, tokens[..., None]).squeeze(-1)
        return (logp * mask).sum(1) / n if sequence_level else logp

    return logp_fn


def _sequence_ratios(torch, logp, old_logp, mask, ratio_rule: str):
    """Sequence ratios for the clip-region statistics: GSPO's exp(mean log-ratio over the completion),
    GCPO's (``sequence_sum``) raw exp(sum)."""
    m = mask.double()
    total = ((logp - old_logp) * m).sum(1)
    return torch.exp(total if ratio_rule == "sequence_sum" else total / m.sum(1).clamp(min=1.0))


def train_variant(variant: Any, cfg: DemoConfig, progress: Any = None) -> VariantRun:
    """Train a fresh policy (the same initial weights and sampling seed for every variant) under one
    variant; returns its history. Gradients: ``policy_loss(...).grad_logp`` backpropagated through
    the log-probabilities; AdamW with ``cfg.inner_steps`` optimizer steps per sampled batch."""
    torch = _require_torch()
    from . import _variants
    from ._loss import policy_loss
    from .diagnostics import MomentumTracker, clip_region, prefix_bias_from_weights, reward_scale
    from .optim import MomentumGuard

    v = _variants.make(variant, max_completion_length=cfg.max_len)
    spec = v.spec
    if spec.selection != "none":  # verl's clip_cov / kl_cov act on caller-selected tokens: none here
        spec = spec.replace(selection="none")
    task = _Task(cfg)
    torch.manual_seed(cfg.seed)
    policy = _policy(torch, task, cfg.hidden)
    reference = copy.deepcopy(policy).requires_grad_(False)
    opt = torch.optim.AdamW(
        policy.parameters(), lr=cfg.lr, betas=cfg.betas, eps=cfg.adam_eps, weight_decay=cfg.weight_decay
    )
    sequence_level = spec.ratio in ("sequence", "sequence_token", "sequence_sum")
    tracker = MomentumTracker(opt, epsilon=spec.epsilon_low, epsilon_high=spec.epsilon_high, mu=cfg.inner_steps)
    guard = MomentumGuard(
        opt,
        cfg.momentum_guard,
        margin=cfg.guard_margin,
        max_fraction=cfg.guard_fraction,
        hold=cfg.guard_hold,
        epsilon=spec.epsilon_low,
        epsilon_high=spec.epsilon_high,
        model=policy,
    )
    gen = torch.Generator().manual_seed(cfg.seed + 1)
    G, P = cfg.group_size, cfg.prompts_per_step
    run = VariantRun(v.label)
    for _ in range(cfg.steps):
        q = torch.randint(task.K, (P,), generator=gen).repeat_interleave(G)
        tokens, mask = _sample(torch, policy, task, q, gen)
        rewards = task.rewards(torch, q, tokens)
        adv = v.advantages(rewards.numpy(), G)
        adv_t = torch.from_numpy(np.ascontiguousarray(adv))
        with torch.no_grad():
            old_logp = _token_logp(torch, policy, task, q, tokens)
            ref_logp = _token_logp(torch, reference, task, q, tokens)
            old_dist = _logits_logp(torch, policy, task, q, tokens)
        guard_logp = _guard_logp(torch, task, q, tokens, mask, sequence_level)
        guard_old = guard_logp(lambda *a: None, old_logp)
        tracker.reset()
        guard.new_batch()
        etas = []
        for k in range(cfg.inner_steps):
            logp = _token_logp(torch, policy, task, q, tokens)
            res = policy_loss(
                logp.detach(), old_logp, adv_t, mask, spec=spec, ref_logp=ref_logp, return_weights=k == 0, num_threads=1
            )
            if k == 0:
                rep = prefix_bias_from_weights(tokens, adv, res.weights, G, mask=mask)
                run.length_weight_corr.append(rep.to_dict()["weight_length_corr_mean"])
            opt.zero_grad(set_to_none=True)
            logp.backward(res.grad_logp)
            ratios = torch.exp(logp.detach() - old_logp)
            if sequence_level:
                seq = _sequence_ratios(torch, logp.detach(), old_logp, mask, spec.ratio)
                tracker.step(sequence_ratios=seq, advantages=adv)
            else:
                tracker.step(ratios, adv, mask)
            etas.append(guard.step(guard_logp, guard_old, adv_t, None if sequence_level else mask).eta)
        report = tracker.report()
        with torch.no_grad():  # where the μ steps left the ratios: the excess past the bound
            logp = _token_logp(torch, policy, task, q, tokens)
            if sequence_level:
                end = clip_region(
                    _sequence_ratios(torch, logp, old_logp, mask, spec.ratio),
                    adv,
                    epsilon=spec.epsilon_low,
                    epsilon_high=spec.epsilon_high,
                )
            else:
                end = clip_region(
                    torch.exp(logp - old_logp), adv, mask=mask, epsilon=spec.epsilon_low, epsilon_high=spec.epsilon_high
                )
            dist = _logits_logp(torch, policy, task, q, tokens)
            kl = ((old_dist.exp() * (old_dist - dist)).sum(-1) * mask).sum() / mask.sum().clamp(min=1)
        run.clip_fraction.append([(r.clip_seq if sequence_level else r.clip).fraction for r in report.records])
        run.overshoot.append(end.mean_excess)
        run.max_overshoot.append(end.max_excess)
        run.kl.append(float(kl))
        run.eta.append(etas)
        run.momentum_ratio.append(report.records[-1].overshoot)
        run.eps_dominance.append(reward_scale(opt).elasticity)
        run.reward.append(float(rewards.mean()))
        run.length.append(float(mask.sum(1).double().mean()))
        if progress is not None:
            progress.update(1)
    return run


COLUMNS = (  # (summary key, header, format, legend)
    ("reward", "reward", ".3f", "mean reward, last fifth of the run"),
    ("length", "length", ".2f", "mean completion length (tokens), last fifth"),
    ("length_drift", "Δlength", "+.2f", "length drift: last fifth − first fifth (the reward ignores length)"),
    ("clip_fraction", "clip frac", ".3f", "share of tokens (GSPO: sequences) in the clip region, inner steps k ≥ 1"),
    ("overshoot", "overshoot", ".3f", "mean excess of clipped ratios past the bound after the μ inner steps"),
    ("eps_dominance", "ε-dom", ".1e", "elasticity of Adam's step to the reward scale (0: ϵ ≪ √v̂; 1: ϵ dominates)"),
    (
        "weight_length_corr",
        "corr(ω,len)",
        "+.2f",
        "corr(mean ω, length) in a group: < 0 for a 1/|o| length preference (−1 only for two lengths)",
    ),
)


def format_table(runs: Sequence[VariantRun]) -> str:
    """The comparison table (one row per variant) with a legend."""

    def cell(x: float, f: str) -> str:
        return "n/a" if not np.isfinite(x) else format(x, f)

    width = max([7] + [len(r.variant) for r in runs])
    head = f"{'variant':<{width}}  " + "  ".join(f"{h:>11}" for _, h, _, _ in COLUMNS)
    lines = [head, "-" * len(head)]
    for r in runs:
        s = r.summary()
        lines.append(f"{r.variant:<{width}}  " + "  ".join(f"{cell(s[k], f):>11}" for k, _, f, _ in COLUMNS))
    lines.append("")
    lines += [f"  {h:>11}: {d}" for _, h, _, d in COLUMNS]
    return "\n".join(lines)


FIGURES = ("reward_length", "clip_overshoot", "adam")


def figures(runs: Sequence[VariantRun], cfg: Optional[DemoConfig] = None) -> Dict[str, Any]:
    """The demo's figures as matplotlib figures, by name (``FIGURES``): reward and length per batch;
    clip-region fraction per inner step and the overshoot past the bound; ε-dominance and the Adam
    step ratio at the last inner step against β1/√β2."""
    import matplotlib.pyplot as plt

    def smooth(x):
        x = np.asarray(x, dtype=np.float64)
        w = max(1, len(x) // 10)
        return np.convolve(x, np.ones(w) / w, mode="valid")

    out: Dict[str, Any] = {}
    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in runs:
        ax0.plot(smooth(r.reward), label=r.variant)
        ax1.plot(smooth(r.length), label=r.variant)
    ax0.set(xlabel="batch", ylabel="mean reward", title="reward (moving average)")
    ax1.set(xlabel="batch", ylabel="mean completion length", title="length (the reward ignores it)")
    ax0.legend(fontsize=7)
    fig.tight_layout()
    out["reward_length"] = fig

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in runs:
        per_k = np.mean(np.asarray(r.clip_fraction, dtype=np.float64), axis=0)
        ax0.plot(np.arange(len(per_k)), per_k, "o-", label=r.variant)
        ax1.plot(smooth(r.overshoot), label=r.variant)
    ax0.set(
        xlabel="inner step k",
        ylabel="fraction in the clip region",
        title="clip region before each inner step (k = 0: always 0)",
    )
    ax1.set(xlabel="batch", ylabel="mean excess past the bound", title="overshoot after the μ steps")
    for ax in (ax0, ax1):  # inner steps and batches are whole numbers
        ax.xaxis.get_major_locator().set_params(integer=True)
    ax0.legend(fontsize=7)
    fig.tight_layout()
    out["clip_overshoot"] = fig

    fig, (ax0, ax1) = plt.subplots(1, 2, figsize=(10, 3.8))
    for r in runs:
        ax0.plot(r.eps_dominance, label=r.variant)
        ax1.plot(r.momentum_ratio, label=r.variant)
    ax0.set(
        xlabel="batch", ylabel="update-weighted ρ/(1+ρ), ρ = ϵ/√v̂", title="ε-dominance (0: reward scale has no effect)"
    )
    if cfg is not None:
        b1, b2 = cfg.betas
        ax1.axhline(b1 / math.sqrt(b2), color="grey", lw=0.8, label="β1/√β2")
    ax1.set(xlabel="batch", ylabel="‖u_t‖/‖u_t−1‖", title="Adam step ratio at the last inner step")
    ax0.legend(fontsize=7)
    ax1.legend(fontsize=7)
    fig.tight_layout()
    out["adam"] = fig
    return out


def plot_runs(runs: Sequence[VariantRun], out_dir: str, cfg: Optional[DemoConfig] = None) -> List[str]:
    """Writes the demo's figures as PNG files ``out_dir/<name>.png``; returns their paths."""
    import matplotlib.pyplot as plt

    os.makedirs(out_dir, exist_ok=True)
    paths = []
    for name, fig in figures(runs, cfg).items():
        paths.append(os.path.join(out_dir, f"{name}.png"))
        fig.savefig(paths[-1], dpi=90)
        plt.close(fig)
    return paths


def run_demo(cfg: Optional[DemoConfig] = None, **changes: Any) -> Tuple[List[VariantRun], List[str]]:
    """Trains every variant of ``cfg`` (fields of ``DemoConfig`` may be passed as keywords), prints
    nothing, returns (runs, paths of the PNG files written; none with ``plots=False``)."""
    cfg = dataclasses.replace(cfg or DemoConfig(), **changes)
    if cfg.group_size < 2:
        raise ValueError(f"group_size: expected at least 2 completions per prompt, got {cfg.group_size}")
    for name in ("inner_steps", "steps", "prompts_per_step", "max_len", "hidden"):
        if getattr(cfg, name) < 1:
            raise ValueError(f"{name}: expected an integer >= 1, got {getattr(cfg, name)}")
    if not 2 <= cfg.num_questions:
        raise ValueError(f"num_questions: expected at least 2, got {cfg.num_questions}")
    from . import _variants

    for v in cfg.variants:  # fail on a bad name before training anything
        _variants.make(v, max_completion_length=cfg.max_len)
    bar = None
    if cfg.progress:
        from tqdm.auto import tqdm

        bar = tqdm(total=cfg.steps * len(cfg.variants), unit="batch", desc="grpokit demo")
    runs = []
    threads = torch_threads = None
    try:
        import torch

        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # tiny matrices: one thread is fastest, and fair on a shared machine
        torch_threads = torch
        for v in cfg.variants:
            if bar is not None:
                bar.set_postfix_str(str(v))
            runs.append(train_variant(v, cfg, bar))
    finally:
        if torch_threads is not None:
            torch_threads.set_num_threads(threads)
        if bar is not None:
            bar.close()
    paths = plot_runs(runs, cfg.out_dir, cfg) if cfg.plots else []
    return runs, paths


def parse_seeds(text: str, first: int = 0) -> List[int]:
    """``--seeds``: ``"N"`` is the N seeds ``first, first + 1, …``; ``"0,3,7"`` names them."""
    try:
        seeds = [int(x) for x in str(text).split(",")]
    except ValueError:
        raise ValueError(f"seeds: expected a count N or comma-separated integers, got {text!r}") from None
    if "," not in str(text):
        if seeds[0] < 1:
            raise ValueError(f"seeds: expected a count >= 1, got {seeds[0]}")
        seeds = list(range(first, first + seeds[0]))
    if len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds: each seed once, got {text!r}")
    return seeds


def run_seeds(seeds: Sequence[int], cfg: Optional[DemoConfig] = None, **changes: Any) -> List[List[VariantRun]]:
    """``run_demo`` once per seed, without plots; returns the runs as ``[seed][variant]``."""
    if not seeds:
        raise ValueError("seeds: expected at least one seed")
    cfg = dataclasses.replace(cfg or DemoConfig(), **changes)
    return [run_demo(cfg, seed=int(s), plots=False)[0] for s in seeds]


def format_seeds_table(runs_by_seed: Sequence[Sequence[VariantRun]], seeds: Sequence[int]) -> str:
    """The comparison table over seeds: each column's mean ± standard deviation (n − 1) over the seeds
    (NaN seeds left out), then each variant's length drift per seed and in how many seeds it was > 0."""
    names = [r.variant for r in runs_by_seed[0]]
    rows = [[runs[i].summary() for runs in runs_by_seed] for i in range(len(names))]

    def cell(values: Sequence[float], f: str) -> str:
        x = np.asarray(values, dtype=np.float64)
        x = x[np.isfinite(x)]
        if x.size == 0:
            return "n/a"
        sd = float(np.std(x, ddof=1)) if x.size > 1 else 0.0
        return f"{format(float(np.mean(x)), f)} ± {format(sd, f.lstrip('+'))}"

    cells = [[cell([s[k] for s in row], f) for k, _, f, _ in COLUMNS] for row in rows]
    width = max([7] + [len(n) for n in names])
    cw = [max([len(h)] + [len(c[i]) for c in cells]) for i, (_, h, _, _) in enumerate(COLUMNS)]
    head = f"{'variant':<{width}}  " + "  ".join(f"{h:>{w}}" for (_, h, _, _), w in zip(COLUMNS, cw))
    lines = [f"mean ± std over {len(seeds)} seeds ({', '.join(map(str, seeds))})", head, "-" * len(head)]
    lines += [f"{n:<{width}}  " + "  ".join(f"{c:>{w}}" for c, w in zip(row, cw)) for n, row in zip(names, cells)]
    head = f"{'Δlength':<{width}}  " + "  ".join(f"{'seed ' + str(s):>8}" for s in seeds) + "   longer in"
    lines += ["", head, "-" * len(head)]
    for n, row in zip(names, rows):
        drift = [s["length_drift"] for s in row]
        lines.append(
            f"{n:<{width}}  "
            + "  ".join(f"{d:>+8.2f}" for d in drift)
            + f"   {sum(d > 0 for d in drift)} of {len(drift)} seeds"
        )
    lines.append("")
    lines += [f"  {h:>11}: {d}" for _, h, _, d in COLUMNS]
    return "\n".join(lines)
