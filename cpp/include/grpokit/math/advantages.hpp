// Per-element formulas of group advantages, shared by the CPU engine and the CUDA kernels.
//
// Conventions (design §4): a NaN reward is unscorable — excluded from every statistic, advantage 0.
// Group statistics are computed in two passes around a shift (the group's first valid reward), so
// an all-equal group has a mean that equals its rewards exactly and a variance of exactly 0: the
// one-pass E[r²] − m² form leaves spurious non-zero advantages there. 0/0 := 0.
#pragma once

#include <cmath>

#include "grpokit/config.hpp"

namespace grpokit {
namespace math {

template <class T>
GRPOKIT_HD bool is_nan(T x) { return x != x; }

// Running sums for one group (or the whole batch): shift-centred first and second moments.
struct MomentSums {
  double shift = 0.0;  // first valid value: makes an all-equal group exact
  double sum = 0.0;    // Σ (r − shift)
  double n = 0.0;      // number of valid (non-NaN) rewards

  GRPOKIT_HD void add(double r) {
    if (is_nan(r)) return;
    if (n == 0.0) shift = r;
    sum += r - shift;
    n += 1.0;
  }
  GRPOKIT_HD double mean() const { return n > 0.0 ? shift + sum / n : 0.0; }
};

// Σ (r − mean)² accumulated in a second pass.
GRPOKIT_HD void add_sq_dev(double& m2, double r, double mean) {
  if (is_nan(r)) return;
  const double d = r - mean;
  m2 += d * d;
}

// Standard deviation from Σ(r − m)² over n valid values; divisor n (population) or n − 1 (sample).
// Returns 0 when fewer values than the divisor needs: such a group is degenerate, not an error here
// (group sizes are validated at the boundary).
GRPOKIT_HD double std_from_m2(double m2, double n, bool sample) {
  const double div = sample ? n - 1.0 : n;
  if (div <= 0.0) return 0.0;
  const double var = m2 / div;
  return var > 0.0 ? sqrt(var) : 0.0;
}

// Leave-one-out baseline for a valid reward r of a group: the mean of the group's other valid
// rewards (computed from the shifted sums, so an all-equal group stays exact). With no other valid
// reward the baseline is r itself (advantage 0).
GRPOKIT_HD double loo_baseline(double r, const MomentSums& s) {
  if (s.n <= 1.0) return r;
  return s.shift + (s.sum - (r - s.shift)) / (s.n - 1.0);
}

// The final per-row value: (r − baseline) / (scale + eps), with NaN r → 0 and 0/0 := 0.
// scale < 0 means "no scaling".
GRPOKIT_HD double advantage_value(double r, double baseline, double scale, double eps) {
  if (is_nan(r)) return 0.0;
  const double centred = r - baseline;
  if (scale < 0.0) return centred;
  const double denom = scale + eps;
  if (centred == 0.0 || denom == 0.0) return 0.0;  // 0/0 := 0 (a zero-variance group)
  return centred / denom;
}

}  // namespace math
}  // namespace grpokit
