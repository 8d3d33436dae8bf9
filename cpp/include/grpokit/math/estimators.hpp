// Per-element formulas of the advantage estimators beyond group mean / std (verl's and TRL's),
// shared by the CPU engine and any CUDA kernel. The loops that feed them live in cpp/src/estimators.cpp.
#pragma once

#include <cmath>

#include "grpokit/config.hpp"
#include "grpokit/math/advantages.hpp"

namespace grpokit {
namespace math {

// verl's `masked_mean` adds 1e-8 to the count; `masked_whiten` adds 1e-8 to the variance.
constexpr double kVerlMaskedMeanEps = 1e-8;
constexpr double kVerlWhitenEps = 1e-8;

// verl_F.masked_mean: Σ m·x / (Σ m + 1e-8).
GRPOKIT_HD double verl_masked_mean(double sum, double count) { return sum / (count + kVerlMaskedMeanEps); }

// verl_F.masked_var (unbiased): masked_mean((x − mean)²) · n / (n − 1). Needs n > 1 (checked by the caller).
GRPOKIT_HD double verl_masked_var(double sum_sq_dev, double count) {
  return verl_masked_mean(sum_sq_dev, count) * count / (count - 1.0);
}

// verl_F.masked_whiten (shift_mean=True): (x − mean) / sqrt(var + 1e-8), from values, mean and var in
// units of `scale` (a power of two, math::pow2_scale: the 1e-8 scales with them).
GRPOKIT_HD double verl_whiten(double x, double mean, double var, double scale = 1.0) {
  return (x - mean) / sqrt(var + kVerlWhitenEps / scale / scale);
}

// One step of the backward discounted return-to-go (verl REINFORCE++): a selected token takes
// r_t + γ·G_{t+1}; an unselected one (padding, tool output) contributes nothing and carries G_{t+1}
// through unchanged. Returns the new running return; `token_return` gets the value stored at t.
GRPOKIT_HD double return_to_go_step(double reward, double running, double gamma, bool selected,
                                    double* token_return) {
  if (!selected) {
    *token_return = 0.0;
    return running;
  }
  const double g = reward + gamma * running;
  *token_return = g;
  return g;
}

// Per-token path-variance proxy of the optimal token baseline (verl): ‖s_t‖² = 1 − 2π_t + Σ_v π_v²,
// scaled by ρ_t² when rollout IS weights are given (pass ρ = 1 otherwise).
GRPOKIT_HD double otb_token_weight(double logp, double sum_pi_squared, double rho) {
  return (1.0 - 2.0 * exp(logp) + sum_pi_squared) * rho * rho;
}

// GPG's batch correction factor α = B / max(#non-zero scores, 1).
GRPOKIT_HD double gpg_alpha(double rows, double nonzero) { return rows / (nonzero < 1.0 ? 1.0 : nonzero); }

// TRL RLOOTrainer's reward shaping: clamp to reward_clip_range, then the sequence-level k1 penalty
// β Σ_t (log π_old − log π_ref). NaN (unscorable) stays NaN.
GRPOKIT_HD double rloo_shaped_reward(double r, double lo, double hi, double beta, double kl_sum) {
  const double c = r < lo ? lo : (r > hi ? hi : r);
  return c - beta * kl_sum;
}

// Standardised value (x − mean) / (std + eps) with 0/0 := 0 (an all-equal set gives 0, as TRL's
// +1e-4 and the papers' convention do).
GRPOKIT_HD double standardise(double x, double mean, double std, double eps) {
  const double centred = x - mean;
  const double denom = std + eps;
  if (centred == 0.0 || denom == 0.0) return 0.0;
  return centred / denom;
}

// MaxRL (SkyRL maxrl): (r − μ) / (μ + ε) from c = (r − μ) / scale and m = μ / scale (the scales
// cancel, so nothing overflows before the ratio); 0/0 := 0. SkyRL's μ + ε = 0 gives ±inf as there.
GRPOKIT_HD double maxrl_advantage(double c, double m, double scale, double eps) {
  return c == 0.0 ? 0.0 : c / (m + eps / scale);
}

// AReaL's σ (areal/utils/data.py, Normalization._compute_std) in units of `scale`: 1 where the divisor
// (n, or n − 1 unbiased) is not positive.
GRPOKIT_HD double areal_std(const SquaredDeviations& m2, double n, bool sample, double scale) {
  return (sample ? n - 1.0 : n) > 0.0 ? std_from_m2(m2, n, sample) : 1.0 / scale;
}

// OPO's length-weighted group baseline Σ L_j R_j / Σ L_j (the caller handles Σ L_j = 0).
GRPOKIT_HD double opo_baseline(double num, double den) { return num / den; }

// Optimal token baseline at one slot: Σ G W / (Σ W + ε), or 0 where verl zeroes it (a lone
// trajectory, or the zero tail of the longest completion).
GRPOKIT_HD double otb_baseline(double num, double den, double eps, bool zero) {
  return zero ? 0.0 : num / (den + eps);
}

// The zero tail of the optimal token baseline: only the strictly longest row of a group (of more
// than one row) has one, from slot `second` (the second-longest length) on.
GRPOKIT_HD bool otb_has_zero_tail(bool handle_zero_tail, bool alone, bool is_longest, double count_max,
                                  double lmax, double lsecond) {
  return handle_zero_tail && !alone && is_longest && count_max == 1.0 && lmax > lsecond;
}

// The batch standardising of TRL (x − mean) / (std + eps), with fewer than two values giving 0
// (nanstd of one value is NaN, then 0); NaN rows give 0.
GRPOKIT_HD double batch_standardised(double x, double mean, double std, double n, double eps) {
  return (n < 2.0 || is_nan(x)) ? 0.0 : standardise(x, mean, std, eps);
}

}  // namespace math
}  // namespace grpokit
