// The KL divergence of the policy from the reference over the whole vocabulary, per row, from both
// rows of logits; shared by the CPU engine and the CUDA kernels.
//
// For policy logits x, reference logits y (V entries each) and temperature τ, with a = x/τ, b = y/τ,
// p = softmax(a), q = softmax(b):
//   KL = Σ_v p_v (log p_v − log q_v)            (KL(π_θ ‖ π_ref): ROLL's and TRL's kl_penalty="full")
//   ∂KL/∂x_v = (1/τ) · p_v · ((log p_v − log q_v) − KL)      (no gradient to the reference)
//
// One pass beside the policy's RowState (grpokit/math/logprobs.hpp): the reference's (max, Σ exp) and
// the cross sum
//   cross = Σ_v exp((x_v − m_x)/τ) · ((x_v − m_x) − (y_v − m_y))/τ
// relative to BOTH raw maxima m_x, m_y, so KL = cross/Σ_x − log Σ_x + log Σ_y has no cancellation
// between large logits (a reference shifted by a constant gives 0, not a difference of two 1e4s).
// A token the policy gives mass and the reference none (y_v = −inf) makes KL = +inf.
#pragma once

#include <cmath>

#include "grpokit/config.hpp"
#include "grpokit/math/logprobs.hpp"

namespace grpokit {
namespace math {

// (u − M) for a maximum u ≤ M, −inf when u is (also when M is: nothing seen yet on that side).
template <class A>
GRPOKIT_HD A gap_to(A u, A m) {
  return u > A(-INFINITY) ? u - m : A(-INFINITY);
}

// One element's share of cross: e = exp(d_x) (0 below the clamp) times d_x − d_y, where
// d_x = (x − m_x)/τ and d_y = (y − m_y)/τ. 0 where the policy has no mass (even against y = −inf).
template <class F>
GRPOKIT_HD F kl_cross_term(F e, F d_x, F y, F m_y, F inv_t) {
  if (!(e > F(0))) return F(0);
  const F d_y = y > F(-INFINITY) ? scaled_gap(y, m_y, inv_t) : F(-INFINITY);
  return e * (d_x - d_y);
}

// The running state of one row pair.
template <class A>
struct KlState {
  RowState<A> p;  // the policy row (lse, entropy)
  RowState<A> q;  // the reference row (lse; its dot is unused)
  A cross = 0;    // relative to (p.max, q.max)

  // Folds in a part of the row: its policy and reference stats and its cross sum relative to their
  // maxima (cp.max, cq.max). inv_t: the maxima are raw, as in RowState::merge.
  template <class F>
  GRPOKIT_HD void merge(const ChunkStats<F>& cp, const ChunkStats<F>& cq, F c, A inv_t) {
    const A pm = static_cast<A>(cp.max), qm = static_cast<A>(cq.max);
    const A mx = p.max > pm ? p.max : pm, my = q.max > qm ? q.max : qm;
    // Each side rescaled to the new maxima: weight exp(gap_x), cross shifted by Σ·(gap_x − gap_y).
    A v = 0;
    if (p.sum > A(0)) {
      const A gx = scaled_gap(p.max, mx, inv_t), gy = gap_to(q.max, my) * inv_t;
      v += exp(gx) * (cross + p.sum * (gx - gy));
    }
    if (static_cast<A>(cp.sum) > A(0)) {
      const A gx = scaled_gap(pm, mx, inv_t), gy = gap_to(qm, my) * inv_t;
      v += exp(gx) * (static_cast<A>(c) + static_cast<A>(cp.sum) * (gx - gy));
    }
    if (cp.sum != cp.sum || p.sum != p.sum) v = static_cast<A>(NAN);
    cross = v;
    p.merge(cp, inv_t);
    q.merge(cq, inv_t);
  }

  // KL(p ‖ q) ≥ 0 (rounding can leave −1e-17 for equal rows); NaN for a row the caller rejects (NaN,
  // +inf, or no finite logit on either side).
  GRPOKIT_HD A kl() const {
    if (!(p.sum > A(0)) || !(q.sum > A(0))) return static_cast<A>(NAN);
    const A v = cross / p.sum - log(p.sum) + log(q.sum);
    return v < A(0) ? A(0) : v;
  }
};

// Coefficients of the logits gradient of a row through logp (a), entropy (b) and KL (k), from the
// saved entropy h and KL: ∂L/∂x_v = base.target·δ_vy − p_v·(base.p + base.d·d_v + ref·e_v), with
// d_v = log p_v and e_v = log q_v.
template <class F>
struct KlGradCoeffs {
  GradCoeffs<F> base;
  F ref;  // k/τ
};

template <class F, class A>
GRPOKIT_HD KlGradCoeffs<F> kl_grad_coeffs(A grad_logp, A grad_entropy, A entropy, A grad_kl, A kl,
                                          A inv_temperature) {
  KlGradCoeffs<F> c;
  c.base = grad_coeffs<F, A>(grad_logp, grad_entropy, entropy, inv_temperature);
  // k·p_v·(d_v − e_v − KL)/τ folded into the entropy form's coefficients.
  if (grad_kl != A(0)) {
    c.base.p = static_cast<F>((grad_logp + grad_entropy * entropy + grad_kl * kl) * inv_temperature);
    c.base.d = static_cast<F>((grad_entropy - grad_kl) * inv_temperature);
  }
  c.ref = static_cast<F>(grad_kl * inv_temperature);
  c.base.zero = c.base.zero && grad_kl == A(0);
  return c;
}

// e = log q_v = (y − shift)/τ − c0 from the reference's saved lse (shift 0, c0 = lse) or its raw
// maximum and log Σ (as the policy's d), at most 0; −inf for y = −inf.
template <class F>
GRPOKIT_HD F kl_ref_gap(F y, F shift, F c0, F inv_t) {
  if (!(y > F(-INFINITY))) return F(-INFINITY);
  const F e = scaled_gap(y, shift, inv_t) - c0;
  return e > F(0) ? F(0) : e;
}

// One element of that gradient (without the target term): p = exp(d) with d clamped as in
// grad_element, e = log q_v (−inf where the reference has no mass). 0 where p is 0.
template <class F>
GRPOKIT_HD F kl_grad_element(const KlGradCoeffs<F>& c, F p, F d, F e) {
  if (!(p > F(0))) return F(0);
  return -p * (c.base.p + c.base.d * d + c.ref * e);
}

}  // namespace math
}  // namespace grpokit
