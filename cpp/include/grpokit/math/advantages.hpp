// Per-element formulas of group advantages, shared by the CPU engine and the CUDA kernels.
//
// Conventions (docs/architecture.md, Conventions): a NaN reward is unscorable — excluded from every
// statistic, advantage 0. Group statistics are computed in two passes around a shift (the group's first valid
// reward), so an all-equal group has a mean that equals its rewards exactly and a variance of exactly 0: the
// one-pass E[r²] − m² form leaves spurious non-zero advantages there. 0/0 := 0. Every statistic is kept in
// a power-of-two scaled domain (pow2_scale), so finite rewards up to ±DBL_MAX never overflow; the scaling
// itself changes no bit wherever the unscaled arithmetic does not overflow.
#pragma once

#include <cfloat>
#include <cmath>

#include "grpokit/config.hpp"

namespace grpokit {
namespace math {

template <class T>
GRPOKIT_HD bool is_nan(T x) {
  return x != x;
}

// The power-of-two scale of a set of values whose largest |value| is `maxabs`: 1 up to 1, else the
// largest power of two <= maxabs, so every scaled value is below 2 in magnitude and every difference
// below 4. Dividing by a power of two is exact (barring subnormals), so scaled arithmetic rounds exactly
// as the unscaled one would and results equal the unscaled ones wherever those do not overflow.
GRPOKIT_HD double pow2_scale(double maxabs) { return maxabs > 1.0 ? ldexp(1.0, ilogb(maxabs)) : 1.0; }

// Running sums for one group (or the whole batch), cancellation- and overflow-safe: the mean is kept as
// shift + offset (shift = the first valid value, so an all-equal group is exact) and the offset's sum
// in units of `scale`, a power of two that grows with the largest |r| seen (pow2_scale), so finite
// rewards up to the largest double never overflow: mean(±9e307) is 0, not NaN.
struct MomentSums {
  double shift = 0.0;  // first valid value: makes an all-equal group exact
  double sum = 0.0;  // Σ (r − shift) / scale
  double n = 0.0;  // number of valid (non-NaN) rewards
  double scale = 1.0;  // pow2_scale of the largest |r| seen

  // Raises the scale to s (a larger power of two); the sum follows exactly.
  GRPOKIT_HD void rescale(double s) {
    if (s <= scale) return;
    sum *= scale / s;
    scale = s;
  }
  GRPOKIT_HD void add(double r) {
    if (is_nan(r)) return;
    if (n == 0.0) shift = r;
    const double a = r < 0.0 ? -r : r;
    if (a >= 2.0 * scale) rescale(pow2_scale(a));
    sum += r / scale - shift / scale;
    n += 1.0;
  }
  // (r − shift) / scale: exact for rewards within a factor of two of the shift (Sterbenz).
  GRPOKIT_HD double diff(double r) const { return r / scale - shift / scale; }
  GRPOKIT_HD double offset() const { return n > 0.0 ? sum / n : 0.0; }  // (mean − shift) / scale
  GRPOKIT_HD double mean_scaled() const { return shift / scale + offset(); }  // mean / scale
  GRPOKIT_HD double mean() const { return mean_scaled() * scale; }  // finite: |mean| <= max|r|
  // (r − mean) / scale as (r − shift) − offset: the mean is never rounded to one double before the
  // subtraction, so the centred values of a group sum to zero to the rounding of the values themselves
  // (rewards one float step apart included).
  GRPOKIT_HD double centred(double r) const { return diff(r) - offset(); }
  // (r − the mean of the group's other valid rewards) / scale (leave-one-out). With no other valid
  // reward the baseline is r itself.
  GRPOKIT_HD double loo_centred(double r) const {
    if (n <= 1.0) return 0.0;
    const double d = diff(r);
    return d - (sum - d) / (n - 1.0);
  }
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

// Adds (r − mean)² in the scaled domain of s: std_from_m2 then gives σ / s.scale.
GRPOKIT_HD void add_sq_dev(SquaredDeviations& m2, double r, const MomentSums& s) {
  if (is_nan(r)) return;
  m2.add(s.centred(r));
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

// c · sc (sc a power of two), saturated at ±DBL_MAX where only rounding carries a value within a few
// ulps of DBL_MAX past it (r − mean of {DBL_MAX, −DBL_MAX, ...} is exactly ±DBL_MAX, its rounded scaled
// form may be one ulp above); exact values beyond DBL_MAX still overflow.
GRPOKIT_HD double unscale(double c, double sc) {
  const double v = c * sc;
  if (!(v > DBL_MAX || v < -DBL_MAX)) return v;
  const double lim = DBL_MAX / sc * (1.0 + 8.0 * DBL_EPSILON);
  return c <= lim && c >= -lim ? (c < 0.0 ? -DBL_MAX : DBL_MAX) : v;
}

// The running moments of a reward stream (ROLL's RunningMoments, norm_mean_type="running"): count, mean
// and population std, kept by the caller between batches. merge is Chan et al.'s parallel update in
// its weighted form (shares na/n and nb/n, never a sum of squares): ROLL's update when b is a batch,
// and the data-parallel merge of two ranks' states. It runs in the scaled domain of the largest |mean|
// or std (pow2_scale), so rewards up to ±DBL_MAX never overflow. Empty states (count 0) merge as the
// identity.
struct RunningMoments {
  double count = 0.0;
  double mean = 0.0;
  double std = 0.0;  // population std around mean

  GRPOKIT_HD void merge(const RunningMoments& b) {
    if (b.count == 0.0) return;
    if (count == 0.0) {
      *this = b;
      return;
    }
    const double m1 = mean < 0.0 ? -mean : mean, m2 = b.mean < 0.0 ? -b.mean : b.mean;
    const double sc = pow2_scale(fmax(fmax(m1, m2), fmax(std, b.std)));
    const double n = count + b.count, wa = count / n, wb = b.count / n;
    const double d = b.mean / sc - mean / sc, sa = std / sc, sb = b.std / sc;
    mean = (mean / sc + d * wb) * sc;
    std = sqrt(wa * sa * sa + wb * sb * sb + wa * wb * d * d) * sc;
    count = n;
  }
  // The std the estimator divides by: population, or sample (ROLL's: divisor count − 1; 0 below two).
  GRPOKIT_HD double divisor_std(bool sample) const {
    if (!sample) return std;
    return count > 1.0 ? std * sqrt(count / (count - 1.0)) : 0.0;
  }
};

// A batch's moments from its two-pass sums (s, and m2 around s's mean).
GRPOKIT_HD RunningMoments batch_moments(const MomentSums& s, const SquaredDeviations& m2) {
  RunningMoments b;
  b.count = s.n;
  b.mean = s.mean();
  b.std = std_from_m2(m2, s.n, false) * s.scale;
  return b;
}

// The final per-row value (r − b) / (σ + ε) from the scaled forms c = (r − b) / sc and sd = σ / ss (sc, ss
// powers of two; sd < 0 means "no scaling"), so nothing overflows whenever σ scales: 0/0 := 0.
// Without σ the result is r − b, which overflows only where the exact value does (|r − b| > DBL_MAX).
GRPOKIT_HD double scaled_advantage(double c, double sc, double sd, double ss, double eps) {
  if (sd < 0.0) return unscale(c, sc);
  const double denom = sd + eps / ss;
  if (c == 0.0 || denom == 0.0) return 0.0;  // 0/0 := 0 (a zero-variance group)
  return c / denom * (sc / ss);
}

// The group advantage of reward r from its group's sums s (mean or leave-one-out baseline) and a std
// sd in units of ss (sd < 0: none); NaN r → 0.
GRPOKIT_HD double group_advantage(double r, const MomentSums& s, bool loo, double sd, double ss, double eps) {
  if (is_nan(r)) return 0.0;
  return scaled_advantage(loo ? s.loo_centred(r) : s.centred(r), s.scale, sd, ss, eps);
}

// The running estimator's (r − mean) / (sd + eps) (sd < 0: r − mean), in the scaled domain of the
// largest of |r|, |mean| and sd, so nothing overflows where the exact value does not; NaN r → 0.
GRPOKIT_HD double running_advantage(double r, double mean, double sd, double eps) {
  if (is_nan(r)) return 0.0;
  const double a = r < 0.0 ? -r : r, m = mean < 0.0 ? -mean : mean;
  const double sc = pow2_scale(fmax(fmax(a, m), sd));
  return scaled_advantage(r / sc - mean / sc, sc, sd < 0.0 ? -1.0 : sd / sc, sc, eps);
}

// The same from unscaled values (callers whose values cannot overflow): (r − baseline) / (scale + eps).
GRPOKIT_HD double advantage_value(double r, double baseline, double scale, double eps) {
  if (is_nan(r)) return 0.0;
  return scaled_advantage(r - baseline, 1.0, scale, 1.0, eps);
}

}  // namespace math
}  // namespace grpokit
