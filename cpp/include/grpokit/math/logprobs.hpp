// Per-row formulas of token log-probabilities and entropies from logits, shared by the CPU engine
// and the CUDA kernels.
//
// For one row of logits x (V entries), temperature τ and target token y, with z = x / τ:
//   lse     = log Σ_j exp(z_j)
//   logp    = z_y − lse
//   entropy = −Σ_j p_j log p_j = lse − Σ_j p_j z_j,            p_j = exp(z_j − lse)
//   Σπ²     = Σ_j p_j² = Σ_j exp(z_j − m)² / (Σ_j exp(z_j − m))²   (any m; opt-in, forward only)
// and, for upstream gradients a = ∂L/∂logp and b = ∂L/∂entropy,
//   ∂L/∂x_j = (1/τ) · [ a·δ_jy − p_j · (a + b·(log p_j + entropy)) ].
//
// The temperature rule (every path: CPU, CUDA, logits and hidden × weight): τ is applied once, to
// differences from the row's RAW maximum m, d = (x − m)/τ (scaled_gap). d is ≤ 0 and exactly 0 at the
// maximum whatever the magnitude, and x/τ itself (which overflows float32 for |x| > τ·3.4e38, and
// whose rounding can differ from m/τ's through FMA contraction) is never formed. States keep raw
// maxima; merging two of them scales the gap between the maxima, and lse = m/τ + log Σ is formed once
// per row in a wider type.
//
// The row is read in chunks. Each chunk is reduced to a partial state relative to its own maximum
// (ChunkStats); partial states merge associatively into a RowState kept in a wider type, so the
// result does not depend on the chunk size beyond rounding and a row is read from memory once.
// −inf logits are legal (probability 0, gradient 0); the exponent argument is clamped at
// min_exp_arg so 0 · (−inf) never appears.
#pragma once

#include <cmath>

#include "grpokit/config.hpp"

namespace grpokit {
namespace math {

// Exponent arguments are clamped here: exp of it is 0 (float32: the engines' exp flushes below the
// smallest normal; float64: below the smallest subnormal), and it is finite, so p·d stays 0, never
// 0·(−inf).
template <class F>
GRPOKIT_HD F min_exp_arg() {
  return sizeof(F) == sizeof(double) ? F(-800.0) : F(-88.0);
}

// exp(d)² is taken as 0 below this d, where it would be subnormal (float32: e^-87 > the smallest
// normal float): subnormal products are slow on x86 and their share of Σ exp(d)², whose largest term
// is 1, is below 1e-37.
template <class F>
GRPOKIT_HD F min_sq_arg() {
  return sizeof(F) == sizeof(double) ? F(-350.0) : F(-43.5);
}

// d = (x − m)/τ for a raw logit x and the raw maximum m (or any raw reference ≥ x): the one rounding
// of the temperature scale.
template <class F>
GRPOKIT_HD F scaled_gap(F x, F m, F inv_t) {
  return (x - m) * inv_t;
}

// The backward's d = x/τ − lse is formed from the saved lse while |lse| is within this bound (its
// float rounding is then below the bound's ulp); beyond it the row's raw maximum and log Σ are
// recomputed (an extra read of the row) and d = (x − m)/τ − log Σ.
template <class F>
GRPOKIT_HD constexpr double exact_lse_bound() {
  return sizeof(F) == sizeof(double) ? 1099511627776.0 : 4096.0;
}

// Partial sums of one chunk relative to the chunk maximum m:
//   sum = Σ exp(z − m),   dot = Σ exp(z − m)·(z − m)   (dot ≤ 0),   sq = Σ exp(z − m)²
// (sq only in the kernels instantiated for Σπ²; 0 elsewhere).
template <class F>
struct ChunkStats {
  F max;
  F sum;
  F dot;
  F sq = 0;
};

// The running state of one row relative to its running maximum (same meaning as ChunkStats). With
// kSq the state also carries sq, rescaled by the square of the max-shift factor; without it sq is
// never touched, so the default instantiation does no extra work.
template <class A, bool kSq = false>
struct RowState {
  A max = -INFINITY;
  A sum = 0;
  A dot = 0;
  A sq = 0;

  // Folds a chunk in. An all −inf chunk (max = −inf) contributes nothing; a chunk that saw NaN or
  // +inf reports sum = NaN, which sticks. inv_t: the maxima are raw (unscaled) and the gap between
  // them is scaled here (scaled_gap); 1 for states whose maxima are already scaled.
  template <class F>
  GRPOKIT_HD void merge(const ChunkStats<F>& c, A inv_t = A(1)) {
    if (c.sum != c.sum) {
      sum = dot = static_cast<A>(c.sum);
      if constexpr (kSq) sq = sum;
      return;
    }
    const A cm = static_cast<A>(c.max);
    if (!(cm > -INFINITY)) return;
    if (cm <= max) {
      const A shift = scaled_gap(cm, max, inv_t);  // ≤ 0: rescale the chunk to the running maximum
      const A w = exp(shift);
      sum += w * static_cast<A>(c.sum);
      dot += w * (static_cast<A>(c.dot) + shift * static_cast<A>(c.sum));
      if constexpr (kSq) sq += w * w * static_cast<A>(c.sq);
    } else {
      const A shift = scaled_gap(max, cm, inv_t);  // < 0 (or −inf for the first chunk): rescale the state
      const A w = max > -INFINITY ? exp(shift) : A(0);
      const A old_dot = w > A(0) ? w * (dot + shift * sum) : A(0);
      sum = w * sum + static_cast<A>(c.sum);
      dot = old_dot + static_cast<A>(c.dot);
      if constexpr (kSq) sq = w * w * sq + static_cast<A>(c.sq);
      max = cm;
    }
  }

  // log Σ exp(z); −inf for a row with no finite logit; NaN for a row holding NaN or +inf. inv_t as in
  // merge: the raw maximum is scaled here, in W (a wider type where A is float).
  template <class W = A>
  GRPOKIT_HD W lse(W inv_t = W(1)) const {
    if (sum > A(0)) return static_cast<W>(max) * inv_t + static_cast<W>(log(sum));
    return sum == A(0) ? W(-INFINITY) : static_cast<W>(sum);
  }

  // −Σ p log p = log(sum) − dot / sum (both relative to the maximum, so no cancellation at ±1e4).
  GRPOKIT_HD A entropy() const {
    if (sum != sum) return sum;
    if (!(sum > A(0))) return A(0);
    const A h = log(sum) - dot / sum;
    return h > A(0) ? h : A(0);  // rounding can leave a one-hot row at −0 or −1e-17
  }

  // Σ p² = sq / sum² (kSq states only), in [1/V, 1]; rounding can put a one-hot row an ulp above 1.
  GRPOKIT_HD A sum_sq_probs() const {
    if (sum != sum) return sum;
    if (!(sum > A(0))) return A(0);
    const A v = sq / (sum * sum);
    return v < A(1) ? v : A(1);
  }
};

// log p_y = z_y − lse, at most 0: a vectorised exp a few ulps low can leave lse just below z_y
// (one-token rows), and a log-probability above 0 is garbage to every caller.
template <class A>
GRPOKIT_HD A token_logp(A z_y, A lse) {
  const A v = z_y - lse;
  return v < A(0) ? v : A(0);
}

// Coefficients of the logits gradient of one row: ∂L/∂x_j = g_target·δ_jy − p_j·(g_p + g_d·d_j)
// with d_j = max(z_j − lse, min_exp_arg) and p_j = exp(d_j).
template <class F>
struct GradCoeffs {
  F target;  // a/τ
  F p;       // (a + b·entropy)/τ
  F d;       // b/τ
  bool zero;  // a = b = 0: the row's gradient is exactly 0
};

template <class F, class A>
GRPOKIT_HD GradCoeffs<F> grad_coeffs(A grad_logp, A grad_entropy, A entropy, A inv_temperature) {
  GradCoeffs<F> c;
  c.target = static_cast<F>(grad_logp * inv_temperature);
  c.p = static_cast<F>((grad_logp + grad_entropy * entropy) * inv_temperature);
  c.d = static_cast<F>(grad_entropy * inv_temperature);
  c.zero = grad_logp == A(0) && grad_entropy == A(0);
  return c;
}

// One element of the logits gradient (without the target term), given d = z − lse and p = exp(d)
// computed by the caller with its own exp.
template <class F>
GRPOKIT_HD F clamp_exp_arg(F d) {
  return d < min_exp_arg<F>() ? min_exp_arg<F>() : d;
}

template <class F>
GRPOKIT_HD F grad_element(const GradCoeffs<F>& c, F p, F d_clamped) {
  return -p * (c.p + c.d * d_clamped);
}

}  // namespace math
}  // namespace grpokit
