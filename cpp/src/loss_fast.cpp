// The CPU loss's fast token pass: the common training configuration (fast_path_applies) runs the
// same math (clip_branch, clip_interval, sapo_gate, logp_weight) in row loops the compiler vectorises:
// the exp is cpu::exp_vec, validity is a select, row sums are SIMD reductions. Each row is one thread's
// loop, so the bits do not depend on the thread count.
//
// GCC needs two things to vectorise these loops: the function out of line (inlined into the OpenMP
// region it is not vectorised) and -fno-trapping-math on this file (CMakeLists.txt; GCC's default
// -ftrapping-math keeps it from if-converting float comparisons; grpokit never relies on FP traps).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu_kernels.hpp"
#include "grpokit/math/loss.hpp"
#include "grpokit/math/loss_passes.hpp"
#include "loss_engine.hpp"
#include "loss_simd.hpp"
#include "loss_vec.hpp"
#include "loss_vec_row.hpp"

namespace grpokit {
namespace loss_cpu {
namespace {

constexpr double kInf = INFINITY;
using Sums = math::MetricSums<double>;

// The interval form of the clip (math::clip_interval: no δ, no dual-clip cap, A constant over the
// row), the configuration of TRL's grpo/dapo/dr_grpo/bnpo and verl's vanilla without dual-clip. Seven
// row sums instead of twelve: the valid-token count comes from pass A, φ = −A·v sums as −A·Σv, and a
// token outside the interval is the low (A < 0) or high (A > 0) and pg_clipfrac flag at once.
// float32 on AVX-512 CPUs runs cpu::interval_row_avx512 (loss_simd.hpp) instead of this loop. The mask
// comes as LaneInt (lane_mask): with bytes, GCC 12 left the AVX2 and baseline clones scalar.
template <class C, bool MASKED>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    cpu::IntervalRowSums interval_row(const C* lp, const C* old, const LaneInt<C>* m, int64_t len, C lo, C hi,
                                      C vlo, C vhi, C cA, C* g) {
  C sum_v = 0, ratio_sum = 0, ppo_kl = 0, outside = 0;
  C rmin = C(INFINITY), rmax = -C(INFINITY);
#pragma omp simd reduction(+ : sum_v, ratio_sum, ppo_kl, outside) reduction(min : rmin) reduction(max : rmax)
  for (int64_t t = 0; t < len; ++t) {
    bool ok = true;
    if constexpr (MASKED) ok = m[t] != 0;
    const C l = lp[t], o = old[t];
    const C d = ok ? l - o : C(0);
    const bool inside = (d >= lo) & (d <= hi);
    const C r = cpu::exp_vec(inside ? d : (d < lo ? lo : hi));
    const C rv = r < vlo ? vlo : r;
    const C v = rv > vhi ? vhi : rv;
    const C dv = (r >= vlo) & (r <= vhi) ? C(1) : C(0);
    const C dr = inside ? r : C(0);
    g[t] = ok ? cA * dv * dr : C(0);
    sum_v += ok ? v : C(0);
    outside += ok ? C(1) - dv : C(0);
    ratio_sum += ok ? r : C(0);
    const C r_lo = ok ? r : C(INFINITY), r_hi = ok ? r : -C(INFINITY);
    rmin = r_lo < rmin ? r_lo : rmin;
    rmax = r_hi > rmax ? r_hi : rmax;
    ppo_kl -= d;  // a non-finite d (so every non-finite ℓ or ℓ_old) makes the sum so
  }
  cpu::IntervalRowSums out;
  out.sum_v = sum_v;
  out.ratio_sum = ratio_sum;
  out.ppo_kl = ppo_kl;
  out.rmin = rmin;
  out.rmax = rmax;
  out.outside = static_cast<int64_t>(outside);
  out.bad = !std::isfinite(ppo_kl);
  return out;
}

template <class C, bool MASKED>
void fast_row_interval(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, C c, int64_t len,
                       int64_t n_valid, C* g, RowResult& a) {
  const C lo = static_cast<C>(s.log_ratio_min), hi = static_cast<C>(s.log_ratio_max);
  const math::ClipInterval<C> iv =
      math::clip_interval(A, static_cast<C>(s.epsilon_low), static_cast<C>(s.epsilon_high));
  const C cA = c * (-A);
  cpu::IntervalRowSums sums;
#ifdef GRPOKIT_CPU_DISPATCH
  if constexpr (std::is_same_v<C, float>) {
    const bool log_clamp = std::isfinite(lo) || std::isfinite(hi);
    if (cpu::has_avx512())
      sums = log_clamp ? cpu::interval_row_avx512<true>(lp, old, m, len, lo, hi, iv.lo, iv.hi, cA, g)
                       : cpu::interval_row_avx512<false>(lp, old, m, len, lo, hi, iv.lo, iv.hi, cA, g);
    else
      sums = interval_row<C, MASKED>(lp, old, MASKED ? lane_mask<C>(m, len) : nullptr, len, lo, hi, iv.lo,
                                     iv.hi, cA, g);
  } else
#endif
  {
    sums = interval_row<C, MASKED>(lp, old, MASKED ? lane_mask<C>(m, len) : nullptr, len, lo, hi, iv.lo,
                                   iv.hi, cA, g);
  }
  const double nn = static_cast<double>(n_valid);
  const double outside = static_cast<double>(sums.outside);
  const double low = A < C(0) ? outside : 0.0, high = A > C(0) ? outside : 0.0;
  a.loss = static_cast<double>(c) * -static_cast<double>(A) * sums.sum_v;
  Sums& ms = a.m;
  ms.sum[Sums::sN] = nn;
  ms.sum[Sums::sLow] = low;
  ms.sum[Sums::sHigh] = high;
  ms.sum[Sums::sRegion] = low + high;
  ms.sum[Sums::sVerl] = low + high;
  ms.sum[Sums::sRatio] = sums.ratio_sum;
  ms.sum[Sums::sPpoKl] = sums.ppo_kl;
  if (nn > 0) {
    ms.min[Sums::mRatioMin] = sums.rmin;
    ms.max[Sums::xRatioMax] = sums.rmax;
  }
  ms.row_done(false);
  if (sums.bad) first_bad_position<C>(lp, old, nullptr, nullptr, MASKED ? m : nullptr, len, a);
}

// Whether a row takes the interval form of the clip: no δ, no dual-clip cap, no trust region, no KL, no DRO.
bool interval_applies(const LossSpec& s) {
  return s.surrogate == Surrogate::Clip && s.delta == kInf && s.clip_ratio_c == kInf &&
         s.trust_region == TrustRegion::None && (s.kl == KlEstimator::None || s.beta == 0.0) &&
         s.dro_beta == 0.0;
}

}  // namespace

bool fast_path_applies(const LossSpec& s, const LossInputs& in, const LossOutputs& out, bool adv_row) {
  if (out.per_token.defined() || out.weights.defined()) return false;
  const bool kl = s.kl != KlEstimator::None && s.beta != 0.0;
  const bool seq = math::uses_row_log_ratio(s);
  // one ratio per row (seq_row): any surrogate but DPPO's masks (per token), no DRO (per token)
  // the rules the row templates know (a rule added later runs the general loop until it is added there)
  using LW = LogpWeight;
  const Surrogate sur = s.surrogate;
  const LW lw = s.logp_weight;
  if (!(sur == Surrogate::Clip || sur == Surrogate::Sapo || sur == Surrogate::Unclipped ||
        sur == Surrogate::GeoMean || sur == Surrogate::Logp) ||
      (sur == Surrogate::Logp &&
       !(lw == LW::One || lw == LW::Ratio || lw == LW::Clip || lw == LW::Cap || lw == LW::DppoTv ||
         lw == LW::DppoKl || lw == LW::Vespo || lw == LW::Topr)))
    return false;
  // the trust region: per token in the token-ratio rows, with no KL term or k3 (vector_row's REGION); with
  // one ratio per row PPO's only (a test of the row's ratio: math::token_term in seq_row), as the
  // probability tests are per token
  using TR = TrustRegion;
  if (!(s.trust_region == TR::None || s.trust_region == TR::Ppo || s.trust_region == TR::DppoTv ||
        s.trust_region == TR::Tv) ||
      (s.trust_region != TR::None && (seq ? s.trust_region != TR::Ppo : kl && s.kl != KlEstimator::K3)))
    return false;
  if (!(s.selection == Selection::None || s.selection == Selection::ClipCov ||
        s.selection == Selection::KlCov || s.selection == Selection::PositiveNll))
    return false;
  if (kl && !(s.kl == KlEstimator::K1 || s.kl == KlEstimator::K2 || s.kl == KlEstimator::K3 ||
              s.kl == KlEstimator::Abs))
    return false;
  const bool dppo = lw == LW::DppoTv || lw == LW::DppoKl;
  if (seq && ((s.surrogate == Surrogate::Logp && dppo) || s.dro_beta != 0.0)) return false;
  if (!std::isnan(s.off_policy_mask_threshold)) return false;
  // the sampler IS: per sequence a row weight, per token only in the token-ratio rows
  const math::PassFlags pf = math::pass_flags(s, in.old_logp.defined(), false, in.sampling_logp.defined(),
                                              in.ref_logp.defined(), false);
  if (pf.use_is && !pf.seq_is && seq) return false;
  // VESPO: its row weight from pass A's Σ clamp(ℓ − ℓ_old) (the sampler IS folded into it: general loop)
  if (pf.vespo && (pf.use_is || !adv_row)) return false;
  // the extended row's inputs: token-ratio rows only
  const bool extended = !adv_row || in.entropies.defined() || in.token_weights.defined() ||
                        in.selection.defined() || s.selection != Selection::None;
  if (seq && (extended || (s.gtpo_entropy && s.beta != 0.0))) return false;
  auto unit = [](const TensorView& v) { return !v.defined() || v.strides[v.ndim - 1] == 1; };
  return unit(in.logp) && unit(in.old_logp) && unit(out.grad_logp) && (!kl || unit(in.ref_logp)) &&
         (!pf.use_is || unit(in.sampling_logp)) && (adv_row || unit(in.advantages)) && unit(in.entropies) &&
         unit(in.token_weights) && unit(out.grad_entropy);
}

template <class C>
double fast_row_is_log(const C* old, const C* smp, const uint8_t* m, int64_t len) {
  const LaneInt<C>* valid = lane_mask<C>(m, len);
  double su = 0.0;
#pragma omp simd reduction(+ : su)
  for (int64_t t = 0; t < len; ++t) {
    const double d = static_cast<double>(old[t]) - static_cast<double>(smp[t]);
    su += (valid[t] != 0) & (d == d) ? d : 0.0;
  }
  return su;
}

template <class C>
void fast_row(const LossSpec& s, const FastRow<C>& row, RowResult& a) {
  if (math::uses_row_log_ratio(s)) return seq_row<C>(s, row, a);
  if (fast_row_is_extended(s, row)) return extended_row<C>(s, row, a);
  if (interval_applies(s) && !row.token_is && row.w == C(1)) {
    if (row.m)
      fast_row_interval<C, true>(s, row.lp, row.old, row.m, row.A, row.c, row.len, row.n_valid, row.g, a);
    else
      fast_row_interval<C, false>(s, row.lp, row.old, nullptr, row.A, row.c, row.len, row.n_valid, row.g, a);
    if (row.smp_bad) first_bad_position<C>(row.lp, row.old, nullptr, row.smp, row.m, row.len, a);
    return;
  }
  const LaneInt<C>* valid = lane_mask<C>(row.m, row.len);
  RowExtras<C> none{};
  if (row.token_is)
    vector_row_rules<C, true, false>(s, row, valid, none, a);
  else
    vector_row_rules<C, false, false>(s, row, valid, none, a);
}

template double fast_row_is_log<float>(const float*, const float*, const uint8_t*, int64_t);
template double fast_row_is_log<double>(const double*, const double*, const uint8_t*, int64_t);
template void fast_row<float>(const LossSpec&, const FastRow<float>&, RowResult&);
template void fast_row<double>(const LossSpec&, const FastRow<double>&, RowResult&);

}  // namespace loss_cpu
}  // namespace grpokit
