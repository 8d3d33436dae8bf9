"""A variant: a loss preset with overrides and the advantage convention that goes with it.

Shared by ``grpokit demo``, ``grpokit.compare`` and ``grpokit.explain``. A variant is written
``"preset"``, ``"preset:key=value,key=value"`` or ``"label=preset:key=value"`` (the shell form), or given
as a ``(preset, {overrides})`` pair, a ``LossSpec`` or a ``Variant``. Overrides are the loss options of
``grpokit.policy_loss`` (TRL / verl names or ``LossSpec`` fields) plus three advantage options:
``std`` (``none`` | ``population`` | ``sample``), TRL's ``scale_rewards`` (``group`` | ``batch`` |
``none``) and verl's ``norm_adv_by_std_in_grpo`` (true | false), and two method keys that make a variant
a whole method: ``estimator`` (an advantage estimator or estimator preset of ``grpokit.advantages``, e.g.
``rloo``, ``verl.opo``) and ``correction`` (a train–inference correction of ``grpokit.CORRECTIONS``, e.g.
``verl.seq_is``, applied to the batch's ``sampling_logp``).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional, Tuple

from ._presets import LossSpec, preset_advantages, presets, resolve

_ADV_KEYS = ("std", "scale_rewards", "norm_adv_by_std_in_grpo", "estimator")


def default_advantage_options(preset: str) -> Dict[str, Any]:
    """``grpokit.advantages`` options of a preset: its row's ``advantages`` column (TRL's
    ``scale_rewards="group"`` for ``trl.*``, verl's ``norm_adv_by_std_in_grpo=True`` for ``verl.*``, the
    papers' population std for the ``paper.*`` rows whose α carries 1/σ, centred rewards otherwise)."""
    return preset_advantages(preset)


def _truthy(v: Any) -> bool:
    if isinstance(v, str):
        if v.lower() not in ("true", "false", "1", "0"):
            raise ValueError(f"norm_adv_by_std_in_grpo: expected true or false, got {v!r}")
        return v.lower() in ("true", "1")
    return bool(v)


def _advantage_options(preset: str, given: Mapping[str, Any]) -> Dict[str, Any]:
    if "estimator" in given:  # a named estimator brings its own defaults (or its peer preset's)
        from ._estimators import lookup

        lookup(str(given["estimator"]))  # unknown names: ValueError listing the valid ones
        opts: Dict[str, Any] = {"estimator": given["estimator"]}
    else:
        opts = default_advantage_options(preset)
    if "scale_rewards" in given:
        v = given["scale_rewards"]
        if v in ("group", True, "true"):
            opts.update(std="sample", std_scope="group")
        elif v == "batch":
            opts.update(std="sample", std_scope="batch")
        elif v in ("none", None, False, "false"):
            opts.update(std="none")
        else:
            raise ValueError(f"scale_rewards: expected 'group', 'batch' or 'none', got {v!r}")
    if "norm_adv_by_std_in_grpo" in given:
        opts.update(std="sample" if _truthy(given["norm_adv_by_std_in_grpo"]) else "none")
    if "std" in given:
        if given["std"] not in ("none", "population", "sample"):
            raise ValueError(f"std: expected 'none', 'population' or 'sample', got {given['std']!r}")
        opts.update(std=given["std"])
    return opts


@dataclass(frozen=True)
class Variant:
    """A loss preset with overrides (``spec``) and its advantage convention (``advantage_options``,
    keyword arguments of ``grpokit.advantages``)."""

    label: str
    preset: str
    overrides: Mapping[str, Any] = field(default_factory=dict)
    spec: LossSpec = field(default_factory=LossSpec)
    advantage_options: Mapping[str, Any] = field(default_factory=dict)
    correction: Optional[str] = None  # a grpokit.CORRECTIONS name, applied to the batch's sampling_logp

    def advantages(self, rewards: Any, group_size: int, mask: Any = None) -> Any:
        """The variant's advantages; ``mask`` (B, T) goes to estimators that take one (lengths, whitening)."""
        from ._advantages import advantages

        opts = dict(self.advantage_options)
        if mask is not None and "estimator" in opts:
            from ._estimators import lookup

            if "mask" in lookup(str(opts["estimator"]))[0].inputs:
                opts["mask"] = mask
        return advantages(rewards, group_size, **opts)


def _literal(text: str) -> Any:
    try:
        return ast.literal_eval(text)
    except (ValueError, SyntaxError):
        return {"none": None, "None": None, "true": True, "false": False}.get(text, text)


def parse(text: str) -> Tuple[str, str, Dict[str, Any]]:
    """``"label=preset:key=value,key=value"`` → (label, preset, overrides); label defaults to the text."""
    label, _, rest = text.partition("=") if "=" in text.split(":", 1)[0] else ("", "", text)
    preset, _, opts = rest.partition(":")
    overrides: Dict[str, Any] = {}
    for item in filter(None, (o.strip() for o in opts.split(","))):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"variant {text!r}: expected key=value after ':', got {item!r}")
        overrides[key.strip()] = _literal(value.strip())
    return (label or text), preset.strip(), overrides


def make(variant: Any, **extra: Any) -> Variant:
    """A ``Variant`` from a string, a ``(preset, overrides)`` pair, a ``LossSpec`` or a ``Variant``;
    ``extra`` overrides are applied to loss specs that have the field set (e.g.
    ``max_completion_length`` for TRL's Dr GRPO normaliser)."""
    if isinstance(variant, Variant):
        return variant
    if isinstance(variant, LossSpec):
        label, preset, overrides, base = "LossSpec", "", {}, variant
    else:
        if isinstance(variant, str):
            label, preset, overrides = parse(variant)
        elif isinstance(variant, tuple) and len(variant) == 2 and isinstance(variant[0], str):
            preset, overrides = variant[0], dict(variant[1])
            label = preset + ("" if not overrides else ":" + ",".join(f"{k}={v}" for k, v in overrides.items()))
        else:
            raise TypeError(
                f"variant: expected a preset name, 'preset:key=value,...', a (preset, overrides) pair, a "
                f"LossSpec or a Variant, got {variant!r}"
            )
        if preset not in presets():
            raise ValueError(f"unknown loss preset {preset!r}; valid presets: {', '.join(sorted(presets()))}")
        base = preset
    adv = {k: overrides[k] for k in _ADV_KEYS if k in overrides}
    correction = overrides.get("correction")
    if correction is not None:
        from ._corrections import CORRECTIONS

        if correction not in CORRECTIONS:
            raise ValueError(f"correction: expected one of {sorted(CORRECTIONS)}, got {correction!r}")
        correction = None if correction == "none" else correction
    loss_overrides = {k: v for k, v in overrides.items() if k not in _ADV_KEYS and k != "correction"}
    spec = resolve(base, loss_overrides)
    applicable = {k: v for k, v in extra.items() if getattr(spec, k, None) is not None and k not in loss_overrides}
    if applicable:
        spec = spec.replace(**applicable)
    return Variant(label, preset, overrides, spec, _advantage_options(preset, adv), correction)
