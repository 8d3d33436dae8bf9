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

}  // namespace

// Pass B of a sequence-ratio row: the ratio, surrogate and their derivatives once (math::token_term
// without β·KL, whose terms are per token), then one sweep over the tokens. u: the row's log-ratio.
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
  if (!std::isfinite(ppo_kl) || !std::isfinite(ref_check) || row.smp_bad)
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
