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

ROWS: List[Row] = [
    (
        "nemo.vapo",
        "NeMo-RL positive_example_nll_weight (VAPO eq. 10): PPO clip 0.2/0.28, dual clip 10, token mean, "
        "+ μ·mean(−log π) over the positive samples' tokens, μ = 0.1",
        "Pass selection = rewards > 0 per sample (NeMo-RL's correct samples), broadcast over the tokens. The "
        "NLL is the mean over this call's selected tokens, as NeMo-RL's per micro-batch count; 0 without any.",
        dict(selection="positive_nll", positive_example_nll_weight=0.1, **_NEMO_PPO),
    ),
]
