// Train–inference corrections: importance weights between the trainer's and the sampler's
// log-probabilities (TRL's vllm_importance_sampling modes, verl's rollout_is with IcePop bounds and
// batch renormalisation), verl's rejection sampling, and the metrics each peer logs for them.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "grpokit/tensor.hpp"

namespace grpokit {

enum class IsLevel : uint8_t { Token, Sequence };
enum class IsMode : uint8_t { Truncate, Mask };

struct ImportanceOptions {
  IsLevel level = IsLevel::Token;
  IsMode mode = IsMode::Truncate;
  double clip_min = -INFINITY;     // lower bound on the weight (−inf: none)
  double clip_max = INFINITY;      // upper bound on the weight (+inf: none)
  double log_clamp = INFINITY;     // clamp of the (token or summed) log-ratio before exp (verl: 20)
  bool batch_normalize = false;    // divide by the batch mean weight (verl rollout_is_batch_normalize)
};

// Metric slots written by importance_weights_cpu, in this order (names as Python reports them).
const std::vector<std::string>& importance_metric_names();

// trainer_logp, sampler_logp (B, T) float32/float64, mask (B, T). `weights` is (B, T) for token
// level (0 on unselected positions) and (B,) for sequence level; `metrics` is a contiguous float64
// (n,) array with n = importance_metric_names().size(). A NaN sampler log-prob at a selected position
// means "the sampler could not score it": log-ratio 0 there (TRL), excluded from the mismatch metrics.
void importance_weights_cpu(const TensorView& trainer_logp, const TensorView& sampler_logp,
                            const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                            const TensorView& metrics);

// The checks that need no array values (options, dtypes, shapes, one device), for backends whose
// arrays the host cannot read. On a CUDA device bfloat16/float16 log-probs are accepted too.
void check_importance_args(const TensorView& trainer_logp, const TensorView& sampler_logp,
                           const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                           const TensorView& metrics);

// verl rollout_rs criteria: aggregation of a per-token divergence k ∈ {1, 2, 3}.
enum class RsAggregation : uint8_t { Token, SeqSum, SeqMean, SeqMax };  // codes of math::rs_row_statistic

struct RejectionCriterion {
  RsAggregation agg = RsAggregation::Token;
  int k = 1;
  double lower = 0.0;  // k1 only: lower bound on the ratio π_rollout/π_train (the statistic is −lr)
  double upper = 0.0;  // k1: upper ratio bound; k2, k3: upper bound on the divergence
};

// Parses "token_k1", "seq_sum_k3", ... (verl's names); unknown names list the valid ones.
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

}  // namespace grpokit
