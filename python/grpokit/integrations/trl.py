"""grpokit inside Hugging Face TRL's ``GRPOTrainer`` (tested with trl 1.16.0, transformers 5.23.0).

* :class:`GRPOTrainer`: TRL's trainer with the policy loss computed by grpokit — ``loss=`` any preset
  name or ``grpokit.LossSpec``. Generation, rewards, advantages, logging and TRL's normalisation
  conventions (÷gradient_accumulation_steps, ``num_items_in_batch``, ``num_processes``) are TRL's own.
* :class:`DiagnosticsCallback` (``grpokit.integrations.trl_callback``, re-exported here): grpokit's
  diagnostics in the trainer's logs.

See docs/trl.md.
"""

from __future__ import annotations

import warnings
from types import SimpleNamespace
from typing import Any, Dict, Optional

import torch

from .. import torch as gkt

SUPPORTED_TRL = ("1.16.0", "1.17.0")  # [min, max): the range the integration is tested against


def _check_trl_version() -> None:
    try:
        import trl
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError(
            "grpokit.integrations.trl needs TRL: pip install 'grpokit[trl]' (trl==1.16.0, transformers==5.23.0)"
        ) from exc
    from packaging.version import Version

    v = Version(trl.__version__)
    if not (Version(SUPPORTED_TRL[0]) <= v < Version(SUPPORTED_TRL[1])):
        raise ImportError(
            f"grpokit.integrations.trl supports trl >= {SUPPORTED_TRL[0]}, < {SUPPORTED_TRL[1]}, found trl "
            f"{trl.__version__}: it overrides GRPOTrainer._compute_loss, whose inputs change between TRL "
            "releases. Install the tested versions: pip install 'grpokit[trl]'"
        )


_check_trl_version()

from trl import GRPOTrainer as _TRLGRPOTrainer  # noqa: E402

from .trl_callback import DiagnosticsCallback, clipping_can_be_active, normalization_audit  # noqa: E402
from .trl_config import config_traps, spec_from_config  # noqa: E402
from .trl_guard import MomentumGuardCallback, guard_options  # noqa: E402

# TRL loss_type -> preset; every TRL loss has a trl.* preset reproducing it (tests/python/test_trl_integration.py)
TRL_LOSS_TYPES = ("grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo")


def _plain_lm_head(model: Any) -> Optional[str]:
    """Why grpokit's fused head cannot stand in for TRL's on this model (None: it can)."""
    cfg = model.config.get_text_config()
    if getattr(cfg, "final_logit_softcapping", None) is not None:
        return "the model soft-caps its logits"
    for name in ("logit_scale", "output_multiplier", "lm_head_multiplier", "logits_scaling"):
        if getattr(cfg, name, None) not in (None, 1, 1.0):
            return f"the model scales its logits ({name})"
    head = model.get_output_embeddings()
    if head is None or getattr(head, "bias", None) is not None:
        return "the LM head is not a bias-free linear layer"
    return None


def add_grpokit_lm_head(
    model: Any,
    temperature: float = 1.0,
    entropy: bool = True,
    top_k: Optional[int] = None,
    top_p: Optional[float] = None,
    min_p: Optional[float] = None,
) -> bool:
    """Computes the per-token log-probabilities (and entropies) of a model patched by TRL's
    ``add_fused_lm_head`` with grpokit's fused hidden × weight op (``grpokit.torch.linear_token_logprobs``:
    chunked GEMM + online log-sum-exp, no (tokens × vocab) buffer) instead of TRL's tiles.

    ``model(..., labels=labels, fused_lm_head=True)`` then returns the same ``FusedCausalLMOutput`` fields
    GRPOTrainer reads (``log_probs``, ``entropy``, ``label_mask``, ``loss``). Calls grpokit cannot serve —
    pre-shifted ``shift_labels``, MoE router losses, hidden states in a dtype its backend lacks (bfloat16 on
    the CPU) — and every call without ``fused_lm_head`` go to TRL's forward unchanged. Returns False, and
    leaves the model alone, when the head is not a plain projection (logit soft-capping or scaling, a bias).

    ``top_k``/``top_p``/``min_p`` (GRPOConfig's generation settings; ``None``, 0, 1.0 are off): the
    log-probabilities of the distribution vLLM sampled from (docs/logprobs.md); a token outside the kept
    set gets ``log_probs = −inf``, which the caller must mask. Off by default (TRL scores the full vocabulary).
    """
    trunc = {
        "top_k": top_k if top_k else None,
        "top_p": top_p if top_p is not None and top_p < 1.0 else None,
        "min_p": min_p if min_p else None,
    }
    if _plain_lm_head(model) is not None:
        return False
    import types

    from trl.trainer.utils import FusedCausalLMOutput

    trl_forward = model.forward  # TRL's fused forward (add_fused_lm_head ran in TRL's __init__)
    cfg = model.config.get_text_config()

    def forward(self, *args, fused_lm_head=False, labels=None, shift_labels=None, num_items_in_batch=None, **kwargs):
        device_ok = True
        if fused_lm_head and labels is not None:
            w = self.get_output_embeddings().weight
            device_ok = w.is_cuda or w.dtype in (torch.float32, torch.float64)
        if (
            not fused_lm_head
            or shift_labels is not None
            or labels is None
            or not device_ok
            or kwargs.get("output_router_logits")
            or getattr(cfg, "output_router_logits", False)
        ):
            return trl_forward(
                *args,
                fused_lm_head=fused_lm_head,
                labels=labels,
                shift_labels=shift_labels,
                num_items_in_batch=num_items_in_batch,
                **kwargs,
            )
        kwargs["use_cache"] = False
        hidden = self.base_model(*args, **kwargs).last_hidden_state[:, :-1]
        weight = self.get_output_embeddings().weight
        labels = labels[:, 1:].to(weight.device)
        mask = labels != -100
        h = hidden.to(weight.device)[mask]
        out = gkt.linear_token_logprobs(
            h.to(weight.dtype), weight, labels[mask], temperature=temperature, entropy=entropy, **trunc
        )
        # masked_scatter keeps an all-masked micro-batch connected to the graph (a differentiable zero)
        log_probs = out.logp.new_zeros(mask.shape).masked_scatter(mask, out.logp)
        ent = None if out.entropy is None else out.entropy.new_zeros(mask.shape).masked_scatter(mask, out.entropy)
        denom = mask.sum().clamp(min=1) if num_items_in_batch is None else num_items_in_batch
        return FusedCausalLMOutput(loss=-log_probs.sum() / denom, log_probs=log_probs, entropy=ent, label_mask=mask)

    model.forward = types.MethodType(forward, model)
    return True


class GRPOTrainer(_TRLGRPOTrainer):
    """TRL's ``GRPOTrainer`` with grpokit's policy loss (forward and exact gradient in the engine).

    Args (besides TRL's own):
        loss: a preset name (``grpokit.presets()``) or a ``grpokit.LossSpec``; default
            ``f"trl.{args.loss_type}"``, which reproduces TRL's loss, gradient and metrics.
        loss_options: overrides of the spec (``grpokit.policy_loss`` option names).
        logprobs: ``"trl"`` (default) keeps TRL's fused LM head for the per-token log-probabilities and
            entropies; ``"grpokit"`` computes them with grpokit's fused hidden × weight op
            (:func:`add_grpokit_lm_head`; TRL's head stays for models and calls it does not cover).
        normalization: ``"trl"`` (default) uses TRL's counts: for token-mean losses (dapo, cispo, vespo,
            any token-mean preset) the generation batch's ``num_items_in_batch`` rescaled by
            gradient_accumulation_steps / steps_per_generation; ``"exact"`` counts the tokens of the
            optimizer step's own micro-batches (all processes), which differs from TRL's when
            steps_per_generation ≠ gradient_accumulation_steps (docs/trl.md).
        truncation: ``False`` (default): log-probabilities over the full vocabulary, as TRL. ``True``
            (with ``logprobs="grpokit"``): under the distribution the sampler drew from, GRPOConfig's
            ``temperature``, ``top_k``, ``top_p`` and ``min_p`` (docs/logprobs.md); a completion token
            outside the kept set (log-probability −inf, also in the old log-probabilities) is masked
            out of the loss and counted in the ``outside_kept_set`` metric. The reference model keeps
            the full distribution. Settings that are all off leave it the default.
        momentum_guard: ``None`` (default), a ``grpokit.optim.MomentumGuard`` mode (``"lookahead"``,
            ``"reset"``, ...) or a dict of its options: momentum-aware clipping around the optimizer
            (``trl_guard.MomentumGuardCallback``; docs/diagnostics.md).

    Normalisation of the other losses follows TRL exactly: TRL's ``grpo``/``bnpo``/``dr_grpo``/``sapo``/
    ``luspo`` divide each micro-batch's local loss by the accumulation steps; grpokit presets without
    TRL's ÷K use the step's global token and sequence counts (``num_sequences`` = rows per micro-batch
    × accumulation steps × processes) and ``dp_size`` = processes, so the gradient of a step is that of
    one call on the whole step's batch.

    Example:
        >>> trainer = GRPOTrainer(model=model, reward_funcs=reward, args=GRPOConfig(...),
        ...                       train_dataset=ds, loss="paper.dr_grpo")  # doctest: +SKIP
    """

    def __init__(
        self,
        *args: Any,
        loss: Any = None,
        loss_options: Optional[Dict[str, Any]] = None,
        normalization: str = "trl",
        logprobs: str = "trl",
        truncation: bool = False,
        momentum_guard: Any = None,
        **kwargs: Any,
    ) -> None:
        if normalization not in ("trl", "exact"):
            raise ValueError(f"normalization: expected 'trl' or 'exact', got {normalization!r}")
        if logprobs not in ("trl", "grpokit"):
            raise ValueError(f"logprobs: expected 'trl' or 'grpokit', got {logprobs!r}")
        if truncation and logprobs != "grpokit":
            raise ValueError(
                "truncation=True: needs logprobs='grpokit' (TRL's fused LM head scores the full vocabulary)"
            )
        guard = guard_options(momentum_guard)
        super().__init__(*args, **kwargs)
        self.momentum_guard = None  # grpokit.optim.MomentumGuard, made at the first optimizer step
        if guard is not None:
            self.callback_handler.callbacks.insert(0, MomentumGuardCallback(self, guard))
        self.grpokit_logprobs = False
        if logprobs == "grpokit":
            from accelerate.utils import is_peft_model

            policy = self.model.get_base_model() if is_peft_model(self.model) else self.model
            why = _plain_lm_head(policy)
            if why is not None and truncation:
                raise ValueError(f"truncation=True: {why}; grpokit's head cannot serve it")
            if why is not None:
                warnings.warn(f"logprobs='grpokit': {why}; TRL's fused LM head is kept", stacklevel=2)
            else:
                a = self.args
                trunc = dict(top_k=a.top_k, top_p=a.top_p, min_p=a.min_p) if truncation else {}
                self.grpokit_logprobs = add_grpokit_lm_head(policy, self.temperature, **trunc)
                if self.ref_model is not None:
                    add_grpokit_lm_head(self.ref_model, self.temperature, entropy=False)
        self.loss_spec = spec_from_config(self.args, loss, loss_options)
        for text in config_traps(self.args, loss):  # reproduced, but said once at start-up
            warnings.warn(f"grpokit: {text}", UserWarning, stacklevel=2)
        self.normalization = normalization
        self.truncation = truncation
        self.grpokit_window: list = []  # this optimizer step's micro-batch loss inputs (DiagnosticsCallback)
        for cb in self.callback_handler.callbacks:
            if isinstance(cb, DiagnosticsCallback) and cb.trainer is None:
                cb.trainer = self

    # ---- counts -----------------------------------------------------------------------------------

    def _window_tokens(self, inputs: Dict[str, Any], mask: torch.Tensor) -> torch.Tensor:
        """Tokens of this optimizer step, all processes (float64 scalar)."""
        K = self.current_gradient_accumulation_steps
        S = self.args.steps_per_generation
        n_gen = inputs["num_items_in_batch"].double()
        if self.normalization == "trl" or not self.model.training or K == S:
            return n_gen * K / S if self.model.training else n_gen
        if S % K != 0:
            raise ValueError(
                f"normalization='exact' needs steps_per_generation ({S}) to be a multiple of "
                f"gradient_accumulation_steps ({K}): otherwise the step's later micro-batches are not generated yet"
            )
        first = ((self._step % S) // K) * K  # the step's first micro-batch within the buffered generation batch
        local = sum(self._loss_mask(self._buffered_inputs[j]).sum() for j in range(first, first + K))
        return self.accelerator.reduce(local.double().reshape(1), reduction="sum")[0]

    @staticmethod
    def _loss_mask(inputs: Dict[str, Any]) -> torch.Tensor:
        m = inputs["completion_mask"]
        return m if "tool_mask" not in inputs else m * inputs["tool_mask"]

    def _count_options(self, inputs: Dict[str, Any], mask: torch.Tensor) -> Dict[str, Any]:
        s = self.loss_spec
        training = self.model.training
        K = self.current_gradient_accumulation_steps if training else 1
        if s.divide_by_ga:  # TRL's grpo/bnpo/dr_grpo/sapo/luspo: local normalisers, ÷K
            return {"gradient_accumulation_steps": K}
        P = self.accelerator.num_processes
        return {
            "num_items_in_batch": float(self._window_tokens(inputs, mask)),
            "num_sequences": float(mask.shape[0] * K * P),
            "dp_size": float(P),
            "gradient_accumulation_steps": K,
        }

    # ---- the loss ---------------------------------------------------------------------------------

    def _compute_loss(self, model: Any, inputs: Dict[str, Any]) -> torch.Tensor:
        prompt_ids, prompt_mask = inputs["prompt_ids"], inputs["prompt_mask"]
        completion_ids, completion_mask = inputs["completion_ids"], inputs["completion_mask"]
        input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
        attention_mask = torch.cat([prompt_mask, completion_mask], dim=1)
        mask = self._loss_mask(inputs)
        mm = {
            k: inputs.get(k)
            for k in (
                "pixel_values",
                "image_grid_thw",
                "num_images",
                "pixel_attention_mask",
                "spatial_shapes",
                "num_tiles",
                "image_sizes",
                "token_type_ids",
                "mm_token_type_ids",
                "image_position_ids",
            )
        }
        logp, entropies, aux_loss = self._get_per_token_logps_and_entropies(
            model,
            input_ids,
            attention_mask,
            completion_ids.size(1),
            compute_entropy=True,
            compute_aux_loss=self.aux_loss_enabled,
            **mm,
        )
        old = inputs.get("old_per_token_logps")  # None: TRL's on-policy shortcut (ratio 1), as the engine's
        if getattr(self, "truncation", False):  # set by __init__ (absent where _compute_loss is borrowed)
            logp, old, mask = self._mask_outside(logp, old, mask)
        s = self.loss_spec
        if self.use_adaptive_entropy:  # TRL's gate: the coefficient of the last step, if its entropy was low
            low = self._last_world_entropy <= self.args.entropy_target
            s = s.replace(entropy_coef=self.entropy_coef if low else 0.0)
        sampling = None
        if s.sampler_is != "none" or s.off_policy_mask_threshold is not None:
            sampling = inputs.get("sampling_per_token_logps")
        ref = inputs.get("ref_per_token_logps") if s.beta != 0.0 else None
        adv = inputs["advantages"].to(logp.dtype)
        if not bool(mask.any()):
            # every completion masked (e.g. mask_truncated_completions): TRL's clamped normalisers give a zero
            # loss and gradient; the engine refuses an empty mask, so this micro-batch logs no loss metrics
            out = SimpleNamespace(
                loss=(logp * 0).sum() + (0 if entropies is None else (entropies * 0).sum()), metrics={}
            )
        else:
            out = gkt.policy_loss(
                logp,
                old,
                adv,
                mask,
                spec=s,
                ref_logp=ref,
                entropies=entropies,
                sampling_logp=sampling,
                **self._count_options(inputs, mask),
            )
        loss = out.loss
        if self.aux_loss_enabled:
            normalizer = self.current_gradient_accumulation_steps if self.model.training else 1.0
            loss = loss + self.router_aux_loss_coef * aux_loss / normalizer
        if self.use_adaptive_entropy and self.model.training:
            self._entropy_controller(entropies, mask)
        self._log_metrics(out.metrics, aux_loss)
        if self.model.training and any(
            isinstance(cb, (DiagnosticsCallback, MomentumGuardCallback)) for cb in self.callback_handler.callbacks
        ):
            self.grpokit_window.append(
                {  # the callbacks consume and clear it at the optimizer step
                    "logp": logp.detach(),
                    "old_logp": old if old is not None else logp.detach(),
                    "advantages": adv,
                    "mask": mask,
                    "completion_ids": completion_ids,
                    "completion_mask": completion_mask,
                    "prompt_ids": prompt_ids,
                    "prompt_mask": prompt_mask,
                    "loss": loss.detach(),
                    "step": self._step,
                }
            )
        return loss

    def _mask_outside(self, logp: torch.Tensor, old: Any, mask: torch.Tensor):
        """Under truncation: the tokens outside the kept set (−inf in logp or old) leave the loss mask,
        their −inf becomes 0 (no NaN in sums; no gradient reaches them), and their count is logged."""
        outside = torch.isneginf(logp) if old is None else torch.isneginf(logp) | torch.isneginf(old)
        count = (outside & mask.bool()).sum().double().reshape(1)
        mode = "train" if self.model.training else "eval"
        self._metrics[mode]["outside_kept_set"].append(self.accelerator.gather(count).sum().item())
        if old is not None:
            old = old.masked_fill(outside, 0.0)
        return logp.masked_fill(outside, 0.0), old, mask * ~outside

    def _entropy_controller(self, entropies: torch.Tensor, mask: torch.Tensor) -> None:
        """TRL's adaptive entropy control (Skywork-OR1), as its ``_compute_loss`` runs it: the window's
        token-mean entropy over the loss's tokens (all processes) moves ``entropy_coef`` by
        ± ``entropy_coef_delta`` at each optimizer step; the next step applies it."""
        if self.top_entropy_quantile < 1.0:  # the bonus acts on TRL's high-entropy tokens only
            mask = mask * self.get_high_entropy_mask(entropies, mask, 1 - self.top_entropy_quantile)
        stats = torch.stack([(entropies * mask).sum(), mask.sum()]).detach()
        w = self._entropy_window_stats
        self._entropy_window_stats = stats if w is None else w + stats
        if not self.accelerator.sync_gradients:
            return
        total = self.accelerator.reduce(self._entropy_window_stats, reduction="sum")
        entropy = (total[0] / total[1].clamp(min=1.0)).item()
        a = self.args
        if entropy <= a.entropy_target:
            self.entropy_coef = min(self.entropy_coef + a.entropy_coef_delta, a.entropy_coef_max)
        else:
            self.entropy_coef = max(self.entropy_coef - a.entropy_coef_delta, a.entropy_coef_min)
        self._last_world_entropy = entropy
        self._entropy_window_stats = None

    def _log_metrics(self, metrics: Dict[str, torch.Tensor], aux_loss: Any) -> None:
        mode = "train" if self.model.training else "eval"
        for name, v in metrics.items():
            if name in ("pg_clipfrac", "ppo_kl"):  # verl's names for the same quantities: keep TRL's only
                continue
            # TRL reduces its metrics over processes; an unweighted mean of the per-process values here
            self._metrics[mode][name].append(self.accelerator.gather(v.reshape(1).float()).nanmean().item())
        if self.aux_loss_enabled:
            self._metrics[mode]["aux_loss"].append(self.accelerator.gather_for_metrics(aux_loss).mean().item())
        if self._entropy_bonus_enabled and mode == "train" and self.accelerator.sync_gradients:
            self._metrics[mode]["entropy_coef"].append(self.entropy_coef)


__all__ = [
    "DiagnosticsCallback",
    "GRPOTrainer",
    "SUPPORTED_TRL",
    "TRL_LOSS_TYPES",
    "add_grpokit_lm_head",
    "clipping_can_be_active",
    "config_traps",
    "normalization_audit",
    "spec_from_config",
]
