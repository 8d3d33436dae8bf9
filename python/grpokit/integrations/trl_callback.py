"""``DiagnosticsCallback``: grpokit's diagnostics in a TRL ``GRPOTrainer``'s logs (docs/trl.md)."""

from __future__ import annotations

import math
import warnings
from typing import Any, Dict, List, Optional

import torch
from transformers import TrainerCallback

from .. import diagnostics
from .trl_config import spec_from_config

PREFIX = "grpokit/"


def clipping_can_be_active(args: Any) -> bool:
    """Whether the ratio π/π_old can leave 1 in TRL's loop: only if a generation batch is reused
    (``num_iterations`` > 1) or spans several optimizer steps (``steps_per_generation`` >
    ``gradient_accumulation_steps``); otherwise π_old = π at every update and no token is clipped."""
    return args.num_iterations > 1 or args.steps_per_generation > args.gradient_accumulation_steps


def normalization_audit(args: Any, spec: Any, num_processes: int = 1, normalization: str = "trl") -> Dict[str, Any]:
    """Is the effective gradient of an optimizer step invariant to how its batch is split into
    micro-batches (gradient accumulation, ``steps_per_generation``) and processes?

    Returns ``{"invariant": bool, "reason": str}``. TRL's micro-batches and processes hold equal
    numbers of completions, so per-sequence means with ÷K and ÷processes are exact; a token mean is
    exact only with a global token count of the step itself.
    """
    K, S = args.gradient_accumulation_steps, args.steps_per_generation
    agg = spec.aggregation
    if spec.divide_by_ga:
        if agg == "token_mean":
            ok = K == 1 and num_processes == 1
            why = (
                (
                    "each micro-batch is divided by its own token count, then by K: micro-batches with more tokens "
                    "get less weight per token (TRL's bnpo)"
                )
                if not ok
                else "one micro-batch, one process"
            )
            return {"invariant": ok, "reason": why}
        return {"invariant": True, "reason": "per-sequence normaliser; micro-batches hold equal numbers of sequences"}
    if agg == "token_mean":
        if K == S or normalization == "exact":
            return {"invariant": True, "reason": "global token count of the optimizer step (num_items_in_batch)"}
        return {
            "invariant": False,
            "reason": f"steps_per_generation ({S}) != gradient_accumulation_steps ({K}): TRL rescales the "
            "generation batch's token count by K/S, an estimate of the step's count "
            "(use normalization='exact')",
        }
    return {"invariant": True, "reason": "global sequence count of the optimizer step"}


class DiagnosticsCallback(TrainerCallback):
    """Adds grpokit diagnostics to a ``GRPOTrainer``'s logs (keys ``grpokit/...``) and warns on
    steps that carry no learning signal, non-finite losses or gradients, and Adam-ε dominance.

    Works with ``grpokit.integrations.trl.GRPOTrainer`` (which attaches itself to the callback);
    with TRL's own trainer, the loss inputs are not visible and only the optimizer diagnostics run:
    ``trainer.add_callback(DiagnosticsCallback(trainer))``.

    Per optimizer step (values averaged over the logging interval by TRL's logger):

    * ``clip_region/inner_step_k``: fraction of valid tokens outside the clip region
      [1−ε, 1+ε_high] on the side that stops the gradient (A-sign aware), at inner step k of
      ``num_iterations``; ``clipping_can_be_active``: 0 when the configuration makes every ratio 1.
    * ``overshoot``, ``overshoot_bound``, ``overshoot_predicted``, ``stale_momentum_share``: Adam's
      ‖u_t‖/‖u_{t−1}‖, its bound β1/√β2, the finite-t coefficient of a zero-gradient step
      (``diagnostics.overshoot_coefficient``) and the share of the update carried by momentum
      (``diagnostics.MomentumTracker``).
    * ``eps_dominance``: fraction of coordinates with ρ = ε/√v̂ > ``rho_threshold`` and the step's
      ``reward_scale_elasticity`` (``diagnostics.reward_scale`` on the optimizer's real state), on
      the 2nd optimizer step and every ``eps_every`` steps after it.
    * ``prefix_bias``: ``prefix_normalized_mean`` and ``weight_length_corr_mean`` of
      ``diagnostics.prefix_bias`` on the step's complete groups (every ``prefix_every``-th
      generation batch, all its inner steps).
    * ``zero_signal_fraction``: share of completions with A = 0; ``non_finite_loss``/``non_finite_grad``.
    * ``normalization_invariant``: 1 when the step's gradient does not depend on the batch split.
    * ``guard/...``: with ``GRPOTrainer(momentum_guard=...)``, the guard's decisions for the step
      (``grpokit.optim.MomentumGuard.to_dict``: η, tokens predicted to overshoot, momentum removed).

    Args:
        trainer: the trainer (set automatically by grpokit's ``GRPOTrainer``).
        rho_threshold: ε-dominance threshold on ρ = ε/√v̂; warns when more than ``eps_warn_fraction``
            of coordinates exceed it.
        prefix_every: compute the prefix bias on every N-th generation batch, all its optimizer steps
            (0: never). Default 2: it is the callback's largest cost in small models.
        eps_every: compute the ε-dominance every N optimizer steps (0: never). v̂ is an average over
            ~1/(1−β2) = 1000 steps, so it moves slowly; a full pass over the optimizer state each step
            would cost more than the rest of the callback.
        momentum_every: run the momentum tracker (clip region per inner step, overshoot, stale share)
            on every N-th generation batch, all its inner steps (0: never). Default 2: its cost is a
            fixed amount per parameter tensor, large next to a tiny model's step (benchmarks/RESULTS.md).
        warn: emit ``warnings.warn`` for the conditions above (each cause once per training run,
            except non-finite values, which warn every time).
    """

    def __init__(
        self,
        trainer: Any = None,
        *,
        rho_threshold: float = 0.1,
        eps_warn_fraction: float = 0.5,
        prefix_every: int = 2,
        eps_every: int = 10,
        momentum_every: int = 2,
        warn: bool = True,
    ) -> None:
        self.trainer = trainer
        self.rho_threshold = float(rho_threshold)
        self.eps_warn_fraction = float(eps_warn_fraction)
        self.prefix_every = int(prefix_every)
        self.eps_every = int(eps_every)
        self.momentum_every = int(momentum_every)
        self.warn = warn
        self.messages: List[str] = []  # every warning text, in order
        self._warned: set = set()
        self._tracker: Optional[diagnostics.MomentumTracker] = None
        self._optim_steps = 0

    # ---- helpers ----------------------------------------------------------------------------------

    def _say(self, key: str, text: str, once: bool = True) -> None:
        if once and key in self._warned:
            return
        self._warned.add(key)
        self.messages.append(text)
        if self.warn:
            warnings.warn(f"grpokit: {text}", RuntimeWarning, stacklevel=2)

    def _log(self, values: Dict[str, float]) -> None:
        store = self.trainer._metrics["train"]
        for k, v in values.items():
            store[PREFIX + k].append(float(v))

    # ---- events -----------------------------------------------------------------------------------

    def on_train_begin(self, args, state, control, **kwargs):
        if self.trainer is None:
            raise ValueError("DiagnosticsCallback: pass the trainer, DiagnosticsCallback(trainer)")
        if not clipping_can_be_active(args):
            self._say(
                "clip",
                "clipping cannot be active in this configuration (num_iterations = 1 and "
                "steps_per_generation <= gradient_accumulation_steps): every update starts at π_old = π, "
                "so the ratio is 1 and a clip fraction of 0 is expected, not a bug",
            )
        spec = getattr(self.trainer, "loss_spec", None)
        if spec is None:  # TRL's own trainer: audit the TRL loss its config names
            spec = spec_from_config(args)
        audit = normalization_audit(
            args, spec, self.trainer.accelerator.num_processes, getattr(self.trainer, "normalization", "trl")
        )
        self.audit = audit
        if not audit["invariant"]:
            self._say("norm", f"the step's gradient depends on how the batch is split: {audit['reason']}")

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        t = self.trainer
        window = self._world_window(getattr(t, "grpokit_window", None) or [])
        if hasattr(t, "grpokit_window"):
            t.grpokit_window = []
        out: Dict[str, float] = {"clipping_can_be_active": float(clipping_can_be_active(args))}
        spec = getattr(t, "loss_spec", None)
        out["normalization_invariant"] = float(self.audit["invariant"])
        # non-finite loss / gradients
        bad_loss = sum(int((~torch.isfinite(w["loss"])).sum()) for w in window)
        out["non_finite_loss"] = float(bad_loss)
        if bad_loss:
            self._say(
                "nan_loss", f"step {state.global_step + 1}: non-finite loss in {bad_loss} micro-batch(es)", once=False
            )
        named = [(n, p.grad) for n, p in t.model.named_parameters() if p.grad is not None]
        bad_grad = []
        if named:  # one fused reduction; names are looked up only when something is non-finite
            norms = torch.stack(torch._foreach_norm([g for _, g in named]))
            if not bool(torch.isfinite(norms).all()):
                bad_grad = [n for (n, _), v in zip(named, norms.tolist()) if not math.isfinite(v)]
        out["non_finite_grad"] = float(len(bad_grad))
        if bad_grad:
            self._say(
                "nan_grad",
                f"step {state.global_step + 1}: non-finite gradients in {len(bad_grad)} tensors (first: {bad_grad[0]})",
                once=False,
            )
        # learning signal
        if window:
            adv = torch.cat([w["advantages"].reshape(w["advantages"].shape[0], -1)[:, 0] for w in window])
            zero = float((adv == 0).double().mean())
            out["zero_signal_fraction"] = zero
            if zero == 1.0:
                self._say(
                    "signal",
                    f"step {state.global_step + 1} carries no learning signal: every group has zero "
                    "reward variance (all advantages are 0), so the policy gradient is 0 and only "
                    "regularisers, weight decay and Adam momentum move the weights",
                    once=False,
                )
        # optimizer: momentum tracker (inner steps) and ε-dominance (skipped when gradients are not finite)
        opt = getattr(optimizer, "optimizer", optimizer)
        adam = opt is not None and opt.__class__.__name__ in ("Adam", "AdamW") and not bad_grad
        if adam and window and self.momentum_every:
            if self._generation(args, window) % self.momentum_every == 0:
                self._momentum(args, opt, window, out, spec)
        # ε-dominance needs a stepped state: the 2nd optimizer step, then every eps_every steps
        due = self.eps_every and self._optim_steps % self.eps_every == 1 % self.eps_every
        if adam and self._optim_steps > 0 and due:
            # σ in the advantages (TRL's scale_rewards "group"/"batch"/True): a global reward scale
            # then cancels before the optimizer, even with beta != 0 (docs/diagnostics.md §2)
            scale = getattr(args, "scale_rewards", None)
            sigma = None if scale is None else scale not in ("none", False)
            rep = diagnostics.reward_scale(opt, rho_threshold=self.rho_threshold, sigma_in_alpha=sigma)
            out["eps_dominance"] = rep.frac_rho_above
            if sigma is not None:
                out["sigma_in_advantages"] = float(sigma)
            out["reward_scale_elasticity"] = rep.elasticity
            if rep.frac_rho_above > self.eps_warn_fraction:
                self._say(
                    "eps",
                    f"Adam's ε dominates the update: {rep.frac_rho_above:.0%} of coordinates have "
                    f"ε/√v̂ > {self.rho_threshold:g} (ε = {rep.eps:g}); the step then scales with the "
                    f"reward scale (elasticity {rep.elasticity:.2f}) instead of being scale-free — lower "
                    "eps or scale rewards up",
                )
        guard = getattr(t, "momentum_guard", None)  # grpokit.optim.MomentumGuard's decisions for this step
        if guard is not None:
            out.update({f"guard/{k}": v for k, v in guard.to_dict().items()})
        prefix_due = self.prefix_every and window and self._generation(args, window) % self.prefix_every == 0
        if spec is not None and prefix_due:
            out.update(self._prefix(window, spec))
        self._optim_steps += 1
        self._log(out)

    def _world_window(self, window: List[Dict[str, Any]]) -> List[Dict[str, Any]]:
        """The step's micro-batches of every process as one window, so that every rank computes the same
        diagnostics, equal to a one-process run on the same global batch (gradients and optimizer state are
        already identical across ranks after DDP's all-reduce)."""
        acc = getattr(self.trainer, "accelerator", None)
        if not window or acc is None or acc.num_processes == 1:
            return window

        def world(key, fill=0, left=False):
            T = max(w[key].shape[1] for w in window)
            local = torch.cat(
                [
                    torch.nn.functional.pad(
                        w[key], (T - w[key].shape[1], 0) if left else (0, T - w[key].shape[1]), value=fill
                    )
                    for w in window
                ]
            )
            return acc.gather(acc.pad_across_processes(local, dim=1, pad_index=fill, pad_first=left))

        merged = {k: world(k) for k in ("logp", "old_logp", "mask", "completion_ids")}
        merged["prompt_ids"] = world("prompt_ids", left=True)
        merged["prompt_mask"] = world("prompt_mask", left=True)
        merged["advantages"] = acc.gather(
            torch.cat([w["advantages"].reshape(w["advantages"].shape[0], -1)[:, 0] for w in window])
        )
        merged["loss"] = acc.gather(torch.stack([w["loss"].reshape(()) for w in window]))
        merged["step"] = window[-1]["step"]
        return [merged]

    @staticmethod
    def _generation(args, window) -> int:
        """The index of the generation batch the step's micro-batches come from."""
        return window[-1]["step"] // (args.steps_per_generation * args.num_iterations)

    def _momentum(self, args, opt, window, out, spec) -> None:
        S, mu = args.steps_per_generation, args.num_iterations
        k = (window[-1]["step"] // S) % mu  # inner step of the μ-loop over this generation batch
        eps_lo = getattr(spec, "epsilon_low", args.epsilon)
        eps_hi = getattr(spec, "epsilon_high", args.epsilon_high or args.epsilon)
        if self._tracker is None or k == 0 or len(self._tracker.records) >= mu:
            self._tracker = diagnostics.MomentumTracker(opt, epsilon=eps_lo, epsilon_high=eps_hi, mu=mu)
        T = max(w["logp"].shape[1] for w in window)

        def cat(key, fill):
            return torch.cat([torch.nn.functional.pad(w[key], (0, T - w[key].shape[1]), value=fill) for w in window])

        ratio = torch.exp((cat("logp", 0.0) - cat("old_logp", 0.0)).double())
        adv = torch.cat([w["advantages"].reshape(w["advantages"].shape[0], -1)[:, 0] for w in window]).double()
        rec = self._tracker.step(ratio, adv, cat("mask", 0).bool())
        if rec.clip is not None:
            out[f"clip_region/inner_step_{k}"] = rec.clip.fraction
        for name, v in (
            ("overshoot", rec.overshoot),
            ("overshoot_bound", rec.bound),
            ("overshoot_predicted", rec.finite_T),
            ("stale_momentum_share", rec.stale_share),
        ):
            if not math.isnan(v):
                out[name] = v

    def _prefix(self, window, spec) -> Dict[str, float]:
        G = self.trainer.num_generations
        T = max(w["completion_ids"].shape[1] for w in window)

        def pad(x, v):
            return torch.nn.functional.pad(x, (0, T - x.shape[1]), value=v)

        ids = torch.cat([pad(w["completion_ids"], 0) for w in window])
        mask = torch.cat([pad(w["mask"], 0) for w in window]).bool()
        logp = torch.cat([pad(w["logp"], 0.0) for w in window]).double()
        old = torch.cat([pad(w["old_logp"], 0.0) for w in window]).double()
        adv = torch.cat([w["advantages"].reshape(w["advantages"].shape[0], -1)[:, 0] for w in window]).double()
        # TRL shuffles a generation batch's rows: regroup the completions of each prompt (complete groups only)
        P = max(w["prompt_ids"].shape[1] for w in window)
        prompts = torch.cat(
            [
                torch.nn.functional.pad(w["prompt_ids"] * w["prompt_mask"], (P - w["prompt_ids"].shape[1], 0))
                for w in window
            ]
        )
        _, group = torch.unique(prompts, dim=0, return_inverse=True)
        complete = torch.bincount(group)[group] == G
        idx = torch.sort(group.masked_fill(~complete, -1), stable=True).indices[int((~complete).sum()) :]
        if idx.numel() == 0 or not mask[idx].any():
            return {}
        rep = diagnostics.prefix_bias(
            {
                "completion_ids": ids[idx],
                "completion_mask": mask[idx],
                "logp": logp[idx],
                "old_logp": old[idx],
                "advantages": adv[idx],
                "group_size": G,
            },
            spec,
        )
        d = rep.to_dict()
        return {
            "prefix_bias/normalized_mean": d["prefix_normalized_mean"],
            "prefix_bias/shared_normalized": d["shared_normalized"],
            "prefix_bias/weight_length_corr": d["weight_length_corr_mean"],
        }
