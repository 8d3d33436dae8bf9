#!/usr/bin/env bash
# Host-thread emulation of the CUDA loss kernels against the CPU engine (see emulate_cuda_loss.cpp).
# Needs a built tree (pip install -e .) and the package importable (for the preset rows).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=$(ls -d build/cp*/ | tail -n 1)
OUT=${TMPDIR:-/tmp}/grpokit_emulate_cuda_loss
g++ -std=c++20 -O1 -pthread -Icpp/include -Icuda scripts/emulate_cuda_loss.cpp "$BUILD/libgrpokit_core.a" \
  $( [ -n "$(nm -C "$BUILD/libgrpokit_core.a" 2>/dev/null | grep -m1 omp_get)" ] && echo -fopenmp ) -o "$OUT"
python - <<'PY' > "$OUT.cases"
import grpokit
from grpokit._presets import resolve
extra = {
    "dapo+dual_clip": {"clip_ratio_c": 1.2}, "dapo+delta": {"delta": 1.5}, "dapo+k2": {"beta": 0.1, "kl": "k2"},
    "dapo+k3_clamps": {"beta": 0.1, "kl": "k3", "kl_log_clamp": 0.2, "kl_value_clamp": 0.01},
    "dapo+k3_st": {"beta": 0.1, "kl": "k3", "kl_straight_through": True},
    "dapo+gmpo": {"surrogate": "geo_mean", "epsilon": 0.1, "epsilon_high": 0.15, "aggregation": "seq_mean_token_mean"},
    "dapo+dppo_tv": {"surrogate": "logp", "logp_weight": "dppo_tv", "clip_ratio_c": 3.0, "epsilon": 0.05, "epsilon_high": 0.05},
    "dapo+dppo_kl": {"surrogate": "logp", "logp_weight": "dppo_kl", "clip_ratio_c": 3.0, "epsilon": 0.02, "epsilon_high": 0.02},
    "dapo+clip_w": {"surrogate": "logp", "logp_weight": "clip"}, "dapo+dro": {"surrogate": "logp", "dro_beta": 0.5},
    "dapo+prune": {"prune_threshold": 0.5}, "dapo+ent": {"entropy_coef": 0.3},
    "dapo+ent_policy": {"entropy_coef": 0.3, "entropy_aggregation": "policy"},
    "dapo+opsm": {"off_policy_mask_threshold": 0.01}, "dapo+tok_is": {"vllm_importance_sampling_mode": "token_truncate"},
    "dapo+tok_mask": {"vllm_importance_sampling_mode": "token_mask"},
    "dapo+seq_trunc": {"vllm_importance_sampling_mode": "sequence_truncate"},
    "dapo+counts": {"num_items_in_batch": 1000, "dp_size": 4}, "dapo+token_sum": {"loss_agg_mode": "token-sum"},
    "dapo+nonempty": {"loss_agg_mode": "seq-mean-token-mean", "seq_count_nonempty": True},
    "dapo+sapo": {"surrogate": "sapo"}, "dapo+unclipped": {"surrogate": "unclipped"},
    "dapo+top_ent_0.2": {"top_entropy_quantile": 0.2}, "grpo+top_ent_0.5": {"top_entropy_quantile": 0.5, "entropy_coef": 0.3},
    "dapo+top_ent_0.2_ent": {"top_entropy_quantile": 0.2, "entropy_coef": 0.3},
    "dapo+top_ent_policy": {"top_entropy_quantile": 0.5, "entropy_coef": 0.3, "entropy_aggregation": "policy"},
    "dapo+seq_sum": {"ratio": "sequence_sum"}, "dapo+corrected_seq": {"beta": 0.1, "kl": "k3", "use_bias_correction_kl": True, "importance_sampling_level": "sequence"},
}
rows = [(n, resolve(n, {})) for n in sorted(grpokit.presets())] + [
    (n, resolve("trl.grpo" if n.startswith("grpo+") else "trl.dapo", dict(o))) for n, o in extra.items()]
for name, spec in rows:
    print(name, " ".join(f"{k}={v}" for k, v in spec.engine_fields().items()))
PY
if [ -n "${ONLY:-}" ]; then  # ONLY="trl.dapo verl.vanilla ...": those rows of the case list
  printf '%s\n' $ONLY | awk 'NR == FNR { want[$1] = 1; next } ($1 in want)' - "$OUT.cases" > "$OUT.only"
  CASES="$OUT.only"
fi
timeout 900 "$OUT" < "${CASES:-$OUT.cases}"
# A few cases again with blocks at their real launch size (256 threads per row, 1024 for the one-block
# kernels): 8 / 32-warp reductions and wrapping block-stride loops (EMULATE_MAX_BLOCK; FULL_BLOCKS=0 skips).
if [ "${FULL_BLOCKS:-1}" != 0 ] && [ -z "${ONLY:-}" ]; then
  printf '%s\n' paper.gspo trl.dapo paper.gtpo dapo+gmpo trl.vespo dapo+top_ent_0.2_ent \
    | awk 'NR == FNR { want[$1] = 1; next } ($1 in want)' - "$OUT.cases" > "$OUT.full"
  EMULATE_MAX_BLOCK=1024 timeout 900 "$OUT" < "$OUT.full"
fi
