// The CPU loss's vectorised token-ratio row (internal): one loop template over the rule enums, generated
// from the math/ formulas (clip_branch, clip_interval, sapo_gate, logp_weight, kl_estimate,
// sampler_is_weight), dispatched once per row. loss_fast.cpp instantiates the plain rows (X = false:
// one advantage per row, no per-token inputs beyond mask, ref_logp and sampling_logp), loss_fast_extra.cpp
// the extended ones (X = true: per-token advantages, token weights, entropies with GTPO's term, the
// top-entropy mask and the entropy bonus, clip_cov / kl_cov selections). Both TUs are built with
// -fno-trapping-math -fno-tree-sink (CMakeLists.txt; loss_fast.cpp says why).
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>

#include "cpu_kernels.hpp"
#include "grpokit/math/loss.hpp"
#include "grpokit/math/metric_sums.hpp"
#include "loss_engine.hpp"
#include "loss_simd.hpp"
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
  // left by the loop
  C ent_sum = 0, kept_h = 0, gh_sum = 0;  // Σ H, Σ H over kept tokens, Σ c·∂φ/∂⟨H⟩_i
};

// A row's sums, kLanes accumulators each (token t adds to lane t mod kLanes), summed in lane order
// after the row. An accumulator indexed by the lane is no loop-carried dependence, so the loop needs
// no `omp simd reduction`, whose per-lane arrays GCC 12 keeps on the stack (a load and a store per sum
// per vector of tokens: ≈ 250 of a KL row's ≈ 600 instructions per 16 tokens); each sum here is one
// register.
template <class C>
struct LaneSums {
  C phi[cpu::kLanes], ratio[cpu::kLanes], ppo_kl[cpu::kLanes], rmin[cpu::kLanes], rmax[cpu::kLanes];
  C low[cpu::kLanes], high[cpu::kLanes], verl[cpu::kLanes], dual[cpu::kLanes], wclip[cpu::kLanes];
  C kl[cpu::kLanes], ref_check[cpu::kLanes], is[cpu::kLanes], smp_bad[cpu::kLanes];
  C is_min[cpu::kLanes], is_max[cpu::kLanes];
  C ent[cpu::kLanes], kept_h[cpu::kLanes], gh[cpu::kLanes], x_check[cpu::kLanes];
};
template <class C>
double lane_total(const C (&x)[cpu::kLanes]) {
  double su = 0;
  for (int k = 0; k < cpu::kLanes; ++k) su += static_cast<double>(x[k]);
  return su;
}

// A row's streams from some token on: the row's own arrays, or for its last partial block local
// copies padded with invalid tokens.
template <class C>
struct RowStreams {
  const C *lp, *old, *ref, *smp, *adv, *tw, *h, *sel;
  const LaneInt<C>* valid;
  C *g, *gh;
};

// One row of the token-ratio rules: the surrogate SUR (and its weight rule LW for Surrogate::Logp), the
// KL estimator KL (None: no KL term) fixed at compile time, so that every rule's math/ formula inlines
// to selects and the loop vectorises. valid: the row's mask as LaneInt (row.m: the same as bytes,
// nullptr when the call has none); row.ref: ref_logp (read when KL != None).
//
// IV (Surrogate::Clip without δ and dual-clip cap, X = false): the clip in its interval form
// (math::clip_interval), one `outside` count instead of four flag sums. TIS: the sampler IS weight per
// token (math::weight_rule's, from row.smp), times the row's weight row.w. X: the extended row (ex).
// Only the sums these rules can change are accumulated (a dead `s += 0` is not removed: x + 0 is not
// x at −0).
//
// Each loop is cloned for AVX-512 and AVX2 (GRPOKIT_CPU_CLONES, picked when the library loads): at SSE
// width the row sums spill registers (measured 5.2 → 1.3 ns/token with AVX-512 at 64×2048).
template <class C, Surrogate SUR, LogpWeight LW, KlEstimator KL, bool IV, bool TIS, bool X>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    void vector_row(const LossSpec& s, const FastRow<C>& row, const LaneInt<C>* valid, RowExtras<C>& ex,
                    RowResult& a) {
  static_assert(!(IV && X), "the interval form needs one advantage per row");
  constexpr int K = cpu::kLanes;
  constexpr bool kWclip = SUR == Surrogate::Logp && LW != LogpWeight::One && LW != LogpWeight::Ratio;
  constexpr bool kKl = KL != KlEstimator::None;
  const C A = row.A, c = row.c, w_row = row.w;
  const int64_t len = row.len;
  const C h_thr = ex.h_thr, prune = ex.prune, gtpo = ex.gtpo, hbar = ex.hbar, gh_kept = ex.gh_kept;
  const C clip_cov = ex.clip_cov, kl_cov = ex.kl_cov;
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
  LaneSums<C> acc;
  for (int k = 0; k < K; ++k) {
    acc.phi[k] = acc.ratio[k] = acc.ppo_kl[k] = acc.low[k] = acc.high[k] = acc.verl[k] = acc.dual[k] = 0;
    acc.wclip[k] = acc.kl[k] = acc.ref_check[k] = acc.is[k] = acc.smp_bad[k] = 0;
    acc.ent[k] = acc.kept_h[k] = acc.gh[k] = acc.x_check[k] = 0;
    acc.rmin[k] = acc.is_min[k] = C(INFINITY);
    acc.rmax[k] = acc.is_max[k] = -C(INFINITY);
  }
  // K tokens from t0 on, token t0 + k on lane k (inlined into both calls below: acc stays in registers)
  auto block = [&](const RowStreams<C>& p, int64_t t0) __attribute__((always_inline)) {
    // (an absent stream is nullptr and never read: no offset is formed from it)
    const C *lp = p.lp + t0, *old = p.old + t0, *ref = kKl ? p.ref + t0 : nullptr;
    const C *smp = TIS ? p.smp + t0 : nullptr, *adv = X ? p.adv + t0 : nullptr, *tw = X ? p.tw + t0 : nullptr;
    const C *hs = X ? p.h + t0 : nullptr, *sel = X ? p.sel + t0 : nullptr;
    const LaneInt<C>* vd = p.valid + t0;
    C *g = p.g + t0, *gh = X ? p.gh + t0 : nullptr;
#pragma omp simd
    for (int k = 0; k < K; ++k) {
      // Loads are unconditional (conditional loads stop the vectoriser); values are then selected,
      // never multiplied by the mask (padding may hold NaN).
      const bool ok = vd[k] != 0;
      const C l = lp[k], o = old[k];
      C At = A;
      if constexpr (X) At = adv[k];
      const C d = ok ? l - o : C(0);
      const math::ValueGrad<C> r = math::ratio_from_log<C, VecExp>(d, lo, hi);
      C v, dv, dx = r.d;
      if constexpr (SUR == Surrogate::Clip && IV) {
        const C rv = r.v < iv.lo ? iv.lo : r.v;
        v = rv > iv.hi ? iv.hi : rv;
        dv = (r.v >= iv.lo) & (r.v <= iv.hi) ? C(1) : C(0);
        acc.low[k] += ok ? C(1) - dv : C(0);  // outside the interval: low / high by the sign of A below
      } else if constexpr (SUR == Surrogate::Clip) {
        math::ClipFlags f;
        const math::ValueGrad<C> b = math::clip_branch(r.v, At, el, eh, delta, dual_c, &f);
        v = b.v;
        dv = b.d;
        // (`x += ok & f ? 1 : 0` rather than a 0/1 variable: GCC 12 then vectorises the sums)
        acc.low[k] += ok & f.low ? C(1) : C(0);
        acc.high[k] += ok & f.high ? C(1) : C(0);
        acc.verl[k] += ok & f.verl ? C(1) : C(0);
        acc.dual[k] += ok & f.dual ? C(1) : C(0);
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
        if constexpr (kWclip) acc.wclip[k] += ok & clipped ? C(1) : C(0);
      } else {
        v = r.v;
        dv = C(1);
      }
      C w = w_row;
      C kept = C(1);
      if constexpr (X) {  // math::weight_rule's per-token factors: λ_t, CPPO's |A_t| > γ, H_t ≥ the threshold
        const C at = At < C(0) ? -At : At;
        w = at > prune ? w * tw[k] : C(0);
        kept = hs[k] >= h_thr ? C(1) : C(0);
        w = w * kept;
      }
      if constexpr (TIS) {  // ρ_t = exp(ℓ_old − ℓ_smp), an unscored token (NaN) as 1 (math::weight_rule)
        const C sm = smp[k], di = o - sm, xi = di != di ? C(0) : di;
        // both forms (one exp), then a select on a number: a loop-invariant bool stops GCC 12's vectoriser
        const C w_trunc = math::sampler_is_weight<C, VecExp>(xi, true, is_lo, is_hi);
        const C w_mask = math::sampler_is_weight<C, VecExp>(xi, false, is_lo, is_hi);
        const C wis = is_trunc != C(0) ? w_trunc : w_mask;
        w = w * wis;
        acc.is[k] += ok ? wis : C(0);
        const C w_lo = ok ? wis : C(INFINITY), w_hi = ok ? wis : -C(INFINITY);
        acc.is_min[k] = w_lo < acc.is_min[k] ? w_lo : acc.is_min[k];
        acc.is_max[k] = w_hi > acc.is_max[k] ? w_hi : acc.is_max[k];
        const C sm_abs = sm < C(0) ? -sm : sm;  // ±inf is an error, NaN an unscored token
        acc.smp_bad[k] += ok ? (sm_abs == C(INFINITY) ? C(1) : C(0)) : C(0);
      }
      if constexpr (X) w = w * (C(1) - clip_cov * sel[k]);  // Clip-Cov: no policy term at a selected token
      C phi = w * (-At * v);
      C gt = c * (w * (-At)) * dv * dx;
      if constexpr (kKl) {
        const C rf = ref[k];
        acc.ref_check[k] += ok ? rf - rf : C(0);  // 0, or NaN once a valid ref_logp is not finite
        const math::ValueGrad<C> kt = kl.template term<KL>(l, rf, r.v, r.d);
        phi += kl.beta * kt.v;
        gt += c * (kl.beta * kt.d);
        acc.kl[k] += ok ? kt.v : C(0);
      }
      if constexpr (X) {
        // GTPO: + β·δ_i·λ_t·⟨H⟩_i·I, I = e^(ℓ − ℓ_old) (math::token_term); gtpo = 0 without it
        const C kg = gtpo * tw[k], hk = kg * hbar, I = VecExp::exp(d);
        phi += gtpo != C(0) ? hk * I : C(0);
        gt += gtpo != C(0) ? c * (hk * I) : C(0);
        acc.gh[k] += ok & (gtpo != C(0)) ? c * (kg * I) : C(0);
        // KL-Cov: + κ|ℓ − ℓ_old| at a selected token
        const C ks = kl_cov * sel[k], ad = d < C(0) ? -d : d,
                sd = d < C(0) ? C(-1) : (d > C(0) ? C(1) : C(0));
        phi += ks * ad;
        gt += c * (ks * sd);
        // the entropy bonus at a kept token, the entropy metric, and the inputs' finiteness
        const C h = hs[k];
        gh[k] = ok ? gh_kept * kept : C(0);
        acc.ent[k] += ok ? h : C(0);
        acc.kept_h[k] += ok ? h * kept : C(0);
        acc.x_check[k] += ok ? (At - At) + (tw[k] - tw[k]) + (h - h) : C(0);
      }
      // DRO: + ½β(ℓ − ℓ_old)², + 0 without it (unconditional: a loop-invariant bool stops GCC 12's
      // vectoriser)
      phi += C(0.5) * dro * d * d;
      gt += c * (dro * d);
      g[k] = ok ? gt : C(0);
      acc.phi[k] += ok ? phi : C(0);
      acc.ratio[k] += ok ? r.v : C(0);
      const C r_lo = ok ? r.v : C(INFINITY), r_hi = ok ? r.v : -C(INFINITY);  // plain min/max: vectorisable
      acc.rmin[k] = r_lo < acc.rmin[k] ? r_lo : acc.rmin[k];
      acc.rmax[k] = r_hi > acc.rmax[k] ? r_hi : acc.rmax[k];
      // d = 0 at padding; a non-finite valid ℓ or ℓ_old makes the sum non-finite (no per-token flag: a
      // bool of the mask's width mixed with the floats' stops GCC 12's vectoriser)
      acc.ppo_kl[k] -= d;
    }
  };
  const RowStreams<C> p{row.lp, row.old, row.ref, row.smp, ex.adv, ex.tw, ex.h, ex.sel, valid, row.g, ex.gh};
  // Blocks in chunks of kChunk tokens, each chunk first prefetching its streams' lines 2 KiB ahead
  // (cpu::prefetch_lines says why; the vectoriser drops a prefetch inside the vectorised loop).
  constexpr int64_t kChunk = 8 * K;
  constexpr size_t kBytes = kChunk * sizeof(C);
  const int64_t full = len - len % K;
  int64_t t0 = 0;
  while (t0 < full) {
    cpu::prefetch_lines(p.lp + t0, kBytes);
    cpu::prefetch_lines(p.old + t0, kBytes);
    cpu::prefetch_lines(p.valid + t0, kBytes);
    cpu::prefetch_lines(p.g + t0, kBytes);
    if constexpr (kKl) cpu::prefetch_lines(p.ref + t0, kBytes);
    if constexpr (TIS) cpu::prefetch_lines(p.smp + t0, kBytes);
    if constexpr (X)
      for (const C* q : {p.adv, p.tw, p.h, p.sel, static_cast<const C*>(p.gh)})
        cpu::prefetch_lines(q + t0, kBytes);
    const int64_t end = full - t0 < kChunk ? full : t0 + kChunk;
    for (; t0 < end; t0 += K) block(p, t0);
  }
  if (t0 < len) {  // the last partial block, on copies padded with invalid tokens
    const int64_t rest = len - t0;
    C buf[8][K] = {}, g_tail[K], gh_tail[K];
    LaneInt<C> v_tail[K] = {};
    const C* in[8] = {p.lp, p.old, p.ref, p.smp, p.adv, p.tw, p.h, p.sel};
    for (int j = 0; j < 8; ++j)
      if (in[j]) std::copy(in[j] + t0, in[j] + len, buf[j]);
    std::copy(p.valid + t0, p.valid + len, v_tail);
    block(RowStreams<C>{buf[0], buf[1], buf[2], buf[3], buf[4], buf[5], buf[6], buf[7], v_tail, g_tail,
                        gh_tail},
          0);
    std::copy(g_tail, g_tail + rest, row.g + t0);
    if (ex.gh) std::copy(gh_tail, gh_tail + rest, ex.gh + t0);
  }
  const double low = lane_total(acc.low), high = lane_total(acc.high);
  using Sums = math::MetricSums<double>;
  Sums& ms = a.m;
  const double nn = static_cast<double>(row.n_valid);
  a.loss = static_cast<double>(c) * lane_total(acc.phi);
  ms.sum[Sums::sN] = nn;
  if constexpr (IV) {  // a token outside the interval is the low (A < 0) or high (A > 0) and verl flag
    const double lo_n = A < C(0) ? low : 0.0, hi_n = A > C(0) ? low : 0.0;
    ms.sum[Sums::sLow] = lo_n;
    ms.sum[Sums::sHigh] = hi_n;
    ms.sum[Sums::sRegion] = ms.sum[Sums::sVerl] = lo_n + hi_n;
  } else {
    ms.sum[Sums::sLow] = low;
    ms.sum[Sums::sHigh] = high;
    ms.sum[Sums::sRegion] = low + high;
    ms.sum[Sums::sVerl] = lane_total(acc.verl);
  }
  ms.sum[Sums::sDual] = lane_total(acc.dual);
  ms.sum[Sums::sWclip] = lane_total(acc.wclip);
  ms.sum[Sums::sRatio] = lane_total(acc.ratio);
  const double ppo_kl = lane_total(acc.ppo_kl);
  ms.sum[Sums::sPpoKl] = ppo_kl;
  ms.sum[Sums::sKl] = lane_total(acc.kl);
  if (nn > 0) {
    ms.min[Sums::mRatioMin] = static_cast<double>(*std::min_element(acc.rmin, acc.rmin + K));
    ms.max[Sums::xRatioMax] = static_cast<double>(*std::max_element(acc.rmax, acc.rmax + K));
  }
  if constexpr (TIS) {
    ms.sum[Sums::sIs] = lane_total(acc.is);
    ms.sum[Sums::sNIs] = nn;
    if (nn > 0) {
      ms.min[Sums::mIsMin] = static_cast<double>(*std::min_element(acc.is_min, acc.is_min + K));
      ms.max[Sums::xIsMax] = static_cast<double>(*std::max_element(acc.is_max, acc.is_max + K));
    }
  }
  ms.row_done(false);
  if constexpr (X) {
    ms.sum[Sums::sEnt] = lane_total(acc.ent);
    ex.ent_sum = static_cast<C>(ms.sum[Sums::sEnt]);
    ex.kept_h = static_cast<C>(lane_total(acc.kept_h));
    ex.gh_sum = static_cast<C>(lane_total(acc.gh));
  }
  if (!std::isfinite(ppo_kl) || !std::isfinite(lane_total(acc.ref_check)) || lane_total(acc.smp_bad) != 0 ||
      row.smp_bad || !std::isfinite(lane_total(acc.x_check)))
    first_bad_position(row, kKl, a);
}

// The KL estimator, then the surrogate (and weight rule), as template arguments.
template <class C, bool TIS, bool X, Surrogate SUR, LogpWeight LW, bool IV = false>
void vector_row_kl(const LossSpec& s, const FastRow<C>& row, const LaneInt<C>* valid, RowExtras<C>& ex,
                   RowResult& a) {
  const KlEstimator kl = s.beta != 0.0 ? s.kl : KlEstimator::None;
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
    default:
      return vector_row_kl<C, TIS, X, Surrogate::Unclipped, kAny>(s, row, valid, ex, a);
  }
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
    case LW::Topr:  // not reached: general_row_only (loss_engine.cpp) keeps TOPR on the general row
      break;
  }
}

}  // namespace loss_cpu
}  // namespace grpokit
