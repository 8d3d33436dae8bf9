"""Momentum-aware clipping: :class:`MomentumGuard` keeps Adam from carrying tokens past the clip region.

With μ > 1 inner steps on one batch, Adam's momentum keeps moving a token's ratio after it has
left the clip region, where its own advantage gradient is zero (Props 3, 7; docs/diagnostics.md
§3). The guard wraps a torch Adam/AdamW and offers three remedies (the first two composable):

* ``"reset"``: the first moment (``reset_second_moment``: also the second, and the step count) is
  zeroed when a new generation batch starts (:meth:`MomentumGuard.new_batch`).
* ``"lookahead"``: before each step, the update Adam is about to apply is computed from its real
  state and the gradients (the diagnostics' engine op, ``_optim.preconditioned_update``), each
  token's log-ratio is predicted along it to first order (one forward-mode JVP of the per-token
  log-probabilities, or one extra forward pass at the trial parameters), and the step is scaled by
  the largest η ∈ [0, 1] that keeps every token within ``margin`` of the bound its advantage pushes
  towards. The scale is applied through the learning rate, so Adam's moments are untouched.
* ``"consistent"`` (clip-consistent momentum, rank-1 form): the pending update is split into its
  stale part (β1·m) and its fresh part (the gradient), both pushed through the same prediction, and
  the first moment is scaled by the largest γ ∈ [0, 1] for which no token already in the clip
  region is moved further out by fresh + γ·stale. The projection onto the clipped tokens' own
  log-prob gradients would need one backward pass per clipped token; docs/diagnostics.md §5.
* ``"project"`` (per-token step control): the look-ahead's tokens predicted past bound + margin are
  held at it by removing from Adam's step only its component along their log-prob gradients
  (weighted by Adam's own per-coordinate step), instead of shrinking the whole step; η then covers
  what the first order misses. ``hold="momentum"``: a token may still go as far out as the step's
  gradient part alone takes it; only what momentum adds beyond that is removed (the projection form
  of clip-consistent momentum).

No clipping with μ = 1, the paper's own suggestion, is a configuration, not a mode.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from dataclasses import asdict, dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional

import numpy as np

from .diagnostics import _optim

MODES = ("off", "reset", "lookahead", "reset+lookahead", "consistent", "project")
PREDICTIONS = ("jvp", "secant")
HOLDS = ("step", "momentum")
_SLACK = 1e-6  # moves below this share of the step's largest are round-off (a projected token's residual)


@dataclass
class GuardRecord:
    """One optimizer step through the guard.

    ``eta``: the step's scale (1: unchanged); ``n_valid`` tokens (or sequences) checked,
    ``n_overshoot`` of them predicted past bound + margin by the full step and ``max_excess_full``
    the largest such predicted excess (ratio units), ``max_excess_scaled`` the same after scaling;
    ``n_outside`` already past bound + margin before the step; ``momentum_removed``: lr·‖m̂/(√v̂+ϵ)‖
    of the first moment zeroed at this batch start (0 when nothing was reset), plus with
    ``"consistent"`` the removed (1 − γ) share of the stale step; ``momentum_scale`` γ, the factor on
    the first moment (``"consistent"``: ``n_outside`` counts the tokens in the clip region,
    ``n_overshoot`` those of them that momentum carries further out); ``n_projected``: tokens whose
    push ``"project"`` removed from the step.
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
    momentum_scale: float = 1.0
    n_projected: int = 0


def _needs_model(mode: str) -> bool:
    return mode not in ("off", "reset")  # the look-ahead modes predict through the model


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
        mode: ``"off"`` (``step`` is ``optimizer.step()``, bitwise), ``"reset"``, ``"lookahead"``,
            ``"reset+lookahead"``, ``"consistent"`` or ``"project"``.
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
        rounds, max_constraints: ``"project"``: how many times the set of constrained tokens may grow
            (one batched reverse pass for the new tokens' gradients and one prediction each) and its
            largest size (the tokens with the largest predicted excess first; η covers the rest).
        hold: ``"project"``: ``"step"`` holds the tokens against Adam's whole step; ``"momentum"``
            lets each go as far out as the step's gradient part (1 − β1)·g alone would take it (one
            more prediction per step).
        model: the module whose parameters the optimizer updates (needed by ``"lookahead"`` and
            ``"consistent"``).
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
        rounds: int = 8,
        max_constraints: int = 256,
        hold: str = "step",
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
        if not all(isinstance(x, int) and x >= 1 for x in (rounds, max_constraints)):
            raise ValueError(f"rounds, max_constraints: expected integers >= 1, got {rounds!r}, {max_constraints!r}")
        if hold not in HOLDS:
            raise ValueError(f"hold: expected 'step' or 'momentum', got {hold!r}")
        if _needs_model(mode) and model is None:
            raise ValueError(f"model: required with mode {mode!r} (the module the optimizer updates)")
        self.mode = mode
        self.margin = float(margin)
        self.hold_outside = bool(hold_outside)
        self.max_fraction = float(max_fraction)
        self.epsilon, self.epsilon_high = float(epsilon), float(eps_high)
        self.predict = predict
        self.reset_second_moment = bool(reset_second_moment)
        self.model = model
        self.rounds, self.max_constraints = rounds, max_constraints
        self.hold = hold
        self._correction: Optional[Dict[str, Any]] = None  # "project": Δ' − Δ of the planned step
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
                "rounds": self.rounds,
                "max_constraints": self.max_constraints,
                "hold": self.hold,
                "steps": self.steps,
                "batches": self.batches,
                "records": [asdict(r) for r in self.records],
            },
        }

    def load_state_dict(self, state: Dict[str, Any]) -> None:
        if not isinstance(state, dict) or set(state) != {"optimizer", "guard"}:
            raise ValueError("state: expected a MomentumGuard.state_dict() (keys 'optimizer', 'guard')")
        g = dict(state["guard"])
        if _needs_model(g["mode"]) and self.model is None:
            raise ValueError(f"model: required with the loaded mode {g['mode']!r}; pass model= to MomentumGuard")
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

    def step(self, *inputs: Any, **named: Any) -> GuardRecord:
        """One optimizer step (call after ``loss.backward()``): :meth:`plan` with these inputs, then
        ``optimizer.step()`` under :meth:`applied`."""
        rec = self.plan(*inputs, **named)
        with self.applied(rec):
            self.optimizer.step()
        return rec

    def plan(
        self,
        logp_fn: Optional[Callable[[Callable[..., Any]], Any]] = None,
        old_logp: Any = None,
        advantages: Any = None,
        mask: Any = None,
    ) -> GuardRecord:
        """The coming step's decisions (η or the momentum scale γ, tokens predicted to overshoot),
        recorded, without stepping (:meth:`step` steps; loops that call ``optimizer.step()``
        themselves, as TRL's, call this and :meth:`applied`).

        ``logp_fn(forward)`` returns the per-token log-probabilities (B, T) of the batch (or
        per-sequence ones (B,)), where ``forward(*args, **kwargs)`` calls the model with given
        parameters, as in ``diagnostics.momentum_lookahead``; ``old_logp`` has the same shape,
        ``advantages`` is (B,), ``mask`` (B, T) optional. Needed by ``"lookahead"`` and ``"consistent"``.
        """
        rec = GuardRecord(step=self.steps, batch=self.batches, momentum_removed=self._removed)
        self._removed, self._correction = 0.0, None
        if _needs_model(self.mode):
            if logp_fn is None or old_logp is None or advantages is None:
                raise ValueError(f"step: mode {self.mode!r} needs logp_fn, old_logp and advantages")
            plan = {"consistent": self._consistent, "project": self._project}.get(self.mode, self._lookahead)
            plan(rec, logp_fn, old_logp, advantages, mask)
        self.steps += 1
        self.records.append(rec)
        return rec

    @contextlib.contextmanager
    def applied(self, rec: GuardRecord) -> Iterator[None]:
        """Inside the block the learning rates are times η (the whole Adam update, decoupled decay
        included, with the moments as they would be) and, before it, the first moment is times γ
        (``"consistent"``: a lasting change). η = γ = 1: nothing is touched."""
        if rec.momentum_scale != 1.0:
            for st in self.optimizer.state.values():
                if "exp_avg" in st:
                    st["exp_avg"].mul_(rec.momentum_scale)
        lrs = [g["lr"] for g in self.optimizer.param_groups]
        if rec.eta != 1.0:
            for g in self.optimizer.param_groups:
                g["lr"] = g["lr"] * rec.eta
        try:
            yield
            if self._correction is not None and rec is self.records[-1]:  # "project": Δ' − Δ, times η
                import torch

                params = dict(self.model.named_parameters())
                with torch.no_grad():
                    for n, c in self._correction.items():
                        params[n].add_(c, alpha=rec.eta)
                self._correction = None
        finally:
            if rec.eta != 1.0:
                for g, lr in zip(self.optimizer.param_groups, lrs):
                    g["lr"] = lr

    def pending_update(self, split: bool = False) -> Any:
        """Δθ per parameter name that ``optimizer.step()`` would apply now (from the state and the
        gradients; parameters without a gradient are absent); ``split``: (stale, fresh) dicts, the
        parts carried by the first moment β1·m and by the gradient (with weight decay)."""
        import torch

        stale, fresh = {}, {}
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
            v = s.beta2 * v + (1 - s.beta2) * g * g
            parts = []
            for first in (s.beta1 * m, (1 - s.beta1) * g):  # m̂/(√v̂+ϵ) is linear in m
                nxt = dataclasses.replace(s, exp_avg=first, exp_avg_sq=v, step=s.step + 1)
                parts.append(-s.lr * _optim.preconditioned_update(nxt))
            if s.weight_decay and s.decoupled:
                parts[1] = parts[1] - s.lr * s.weight_decay * theta
            stale[s.name], fresh[s.name] = (x.to(dtype=p.dtype).reshape(p.shape) for x in parts)
        return (stale, fresh) if split else {n: stale[n] + fresh[n] for n in stale}

    def _predict(self, logp_fn: Any, old_logp: Any, advantages: Any, mask: Any, deltas: List[Dict[str, Any]]) -> Any:
        """(log-ratio now r, [its first-order change along each Δθ], outward sign, valid mask)."""
        import torch
        from torch.func import functional_call, jvp

        params = {n: p.detach() for n, p in self.model.named_parameters()}

        def logp_at(ps: Dict[str, Any]) -> Any:
            return logp_fn(lambda *a, **kw: functional_call(self.model, ps, a, kw))

        slopes = []
        with torch.no_grad():
            now = None if self.predict == "jvp" else logp_at(params)
            for delta in deltas:
                tangent = {n: delta.get(n, torch.zeros_like(p)) for n, p in params.items()}
                if self.predict == "secant":
                    slopes.append(logp_at({n: p + tangent[n] for n, p in params.items()}) - now)
                    continue
                try:
                    now, slope = jvp(logp_at, (params,), (tangent,))
                except NotImplementedError as exc:  # e.g. fused attention kernels
                    why = str(exc).splitlines()[0]
                    raise NotImplementedError(
                        f"predict='jvp': the model has an op without forward-mode AD ({why}); use predict='secant'"
                    ) from exc
                slopes.append(slope)
        old = torch.as_tensor(old_logp).detach().to(now.device, torch.float64)
        r = (now.double() - old).cpu().numpy()
        a = np.asarray(torch.as_tensor(advantages).detach().double().cpu()).reshape(-1)
        a = a.reshape(a.shape + (1,) * (r.ndim - 1))
        valid = np.ones(r.shape, bool) if mask is None else np.asarray(torch.as_tensor(mask).bool().cpu())
        return r, [x.double().cpu().numpy() for x in slopes], np.sign(a) * valid, valid

    def _room(self, r: Any, sign: Any, margin: float) -> Any:
        """Log-ratio distance of each token to its bound + margin (the side its advantage pushes
        towards; negative: past it; inf: A = 0 or masked)."""
        hi = math.log(1 + self.epsilon_high + margin)
        lo_ratio = 1 - self.epsilon - margin
        lo = math.log(lo_ratio) if lo_ratio > 0 else -math.inf
        return np.where(sign > 0, hi - r, np.where(sign < 0, r - lo, np.inf))

    def _excess(self, x: Any, sign: Any) -> float:
        """The largest ratio excess past the bound among log-ratios x (0 if none is past)."""
        e = self.epsilon_high
        ex = np.where(sign > 0, np.exp(x) - (1 + e), np.where(sign < 0, (1 - self.epsilon) - np.exp(x), 0.0))
        return float(max(0.0, np.max(ex))) if ex.size else 0.0

    def _lookahead(self, rec: GuardRecord, logp_fn: Any, old_logp: Any, advantages: Any, mask: Any) -> None:
        r, (s,), sign, valid = self._predict(logp_fn, old_logp, advantages, mask, [self.pending_update()])
        self._scale(rec, r, s, s, sign, valid)

    def _scale(
        self, rec: GuardRecord, r: Any, s: Any, s_full: Any, sign: Any, valid: Any, cap: float = 1.0, allow: Any = 0.0
    ) -> None:
        """η: the largest scale ≤ ``cap`` of the step (slopes ``s``) that keeps the tokens within the
        margin, or within ``allow`` (an outward move each token may make anyway) where that is more
        (``s_full``: the slopes of Adam's own step, for the record)."""
        room = self._room(r, sign, self.margin)
        push = sign * s  # outward speed along the step
        inside = room >= 0
        # the scale at which each outward-moving token reaches its budget (0: already past, held)
        slack = _SLACK * float(np.max(np.abs(s_full), initial=0.0))  # a projected token's round-off
        limit = (inside | self.hold_outside) & (push > slack + allow)
        reach = np.sort(np.maximum(np.maximum(room, 0.0), allow)[limit] / push[limit])
        allowed = int(math.floor(self.max_fraction * valid.sum()))  # tokens that may cross
        rec.eta = float(min(cap, reach[allowed])) if reach.size > allowed else cap
        self.predicted = r + rec.eta * s
        rec.n_valid = int(valid.sum())
        rec.n_outside = int(np.sum(~inside & (sign != 0)))
        rec.n_overshoot = int(np.sum(inside & (sign * s_full > room)))
        rec.max_excess_full = self._excess(r + s_full, sign)
        rec.max_excess_scaled = self._excess(self.predicted, sign)

    def _rows(self, logp_fn: Any, flat: Any) -> Dict[str, Any]:
        """The log-prob gradients of the tokens at flat indices ``flat``: {name: (k, *shape)}, one
        forward and one batched reverse-mode pass (a loop of them where the model's ops do not batch).
        Plain autograd, not ``torch.func``: transformers' input-grad hooks refuse function transforms."""
        import torch

        named = [(n, p) for n, p in self.model.named_parameters() if p.requires_grad]
        with torch.enable_grad():
            out = logp_fn(lambda *a, **kw: self.model(*a, **kw))
        seeds = torch.zeros(len(flat), out.numel(), dtype=out.dtype, device=out.device)
        seeds[torch.arange(len(flat)), torch.as_tensor(flat, device=out.device)] = 1.0
        seeds = seeds.reshape(len(flat), *out.shape)
        ps = [p for _, p in named]
        try:
            grads = torch.autograd.grad(out, ps, seeds, retain_graph=True, is_grads_batched=True, allow_unused=True)
        except (NotImplementedError, RuntimeError):  # an op without a batching rule
            rows = [torch.autograd.grad(out, ps, x, retain_graph=True, allow_unused=True) for x in seeds]
            grads = tuple(torch.stack([r[i] for r in rows]) if rows[0][i] is not None else None for i in range(len(ps)))
        return {
            n: torch.zeros((len(flat), *p.shape), dtype=p.dtype, device=p.device) if g is None else g
            for (n, p), g in zip(named, grads)
        }

    def _project(self, rec: GuardRecord, logp_fn: Any, old_logp: Any, advantages: Any, mask: Any) -> None:
        """Per-token step control: the tokens predicted past bound + margin get a constraint (their
        first-order change = their room), met by removing from Adam's step its component along their
        log-prob gradients J in the metric D = |Δ| (Adam's own per-coordinate step; Adam's
        preconditioner lr/(√v̂+ϵ) is unbounded where v̂ is tiny): Δ' = Δ − D·Jᵀλ with
        (J D Jᵀ)λ = JΔ − room. The rest of the step is kept; tokens the correction pushes out join the
        set (``rounds``), and η (:meth:`_scale`) covers what is left."""
        import torch

        if self.hold == "momentum":  # a token may go as far out as the gradient alone takes it
            stale, fresh = self.pending_update(split=True)
            full = {n: stale[n] + fresh[n] for n in stale}
            r, (s, s_fr), sign, valid = self._predict(logp_fn, old_logp, advantages, mask, [full, fresh])
            allow = np.maximum(sign * s_fr, 0.0)
        else:
            full = self.pending_update()
            r, (s,), sign, valid = self._predict(logp_fn, old_logp, advantages, mask, [full])
            allow = np.zeros_like(r)
        s_full, step, cap = s, full, 1.0
        # Adam's own per-coordinate step as the metric: the correction scales the coordinates it moves
        metric = {n: x.detach().double().abs() for n, x in full.items()}
        active: List[int] = []
        rows: Dict[str, Any] = {}
        for _ in range(self.rounds):
            room = self._room(r, sign, self.margin)
            budget = np.maximum(np.maximum(room, 0.0), allow)
            over = (sign * s - budget) * ((room >= 0) | self.hold_outside)
            done = set(active)
            slack = _SLACK * float(np.max(np.abs(s_full), initial=0.0))
            new = [int(i) for i in np.argsort(-over, axis=None) if over.flat[i] > slack and int(i) not in done]
            new = new[: self.max_constraints - len(active)]
            if not new:
                break
            more = self._rows(logp_fn, new)
            rows = {n: torch.cat([rows[n], x]) if rows else x for n, x in more.items() if n in metric}
            active += new
            J = {n: x.reshape(len(active), -1).double() for n, x in rows.items()}
            K = sum(J[n] @ (metric[n].reshape(-1, 1) * J[n].T) for n in J).cpu().numpy()
            target = sign.flat[active] * budget.flat[active]
            now = sum(J[n] @ full[n].reshape(-1).double() for n in J).cpu().numpy()  # JΔ, one linear model
            lam = torch.as_tensor(np.linalg.lstsq(K, now - target, rcond=1e-8)[0])  # near-duplicate tokens
            step = {
                n: full[n] - (metric[n] * (lam.to(J[n]) @ J[n]).reshape(metric[n].shape)).to(full[n].dtype)
                if n in J
                else full[n]
                for n in full
            }
            r, (s,), sign, valid = self._predict(logp_fn, old_logp, advantages, mask, [step])
        if active:  # no coordinate moves further than Adam moves its furthest (an affine projection can)
            largest = [max(float(x[n].abs().max()) for n in x) for x in (full, step)]
            cap = min(1.0, largest[0] / largest[1]) if largest[1] > 0 else 1.0
            self._correction = {n: step[n] - full[n] for n in full}
        rec.n_projected = len(active)
        self._scale(rec, r, s, s_full, sign, valid, cap, allow)

    def _consistent(self, rec: GuardRecord, logp_fn: Any, old_logp: Any, advantages: Any, mask: Any) -> None:
        stale, fresh = self.pending_update(split=True)
        r, (s_st, s_fr), sign, valid = self._predict(logp_fn, old_logp, advantages, mask, [stale, fresh])
        clipped = self._room(r, sign, 0.0) < 0  # in ℛ_clip: their advantage gradient is zero
        out_st, out_fr = sign * s_st, sign * s_fr
        moved = clipped & (out_st > 0)  # clipped tokens that momentum carries further out
        gamma = 1.0
        if np.any(moved):  # the largest γ with fresh + γ·stale not moving any of them further out
            gamma = float(np.clip(np.min(np.maximum(-out_fr[moved], 0.0) / out_st[moved]), 0.0, 1.0))
        rec.momentum_scale = gamma
        lr_u = math.sqrt(sum(float((x.double() ** 2).sum()) for x in stale.values()))
        rec.momentum_removed += (1.0 - gamma) * lr_u
        self.predicted = r + s_fr + gamma * s_st
        rec.n_valid = int(valid.sum())
        rec.n_outside = int(clipped.sum())
        rec.n_overshoot = int(moved.sum())
        rec.max_excess_full = self._excess(r + s_fr + s_st, sign)
        rec.max_excess_scaled = self._excess(self.predicted, sign)

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
            "momentum_scale": r.momentum_scale,
            "tokens_projected": float(r.n_projected),
        }


__all__ = ["GuardRecord", "MODES", "MomentumGuard"]
