"""verl's actor log-probabilities under the rollout sampler's truncation (docs/verl.md, "Log-probabilities
as the sampler saw them"); re-exported by :mod:`grpokit.integrations.verl`.

verl's model engines (FSDP, automodel, torchtitan) divide the logits by the rollout temperature, then call
``verl.utils.torch_functional.logprobs_from_logits(logits, labels)`` by the name each engine module
imported. verl has no extension point for that call, so :func:`use_sampler_logprobs` rebinds the name in
those modules to grpokit's fused op with the rollout's ``top_k`` / ``top_p`` (``min_p`` where given);
:func:`restore_logprobs` undoes it.
"""

from __future__ import annotations

import importlib
import os
import sys
import warnings
from typing import Any, Dict, Optional

import torch

from .. import torch as gkt

__all__ = ["restore_logprobs", "sampler_logprobs_from_logits", "sampler_settings", "use_sampler_logprobs"]

# the modules that call logprobs_from_logits by their own binding of the name
_CALLERS = (
    "verl.utils.torch_functional",
    "verl.workers.engine.fsdp.transformer_impl",
    "verl.workers.engine.automodel.transformer_impl",
    "verl.workers.engine.torchtitan.transformer_impl",
)
_ENV = "GRPOKIT_VERL_TRUNCATION"  # "1": each actor/rollout/ref worker reads its config.rollout
_original: Dict[str, Any] = {}  # module name -> verl's function, while patched
_settings: Optional[Dict[str, Any]] = None


def sampler_settings(rollout: Any = None, **overrides: Any) -> Dict[str, Any]:
    """grpokit's truncation arguments from verl's rollout config (``actor_rollout_ref.rollout``: an
    object or a mapping; verl's "off" values, ``top_k`` ≤ 0 and ``top_p`` = 1, become ``None``);
    ``overrides`` (``top_k``, ``top_p``, ``min_p``, ``sampler``) replace its values."""
    get = (lambda k: rollout.get(k, None)) if hasattr(rollout, "get") else (lambda k: getattr(rollout, k, None))
    vals = {k: overrides.get(k, get(k) if rollout is not None else None) for k in ("top_k", "top_p", "min_p")}
    unknown = set(overrides) - {"top_k", "top_p", "min_p", "sampler"}
    if unknown:
        raise ValueError(f"overrides: expected top_k, top_p, min_p or sampler, got {sorted(unknown)}")
    k, p, mp = vals["top_k"], vals["top_p"], vals["min_p"]
    return {
        "top_k": int(k) if k is not None and int(k) > 0 else None,
        "top_p": float(p) if p is not None and float(p) < 1.0 else None,
        "min_p": float(mp) if mp is not None and float(mp) > 0.0 else None,
        "sampler": overrides.get("sampler", "vllm"),
    }


def sampler_logprobs_from_logits(
    logits: torch.Tensor, labels: torch.Tensor, inplace_backward: bool = True, **settings: Any
) -> torch.Tensor:
    """verl's ``logprobs_from_logits`` (logits already divided by the temperature, labels of their
    leading shape) by grpokit's fused op under the truncation ``settings`` (:func:`sampler_settings`);
    −inf for a label outside the kept set. ``inplace_backward`` is verl's flash-attn option: unused."""
    del inplace_backward
    lead, v = logits.shape[:-1], logits.shape[-1]
    x = logits.reshape(-1, v) if logits.dim() != 2 else logits
    if x.stride(-1) != 1:
        x = x.contiguous()
    out = gkt.token_logprobs(x, labels.reshape(-1), entropy=False, **settings)
    return out.logp.reshape(lead)


def use_sampler_logprobs(rollout: Any = None, **overrides: Any) -> Dict[str, Any]:
    """Makes verl's actor (and reference) log-probabilities those of the distribution the rollout
    sampled from: ``logprobs_from_logits`` in verl's engines becomes grpokit's fused op with the
    truncation of ``rollout`` (verl's ``actor_rollout_ref.rollout`` config) and ``overrides``. The
    temperature stays verl's (its engines divide the logits before the call). Returns the settings.
    With no truncation in them, verl's own function is kept."""
    global _settings
    s = sampler_settings(rollout, **overrides)
    restore_logprobs()
    if s["top_k"] is None and s["top_p"] is None and s["min_p"] is None:
        return s

    def logprobs_from_logits(logits, labels, inplace_backward=True):
        return sampler_logprobs_from_logits(logits, labels, inplace_backward, **s)

    for name in _CALLERS:
        try:
            mod = importlib.import_module(name)
        except ImportError:  # an engine whose own dependencies are missing: it cannot run either
            continue
        if hasattr(mod, "logprobs_from_logits"):
            _original[name] = mod.logprobs_from_logits
            mod.logprobs_from_logits = logprobs_from_logits
    _settings = s
    return s


def restore_logprobs() -> None:
    """verl's own ``logprobs_from_logits`` back wherever :func:`use_sampler_logprobs` replaced it."""
    global _settings
    for name, fn in _original.items():
        sys.modules[name].logprobs_from_logits = fn
    _original.clear()
    _settings = None


def active() -> bool:
    """Whether verl's log-probabilities are grpokit's truncated ones (the losses then mask and count
    the tokens outside the kept set)."""
    return _settings is not None


def wrap_worker(cls: type) -> type:
    """Makes ``cls.__init__(config, ...)`` (verl's ``ActorRolloutRefWorker``) call
    :func:`use_sampler_logprobs` with ``config.rollout`` in the worker's own process."""
    init = cls.__init__
    if getattr(init, "_grpokit_sampler", False):
        return cls

    def __init__(self, config, *args, **kwargs):
        init(self, config, *args, **kwargs)
        use_sampler_logprobs(config.get("rollout", None) if hasattr(config, "get") else config.rollout)

    __init__._grpokit_sampler = True  # type: ignore[attr-defined]
    cls.__init__ = __init__
    return cls


def activate_from_env() -> None:
    """With ``GRPOKIT_VERL_TRUNCATION=1`` (verl's Ray workers inherit it): every
    ``ActorRolloutRefWorker`` truncates its log-probabilities as its rollout config says."""
    if os.environ.get(_ENV, "0") in ("", "0"):
        return
    try:
        from verl.workers import engine_workers
    except ImportError as exc:  # a driver without the workers' dependencies: nothing to patch here
        warnings.warn(f"{_ENV}: verl's workers do not import here ({exc}); log-probabilities stay verl's", stacklevel=2)
        return
    wrap_worker(engine_workers.ActorRolloutRefWorker)
