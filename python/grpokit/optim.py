"""Momentum-aware clipping: :class:`MomentumGuard` keeps Adam from carrying tokens past the clip region.

With μ > 1 inner steps on one batch, Adam's momentum keeps moving a token's ratio after it has
left the clip region, where its own advantage gradient is zero (Props 3, 7; docs/diagnostics.md
§3). The guard wraps a torch Adam/AdamW and offers two remedies, composable:

* ``"reset"``: the first moment (``reset_second_moment``: also the second, and the step count) is
  zeroed when a new generation batch starts (:meth:`MomentumGuard.new_batch`).
* ``"lookahead"``: before each step, the update Adam is about to apply is computed from its real
  state and the gradients (the diagnostics' engine op, ``_optim.preconditioned_update``), each
  token's log-ratio is predicted along it to first order (one forward-mode JVP of the per-token
  log-probabilities, or one extra forward pass at the trial parameters), and the step is scaled by
  the largest η ∈ [0, 1] that keeps every token within ``margin`` of the bound its advantage pushes
  towards. The scale is applied through the learning rate, so Adam's moments are untouched.

No clipping with μ = 1, the paper's own suggestion, is a configuration, not a mode.
"""

from __future__ import annotations

import contextlib
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from .diagnostics import _optim

MODES = ("off", "reset", "lookahead", "reset+lookahead")
PREDICTIONS = ("jvp", "secant")


@dataclass
class GuardRecord:
    """One optimizer step through the guard.

    ``eta``: the step's scale (1: unchanged); ``n_valid`` tokens (or sequences) checked,
    ``n_overshoot`` of them predicted past bound + margin by the full step and ``max_excess_full``
    the largest such predicted excess (ratio units), ``max_excess_scaled`` the same after scaling;
    ``n_outside`` already past bound + margin before the step; ``momentum_removed``: lr·‖m̂/(√v̂+ϵ)‖
    of the first moment zeroed at this batch start (0 when nothing was reset).
    """

    step: int
    batch: int
    eta: float = 1.0
    n_valid: int = 0
    n_overshoot: int = 0
    n_outside: int = 0
    max_excess_full: float = 0.0
    max_excess_scaled: float = 0.0
    momentum_removed: float = 0.0


def _adam(optimizer: Any) -> Any:
    import torch

    opt = getattr(optimizer, "optimizer", optimizer)  # accelerate's AcceleratedOptimizer
    if type(opt) not in (torch.optim.Adam, torch.optim.AdamW):
        raise TypeError(
            f"optimizer: MomentumGuard supports torch.optim.Adam and torch.optim.AdamW, got {type(opt).__name__} "
            "(the look-ahead reproduces their update exactly)"
        )
    _optim.check_adam(opt)
    return opt


class MomentumGuard:
    """Wraps a torch ``Adam``/``AdamW``; call :meth:`new_batch` when a generation batch starts and
    :meth:`step` instead of ``optimizer.step()``.

    Args:
        optimizer: ``torch.optim.Adam`` or ``AdamW`` (amsgrad, maximize refused).
        mode: ``"off"`` (``step`` is ``optimizer.step()``, bitwise), ``"reset"``, ``"lookahead"`` or
            ``"reset+lookahead"``.
        margin: how far past its clip bound (ratio units) a token may be predicted to land.
        hold_outside: tokens already past bound + margin (by a prediction error of an earlier
            step) may not move further out either; η may then be 0 (the parameters stay, the moments
            still advance). False leaves them to the loss, whose gradient on them is zero, and
            momentum may carry them on.
        max_fraction: the share of valid tokens allowed past bound + margin per step (0: none, the
            strict rule, where one token at its bound can stop every later step of the batch).
        epsilon, epsilon_high: the clip widths (ε_low, ε_high) of the loss, as TRL names them.
        predict: ``"jvp"`` (default; ``torch.func.jvp`` through the model: exact first-order
            prediction, cost of about one forward-mode pass) or ``"secant"`` (one extra forward
            pass at the full step's parameters, for models without forward-mode AD; exact at η = 1).
        reset_second_moment: ``"reset"`` also zeroes v and the step count (a fresh Adam).
        model: the module whose parameters the optimizer updates (needed by ``"lookahead"``).
    """

    def __init__(
        self,
        optimizer: Any,
        mode: str = "lookahead",
        *,
        margin: float = 0.01,
        hold_outside: bool = True,
        max_fraction: float = 0.0,
        epsilon: float = 0.2,
        epsilon_high: Optional[float] = None,
        predict: str = "jvp",
        reset_second_moment: bool = False,
        model: Any = None,
    ) -> None:
        self.optimizer = _adam(optimizer)
        if mode not in MODES:
            raise ValueError(f"mode: expected one of {', '.join(MODES)}, got {mode!r}")
        if predict not in PREDICTIONS:
            raise ValueError(f"predict: expected 'jvp' or 'secant', got {predict!r}")
        eps_high = epsilon if epsilon_high is None else epsilon_high
        for name, x in (("margin", margin), ("epsilon", epsilon), ("epsilon_high", eps_high)):
            if not (isinstance(x, (int, float)) and math.isfinite(x) and x >= 0):
                raise ValueError(f"{name}: expected a finite number >= 0, got {x!r}")
        if not (isinstance(max_fraction, (int, float)) and 0 <= max_fraction < 1):
            raise ValueError(f"max_fraction: expected a number in [0, 1), got {max_fraction!r}")
        if "lookahead" in mode and model is None:
            raise ValueError("model: required with mode 'lookahead' (the module the optimizer updates)")
        self.mode = mode
        self.margin = float(margin)
        self.hold_outside = bool(hold_outside)
        self.max_fraction = float(max_fraction)
        self.epsilon, self.epsilon_high = float(epsilon), float(eps_high)
        self.predict = predict
        self.reset_second_moment = bool(reset_second_moment)
        self.model = model
        self.records: List[GuardRecord] = []
        self.steps = 0
        self.batches = 0
        self._removed = 0.0
        self.predicted: Any = None  # the last look-ahead's predicted log-ratios after the (scaled) step

    # ---- optimizer-like surface ----------------------------------------------------------------

    @property
    def param_groups(self) -> List[Dict[str, Any]]:
        return self.optimizer.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> Dict[str, Any]:
        """The optimizer's state dict and the guard's (configuration, counters, records)."""
        return {
            "optimizer": self.optimizer.state_dict(),
            "guard": {
                "mode": self.mode,
                "margin": self.margin,
                "hold_outside": self.hold_outside,
                "max_fraction": self.max_fraction,
                "epsilon": self.epsilon,
                "epsilon_high": self.epsilon_high,
                "predict": self.predict,
                "reset_second_moment": self.reset_second_moment,
                "steps": self.steps,
                "batches": self.batches,
                "records": [asdict(r) for r in self.records],
            },
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != {"optimizer", "guard"}:
            raise ValueError("state: expected a MomentumGuard.state_dict() (keys 'optimizer', 'guard')")
        g = dict(state["guard"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.records = [GuardRecord(**r) for r in g.pop("records")]
        for k, v in g.items():
            setattr(self, k, v)

    # ---- remedies ------------------------------------------------------------------------------

    def new_batch(self) -> None:
        """A new generation batch starts: with ``"reset"``, zero the first moment (and with
        ``reset_second_moment`` the second moment and the step count)."""
        self.batches += 1
        self._removed = 0.0
        if "reset" not in self.mode:
            return
        import torch

        states = [s for s in _optim.param_states(self.optimizer) if s.has_state and s.step >= 1]
        removed2 = 0.0
        for s in states:  # the momentum-only step that the reset removes (diagnostics' engine op)
            u = _optim.preconditioned_update(s, momentum_only_next=True)
            removed2 += s.lr**2 * float(torch.dot(u, u))
        self._removed = math.sqrt(removed2)
        for st in self.optimizer.state.values():
            if "exp_avg" in st:
                st["exp_avg"].zero_()
                if self.reset_second_moment:
                    st["exp_avg_sq"].zero_()
                    st["step"].zero_() if torch.is_tensor(st["step"]) else st.update(step=0)

    def step(
        self,
        logp_fn: Optional[Callable[[Callable[..., Any]], Any]] = None,
        old_logp: Any = None,
        advantages: Any = None,
        mask: Any = None,
    ) -> GuardRecord:
        """One optimizer step (call after ``loss.backward()``), scaled by η with ``"lookahead"``:
        :meth:`plan`, then ``optimizer.step()`` under :meth:`scaled`.

        ``logp_fn(forward)`` returns the per-token log-probabilities (B, T) of the batch (or
        per-sequence ones (B,)), where ``forward(*args, **kwargs)`` calls the model with given
        parameters, as in ``diagnostics.momentum_lookahead``; ``old_logp`` has the same shape,
        ``advantages`` is (B,), ``mask`` (B, T) optional. Not needed without ``"lookahead"``.
        """
        rec = self.plan(logp_fn, old_logp, advantages, mask)
        with self.scaled(rec.eta):
            self.optimizer.step()
        return rec

    def plan(
        self,
        logp_fn: Optional[Callable[[Callable[..., Any]], Any]] = None,
        old_logp: Any = None,
        advantages: Any = None,
        mask: Any = None,
    ) -> GuardRecord:
        """The coming step's decisions (η, tokens predicted to overshoot), recorded, without
        stepping: for loops that call ``optimizer.step()`` themselves (the TRL integration)."""
        rec = GuardRecord(step=self.steps, batch=self.batches, momentum_removed=self._removed)
        self._removed = 0.0
        if "lookahead" in self.mode:
            if logp_fn is None or old_logp is None or advantages is None:
                raise ValueError("step: mode 'lookahead' needs logp_fn, old_logp and advantages")
            self._lookahead(rec, logp_fn, old_logp, advantages, mask)
        self.steps += 1
        self.records.append(rec)
        return rec

    @contextlib.contextmanager
    def scaled(self, eta: float) -> Iterator[None]:
        """The learning rates times η inside the block (η = 1: untouched): scales Adam's whole
        update, decoupled weight decay included, and leaves its moments as they would be."""
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        if eta != 1.0:
            for g in self.optimizer.param_groups:
                g["lr"] = g["lr"] * eta
        try:
            yield
        finally:
            if eta != 1.0:
                for g, lr in zip(self.optimizer.param_groups, lrs):
                    g["lr"] = lr

    def pending_update(self) -> Dict[str, Any]:
        """Δθ per parameter name that ``optimizer.step()`` would apply now (from the state and the
        gradients; parameters without a gradient are absent)."""
        import torch

        out = {}
        for s in _optim.param_states(self.optimizer, self.model):
            p = s.param
            if p.grad is None:
                continue
            g = p.grad.detach().double().reshape(-1)
            theta = p.detach().double().reshape(-1)
            if s.weight_decay and not s.decoupled:
                g = g + s.weight_decay * theta  # Adam's L2 term enters the moments
            m = s.exp_avg.double() if s.has_state else torch.zeros_like(g)
            v = s.exp_avg_sq.double() if s.has_state else torch.zeros_like(g)
            nxt = _optim.ParamState(
                name=s.name,
                param=p,
                exp_avg=s.beta1 * m + (1 - s.beta1) * g,
                exp_avg_sq=s.beta2 * v + (1 - s.beta2) * g * g,
                step=s.step + 1,
                beta1=s.beta1,
                beta2=s.beta2,
                eps=s.eps,
                lr=s.lr,
                weight_decay=s.weight_decay,
                decoupled=s.decoupled,
            )
            d = -s.lr * _optim.preconditioned_update(nxt)
            if s.weight_decay and s.decoupled:
                d = d - s.lr * s.weight_decay * theta
            out[s.name] = d.to(dtype=p.dtype).reshape(p.shape)
        return out

    def _lookahead(self, rec: GuardRecord, logp_fn: Any, old_logp: Any, advantages: Any, mask: Any) -> None:
        import torch
        from torch.func import functional_call, jvp

        params = {n: p.detach() for n, p in self.model.named_parameters()}
        delta = self.pending_update()
        tangent = {n: delta.get(n, torch.zeros_like(p)) for n, p in params.items()}

        def logp_at(ps: Dict[str, Any]) -> Any:
            return logp_fn(lambda *a, **kw: functional_call(self.model, ps, a, kw))

        with torch.no_grad():
            if self.predict == "jvp":
                try:
                    now, slope = jvp(logp_at, (params,), (tangent,))
                except NotImplementedError as exc:  # e.g. fused attention kernels
                    why = str(exc).splitlines()[0]
                    raise NotImplementedError(
                        f"predict='jvp': the model has an op without forward-mode AD ({why}); use predict='secant'"
                    ) from exc
            else:
                now = logp_at(params)
                slope = logp_at({n: p + tangent[n] for n, p in params.items()}) - now
        old = torch.as_tensor(old_logp).detach().to(now.device, torch.float64)
        r = (now.double() - old).cpu().numpy()  # log-ratio now
        s = slope.double().cpu().numpy()  # its change along the full step (first order)
        a = np.asarray(torch.as_tensor(advantages).detach().double().cpu()).reshape(-1)
        a = a.reshape(a.shape + (1,) * (r.ndim - 1))
        valid = np.ones(r.shape, bool) if mask is None else np.asarray(torch.as_tensor(mask).bool().cpu())
        # the bound each token's advantage pushes towards, in log-ratio, signed so "out" is +
        hi = math.log(1 + self.epsilon_high + self.margin)
        lo_ratio = 1 - self.epsilon - self.margin
        lo = math.log(lo_ratio) if lo_ratio > 0 else -math.inf
        sign = np.sign(a) * valid
        pos, neg = sign > 0, sign < 0
        room = np.where(pos, hi - r, np.where(neg, r - lo, np.inf))  # distance to bound + margin
        push = np.where(pos, s, np.where(neg, -s, 0.0))  # outward speed along the full step
        inside = room >= 0
        # the scale at which each outward-moving token reaches bound + margin (0: already past, held)
        limit = (inside | self.hold_outside) & (push > 0)
        reach = np.sort(np.maximum(room[limit], 0.0) / push[limit])
        allowed = int(math.floor(self.max_fraction * valid.sum()))  # tokens that may cross
        eta = float(min(1.0, reach[allowed])) if reach.size > allowed else 1.0

        def excess(e: float) -> float:  # predicted ratio excess past the bound, worst token
            x = r + e * s
            ex = np.where(pos, np.exp(x) - (1 + self.epsilon_high), np.where(neg, (1 - self.epsilon) - np.exp(x), 0.0))
            return float(max(0.0, np.max(ex))) if ex.size else 0.0

        rec.eta = eta
        self.predicted = r + eta * s
        rec.n_valid = int(valid.sum())
        rec.n_outside = int(np.sum(~inside & (sign != 0)))
        rec.n_overshoot = int(np.sum(inside & (push > room)))
        rec.max_excess_full = excess(1.0)
        rec.max_excess_scaled = excess(eta)

    def to_dict(self) -> Dict[str, float]:
        """The last step's decisions, for logging (``DiagnosticsCallback`` keys ``guard/...``)."""
        if not self.records:
            return {}
        r = self.records[-1]
        return {
            "eta": r.eta,
            "tokens_overshoot": float(r.n_overshoot),
            "tokens_outside": float(r.n_outside),
            "max_excess_full": r.max_excess_full,
            "momentum_removed": r.momentum_removed,
        }


__all__ = ["GuardRecord", "MODES", "MomentumGuard"]
