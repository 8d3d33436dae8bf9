"""Parity with TRL's own GRPO loss code: ``GRPOTrainer._compute_loss`` of the installed TRL (1.16.0)
runs on the same tensors (a stub trainer supplies the attributes it reads and returns our per-token
log-probabilities in place of a model forward), and autograd gives TRL's gradient.

Gradient accumulation runs with ``gradient_accumulation_steps == steps_per_generation`` (K = S = 2),
the setting in which TRL's normalisers are the global ones (docs/losses.md); ``num_items_in_batch`` is
the generation batch's token count, as TRL passes it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
trl_grpo = pytest.importorskip("trl.trainer.grpo_trainer")

import grpokit  # noqa: E402
from torch_batches import ragged_logprobs  # noqa: E402

GRPOTrainer = trl_grpo.GRPOTrainer
K = 2  # gradient_accumulation_steps == steps_per_generation


class _Accelerator:
    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x


class _StubTrainer:
    """The attributes and methods ``GRPOTrainer._compute_loss`` reads, nothing else."""

    get_high_entropy_mask = GRPOTrainer.get_high_entropy_mask
    get_off_policy_mask = staticmethod(GRPOTrainer.get_off_policy_mask)
    get_gamma_weights = staticmethod(GRPOTrainer.get_gamma_weights)

    def __init__(
        self,
        loss_type,
        logp,
        entropies,
        *,
        epsilon=0.2,
        epsilon_high=None,
        delta=None,
        beta=0.0,
        importance_sampling_level="token",
        top_entropy_quantile=1.0,
        off_policy_mask_threshold=None,
        use_bias_correction_kl=True,
        entropy_coef=0.0,
        use_vllm=False,
        max_completion_length=512,
    ):
        self.loss_type = loss_type
        self._logp, self._entropies = logp, entropies
        self.epsilon_low = epsilon
        self.epsilon_high = epsilon_high if epsilon_high is not None else epsilon
        self.beta = beta
        self.importance_sampling_level = importance_sampling_level
        self.top_entropy_quantile = top_entropy_quantile
        self.off_policy_mask_threshold = off_policy_mask_threshold
        self.use_vllm = use_vllm
        self.vllm_importance_sampling_correction = use_vllm
        self.max_completion_length = max_completion_length
        self.current_gradient_accumulation_steps = K
        self.accelerator = _Accelerator()
        self.model = SimpleNamespace(training=True)
        self.aux_loss_enabled = False
        self._entropy_bonus_enabled = entropy_coef != 0.0
        self.entropy_coef = entropy_coef
        self.use_adaptive_entropy = False
        self._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
        self.args = SimpleNamespace(
            delta=delta,
            use_bias_correction_kl=use_bias_correction_kl,
            sapo_temperature_pos=1.0,
            sapo_temperature_neg=1.05,
            vespo_k_pos=2.0,
            vespo_lambda_pos=3.0,
            vespo_k_neg=3.0,
            vespo_lambda_neg=2.0,
            steps_per_generation=K,
        )

    def _get_per_token_logps_and_entropies(self, model, input_ids, attention_mask, logits_to_keep, **kw):
        return self._logp, self._entropies, None

    compute_loss = GRPOTrainer._compute_loss


def trl_is_ratio(old, smp, mask, mode, cmin, cmax):
    """TRL's vLLM IS ratio, transcribed from GRPOTrainer._generate_and_score_completions (1.16.0)."""
    diff = torch.nan_to_num((old - smp) * mask, nan=0.0)
    if mode.startswith("sequence"):
        diff = diff.sum(dim=-1, keepdim=True)
    ratio = torch.exp(diff)
    if mode.endswith("truncate"):
        return torch.clamp(ratio, min=cmin, max=cmax)
    lo = cmin if cmin is not None else -math.inf
    hi = cmax if cmax is not None else math.inf
    return ratio.masked_fill((ratio < lo) | (ratio > hi), 0.0)


def batch(seed, B=6, T=9, spread=0.3):
    g = torch.Generator().manual_seed(seed)
    mask, lp, old = ragged_logprobs(B, T, g, spread)
    mask = mask.long()
    ref = lp + spread * torch.randn(B, T, generator=g, dtype=torch.float64)
    smp = old + 0.2 * torch.randn(B, T, generator=g, dtype=torch.float64)
    H = torch.rand(B, T, generator=g, dtype=torch.float64) * 2 + 0.05
    A = torch.randn(B, generator=g, dtype=torch.float64)
    return dict(lp=lp, old=old, ref=ref, smp=smp, H=H, A=A, mask=mask)


def inputs_of(b, n_items, with_smp):
    """The batch as GRPOTrainer.compute_loss takes it (sampling log-probs when `with_smp`)."""
    B, T = b["lp"].shape
    inp = {
        "prompt_ids": torch.zeros(B, 1, dtype=torch.long),
        "prompt_mask": torch.ones(B, 1, dtype=torch.long),
        "completion_ids": torch.zeros(B, T, dtype=torch.long),
        "completion_mask": b["mask"],
        "advantages": b["A"],
        "old_per_token_logps": b["old"],
        "ref_per_token_logps": b["ref"],
        "num_items_in_batch": torch.tensor(n_items, dtype=torch.float64),
    }
    if with_smp:
        inp["sampling_per_token_logps"] = b["smp"]
    return inp


def run_trl(loss_type, b, *, is_mode=None, is_min=None, is_max=3.0, **cfg):
    lp = b["lp"].clone().requires_grad_(True)
    trainer = _StubTrainer(loss_type, lp, b["H"], use_vllm=is_mode is not None, **cfg)
    n_items = float(b["mask"].sum()) * K  # the generation batch holds K micro-batches
    inputs = inputs_of(b, n_items, is_mode is not None or cfg.get("off_policy_mask_threshold") is not None)
    if is_mode is not None:
        inputs["importance_sampling_ratio"] = trl_is_ratio(b["old"], b["smp"], b["mask"], is_mode, is_min, is_max)
    loss = trainer.compute_loss(None, inputs)
    loss.backward()
    metrics = {k: v[-1] for k, v in trainer._metrics["train"].items()}
    return loss.item(), lp.grad.numpy(), metrics, n_items


# The GRPOConfig options a case may set: passed on to TRL and grpokit when the case has them.
CASE_OPTIONS = (
    "epsilon_high",
    "delta",
    "beta",
    "importance_sampling_level",
    "top_entropy_quantile",
    "off_policy_mask_threshold",
    "use_bias_correction_kl",
    "entropy_coef",
)
CASES = [
    ("grpo", {}),
    ("bnpo", {}),
    ("dr_grpo", {}),
    ("dapo", {}),
    ("cispo", {}),
    ("sapo", {}),
    ("luspo", {"importance_sampling_level": "sequence"}),
    ("vespo", {}),
    ("grpo", {"importance_sampling_level": "sequence"}),
    ("dapo", {"importance_sampling_level": "sequence"}),
    ("cispo", {"importance_sampling_level": "sequence", "epsilon_high": 1.1}),
    ("grpo", {"delta": 1.4}),
    ("dapo", {"epsilon_high": 0.28, "delta": 1.5}),
    ("grpo", {"beta": 0.05}),
    ("dapo", {"beta": 0.05, "use_bias_correction_kl": False}),
    ("grpo", {"beta": 0.05, "importance_sampling_level": "sequence"}),
    ("dapo", {"top_entropy_quantile": 0.3}),
    ("grpo", {"top_entropy_quantile": 0.5, "entropy_coef": 0.1}),
    ("dapo", {"entropy_coef": 0.05}),
    ("bnpo", {"off_policy_mask_threshold": 0.02}),
    ("grpo", {"is_mode": "token_truncate", "is_max": 1.2, "is_min": 0.9}),
    ("dapo", {"is_mode": "token_mask", "is_max": 1.3}),
    ("dr_grpo", {"is_mode": "sequence_truncate", "is_max": 1.5}),
    ("grpo", {"is_mode": "sequence_mask", "is_max": 2.0, "off_policy_mask_threshold": 0.01}),
    ("vespo", {"is_mode": "token_truncate", "is_max": 1.2}),
]


@pytest.mark.parametrize("loss_type,cfg", CASES, ids=lambda x: repr(x))
def test_trl_parity(loss_type, cfg):
    b = batch(seed=len(repr(cfg)) + 31 * len(loss_type))
    if loss_type == "cispo" and "epsilon_high" not in cfg:
        cfg = {**cfg, "epsilon_high": 5.0}
    want_loss, want_grad, want_metrics, n_items = run_trl(loss_type, b, **cfg)

    over = {"gradient_accumulation_steps": K}
    if loss_type != "bnpo":  # TRL's bnpo normalises by the micro-batch's own tokens
        over["num_items_in_batch"] = n_items
    for name in CASE_OPTIONS:
        if name in cfg:
            over[name] = cfg[name]
    kw = dict(ref_logp=b["ref"].numpy(), entropies=b["H"].numpy())
    if "is_mode" in cfg:
        over.update(
            vllm_importance_sampling_mode=cfg["is_mode"],
            vllm_importance_sampling_clip_max=cfg["is_max"],
            vllm_importance_sampling_clip_min=cfg.get("is_min"),
        )
        kw["sampling_logp"] = b["smp"].numpy()
    elif "off_policy_mask_threshold" in cfg:
        kw["sampling_logp"] = b["smp"].numpy()
        over["vllm_importance_sampling_correction"] = False
    res = grpokit.policy_loss(
        b["lp"].numpy(), b["old"].numpy(), b["A"].numpy(), b["mask"].numpy(), spec=f"trl.{loss_type}", **kw, **over
    )
    # TRL's SAPO temperatures are float32 scalars (torch.where(A > 0, 1.0, 1.05)): 1.05 is rounded
    tol = 1e-7 if loss_type == "sapo" else 1e-10
    np.testing.assert_allclose(float(res.loss), want_loss, rtol=tol, atol=1e-12)
    np.testing.assert_allclose(res.grad_logp, want_grad, rtol=100 * tol, atol=1e-12)
    for name, value in want_metrics.items():
        if name in res.metrics:
            # TRL forms the metric means in float32 (`.float()` indicators and counts)
            np.testing.assert_allclose(float(res.metrics[name]), value, rtol=1e-6, atol=1e-7, err_msg=name)
    shared = set(want_metrics) & set(res.metrics)
    assert shared or loss_type == "sapo", (want_metrics.keys(), res.metrics.keys())


def test_trl_parity_torch_inputs_float32():
    b = batch(seed=3)
    want_loss, want_grad, _, n_items = run_trl(
        "dapo", {k: (v.float() if v.is_floating_point() else v) for k, v in b.items()}
    )
    res = grpokit.policy_loss(
        b["lp"].float(),
        b["old"].float(),
        b["A"].float(),
        b["mask"],
        spec="trl.dapo",
        gradient_accumulation_steps=K,
        num_items_in_batch=n_items,
    )
    assert isinstance(res.loss, torch.Tensor) and res.loss.dtype == torch.float32 and res.loss.dim() == 0
    np.testing.assert_allclose(float(res.loss), want_loss, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(res.grad_logp.numpy(), want_grad, rtol=1e-4, atol=1e-6)
