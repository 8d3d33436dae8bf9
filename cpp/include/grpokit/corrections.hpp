// Train–inference corrections: importance weights between the trainer's and the sampler's
// log-probabilities (TRL's vllm_importance_sampling modes, verl's rollout_is with IcePop bounds and
// batch renormalisation, ROLL's geometric and segment weights, OpenRLHF's and NeMo-RL's
// seq-mask-tis), verl's rejection sampling and ROLL's filters, and the metrics each peer logs.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "grpokit/config.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {

// Token: e^{lr_t}; Sequence: e^{Σ lr}; Geometric: e^{Σ lr / (L + geo_eps)} per row; Segment: per
// maximal run of selected tokens, e^{Σ_run lr / (n_run + geo_eps)} (ROLL's multi-turn weights).
enum class IsLevel : uint8_t { Token, Sequence, Geometric, Segment };
// Whether a level has one weight per row (weights (B,)) rather than per token.
GRPOKIT_HD bool weight_per_row(IsLevel level) {
  return level == IsLevel::Sequence || level == IsLevel::Geometric;
}
// Codes math::kIsTruncate, kIsMask, kIsGeoMask.
enum class IsMode : uint8_t { Truncate, Mask, GeoMask };

struct ImportanceOptions {
  IsLevel level = IsLevel::Token;
  IsMode mode = IsMode::Truncate;
  double clip_min = -INFINITY;     // lower bound on the weight (−inf: none)
  double clip_max = INFINITY;      // upper bound on the weight (+inf: none)
  double log_clamp = INFINITY;     // clamp of the (token or summed) log-ratio before exp (verl: 20)
  bool batch_normalize = false;    // divide by the batch mean weight (verl rollout_is_batch_normalize)
  double geo_eps = 1e-8;           // of the geometric means (ROLL, NeMo-RL: 1e-8; OpenRLHF: 0)
  // Segment level: optional (B, T) int32/int64 ids of each token's segment (turn), >= 0 and
  // non-decreasing along a row at selected positions; without them a segment is a run of the mask.
  TensorView segment_ids;
};

// Metric slots written by importance_weights_cpu, in this order (names as Python reports them).
const std::vector<std::string>& importance_metric_names();

// trainer_logp, sampler_logp (B, T) float32/float64, mask (B, T). `weights` is (B, T) for token and
// segment level (0 on unselected positions) and (B,) for sequence and geometric level; `metrics` is a
// contiguous float64 (n,) array with n = importance_metric_names().size(). A NaN sampler log-prob at a
// selected position means "the sampler could not score it": log-ratio 0 there (TRL), excluded from the
// mismatch metrics.
void importance_weights_cpu(const TensorView& trainer_logp, const TensorView& sampler_logp,
                            const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                            const TensorView& metrics);

// The checks that need no array values (options, dtypes, shapes, one device), for backends whose
// arrays the host cannot read. On a CUDA device bfloat16/float16 log-probs are accepted too.
void check_importance_args(const TensorView& trainer_logp, const TensorView& sampler_logp,
                           const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                           const TensorView& metrics);

// verl rollout_rs criteria: aggregation of a per-token divergence k ∈ {1, 2, 3}; ROLL's filters:
// of lr (k = math::kRsRatio, exponentiated after) or of e^{trainer} − e^{sampler} (math::kRsDiff),
// per token, per row (ROLL's "geometric" is RowMean, Σ / L; "sequence" SeqSum) or per segment (a
// maximal run of selected tokens, Σ / n). Codes of math::rs_row_statistic, then Segment.
enum class RsAggregation : uint8_t { Token, SeqSum, SeqMean, SeqMax, RowMean, Segment };

struct RejectionCriterion {
  RsAggregation agg = RsAggregation::Token;
  int k = 1;  // 1, 2, 3: verl's divergences; math::kRsRatio, math::kRsDiff: ROLL's filters
  double lower = 0.0;  // k1: lower bound on the ratio π_rollout/π_train (the statistic is −lr); ROLL's
                       // ratio and diff: lower bound on the statistic
  double upper = 0.0;  // k1: upper ratio bound; k2, k3: upper bound on the divergence; ROLL: upper bound
};

// Parses "token_k1", "seq_sum_k3", ... (verl's names) and "<token|geometric|sequence|segment>_<ratio|diff>"
// (ROLL's filters); unknown names list the valid ones.
RejectionCriterion parse_rejection_criterion(const std::string& name);

// Metrics per criterion (prefix "<name>_") then overall, in this order.
std::vector<std::string> rejection_metric_names(const std::vector<std::string>& criteria);

void check_rejection_args(const TensorView& trainer_logp, const TensorView& sampler_logp,
                          const TensorView& mask, const std::vector<RejectionCriterion>& criteria,
                          const TensorView& keep, const TensorView& metrics);

// keep (B, T) bool: mask ∧ every criterion passes. metrics: float64 (n,) contiguous.
void rejection_mask_cpu(const TensorView& trainer_logp, const TensorView& sampler_logp,
                        const TensorView& mask, const std::vector<RejectionCriterion>& criteria,
                        const TensorView& keep, const TensorView& metrics);

// verl's variance-proxy metrics (compute_variance_proxy_metrics): logp, sum_pi_squared (the log-prob
// op's Σπ²), advantages and mask (B, T); is_weights (B, T) optional (rollout IS weights ρ).
struct VarianceProxyInputs {
  TensorView logp, sum_pi_squared, advantages, mask, is_weights;
};

// proxy1_signal_strength, proxy2_total_power, proxy3_pure_noise, expected_a_squared, expected_w.
const std::vector<std::string>& variance_proxy_metric_names();

// gradient_norm: the batch gradient's norm (NaN: not given; proxy1 and proxy3 are then 0).
void check_variance_proxy_args(const VarianceProxyInputs& in, double gradient_norm,
                               const TensorView& metrics);
void variance_proxy_cpu(const VarianceProxyInputs& in, double gradient_norm, const TensorView& metrics);

}  // namespace grpokit
