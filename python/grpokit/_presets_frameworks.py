"""More framework preset rows (data only; _presets.py turns each into a Preset and adds it to the table).

One row: (name, description, notes, fields), fields being LossSpec fields plus an optional
``advantages`` (the ``grpokit.advantages`` keywords; default: the namespace's). Kept apart from
_presets.py so that file stays under 600 lines.
"""

from typing import Any, Dict, List, Tuple

Row = Tuple[str, str, str, Dict[str, Any]]

# NeMo-RL (NVIDIA-NeMo/RL 7ea279abfbeb698b092856d0dab61e7cf39bc909): ClippedPGLossFn in
# nemo_rl/algorithms/loss/loss_functions.py, the DAPO/VAPO settings of examples/configs/ppo_math_1B.yaml.
_NEMO_PPO: Dict[str, Any] = dict(epsilon_low=0.2, epsilon_high=0.28, clip_ratio_c=10.0, aggregation="token_mean")

# AReaL (inclusionAI/AReaL 4aef98d8d818af55b43621aaadba047ae10f4e77): grpo_loss_fn and _apply_m2po_masking in
# areal/trainer/ppo/actor.py, the settings of examples/math/gsm8k_m2po.yaml (eps_clip 0.0, decoupled loss,
# rejection_sampling ratio ≤ 5, m2_threshold 0.04).
_AREAL_DECOUPLED: Dict[str, Any] = dict(aggregation="token_mean", sampler_is="token_mask", is_max=5.0)

ROWS: List[Row] = [
    (
        "areal.m2po",
        "AReaL m2_threshold (M2PO) as gsm8k_m2po.yaml: areal.decoupled_ppo with ε = 0, on the tokens left once the "
        "largest (log π_prox/π_behave)² are dropped until their mean is < 0.04",
        "Pass the proximal log-probs as old_logp and the behaviour ones as sampling_logp (without them the moment "
        "is of log π/π_old). The dropped tokens leave the token count, as AReaL's loss_mask. Batch-level: see "
        "docs/losses.md for data parallel.",
        dict(epsilon_low=0.0, epsilon_high=0.0, m2_threshold=0.04, **_AREAL_DECOUPLED),
    ),
    (
        "areal.m2po_paper",
        "The M2PO paper's objective (Zheng et al. 2025): −M·r·A, r = π/π_behave unclipped, token mean over the "
        "tokens M keeps (second moment of log r under 0.04)",
        "Pass the behaviour log-probs as old_logp; the mask is a selection (no gradient through it).",
        dict(surrogate="unclipped", aggregation="token_mean", m2_threshold=0.04),
    ),
    (
        "nemo.vapo",
        "NeMo-RL positive_example_nll_weight (VAPO eq. 10): PPO clip 0.2/0.28, dual clip 10, token mean, "
        "+ μ·mean(−log π) over the positive samples' tokens, μ = 0.1",
        "Pass selection = rewards > 0 per sample (NeMo-RL's correct samples), broadcast over the tokens. The "
        "NLL is the mean over this call's selected tokens, as NeMo-RL's per micro-batch count; 0 without any.",
        dict(selection="positive_nll", positive_example_nll_weight=0.1, **_NEMO_PPO),
    ),
]
