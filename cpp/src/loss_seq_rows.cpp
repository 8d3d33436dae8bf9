// The CPU loss's fast rows with one ratio per row (GSPO, GSPO-token, GCPO, GMPO): pass A sums the
// row's log-ratio, pass B evaluates the ratio and surrogate once (math::token_term) and sweeps the
// tokens. Built with the flags of loss_fast.cpp (CMakeLists.txt), for the same reasons.
#include <cmath>
#include <cstdint>

#include "grpokit/math/loss.hpp"
#include "grpokit/math/metric_sums.hpp"
#include "loss_engine.hpp"
#include "loss_vec.hpp"

namespace grpokit {
namespace loss_cpu {
namespace {

using Sums = math::MetricSums<double>;

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

// What a sequence-ratio row's sweep reads besides the log-probs: the row's ratio R and its derivative
// through ℓ_t directly (GSPO-token; 0 otherwise), for the IS-corrected KL k·R (math::token_term).
template <class C>
struct SeqKlRatio {
  C r, dr;
};

// The sums a sweep leaves: Σ KL (k·R when IS-corrected), Σ(ℓ_old − ℓ), a finiteness check of ref_logp
// and Σ ℓ (the log-π surrogate's Σφ is −A·w·Σℓ).
template <class C>
struct SeqSums {
  C kl, ppo_kl, ref_check, logp;
};

// Pass B's sweep of a sequence-ratio row: g_t = g0 + gu·∂(row term)/∂ℓ_t (+ c·β·∂KL/∂ℓ_t), 0 at
// padding, and the row's SeqSums.
template <class C, bool GEO, KlEstimator KL>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
    __attribute__((noinline))
#endif
    void seq_grad_row(const LossSpec& s, const C* lp, const C* old, const C* ref, const LaneInt<C>* valid,
                      C A, C c, C g0, C gu, SeqKlRatio<C> R, int64_t len, C* g, SeqSums<C>& out) {
  const C el = static_cast<C>(s.epsilon_low), eh = static_cast<C>(s.epsilon_high);
  const KlRule<C> kl(s);
  const C r = R.r, dr = R.dr;
  C kl_sum = 0, ppo_kl = 0, ref_check = 0, lsum = 0;
#pragma omp simd reduction(+ : kl_sum, ppo_kl, ref_check, lsum)
  for (int64_t t = 0; t < len; ++t) {
    const bool ok = valid[t] != 0;
    const C l = lp[t];
    const C d = ok ? l - old[t] : C(0);
    C gt = g0 + gu * log_ratio_term<C, GEO>(d, A, el, eh).d;
    if constexpr (KL != KlEstimator::None) {
      const C rf = ref[t];
      ref_check += ok ? rf - rf : C(0);  // 0, or NaN once a valid ref_logp is not finite
      const math::ValueGrad<C> k = kl.template term<KL>(l, rf, r, dr);
      gt += c * (kl.beta * k.d);
      kl_sum += ok ? k.v : C(0);
    }
    g[t] = ok ? gt : C(0);
    lsum += ok ? l : C(0);
    ppo_kl -= d;  // non-finite once a valid ℓ or ℓ_old is
  }
  out.kl = kl_sum;
  out.ppo_kl = ppo_kl;
  out.ref_check = ref_check;
  out.logp = lsum;
}

template <class C, bool GEO>
void seq_grad_row_kl(const LossSpec& s, const C* lp, const C* old, const C* ref, const LaneInt<C>* valid, C A,
                     C c, C g0, C gu, SeqKlRatio<C> R, int64_t len, C* g, SeqSums<C>& out) {
  const KlEstimator kl = s.beta != 0.0 ? s.kl : KlEstimator::None;
#define GRPOKIT_SEQ_GRAD(K) \
  return seq_grad_row<C, GEO, K>(s, lp, old, ref, valid, A, c, g0, gu, R, len, g, out)
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

}  // namespace

// Pass B of a sequence-ratio row: the ratio, surrogate and their derivatives once (math::token_term
// without β·KL, whose terms are per token), then one sweep over the tokens. u: the row's log-ratio.
// The log-π surrogates (a detached row weight, verl's reinforce with rollout_is='sequence') have
// φ_t = g0·ℓ_t; the IS-corrected KL k_t·R adds c·β·Σ_t k_t·∂R/∂u_i to the row's ∂/∂u_i, known
// after the sweep: a second sweep adds it.
template <class C>
void seq_row(const LossSpec& s, const FastRow<C>& row, RowResult& a) {
  const C *lp = row.lp, *old = row.old, *ref = row.ref;
  const uint8_t* m = row.m;
  const C A = row.A, c = row.c;
  const int64_t len = row.len, n_valid = row.n_valid;
  C* g = row.g;
  LossSpec s_row = s;
  s_row.beta = 0.0;
  math::TokenIn<C> ti{};
  ti.adv = A;
  ti.token_weight = ti.keep = C(1);
  ti.w = row.w;
  ti.u = static_cast<C>(row.u);
  const math::TokenOut<C> o = math::token_term<C>(s_row, ti);
  const double n = static_cast<double>(n_valid);
  // ∂/∂u_i summed over the row's tokens, times ∂u_i/∂(row term)
  const C scale = math::row_log_ratio_scale<C>(s, n_valid);
  const C gu = static_cast<C>(n * static_cast<double>(c * o.d_u)) * scale;
  const bool geo = s.surrogate == Surrogate::GeoMean;
  // the ratio as token_term forms it: its derivative through ℓ_t directly (GSPO-token) or through u_i
  const bool is_kl = s.kl_is_corrected && s.kl != KlEstimator::None && s.beta != 0.0;
  const bool direct = !geo && s.ratio == RatioLevel::SequenceToken;
  const math::ValueGrad<C> R = geo ? math::ValueGrad<C>{std::exp(ti.u), std::exp(ti.u)}
                                   : math::ratio_from_log(ti.u, C(s.log_ratio_min), C(s.log_ratio_max));
  const SeqKlRatio<C> kr{is_kl ? R.v : C(1), is_kl && direct ? R.d : C(0)};
  const LaneInt<C>* valid = lane_mask<C>(m, len);
  SeqSums<C> sums{};
  if (geo)
    seq_grad_row_kl<C, true>(s, lp, old, ref, valid, A, c, c * o.d_logp, gu, kr, len, g, sums);
  else
    seq_grad_row_kl<C, false>(s, lp, old, ref, valid, A, c, c * o.d_logp, gu, kr, len, g, sums);
  if (is_kl && !direct && R.d != C(0) && n_valid > 0) {  // ∂R/∂u_i = R (0 where u_i's clamp binds)
    const C gk = c * (static_cast<C>(s.beta) * sums.kl) * scale;
    const C el = static_cast<C>(s.epsilon_low), eh = static_cast<C>(s.epsilon_high);
    if (geo) {
      for (int64_t t = 0; t < len; ++t)
        if (valid[t] != 0) g[t] += gk * log_ratio_term<C, true>(lp[t] - old[t], A, el, eh).d;
    } else {
#pragma omp simd
      for (int64_t t = 0; t < len; ++t) g[t] = valid[t] != 0 ? g[t] + gk : g[t];
    }
  }
  const double phi = s.surrogate == Surrogate::Logp
                         ? static_cast<double>(o.d_logp) * static_cast<double>(sums.logp)
                         : n * static_cast<double>(o.phi);
  a.loss = static_cast<double>(c) * (phi + s.beta * static_cast<double>(sums.kl));
  Sums& ms = a.m;
  // the ratio metrics count the row once (GSPO-token: each of its tokens, all alike)
  const bool per_row = math::ratio_metrics_per_row(s);
  if (n_valid > 0) ms.add_token(o, true, C(0), C(0), C(0));
  if (!per_row)
    for (int k :
         {Sums::sLow, Sums::sHigh, Sums::sRegion, Sums::sVerl, Sums::sDual, Sums::sWclip, Sums::sRatio})
      ms.sum[k] *= n;
  ms.sum[Sums::sN] = n;
  ms.sum[Sums::sKl] = sums.kl;
  ms.sum[Sums::sPpoKl] = sums.ppo_kl;
  ms.row_done(per_row);
  const bool kl = s.kl != KlEstimator::None && s.beta != 0.0;
  if (!std::isfinite(sums.ppo_kl) || !std::isfinite(sums.ref_check) || row.smp_bad)
    first_bad_position(lp, old, kl ? ref : nullptr, row.smp, m, len, a);
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

template double fast_row_log_ratio<float>(const LossSpec&, const float*, const float*, const uint8_t*, float,
                                          int64_t, int64_t&);
template double fast_row_log_ratio<double>(const LossSpec&, const double*, const double*, const uint8_t*,
                                           double, int64_t, int64_t&);
template void seq_row<float>(const LossSpec&, const FastRow<float>&, RowResult&);
template void seq_row<double>(const LossSpec&, const FastRow<double>&, RowResult&);

}  // namespace loss_cpu
}  // namespace grpokit
