"""grpokit inside verl (tested with verl 0.9.1): policy losses and advantage estimators registered with
verl's own registries, so that a verl run switches with configuration alone.

Importing this module registers, in ``verl.trainer.ppo.core_algos``:

* one policy loss per grpokit preset, named ``grpokit.<preset>`` (``grpokit.verl.vanilla``,
  ``grpokit.paper.dapo``, ...): ``actor_rollout_ref.actor.policy_loss.loss_mode=grpokit.verl.vanilla``;
* one advantage estimator per verl outcome estimator grpokit mirrors, named ``grpokit.<estimator>``
  (``algorithm.adv_estimator=grpokit.verl.grpo``).

verl imports it by itself: grpokit declares it as a ``verl.plugins`` entry point, which ``import verl``
loads; ``VERL_USE_EXTERNAL_MODULES=grpokit.integrations.verl`` or
``actor_rollout_ref.model.external_lib=grpokit.integrations.verl`` do the same explicitly. Presets with
grpokit-only overrides are registered under a name of one's own with :func:`register_policy_loss`.
See docs/verl.md.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Dict, Optional, Tuple

import torch

from .. import _advantages, _presets
from .. import torch as gkt
from ..diagnostics import clip_region
from . import verl_logprobs
from .verl_logprobs import restore_logprobs, sampler_logprobs_from_logits, sampler_settings, use_sampler_logprobs

try:
    from verl.trainer.ppo import core_algos
except ImportError as exc:  # pragma: no cover - the extra is missing
    raise ImportError(
        "grpokit.integrations.verl needs verl 0.9 and what importing its trainer needs: pip install 'grpokit[verl]'"
    ) from exc

__all__ = [
    "PREFIX",
    "KLController",
    "adv_estimator_fn",
    "kl_controller",
    "policy_loss_fn",
    "register_adv_est",
    "register_policy_loss",
    "restore_logprobs",
    "sampler_logprobs_from_logits",
    "sampler_settings",
    "use_sampler_logprobs",
    "verl_options",
]

PREFIX = "grpokit."
# grpokit's metric -> verl's name for it (verl's logging and aggregation read these)
_VERL_METRICS = {
    "pg_clipfrac": "actor/pg_clipfrac",
    "pg_clipfrac_lower": "actor/pg_clipfrac_lower",
    "ppo_kl": "actor/ppo_kl",
}
# verl applies these losses with seq-mean-token-mean (sapo) or a plain sequence mean (geo_mean) whatever
# loss_agg_mode says: the preset's aggregation stands
_FIXED_AGGREGATION = ("verl.sapo", "verl.geo_mean")
# not registered: bypass mode (it needs the rollout log-probs)
_NOT_REGISTERED = ("verl.reinforce", "verl.reinforce_seq")


def _first(*values: Any) -> Any:
    return next((v for v in values if v is not None), None)


def verl_options(preset: str, config: Any, loss_agg_mode: str) -> Dict[str, Any]:
    """The grpokit options a verl ``ActorConfig`` sets for ``preset``.

    Every preset takes verl's global batch counts (``global_batch_info``: ``dp_size``,
    ``batch_num_tokens``, ``global_batch_size``, ``loss_scale_factor``), so verl's data-parallel and
    micro-batch scaling hold; except ``verl.geo_mean``, which like verl's ignores them. A ``verl.*``
    preset also takes verl's hyper-parameters, as verl's own loss of that name reads them:
    ``clip_ratio_low`` / ``clip_ratio_high`` (``clip_ratio`` where unset), ``clip_ratio_c``,
    ``loss_agg_mode``, ``tau_pos`` / ``tau_neg``, ``policy_loss.dro_beta``. Any other preset keeps
    its own hyper-parameters and aggregation. The KL and entropy terms stay verl's (it adds them
    outside the policy loss).
    """
    # verl's geo_mean takes the plain mean over the micro-batch's sequences, global counts ignored
    info = {} if preset == "verl.geo_mean" else dict(config.get("global_batch_info", None) or {})
    opts: Dict[str, Any] = {"kl_loss_coef": 0.0, "entropy_coeff": 0.0}
    for verl_name, ours in (
        ("dp_size", "dp_size"),
        ("batch_num_tokens", "num_items_in_batch"),
        ("global_batch_size", "num_sequences"),
        ("loss_scale_factor", "max_completion_length"),
    ):
        if info.get(verl_name) is not None:
            opts[ours] = float(info[verl_name])
    if not preset.startswith("verl."):
        return opts
    spec = _presets.resolve(preset, {})
    clip = config.get("clip_ratio", None)
    opts["clip_ratio_low"] = _first(config.get("clip_ratio_low", None), clip, spec.epsilon_low)
    opts["clip_ratio_high"] = _first(config.get("clip_ratio_high", None), clip, spec.epsilon_high)
    if spec.clip_ratio_c is not None:
        opts["clip_ratio_c"] = config.get("clip_ratio_c", spec.clip_ratio_c)
    if spec.surrogate == "sapo":
        opts.update(
            tau_pos=config.get("tau_pos", spec.sapo_temperature_pos),
            tau_neg=config.get("tau_neg", spec.sapo_temperature_neg),
        )
    policy = config.get("policy_loss", None) or {}
    if spec.selection == "clip_cov":
        opts["selection"] = "none"  # verl's clip_cov zeroes its selected tokens: they go in as 0 token weights
    if spec.selection == "kl_cov":
        opts["ppo_kl_coef"] = _first(policy.get("ppo_kl_coef", None), 1.0)  # verl's fallback where unset
    if spec.dro_beta:
        beta = policy.get("dro_beta", None)
        if beta is None or beta <= 0:
            raise ValueError(
                f"policy_loss.dro_beta: {PREFIX}{preset} needs dro_beta > 0 (as verl's 'dro'), got {beta!r}"
            )
        opts["dro_beta"] = beta
    if preset not in _FIXED_AGGREGATION:
        opts["loss_agg_mode"] = loss_agg_mode
    return opts


def _diagnostics(
    spec: _presets.LossSpec,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
) -> Dict[str, float]:
    # the clip region of this micro-batch's token ratios (grpokit.diagnostics.clip_region), valid tokens only
    valid = mask.bool()
    ratio = torch.exp((log_prob.detach() - old_log_prob)[valid].double())
    region = clip_region(
        ratio.cpu(), advantages[valid].double().cpu(), epsilon=spec.epsilon_low, epsilon_high=spec.epsilon_high
    )
    frac = region.n_in_region / region.n_valid if region.n_valid else 0.0
    return {
        "grpokit/clip_region/fraction": frac,
        "grpokit/clip_region/mean_excess": region.mean_excess,
        "grpokit/clip_region/max_excess": region.max_excess,
    }


def _clip_cov_selection(
    spec: _presets.LossSpec,
    config: Any,
    log_prob: torch.Tensor,
    old_log_prob: torch.Tensor,
    advantages: torch.Tensor,
    mask: torch.Tensor,
) -> torch.Tensor:
    """The tokens verl's clip_cov picks inside its loss (its rule, defaults and draw): a random
    clip_cov_ratio share of the unclipped tokens whose covariance of A and log π lies in
    (clip_cov_lb, clip_cov_ub)."""
    policy = config.get("policy_loss", None) or {}
    valid = mask.bool()
    lp, adv = log_prob.detach(), advantages.detach()
    sel = torch.zeros_like(valid)
    m = valid.to(lp.dtype)
    ratio = torch.exp(lp - old_log_prob)
    clipped = (-adv * torch.clamp(ratio, 1 - spec.epsilon_low, 1 + spec.epsilon_high) > -adv * ratio) & valid
    cov = (adv - (adv * m).sum() / (m.sum() + 1e-8)) * (lp - (lp * m).sum() / (m.sum() + 1e-8))
    lb, ub = _first(policy.get("clip_cov_lb", None), 1.0), _first(policy.get("clip_cov_ub", None), 5.0)
    idx = torch.nonzero((cov < ub) & (cov > lb) & valid & ~clipped)
    n = max(int(_first(policy.get("clip_cov_ratio", None), 0.0002) * m.sum().item()), 1)
    if len(idx):
        idx = idx[torch.randperm(len(idx))[: min(n, len(idx))]]  # verl's draw, from the global generator
        sel[idx[:, 0], idx[:, 1]] = True
    return sel


def _kl_cov_selection(
    config: Any, log_prob: torch.Tensor, advantages: torch.Tensor, mask: torch.Tensor
) -> torch.Tensor:
    """The tokens verl's kl_cov penalises (its rule and defaults): the top kl_cov_ratio share (at least
    one) of the valid tokens by the covariance of A and log π over the micro-batch's valid tokens."""
    policy = config.get("policy_loss", None) or {}
    ratio = _first(policy.get("kl_cov_ratio", None), 0.0002)
    if not ratio > 0:
        raise ValueError(f"policy_loss.kl_cov_ratio: {PREFIX}verl.kl_cov needs kl_cov_ratio > 0, got {ratio!r}")
    valid = mask.bool()
    adv, lp = advantages.detach()[valid], log_prob.detach()[valid]
    sel = torch.zeros(valid.numel(), dtype=torch.bool, device=valid.device)
    if adv.numel():
        cov = (adv - adv.mean()) * (lp - lp.mean())
        top = torch.topk(cov, max(1, int(adv.numel() * ratio))).indices
        sel[torch.nonzero(valid.reshape(-1), as_tuple=True)[0][top]] = True
    return sel.reshape(valid.shape)


def _token_weights(
    preset: str, spec: _presets.LossSpec, w: Optional[torch.Tensor], mask: torch.Tensor, dtype: torch.dtype
) -> Optional[torch.Tensor]:
    """verl's rollout IS weights as grpokit's token_weights (they multiply each token's policy term)."""
    if w is None:
        return None
    if spec.dro_beta or spec.selection == "kl_cov":
        # verl weights the whole term, its penalty included; grpokit's token_weights weight the policy term
        mode, penalty = ("dro", "DRO penalty") if spec.dro_beta else ("kl_cov", "kl_cov |log r| penalty")
        raise ValueError(
            f"rollout_is_weights: {PREFIX}{preset} does not take verl's rollout correction weights "
            f"(verl also weights the {penalty}, which grpokit's token_weights do not); "
            f"switch rollout correction off or use verl's '{mode}'"
        )
    w = w.detach().to(dtype)
    if spec.surrogate == "geo_mean":
        # verl's geo_mean weighs each sequence by the geometric mean of its token weights (its own epsilons)
        m = mask.to(dtype)
        w = torch.exp((torch.log(w + 1e-10) * m).sum(-1) / (m.sum(-1) + 1e-8))[:, None].expand_as(m).contiguous()
    return w


def policy_loss_fn(preset: str, diagnostics: bool = True, **overrides: Any) -> Callable[..., Tuple[torch.Tensor, Dict]]:
    """A verl policy-loss function computing ``preset`` (with ``overrides`` on top of verl's config).

    It takes verl's call ``(old_log_prob, log_prob, advantages, response_mask, loss_agg_mode, config,
    rollout_is_weights)`` and returns ``(pg_loss, pg_metrics)``: the loss is grpokit's autograd op
    (exact gradient, verl's backward unchanged); ``rollout_is_weights`` multiply each token's term, as
    in verl. Metrics: ``actor/pg_clipfrac``, ``actor/pg_clipfrac_lower``, ``actor/ppo_kl`` where
    grpokit computes them, every other grpokit metric under ``grpokit/``, and with ``diagnostics``
    the token clip region (``grpokit/clip_region/fraction``, ``mean_excess``, ``max_excess``).
    """
    _presets.resolve(preset, overrides)  # bad names and values fail at registration, not mid-training

    def loss_fn(
        old_log_prob: torch.Tensor,
        log_prob: torch.Tensor,
        advantages: torch.Tensor,
        response_mask: torch.Tensor,
        loss_agg_mode: str = "token-mean",
        config: Any = None,
        rollout_is_weights: Optional[torch.Tensor] = None,
    ) -> Tuple[torch.Tensor, Dict[str, Any]]:
        if config is None:
            raise ValueError(f"config: {PREFIX}{preset} reads verl's ActorConfig, got None")
        opts = {**verl_options(preset, config, loss_agg_mode), **overrides}
        outside = None
        if verl_logprobs.active():  # truncated log-probs: tokens outside the kept set leave the loss
            outside = torch.isneginf(log_prob.detach()) | torch.isneginf(old_log_prob)
            log_prob, old_log_prob = log_prob.masked_fill(outside, 0.0), old_log_prob.masked_fill(outside, 0.0)
            outside = outside & response_mask.bool()
            response_mask = response_mask * ~outside
        spec = _presets.resolve(preset, opts)
        weights = _token_weights(preset, spec, rollout_is_weights, response_mask, log_prob.dtype)
        selected = kl_selected = None
        if preset == "verl.kl_cov":
            kl_selected = _kl_cov_selection(config, log_prob, advantages, response_mask)
        if preset == "verl.clip_cov":
            selected = _clip_cov_selection(spec, config, log_prob, old_log_prob, advantages, response_mask)
            keep = (~selected).to(log_prob.dtype)
            weights = keep if weights is None else weights * keep
        if spec.selection == "positive_nll":  # VAPO's positive samples: verl's call carries A, not rewards
            kl_selected = advantages > 0
        out = gkt.policy_loss(
            log_prob,
            old_log_prob,
            advantages.to(log_prob.dtype),
            response_mask,
            spec=spec,  # the preset with verl's options applied (selection: a spec field here, not a tensor)
            token_weights=weights,
            selection=kl_selected,
        )
        values = torch.stack(list(out.metrics.values())).tolist() if out.metrics else []  # one device sync
        metrics: Dict[str, Any] = {_VERL_METRICS.get(n, "grpokit/" + n): v for n, v in zip(out.metrics, values)}
        if kl_selected is not None:  # verl's kl_cov reports the mean |log r| as its ppo_kl
            m = response_mask.to(log_prob.dtype)
            metrics["actor/ppo_kl"] = float(((log_prob.detach() - old_log_prob).abs() * m).sum() / (m.sum() + 1e-8))
        if selected is not None:  # verl's clip_cov reports the share of selected tokens as its clip fraction
            metrics["actor/pg_clipfrac"] = (selected.sum() / (response_mask.sum() + 1e-8)).item()
        if outside is not None:
            metrics["grpokit/outside_kept_set"] = outside.sum().item()
        if diagnostics and spec.ratio == "token":
            metrics.update(_diagnostics(spec, log_prob, old_log_prob, advantages, response_mask))
        return out.loss.to(log_prob.dtype), metrics

    loss_fn.__name__ = loss_fn.__qualname__ = f"grpokit_{preset.replace('.', '_')}"
    return loss_fn


def register_policy_loss(name: str, preset: str, diagnostics: bool = True, **overrides: Any) -> None:
    """Registers ``preset`` (with grpokit ``overrides``) as verl's policy loss ``name``:
    ``actor_rollout_ref.actor.policy_loss.loss_mode=<name>``. Call it from a module verl imports
    (``external_lib`` / ``VERL_USE_EXTERNAL_MODULES``)."""
    if not isinstance(name, str) or not name:
        raise ValueError(f"name: expected a non-empty string, got {name!r}")
    core_algos.register_policy_loss(name)(policy_loss_fn(preset, diagnostics, **overrides))


# verl outcome estimator -> grpokit estimator (tests/python/test_verl_integration.py checks each against verl)
_ESTIMATORS = (
    "verl.grpo",
    "verl.grpo_no_std",
    "verl.rloo",
    "verl.opo",
    "verl.gpg",
    "verl.grpo_passk",
    "verl.reinforce_plus_plus_baseline",
)
_MASKED = ("verl.opo", "verl.reinforce_plus_plus_baseline")  # they read the response lengths


def adv_estimator_fn(estimator: str) -> Callable[..., Tuple[torch.Tensor, torch.Tensor]]:
    """A verl advantage estimator (verl's call ``(token_level_rewards, response_mask, index, ...)``,
    returning ``(advantages, returns)``, both (B, T)) computing grpokit's ``estimator`` on each
    completion's outcome reward (the sum of its token rewards), groups given by verl's ``index``."""
    if estimator not in _ESTIMATORS:
        raise ValueError(f"estimator: expected one of {list(_ESTIMATORS)}, got {estimator!r}")

    def estimator_fn(
        token_level_rewards: torch.Tensor,
        response_mask: torch.Tensor,
        index: Any = None,
        config: Any = None,
        norm_adv_by_std_in_grpo: Optional[bool] = None,
        **_: Any,
    ) -> Tuple[torch.Tensor, torch.Tensor]:
        if index is None:
            raise ValueError(f"index: {PREFIX}{estimator} groups completions by verl's uid index, got None")
        mask = response_mask.bool()
        rewards = (token_level_rewards * mask).sum(-1).double()
        group_ids = _group_ids(index)
        kw: Dict[str, Any] = {"mask": mask} if estimator in _MASKED else {}
        name = estimator
        if norm_adv_by_std_in_grpo is None and config is not None:
            norm_adv_by_std_in_grpo = config.get("norm_adv_by_std_in_grpo", True)
        if estimator == "verl.grpo" and norm_adv_by_std_in_grpo is False:
            name = "verl.grpo_no_std"  # algorithm.norm_adv_by_std_in_grpo, which verl's trainer passes as config
        adv = _advantages.advantages(rewards, group_ids=group_ids.to(rewards.device), estimator=name, **kw)
        adv = adv.to(token_level_rewards.dtype)[:, None] * mask
        return adv, adv

    estimator_fn.__name__ = estimator_fn.__qualname__ = f"grpokit_{estimator.replace('.', '_')}"
    return estimator_fn


def _group_ids(index: Any) -> torch.Tensor:
    # verl's index: a NumPy array of uid strings (or ints), one per completion
    ids: Dict[Any, int] = {}
    return torch.tensor([ids.setdefault(u, len(ids)) for u in list(index)], dtype=torch.int64)


def register_adv_est(name: str, estimator: str) -> None:
    """Registers grpokit's ``estimator`` as verl's advantage estimator ``name``
    (``algorithm.adv_estimator=<name>``)."""
    core_algos.register_adv_est(name)(adv_estimator_fn(estimator))


class KLController:
    """verl's KL coefficient controller (``algorithm.kl_ctrl``), step for step: ``type="fixed"`` keeps
    ``kl_coef``; ``type="adaptive"`` (verl's ``AdaptiveKLController``, Ziegler et al. 2019) multiplies
    ``value`` after each batch by 1 + clip(KL / target_kl − 1, −0.2, 0.2) · n_steps / horizon.

    In verl it drives the KL in the reward (``use_kl_in_reward``: verl's trainer applies it before the
    advantage estimator, so ``grpokit.verl.*`` estimators see it unchanged). With grpokit's KL in the
    loss, pass ``beta=ctrl.value`` to the loss and feed back its ``"kl"`` metric:
    ``ctrl.update(float(out.metrics["kl"]), n_steps=batch_size)`` (docs/verl.md)."""

    def __init__(self, kl_coef: float, type: str = "fixed", target_kl: float = 0.1, horizon: int = 10000):
        if type not in ("fixed", "adaptive"):
            raise ValueError(f"kl_ctrl.type: expected 'fixed' or 'adaptive', got {type!r}")
        if not (isinstance(kl_coef, (int, float)) and math.isfinite(kl_coef) and kl_coef >= 0):
            raise ValueError(f"kl_ctrl.kl_coef: expected a finite value >= 0, got {kl_coef!r}")
        if type == "adaptive":
            if not (isinstance(horizon, (int, float)) and horizon > 0):
                raise ValueError(f"kl_ctrl.horizon: expected a value > 0 for the adaptive controller, got {horizon!r}")
            if not (isinstance(target_kl, (int, float)) and math.isfinite(target_kl) and target_kl > 0):
                raise ValueError(f"kl_ctrl.target_kl: expected a finite value > 0, got {target_kl!r}")
        self.type, self.value, self.target, self.horizon = type, float(kl_coef), target_kl, horizon

    def update(self, current_kl: float, n_steps: int) -> None:
        """The controller's step after a batch of ``n_steps`` sequences whose mean KL was ``current_kl``."""
        if self.type == "fixed":
            return
        if not math.isfinite(current_kl):
            raise ValueError(f"current_kl: expected a finite KL, got {current_kl!r}")
        proportional_error = min(max(current_kl / self.target - 1, -0.2), 0.2)
        self.value *= 1 + proportional_error * n_steps / self.horizon


def kl_controller(kl_ctrl: Any) -> KLController:
    """The controller verl's trainer builds from ``algorithm.kl_ctrl`` (its ``KLControlConfig`` or a
    mapping: ``type``, ``kl_coef``, ``target_kl``, ``horizon``, verl's defaults where unset)."""
    get = kl_ctrl.get if hasattr(kl_ctrl, "get") else lambda k, d: getattr(kl_ctrl, k, d)
    return KLController(
        get("kl_coef", 0.001), type=get("type", "fixed"), target_kl=get("target_kl", 0.1), horizon=get("horizon", 10000)
    )


def _register_all() -> None:
    for preset in _presets.presets():
        if preset not in _NOT_REGISTERED and PREFIX + preset not in core_algos.POLICY_LOSS_REGISTRY:
            register_policy_loss(PREFIX + preset, preset)
    for est in _ESTIMATORS:
        if PREFIX + est not in core_algos.ADV_ESTIMATOR_REGISTRY:
            register_adv_est(PREFIX + est, est)


_register_all()
verl_logprobs.activate_from_env()
