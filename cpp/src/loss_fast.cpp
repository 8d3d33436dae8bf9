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

namespace grpokit {
namespace loss_cpu {
namespace {

constexpr double kInf = INFINITY;
using Sums = math::MetricSums<double>;

// The interval form of the clip (math::clip_interval: no δ, no dual-clip cap, A constant over the
// row), the configuration of TRL's grpo/dapo/dr_grpo/bnpo and verl's vanilla without dual-clip. Seven
// row sums instead of twelve: the valid-token count comes from pass A, φ = −A·v sums as −A·Σv, and a
// token outside the interval is the low (A < 0) or high (A > 0) and pg_clipfrac flag at once.
// float32 on AVX-512 CPUs runs cpu::interval_row_avx512 (loss_simd.hpp) instead of this loop.
template <class C, bool MASKED>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    cpu::IntervalRowSums interval_row(const C* lp, const C* old, const uint8_t* m, int64_t len, C lo, C hi,
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
      sums = interval_row<C, MASKED>(lp, old, m, len, lo, hi, iv.lo, iv.hi, cA, g);
  } else
#endif
  {
    sums = interval_row<C, MASKED>(lp, old, m, len, lo, hi, iv.lo, iv.hi, cA, g);
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

// One row of the token-ratio rules with a constant advantage: the surrogate SUR (and its weight rule
// LW for Surrogate::Logp), the KL estimator KL (None: no KL term) fixed at compile time, so that
// every rule's math/ formula inlines to selects and the loop vectorises. valid: the row's mask as
// LaneInt (m: the same as bytes, nullptr when the call has none); ref: ref_logp (read when KL != None).
//
// IV (Surrogate::Clip without δ and dual-clip cap): the clip in its interval form (math::clip_interval,
// as fast_row_interval), one `outside` count instead of four flag sums. TIS: the sampler IS weight
// per token (math::weight_rule's, from row.smp), times the row's weight row.w.
//
// Each loop is cloned for AVX-512 and AVX2 (GRPOKIT_CPU_CLONES, picked when the library loads): at SSE
// width the row sums spill registers (measured 5.2 → 1.3 ns/token with AVX-512 at 64×2048).
template <class C, Surrogate SUR, LogpWeight LW, KlEstimator KL, bool IV, bool TIS>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    void vector_row(const LossSpec& s, const FastRow<C>& row, const LaneInt<C>* valid, RowResult& a) {
  const C *lp = row.lp, *old = row.old, *ref = row.ref, *smp = row.smp;
  const C A = row.A, c = row.c, w_row = row.w;
  const int64_t len = row.len;
  C* g = row.g;
  const C is_trunc = cpu::opaque(
      C(s.sampler_is == SamplerIs::TokenTruncate || s.sampler_is == SamplerIs::SequenceTruncate ? 1 : 0));
  const C is_lo = static_cast<C>(s.is_min), is_hi = static_cast<C>(s.is_max);
  const C lo = static_cast<C>(s.log_ratio_min), hi = static_cast<C>(s.log_ratio_max);
  const C el = static_cast<C>(s.epsilon_low), eh = static_cast<C>(s.epsilon_high);
  const C delta = static_cast<C>(s.delta), dual_c = static_cast<C>(s.clip_ratio_c);
  const C tp = static_cast<C>(s.sapo_temperature_pos), tn = static_cast<C>(s.sapo_temperature_neg);
  const KlRule<C> kl(s);
  const math::ClipInterval<C> iv = math::clip_interval(A, el, eh);
  const C dro = static_cast<C>(s.dro_beta);
  // Every lane quantity is of type C (flags as 0/1 values): mixed widths stop the vectoriser.
  // Row sums are accumulated in C per lane; a row is at most a few 10^4 tokens.
  C sum_phi = 0, ratio_sum = 0, ppo_kl = 0, n = 0, low = 0, high = 0, verl = 0, dual = 0, wclip = 0;
  C kl_sum = 0, ref_check = 0, is_sum = 0, smp_bad = 0;
  C rmin = C(INFINITY), rmax = -C(INFINITY), is_min = C(INFINITY), is_max = -C(INFINITY);
#pragma omp simd reduction(+ : sum_phi, ratio_sum, ppo_kl, n, low, high, verl, dual, wclip, kl_sum, \
                               ref_check, is_sum, smp_bad) reduction(min : rmin, is_min)            \
    reduction(max : rmax, is_max)
  for (int64_t t = 0; t < len; ++t) {
    // Loads are unconditional (conditional loads stop the vectoriser); values are then selected,
    // never multiplied by the mask (padding may hold NaN).
    const bool ok = valid[t] != 0;
    const C l = lp[t], o = old[t];
    const C d = ok ? l - o : C(0);
    const math::ValueGrad<C> r = math::ratio_from_log<C, VecExp>(d, lo, hi);
    C v, dv, dx = r.d;
    C f_low = 0, f_high = 0, f_verl = 0, f_dual = 0, wc = 0;
    if constexpr (SUR == Surrogate::Clip && IV) {
      const C rv = r.v < iv.lo ? iv.lo : r.v;
      v = rv > iv.hi ? iv.hi : rv;
      dv = (r.v >= iv.lo) & (r.v <= iv.hi) ? C(1) : C(0);
      f_low = C(1) - dv;  // outside the interval: split into low / high by the sign of A below
    } else if constexpr (SUR == Surrogate::Clip) {
      math::ClipFlags f;
      const math::ValueGrad<C> b = math::clip_branch(r.v, A, el, eh, delta, dual_c, &f);
      v = b.v;
      dv = b.d;
      f_low = f.low ? C(1) : C(0);
      f_high = f.high ? C(1) : C(0);
      f_verl = f.verl ? C(1) : C(0);
      f_dual = f.dual ? C(1) : C(0);
    } else if constexpr (SUR == Surrogate::Sapo) {
      const math::ValueGrad<C> b = math::sapo_gate<C, VecExp>(r.v, A, tp, tn);
      v = b.v;
      dv = b.d;
    } else if constexpr (SUR == Surrogate::Logp) {
      bool clipped = false;
      const C w = math::logp_weight<C, VecExp>(LW, r.v, l, o, A, el, eh, dual_c, &clipped);
      v = w * l;
      dv = w;
      dx = C(1);
      wc = clipped ? C(1) : C(0);
    } else {
      v = r.v;
      dv = C(1);
    }
    C w = w_row;
    if constexpr (TIS) {  // ρ_t = exp(ℓ_old − ℓ_smp), an unscored token (NaN) as 1 (math::weight_rule)
      const C sm = smp[t], di = o - sm, x = di != di ? C(0) : di;
      // both forms (one exp), then a select on a number: a loop-invariant bool stops GCC 12's vectoriser
      const C w_trunc = math::sampler_is_weight<C, VecExp>(x, true, is_lo, is_hi);
      const C w_mask = math::sampler_is_weight<C, VecExp>(x, false, is_lo, is_hi);
      const C wis = is_trunc != C(0) ? w_trunc : w_mask;
      w = w_row * wis;
      is_sum += ok ? wis : C(0);
      const C w_lo = ok ? wis : C(INFINITY), w_hi = ok ? wis : -C(INFINITY);
      is_min = w_lo < is_min ? w_lo : is_min;
      is_max = w_hi > is_max ? w_hi : is_max;
      const C sm_abs = sm < C(0) ? -sm : sm;  // ±inf is an error, NaN an unscored token
      smp_bad += ok ? (sm_abs == C(INFINITY) ? C(1) : C(0)) : C(0);
    }
    C phi = w * (-A * v);
    C gt = c * (w * (-A)) * dv * dx;
    if constexpr (KL != KlEstimator::None) {
      const C rf = ref[t];
      ref_check += ok ? rf - rf : C(0);  // 0, or NaN once a valid ref_logp is not finite
      const math::ValueGrad<C> k = kl.template term<KL>(l, rf, r.v, r.d);
      phi += kl.beta * k.v;
      gt += c * (kl.beta * k.d);
      kl_sum += ok ? k.v : C(0);
    }
    // DRO: + ½β(ℓ − ℓ_old)², + 0 without it (unconditional: a loop-invariant bool stops GCC 12's vectoriser)
    phi += C(0.5) * dro * d * d;
    gt += c * (dro * d);
    g[t] = ok ? gt : C(0);
    sum_phi += ok ? phi : C(0);
    // (`x += ok ? 1 : 0` rather than a 0/1 variable: GCC 12 then recognises the reductions)
    n += ok ? C(1) : C(0);
    low += ok ? f_low : C(0);
    high += ok ? f_high : C(0);
    verl += ok ? f_verl : C(0);
    dual += ok ? f_dual : C(0);
    wclip += ok ? wc : C(0);
    ratio_sum += ok ? r.v : C(0);
    const C r_lo = ok ? r.v : C(INFINITY), r_hi = ok ? r.v : -C(INFINITY);  // plain min/max: vectorisable
    rmin = r_lo < rmin ? r_lo : rmin;
    rmax = r_hi > rmax ? r_hi : rmax;
    // d = 0 at padding; a non-finite valid ℓ or ℓ_old makes the sum non-finite (no per-token flag: a
    // bool of the mask's width mixed with the floats' stops GCC 12's vectoriser)
    ppo_kl -= d;
  }
  if constexpr (IV) {  // a token outside the interval is the low (A < 0) or high (A > 0) and verl flag
    const C outside = low;
    low = A < C(0) ? outside : C(0);
    high = A > C(0) ? outside : C(0);
    verl = low + high;
  }
  const double nn = static_cast<double>(n);
  a.loss = static_cast<double>(c) * static_cast<double>(sum_phi);
  Sums& ms = a.m;
  ms.sum[Sums::sN] = nn;
  ms.sum[Sums::sLow] = low;
  ms.sum[Sums::sHigh] = high;
  ms.sum[Sums::sRegion] = static_cast<double>(low) + static_cast<double>(high);
  ms.sum[Sums::sVerl] = verl;
  ms.sum[Sums::sDual] = dual;
  ms.sum[Sums::sWclip] = wclip;
  ms.sum[Sums::sRatio] = ratio_sum;
  ms.sum[Sums::sPpoKl] = ppo_kl;
  ms.sum[Sums::sKl] = kl_sum;
  if (nn > 0) {
    ms.min[Sums::mRatioMin] = static_cast<double>(rmin);
    ms.max[Sums::xRatioMax] = static_cast<double>(rmax);
  }
  if constexpr (TIS) {
    ms.sum[Sums::sIs] = is_sum;
    ms.sum[Sums::sNIs] = nn;
    if (nn > 0) {
      ms.min[Sums::mIsMin] = static_cast<double>(is_min);
      ms.max[Sums::xIsMax] = static_cast<double>(is_max);
    }
  }
  ms.row_done(false);
  if (!std::isfinite(ppo_kl) || !std::isfinite(ref_check) || smp_bad != C(0) || row.smp_bad)
    first_bad_position(lp, old, KL != KlEstimator::None ? ref : nullptr, row.smp, row.m, len, a);
}

// The KL estimator, then the surrogate (and weight rule), as template arguments.
template <class C, bool TIS, Surrogate SUR, LogpWeight LW, bool IV = false>
void vector_row_kl(const LossSpec& s, const FastRow<C>& row, const LaneInt<C>* valid, RowResult& a) {
  const KlEstimator kl = s.beta != 0.0 ? s.kl : KlEstimator::None;
  switch (kl) {
    case KlEstimator::None:
      return vector_row<C, SUR, LW, KlEstimator::None, IV, TIS>(s, row, valid, a);
    case KlEstimator::K1:
      return vector_row<C, SUR, LW, KlEstimator::K1, IV, TIS>(s, row, valid, a);
    case KlEstimator::K2:
      return vector_row<C, SUR, LW, KlEstimator::K2, IV, TIS>(s, row, valid, a);
    case KlEstimator::K3:
      return vector_row<C, SUR, LW, KlEstimator::K3, IV, TIS>(s, row, valid, a);
    case KlEstimator::Abs:
      return vector_row<C, SUR, LW, KlEstimator::Abs, IV, TIS>(s, row, valid, a);
  }
}

template <class C, bool TIS>
void vector_row_rules(const LossSpec& s, const FastRow<C>& row, const LaneInt<C>* valid, RowResult& a) {
  using LW = LogpWeight;
  constexpr LW kAny = LW::One;  // the weight rule matters to Surrogate::Logp only
  switch (s.surrogate) {
    case Surrogate::Clip:
      if (s.delta == kInf && s.clip_ratio_c == kInf)
        return vector_row_kl<C, TIS, Surrogate::Clip, kAny, true>(s, row, valid, a);
      return vector_row_kl<C, TIS, Surrogate::Clip, kAny>(s, row, valid, a);
    case Surrogate::Sapo:
      return vector_row_kl<C, TIS, Surrogate::Sapo, kAny>(s, row, valid, a);
    case Surrogate::Logp:
      break;
    default:
      return vector_row_kl<C, TIS, Surrogate::Unclipped, kAny>(s, row, valid, a);
  }
  switch (s.logp_weight) {
    case LW::One:
      return vector_row_kl<C, TIS, Surrogate::Logp, LW::One>(s, row, valid, a);
    case LW::Ratio:
      return vector_row_kl<C, TIS, Surrogate::Logp, LW::Ratio>(s, row, valid, a);
    case LW::Clip:
      return vector_row_kl<C, TIS, Surrogate::Logp, LW::Clip>(s, row, valid, a);
    case LW::Cap:
      return vector_row_kl<C, TIS, Surrogate::Logp, LW::Cap>(s, row, valid, a);
    default:
      return vector_row_kl<C, TIS, Surrogate::Logp, LW::DppoTv>(s, row, valid, a);
  }
}

// Whether a row takes the interval form of the clip: no δ, no dual-clip cap, no KL, no DRO.
bool interval_applies(const LossSpec& s) {
  return s.surrogate == Surrogate::Clip && s.delta == kInf && s.clip_ratio_c == kInf &&
         (s.kl == KlEstimator::None || s.beta == 0.0) && s.dro_beta == 0.0;
}

}  // namespace

bool fast_path_applies(const LossSpec& s, const LossInputs& in, const LossOutputs& out, bool adv_row) {
  if (!adv_row) return false;
  const bool kl = s.kl != KlEstimator::None && s.beta != 0.0;
  // one ratio per row (seq_row): a surrogate of the ratio alone, a KL term without the ratio
  if (math::uses_row_log_ratio(s) &&
      (s.surrogate == Surrogate::Logp || s.dro_beta != 0.0 || (kl && s.kl_is_corrected)))
    return false;
  if (s.surrogate == Surrogate::Logp &&
      (s.logp_weight == LogpWeight::DppoKl || s.logp_weight == LogpWeight::Vespo))
    return false;
  if (s.selection != Selection::None || (s.gtpo_entropy && s.beta != 0.0)) return false;
  if (!std::isnan(s.off_policy_mask_threshold)) return false;
  // the sampler IS: per sequence a row weight, per token only in the token-ratio rows
  const math::PassFlags pf = math::pass_flags(s, in.old_logp.defined(), false, in.sampling_logp.defined(),
                                              in.ref_logp.defined(), false);
  if (pf.use_is && !pf.seq_is && math::uses_row_log_ratio(s)) return false;
  if (in.entropies.defined() || in.token_weights.defined() || in.selection.defined() ||
      in.cu_seqlens.defined())
    return false;
  if (out.per_token.defined() || out.weights.defined() || out.grad_entropy.defined()) return false;
  auto unit = [](const TensorView& v) { return !v.defined() || v.strides[v.ndim - 1] == 1; };
  return unit(in.logp) && unit(in.old_logp) && unit(out.grad_logp) && (!kl || unit(in.ref_logp)) &&
         (!pf.use_is || unit(in.sampling_logp));
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
  if (interval_applies(s) && !row.token_is && row.w == C(1)) {
    if (row.m)
      fast_row_interval<C, true>(s, row.lp, row.old, row.m, row.A, row.c, row.len, row.n_valid, row.g, a);
    else
      fast_row_interval<C, false>(s, row.lp, row.old, nullptr, row.A, row.c, row.len, row.n_valid, row.g, a);
    if (row.smp_bad) first_bad_position<C>(row.lp, row.old, nullptr, row.smp, row.m, row.len, a);
    return;
  }
  const LaneInt<C>* valid = lane_mask<C>(row.m, row.len);
  if (row.token_is)
    vector_row_rules<C, true>(s, row, valid, a);
  else
    vector_row_rules<C, false>(s, row, valid, a);
}

template double fast_row_is_log<float>(const float*, const float*, const uint8_t*, int64_t);
template double fast_row_is_log<double>(const double*, const double*, const uint8_t*, int64_t);
template void fast_row<float>(const LossSpec&, const FastRow<float>&, RowResult&);
template void fast_row<double>(const LossSpec&, const FastRow<double>&, RowResult&);

}  // namespace loss_cpu
}  // namespace grpokit
