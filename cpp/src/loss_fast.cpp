// The CPU loss's fast token pass: the common training configuration (fast_path_applies) runs the
// same math (clip_branch, clip_interval, sapo_gate, logp_weight) in row loops the compiler vectorises:
// the exp is cpu::exp_vec, validity is a select, row sums are SIMD reductions. Each row is one thread's
// loop, so the bits do not depend on the thread count.
//
// GCC needs two things to vectorise these loops: the function out of line (inlined into the OpenMP
// region it is not vectorised) and -fno-trapping-math on this file (CMakeLists.txt; GCC's default
// -ftrapping-math keeps it from if-converting float comparisons; grpokit never relies on FP traps).
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cpu_kernels.hpp"
#include "grpokit/math/loss.hpp"
#include "loss_engine.hpp"
#include "loss_simd.hpp"

namespace grpokit {
namespace loss_cpu {
namespace {

constexpr double kInf = INFINITY;
using Sums = math::MetricSums<double>;

// The first valid position whose logp or old_logp is not finite (the fast loops only detect that one exists).
template <class C>
void first_bad_position(const C* lp, const C* old, const uint8_t* m, bool masked, int64_t len, RowResult& a) {
  for (int64_t t = 0; t < len; ++t) {
    if (masked && m[t] == 0) continue;
    const C l = lp[t], o = old[t];
    if (!std::isfinite(l) || !std::isfinite(o)) {
      a.fail(t, std::isfinite(l) ? "old_logp" : "logp", static_cast<double>(std::isfinite(l) ? o : l));
      return;
    }
  }
}

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
cpu::IntervalRowSums interval_row(const C* lp, const C* old, const uint8_t* m, int64_t len, C lo, C hi, C vlo,
                                  C vhi, C cA, C* g) {
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
  if (sums.bad) first_bad_position(lp, old, m, MASKED, len, a);
}

// Each loop is cloned for AVX-512 and AVX2 (GRPOKIT_CPU_CLONES, picked when the library loads): at SSE
// width the twelve row sums spill registers (measured 5.2 → 1.3 ns/token with AVX-512 at 64×2048).
template <class C, Surrogate SUR, bool MASKED>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
__attribute__((noinline))
#endif
void surrogate_row(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, C c, int64_t len, C* g,
              RowResult& a) {
  const C lo = static_cast<C>(s.log_ratio_min), hi = static_cast<C>(s.log_ratio_max);
  const C el = static_cast<C>(s.epsilon_low), eh = static_cast<C>(s.epsilon_high);
  const C delta = static_cast<C>(s.delta), dual_c = static_cast<C>(s.clip_ratio_c);
  const C tp = static_cast<C>(s.sapo_temperature_pos), tn = static_cast<C>(s.sapo_temperature_neg);
  const LogpWeight lw = s.logp_weight;
  // Every lane quantity is of type C (flags as 0/1 values): mixed widths stop the vectoriser.
  // Row sums are accumulated in C per lane; a row is at most a few 10^4 tokens.
  C sum_phi = 0, ratio_sum = 0, ppo_kl = 0, n = 0, low = 0, high = 0, verl = 0, dual = 0, wclip = 0, bad = 0;
  C rmin = C(INFINITY), rmax = -C(INFINITY);
#pragma omp simd reduction(+ : sum_phi, ratio_sum, ppo_kl, n, low, high, verl, dual, wclip, bad) \
    reduction(min : rmin) reduction(max : rmax)
  for (int64_t t = 0; t < len; ++t) {
    // Loads are unconditional (conditional loads stop the vectoriser); values are then selected,
    // never multiplied by the mask (padding may hold NaN).
    bool ok = true;
    if constexpr (MASKED) ok = m[t] != 0;
    const C l = lp[t], o = old[t];
    const C d = ok ? l - o : C(0);
    bad += (ok & !((d - d == C(0)) & (l - l == C(0)))) ? C(1) : C(0);
    const bool inside = (d >= lo) & (d <= hi);
    const C r = cpu::exp_vec(inside ? d : (d < lo ? lo : hi));
    const C dr = inside ? r : C(0);
    C v, dv, dx = dr;
    C f_low = 0, f_high = 0, f_verl = 0, f_dual = 0, wc = 0;
    if constexpr (SUR == Surrogate::Clip) {
      math::ClipFlags f;
      const math::ValueGrad<C> b = math::clip_branch(r, A, el, eh, delta, dual_c, &f);
      v = b.v;
      dv = b.d;
      f_low = f.low ? C(1) : C(0);
      f_high = f.high ? C(1) : C(0);
      f_verl = f.verl ? C(1) : C(0);
      f_dual = f.dual ? C(1) : C(0);
    } else if constexpr (SUR == Surrogate::Sapo) {
      const math::ValueGrad<C> b = math::sapo_gate(r, A, tp, tn);
      v = b.v;
      dv = b.d;
    } else if constexpr (SUR == Surrogate::Logp) {
      bool clipped = false;
      const C w = math::logp_weight(lw, r, l, l, A, el, eh, C(INFINITY), &clipped);
      v = w * l;
      dv = w;
      dx = C(1);
      wc = clipped ? C(1) : C(0);
    } else {
      v = r;
      dv = C(1);
    }
    g[t] = ok ? c * (-A) * dv * dx : C(0);
    sum_phi += ok ? -A * v : C(0);
    // (`x += ok ? 1 : 0` rather than a 0/1 variable: GCC 12 then recognises the reductions)
    n += ok ? C(1) : C(0);
    low += ok ? f_low : C(0);
    high += ok ? f_high : C(0);
    verl += ok ? f_verl : C(0);
    dual += ok ? f_dual : C(0);
    wclip += ok ? wc : C(0);
    ratio_sum += ok ? r : C(0);
    const C r_lo = ok ? r : C(INFINITY), r_hi = ok ? r : -C(INFINITY);  // plain min/max: vectorisable
    rmin = r_lo < rmin ? r_lo : rmin;
    rmax = r_hi > rmax ? r_hi : rmax;
    ppo_kl -= d;  // d = 0 at padding
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
  if (nn > 0) {
    ms.min[Sums::mRatioMin] = static_cast<double>(rmin);
    ms.max[Sums::xRatioMax] = static_cast<double>(rmax);
  }
  ms.row_done(false);
  if (bad != C(0)) first_bad_position(lp, old, m, MASKED, len, a);
}

template <class C, bool MASKED>
void fast_row_masked(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, C c, int64_t len,
                     int64_t n_valid, C* g, RowResult& a) {
  switch (s.surrogate) {
    case Surrogate::Clip:
      if (s.delta == kInf && s.clip_ratio_c == kInf)  // neither δ nor the dual-clip cap
        fast_row_interval<C, MASKED>(s, lp, old, m, A, c, len, n_valid, g, a);
      else
        surrogate_row<C, Surrogate::Clip, MASKED>(s, lp, old, m, A, c, len, g, a);
      break;
    case Surrogate::Sapo: surrogate_row<C, Surrogate::Sapo, MASKED>(s, lp, old, m, A, c, len, g, a); break;
    case Surrogate::Logp: surrogate_row<C, Surrogate::Logp, MASKED>(s, lp, old, m, A, c, len, g, a); break;
    default: surrogate_row<C, Surrogate::Unclipped, MASKED>(s, lp, old, m, A, c, len, g, a); break;
  }
}

}  // namespace

bool fast_path_applies(const LossSpec& s, const LossInputs& in, const LossOutputs& out, bool adv_row) {
  if (s.ratio != RatioLevel::Token || !adv_row) return false;
  if (s.surrogate == Surrogate::GeoMean) return false;
  if (s.surrogate == Surrogate::Logp && s.logp_weight != LogpWeight::One && s.logp_weight != LogpWeight::Ratio &&
      s.logp_weight != LogpWeight::Clip && s.logp_weight != LogpWeight::Cap)
    return false;
  if ((s.kl != KlEstimator::None && s.beta != 0.0) || s.dro_beta != 0.0 || s.selection != Selection::None)
    return false;
  if (!std::isnan(s.off_policy_mask_threshold) || s.prune_threshold > -kInf) return false;
  if (in.entropies.defined() || in.sampling_logp.defined() || in.keep.defined() || in.token_weights.defined() ||
      in.selection.defined() || in.cu_seqlens.defined())
    return false;
  if (out.per_token.defined() || out.weights.defined() || out.grad_entropy.defined()) return false;
  auto unit = [](const TensorView& v) { return !v.defined() || v.strides[v.ndim - 1] == 1; };
  if (!unit(in.logp) || !unit(in.old_logp) || !unit(in.mask) || !unit(out.grad_logp)) return false;
  return !in.mask.defined() || in.mask.dtype == DType::Bool || in.mask.dtype == DType::UInt8;
}

template <class C>
void fast_row(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, C c, int64_t len,
              int64_t n_valid, C* g, RowResult& a) {
  if (m)
    fast_row_masked<C, true>(s, lp, old, m, A, c, len, n_valid, g, a);
  else
    fast_row_masked<C, false>(s, lp, old, nullptr, A, c, len, n_valid, g, a);
}

template void fast_row<float>(const LossSpec&, const float*, const float*, const uint8_t*, float, float, int64_t,
                              int64_t, float*, RowResult&);
template void fast_row<double>(const LossSpec&, const double*, const double*, const uint8_t*, double, double,
                               int64_t, int64_t, double*, RowResult&);

}  // namespace loss_cpu
}  // namespace grpokit
