"""Reading a torch.optim.Adam / AdamW state (and any optimizer with the same state names).

Per parameter: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``step`` (t); per group: ``betas``, ``eps``,
``lr``, ``weight_decay``. The state tensors are handed to the engine in place (zero-copy through
DLPack) when they are on the CPU; device tensors are copied to the host once per call.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterator, List, Optional

from .. import _core


@dataclass
class ParamState:
    """One parameter tensor with its Adam state and hyper-parameters, flattened views on the host."""

    name: str
    param: Any  # the torch.nn.Parameter itself
    exp_avg: Any  # 1-D host tensor (a view of the optimizer's tensor when it is on the CPU), or None
    exp_avg_sq: Any
    step: float
    beta1: float
    beta2: float
    eps: float
    lr: float
    weight_decay: float
    decoupled: bool  # AdamW-style decay (−lr·λ·θ) rather than Adam's L2 (g + λθ)

    @property
    def has_state(self) -> bool:
        return self.exp_avg is not None


def flat_host(t: Any) -> Any:
    """A 1-D float32/float64 CPU view of a tensor (a copy only when it is on a device, low precision
    or not viewable as 1-D)."""
    import torch

    t = t.detach()
    if t.device.type != "cpu":
        t = t.cpu()
    if t.dtype not in (torch.float32, torch.float64):
        t = t.float()
    return t.reshape(-1)


def _names(optimizer: Any, named: Optional[Any]) -> dict:
    if named is None:
        return {}
    items = named.named_parameters() if hasattr(named, "named_parameters") else named
    return {id(p): n for n, p in items}


def check_adam(optimizer: Any) -> None:
    """Errors for optimizers the Adam diagnostics cannot read."""
    groups = getattr(optimizer, "param_groups", None)
    if groups is None:
        raise TypeError(f"optimizer: expected a torch.optim optimizer, got {type(optimizer).__name__}")
    for g in groups:
        if "betas" not in g or "eps" not in g:
            raise TypeError(
                f"optimizer: {type(optimizer).__name__} has no Adam hyper-parameters (betas, eps); the "
                "optimizer-state diagnostics read torch.optim.Adam/AdamW state (exp_avg, exp_avg_sq, step)"
            )
        if g.get("amsgrad", False):
            raise NotImplementedError("optimizer: amsgrad=True is not supported (its step uses max_exp_avg_sq)")
        if g.get("maximize", False):
            raise NotImplementedError("optimizer: maximize=True is not supported; minimise the loss (−J)")


def param_states(optimizer: Any, named: Optional[Any] = None) -> Iterator[ParamState]:
    """Every parameter of the optimizer, with its state if it has one (state tensors flattened)."""
    import torch

    check_adam(optimizer)
    names = _names(optimizer, named)
    decoupled_cls = isinstance(optimizer, torch.optim.AdamW)
    k = 0
    for gi, g in enumerate(optimizer.param_groups):
        beta1, beta2 = (float(b) for b in g["betas"])
        for p in g["params"]:
            st = optimizer.state.get(p, {})
            name = names.get(id(p), f"group{gi}.param{k}")
            k += 1
            has = "exp_avg" in st and "exp_avg_sq" in st
            if st and not has:
                raise TypeError(
                    f"optimizer: the state of {name} has no exp_avg/exp_avg_sq (keys: {sorted(st)}); "
                    "expected torch.optim.Adam/AdamW state"
                )
            step = float(st["step"]) if has and "step" in st else 0.0
            yield ParamState(
                name=name,
                param=p,
                exp_avg=flat_host(st["exp_avg"]) if has else None,
                exp_avg_sq=flat_host(st["exp_avg_sq"]) if has else None,
                step=step,
                beta1=beta1,
                beta2=beta2,
                eps=float(g["eps"]),
                lr=float(g["lr"]),
                weight_decay=float(g.get("weight_decay", 0.0)),
                decoupled=decoupled_cls or bool(g.get("decoupled_weight_decay", False)),
            )


def stepped_states(optimizer: Any, named: Optional[Any] = None) -> List[ParamState]:
    """The parameters that have an Adam state with step >= 1; an error if there is none."""
    states = [s for s in param_states(optimizer, named) if s.has_state and s.step >= 1]
    if not states:
        raise ValueError(
            f"optimizer: {type(optimizer).__name__} holds no Adam state yet (no exp_avg_sq with step >= 1); "
            "call this after at least one optimizer.step()"
        )
    return states


def preconditioned_update(s: ParamState, phi: float = 1.0, momentum_only_next: bool = False) -> Any:
    """Per-coordinate u_φ = φm̂/(φ√v̂ + ϵ) of a parameter's state (engine), a 1-D float64 tensor; with
    ``momentum_only_next`` the step of the state one step later with a zero gradient."""
    import torch

    out = torch.empty(s.exp_avg_sq.shape, dtype=torch.float64)
    _core.adam_update(s.exp_avg, s.exp_avg_sq, s.beta1, s.beta2, s.eps, s.step, phi, momentum_only_next, out)
    return out
