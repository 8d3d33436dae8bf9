// Per-token formulas of the unified GRPO surrogate loss, shared by the CPU engine and the CUDA kernels.
//
// A method is a row of rules (LossSpec, declared in math/loss_spec.def). For one completion i and one
// of its valid tokens t the engine evaluates
//
//   φ_{i,t} = w_{i,t} · (−A_{i,t} · v(x)) + reg_{i,t}
//
// where x is the ratio (or log π for the log-prob surrogates), v the surrogate's branch value per unit
// advantage (min(r, clip r) for PPO, the soft gate for SAPO, sg(w)·log π for CISPO/GPG/...), w the
// layout-independent weight rule (masks, keep flags, token weights, IS weights), reg the regulariser
// (β·KL, GTPO's entropy term, DRO's quadratic, KL-Cov's penalty). The aggregation multiplies φ by a
// per-row coefficient c_i; the loss is Σ_i c_i Σ_t φ_{i,t} (loss = −J, to minimise).
//
// Gradients: every quantity depends on log π_{i,t} directly and/or through one per-row scalar u_i (the
// sequence log-ratio of GSPO/GCPO), so each function returns ∂/∂(direct) and ∂/∂u separately; the
// engine distributes Σ_t ∂φ/∂u_i over the row with ∂u_i/∂log π_{i,t} (1/L_i or 1).
//
// A kernel uses it as cpp/src/loss_engine.cpp does: per row, (A) u_i = row_log_ratio_scale(L_i) ·
// Σ_t row_log_ratio_term(...).v and the other row statistics; between rows, the aggregation
// coefficients c_i; per token, (B) TokenOut o = token_term(spec, in), grad = c_i·o.d_logp,
// ω = c_i·o.omega_direct, and per row Σ c_i·o.d_u (Σ c_i·o.omega_u), added to every valid token
// times row_log_ratio_term(...).d · row_log_ratio_scale(L_i) when row_log_ratio_has_grad(spec).
//
// Everything here is GRPOKIT_HD, allocation-free and templated on the compute type C (float or double).
#pragma once

#include <cmath>
#include <cstdint>

#include "grpokit/config.hpp"
#include "grpokit/math/loss_spec.hpp"

namespace grpokit {
namespace math {

#if !defined(GRPOKIT_DEVICE_COMPILE)
using std::ceil;
using std::exp;
using std::floor;
using std::log;
#endif

// The per-token term is large; GCC does not inline it on its own (measured ≈ 10 % slower as a call).
#if defined(GRPOKIT_DEVICE_COMPILE)
#define GRPOKIT_HD_HOT GRPOKIT_HD
#elif defined(__GNUC__)
#define GRPOKIT_HD_HOT __attribute__((always_inline)) inline
#else
#define GRPOKIT_HD_HOT inline
#endif

// ---- small helpers --------------------------------------------------------------------------

template <class C>
GRPOKIT_HD C clampv(C x, C lo, C hi) {
  return x < lo ? lo : (x > hi ? hi : x);
}

// The exp the formulas below call: the standard one unless a caller passes another policy E with a
// static E::exp (the CPU's vectorised row loops pass one over cpu::exp_vec, cpp/src/loss_fast.cpp).
template <class C>
GRPOKIT_HD C std_exp(C x) {
  return exp(x);
}
template <class C>
GRPOKIT_HD C std_log(C x) {
  return log(x);
}
struct StdExp {
  template <class C>
  GRPOKIT_HD static C exp(C x) {
    return std_exp(x);
  }
  template <class C>
  GRPOKIT_HD static C log(C x) {  // the log of the same policy (DPPO's binary KL)
    return std_log(x);
  }
};

template <class C, class E = StdExp>
GRPOKIT_HD C sigmoid(C x) {
  return C(1) / (C(1) + E::exp(-x));
}

// A value and its derivative with respect to one variable.
template <class C>
struct ValueGrad {
  C v;
  C d;
};

// exp of a log-ratio clamped to [−clamp, clamp] (torch.clamp semantics: zero gradient outside).
// Returns r and dr/dx.
template <class C, class E = StdExp>
GRPOKIT_HD ValueGrad<C> ratio_from_log(C x, C lo, C hi) {
  // x is inside [lo, hi] iff the clamp leaves it (NaN: neither, as (x >= lo) & (x <= hi)); one select
  // per quantity, no bool shared by two selects (GCC 12 merges those into byte-wide selects and the
  // CPU's row loops no longer vectorise)
  const C xc = clampv(x, lo, hi);
  const C r = E::exp(xc);
  return {r, xc == x ? r : C(0)};
}

// ---- surrogates -------------------------------------------------------------------------------

// Clip-family flags for metrics and for ω (the weight the diagnostics read).
struct ClipFlags {
  bool low;   // r < 1 − ε_low and A < 0 (the min's clipped branch binds on the low side)
  bool high;  // r > 1 + ε_high and A > 0
  bool dual;  // A < 0 and the dual-clip cap c binds (verl pg_clipfrac_lower)
  bool verl;  // −A·clip(r) > −A·r (verl pg_clipfrac; sign-aware, same as low ∨ high up to ties)
};

// PPO clip with TRL's two-sided δ and verl's dual-clip c (both +inf when off): the branch value v
// per unit advantage and dv/dr (0 where a clipped branch binds). φ = −A·v.
template <class C>
GRPOKIT_HD ValueGrad<C> clip_branch(C r, C A, C eps_low, C eps_high, C delta, C dual_c, ClipFlags* flags) {
  // Branch-free: selects and bitwise & / | on bools (short-circuit && / || are branches, which stop
  // the CPU vectoriser and diverge on the GPU).
  const C lo = C(1) - eps_low, hi = C(1) + eps_high;
  const C rc = clampv(r, lo, hi);
  const C rc_d = ((r >= lo) & (r <= hi)) ? C(1) : C(0);
  const C rt = r < delta ? r : delta;  // min(r, δ)
  const C rt_d = r <= delta ? C(1) : C(0);
  const bool pos = A > C(0), neg = A < C(0);
  // A > 0: min(r̃, clip r); A < 0: max(r̃, clip r), then capped at c; A = 0: r̃ (φ = 0 anyway)
  const bool take_rc = (pos & (rc < rt)) | (neg & (rc > rt));
  C v = take_rc ? rc : rt;
  C d = take_rc ? rc_d : rt_d;
  const bool capped = neg & (v > dual_c);
  v = capped ? dual_c : v;
  d = capped ? C(0) : d;
  if (flags) {
    flags->low = neg & (rt < lo);
    flags->high = pos & (rt > hi);
    flags->dual = capped;
    flags->verl = (pos & (r > hi)) | (neg & (r < lo));
  }
  return {v, d};
}

// clip_branch without δ and without the dual-clip cap, for an advantage that is constant over a row:
// the sign-dependent min/max folds into one interval, v = min(max(r, lo), hi) and dv/dr = [lo ≤ r ≤ hi]
// with (lo, hi) = (−∞, 1 + ε_high) for A > 0, (1 − ε_low, +∞) for A < 0 and (−∞, +∞) for A = 0.
// A token outside the interval is exactly clip_branch's `low` (A < 0) or `high` (A > 0) flag, and its
// `verl` flag. Same values, derivatives and flags as clip_branch, ties included (tested); two selects
// per token instead of eleven, which is what lets the CPU row loop run at memory speed.
template <class C>
struct ClipInterval {
  C lo, hi;
};
template <class C>
GRPOKIT_HD ClipInterval<C> clip_interval(C A, C eps_low, C eps_high) {
  const C inf = C(INFINITY);
  return {A < C(0) ? C(1) - eps_low : -inf, A > C(0) ? C(1) + eps_high : inf};
}

// SAPO's soft gate: v = (4/τ)·σ(τ(r − 1)), dv/dr = 4σ(1 − σ). τ = τ_pos for A > 0, τ_neg otherwise.
template <class C, class E = StdExp>
GRPOKIT_HD ValueGrad<C> sapo_gate(C r, C A, C tau_pos, C tau_neg) {
  const C tau = A > C(0) ? tau_pos : tau_neg;
  const C s = sigmoid<C, E>(tau * (r - C(1)));
  return {C(4) / tau * s, C(4) * s * (C(1) - s)};
}

// VESPO's detached Gamma weight of the sequence IS ratio W = exp(log_w):
// φ_γ = exp(λ + k·log W − λ·W), (k, λ) by the sign of A; non-finite → 0 (as TRL).
template <class C>
GRPOKIT_HD C vespo_weight(C log_w, C A, C k_pos, C lambda_pos, C k_neg, C lambda_neg) {
  const bool pos = A >= C(0);
  const C k = pos ? k_pos : k_neg;
  C lam = pos ? lambda_pos : lambda_neg;
  if (lam < C(1e-4)) lam = C(1e-4);
  const C phi = exp(lam + k * log_w - lam * exp(log_w));
  return (phi == phi && phi < C(INFINITY)) ? phi : C(0);
}

// verl DPPO trust-region tests (p = e^ℓ). Total variation: A > 0 keeps p − p_old ≤ ε_high,
// A ≤ 0 keeps p − p_old ≥ −ε_low. Binary KL b = p_old·(ℓ_old − ℓ) + (1 −
// p_old)·log((1−p_old+1e-8)/(1−p+1e-8)): A > 0 keeps b ≤ ε_high or p ≤ p_old; A ≤ 0 keeps b ≤ ε_low or p ≥
// p_old.
template <class C, class E = StdExp>
GRPOKIT_HD bool dppo_tv_valid(C logp, C old_logp, C A, C eps_low, C eps_high) {
  const C d = E::exp(logp) - E::exp(old_logp);
  const bool pos = A > C(0);
  return (pos & (d <= eps_high)) | (!pos & (d >= -eps_low));  // bools, not a select: vectorises
}
template <class C, class E = StdExp>
GRPOKIT_HD bool dppo_kl_valid(C logp, C old_logp, C A, C eps_low, C eps_high) {
  const C p = E::exp(logp), po = E::exp(old_logp);
  const C b = po * (old_logp - logp) + (C(1) - po) * E::log((C(1) - po + C(1e-8)) / (C(1) - p + C(1e-8)));
  const bool pos = A > C(0), npos = !pos;  // bools, not || and a select: vectorises
  return (pos & ((b <= eps_high) | (p <= po))) | (npos & ((b <= eps_low) | (p >= po)));
}

// Detached IS weight of the log-prob surrogates (everything but Vespo, which is per row).
template <class C, class E = StdExp>
GRPOKIT_HD C logp_weight(LogpWeight rule, C r, C logp, C old_logp, C A, C eps_low, C eps_high, C cap_c,
                         bool* clipped) {
  bool c = false;
  C w = C(1);
  switch (rule) {
    case LogpWeight::One:
      break;
    case LogpWeight::Ratio:
      w = r;
      break;
    case LogpWeight::Clip:
      w = clampv(r, C(1) - eps_low, C(1) + eps_high);
      c = w != r;
      break;
    case LogpWeight::Cap:
      w = r < eps_high ? r : eps_high;
      c = (r > eps_high) & (A > C(0));  // TRL cispo_clip_ratio
      break;
    case LogpWeight::DppoTv:
    case LogpWeight::DppoKl: {
      const bool ok = rule == LogpWeight::DppoTv ? dppo_tv_valid<C, E>(logp, old_logp, A, eps_low, eps_high)
                                                 : dppo_kl_valid<C, E>(logp, old_logp, A, eps_low, eps_high);
      w = ok ? (r < cap_c ? r : cap_c) : C(0);
      c = !ok;
      break;
    }
    case LogpWeight::Vespo:
      break;  // per-row weight, applied by the caller
    case LogpWeight::Topr: {  // ROLL: SFT on positive samples, the ratio clamped to [0, 1] on negatives
      const bool pos = A > C(0);
      w = pos ? C(1) : (r < C(1) ? r : C(1));
      c = !pos & (r > C(1));
      break;
    }
  }
  if (clipped) *clipped = c;
  return w;
}

// Whether a token's policy term is inside the spec's trust region (TrustRegion in math/loss_spec.def);
// r is the ratio the surrogate sees, the probabilities are per token.
template <class C, class E = StdExp>
GRPOKIT_HD bool in_trust_region(TrustRegion rule, C r, C logp, C old_logp, C A, C eps_low, C eps_high) {
  switch (rule) {
    case TrustRegion::None:
      break;
    case TrustRegion::Ppo:
      return !(((A > C(0)) & (r > C(1) + eps_high)) | ((A < C(0)) & (r < C(1) - eps_low)));
    case TrustRegion::DppoTv:
      return dppo_tv_valid<C, E>(logp, old_logp, A, eps_low, eps_high);
    case TrustRegion::Tv: {
      const C d = E::exp(logp) - E::exp(old_logp);
      return (d >= -eps_low) & (d <= eps_high);
    }
  }
  return true;
}

// GMPO's sign-aware clipped log-ratio: Δ̂ = sgn(A)·min(sgn(A)·Δ, sgn(A)·clamp(Δ, −ε_low, ε_high)),
// and dΔ̂/dΔ (1 where Δ itself is taken, 0 where the clamp binds).
template <class C>
GRPOKIT_HD ValueGrad<C> geo_mean_log_ratio(C delta, C A, C eps_low, C eps_high) {
  const C sgn = A > C(0) ? C(1) : (A < C(0) ? C(-1) : C(0));
  const C dc = clampv(delta, -eps_low, eps_high);
  if (sgn * delta <= sgn * dc) return {delta, C(1)};
  return {dc, (delta >= -eps_low && delta <= eps_high) ? C(1) : C(0)};
}

// ---- regularisers -----------------------------------------------------------------------------

// KL(π‖π_ref) estimators of the per-token value at log π = logp, with the gradient in logp.
// For k3, x = ℓ_ref − ℓ is clamped to [−log_clamp, log_clamp] and the value to [−value_clamp,
// value_clamp] (verl: 20 and 10; TRL: none, pass +inf); clamps have zero gradient where they bind.
// straight_through ≠ 0 (verl's "+" suffix): the value of `est`, the gradient of k2. (A number, not a
// bool: a loop-invariant bool select stops GCC 12 vectorising the CPU's row loops.)
template <class C, class E = StdExp>
GRPOKIT_HD ValueGrad<C> kl_estimate(KlEstimator est, C logp, C ref_logp, C log_clamp, C value_clamp,
                                    C straight_through) {
  // verl clamps only its k3 ("low_var_kl"); the other estimators are unclamped everywhere. (Selects on
  // `clamped` rather than infinite bounds: with a constant ±inf bound GCC turns the clamp into
  // branches, and the CPU's row loops no longer vectorise.)
  const bool clamped = est == KlEstimator::K3;
  const C x_raw = ref_logp - logp;
  const bool x_free = !clamped || ((x_raw >= -log_clamp) & (x_raw <= log_clamp));
  const C x = clamped ? clampv(x_raw, -log_clamp, log_clamp) : x_raw;
  const C dx = x_free ? C(-1) : C(0);  // dx/dℓ
  // scalars, not a ValueGrad assigned per case: GCC 12 keeps such a struct in memory, and the CPU's
  // row loops then do not vectorise
  C kv = C(0), kd = C(0);
  switch (est) {
    case KlEstimator::None:
      return {C(0), C(0)};
    case KlEstimator::K1:  // ℓ − ℓ_ref
      kv = -x;
      kd = -dx;
      break;
    case KlEstimator::K2:  // ½(ℓ − ℓ_ref)²
      kv = C(0.5) * x * x;
      kd = x * dx;
      break;
    case KlEstimator::K3: {  // e^x − x − 1
      const C e = E::exp(x);
      kv = e - x - C(1);
      kd = (e - C(1)) * dx;
      break;
    }
    case KlEstimator::Abs:
      kv = x < C(0) ? -x : x;
      kd = (x < C(0) ? C(-1) : C(1)) * dx;
      break;
  }
  // selects, not branches: the CPU's row loops vectorise this
  const bool v_free = !clamped || ((kv >= -value_clamp) & (kv <= value_clamp));
  const C d = v_free ? kd : C(0);
  const C v = v_free ? kv : clampv(kv, -value_clamp, value_clamp);
  return {v, straight_through != C(0) ? (logp - ref_logp) : d};  // ∂/∂ℓ of ½(ℓ − ℓ_ref)², unclamped
}

// VAPO's positive-example NLL on one selected token: k·(−ℓ) and its ∂/∂ℓ, k = the call's coefficient
// (nll_coefficient, math/loss_passes.hpp). Outside φ and the aggregation, as the entropy bonus.
template <class C>
GRPOKIT_HD ValueGrad<C> positive_nll(C logp, C k) {
  return {-k * logp, -k};
}

// ---- sampler (train–inference) importance weights (TRL's vLLM IS correction) --------------------

// ρ = exp(log_rho) truncated to [lo, hi] or zeroed outside it (a missing bound is ±inf).
template <class C, class E = StdExp>
GRPOKIT_HD C sampler_is_weight(C log_rho, bool truncate, C lo, C hi) {
  const C rho = E::exp(log_rho);
  if (truncate) return clampv(rho, lo, hi);
  return ((rho < lo) | (rho > hi)) ? C(0) : rho;  // bools, not ||: the CPU's row loops vectorise this
}

// torch.quantile's linear interpolation between order statistics a ≤ b at fraction f.
template <class C>
GRPOKIT_HD C lerp(C a, C b, C f) {
  return a + (b - a) * f;
}

// torch.quantile(x, q) (linear interpolation) of n values: lerp(x_(lo), x_(hi), frac) of the lo-th and
// hi-th smallest (0-based), lo = ⌊q(n−1)⌋, hi = ⌈q(n−1)⌉. TRL's top-entropy masking keeps H ≥ this at
// q = 1 − top_entropy_quantile; the CPU engine selects by nth_element, the CUDA kernels by radix select.
struct QuantilePosition {
  int64_t lo, hi;
  double frac;
};
GRPOKIT_HD QuantilePosition quantile_position(double q, int64_t n) {
  const double pos = q * static_cast<double>(n - 1);
  const double lo = floor(pos);
  return {static_cast<int64_t>(lo), static_cast<int64_t>(ceil(pos)), pos - lo};
}

// ---- the rule row -------------------------------------------------------------------------------

// ---- per-row sequence log-ratio u_i -----------------------------------------------------------------

// Whether the rule needs the per-row u_i (and a second pass distributing ∂/∂u_i over the row).
GRPOKIT_HD bool uses_row_log_ratio(const LossSpec& s) {
  return s.ratio != RatioLevel::Token || s.surrogate == Surrogate::GeoMean;
}
GRPOKIT_HD bool row_log_ratio_has_grad(const LossSpec& s) {
  return s.surrogate == Surrogate::GeoMean ||
         (s.surrogate != Surrogate::Logp &&
          (s.ratio == RatioLevel::Sequence || s.ratio == RatioLevel::SequenceSum)) ||
         (s.kl_is_corrected && (s.ratio == RatioLevel::Sequence || s.ratio == RatioLevel::SequenceSum));
}

// One valid token's contribution to Σ_t of the row's log-ratio, and its derivative in ℓ_t.
// u_i = (Σ_t contribution) · row_log_ratio_scale(L_i).
template <class C>
GRPOKIT_HD ValueGrad<C> row_log_ratio_term(const LossSpec& s, C logp, C old_logp, C A) {
  const C d = logp - old_logp;
  if (s.surrogate == Surrogate::GeoMean) return geo_mean_log_ratio(d, A, C(s.epsilon_low), C(s.epsilon_high));
  return {d, C(1)};
}
template <class C>
GRPOKIT_HD C row_log_ratio_scale(const LossSpec& s, int64_t L) {
  if (s.surrogate != Surrogate::GeoMean && s.ratio == RatioLevel::SequenceSum) return C(1);
  return C(1) / C(L > 1 ? L : 1);
}

// ---- the per-token term -----------------------------------------------------------------------------

template <class C>
struct TokenIn {
  C logp, old_logp, adv;  // adv: A_{i,t} (GMPO: the row mean Ā_i)
  C ref_logp;             // used when beta != 0 and kl != None
  C token_weight;         // λ_{i,t} (1 when not given)
  C keep;                 // δ_i (1 when not given)
  C w;                    // weight rule product: δ·λ·CPPO·OPSM·entropy mask·sampler IS
  C u;                    // the row's log-ratio u_i (see uses_row_log_ratio)
  C hbar;                 // the row's mean entropy ⟨H⟩_i (GTPO)
  C row_w_is;             // per-row detached weight (VESPO's φ_γ)
  bool selected;          // in the caller's selection (Clip-Cov / KL-Cov)
};

template <class C>
struct TokenOut {
  C phi;                   // per-token loss φ_{i,t}
  C d_logp;                // ∂φ/∂ℓ_t (direct)
  C d_u;                   // ∂φ/∂u_i
  C d_hbar;                // ∂φ/∂⟨H⟩_i
  C omega_direct, omega_u; // ω per unit advantage before the aggregation coefficient (direct, via u)
  C ratio;                 // the ratio the surrogate saw (metrics)
  C kl;                    // KL term value without β (metrics; IS-corrected when configured)
  ClipFlags flags;
  bool weight_clipped;     // CISPO cap / clip, DPPO invalid
};

template <class C>
GRPOKIT_HD_HOT TokenOut<C> token_term(const LossSpec& s, const TokenIn<C>& in) {
  TokenOut<C> o{};
  const C A = in.adv;
  const C delta = in.logp - in.old_logp;

  // the ratio and where its gradient flows
  ValueGrad<C> r{C(1), C(0)};
  C dr_direct = C(0), dr_u = C(0);
  if (s.surrogate == Surrogate::GeoMean) {
    r = {exp(in.u), exp(in.u)};
    dr_u = r.d;
  } else if (s.ratio == RatioLevel::Token) {
    r = ratio_from_log(delta, C(s.log_ratio_min), C(s.log_ratio_max));
    dr_direct = r.d;
  } else if (s.ratio == RatioLevel::SequenceToken) {  // value s_i, gradient s_i·∇ℓ_t
    r = ratio_from_log(in.u, C(s.log_ratio_min), C(s.log_ratio_max));
    dr_direct = r.d;
  } else {
    r = ratio_from_log(in.u, C(s.log_ratio_min), C(s.log_ratio_max));
    dr_u = r.d;
  }
  o.ratio = r.v;

  // the surrogate: φ_pg = −A·v(x)
  C v, dv, dx_direct = dr_direct, dx_u = dr_u;
  switch (s.surrogate) {
    case Surrogate::Clip: {
      const ValueGrad<C> b =
          clip_branch(r.v, A, C(s.epsilon_low), C(s.epsilon_high), C(s.delta), C(s.clip_ratio_c), &o.flags);
      v = b.v;
      dv = b.d;
      break;
    }
    case Surrogate::Sapo: {
      const ValueGrad<C> g = sapo_gate(r.v, A, C(s.sapo_temperature_pos), C(s.sapo_temperature_neg));
      v = g.v;
      dv = g.d;
      break;
    }
    case Surrogate::Logp: {
      const C w_is = s.logp_weight == LogpWeight::Vespo
                         ? in.row_w_is
                         : logp_weight(s.logp_weight, r.v, in.logp, in.old_logp, A, C(s.epsilon_low),
                                       C(s.epsilon_high), C(s.clip_ratio_c), &o.weight_clipped);
      v = w_is * in.logp;
      dv = w_is;
      dx_direct = C(1);
      dx_u = C(0);
      break;
    }
    case Surrogate::Unclipped:
    case Surrogate::GeoMean:
    default:
      v = r.v;
      dv = C(1);
      break;
  }
  const bool region =
      in_trust_region(s.trust_region, r.v, in.logp, in.old_logp, A, C(s.epsilon_low), C(s.epsilon_high));
  o.weight_clipped = o.weight_clipped | !region;
  const C w = ((s.selection == Selection::ClipCov && in.selected) || !region) ? C(0) : in.w;
  o.phi = w * (-A * v);
  o.d_logp = w * (-A) * dv * dx_direct;
  o.d_u = w * (-A) * dv * dx_u;
  o.omega_direct = w * dv * dx_direct;
  o.omega_u = w * dv * dx_u;

  // regularisers (not multiplied by the weight rule: TRL adds β·KL after the masks and IS weights)
  if (s.kl != KlEstimator::None && s.beta != 0.0) {
    const ValueGrad<C> k = kl_estimate(s.kl, in.logp, in.ref_logp, C(s.kl_log_clamp), C(s.kl_value_clamp),
                                       C(s.kl_straight_through ? 1 : 0));
    C kv = k.v, kd = k.d, ku = C(0);
    if (s.kl_is_corrected) {  // k·r, r differentiable (DeepSeek-V3.2's unbiased KL)
      kv = k.v * r.v;
      kd = k.d * r.v + k.v * dr_direct;
      ku = k.v * dr_u;
    }
    o.kl = kv;
    o.phi += C(s.beta) * kv;
    o.d_logp += C(s.beta) * kd;
    o.d_u += C(s.beta) * ku;
  }
  if (s.gtpo_entropy && s.beta != 0.0) {  // GTPO: β·δ_i·⟨H⟩_i·I·λ with the token ratio I
    const C I = exp(delta);
    const C k = C(s.beta) * in.keep * in.token_weight;
    o.phi += k * in.hbar * I;
    o.d_logp += k * in.hbar * I;
    o.d_hbar = k * I;
  }
  if (s.selection == Selection::KlCov && in.selected) {  // KL-Cov: + κ|ℓ − ℓ_old|
    o.phi += C(s.ppo_kl_coef) * (delta < C(0) ? -delta : delta);
    o.d_logp += C(s.ppo_kl_coef) * (delta < C(0) ? C(-1) : (delta > C(0) ? C(1) : C(0)));
  }
  if (s.dro_beta != 0.0) {  // DRO: + ½β(ℓ − ℓ_old)²
    o.phi += C(0.5) * C(s.dro_beta) * delta * delta;
    o.d_logp += C(s.dro_beta) * delta;
  }
  return o;
}

}  // namespace math
}  // namespace grpokit
