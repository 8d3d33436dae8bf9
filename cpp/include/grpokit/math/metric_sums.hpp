// The policy loss's metric sums: what one valid token adds, how two partial sums merge, and the
// metric values they finish into. The CPU engine (cpp/src/loss_engine.cpp, cpp/src/loss_fast.cpp)
// and the CUDA kernels (cuda/loss.cu) both use it, so a metric means the same on both.
//
// Three arrays (sums, minima, maxima) rather than named members: the CUDA kernels reduce each
// array over a block as it stands (cuda/reduce.cuh).
#pragma once

#include <cstdint>

#include "grpokit/config.hpp"
#include "grpokit/loss_metrics.hpp"
#include "grpokit/math/loss.hpp"

namespace grpokit {
namespace math {

// One ratio per sequence (GSPO, GCPO, GMPO): the ratio and clip metrics count sequences, each
// row's first valid token standing for it (TRL); otherwise they count tokens.
GRPOKIT_HD bool ratio_metrics_per_row(const LossSpec& s) {
  return s.surrogate == Surrogate::GeoMean || s.ratio == RatioLevel::Sequence ||
         s.ratio == RatioLevel::SequenceSum;
}

template <class A>
struct MetricSums {
  enum Sum {
    sN,         // valid tokens
    sLow,       // clip flags (tokens, or rows when ratio_metrics_per_row)
    sHigh,
    sRegion,
    sVerl,
    sDual,
    sWclip,     // CISPO cap / clip, DPPO invalid
    sRatio,     // Σ ratio (the same count as the flags)
    sKl,        // Σ KL term value without β
    sPpoKl,     // Σ (ℓ_old − ℓ)
    sEnt,       // Σ H
    sIs,        // Σ sampler IS weight
    sNIs,       // tokens weighted by the sampler IS
    sVespoPhi,  // Σ over rows of VESPO's φ_γ
    sM2poDrop,  // valid tokens M2PO dropped (added once per call: add_m2po_dropped)
    kNumSums
  };
  // mRowLowMin / xRowHighMax: min / max over non-empty rows of the row's clip low / high mean
  // (its 0/1 flag when ratio_metrics_per_row); set by row_done.
  enum Min { mRatioMin, mIsMin, mRowLowMin, kNumMins };
  enum Max { xRatioMax, xIsMax, xRowHighMax, kNumMaxs };

  A sum[kNumSums];
  A min[kNumMins];
  A max[kNumMaxs];

  GRPOKIT_HD static MetricSums zero() {
    MetricSums m;
    for (int k = 0; k < kNumSums; ++k) m.sum[k] = A(0);
    for (int k = 0; k < kNumMins; ++k) m.min[k] = A(INFINITY);
    for (int k = 0; k < kNumMaxs; ++k) m.max[k] = A(-INFINITY);
    return m;
  }

  GRPOKIT_HD static double at_least_1(double x) { return x > 1.0 ? x : 1.0; }
  GRPOKIT_HD static A lower(A x, A m) { return x < m ? x : m; }
  GRPOKIT_HD static A higher(A x, A m) { return x > m ? x : m; }

  // One valid token: its term `o`, log-probs and entropy `h` (0 when none). `count_ratio`: whether
  // the ratio metrics count this token (every token, or a row's first: ratio_metrics_per_row).
  template <class C>
  GRPOKIT_HD void add_token(const TokenOut<C>& o, bool count_ratio, C logp, C old_logp, C h) {
    sum[sN] += A(1);
    if (count_ratio) {
      sum[sLow] += o.flags.low ? A(1) : A(0);
      sum[sHigh] += o.flags.high ? A(1) : A(0);
      sum[sRegion] += (o.flags.low || o.flags.high) ? A(1) : A(0);
      sum[sVerl] += o.flags.verl ? A(1) : A(0);
      sum[sDual] += o.flags.dual ? A(1) : A(0);
      sum[sWclip] += o.weight_clipped ? A(1) : A(0);
      sum[sRatio] += static_cast<A>(o.ratio);
      min[mRatioMin] = lower(static_cast<A>(o.ratio), min[mRatioMin]);
      max[xRatioMax] = higher(static_cast<A>(o.ratio), max[xRatioMax]);
    }
    sum[sKl] += static_cast<A>(o.kl);
    sum[sPpoKl] += static_cast<A>(old_logp - logp);
    sum[sEnt] += static_cast<A>(h);
  }

  // The sampler IS weight a token was given (only when the sampler IS applies per token or row).
  template <class C>
  GRPOKIT_HD void add_is_weight(C w) {
    sum[sIs] += static_cast<A>(w);
    sum[sNIs] += A(1);
    min[mIsMin] = lower(static_cast<A>(w), min[mIsMin]);
    max[xIsMax] = higher(static_cast<A>(w), max[xIsMax]);
  }

  // VESPO's per-row weight (once per row).
  template <class C>
  GRPOKIT_HD void add_row_weight(C w) {
    sum[sVespoPhi] += static_cast<A>(w);
  }

  // The call's valid tokens that M2PO's selection left out of the mask (not per token: they are no
  // longer valid).
  GRPOKIT_HD void add_m2po_dropped(double n) { sum[sM2poDrop] += static_cast<A>(n); }

  // After a row's tokens: its clip low / high means enter the across-row min / max.
  GRPOKIT_HD void row_done(bool per_row_ratio) {
    const A n = sum[sN];
    if (!(n > A(0))) return;
    min[mRowLowMin] = lower(per_row_ratio ? sum[sLow] : sum[sLow] / n, min[mRowLowMin]);
    max[xRowHighMax] = higher(per_row_ratio ? sum[sHigh] : sum[sHigh] / n, max[xRowHighMax]);
  }

  // this ⊕ other (associative; callers merge in a fixed order for reproducible bits).
  template <class B>
  GRPOKIT_HD void merge(const MetricSums<B>& o) {
    for (int k = 0; k < kNumSums; ++k) sum[k] += static_cast<A>(o.sum[k]);
    for (int k = 0; k < kNumMins; ++k) min[k] = lower(static_cast<A>(o.min[k]), min[k]);
    for (int k = 0; k < kNumMaxs; ++k) max[k] = higher(static_cast<A>(o.max[k]), max[k]);
  }

  // The metric values, indexed by loss_metrics::Metric, of the call's sums over its B rows.
  GRPOKIT_HD void finish(bool per_row_ratio, int64_t B, double (&vals)[loss_metrics::kNumMetrics]) const {
    namespace lm = loss_metrics;
    const double n_tok = at_least_1(static_cast<double>(sum[sN]));
    const double n_rows = at_least_1(static_cast<double>(B));
    const double n_flag = per_row_ratio ? n_rows : n_tok;
    vals[lm::kClipLowMean] = static_cast<double>(sum[sLow]) / n_flag;
    vals[lm::kClipHighMean] = static_cast<double>(sum[sHigh]) / n_flag;
    vals[lm::kClipRegionMean] = static_cast<double>(sum[sRegion]) / n_flag;
    vals[lm::kClipLowMin] = static_cast<double>(min[mRowLowMin]);
    vals[lm::kClipHighMax] = static_cast<double>(max[xRowHighMax]);
    vals[lm::kPgClipfrac] = static_cast<double>(sum[sVerl]) / n_flag;
    vals[lm::kPgClipfracLower] = static_cast<double>(sum[sDual]) / n_flag;
    vals[lm::kCispoClipRatio] = static_cast<double>(sum[sWclip]) / n_flag;
    vals[lm::kWeightClipfrac] = static_cast<double>(sum[sWclip]) / n_flag;
    vals[lm::kRatioMin] = static_cast<double>(min[mRatioMin]);
    vals[lm::kRatioMean] = static_cast<double>(sum[sRatio]) / n_flag;
    vals[lm::kRatioMax] = static_cast<double>(max[xRatioMax]);
    vals[lm::kPpoKl] = static_cast<double>(sum[sPpoKl]) / n_tok;
    vals[lm::kKl] = static_cast<double>(sum[sKl]) / n_tok;
    vals[lm::kEntropy] = static_cast<double>(sum[sEnt]) / n_tok;
    vals[lm::kIsMin] = static_cast<double>(min[mIsMin]);
    vals[lm::kIsMean] = static_cast<double>(sum[sIs]) / at_least_1(static_cast<double>(sum[sNIs]));
    vals[lm::kIsMax] = static_cast<double>(max[xIsMax]);
    vals[lm::kVespoPhi] = static_cast<double>(sum[sVespoPhi]) / n_rows;
    const double dropped = static_cast<double>(sum[sM2poDrop]);
    vals[lm::kM2poMaskedFraction] = dropped / at_least_1(static_cast<double>(sum[sN]) + dropped);
  }
};

}  // namespace math
}  // namespace grpokit
