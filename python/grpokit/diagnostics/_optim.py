"""Reading a torch.optim.Adam / AdamW state (and any optimizer with the same state names).

Per parameter: ``exp_avg`` (m), ``exp_avg_sq`` (v), ``step`` (t); per group: ``betas``, ``eps``,
``lr``, ``weight_decay``. The state tensors are handed to the engine in place (zero-copy through
DLPack) on the device they live on: CPU tensors to the CPU engine, CUDA tensors (float32/float64/
bfloat16/float16) to the CUDA kernels, which compute every per-coordinate quantity on the device.
Only the per-tensor summaries come back to the host, in one transfer per device and diagnostic call
(that transfer synchronises the host with the current stream; see docs/diagnostics.md). A CUDA state
without usable CUDA kernels (a CPU-only build) is an error saying why, as for every other op
(``grpokit._backend``); a state on another device is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from .. import _arrays, _backend, _core

# Columns of the engine's per-tensor summaries (cpp/include/grpokit/diagnostics.hpp).
STAT_FIELDS = (
    "n",
    "n_zero_v",
    "n_rho_above",
    "sum_u2",
    "sum_abs_u",
    "sum_abs_u_elast",
    "sum_elast",
    "sum_u2_next",
    "max_rho",
    "min_rho",
)  # then Σ|u_φ| per φ
SPLIT_FIELDS = ("n", "stale2", "fresh2", "stale_fresh", "prev2", "grad2", "u_grad", "first_bad")


@dataclass
class ParamState:
    """One parameter tensor with its Adam state and hyper-parameters, flattened views."""

    name: str
    param: Any  # the torch.nn.Parameter itself
    exp_avg: Any  # 1-D view of the optimizer's tensor (on its device; a host copy only as above), or None
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

    @property
    def hyper(self) -> Tuple[float, float, float, float]:
        """(β1, β2, ϵ, step): the hyper-parameters in the engine's argument order."""
        return (self.beta1, self.beta2, self.eps, self.step)


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


def engine_for(t: Any) -> Any:
    """The engine that reads tensor ``t`` in place, by its device (``_backend``'s policy: a CUDA
    tensor without usable CUDA kernels is an error saying why)."""
    return _backend.for_array(t)


def flat_state(t: Any) -> Any:
    """A 1-D view of a state, gradient or parameter tensor for the engine that reads it: on its CUDA
    device for the CUDA kernels (any float dtype), else a float32/float64 CPU tensor (``flat_host``)."""
    import torch

    t = t.detach()
    if engine_for(t) is not _core and t.dtype in (torch.float32, torch.float64, torch.bfloat16, torch.float16):
        return t.reshape(-1)
    return flat_host(t)


def _stream(t: Any) -> int:
    """The caller's current CUDA stream on t's device (a DLPack integer); 0 for host tensors."""
    return _arrays.resolve_stream(_arrays.placement_of(t), None)


def _by_device(tensors: Sequence[Any]) -> Dict[Any, List[int]]:
    groups: Dict[Any, List[int]] = {}
    for i, t in enumerate(tensors):
        groups.setdefault(t.device, []).append(i)
    return groups


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
    """Every parameter of the optimizer, with its state if it has one (state tensors flattened, on
    their device when the CUDA kernels read them)."""
    import torch

    check_adam(optimizer)
    names = _names(optimizer, named)
    decoupled_cls = isinstance(optimizer, torch.optim.AdamW)
    k = 0
    out: List[ParamState] = []
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
            step = st["step"] if has and "step" in st else 0.0
            out.append(
                ParamState(
                    name=name,
                    param=p,
                    exp_avg=flat_state(st["exp_avg"]) if has else None,
                    exp_avg_sq=flat_state(st["exp_avg_sq"]) if has else None,
                    step=step,
                    beta1=beta1,
                    beta2=beta2,
                    eps=float(g["eps"]),
                    lr=float(g["lr"]),
                    weight_decay=float(g.get("weight_decay", 0.0)),
                    decoupled=decoupled_cls or bool(g.get("decoupled_weight_decay", False)),
                )
            )
    # capturable / fused Adam keeps `step` on the device: read every such step in one transfer
    on_device = [s for s in out if isinstance(s.step, torch.Tensor) and s.step.device.type != "cpu"]
    for idx in _by_device([s.step for s in on_device]).values():
        steps = torch.stack([on_device[i].step.detach().reshape(()).double() for i in idx]).cpu().tolist()
        for i, t in zip(idx, steps):
            on_device[i].step = t
    for s in out:
        s.step = float(s.step)
    return iter(out)


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
    """Per-coordinate u_φ = φm̂/(φ√v̂ + ϵ) of a parameter's state (engine), a 1-D float64 tensor on the
    state's device; with ``momentum_only_next`` the step of the state one step later with a zero
    gradient."""
    import torch

    out = torch.empty(s.exp_avg_sq.shape, dtype=torch.float64, device=s.exp_avg_sq.device)
    engine_for(s.exp_avg_sq).adam_update(
        s.exp_avg,
        s.exp_avg_sq,
        *s.hyper,
        phi,
        momentum_only_next,
        out,
        stream=_stream(s.exp_avg_sq),
    )
    return out


def rho(s: ParamState) -> Tuple[Any, Any]:
    """(ρ, ρ/(1+ρ)) per coordinate of a parameter's state: 1-D float64 tensors on the state's device."""
    import torch

    r = torch.empty(s.exp_avg_sq.shape, dtype=torch.float64, device=s.exp_avg_sq.device)
    e = torch.empty_like(r)
    engine_for(s.exp_avg_sq).adam_rho(s.exp_avg_sq, *s.hyper, r, e, stream=_stream(s.exp_avg_sq))
    return r, e


def _workspace(engine: Any, sizes: Sequence[int], device: Any) -> Any:
    import torch

    n = max((int(engine.adam_workspace_size(k)) for k in sizes), default=0)
    return torch.empty(n, dtype=torch.float64, device=device) if n > 0 else None


def state_stats(
    states: Sequence[ParamState],
    rho_threshold: float,
    hist_lo: float,
    hist_hi: float,
    hist_bins: int,
    phis: Sequence[float],
) -> Tuple[np.ndarray, np.ndarray]:
    """The engine's statistics of every state: (rows (k, len(STAT_FIELDS) + len(phis)) float64, log10 ρ
    histograms (k, hist_bins) int64). Each state is read where it lives; a device's rows come back in
    one transfer."""
    import torch

    phis = [float(p) for p in phis]
    width = len(STAT_FIELDS) + len(phis)
    stats = np.empty((len(states), width))
    hist = np.empty((len(states), hist_bins), dtype=np.int64)
    for device, idx in _by_device([s.exp_avg_sq for s in states]).items():
        engine = engine_for(states[idx[0]].exp_avg_sq)
        out = torch.empty((len(idx), width), dtype=torch.float64, device=device)
        h = torch.empty((len(idx), hist_bins), dtype=torch.int64, device=device)
        ws = _workspace(engine, [states[i].exp_avg_sq.numel() for i in idx], device)
        stream = _stream(out)
        for r, i in enumerate(idx):
            s = states[i]
            engine.adam_state_stats_into(
                s.exp_avg,
                s.exp_avg_sq,
                *s.hyper,
                rho_threshold,
                hist_lo,
                hist_hi,
                phis,
                out[r],
                h[r],
                ws,
                stream=stream,
            )
        stats[idx] = out.cpu().numpy()
        hist[idx] = h.cpu().numpy()
    return stats, hist


def step_splits(items: Sequence[Tuple[Any, Any, Any, Any, float, ParamState]]) -> np.ndarray:
    """adam_step_split of every (m, v, grad, param or None, l2, state): rows (k, len(SPLIT_FIELDS))
    float64, each computed where its tensors live, a device's rows in one transfer. A non-finite
    gradient raises the CPU engine's error."""
    import torch

    rows = np.empty((len(items), len(SPLIT_FIELDS)))
    for device, idx in _by_device([it[1] for it in items]).items():
        engine = engine_for(items[idx[0]][1])
        out = torch.empty((len(idx), len(SPLIT_FIELDS)), dtype=torch.float64, device=device)
        ws = _workspace(engine, [items[i][1].numel() for i in idx], device)
        stream = _stream(out)
        for r, i in enumerate(idx):
            m, v, g, p, l2, s = items[i]
            engine.adam_step_split_into(m, v, g, p, l2, *s.hyper, out[r], ws, stream=stream)
        rows[idx] = out.cpu().numpy()
        for i in idx:
            bad = int(rows[i, SPLIT_FIELDS.index("first_bad")])
            if bad >= 0:  # the CUDA kernels report instead of raising
                _, _, g, p, _, _ = items[i]
                value = float(g[bad])
                raise ValueError(
                    f"grad: element {bad} is {value:g}{' (with the L2 term)' if p is not None else ''}; "
                    "gradients must be finite"
                )
    return rows
