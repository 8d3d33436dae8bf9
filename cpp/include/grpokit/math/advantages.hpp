// Per-element formulas of group advantages, shared by the CPU engine and the CUDA kernels.
//
// Conventions (docs/architecture.md, Conventions): a NaN reward is unscorable — excluded from every
// statistic, advantage 0. Group statistics are computed in two passes around a shift (the group's first valid
// reward), so an all-equal group has a mean that equals its rewards exactly and a variance of exactly 0: the
// one-pass E[r²] − m² form leaves spurious non-zero advantages there. 0/0 := 0.
#pragma once

#include <cmath>

#include "grpokit/config.hpp"

namespace grpokit {
namespace math {

template <class T>
GRPOKIT_HD bool is_nan(T x) {
  return x != x;
}

// Running sums for one group (or the whole batch): shift-centred first and second moments.
struct MomentSums {
  double shift = 0.0;  // first valid value: makes an all-equal group exact
  double sum = 0.0;  // Σ (r − shift)
  double n = 0.0;  // number of valid (non-NaN) rewards

  GRPOKIT_HD void add(double r) {
    if (is_nan(r)) return;
    if (n == 0.0) shift = r;
    sum += r - shift;
    n += 1.0;
  }
  GRPOKIT_HD double mean() const { return n > 0.0 ? shift + sum / n : 0.0; }
};

// Σ (r − mean)² accumulated in a second pass, kept as scale² · ssq (the scaled sum of squares of
// LAPACK's nrm2) so that rewards up to the largest double never overflow: 1e200 rewards still give
// ±1 standardised advantages, not 0.
struct SquaredDeviations {
  double scale = 0.0;  // largest |r − mean| seen
  double ssq = 0.0;  // Σ ((r − mean) / scale)²

  GRPOKIT_HD void add(double d) {
    const double a = d < 0.0 ? -d : d;
    if (a == 0.0) return;
    if (a > scale) {
      const double q = scale / a;
      ssq = 1.0 + ssq * q * q;
      scale = a;
    } else {
      const double q = a / scale;
      ssq += q * q;
    }
  }
  // Folds in another partial sum (for parallel reductions; order fixed by the caller).
  GRPOKIT_HD void merge(const SquaredDeviations& o) {
    if (o.scale == 0.0) return;
    if (o.scale > scale) {
      const double q = scale / o.scale;
      ssq = o.ssq + ssq * q * q;
      scale = o.scale;
    } else {
      const double q = o.scale / scale;
      ssq += o.ssq * q * q;
    }
  }
};

GRPOKIT_HD void add_sq_dev(SquaredDeviations& m2, double r, double mean) {
  if (is_nan(r)) return;
  m2.add(r - mean);
}

// Standard deviation from Σ(r − m)² over n valid values; divisor n (population) or n − 1 (sample).
// Returns 0 when fewer values than the divisor needs: such a group is degenerate, not an error here
// (group sizes are validated at the boundary).
GRPOKIT_HD double std_from_m2(const SquaredDeviations& m2, double n, bool sample) {
  const double div = sample ? n - 1.0 : n;
  if (div <= 0.0 || m2.scale == 0.0) return 0.0;
  return m2.scale * sqrt(m2.ssq / div);
}

// The same from a plain Σ(r − m)² (callers whose values cannot overflow).
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
