// Per-element formulas of the diagnostics (docs/diagnostics.md §1–4), shared by every
// engine path that needs them.
//
// Sign conventions: advantages A as the papers define them (A > 0 favours a completion); the
// clipped region ℛ_clip is the side of the trust region the advantage pushes towards (§5.1).
// Adam quantities follow torch.optim.Adam/AdamW: m = exp_avg, v = exp_avg_sq, t = step,
// m̂ = m/(1−β1^t), v̂ = v/(1−β2^t), preconditioned step u = m̂/(√v̂ + ϵ) (ϵ after the square root).
#pragma once

#include <cmath>

#include "grpokit/config.hpp"

namespace grpokit {
namespace math {

// ---- clip region (§5.4 items 1–2) -----------------------------------------------------------
// Excess of ratio s beyond the bound the advantage pushes towards: s − (1+ε_high) for A > 0,
// (1−ε_low) − s for A < 0, and 0 when the token is not in ℛ_clip (inside the trust region, beyond
// the opposite bound — the min() does not clip there and the token still gets gradient — or A = 0).
// So "in ℛ_clip" is exactly excess > 0.
GRPOKIT_HD double clip_excess(double s, double A, double eps_low, double eps_high) {
  if (A > 0.0) {
    const double e = s - (1.0 + eps_high);
    return e > 0.0 ? e : 0.0;
  }
  if (A < 0.0) {
    const double e = (1.0 - eps_low) - s;
    return e > 0.0 ? e : 0.0;
  }
  return 0.0;
}

// PPO's per-token term min(s·A, clip(s, 1−ε_low, 1+ε_high)·A) (Eq. 1 without α).
GRPOKIT_HD double clipped_surrogate(double s, double A, double eps_low, double eps_high) {
  const double lo = 1.0 - eps_low, hi = 1.0 + eps_high;
  const double c = s < lo ? lo : (s > hi ? hi : s);
  const double a = s * A, b = c * A;
  return a < b ? a : b;
}

// ---- Adam state (§4.3–4.4, §5.2) -------------------------------------------------------------
GRPOKIT_HD double bias_correction(double beta, double step) { return 1.0 - pow(beta, step); }

// ρ = ϵ/√v̂: how much ϵ shrinks this coordinate's step. v̂ = 0 (never updated) gives +inf.
GRPOKIT_HD double adam_rho_from_sqrt(double sqrt_vhat, double eps) {
  return sqrt_vhat > 0.0 ? eps / sqrt_vhat : INFINITY;
}
GRPOKIT_HD double adam_rho(double v, double bc2, double eps) {
  return adam_rho_from_sqrt(sqrt(v / bc2), eps);
}

// Elasticity of the step to a global reward scale φ at φ = 1: d log|Δθ| / d log φ = ρ/(1+ρ).
GRPOKIT_HD double reward_scale_elasticity(double rho) { return rho == INFINITY ? 1.0 : rho / (1.0 + rho); }

// Preconditioned step u = m̂/(√v̂ + ϵ) of a state (m, v) at step t (bc1 = 1−β1^t, bc2 = 1−β2^t).
// With every past gradient scaled by φ > 0, the state is (φm, φ²v) and the step is
// φm̂/(φ√v̂ + ϵ) = u·(1+ρ)/(1+ρ/φ) (Prop. 6 + §4.3).
GRPOKIT_HD double adam_update_from_sqrt(double mhat, double sqrt_vhat, double eps, double phi) {
  return phi * mhat / (phi * sqrt_vhat + eps);
}
GRPOKIT_HD double adam_update(double m, double v, double bc1, double bc2, double eps, double phi) {
  return adam_update_from_sqrt(m / bc1, sqrt(v / bc2), eps, phi);
}

// ---- one coordinate of a parameter tensor's Adam state (CPU engine and CUDA kernels) -----------
//
// The statistics of adam_state_stats and adam_step_split are sums over coordinates of these
// per-coordinate terms; both engines call the functions below, so a coordinate's terms agree to an
// ulp on the host and the device (FMA contraction; device log10) and only the order of the sums
// differs. Everything is double: the state may be stored in float32/bfloat16/float16, the arithmetic
// is not.

// Per-tensor constants of the statistics at step t (computed once, on the host).
struct AdamStatsCoefs {
  double bc1, bc2;       // 1 − β1^t, 1 − β2^t
  double next_m, next_sv;  // m̂ and √v̂ of the momentum-only next state (β1 m, β2 v at t + 1) over this step's
  double eps, rho_threshold;
  double hist_lo, hist_width;  // log10 ρ histogram: bins of hist_width from hist_lo
  double hist_bins;  // number of bins (a whole number)
};

GRPOKIT_HD AdamStatsCoefs adam_stats_coefs(double beta1, double beta2, double eps, double t,
                                           double rho_threshold, double hist_lo, double hist_hi,
                                           double hist_bins) {
  AdamStatsCoefs k{};
  k.bc1 = bias_correction(beta1, t);
  k.bc2 = bias_correction(beta2, t);
  k.next_m = beta1 * k.bc1 / bias_correction(beta1, t + 1);
  k.next_sv = sqrt(beta2 * k.bc2 / bias_correction(beta2, t + 1));
  k.eps = eps;
  k.rho_threshold = rho_threshold;
  k.hist_lo = hist_lo;
  k.hist_width = (hist_hi - hist_lo) / hist_bins;
  k.hist_bins = hist_bins;
  return k;
}

// One coordinate's terms. With v ≤ 0 (never updated; m = 0 there too) only rho, elast and rho_above
// are set: the coordinate takes no step and has no histogram bin.
struct AdamCoordinate {
  double rho, elast;
  bool rho_above, zero_v;
  double mhat, sqrt_vhat;  // for the steps at other reward scales (adam_update_from_sqrt)
  double u, u_next;  // this step, and the momentum-only next step
  int bin;  // log10 ρ bin, out-of-range values in the end bins
};

GRPOKIT_HD AdamCoordinate adam_coordinate(double m, double v, const AdamStatsCoefs& k) {
  AdamCoordinate c{};
  c.sqrt_vhat = sqrt(v / k.bc2);
  c.mhat = m / k.bc1;
  c.rho = adam_rho_from_sqrt(c.sqrt_vhat, k.eps);
  c.rho_above = c.rho > k.rho_threshold;
  c.elast = reward_scale_elasticity(c.rho);
  c.zero_v = v <= 0.0;
  if (c.zero_v) return c;
  c.u = adam_update_from_sqrt(c.mhat, c.sqrt_vhat, k.eps, 1.0);
  c.u_next = adam_update_from_sqrt(k.next_m * c.mhat, k.next_sv * c.sqrt_vhat, k.eps, 1.0);
  const double lg = c.rho > 0.0 ? log10(c.rho) : k.hist_lo;
  const double b = floor((lg - k.hist_lo) / k.hist_width);
  // clamped in double before the cast, so it is defined on every platform for any ρ (a NaN state has
  // ρ = ∞: the last bin)
  c.bin = static_cast<int>(b >= 0.0 ? (b < k.hist_bins - 1.0 ? b : k.hist_bins - 1.0) : 0.0);
  return c;
}

// Per-coordinate preconditioned step of the state (adam_update), or of the state one step later with a
// zero gradient (m ← β1 m, v ← β2 v, t ← t + 1) when `momentum_only_next`.
struct AdamUpdateCoefs {
  double b1, b2;  // factors on m and v (1 for the state itself)
  double bc1, bc2;  // bias corrections at the step taken
};

GRPOKIT_HD AdamUpdateCoefs adam_update_coefs(double beta1, double beta2, double step,
                                             bool momentum_only_next) {
  const double t = momentum_only_next ? step + 1 : step;
  AdamUpdateCoefs k{};
  k.b1 = momentum_only_next ? beta1 : 1.0;
  k.b2 = momentum_only_next ? beta2 : 1.0;
  k.bc1 = bias_correction(beta1, t);
  k.bc2 = bias_correction(beta2, t);
  return k;
}

// 0 where v = 0 (a coordinate never updated takes no step).
GRPOKIT_HD double adam_update_coordinate(double m, double v, const AdamUpdateCoefs& k, double eps,
                                         double phi) {
  const double mm = k.b1 * m, vv = k.b2 * v;
  return vv > 0.0 ? adam_update(mm, vv, k.bc1, k.bc2, eps, phi) : 0.0;
}

// The coming step t + 1 split into its momentum and current-gradient parts (adam_step_split).
struct AdamSplitCoefs {
  double beta1, beta2, eps;
  double bc1, bc2;  // at t + 1
  double bc1p, bc2p;  // at t (the previous step)
  bool has_prev;  // t >= 1: the state holds a previous step
};

GRPOKIT_HD AdamSplitCoefs adam_split_coefs(double beta1, double beta2, double eps, double t) {
  AdamSplitCoefs k{};
  k.beta1 = beta1;
  k.beta2 = beta2;
  k.eps = eps;
  k.bc1 = bias_correction(beta1, t + 1);
  k.bc2 = bias_correction(beta2, t + 1);
  k.bc1p = bias_correction(beta1, t);
  k.bc2p = bias_correction(beta2, t);
  k.has_prev = t >= 1.0;
  return k;
}

struct AdamSplitTerm {
  double prev;  // u_{t−1} of the state (0 without one, or where v = 0)
  bool step;  // the coordinate moves (d > 0); us, uf are 0 otherwise
  double us, uf;  // β1 m/d and (1−β1) g/d
};

// `g` is the gradient with any L2 term added; the caller checks it is finite.
GRPOKIT_HD AdamSplitTerm adam_split_term(double m, double v, double g, const AdamSplitCoefs& k) {
  AdamSplitTerm r{};
  if (k.has_prev && v > 0.0) r.prev = adam_update(m, v, k.bc1p, k.bc2p, k.eps, 1.0);
  const double vt = k.beta2 * v + (1.0 - k.beta2) * g * g;
  const double d = k.bc1 * (sqrt(vt / k.bc2) + k.eps);
  r.step = d > 0.0;  // v_t = 0 and ϵ = 0: no step on this coordinate
  if (!r.step) return r;
  r.us = k.beta1 * m / d;
  r.uf = (1.0 - k.beta1) * g / d;
  return r;
}

// ---- overshoot past the clip region (Prop. 7, Eq. 32–38) --------------------------------------
// C_{T,k}: the preconditioned step k steps after entering ℛ_clip at step T (gradient 0 from T on)
// over the last step before it, for ϵ ≪ √v̂ (Eq. 36; k = 0 is Eq. 32). Needs T ≥ 2.
GRPOKIT_HD double overshoot_coefficient(double T, double k, double beta1, double beta2) {
  const double m_part = pow(beta1, k + 1.0) * (1.0 - pow(beta1, T - 1.0)) / (1.0 - pow(beta1, T + k));
  const double v_part = (1.0 - pow(beta2, T + k)) / (pow(beta2, k + 1.0) * (1.0 - pow(beta2, T - 1.0)));
  return m_part * sqrt(v_part);
}

// The large-T limit of C_{T,k}: (β1/√β2)^(k+1) (Eq. 33, 37).
GRPOKIT_HD double overshoot_limit(double k, double beta1, double beta2) {
  return pow(beta1 / sqrt(beta2), k + 1.0);
}

// Eq. 38: with ϵ not negligible, the exact per-coordinate ratio carries (√v̂_{T−1}+ϵ)/(√v̂_{T+k}+ϵ)
// in place of the ϵ-free √v̂_{T−1}/√v̂_{T+k}.
GRPOKIT_HD double overshoot_eps_factor(double sqrt_vhat_before, double sqrt_vhat_after, double eps) {
  return (sqrt_vhat_before + eps) / (sqrt_vhat_after + eps);
}

}  // namespace math
}  // namespace grpokit
