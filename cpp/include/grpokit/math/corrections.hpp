// Per-element formulas of the train–inference corrections: importance weights between the trainer's
// and the sampler's log-probabilities, and verl's rejection-sampling divergences.
#pragma once

#include <cmath>

#include "grpokit/config.hpp"

namespace grpokit {
namespace math {

// verl's SAFETY_BOUND: log-ratios (token or summed per sequence) are clamped to ±20 before exp.
constexpr double kVerlLogRatioBound = 20.0;

// clamp(lr, −bound, bound); bound = +inf leaves lr unchanged (TRL clamps nothing).
GRPOKIT_HD double clamp_log_ratio(double lr, double bound) {
  return lr < -bound ? -bound : (lr > bound ? bound : lr);
}

// Truncated IS: clamp(w, lo, hi) (a missing bound is ∓inf).
GRPOKIT_HD double truncate_weight(double w, double lo, double hi) {
  return w < lo ? lo : (w > hi ? hi : w);
}

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

}  // namespace math
}  // namespace grpokit
