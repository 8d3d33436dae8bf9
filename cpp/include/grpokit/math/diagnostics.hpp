// Per-element formulas of the diagnostics (notes hidden_objective_biases.md §3–5), shared by every
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
GRPOKIT_HD double adam_rho(double v, double bc2, double eps) { return adam_rho_from_sqrt(sqrt(v / bc2), eps); }

// Elasticity of the step to a global reward scale φ at φ = 1: d log|Δθ| / d log φ = ρ/(1+ρ).
GRPOKIT_HD double reward_scale_elasticity(double rho) {
  return rho == INFINITY ? 1.0 : rho / (1.0 + rho);
}

// Preconditioned step u = m̂/(√v̂ + ϵ) of a state (m, v) at step t (bc1 = 1−β1^t, bc2 = 1−β2^t).
// With every past gradient scaled by φ > 0, the state is (φm, φ²v) and the step is
// φm̂/(φ√v̂ + ϵ) = u·(1+ρ)/(1+ρ/φ) (Prop. 6 + §4.3).
GRPOKIT_HD double adam_update_from_sqrt(double mhat, double sqrt_vhat, double eps, double phi) {
  return phi * mhat / (phi * sqrt_vhat + eps);
}
GRPOKIT_HD double adam_update(double m, double v, double bc1, double bc2, double eps, double phi) {
  return adam_update_from_sqrt(m / bc1, sqrt(v / bc2), eps, phi);
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
