// Per-element formulas of the train–inference corrections: importance weights between the trainer's
// and the sampler's log-probabilities, and verl's rejection-sampling divergences.
#pragma once

#include <cmath>
#include <cstdint>

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

// The mean log-ratio of a row or a segment, Σ / (n + eps): the log of the geometric-mean ratio
// (ROLL's and NeMo-RL's masked_mean: eps 1e-8; OpenRLHF's: eps 0). No tokens: 0 (ROLL).
GRPOKIT_HD double mean_log_ratio(double sum, double n, double eps) { return n > 0.0 ? sum / (n + eps) : 0.0; }

// Codes of IsMode (grpokit/corrections.hpp).
constexpr int kIsTruncate = 0, kIsMask = 1, kIsGeoMask = 2;

// The applied IS weight of one raw ratio: truncated, masked, or (geo_mask: seq-mask-tis of
// OpenRLHF and NeMo-RL) kept whole when the row's geometric-mean ratio lies in [lo, hi], else 0.
GRPOKIT_HD double apply_is_weight(double raw, int mode, double lo, double hi, double geo_ratio) {
  if (mode == kIsTruncate) return truncate_weight(raw, lo, hi);
  if (mode == kIsMask) return mask_weight(raw, lo, hi);
  return (geo_ratio < lo || geo_ratio > hi) ? 0.0 : raw;
}

// ROLL's segments: maximal runs of selected positions of a row (a multi-turn row's turns, split by
// masked tool output). The first position at or after t that is not selected.
template <class Selected>
GRPOKIT_HD int64_t segment_end(const Selected& selected, int64_t t, int64_t T) {
  while (t < T && selected(t)) ++t;
  return t;
}

// With explicit segment ids: the segment that starts at selected position t holds the row's later
// selected positions whose id is t's (`same(u)`), positions not selected in between skipped. The first
// position after it: a selected position with another id, or T.
template <class Selected, class Same>
GRPOKIT_HD int64_t segment_end_by_id(const Selected& selected, const Same& same, int64_t t, int64_t T) {
  for (++t; t < T && (!selected(t) || same(t)); ++t) {
  }
  return t;
}

// The probability difference ROLL's diff filter reads, e^{trainer} − e^{sampler}; 0 where the
// sampler could not score the token (NaN).
GRPOKIT_HD double prob_difference(double trainer, double sampler) {
  return sampler != sampler ? 0.0 : exp(trainer) - exp(sampler);
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

// Rejection statistics beyond verl's k1..k3: ROLL's filters on the ratio e^{agg lr} and on the
// probability difference agg(e^{trainer} − e^{sampler}) (TrainInferFilterConfig ratio_* / diff_*).
constexpr int kRsRatio = 4, kRsDiff = 5;

// The per-token value a rejection statistic aggregates: verl's divergence k(lr) (lr clamped to
// ±20), lr itself (ratio: exp is taken after aggregating, as ROLL) or the probability difference.
GRPOKIT_HD double rs_token_value(int k, double lr, double diff) {
  if (k == kRsRatio) return lr;
  if (k == kRsDiff) return diff;
  return rs_divergence(k, clamp_log_ratio(lr, kVerlLogRatioBound));
}

// The statistic from an aggregated value (a ratio criterion exponentiates).
GRPOKIT_HD double rs_finish(int k, double v) { return k == kRsRatio ? exp(v) : v; }

// Whether a rejection statistic passes: k1 keeps log(lower) ≤ s ≤ log(upper); k2/k3 keep s ≤ upper;
// ROLL's ratio and diff filters keep lower ≤ s ≤ upper.
GRPOKIT_HD bool rs_passes(int k, double s, double lower, double upper) {
  if (k == 1) return s >= log(lower) && s <= log(upper);
  if (k == kRsRatio || k == kRsDiff) return s >= lower && s <= upper;
  return s <= upper;
}

// A sequence-level rejection statistic from the row's Σ and max of the token divergence:
// agg 1 = sum, 2 = mean (Σ / (L + 1e-8), verl's masked_mean), 3 = max (0 for an empty row), 4 = mean
// Σ / L (ROLL's: its 1e-8 vanishes in float32 against an integer count; 0 for an empty row).
GRPOKIT_HD double rs_row_statistic(int agg, double sum, double max, double len) {
  if (agg == 1) return sum;
  if (agg == 2) return sum / (len + 1e-8);
  if (agg == 4) return mean_log_ratio(sum, len, 0.0);
  return len > 0.0 ? max : 0.0;
}

// verl's variance proxy (compute_variance_proxy_metrics) of one row from its masked sums: Ā = ΣA /
// (L + 1e-8), ρ̄ = Σρ / (L + 1e-8); W = Σ w_t, w_t = otb_token_weight (ρ² included); W_orig = Σ w_t /
// max(ρ_t², 1e-10). power: ρ̄²·Ā²·max(W_orig, 0) with IS weights, Ā²·max(W, 0) without.
struct VarianceProxyRow {
  double a2 = 0.0, w = 0.0, power = 0.0;
};

GRPOKIT_HD VarianceProxyRow variance_proxy_row(double sum_a, double sum_w, double sum_w_orig, double sum_rho,
                                               double len, bool has_is) {
  VarianceProxyRow r;
  const double a = verl_masked_mean(sum_a, len);
  r.a2 = a * a;
  r.w = sum_w;
  if (has_is) {
    const double rho = verl_masked_mean(sum_rho, len);
    r.power = rho * rho * r.a2 * (sum_w_orig > 0.0 ? sum_w_orig : 0.0);
  } else {
    r.power = r.a2 * (sum_w > 0.0 ? sum_w : 0.0);
  }
  return r;
}

// The recovered per-token weight without ρ² (verl divides by max(ρ², 1e-10)).
GRPOKIT_HD double variance_proxy_unweighted(double w, double rho) {
  const double r2 = rho * rho;
  return w / (r2 > 1e-10 ? r2 : 1e-10);
}

// The five metrics from the batch sums over B rows and the gradient norm g (NaN: not given):
// proxy1 = g², proxy2 = mean power, proxy3 = max(0, (proxy2 − g²)/(B − 1)) (0 without g or B = 1),
// E[Ā²], E[W].
GRPOKIT_HD void variance_proxy_metrics(double sum_power, double sum_a2, double sum_w, double B, double g,
                                       double* out) {
  const bool has_g = g == g;
  const double proxy2 = sum_power / B, g2 = has_g ? g * g : 0.0;
  const double noise = (has_g && B > 1.0) ? (proxy2 - g2) / (B - 1.0) : 0.0;
  out[0] = g2;
  out[1] = proxy2;
  out[2] = noise > 0.0 ? noise : 0.0;
  out[3] = sum_a2 / B;
  out[4] = sum_w / B;
}

}  // namespace math
}  // namespace grpokit
