"""``GRPOTrainer(momentum_guard=...)``: grpokit.optim.MomentumGuard inside TRL's training loop.

TRL's ``Trainer`` calls ``optimizer.step()`` itself, so the guard runs as a callback: before the
step it resets the moments when a new generation batch starts and plans η on the step's
micro-batches (``MomentumGuard.plan``), the step runs with the learning rates times η, and they are
restored right after it (before the scheduler and the logged learning rate read them). The
decisions are ``trainer.momentum_guard.to_dict()``, logged by ``DiagnosticsCallback``.
"""

from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from transformers import TrainerCallback

from ..optim import MODES, MomentumGuard


def guard_options(momentum_guard: Any) -> Optional[Dict[str, Any]]:
    """``momentum_guard=`` of ``GRPOTrainer``: None, a mode name or a dict of MomentumGuard options
    (``mode`` included); the look-ahead predicts by one extra forward pass (``predict="secant"``) by
    default, as the attention kernels of transformers models lack forward-mode AD."""
    if momentum_guard is None:
        return None
    opts = {"mode": momentum_guard} if isinstance(momentum_guard, str) else dict(momentum_guard)
    if opts.get("mode", "lookahead") not in MODES:
        raise ValueError(
            f"momentum_guard: expected None, one of {', '.join(MODES)} or a dict of options, got {momentum_guard!r}"
        )
    opts.setdefault("predict", "secant")
    return opts


def _pad(x: torch.Tensor, T: int, value: float) -> torch.Tensor:
    return torch.nn.functional.pad(x, (0, T - x.shape[1]), value=value)


class MomentumGuardCallback(TrainerCallback):
    """Runs ``trainer.momentum_guard`` around each optimizer step (added by ``GRPOTrainer``)."""

    def __init__(self, trainer: Any, options: Dict[str, Any]) -> None:
        self.trainer = trainer
        self.options = options
        self._generation: Optional[int] = None
        self._scaled: Any = None

    def _guard(self, optimizer: Any) -> MomentumGuard:
        t = self.trainer
        opt = getattr(optimizer, "optimizer", optimizer)
        if t.momentum_guard is None or t.momentum_guard.optimizer is not opt:
            spec = t.loss_spec
            t.momentum_guard = MomentumGuard(
                opt,
                model=t.accelerator.unwrap_model(t.model),
                epsilon=spec.epsilon_low,
                epsilon_high=spec.epsilon_high,
                **self.options,
            )
        return t.momentum_guard

    def on_pre_optimizer_step(self, args, state, control, optimizer=None, **kwargs):
        t = self.trainer
        window: List[Dict[str, Any]] = list(t.grpokit_window)  # runs first; DiagnosticsCallback clears it
        if not window:
            return
        guard = self._guard(optimizer)
        generation = window[-1]["step"] // (args.steps_per_generation * args.num_iterations)
        if generation != self._generation:
            self._generation = generation
            guard.new_batch()
        T = max(w["completion_ids"].shape[1] for w in window)
        temperature = t.temperature

        def logp_fn(forward):  # the step's micro-batches, completions padded to T
            out = []
            for w in window:
                ids = torch.cat([w["prompt_ids"], w["completion_ids"]], 1)
                am = torch.cat([w["prompt_mask"], w["completion_mask"]], 1)
                C = w["completion_ids"].shape[1]
                logits = forward(input_ids=ids, attention_mask=am, use_cache=False).logits[:, -C - 1 : -1]
                lp = torch.log_softmax(logits.float() / temperature, -1).gather(-1, w["completion_ids"][..., None])
                out.append(_pad(lp.squeeze(-1), T, 0.0))
            return torch.cat(out)

        old = torch.cat([_pad(w["old_logp"].float(), T, 0.0) for w in window])
        adv = torch.cat([w["advantages"].reshape(w["advantages"].shape[0], -1)[:, 0] for w in window])
        mask = torch.cat([_pad(w["mask"].bool(), T, False) for w in window])
        rec = guard.plan(logp_fn, old, adv, mask)
        self._scaled = guard.applied(rec)
        self._scaled.__enter__()

    def on_optimizer_step(self, args, state, control, **kwargs):
        self.trainer.grpokit_window = []  # consumed (also without a DiagnosticsCallback)
        if self._scaled is not None:
            self._scaled.__exit__(None, None, None)
            self._scaled = None
