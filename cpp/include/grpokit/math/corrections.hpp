// Per-element formulas of the train–inference corrections: importance weights between the trainer's
// and the sampler's log-probabilities, and verl's rejection-sampling divergences.
#pragma once

#include <cmath>

#include "grpokit/config.hpp"
#include "grpokit/math/estimators.hpp"

namespace grpokit {
namespace math {

// verl's SAFETY_BOUND: log-ratios (token or summed per sequence) are clamped to ±20 before exp.
constexpr double kVerlLogRatioBound = 20.0;

// clamp(lr, −bound, bound); bound = +inf leaves lr unchanged (TRL clamps nothing).
GRPOKIT_HD double clamp_log_ratio(double lr, double bound) {
  return lr < -bound ? -bound : (lr > bound ? bound : lr);
}

// Truncated IS: clamp(w, lo, hi) (a missing bound is ∓inf).
GRPOKIT_HD double truncate_weight(double w, double lo, double hi) { return w < lo ? lo : (w > hi ? hi : w); }

// Masked IS / IcePop: w · 1[lo ≤ w ≤ hi].
GRPOKIT_HD double mask_weight(double w, double lo, double hi) { return (w < lo || w > hi) ? 0.0 : w; }

// verl's rejection-sampling divergences of lr = log π_train − log π_rollout (already clamped to ±20):
// k1 = −lr, k2 = ½ lr², k3 = e^{lr} − 1 − lr.
GRPOKIT_HD double rs_divergence(int k, double lr) {
  if (k == 1) return -lr;
  if (k == 2) return 0.5 * lr * lr;
  return exp(lr) - 1.0 - lr;
}

// k3 of the sampler vs the trainer as verl logs it (`k3_kl`): e^{lr} − lr − 1 (unclamped).
GRPOKIT_HD double mismatch_k3(double lr) { return exp(lr) - lr - 1.0; }

// Log-ratio trainer − sampler at a selected position; a NaN sampler log-prob (the sampler could not
// score the token) gives 0 (TRL's nan_to_num).
GRPOKIT_HD double sampler_log_ratio(double trainer, double sampler) {
  return sampler != sampler ? 0.0 : trainer - sampler;
}

// The applied IS weight of one raw ratio: truncated (mask_mode = false) or masked.
GRPOKIT_HD double apply_is_weight(double raw, bool mask_mode, double lo, double hi) {
  return mask_mode ? mask_weight(raw, lo, hi) : truncate_weight(raw, lo, hi);
}

// The lower bound verl's fraction_low compares with: clip_min, else 1/clip_max, else 0.
GRPOKIT_HD double is_lower_bound(double clip_min, double clip_max) {
  const bool min_finite = clip_min - clip_min == 0.0;  // x − x is 0 exactly when x is finite
  const bool max_finite = clip_max - clip_max == 0.0;
  return min_finite ? clip_min : (max_finite ? 1.0 / clip_max : 0.0);
}

// verl rollout_is_std: the standard deviation of the weights clamped to [0, upper] from Σc², their
// mean and the token count (0 with a single token).
GRPOKIT_HD double is_weight_std(double sum_sq, double mean, double n) {
  const double var = verl_masked_mean(sum_sq, n) - mean * mean;
  return n > 1.0 ? sqrt(var > 0.0 ? var : 0.0) : 0.0;
}

// Whether a rejection statistic passes: k1 keeps log(lower) ≤ s ≤ log(upper); k2/k3 keep s ≤ upper.
GRPOKIT_HD bool rs_passes(int k, double s, double lower, double upper) {
  return k == 1 ? (s >= log(lower) && s <= log(upper)) : s <= upper;
}

// A sequence-level rejection statistic from the row's Σ and max of the token divergence:
// agg 1 = sum, 2 = mean (Σ / (L + 1e-8), verl's masked_mean), 3 = max (0 for an empty row).
GRPOKIT_HD double rs_row_statistic(int agg, double sum, double max, double len) {
  if (agg == 1) return sum;
  if (agg == 2) return sum / (len + 1e-8);
  return len > 0.0 ? max : 0.0;
}

}  // namespace math
}  // namespace grpokit
