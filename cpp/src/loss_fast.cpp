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
#include "loss_engine.hpp"
#include "loss_simd.hpp"

namespace grpokit {
namespace loss_cpu {
namespace {

constexpr double kInf = INFINITY;
using Sums = math::MetricSums<double>;

// The first valid position whose logp, old_logp or ref_logp (when given) is not finite, named as the
// general loop names it (the fast loops only detect that one exists). m: nullptr = every token valid.
template <class C>
void first_bad_position(const C* lp, const C* old, const C* ref, const uint8_t* m, int64_t len,
                        RowResult& a) {
  for (int64_t t = 0; t < len; ++t) {
    if (m && m[t] == 0) continue;
    if (!std::isfinite(lp[t])) return a.fail(t, "logp", static_cast<double>(lp[t]));
    if (!std::isfinite(old[t])) return a.fail(t, "old_logp", static_cast<double>(old[t]));
    if (ref && !std::isfinite(ref[t])) return a.fail(t, "ref_logp", static_cast<double>(ref[t]));
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
  if (sums.bad) first_bad_position<C>(lp, old, nullptr, MASKED ? m : nullptr, len, a);
}

// cpu::exp_vec as the exp policy of the math/ formulas (math::StdExp): libm's exp is a call the
// vectoriser cannot widen.
struct VecExp {
  template <class C>
  static C exp(C x) {
    return cpu::exp_vec(x);
  }
};

// An integer as wide as C: the mask compared at the width of the values (GCC 12 vectorises no
// `omp simd` loop of a target_clones function that mixes byte-wide and float-wide conditions).
template <class C>
using LaneInt = std::conditional_t<sizeof(C) == 4, int32_t, int64_t>;

// The row's mask as LaneInt, in this thread's buffer (m: nullptr = every token valid).
template <class C>
const LaneInt<C>* lane_mask(const uint8_t* m, int64_t len) {
  thread_local std::vector<LaneInt<C>> valid;
  valid.resize(static_cast<size_t>(len));
  LaneInt<C>* v = valid.data();
  if (m) {
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) v[t] = m[t] != 0;
  } else {
    std::fill(v, v + len, LaneInt<C>(1));
  }
  return v;
}

// The spec's β·KL term of one token, as math::token_term forms it for a ratio r with ∂r/∂ℓ_t = r.d
// (kv, kd: the KL value and its ∂/∂ℓ_t, · r when IS-corrected; β not applied).
template <class C>
struct KlRule {
  C beta, klc, kvc, st, is;
  explicit KlRule(const LossSpec& s)
      : beta(static_cast<C>(s.beta)),
        klc(static_cast<C>(s.kl_log_clamp)),
        kvc(static_cast<C>(s.kl_value_clamp)),
        // flags as opaque numbers: a loop-invariant bool select stops GCC 12's vectoriser
        st(cpu::opaque(C(s.kl_straight_through ? 1 : 0))),
        is(cpu::opaque(C(s.kl_is_corrected ? 1 : 0))) {}
  // (r as two scalars: a struct argument is an address inside the `omp simd` loop, which GCC 12 turns
  // into a per-lane array in memory, and the loop no longer vectorises)
  template <KlEstimator KL>
  math::ValueGrad<C> term(C l, C rf, C r, C dr) const {
    const math::ValueGrad<C> k = math::kl_estimate<C, VecExp>(KL, l, rf, klc, kvc, st);
    return {is != C(0) ? k.v * r : k.v, is != C(0) ? k.d * r + k.v * dr : k.d};
  }
};

// One row of the token-ratio rules with a constant advantage: the surrogate SUR (and its weight rule
// LW for Surrogate::Logp), the KL estimator KL (None: no KL term) fixed at compile time, so that
// every rule's math/ formula inlines to selects and the loop vectorises. valid: the row's mask as
// LaneInt (m: the same as bytes, nullptr when the call has none); ref: ref_logp (read when KL != None).
//
// IV (Surrogate::Clip without δ and dual-clip cap): the clip in its interval form (math::clip_interval,
// as fast_row_interval), one `outside` count instead of four flag sums.
//
// Each loop is cloned for AVX-512 and AVX2 (GRPOKIT_CPU_CLONES, picked when the library loads): at SSE
// width the row sums spill registers (measured 5.2 → 1.3 ns/token with AVX-512 at 64×2048).
template <class C, Surrogate SUR, LogpWeight LW, KlEstimator KL, bool IV>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    void vector_row(const LossSpec& s, const C* lp, const C* old, const C* ref, const uint8_t* m,
                    const LaneInt<C>* valid, C A, C c, int64_t len, C* g, RowResult& a) {
  const C lo = static_cast<C>(s.log_ratio_min), hi = static_cast<C>(s.log_ratio_max);
  const C el = static_cast<C>(s.epsilon_low), eh = static_cast<C>(s.epsilon_high);
  const C delta = static_cast<C>(s.delta), dual_c = static_cast<C>(s.clip_ratio_c);
  const C tp = static_cast<C>(s.sapo_temperature_pos), tn = static_cast<C>(s.sapo_temperature_neg);
  const KlRule<C> kl(s);
  const math::ClipInterval<C> iv = math::clip_interval(A, el, eh);
  const C dro = static_cast<C>(s.dro_beta);
  const bool has_dro = s.dro_beta != 0.0;
  // Every lane quantity is of type C (flags as 0/1 values): mixed widths stop the vectoriser.
  // Row sums are accumulated in C per lane; a row is at most a few 10^4 tokens.
  C sum_phi = 0, ratio_sum = 0, ppo_kl = 0, n = 0, low = 0, high = 0, verl = 0, dual = 0, wclip = 0;
  C kl_sum = 0, ref_check = 0;
  C rmin = C(INFINITY), rmax = -C(INFINITY);
#pragma omp simd reduction(+ : sum_phi, ratio_sum, ppo_kl, n, low, high, verl, dual, wclip, kl_sum, \
                               ref_check) reduction(min : rmin) reduction(max : rmax)
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
    C phi = -A * v;
    C gt = c * (-A) * dv * dx;
    if constexpr (KL != KlEstimator::None) {
      const C rf = ref[t];
      ref_check += ok ? rf - rf : C(0);  // 0, or NaN once a valid ref_logp is not finite
      const math::ValueGrad<C> k = kl.template term<KL>(l, rf, r.v, r.d);
      phi += kl.beta * k.v;
      gt += c * (kl.beta * k.d);
      kl_sum += ok ? k.v : C(0);
    }
    if (has_dro) {  // DRO: + ½β(ℓ − ℓ_old)²
      phi += C(0.5) * dro * d * d;
      gt += c * (dro * d);
    }
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
  ms.row_done(false);
  if (!std::isfinite(ppo_kl) || !std::isfinite(ref_check))
    first_bad_position(lp, old, KL != KlEstimator::None ? ref : nullptr, m, len, a);
}

// The KL estimator, then the surrogate (and weight rule), as template arguments.
template <class C, Surrogate SUR, LogpWeight LW, bool IV = false>
void vector_row_kl(const LossSpec& s, const C* lp, const C* old, const C* ref, const uint8_t* m,
                   const LaneInt<C>* valid, C A, C c, int64_t len, C* g, RowResult& a) {
  const KlEstimator kl = s.beta != 0.0 ? s.kl : KlEstimator::None;
  switch (kl) {
    case KlEstimator::None:
      return vector_row<C, SUR, LW, KlEstimator::None, IV>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case KlEstimator::K1:
      return vector_row<C, SUR, LW, KlEstimator::K1, IV>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case KlEstimator::K2:
      return vector_row<C, SUR, LW, KlEstimator::K2, IV>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case KlEstimator::K3:
      return vector_row<C, SUR, LW, KlEstimator::K3, IV>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case KlEstimator::Abs:
      return vector_row<C, SUR, LW, KlEstimator::Abs, IV>(s, lp, old, ref, m, valid, A, c, len, g, a);
  }
}

template <class C>
void vector_row_rules(const LossSpec& s, const C* lp, const C* old, const C* ref, const uint8_t* m,
                      const LaneInt<C>* valid, C A, C c, int64_t len, C* g, RowResult& a) {
  using LW = LogpWeight;
  constexpr LW kAny = LW::One;  // the weight rule matters to Surrogate::Logp only
  switch (s.surrogate) {
    case Surrogate::Clip:
      if (s.delta == kInf && s.clip_ratio_c == kInf)
        return vector_row_kl<C, Surrogate::Clip, kAny, true>(s, lp, old, ref, m, valid, A, c, len, g, a);
      return vector_row_kl<C, Surrogate::Clip, kAny>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case Surrogate::Sapo:
      return vector_row_kl<C, Surrogate::Sapo, kAny>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case Surrogate::Logp:
      break;
    default:
      return vector_row_kl<C, Surrogate::Unclipped, kAny>(s, lp, old, ref, m, valid, A, c, len, g, a);
  }
  switch (s.logp_weight) {
    case LW::One:
      return vector_row_kl<C, Surrogate::Logp, LW::One>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case LW::Ratio:
      return vector_row_kl<C, Surrogate::Logp, LW::Ratio>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case LW::Clip:
      return vector_row_kl<C, Surrogate::Logp, LW::Clip>(s, lp, old, ref, m, valid, A, c, len, g, a);
    case LW::Cap:
      return vector_row_kl<C, Surrogate::Logp, LW::Cap>(s, lp, old, ref, m, valid, A, c, len, g, a);
    default:
      return vector_row_kl<C, Surrogate::Logp, LW::DppoTv>(s, lp, old, ref, m, valid, A, c, len, g, a);
  }
}

// ---- the sequence-level ratios (GSPO, GSPO-token, GCPO, GMPO): one ratio per row ----------------

// One valid token's share of the row's log-ratio and its ∂/∂ℓ_t, math::row_log_ratio_term with the
// surrogate fixed at compile time (GEO: GMPO's sign-aware clipped log-ratio).
template <class C, bool GEO>
math::ValueGrad<C> log_ratio_term(C d, C A, C el, C eh) {
  if constexpr (GEO) return math::geo_mean_log_ratio(d, A, el, eh);
  return {d, C(1)};
}

// Pass A of a sequence-ratio row: Σ_t log_ratio_term(...).v over its valid tokens, and their count.
template <class C, bool GEO>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    void seq_sum_row(const LossSpec& s, const C* lp, const C* old, const LaneInt<C>* valid, C A, int64_t len,
                     C& sum, C& n) {
  const C el = static_cast<C>(s.epsilon_low), eh = static_cast<C>(s.epsilon_high);
  C su = 0, nv = 0;
#pragma omp simd reduction(+ : su, nv)
  for (int64_t t = 0; t < len; ++t) {
    const bool ok = valid[t] != 0;
    const C d = ok ? lp[t] - old[t] : C(0);
    su += ok ? log_ratio_term<C, GEO>(d, A, el, eh).v : C(0);
    nv += ok ? C(1) : C(0);
  }
  sum = su;
  n = nv;
}

// Pass B's sweep of a sequence-ratio row: g_t = g0 + gu·∂(row term)/∂ℓ_t (+ c·β·∂KL/∂ℓ_t), 0 at
// padding; the row's KL sum, Σ(ℓ_old − ℓ) and a finiteness check of ref_logp.
template <class C, bool GEO, KlEstimator KL>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    void seq_grad_row(const LossSpec& s, const C* lp, const C* old, const C* ref, const LaneInt<C>* valid,
                      C A, C c, C g0, C gu, int64_t len, C* g, C& kl_out, C& ppo_out, C& ref_out) {
  const C el = static_cast<C>(s.epsilon_low), eh = static_cast<C>(s.epsilon_high);
  const KlRule<C> kl(s);
  C kl_sum = 0, ppo_kl = 0, ref_check = 0;
#pragma omp simd reduction(+ : kl_sum, ppo_kl, ref_check)
  for (int64_t t = 0; t < len; ++t) {
    const bool ok = valid[t] != 0;
    const C l = lp[t];
    const C d = ok ? l - old[t] : C(0);
    C gt = g0 + gu * log_ratio_term<C, GEO>(d, A, el, eh).d;
    if constexpr (KL != KlEstimator::None) {
      const C rf = ref[t];
      ref_check += ok ? rf - rf : C(0);  // 0, or NaN once a valid ref_logp is not finite
      // r = 1, dr = 0: the KL is not IS-corrected here (fast_path_applies)
      const math::ValueGrad<C> k = kl.template term<KL>(l, rf, C(1), C(0));
      gt += c * (kl.beta * k.d);
      kl_sum += ok ? k.v : C(0);
    }
    g[t] = ok ? gt : C(0);
    ppo_kl -= d;  // non-finite once a valid ℓ or ℓ_old is
  }
  kl_out = kl_sum;
  ppo_out = ppo_kl;
  ref_out = ref_check;
}

template <class C, bool GEO>
void seq_grad_row_kl(const LossSpec& s, const C* lp, const C* old, const C* ref, const LaneInt<C>* valid, C A,
                     C c, C g0, C gu, int64_t len, C* g, C& kl_sum, C& ppo_kl, C& ref_check) {
  const KlEstimator kl = s.beta != 0.0 ? s.kl : KlEstimator::None;
#define GRPOKIT_SEQ_GRAD(K) \
  return seq_grad_row<C, GEO, K>(s, lp, old, ref, valid, A, c, g0, gu, len, g, kl_sum, ppo_kl, ref_check)
  switch (kl) {
    case KlEstimator::None:
      GRPOKIT_SEQ_GRAD(KlEstimator::None);
    case KlEstimator::K1:
      GRPOKIT_SEQ_GRAD(KlEstimator::K1);
    case KlEstimator::K2:
      GRPOKIT_SEQ_GRAD(KlEstimator::K2);
    case KlEstimator::K3:
      GRPOKIT_SEQ_GRAD(KlEstimator::K3);
    case KlEstimator::Abs:
      GRPOKIT_SEQ_GRAD(KlEstimator::Abs);
  }
#undef GRPOKIT_SEQ_GRAD
}

// Pass B of a sequence-ratio row: the ratio, surrogate and their derivatives once (math::token_term
// without β·KL, whose terms are per token), then one sweep over the tokens. u: the row's log-ratio.
template <class C>
void seq_row(const LossSpec& s, const C* lp, const C* old, const C* ref, const uint8_t* m, C A, C c, double u,
             int64_t len, int64_t n_valid, C* g, RowResult& a) {
  LossSpec s_row = s;
  s_row.beta = 0.0;
  math::TokenIn<C> ti{};
  ti.adv = A;
  ti.token_weight = ti.keep = ti.w = C(1);
  ti.u = static_cast<C>(u);
  const math::TokenOut<C> o = math::token_term<C>(s_row, ti);
  const double n = static_cast<double>(n_valid);
  // ∂/∂u_i summed over the row's tokens, times ∂u_i/∂(row term)
  const C gu = static_cast<C>(n * static_cast<double>(c * o.d_u)) * math::row_log_ratio_scale<C>(s, n_valid);
  const bool geo = s.surrogate == Surrogate::GeoMean;
  const LaneInt<C>* valid = lane_mask<C>(m, len);
  C kl_sum = 0, ppo_kl = 0, ref_check = 0;
  if (geo)
    seq_grad_row_kl<C, true>(s, lp, old, ref, valid, A, c, c * o.d_logp, gu, len, g, kl_sum, ppo_kl,
                             ref_check);
  else
    seq_grad_row_kl<C, false>(s, lp, old, ref, valid, A, c, c * o.d_logp, gu, len, g, kl_sum, ppo_kl,
                              ref_check);
  a.loss = static_cast<double>(c) * (n * static_cast<double>(o.phi) + s.beta * static_cast<double>(kl_sum));
  Sums& ms = a.m;
  // the ratio metrics count the row once (GSPO-token: each of its tokens, all alike)
  const bool per_row = math::ratio_metrics_per_row(s);
  if (n_valid > 0) ms.add_token(o, true, C(0), C(0), C(0));
  if (!per_row)
    for (int k :
         {Sums::sLow, Sums::sHigh, Sums::sRegion, Sums::sVerl, Sums::sDual, Sums::sWclip, Sums::sRatio})
      ms.sum[k] *= n;
  ms.sum[Sums::sN] = n;
  ms.sum[Sums::sKl] = kl_sum;
  ms.sum[Sums::sPpoKl] = ppo_kl;
  ms.row_done(per_row);
  const bool kl = s.kl != KlEstimator::None && s.beta != 0.0;
  if (!std::isfinite(ppo_kl) || !std::isfinite(ref_check))
    first_bad_position(lp, old, kl ? ref : nullptr, m, len, a);
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
  if (!std::isnan(s.off_policy_mask_threshold) || s.prune_threshold > -kInf) return false;
  if (in.entropies.defined() || in.sampling_logp.defined() || in.keep.defined() ||
      in.token_weights.defined() || in.selection.defined() || in.cu_seqlens.defined())
    return false;
  if (out.per_token.defined() || out.weights.defined() || out.grad_entropy.defined()) return false;
  auto unit = [](const TensorView& v) { return !v.defined() || v.strides[v.ndim - 1] == 1; };
  return unit(in.logp) && unit(in.old_logp) && unit(out.grad_logp) && (!kl || unit(in.ref_logp));
}

template <class C>
double fast_row_log_ratio(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, int64_t len,
                          int64_t& n_valid) {
  const LaneInt<C>* valid = lane_mask<C>(m, len);
  C sum = 0, n = 0;
  if (s.surrogate == Surrogate::GeoMean)
    seq_sum_row<C, true>(s, lp, old, valid, A, len, sum, n);
  else
    seq_sum_row<C, false>(s, lp, old, valid, A, len, sum, n);
  n_valid = static_cast<int64_t>(n);
  return static_cast<double>(sum) * math::row_log_ratio_scale<double>(s, n_valid);
}

template <class C>
void fast_row(const LossSpec& s, const C* lp, const C* old, const C* ref, const uint8_t* m, C A, C c,
              double u, int64_t len, int64_t n_valid, C* g, RowResult& a) {
  if (math::uses_row_log_ratio(s)) return seq_row<C>(s, lp, old, ref, m, A, c, u, len, n_valid, g, a);
  if (interval_applies(s)) {
    if (m)
      fast_row_interval<C, true>(s, lp, old, m, A, c, len, n_valid, g, a);
    else
      fast_row_interval<C, false>(s, lp, old, nullptr, A, c, len, n_valid, g, a);
    return;
  }
  vector_row_rules<C>(s, lp, old, ref, m, lane_mask<C>(m, len), A, c, len, g, a);
}

template double fast_row_log_ratio<float>(const LossSpec&, const float*, const float*, const uint8_t*, float,
                                          int64_t, int64_t&);
template double fast_row_log_ratio<double>(const LossSpec&, const double*, const double*, const uint8_t*,
                                           double, int64_t, int64_t&);
template void fast_row<float>(const LossSpec&, const float*, const float*, const float*, const uint8_t*,
                              float, float, double, int64_t, int64_t, float*, RowResult&);
template void fast_row<double>(const LossSpec&, const double*, const double*, const double*, const uint8_t*,
                               double, double, double, int64_t, int64_t, double*, RowResult&);

}  // namespace loss_cpu
}  // namespace grpokit
