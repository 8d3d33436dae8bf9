"""The ``LossSpec`` of a TRL ``GRPOConfig``: shared by the trainer (``trl.py``) and the diagnostics
callback (``trl_callback.py``), which audits TRL's own trainer without importing the trainer module."""

from __future__ import annotations

from typing import Any, Dict, List, Optional

from .. import _presets


def spec_from_config(args: Any, loss: Any = None, loss_options: Optional[Dict[str, Any]] = None) -> _presets.LossSpec:
    """The ``LossSpec`` a :class:`GRPOTrainer` uses for a ``GRPOConfig``.

    ``loss=None`` is ``f"trl.{args.loss_type}"``. A ``trl.*`` preset takes its hyper-parameters from
    the config (epsilon, epsilon_high, delta, beta, importance_sampling_level, use_bias_correction_kl,
    top_entropy_quantile, off_policy_mask_threshold, entropy_coef, max_completion_length, the SAPO /
    VESPO parameters, the vLLM importance-sampling correction); any other preset keeps its own, except
    ``max_completion_length`` (Dr GRPO's constant) and ``beta`` (TRL loads a reference model only when
    ``GRPOConfig.beta`` ≠ 0, so the KL weight is the config's). ``loss_options`` override everything.
    """
    name = f"trl.{args.loss_type}" if loss is None else loss
    over: Dict[str, Any] = {"max_completion_length": args.max_completion_length, "beta": args.beta}
    if isinstance(name, str) and name.startswith("trl."):
        # epsilon_high=None is TRL's "as epsilon" for every loss_type, CISPO's raw cap included (config_traps)
        over.update(
            epsilon=args.epsilon,
            epsilon_high=args.epsilon if args.epsilon_high is None else args.epsilon_high,
            delta=args.delta,
            beta=args.beta,
            importance_sampling_level=args.importance_sampling_level,
            use_bias_correction_kl=args.use_bias_correction_kl,
            top_entropy_quantile=args.top_entropy_quantile,
            off_policy_mask_threshold=args.off_policy_mask_threshold,
            entropy_coef=args.entropy_coef,
            sapo_temperature_pos=args.sapo_temperature_pos,
            sapo_temperature_neg=args.sapo_temperature_neg,
            vespo_k_pos=args.vespo_k_pos,
            vespo_lambda_pos=args.vespo_lambda_pos,
            vespo_k_neg=args.vespo_k_neg,
            vespo_lambda_neg=args.vespo_lambda_neg,
        )
        if args.use_vllm and args.vllm_importance_sampling_correction:
            over.update(
                vllm_importance_sampling_mode=args.vllm_importance_sampling_mode,
                vllm_importance_sampling_clip_min=args.vllm_importance_sampling_clip_min,
                vllm_importance_sampling_clip_max=args.vllm_importance_sampling_clip_max,
            )
        else:
            over["vllm_importance_sampling_correction"] = False
    over.update(loss_options or {})
    return _presets.resolve(name, over)


def config_traps(args: Any, loss: Any = None) -> List[str]:
    """TRL defaults that a drop-in reproduces but that are known traps: one message per trap, naming
    the recommended setting (the trainer warns them once at start-up; docs/trl.md)."""
    name = f"trl.{args.loss_type}" if loss is None else loss
    traps = []
    if name == "trl.cispo" and args.epsilon_high is None:
        traps.append(
            f"loss_type='cispo' with epsilon_high unset: TRL (and this drop-in, which reproduces it) caps the "
            f"importance weight at epsilon = {args.epsilon:g}, below the on-policy ratio of 1, so nearly every token "
            f"gets the weight {args.epsilon:g} and the loss is a plain {args.epsilon:g}·A·log π without importance "
            "correction; set epsilon_high=5.0 (ScaleRL's ε_max, TRL's documented recommendation)"
        )
    return traps
