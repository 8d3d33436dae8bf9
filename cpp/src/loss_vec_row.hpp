// The CPU loss's vectorised token-ratio row (internal): one loop template over the rule enums, generated
// from the math/ formulas (clip_branch, clip_interval, sapo_gate, logp_weight, kl_estimate,
// sampler_is_weight), dispatched once per row. loss_fast.cpp instantiates the plain rows (X = false:
// one advantage per row, no per-token inputs beyond mask, ref_logp and sampling_logp), loss_fast_extra.cpp
// the extended ones (X = true: per-token advantages, token weights, entropies with GTPO's term, the
// top-entropy mask and the entropy bonus, clip_cov / kl_cov selections, VAPO's positive_nll). Both TUs are
// built with -fno-trapping-math -fno-tree-sink (CMakeLists.txt; loss_fast.cpp says why).
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu_kernels.hpp"
#include "grpokit/error.hpp"
#include "grpokit/math/loss.hpp"
#include "grpokit/math/metric_sums.hpp"
#include "loss_engine.hpp"
#include "loss_vec.hpp"

namespace grpokit {
namespace loss_cpu {

// The extended row's per-token inputs, each a full row (buffers of A, 1 or 0 stand in for absent ones),
// the per-row factors of its extra rules as numbers (0 = off: a loop-invariant bool stops GCC 12's
// vectoriser), and the sums the loop leaves.
template <class C>
struct RowExtras {
  const C *adv, *tw, *h, *sel;  // A_t, λ_t, H_t, the selection as 0/1
  C* gh;                        // ∂loss/∂H_t before GTPO's row share (a scratch row when not asked for)
  C h_thr;                      // top-entropy threshold (−inf: every token kept)
  C prune;                      // CPPO's γ (−inf: off)
  C gtpo;                       // β·δ_i when GTPO's term applies, else 0
  C hbar;                       // ⟨H⟩_i
  C gh_kept;                    // ∂/∂H_t of the entropy bonus at a kept token (−entropy_coef·c_H)
  C clip_cov, kl_cov;           // 1 / κ where the selection rule applies, else 0
  C nll;                        // VAPO's NLL coefficient k (math::nll_coefficient), else 0
  // left by the loop
  C ent_sum = 0, kept_h = 0, gh_sum = 0;  // Σ H, Σ H over kept tokens, Σ c·∂φ/∂⟨H⟩_i
};

// One row of the token-ratio rules: the surrogate SUR (and its weight rule LW for Surrogate::Logp), the
// KL estimator KL (None: no KL term) fixed at compile time, so that every rule's math/ formula inlines
// to selects and the loop vectorises. valid: the row's mask as LaneInt (row.m: the same as bytes,
// nullptr when the call has none); row.ref: ref_logp (read when KL != None).
//
// IV (Surrogate::Clip without δ and dual-clip cap, X = false): the clip in its interval form
// (math::clip_interval), one `outside` count instead of four flag sums. TIS: the sampler IS weight per
// token (math::weight_rule's, from row.smp), times the row's weight row.w. X: the extended row (ex).
// REGION: the spec's trust region (math::in_trust_region), with KL = None or K3 (fast_path_applies): one
// instantiation for its three rules, each tested and one picked by number (a template argument per
// rule made these files take four times as long to compile).
//
// Each loop is cloned for AVX-512 and AVX2 (GRPOKIT_CPU_CLONES, picked when the library loads): at SSE
// width the row sums spill registers (measured 5.2 → 1.3 ns/token with AVX-512 at 64×2048).
template <class C, Surrogate SUR, LogpWeight LW, KlEstimator KL, bool IV, bool TIS, bool X,
          bool REGION = false>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    void vector_row(const LossSpec& s, const FastRow<C>& row, const LaneInt<C>* valid, RowExtras<C>& ex,
                    RowResult& a) {
  static_assert(!(IV && X), "the interval form needs one advantage per row");
  const C *lp = row.lp, *old = row.old, *ref = row.ref, *smp = row.smp;
  const C A = row.A, c = row.c, w_row = row.w;
  const int64_t len = row.len;
  C* g = row.g;
  const C *adv = ex.adv, *tw = ex.tw, *hs = ex.h, *sel = ex.sel;
  C* gh = ex.gh;
  const C h_thr = ex.h_thr, prune = ex.prune, gtpo = ex.gtpo, hbar = ex.hbar, gh_kept = ex.gh_kept;
  const C clip_cov = ex.clip_cov, kl_cov = ex.kl_cov, nll = ex.nll;
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
  const C tr_ppo = cpu::opaque(C(s.trust_region == TrustRegion::Ppo ? 1 : 0));
  const C tr_tv = cpu::opaque(C(s.trust_region == TrustRegion::Tv ? 1 : 0));
  const C tr_dtv = cpu::opaque(C(s.trust_region == TrustRegion::DppoTv ? 1 : 0));
  // Every lane quantity is of type C (flags as 0/1 values): mixed widths stop the vectoriser.
  // Row sums are accumulated in C per lane; a row is at most a few 10^4 tokens.
  C sum_phi = 0, ratio_sum = 0, ppo_kl = 0, n = 0, low = 0, high = 0, verl = 0, dual = 0, wclip = 0;
  C kl_sum = 0, ref_check = 0, is_sum = 0, smp_bad = 0;
  C rmin = C(INFINITY), rmax = -C(INFINITY), is_min = C(INFINITY), is_max = -C(INFINITY);
  C ent_sum = 0, kept_h = 0, gh_sum = 0, x_check = 0, nll_sum = 0;
#pragma omp simd reduction(+ : sum_phi, ratio_sum, ppo_kl, n, low, high, verl, dual, wclip, kl_sum,   \
                               ref_check, is_sum, smp_bad, ent_sum, kept_h, gh_sum, x_check, nll_sum) \
    reduction(min : rmin, is_min) reduction(max : rmax, is_max)
  for (int64_t t = 0; t < len; ++t) {
    // Loads are unconditional (conditional loads stop the vectoriser); values are then selected,
    // never multiplied by the mask (padding may hold NaN).
    const bool ok = valid[t] != 0;
    const C l = lp[t], o = old[t];
    C At = A;
    if constexpr (X) At = adv[t];
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
      const math::ValueGrad<C> b = math::clip_branch(r.v, At, el, eh, delta, dual_c, &f);
      v = b.v;
      dv = b.d;
      f_low = f.low ? C(1) : C(0);
      f_high = f.high ? C(1) : C(0);
      f_verl = f.verl ? C(1) : C(0);
      f_dual = f.dual ? C(1) : C(0);
    } else if constexpr (SUR == Surrogate::Sapo) {
      const math::ValueGrad<C> b = math::sapo_gate<C, VecExp>(r.v, At, tp, tn);
      v = b.v;
      dv = b.d;
    } else if constexpr (SUR == Surrogate::Logp) {
      bool clipped = false;
      const C w = math::logp_weight<C, VecExp>(LW, r.v, l, o, At, el, eh, dual_c, &clipped);
      v = w * l;
      dv = w;
      dx = C(1);
      wc = clipped ? C(1) : C(0);
    } else {
      v = r.v;
      dv = C(1);
    }
    C w = w_row;
    C kept = C(1);
    if constexpr (X) {  // math::weight_rule's per-token factors: λ_t, CPPO's |A_t| > γ, H_t ≥ the threshold
      const C at = At < C(0) ? -At : At;
      w = at > prune ? w * tw[t] : C(0);
      kept = hs[t] >= h_thr ? C(1) : C(0);
      w = w * kept;
    }
    if constexpr (TIS) {  // ρ_t = exp(ℓ_old − ℓ_smp), an unscored token (NaN) as 1 (math::weight_rule)
      const C sm = smp[t], di = o - sm, xi = di != di ? C(0) : di;
      // both forms (one exp), then a select on a number: a loop-invariant bool stops GCC 12's vectoriser
      const C w_trunc = math::sampler_is_weight<C, VecExp>(xi, true, is_lo, is_hi);
      const C w_mask = math::sampler_is_weight<C, VecExp>(xi, false, is_lo, is_hi);
      const C wis = is_trunc != C(0) ? w_trunc : w_mask;
      w = w * wis;
      is_sum += ok ? wis : C(0);
      const C w_lo = ok ? wis : C(INFINITY), w_hi = ok ? wis : -C(INFINITY);
      is_min = w_lo < is_min ? w_lo : is_min;
      is_max = w_hi > is_max ? w_hi : is_max;
      const C sm_abs = sm < C(0) ? -sm : sm;  // ±inf is an error, NaN an unscored token
      smp_bad += ok ? (sm_abs == C(INFINITY) ? C(1) : C(0)) : C(0);
    }
    if constexpr (X) w = w * (C(1) - clip_cov * sel[t]);  // Clip-Cov: no policy term at a selected token
    if constexpr (REGION) {  // outside the trust region: no policy term, a clipped weight (math::token_term)
      using TR = TrustRegion;
      const C in_ppo = math::in_trust_region<C, VecExp>(TR::Ppo, r.v, l, o, At, el, eh) ? C(1) : C(0);
      const C in_tv = math::in_trust_region<C, VecExp>(TR::Tv, r.v, l, o, At, el, eh) ? C(1) : C(0);
      const C in_dtv = math::in_trust_region<C, VecExp>(TR::DppoTv, r.v, l, o, At, el, eh) ? C(1) : C(0);
      // 0/1 values picked by arithmetic, and one select each: selects sharing a condition (or picking
      // by loop-invariant numbers) left this loop scalar under GCC 12 (measured)
      const C in_region = tr_ppo * in_ppo + tr_tv * in_tv + tr_dtv * in_dtv;
      const C out_region = C(1) - in_region;
      w = in_region != C(0) ? w : C(0);
      wc = wc > out_region ? wc : out_region;  // max(wc, [outside])
    }
    C phi = w * (-At * v);
    C gt = c * (w * (-At)) * dv * dx;
    if constexpr (KL != KlEstimator::None) {
      const C rf = ref[t];
      ref_check += ok ? rf - rf : C(0);  // 0, or NaN once a valid ref_logp is not finite
      const math::ValueGrad<C> k = kl.template term<KL>(l, rf, r.v, r.d);
      phi += kl.beta * k.v;
      gt += c * (kl.beta * k.d);
      kl_sum += ok ? k.v : C(0);
    }
    if constexpr (X) {
      // GTPO: + β·δ_i·λ_t·⟨H⟩_i·I, I = e^(ℓ − ℓ_old) (math::token_term); gtpo = 0 without it
      const C kg = gtpo * tw[t], hk = kg * hbar, I = VecExp::exp(d);
      phi += gtpo != C(0) ? hk * I : C(0);
      gt += gtpo != C(0) ? c * (hk * I) : C(0);
      gh_sum += ok & (gtpo != C(0)) ? c * (kg * I) : C(0);
      // KL-Cov: + κ|ℓ − ℓ_old| at a selected token
      const C ks = kl_cov * sel[t], ad = d < C(0) ? -d : d, sd = d < C(0) ? C(-1) : (d > C(0) ? C(1) : C(0));
      phi += ks * ad;
      gt += c * (ks * sd);
      // the entropy bonus at a kept token, the entropy metric, and the inputs' finiteness
      const C h = hs[t];
      gh[t] = ok ? gh_kept * kept : C(0);
      ent_sum += ok ? h : C(0);
      kept_h += ok ? h * kept : C(0);
      x_check += ok ? (At - At) + (tw[t] - tw[t]) + (h - h) : C(0);
    }
    // DRO: + ½β(ℓ − ℓ_old)², + 0 without it (unconditional: a loop-invariant bool stops GCC 12's vectoriser)
    phi += C(0.5) * dro * d * d;
    gt += c * (dro * d);
    if constexpr (X) {  // VAPO: + k·(−ℓ) at a selected token, outside φ and c_i (k = 0 without it)
      const math::ValueGrad<C> nl = math::positive_nll<C>(l, nll * sel[t]);
      gt += nl.d;
      nll_sum += ok ? nl.v : C(0);
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
  a.loss = static_cast<double>(c) * static_cast<double>(sum_phi) + static_cast<double>(nll_sum);
  using Sums = math::MetricSums<double>;
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
  if constexpr (X) {
    ms.sum[Sums::sEnt] = ent_sum;
    ex.ent_sum = ent_sum;
    ex.kept_h = kept_h;
    ex.gh_sum = gh_sum;
  }
  if (!std::isfinite(ppo_kl) || !std::isfinite(ref_check) || smp_bad != C(0) || row.smp_bad ||
      !std::isfinite(x_check))
    first_bad_position(row, KL != KlEstimator::None, a);
}

// A rule value no case of the dispatch below names (a rule added to math/loss_spec.def and not yet to
// the row template): fast_path_applies routes such a call to the general loop, so this is a bug.
[[noreturn]] inline void no_vector_row(const char* field, int value) {
  grpokit::runtime_error("policy_loss: internal error: the vectorised row has no case for ", field, " = ",
                         value);
}

// The KL estimator (or the trust region, without a KL term), then the surrogate (and weight rule), as
// template arguments.
template <class C, bool TIS, bool X, Surrogate SUR, LogpWeight LW, bool IV = false>
void vector_row_kl(const LossSpec& s, const FastRow<C>& row, const LaneInt<C>* valid, RowExtras<C>& ex,
                   RowResult& a) {
  const KlEstimator kl = s.beta != 0.0 ? s.kl : KlEstimator::None;
  if (s.trust_region != TrustRegion::None) {  // beside no KL term or k3 (the default estimator) only
    if (kl == KlEstimator::None)
      return vector_row<C, SUR, LW, KlEstimator::None, IV, TIS, X, true>(s, row, valid, ex, a);
    if (kl == KlEstimator::K3)
      return vector_row<C, SUR, LW, KlEstimator::K3, IV, TIS, X, true>(s, row, valid, ex, a);
    no_vector_row("kl beside trust_region", static_cast<int>(kl));
  }
  switch (kl) {
    case KlEstimator::None:
      return vector_row<C, SUR, LW, KlEstimator::None, IV, TIS, X>(s, row, valid, ex, a);
    case KlEstimator::K1:
      return vector_row<C, SUR, LW, KlEstimator::K1, IV, TIS, X>(s, row, valid, ex, a);
    case KlEstimator::K2:
      return vector_row<C, SUR, LW, KlEstimator::K2, IV, TIS, X>(s, row, valid, ex, a);
    case KlEstimator::K3:
      return vector_row<C, SUR, LW, KlEstimator::K3, IV, TIS, X>(s, row, valid, ex, a);
    case KlEstimator::Abs:
      return vector_row<C, SUR, LW, KlEstimator::Abs, IV, TIS, X>(s, row, valid, ex, a);
  }
  no_vector_row("kl", static_cast<int>(kl));
}

template <class C, bool TIS, bool X>
void vector_row_rules(const LossSpec& s, const FastRow<C>& row, const LaneInt<C>* valid, RowExtras<C>& ex,
                      RowResult& a) {
  using LW = LogpWeight;
  constexpr LW kAny = LW::One;  // the weight rule matters to Surrogate::Logp only
  switch (s.surrogate) {
    case Surrogate::Clip:
      if (!X && s.delta == INFINITY && s.clip_ratio_c == INFINITY)
        return vector_row_kl<C, TIS, X, Surrogate::Clip, kAny, !X>(s, row, valid, ex, a);
      return vector_row_kl<C, TIS, X, Surrogate::Clip, kAny>(s, row, valid, ex, a);
    case Surrogate::Sapo:
      return vector_row_kl<C, TIS, X, Surrogate::Sapo, kAny>(s, row, valid, ex, a);
    case Surrogate::Logp:
      break;
    case Surrogate::Unclipped:
      return vector_row_kl<C, TIS, X, Surrogate::Unclipped, kAny>(s, row, valid, ex, a);
    case Surrogate::GeoMean:  // one ratio per row: seq_row (loss_seq_rows.cpp)
      no_vector_row("surrogate", static_cast<int>(s.surrogate));
  }
  if (s.surrogate != Surrogate::Logp) no_vector_row("surrogate", static_cast<int>(s.surrogate));
  switch (s.logp_weight) {
    case LW::One:
      return vector_row_kl<C, TIS, X, Surrogate::Logp, LW::One>(s, row, valid, ex, a);
    case LW::Ratio:
      return vector_row_kl<C, TIS, X, Surrogate::Logp, LW::Ratio>(s, row, valid, ex, a);
    case LW::Clip:
      return vector_row_kl<C, TIS, X, Surrogate::Logp, LW::Clip>(s, row, valid, ex, a);
    case LW::Cap:
      return vector_row_kl<C, TIS, X, Surrogate::Logp, LW::Cap>(s, row, valid, ex, a);
    case LW::Vespo:  // its weight per row is in row.w
      return vector_row_kl<C, TIS, X, Surrogate::Logp, LW::One>(s, row, valid, ex, a);
    case LW::DppoTv:
      return vector_row_kl<C, TIS, X, Surrogate::Logp, LW::DppoTv>(s, row, valid, ex, a);
    case LW::DppoKl:
      return vector_row_kl<C, TIS, X, Surrogate::Logp, LW::DppoKl>(s, row, valid, ex, a);
    case LW::Topr:
      return vector_row_kl<C, TIS, X, Surrogate::Logp, LW::Topr>(s, row, valid, ex, a);
  }
  no_vector_row("logp_weight", static_cast<int>(s.logp_weight));
}

}  // namespace loss_cpu
}  // namespace grpokit
