// CPU engine of the unified surrogate loss: argument checks, per-row passes, deterministic reductions.
//
// Two parallel passes over rows. Pass A reads each row once for its statistics (valid count L_i, the
// sequence log-ratio u_i, OPSM divergence, sampler IS log-weight, mean entropy, ...). Between the
// passes, the global quantities (token counts, the entropy quantile, aggregation coefficients) are
// formed serially. Pass B evaluates math::token_term per token, writes the per-token outputs, and
// distributes the row-level derivatives (∂/∂u_i, ∂/∂⟨H⟩_i) over the row. Every per-row result lives
// in its own slot and is reduced in row order afterwards: the same bits for any thread count.
#include "grpokit/loss.hpp"
#include "grpokit/loss_metrics.hpp"
#include "grpokit/math/loss_passes.hpp"
#include "cpu_kernels.hpp"
#include "loss_simd.hpp"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <functional>
#include <map>
#include <type_traits>
#include <sstream>
#include <vector>

#ifdef GRPOKIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace grpokit {
namespace {

constexpr double kInf = INFINITY;

// ---- row addressing ------------------------------------------------------------------------------

struct Layout {
  bool packed = false;
  int64_t B = 0, T = 0;
  std::vector<int64_t> cu;  // packed: B+1 offsets
  int64_t len(int64_t i) const { return packed ? cu[i + 1] - cu[i] : T; }
};

// One row of a per-token array (or a per-row scalar broadcast with step 0).
template <class V>
struct Row {
  const V* p = nullptr;
  int64_t step = 0;
  V operator[](int64_t t) const { return p[t * step]; }
  explicit operator bool() const { return p != nullptr; }
};

// per_row: a (B,) array broadcast over the row (advantages per completion).
template <class V>
Row<V> row_of(const TensorView& v, const Layout& L, int64_t i, bool per_row = false) {
  Row<V> r;
  if (!v.defined()) return r;
  const V* base = v.ptr<const V>();
  if (per_row) {
    r.p = base + i * v.strides[0];
  } else if (L.packed) {
    r.p = base + L.cu[i] * v.strides[0];
    r.step = v.strides[0];
  } else {
    r.p = base + i * v.strides[0];
    r.step = v.strides[1];
  }
  return r;
}

template <class V>
struct WRow {
  V* p = nullptr;
  int64_t step = 0;
  V& operator[](int64_t t) const { return p[t * step]; }
  explicit operator bool() const { return p != nullptr; }
};

template <class V>
WRow<V> wrow_of(const TensorView& v, const Layout& L, int64_t i) {
  WRow<V> r;
  if (!v.defined()) return r;
  V* base = v.ptr<V>();
  if (L.packed) {
    r.p = base + L.cu[i] * v.strides[0];
    r.step = v.strides[0];
  } else {
    r.p = base + i * v.strides[0];
    r.step = v.strides[1];
  }
  return r;
}

// A mask or flag array of any accepted dtype, read as "nonzero = valid".
struct FlagRow {
  const char* p = nullptr;
  DType dt = DType::Bool;
  int64_t step = 0, esize = 1;
  bool operator[](int64_t t) const {
    if (!p) return true;
    const char* q = p + t * step * esize;
    switch (dt) {
      case DType::Bool:
      case DType::UInt8:
      case DType::Int8: return *q != 0;
      case DType::Int32: return *reinterpret_cast<const int32_t*>(q) != 0;
      case DType::Int64: return *reinterpret_cast<const int64_t*>(q) != 0;
      case DType::Float32: return *reinterpret_cast<const float*>(q) != 0.0f;
      case DType::Float64: return *reinterpret_cast<const double*>(q) != 0.0;
      default: return true;
    }
  }
};

FlagRow flag_row_of(const TensorView& v, const Layout& L, int64_t i) {
  FlagRow f;
  if (!v.defined()) return f;
  f.dt = v.dtype;
  f.esize = dtype_size(v.dtype);
  const char* base = static_cast<const char*>(v.data);
  if (L.packed) {
    f.p = base + L.cu[i] * v.strides[0] * f.esize;
    f.step = v.strides[0];
  } else {
    f.p = base + i * v.strides[0] * f.esize;
    f.step = v.strides[1];
  }
  return f;
}

bool flag_at_row(const TensorView& v, int64_t i) {  // (B,) flags
  if (!v.defined()) return true;
  FlagRow f;
  f.dt = v.dtype;
  f.esize = dtype_size(v.dtype);
  f.p = static_cast<const char*>(v.data) + i * v.strides[0] * f.esize;
  return f[0];
}

// ---- per-row state -------------------------------------------------------------------------------

struct RowStats {
  int64_t L = 0;         // valid tokens
  double u = 0.0;        // sequence log-ratio
  double hbar = 0.0;     // mean entropy
  double abar = 0.0;     // mean advantage (GMPO)
  double sum_is_log = 0.0;     // Σ (ℓ_old − ℓ_smp) (sequence sampler IS)
  double opsm_div = 0.0;       // mean (ℓ_smp − ℓ) (OPSM)
  double vespo_logw = 0.0;     // Σ clamp(Δ, ±20) [+ Σ clamp(log ρ_t)]
  double n_ent_kept = 0.0;     // Σ m·entropy mask
  double c = 0.0;              // aggregation coefficient
};

struct RowAcc {
  double loss = 0.0;      // c_i Σ_t φ
  double ent_bonus = 0.0; // Σ_t cH·m′·H
  // metric sums (token counts or per-row indicators)
  double n = 0.0, low = 0.0, high = 0.0, region = 0.0, verl = 0.0, dual = 0.0, wclip = 0.0;
  double ratio_sum = 0.0, ratio_min = kInf, ratio_max = -kInf;
  double kl = 0.0, ppo_kl = 0.0, ent = 0.0;
  double is_sum = 0.0, is_min = kInf, is_max = -kInf, n_is = 0.0;
  double vespo_phi = 0.0;
  double low_row = NAN, high_row = NAN;  // per-completion clip means (NaN for an empty row)
  // first bad value
  int64_t err_pos = -1;
  const char* err_name = nullptr;
  double err_value = 0.0;
};

using namespace loss_metrics;

std::vector<int> metric_ids(const LossSpec& s, const LossInputs& in) {
  std::vector<int> ids;
  if (s.surrogate == Surrogate::Clip) {
    for (int k : {kClipLowMean, kClipHighMean, kClipRegionMean, kClipLowMin, kClipHighMax, kPgClipfrac})
      ids.push_back(k);
    if (std::isfinite(s.clip_ratio_c)) ids.push_back(kPgClipfracLower);
  }
  if (s.surrogate == Surrogate::Logp) {
    if (s.logp_weight == LogpWeight::Cap) ids.push_back(kCispoClipRatio);
    if (s.logp_weight == LogpWeight::Clip || s.logp_weight == LogpWeight::DppoTv ||
        s.logp_weight == LogpWeight::DppoKl)
      ids.push_back(kWeightClipfrac);  // verl's pg_clipfrac of CISPO (r ≠ clip r) and DPPO (invalid)
    if (s.logp_weight == LogpWeight::Vespo) ids.push_back(kVespoPhi);
  }
  for (int k : {kRatioMin, kRatioMean, kRatioMax, kPpoKl}) ids.push_back(k);
  if (s.kl != KlEstimator::None && s.beta != 0.0) ids.push_back(kKl);
  if (in.entropies.defined()) ids.push_back(kEntropy);
  if (s.sampler_is != SamplerIs::None && in.sampling_logp.defined())
    for (int k : {kIsMin, kIsMean, kIsMax}) ids.push_back(k);
  return ids;
}

bool per_row_ratio(const LossSpec& s) {  // one ratio per sequence: metrics count sequences (TRL)
  return s.surrogate == Surrogate::GeoMean || s.ratio == RatioLevel::Sequence ||
         s.ratio == RatioLevel::SequenceSum;
}

// ---- the fast path --------------------------------------------------------------------------------
//
// The common training configuration — token ratio, one advantage per row, no per-token extras
// (reference KL, entropies, sampler IS, masks beyond the token mask), unit-stride rows, no per-token
// or weight outputs — runs the same math (clip_branch, sapo_gate, logp_weight) in a loop the
// compiler vectorises: the exp is exp_vec, validity is a select, row sums are SIMD reductions.
// Bitwise results still do not depend on the thread count (each row is one thread's loop).

bool fast_path_applies(const LossSpec& s, const LossInputs& in, const LossOutputs& out, bool adv_row) {
  if (s.ratio != RatioLevel::Token || !adv_row) return false;
  if (s.surrogate == Surrogate::GeoMean) return false;
  if (s.surrogate == Surrogate::Logp && s.logp_weight != LogpWeight::One && s.logp_weight != LogpWeight::Ratio &&
      s.logp_weight != LogpWeight::Clip && s.logp_weight != LogpWeight::Cap)
    return false;
  if ((s.kl != KlEstimator::None && s.beta != 0.0) || s.dro_beta != 0.0 || s.selection != Selection::None)
    return false;
  if (!std::isnan(s.off_policy_mask_threshold) || s.prune_threshold > -kInf) return false;
  if (in.entropies.defined() || in.sampling_logp.defined() || in.keep.defined() || in.token_weights.defined() ||
      in.selection.defined() || in.cu_seqlens.defined())
    return false;
  if (out.per_token.defined() || out.weights.defined() || out.grad_entropy.defined()) return false;
  auto unit = [](const TensorView& v) { return !v.defined() || v.strides[v.ndim - 1] == 1; };
  if (!unit(in.logp) || !unit(in.old_logp) || !unit(in.mask) || !unit(out.grad_logp)) return false;
  return !in.mask.defined() || in.mask.dtype == DType::Bool || in.mask.dtype == DType::UInt8;
}

// The first valid position whose logp or old_logp is not finite (the fast loops only detect that one exists).
template <class C>
void first_bad_position(const C* lp, const C* old, const uint8_t* m, bool masked, int64_t len, RowAcc& a) {
  for (int64_t t = 0; t < len; ++t) {
    if (masked && m[t] == 0) continue;
    const C l = lp[t], o = old[t];
    if (!std::isfinite(l) || !std::isfinite(o)) {
      a.err_pos = t;
      a.err_name = std::isfinite(l) ? "old_logp" : "logp";
      a.err_value = static_cast<double>(std::isfinite(l) ? o : l);
      return;
    }
  }
}

// The interval form of the clip (math::clip_interval: no δ, no dual-clip cap, A constant over the
// row), the configuration of TRL's grpo/dapo/dr_grpo/bnpo and verl's vanilla without dual-clip. Seven
// row sums instead of twelve: the valid-token count comes from pass A, φ = −A·v sums as −A·Σv, and a
// token outside the interval is the low (A < 0) or high (A > 0) and pg_clipfrac flag at once.
// float32 on AVX-512 CPUs runs cpu::interval_row_avx512 (loss_simd.hpp) instead of this loop.
template <class C, bool MASKED>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
__attribute__((noinline))
#endif
cpu::IntervalRowSums interval_row(const C* lp, const C* old, const uint8_t* m, int64_t len, C lo, C hi, C vlo,
                                  C vhi, C cA, C* g) {
  C sum_v = 0, ratio_sum = 0, ppo_kl = 0, outside = 0;
  C rmin = C(INFINITY), rmax = -C(INFINITY);
#pragma omp simd reduction(+ : sum_v, ratio_sum, ppo_kl, outside) reduction(min : rmin) reduction(max : rmax)
  for (int64_t t = 0; t < len; ++t) {
    bool ok = true;
    if constexpr (MASKED) ok = m[t] != 0;
    const C l = lp[t], o = old[t];
    const C d = ok ? l - o : C(0);
    const bool inside = (d >= lo) & (d <= hi);
    const C r = math::exp_vec(inside ? d : (d < lo ? lo : hi));
    const C rv = r < vlo ? vlo : r;
    const C v = rv > vhi ? vhi : rv;
    const C dv = (r >= vlo) & (r <= vhi) ? C(1) : C(0);
    const C dr = inside ? r : C(0);
    g[t] = ok ? cA * dv * dr : C(0);
    sum_v += ok ? v : C(0);
    outside += ok ? C(1) - dv : C(0);
    ratio_sum += ok ? r : C(0);
    const C r_lo = ok ? r : C(INFINITY), r_hi = ok ? r : -C(INFINITY);
    rmin = r_lo < rmin ? r_lo : rmin;
    rmax = r_hi > rmax ? r_hi : rmax;
    ppo_kl -= d;  // a non-finite d (so every non-finite ℓ or ℓ_old) makes the sum so
  }
  cpu::IntervalRowSums out;
  out.sum_v = sum_v;
  out.ratio_sum = ratio_sum;
  out.ppo_kl = ppo_kl;
  out.rmin = rmin;
  out.rmax = rmax;
  out.outside = static_cast<int64_t>(outside);
  out.bad = !std::isfinite(ppo_kl);
  return out;
}

template <class C, bool MASKED>
void fast_row_interval(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, C c, int64_t len,
                       int64_t n_valid, C* g, RowAcc& a) {
  const C lo = static_cast<C>(s.log_ratio_min), hi = static_cast<C>(s.log_ratio_max);
  const math::ClipInterval<C> iv =
      math::clip_interval(A, static_cast<C>(s.epsilon_low), static_cast<C>(s.epsilon_high));
  const C cA = c * (-A);
  cpu::IntervalRowSums sums;
#ifdef GRPOKIT_CPU_DISPATCH
  if constexpr (std::is_same_v<C, float>) {
    const bool log_clamp = std::isfinite(lo) || std::isfinite(hi);
    if (cpu::has_avx512())
      sums = log_clamp ? cpu::interval_row_avx512<true>(lp, old, m, len, lo, hi, iv.lo, iv.hi, cA, g)
                       : cpu::interval_row_avx512<false>(lp, old, m, len, lo, hi, iv.lo, iv.hi, cA, g);
    else
      sums = interval_row<C, MASKED>(lp, old, m, len, lo, hi, iv.lo, iv.hi, cA, g);
  } else
#endif
  {
    sums = interval_row<C, MASKED>(lp, old, m, len, lo, hi, iv.lo, iv.hi, cA, g);
  }
  const double nn = static_cast<double>(n_valid);
  const double outside = static_cast<double>(sums.outside);
  const double low = A < C(0) ? outside : 0.0, high = A > C(0) ? outside : 0.0;
  a.loss = static_cast<double>(c) * -static_cast<double>(A) * sums.sum_v;
  a.n = nn;
  a.low = low;
  a.high = high;
  a.region = low + high;
  a.verl = low + high;
  a.ratio_sum = sums.ratio_sum;
  a.ratio_min = nn > 0 ? sums.rmin : kInf;
  a.ratio_max = nn > 0 ? sums.rmax : -kInf;
  a.ppo_kl = sums.ppo_kl;
  if (nn > 0) {
    a.low_row = low / nn;
    a.high_row = high / nn;
  }
  if (sums.bad) first_bad_position(lp, old, m, MASKED, len, a);
}

// GCC needs two things to vectorise these loops: the function out of line (inlined into the OpenMP
// region it is not vectorised) and -fno-trapping-math on this file (CMakeLists.txt; GCC's default
// -ftrapping-math keeps it from if-converting float comparisons; grpokit never relies on FP traps).
// Each is cloned for AVX-512 and AVX2 (GRPOKIT_CPU_CLONES, picked when the library loads): at SSE
// width the twelve row sums spill registers (measured 5.2 → 1.3 ns/token with AVX-512 at 64×2048).
template <class C, Surrogate SUR, bool MASKED>
GRPOKIT_CPU_CLONES
#if defined(__GNUC__)
__attribute__((noinline))
#endif
void fast_row(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, C c, int64_t len, C* g,
              RowAcc& a) {
  const C lo = static_cast<C>(s.log_ratio_min), hi = static_cast<C>(s.log_ratio_max);
  const C el = static_cast<C>(s.epsilon_low), eh = static_cast<C>(s.epsilon_high);
  const C delta = static_cast<C>(s.delta), dual_c = static_cast<C>(s.clip_ratio_c);
  const C tp = static_cast<C>(s.sapo_temperature_pos), tn = static_cast<C>(s.sapo_temperature_neg);
  const LogpWeight lw = s.logp_weight;
  // Every lane quantity is of type C (flags as 0/1 values): mixed widths stop the vectoriser.
  // Row sums are accumulated in C per lane; a row is at most a few 10^4 tokens.
  C sum_phi = 0, ratio_sum = 0, ppo_kl = 0, n = 0, low = 0, high = 0, verl = 0, dual = 0, wclip = 0, bad = 0;
  C rmin = C(INFINITY), rmax = -C(INFINITY);
#pragma omp simd reduction(+ : sum_phi, ratio_sum, ppo_kl, n, low, high, verl, dual, wclip, bad) \
    reduction(min : rmin) reduction(max : rmax)
  for (int64_t t = 0; t < len; ++t) {
    // Loads are unconditional (conditional loads stop the vectoriser); values are then selected,
    // never multiplied by the mask (padding may hold NaN).
    bool ok = true;
    if constexpr (MASKED) ok = m[t] != 0;
    const C l = lp[t], o = old[t];
    const C d = ok ? l - o : C(0);
    bad += (ok & !((d - d == C(0)) & (l - l == C(0)))) ? C(1) : C(0);
    const bool inside = (d >= lo) & (d <= hi);
    const C r = math::exp_vec(inside ? d : (d < lo ? lo : hi));
    const C dr = inside ? r : C(0);
    C v, dv, dx = dr;
    C f_low = 0, f_high = 0, f_verl = 0, f_dual = 0, wc = 0;
    if constexpr (SUR == Surrogate::Clip) {
      math::ClipFlags f;
      const math::ValueGrad<C> b = math::clip_branch(r, A, el, eh, delta, dual_c, &f);
      v = b.v;
      dv = b.d;
      f_low = f.low ? C(1) : C(0);
      f_high = f.high ? C(1) : C(0);
      f_verl = f.verl ? C(1) : C(0);
      f_dual = f.dual ? C(1) : C(0);
    } else if constexpr (SUR == Surrogate::Sapo) {
      const math::ValueGrad<C> b = math::sapo_gate(r, A, tp, tn);
      v = b.v;
      dv = b.d;
    } else if constexpr (SUR == Surrogate::Logp) {
      bool clipped = false;
      const C w = math::logp_weight(lw, r, l, l, A, el, eh, C(INFINITY), &clipped);
      v = w * l;
      dv = w;
      dx = C(1);
      wc = clipped ? C(1) : C(0);
    } else {
      v = r;
      dv = C(1);
    }
    g[t] = ok ? c * (-A) * dv * dx : C(0);
    sum_phi += ok ? -A * v : C(0);
    // (`x += ok ? 1 : 0` rather than a 0/1 variable: GCC 12 then recognises the reductions)
    n += ok ? C(1) : C(0);
    low += ok ? f_low : C(0);
    high += ok ? f_high : C(0);
    verl += ok ? f_verl : C(0);
    dual += ok ? f_dual : C(0);
    wclip += ok ? wc : C(0);
    ratio_sum += ok ? r : C(0);
    const C r_lo = ok ? r : C(INFINITY), r_hi = ok ? r : -C(INFINITY);  // plain min/max: vectorisable
    rmin = r_lo < rmin ? r_lo : rmin;
    rmax = r_hi > rmax ? r_hi : rmax;
    ppo_kl -= d;  // d = 0 at padding
  }
  const double nn = static_cast<double>(n);
  a.loss = static_cast<double>(c) * static_cast<double>(sum_phi);
  a.n = nn;
  a.low = low;
  a.high = high;
  a.region = static_cast<double>(low) + static_cast<double>(high);
  a.verl = verl;
  a.dual = dual;
  a.wclip = wclip;
  a.ratio_sum = ratio_sum;
  a.ratio_min = nn > 0 ? static_cast<double>(rmin) : kInf;
  a.ratio_max = nn > 0 ? static_cast<double>(rmax) : -kInf;
  a.ppo_kl = ppo_kl;
  if (nn > 0) {
    a.low_row = static_cast<double>(low) / nn;
    a.high_row = static_cast<double>(high) / nn;
  }
  if (bad != C(0)) first_bad_position(lp, old, m, MASKED, len, a);
}

template <class C, bool MASKED>
void fast_row_dispatch(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, C c, int64_t len,
                       int64_t n_valid, C* g, RowAcc& a) {
  switch (s.surrogate) {
    case Surrogate::Clip:
      if (s.delta == kInf && s.clip_ratio_c == kInf)  // neither δ nor the dual-clip cap
        fast_row_interval<C, MASKED>(s, lp, old, m, A, c, len, n_valid, g, a);
      else
        fast_row<C, Surrogate::Clip, MASKED>(s, lp, old, m, A, c, len, g, a);
      break;
    case Surrogate::Sapo: fast_row<C, Surrogate::Sapo, MASKED>(s, lp, old, m, A, c, len, g, a); break;
    case Surrogate::Logp: fast_row<C, Surrogate::Logp, MASKED>(s, lp, old, m, A, c, len, g, a); break;
    default: fast_row<C, Surrogate::Unclipped, MASKED>(s, lp, old, m, A, c, len, g, a); break;
  }
}

// ---- the engine ----------------------------------------------------------------------------------

template <class T>
void run(const LossSpec& s, const LossInputs& in, const LossOutputs& out, const Layout& L,
         int num_threads) {
  using C = T;  // compute type: float for float32 inputs (as TRL's fp32 math), double for float64
  const int64_t B = L.B;
  const bool has_old = in.old_logp.defined();
  const bool has_ent = in.entropies.defined();
  const bool has_smp = in.sampling_logp.defined();
  // what the call needs (the same flags the CUDA kernels derive: math/loss_passes.hpp)
  const math::PassFlags pf =
      math::pass_flags(s, has_old, has_ent, has_smp, in.ref_logp.defined(), in.token_weights.defined());
  const bool use_is = pf.use_is, opsm = pf.opsm, gmpo = pf.gmpo, vespo = pf.vespo, need_u = pf.need_u;
  const bool u_grad = pf.u_grad, gtpo_h = pf.gtpo_h;
  const bool has_quantile = s.top_entropy_quantile < 1.0;
  const bool adv_row = in.advantages.ndim == 1 && (!L.packed || in.advantages.shape[0] != in.logp.shape[0]);

  // Top-entropy threshold over every valid token of the call (TRL: torch.quantile, linear).
  double h_threshold = -kInf;
  if (has_quantile) {
    std::vector<double> hs;
    for (int64_t i = 0; i < B; ++i) {
      const FlagRow m = flag_row_of(in.mask, L, i);
      const Row<T> h = row_of<T>(in.entropies, L, i);
      for (int64_t t = 0, n = L.len(i); t < n; ++t)
        if (m[t]) hs.push_back(static_cast<double>(h[t]));
    }
    if (!hs.empty()) {
      const math::QuantilePosition qp =
          math::quantile_position(1.0 - s.top_entropy_quantile, static_cast<int64_t>(hs.size()));
      std::nth_element(hs.begin(), hs.begin() + qp.lo, hs.end());
      const double a = hs[qp.lo];
      const double b = qp.hi == qp.lo ? a : *std::min_element(hs.begin() + qp.lo + 1, hs.end());
      h_threshold = math::lerp(a, b, qp.frac);
    }
  }
  auto ent_kept = [&](T h) { return !has_quantile || static_cast<double>(h) >= h_threshold; };

  std::vector<RowStats> st(static_cast<size_t>(B));
  std::vector<RowAcc> acc(static_cast<size_t>(B));

#ifdef GRPOKIT_HAVE_OPENMP
  // Threads only where they pay (≥ 16k elements each): small calls stay on the caller's thread.
  const int64_t elems = L.packed ? in.logp.shape[0] : L.B * L.T;
  const int nt = static_cast<int>(std::max<int64_t>(
      1, std::min<int64_t>(num_threads > 0 ? num_threads : omp_get_max_threads(),
                           std::min<int64_t>(B, elems / 16384))));
#define GRPOKIT_PARALLEL_ROWS _Pragma("omp parallel for schedule(static) num_threads(nt)")
#else
  (void)num_threads;
#define GRPOKIT_PARALLEL_ROWS
#endif

  // ---- pass A: row statistics ----
  const bool fast = fast_path_applies(s, in, out, adv_row);
  const bool count_only = fast && !need_u && !has_ent && !use_is && !opsm && !gmpo;
  GRPOKIT_PARALLEL_ROWS
  for (int64_t i = 0; i < B; ++i) {
    RowStats& r = st[i];
    const FlagRow m = flag_row_of(in.mask, L, i);
    const Row<T> lp = row_of<T>(in.logp, L, i), old = row_of<T>(in.old_logp, L, i);
    const Row<T> adv = row_of<T>(in.advantages, L, i, adv_row), h = row_of<T>(in.entropies, L, i);
    const Row<T> smp = row_of<T>(in.sampling_logp, L, i);
    if (count_only) {  // only L_i is needed: count the mask bytes (vectorised)
      const int64_t len = L.len(i);
      int64_t n = 0;
      if (!in.mask.defined()) {
        n = len;
      } else {
        const uint8_t* mk = static_cast<const uint8_t*>(in.mask.data) + i * in.mask.strides[0];
#ifdef GRPOKIT_CPU_DISPATCH
        if (cpu::has_avx512()) {
          n = cpu::count_nonzero_avx512(mk, len);
        } else
#endif
        {
#pragma omp simd reduction(+ : n)
          for (int64_t t = 0; t < len; ++t) n += mk[t] != 0;
        }
      }
      r.L = n;
      continue;
    }
    // the same per-token steps as the CUDA kernels (math/loss_passes.hpp), summed in double
    math::RowSums<double> sums{};
    double nk = 0.0;
    for (int64_t t = 0, len = L.len(i); t < len; ++t) {
      if (!m[t]) continue;
      const C l = lp[t], lo = has_old ? C(old[t]) : l;
      const C ht = h ? C(h[t]) : C(0), st_smp = smp ? C(smp[t]) : C(0);
      math::row_sums_add<C, double>(s, pf, sums, l, lo, C(adv[t]), ht, st_smp);
      if (has_ent && ent_kept(h[t])) nk += 1.0;
    }
    const math::RowStats rs = math::row_stats_finish(s, sums);
    r.L = static_cast<int64_t>(rs.L);
    r.u = rs.u;
    r.hbar = rs.hbar;
    r.abar = rs.abar;
    r.sum_is_log = rs.sum_is_log;
    r.opsm_div = rs.opsm_div;
    r.vespo_logw = rs.vespo_logw;
    r.n_ent_kept = nk;
  }

  // ---- global counts and aggregation coefficients ----
  double n_tok = 0.0, n_rows_nonempty = 0.0, n_ent_kept = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    n_tok += static_cast<double>(st[i].L);
    n_rows_nonempty += st[i].L > 0 ? 1.0 : 0.0;
    n_ent_kept += st[i].n_ent_kept;
  }
  // Counts and coefficients: the same functions the CUDA kernels call (math/loss_passes.hpp).
  const math::AggCounts counts = math::agg_counts(s, n_tok, n_rows_nonempty, static_cast<double>(B));
  const auto row_tokens = [&](int64_t j) { return static_cast<double>(st[j].L); };
  for (int64_t i = 0; i < B; ++i)
    st[i].c = math::agg_coefficient(s, counts, static_cast<double>(st[i].L), static_cast<double>(L.T),
                                    math::group_tokens(s, row_tokens, i));
  const double ent_local_c =
      1.0 / (std::max(has_quantile ? n_ent_kept : n_tok, 1.0) * s.gradient_accumulation_steps);

  // ---- pass B: per-token terms, outputs, row-level derivatives ----
  GRPOKIT_PARALLEL_ROWS
  for (int64_t i = 0; i < B; ++i) {
    const RowStats& r = st[i];
    RowAcc& a = acc[i];
    if (fast) {
      const T A = *(in.advantages.ptr<const T>() + i * in.advantages.strides[0]);
      if (!std::isfinite(A) && r.L > 0) {
        a.err_pos = 0;
        a.err_name = "advantages";
        a.err_value = static_cast<double>(A);
      }
      const T* lp = in.logp.ptr<const T>() + i * in.logp.strides[0];
      // on-policy: old = logp itself (the log-ratio is then exactly 0)
      const T* old = in.old_logp.defined() ? in.old_logp.ptr<const T>() + i * in.old_logp.strides[0] : lp;
      T* gi = out.grad_logp.ptr<T>() + i * out.grad_logp.strides[0];
      RowAcc fa;
      if (in.mask.defined())
        fast_row_dispatch<T, true>(s, lp, old, static_cast<const uint8_t*>(in.mask.data) + i * in.mask.strides[0],
                                   A, static_cast<T>(r.c), L.T, r.L, gi, fa);
      else
        fast_row_dispatch<T, false>(s, lp, old, nullptr, A, static_cast<T>(r.c), L.T, r.L, gi, fa);
      if (a.err_pos >= 0) {
        fa.err_pos = a.err_pos;
        fa.err_name = a.err_name;
        fa.err_value = a.err_value;
      }
      a = fa;
      continue;
    }
    const FlagRow m = flag_row_of(in.mask, L, i);
    const Row<T> lp = row_of<T>(in.logp, L, i), old = row_of<T>(in.old_logp, L, i);
    const Row<T> adv = row_of<T>(in.advantages, L, i, adv_row), ref = row_of<T>(in.ref_logp, L, i);
    const Row<T> h = row_of<T>(in.entropies, L, i), smp = row_of<T>(in.sampling_logp, L, i);
    const Row<T> tw = row_of<T>(in.token_weights, L, i);
    const FlagRow sel = in.selection.defined() ? flag_row_of(in.selection, L, i) : FlagRow{};
    const bool has_sel = in.selection.defined();
    const WRow<T> g = wrow_of<T>(out.grad_logp, L, i), gh = wrow_of<T>(out.grad_entropy, L, i);
    const WRow<T> pt = wrow_of<T>(out.per_token, L, i), om = wrow_of<T>(out.weights, L, i);
    const bool keep = flag_at_row(in.keep, i);
    const C c = static_cast<C>(r.c);
    const C cH = static_cast<C>(s.entropy_aggregation == EntropyAggregation::Policy ? r.c : ent_local_c);
    const bool opsm_div_high = math::opsm_row_masked(s, pf, r.opsm_div);
    const C seq_w_is = math::row_sampler_weight<C>(s, pf, r.sum_is_log);
    const bool row_metrics = per_row_ratio(s);
    const int64_t len = L.len(i);

    math::TokenIn<C> ti{};
    ti.u = static_cast<C>(r.u);
    ti.hbar = static_cast<C>(r.hbar);
    ti.keep = keep ? C(1) : C(0);
    double sum_phi = 0.0, G_u = 0.0, W_u = 0.0, G_h = 0.0, ent_sum = 0.0;
    double row_low = 0.0, row_high = 0.0;
    bool first = true;
    auto fail = [&](int64_t t, const char* name, double v) {
      if (a.err_pos < 0) {
        a.err_pos = t;
        a.err_name = name;
        a.err_value = v;
      }
    };
    for (int64_t t = 0; t < len; ++t) {
      if (!m[t]) {
        if (g) g[t] = T(0);
        if (gh) gh[t] = T(0);
        if (pt) pt[t] = T(0);
        if (om) om[t] = T(0);
        continue;
      }
      ti.logp = lp[t];
      ti.old_logp = has_old ? C(old[t]) : ti.logp;
      ti.adv = gmpo ? static_cast<C>(r.abar) : C(adv[t]);
      ti.ref_logp = ref ? C(ref[t]) : C(0);
      ti.token_weight = tw ? C(tw[t]) : C(1);
      if (!std::isfinite(ti.logp)) fail(t, "logp", ti.logp);
      if (!std::isfinite(ti.old_logp)) fail(t, "old_logp", ti.old_logp);
      if (!std::isfinite(C(adv[t]))) fail(t, "advantages", adv[t]);
      if (ref && !std::isfinite(ti.ref_logp)) fail(t, "ref_logp", ti.ref_logp);
      if (!std::isfinite(ti.token_weight)) fail(t, "token_weights", ti.token_weight);
      if (h && !std::isfinite(C(h[t]))) fail(t, "entropies", h[t]);
      if (smp && std::isinf(C(smp[t]))) fail(t, "sampling_logp", smp[t]);

      // weight rule (math/loss_passes.hpp, as the CUDA kernels)
      const bool hk = h ? ent_kept(h[t]) : true;
      C wis = C(1);
      ti.w = math::weight_rule<C>(s, pf, ti.keep, ti.token_weight, C(adv[t]), opsm_div_high, hk, seq_w_is,
                                  ti.old_logp, smp ? C(smp[t]) : C(0), &wis);
      if (use_is && !vespo) {
        a.is_sum += static_cast<double>(wis);
        a.is_min = std::min(a.is_min, static_cast<double>(wis));
        a.is_max = std::max(a.is_max, static_cast<double>(wis));
        a.n_is += 1.0;
      }
      ti.selected = has_sel && sel[t];
      if (vespo)
        ti.row_w_is = math::vespo_weight<C>(C(r.vespo_logw), ti.adv, C(s.vespo_k_pos), C(s.vespo_lambda_pos),
                                            C(s.vespo_k_neg), C(s.vespo_lambda_neg));

      const math::TokenOut<C> o = math::token_term<C>(s, ti);
      sum_phi += static_cast<double>(o.phi);
      G_u += static_cast<double>(c * o.d_u);
      W_u += static_cast<double>(c * o.omega_u);
      G_h += static_cast<double>(c * o.d_hbar);
      if (g) g[t] = static_cast<T>(c * o.d_logp);
      if (om) om[t] = static_cast<T>(c * o.omega_direct);
      if (pt) pt[t] = static_cast<T>(o.phi);
      if (gh) {
        C dh = C(0);
        if (s.entropy_coef != 0.0 && hk) dh = -C(s.entropy_coef) * cH;
        gh[t] = static_cast<T>(dh);
      }
      if (h) {
        ent_sum += static_cast<double>(h[t]);
        if (s.entropy_coef != 0.0 && hk) a.ent_bonus += static_cast<double>(cH) * static_cast<double>(h[t]);
      }

      // metrics (per token, or once per row when the ratio is per sequence)
      if (!row_metrics || first) {
        a.low += o.flags.low;
        a.high += o.flags.high;
        a.region += o.flags.low || o.flags.high;
        a.verl += o.flags.verl;
        a.dual += o.flags.dual;
        a.wclip += o.weight_clipped;
        a.ratio_sum += static_cast<double>(o.ratio);
        a.ratio_min = std::min(a.ratio_min, static_cast<double>(o.ratio));
        a.ratio_max = std::max(a.ratio_max, static_cast<double>(o.ratio));
      }
      if (vespo && first) a.vespo_phi += static_cast<double>(ti.row_w_is);  // one weight per sequence
      row_low += o.flags.low;
      row_high += o.flags.high;
      a.kl += static_cast<double>(o.kl);
      a.ppo_kl += static_cast<double>(ti.old_logp - ti.logp);
      first = false;
    }
    a.n = static_cast<double>(r.L);
    a.ent = ent_sum;
    a.loss = static_cast<double>(r.c) * sum_phi;
    if (r.L > 0) {
      a.low_row = row_low / static_cast<double>(r.L);
      a.high_row = row_high / static_cast<double>(r.L);
    }

    // distribute ∂/∂u_i and ∂/∂⟨H⟩_i over the row
    if ((u_grad || gtpo_h) && r.L > 0) {
      const C scale_u = math::row_log_ratio_scale<C>(s, r.L);
      const C Gu = static_cast<C>(G_u), Wu = static_cast<C>(W_u);
      const C Gh = static_cast<C>(G_h) / C(r.L);
      for (int64_t t = 0; t < len; ++t) {
        if (!m[t]) continue;
        if (u_grad) {
          const C l = lp[t], lo = has_old ? C(old[t]) : l;
          const C du = math::row_log_ratio_term<C>(s, l, lo, C(adv[t])).d * scale_u;
          if (g) g[t] = static_cast<T>(g[t] + Gu * du);
          if (om) om[t] = static_cast<T>(om[t] + Wu * du);
        }
        if (gtpo_h && gh) gh[t] = static_cast<T>(gh[t] + Gh);
      }
    }
  }
#undef GRPOKIT_PARALLEL_ROWS

  // ---- errors, then deterministic reductions in row order ----
  for (int64_t i = 0; i < B; ++i) {
    if (acc[i].err_pos >= 0)
      value_error(acc[i].err_name, ": non-finite value ", acc[i].err_value, " at a valid position (row ", i,
                  ", token ", acc[i].err_pos, "); values under the mask must be finite",
                  std::string(acc[i].err_name) == "sampling_logp" ? " (NaN marks an unscored token)" : "");
  }
  double loss = 0.0, bonus = 0.0;
  RowAcc tot;
  double low_min = kInf, high_max = -kInf;
  for (int64_t i = 0; i < B; ++i) {
    const RowAcc& a = acc[i];
    loss += a.loss;
    bonus += a.ent_bonus;
    tot.n += a.n;
    tot.low += a.low;
    tot.high += a.high;
    tot.region += a.region;
    tot.verl += a.verl;
    tot.dual += a.dual;
    tot.wclip += a.wclip;
    tot.ratio_sum += a.ratio_sum;
    tot.ratio_min = std::min(tot.ratio_min, a.ratio_min);
    tot.ratio_max = std::max(tot.ratio_max, a.ratio_max);
    tot.kl += a.kl;
    tot.ppo_kl += a.ppo_kl;
    tot.ent += a.ent;
    tot.is_sum += a.is_sum;
    tot.is_min = std::min(tot.is_min, a.is_min);
    tot.is_max = std::max(tot.is_max, a.is_max);
    tot.n_is += a.n_is;
    tot.vespo_phi += a.vespo_phi;
    const double lm = per_row_ratio(s) ? a.low : a.low_row;
    const double hm = per_row_ratio(s) ? a.high : a.high_row;
    if (st[i].L > 0) {
      low_min = std::min(low_min, lm);
      high_max = std::max(high_max, hm);
    }
  }
  loss -= s.entropy_coef * bonus;
  if (out.loss.dtype == DType::Float32)
    *out.loss.ptr<float>() = static_cast<float>(loss);
  else
    *out.loss.ptr<double>() = loss;

  if (out.metrics.defined()) {
    const double n_tok_v = std::max(tot.n, 1.0);
    const double n_flag = per_row_ratio(s) ? std::max(static_cast<double>(B), 1.0) : n_tok_v;
    double vals[kNumMetrics];
    vals[kClipLowMean] = tot.low / n_flag;
    vals[kClipHighMean] = tot.high / n_flag;
    vals[kClipRegionMean] = tot.region / n_flag;
    vals[kClipLowMin] = low_min;
    vals[kClipHighMax] = high_max;
    vals[kPgClipfrac] = tot.verl / n_flag;
    vals[kPgClipfracLower] = tot.dual / n_flag;
    vals[kCispoClipRatio] = tot.wclip / n_flag;
    vals[kWeightClipfrac] = tot.wclip / n_flag;
    vals[kRatioMin] = tot.ratio_min;
    vals[kRatioMean] = tot.ratio_sum / n_flag;
    vals[kRatioMax] = tot.ratio_max;
    vals[kPpoKl] = tot.ppo_kl / n_tok_v;
    vals[kKl] = tot.kl / n_tok_v;
    vals[kEntropy] = tot.ent / n_tok_v;
    vals[kIsMin] = tot.is_min;
    vals[kIsMean] = tot.is_sum / std::max(tot.n_is, 1.0);
    vals[kIsMax] = tot.is_max;
    vals[kVespoPhi] = tot.vespo_phi / std::max(static_cast<double>(B), 1.0);
    const std::vector<int> ids = metric_ids(s, in);
    double* mo = out.metrics.ptr<double>();
    for (size_t k = 0; k < ids.size(); ++k) mo[k * out.metrics.strides[0]] = vals[ids[k]];
  }
}

void check_flags(const TensorView& v, const char* name) {
  check_dtype(v, name,
              {DType::Bool, DType::UInt8, DType::Int8, DType::Int32, DType::Int64, DType::Float32, DType::Float64});
}

}  // namespace

// ---- public API ----------------------------------------------------------------------------------

bool loss_has_entropy_grad(const LossSpec& s, bool has_entropies) {
  return has_entropies && (s.entropy_coef != 0.0 || (s.gtpo_entropy && s.beta != 0.0));
}

std::vector<int> loss_metric_ids(const LossSpec& spec, const LossInputs& in) { return metric_ids(spec, in); }

std::vector<std::string> loss_metric_names(const LossSpec& spec, const LossInputs& in) {
  std::vector<std::string> names;
  for (int k : metric_ids(spec, in)) names.emplace_back(kMetricNames[k]);
  return names;
}

void check_loss_args(const LossSpec& s, const LossInputs& in, const LossOutputs& out) {
  validate_spec(s);
  const TensorView& lp = in.logp;
  check_ndim(lp, "logp", {1, 2});
  check_dtype(lp, "logp", {DType::Float32, DType::Float64});
  const bool packed = in.cu_seqlens.defined();
  if (packed && lp.ndim != 1)
    value_error("logp: packed inputs (cu_seqlens given) must be 1-D (N,), got shape ", lp.shape_str());
  if (!packed && lp.ndim != 2)
    value_error("logp: expected a padded (B, T) array, or a packed (N,) array with cu_seqlens; got shape ",
                lp.shape_str());
  int64_t B = packed ? 0 : lp.shape[0];
  if (packed) {
    check_ndim(in.cu_seqlens, "cu_seqlens", {1});
    check_dtype(in.cu_seqlens, "cu_seqlens", {DType::Int32, DType::Int64});
    check_same_device(in.cu_seqlens, "cu_seqlens", lp, "logp");
    if (in.cu_seqlens.shape[0] < 2)
      value_error("cu_seqlens: expected (B+1,) offsets with B >= 1, got shape ", in.cu_seqlens.shape_str());
    B = in.cu_seqlens.shape[0] - 1;
  }
  if (B == 0) value_error("logp: expected at least one completion, got shape ", lp.shape_str());
  auto same_layout = [&](const TensorView& v, const char* name) {
    if (!v.defined()) return;
    check_shape_equal(v, name, lp, "logp");
    check_same_device(v, name, lp, "logp");
  };
  auto same_float = [&](const TensorView& v, const char* name) {
    if (!v.defined()) return;
    if (v.dtype != lp.dtype)
      type_error(name, ": expected dtype ", dtype_name(lp.dtype), " (the dtype of logp), got ", dtype_name(v.dtype));
  };
  for (auto [v, n] : {std::pair<const TensorView*, const char*>{&in.old_logp, "old_logp"},
                      {&in.ref_logp, "ref_logp"}, {&in.entropies, "entropies"},
                      {&in.sampling_logp, "sampling_logp"}, {&in.token_weights, "token_weights"}}) {
    same_layout(*v, n);
    same_float(*v, n);
  }
  if (in.mask.defined()) {
    same_layout(in.mask, "mask");
    check_flags(in.mask, "mask");
  }
  // advantages: (B,) or the layout of logp
  const TensorView& A = in.advantages;
  if (!A.defined()) value_error("advantages: required");
  same_float(A, "advantages");
  check_same_device(A, "advantages", lp, "logp");
  const bool per_row = A.ndim == 1 && A.shape[0] == B;
  const bool per_token = A.ndim == lp.ndim && (A.ndim == 2 ? (A.shape[0] == lp.shape[0] && A.shape[1] == lp.shape[1])
                                                            : A.shape[0] == lp.shape[0]);
  if (!per_row && !per_token)
    value_error("advantages: expected shape (", B, ",) or ", lp.shape_str(), " (the shape of logp), got ",
                A.shape_str());
  if (in.keep.defined()) {
    check_ndim(in.keep, "keep", {1});
    check_flags(in.keep, "keep");
    check_same_device(in.keep, "keep", lp, "logp");
    if (in.keep.shape[0] != B) value_error("keep: expected shape (", B, ",), got ", in.keep.shape_str());
  }
  // what the spec needs
  if (s.kl != KlEstimator::None && s.beta != 0.0 && !in.ref_logp.defined())
    value_error("ref_logp: required when beta != 0 (beta = ", s.beta, "); pass beta=0 to drop the KL term");
  if (s.top_entropy_quantile < 1.0 && !in.entropies.defined())
    value_error("entropies: required when top_entropy_quantile < 1 (got ", s.top_entropy_quantile, ")");
  if (s.entropy_coef != 0.0 && !in.entropies.defined())
    value_error("entropies: required when entropy_coef != 0 (got ", s.entropy_coef, ")");
  if (s.aggregation == Aggregation::SeqMeanTokenSumNorm && !(s.max_completion_length > 0.0) && packed)
    value_error("max_completion_length: packed inputs have no padded length; pass the constant normaliser C "
                "(max_completion_length / loss_scale_factor)");
  if (s.aggregation == Aggregation::PromptMean && s.group_size == -1.0)
    value_error("group_size: required by aggregation='prompt_mean' (the completions per prompt, G)");
  if (s.aggregation == Aggregation::PromptMean && B % static_cast<int64_t>(s.group_size) != 0)
    value_error("group_size: aggregation='prompt_mean' needs whole prompt groups in a call; ", B,
                " completions are not a multiple of group_size = ", static_cast<int64_t>(s.group_size));
  if (s.selection != Selection::None && !in.selection.defined())
    value_error("selection: required by the clip_cov / kl_cov rules (the tokens they act on)");
  if (in.selection.defined()) {
    same_layout(in.selection, "selection");
    check_flags(in.selection, "selection");
  }
  if (s.surrogate == Surrogate::Logp &&
      (s.logp_weight == LogpWeight::DppoTv || s.logp_weight == LogpWeight::DppoKl) && !in.old_logp.defined())
    value_error("old_logp: required by the DPPO trust-region tests");
  // outputs
  auto out_like = [&](const TensorView& v, const char* name, bool required) {
    if (!v.defined()) {
      if (required) value_error(name, ": output buffer required");
      return;
    }
    check_shape_equal(v, name, lp, "logp");
    check_dtype(v, name, {lp.dtype});
    check_same_device(v, name, lp, "logp");
    check_writable(v, name);
  };
  out_like(out.grad_logp, "grad_logp", true);
  out_like(out.per_token, "per_token", false);
  out_like(out.weights, "weights", false);
  out_like(out.grad_entropy, "grad_entropy", loss_has_entropy_grad(s, in.entropies.defined()));
  if (!out.loss.defined() || out.loss.numel() != 1) value_error("loss: expected a 1-element output buffer");
  check_dtype(out.loss, "loss", {lp.dtype});
  check_writable(out.loss, "loss");
  if (out.metrics.defined()) {
    check_ndim(out.metrics, "metrics", {1});
    check_dtype(out.metrics, "metrics", {DType::Float64});
    check_writable(out.metrics, "metrics");
    if (out.metrics.shape[0] != static_cast<int64_t>(metric_ids(s, in).size()))
      value_error("metrics: expected ", metric_ids(s, in).size(), " entries, got ", out.metrics.shape[0]);
  }
  if (out.grad_logp.data == lp.data) value_error("grad_logp: must not alias logp");
}

void policy_loss_cpu(const LossSpec& spec, const LossInputs& in, const LossOutputs& out, int num_threads) {
  check_loss_args(spec, in, out);
  check_cpu(in.logp, "logp");
  Layout L;
  L.packed = in.cu_seqlens.defined();
  if (L.packed) {
    const TensorView& cu = in.cu_seqlens;
    L.B = cu.shape[0] - 1;
    L.cu.resize(static_cast<size_t>(L.B + 1));
    for (int64_t k = 0; k <= L.B; ++k)
      L.cu[k] = cu.dtype == DType::Int32 ? cu.ptr<const int32_t>()[k * cu.strides[0]]
                                         : cu.ptr<const int64_t>()[k * cu.strides[0]];
    if (L.cu[0] != 0) value_error("cu_seqlens: must start at 0, got ", L.cu[0]);
    for (int64_t k = 0; k < L.B; ++k)
      if (L.cu[k + 1] < L.cu[k])
        value_error("cu_seqlens: offsets must be non-decreasing, got ", L.cu[k], " then ", L.cu[k + 1]);
    if (L.cu[L.B] != in.logp.shape[0])
      value_error("cu_seqlens: the last offset (", L.cu[L.B], ") must equal the number of tokens (",
                  in.logp.shape[0], ")");
  } else {
    L.B = in.logp.shape[0];
    L.T = in.logp.shape[1];
  }
  // An entirely empty mask has no loss to define.
  bool any = false;
  for (int64_t i = 0; i < L.B && !any; ++i) {
    const FlagRow m = flag_row_of(in.mask, L, i);
    for (int64_t t = 0, n = L.len(i); t < n && !any; ++t) any = m[t];
  }
  if (!any) value_error("mask: no valid token (every position is masked); there is no loss to compute");
  if (in.logp.dtype == DType::Float32)
    run<float>(spec, in, out, L, num_threads);
  else
    run<double>(spec, in, out, L, num_threads);
}

}  // namespace grpokit
