// The CPU loss's vectorised row loops share (internal): the exp policy, the mask at the values' width,
// the KL rule and the error position (loss_fast.cpp: token-ratio rows; loss_seq_rows.cpp: one ratio
// per row).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>
#include <vector>

#include "cpu_kernels.hpp"
#include "grpokit/math/loss.hpp"
#include "loss_engine.hpp"

namespace grpokit {
namespace loss_cpu {

// The first valid position whose logp, old_logp, advantages, ref_logp, token_weights or entropies (when
// given) is not finite, or whose sampling_logp (when given) is ±inf, named as the general loop names it
// (the fast loops only detect that one exists). m: nullptr = every token valid.
template <class C>
void first_bad_position(const C* lp, const C* old, const C* ref, const C* smp, const uint8_t* m, int64_t len,
                        RowResult& a, const C* adv = nullptr, const C* tw = nullptr, const C* h = nullptr) {
  for (int64_t t = 0; t < len; ++t) {
    if (m && m[t] == 0) continue;
    if (!std::isfinite(lp[t])) return a.fail(t, "logp", static_cast<double>(lp[t]));
    if (!std::isfinite(old[t])) return a.fail(t, "old_logp", static_cast<double>(old[t]));
    if (adv && !std::isfinite(adv[t])) return a.fail(t, "advantages", static_cast<double>(adv[t]));
    if (ref && !std::isfinite(ref[t])) return a.fail(t, "ref_logp", static_cast<double>(ref[t]));
    if (tw && !std::isfinite(tw[t])) return a.fail(t, "token_weights", static_cast<double>(tw[t]));
    if (h && !std::isfinite(h[t])) return a.fail(t, "entropies", static_cast<double>(h[t]));
    if (smp && std::isinf(smp[t])) return a.fail(t, "sampling_logp", static_cast<double>(smp[t]));
  }
}
// ... of a fast row (kl: whether its ref_logp is read)
template <class C>
void first_bad_position(const FastRow<C>& row, bool kl, RowResult& a) {
  first_bad_position(row.lp, row.old, kl ? row.ref : nullptr, row.smp, row.m, row.len, a, row.adv, row.tw,
                     row.h);
}

// cpu::exp_vec as the exp policy of the math/ formulas (math::StdExp): libm's exp is a call the
// vectoriser cannot widen.
struct VecExp {
  template <class C>
  static C exp(C x) {
    return cpu::exp_vec(x);
  }
  template <class C>
  static C log(C x) {
    return cpu::log_vec(x);
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

}  // namespace loss_cpu
}  // namespace grpokit
