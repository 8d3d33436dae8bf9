// Row kernels of the token log-probability engines (internal to the CPU engine): one chunk of a
// row reduced to ChunkStats, one row of the logits gradient, and the small helpers around them.
// Used by the logits engine (logprobs.cpp) and the hidden-states engine (linear_logprobs.cpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <type_traits>

#include "cpu_kernels.hpp"
#include "grpokit/error.hpp"
#include "grpokit/interrupt.hpp"
#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {
namespace rows {

using cpu::kLanes;
using cpu::load;
using cpu::store;

// Entries of a row reduced at a time: two passes over it, the second from L1.
constexpr int64_t kChunk = 2048;

// Below this many logits a loop stays on one thread: waking a team costs more than it saves.
constexpr int64_t kParallelMin = 1 << 16;

// Offset of row r of (N, V) or (B, T, V) logits; inner = T.
inline int64_t row_offset(const TensorView& x, int64_t r, int64_t inner) {
  return x.ndim == 3 ? (r / inner) * x.strides[0] + (r % inner) * x.strides[1] : r * x.strides[0];
}

// Offset of row r in a per-row array of the leading shape (N,) or (B, T).
inline int64_t per_row_offset(const TensorView& t, int64_t r, int64_t inner) {
  return t.ndim == 2 ? (r / inner) * t.strides[0] + (r % inner) * t.strides[1] : r * t.strides[0];
}

inline int64_t read_id(const TensorView& ids, int64_t off) {
  return ids.dtype == DType::Int32 ? static_cast<int64_t>(ids.ptr<const int32_t>()[off])
                                   : ids.ptr<const int64_t>()[off];
}

inline double read_real(const TensorView& t, int64_t off) {
  return t.dtype == DType::Float32 ? static_cast<double>(t.ptr<const float>()[off])
                                   : t.ptr<const double>()[off];
}

template <class R>
inline void write_real(const TensorView& t, int64_t off, double v) {
  t.ptr<R>()[off] = static_cast<R>(v);
}

// ---- float32 math (float32 / bfloat16 / float16 logits) -----------------------------------------

// The temperature rule of grpokit/math/logprobs.hpp: d = (x − m)/τ from the chunk's raw maximum m
// (math::scaled_gap). The returned max is the raw m; accumulate_row scales it in float64.
// NaN or +inf anywhere in the chunk makes sum NaN: d = x − m is NaN there, and exp keeps it.
// kSelect picks exp's form (see cpu::exp_nonpositive): the select under AVX-512 only. kSq also
// sums exp(d)² (for Σπ²); the default instantiation has no trace of it.
template <class In, bool kSelect, bool kSq>
inline __attribute__((always_inline)) math::ChunkStats<float> chunk_stats_body(const In* x, int64_t n,
                                                                               float inv_t) {
  // Each loop body first fills small arrays, then folds them into the lanes: the shape GCC
  // vectorises (a fully unrolled body with selects is left scalar).
  float mx[kLanes];
  for (int k = 0; k < kLanes; ++k) mx[k] = -INFINITY;
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    float z[kLanes];
    for (int k = 0; k < kLanes; ++k) z[k] = load(x[i + k]);
    for (int k = 0; k < kLanes; ++k) mx[k] = mx[k] < z[k] ? z[k] : mx[k];
  }
  float m = -INFINITY;
  for (int64_t i = full; i < n; ++i) {
    const float z = load(x[i]);
    m = m < z ? z : m;
  }
  for (int k = 0; k < kLanes; ++k) m = m < mx[k] ? mx[k] : m;
  if (!(m > -INFINITY)) {
    // No finite maximum: all −inf (contributes nothing), unless a NaN hid from the max.
    for (int64_t i = 0; i < n; ++i)
      if (load(x[i]) != load(x[i])) return {INFINITY, NAN, NAN};
    return {-INFINITY, 0.0f, 0.0f};
  }

  const float dmin = cpu::opaque(math::min_exp_arg<float>()), lo = cpu::opaque(cpu::kExpLo);
  const float qlo = cpu::opaque(math::min_sq_arg<float>());
  float s[kLanes], t[kLanes], q[kLanes];
  for (int k = 0; k < kLanes; ++k) s[k] = 0.0f, t[k] = 0.0f, q[k] = 0.0f;
  for (int64_t i = 0; i < full; i += kLanes) {
    float e[kLanes], ed[kLanes], e2[kLanes];
    for (int k = 0; k < kLanes; ++k) {
      float d = math::scaled_gap(load(x[i + k]), m, inv_t);  // ≤ 0: the one rounding of the scale
      d = d < dmin ? dmin : d;                  // math::clamp_exp_arg with an opaque bound
      e[k] = cpu::exp_nonpositive<kSelect>(d, lo);
      ed[k] = e[k] * d;
      if constexpr (kSq) {
        const float em = cpu::zero_below<kSelect>(e[k], d, qlo);  // no subnormal squares
        e2[k] = em * em;
      }
    }
    for (int k = 0; k < kLanes; ++k) s[k] += e[k], t[k] += ed[k];
    if constexpr (kSq)
      for (int k = 0; k < kLanes; ++k) q[k] += e2[k];
  }
  float ss = 0.0f, tt = 0.0f, qq = 0.0f;
  for (int64_t i = full; i < n; ++i) {
    float d = math::scaled_gap(load(x[i]), m, inv_t);
    d = d < dmin ? dmin : d;
    const float e = cpu::exp_nonpositive<kSelect>(d, lo);
    ss += e;
    tt += e * d;
    if constexpr (kSq) {
      const float em = cpu::zero_below<kSelect>(e, d, qlo);
      qq += em * em;
    }
  }
  for (int k = 0; k < kLanes; ++k) ss += s[k], tt += t[k];
  if constexpr (kSq)
    for (int k = 0; k < kLanes; ++k) qq += q[k];
  if (ss != ss) return {INFINITY, NAN, NAN};
  return {m, ss, tt, qq};
}

#ifdef GRPOKIT_CPU_DISPATCH
template <class In, bool kSq>
GRPOKIT_CPU_AVX512 math::ChunkStats<float> chunk_stats_avx512(const In* x, int64_t n, float inv_t) {
  return chunk_stats_body<In, true, kSq>(x, n, inv_t);
}
template <class In, bool kSq>
GRPOKIT_CPU_AVX2_CLONES math::ChunkStats<float> chunk_stats_avx2(const In* x, int64_t n, float inv_t) {
  return chunk_stats_body<In, false, kSq>(x, n, inv_t);
}
#endif

// One chunk of a row (float32 math), in the best version for this CPU.
template <bool kSq, class In>
math::ChunkStats<float> chunk_stats_f32(const In* x, int64_t n, float inv_t) {
#ifdef GRPOKIT_CPU_DISPATCH
  return cpu::has_avx512() ? chunk_stats_avx512<In, kSq>(x, n, inv_t)
                           : chunk_stats_avx2<In, kSq>(x, n, inv_t);
#else
  return chunk_stats_body<In, false, kSq>(x, n, inv_t);
#endif
}

template <class In>
GRPOKIT_CPU_CLONES void grad_row_f32(const In* x, In* g, int64_t n, float inv_t, float shift, float c0,
                                     const math::GradCoeffs<float>& c) {
  const int64_t full = n - n % kLanes;
  if (c.zero) {
    for (int64_t i = 0; i < n; ++i) g[i] = store<In>(0.0f);
    return;
  }
  const float dmin = cpu::opaque(math::min_exp_arg<float>()), lo = cpu::opaque(cpu::kExpLo);
  for (int64_t i = 0; i < full; i += kLanes) {
    float v[kLanes];
    for (int k = 0; k < kLanes; ++k) {
      float d = (load(x[i + k]) - shift) * inv_t - c0;
      d = d < dmin ? dmin : d;  // math::clamp_exp_arg with an opaque bound
      d = d > 0.0f ? 0.0f : d;  // see grad_row_f64
      v[k] = math::grad_element(c, cpu::exp_nonpositive(d, lo), d);
    }
    for (int k = 0; k < kLanes; ++k) g[i + k] = store<In>(v[k]);  // after all reads: in-place safe
  }
  for (int64_t i = full; i < n; ++i) {
    float d = (load(x[i]) - shift) * inv_t - c0;
    d = d < dmin ? dmin : d;
    d = d > 0.0f ? 0.0f : d;
    g[i] = store<In>(math::grad_element(c, cpu::exp_nonpositive(d, lo), d));
  }
}

// ---- float64 math (float64 logits) ---------------------------------------------------------------

// The same in float64 math (float64 logits, or any logits when grad_row's caller needs it).
template <bool kSq, class In>
inline math::ChunkStats<double> chunk_stats_f64(const In* x, int64_t n, double inv_t) {
  double m = -INFINITY;
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    const double z = static_cast<double>(load(x[i]));
    m = m < z ? z : m;
    bad |= (z != z) || z == INFINITY;
  }
  if (bad) return {INFINITY, NAN, NAN};
  if (!(m > -INFINITY)) return {-INFINITY, 0.0, 0.0};
  double s = 0.0, t = 0.0, q = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = math::clamp_exp_arg(math::scaled_gap(static_cast<double>(load(x[i])), m, inv_t));
    const double e = std::exp(d);
    s += e;
    t += e * d;
    if constexpr (kSq) q += d < math::min_sq_arg<double>() ? 0.0 : e * e;
  }
  return {m, s, t, q};
}

// One row of the gradient with d = (x − shift)/τ − c0, clamped to [min_exp_arg, 0] (the forward's
// lse bounds every scaled logit; rounding must not push d above 0, where exp overflows).
template <class In>
inline void grad_row_f64(const In* x, In* g, int64_t n, double inv_t, double shift, double c0,
                         const math::GradCoeffs<double>& c) {
  for (int64_t i = 0; i < n; ++i) {
    double d = math::clamp_exp_arg((static_cast<double>(load(x[i])) - shift) * inv_t - c0);
    d = d > 0.0 ? 0.0 : d;
    g[i] = store<In>(math::grad_element(c, std::exp(d), d));
  }
}

// The upstream gradients of row r (a = ∂L/∂logp, b = ∂L/∂entropy; undefined = 0) and the saved
// entropy h (read only when b can be nonzero).
struct RowGrads {
  double a = 0, b = 0, h = 0;
};

inline RowGrads row_grads(const TensorView& grad_logp, const TensorView& grad_entropy,
                          const TensorView& entropy, int64_t r, int64_t inner) {
  RowGrads g;
  if (grad_logp.defined()) g.a = read_real(grad_logp, per_row_offset(grad_logp, r, inner));
  if (grad_entropy.defined()) {
    g.b = read_real(grad_entropy, per_row_offset(grad_entropy, r, inner));
    g.h = read_real(entropy, per_row_offset(entropy, r, inner));
  }
  return g;
}

// Row-level value errors found inside a parallel loop; the lowest row is reported after it.
struct RowError {
  int64_t row = -1;
  int kind = 0;  // 1: token id out of range, 2: NaN/+inf logits, 3: no finite logit, 4: none kept,
                // 5, 6: 2, 3 of ref_logits
  int64_t id = 0;

  void record(int64_t r, int k, int64_t bad_id = 0) {
#ifdef GRPOKIT_HAVE_OPENMP
#pragma omp critical(grpokit_logprobs_error)
#endif
    if (row < 0 || r < row) row = r, kind = k, id = bad_id;
  }

  // Records row r if its log-sum-exp l is NaN/+inf or −inf; true when l is finite. ref: of the
  // reference's logits (the full-KL op), else of the logits.
  bool finite_lse(int64_t r, double l, bool ref = false) {
    if (!(l < INFINITY))
      record(r, ref ? 5 : 2);
    else if (!(l > -INFINITY))
      record(r, ref ? 6 : 3);
    else
      return true;
    return false;
  }

  void raise(int64_t vocab) const {
    if (row < 0) return;
    if (kind == 1)
      value_error("token_ids: row ", row, " holds ", id, ", outside the vocabulary [0, ", vocab, ")");
    if (kind == 2) value_error("logits: row ", row, " contains NaN or +inf");
    if (kind == 5) value_error("ref_logits: row ", row, " contains NaN or +inf");
    if (kind == 6)
      value_error("ref_logits: row ", row,
                  " has no finite value (all −inf); its probabilities are undefined");
    if (kind == 4) value_error("keep_ids: the kept set of row ", row, " holds no finite logit (all −inf)");
    value_error("logits: row ", row, " has no finite value (all −inf); its probabilities are undefined");
  }
};

// exp in the engine's math type: the vectorisable float32 one, or std::exp.
template <class F>
inline F exp_of(F d) {
  if constexpr (std::is_same<F, double>::value)
    return std::exp(d);
  else
    return cpu::exp_nonpositive(d);
}

// One chunk of a row (n ≤ kChunk entries) in math type F (float or double), widened to double.
template <class F, bool kSq, class In>
inline math::ChunkStats<double> chunk_stats(const In* x, int64_t n, double inv_t) {
  if constexpr (std::is_same<F, double>::value) {
    return chunk_stats_f64<kSq>(x, n, inv_t);
  } else {
    const math::ChunkStats<float> f = chunk_stats_f32<kSq>(x, n, static_cast<float>(inv_t));
    return {f.max, f.sum, f.dot, f.sq};
  }
}

// Folds n entries of a row into st, kChunk at a time (with Σ exp² when the state has kSq). F is the
// math type (float, or double); each chunk's raw maximum is scaled by 1/τ in float64 here, so the
// state's maximum is finite for every finite row.
// raw_max, when given, also tracks the raw (unscaled) maximum: the state's max is raw_max/τ.
template <class F, bool kSq, class In>
inline void accumulate_row(math::RowState<double, kSq>& st, const In* row, int64_t n, double inv_t,
                           double* raw_max = nullptr) {
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t m = n - c0 < kChunk ? n - c0 : kChunk;
    math::ChunkStats<double> c = chunk_stats<F, kSq>(row + c0, m, inv_t);
    if (raw_max && *raw_max < c.max) *raw_max = c.max;
    c.max *= inv_t;
    st.merge(c);
  }
}

// The state of a whole row.
template <class F, bool kSq, class In>
inline math::RowState<double, kSq> row_state(const In* row, int64_t vocab, double inv_t,
                                             double* raw_max = nullptr) {
  math::RowState<double, kSq> st;
  accumulate_row<F>(st, row, vocab, inv_t, raw_max);
  return st;
}

// log p_y = (x_y − raw max)/τ − log Σ: no cancellation between x_y/τ and lse at large magnitudes.
template <bool kSq>
inline double row_logp(const math::RowState<double, kSq>& st, double raw_max, double x_y, double inv_t) {
  return math::token_logp(math::scaled_gap(x_y, raw_max, inv_t), std::log(st.sum));
}

// Where the gradient's d = (x − shift)/τ − c0 is taken from: (0, lse) from the saved lse within
// math::exact_lse_bound, else (raw row maximum, log Σ) recomputed (an extra read of the row: only for
// large |lse|, e.g. large logits at a small temperature, or an lse that overflowed the float32 result).

struct GradShift {
  double shift = 0, c0 = 0;
};

template <class F, class In>
inline GradShift grad_shift(const In* row, int64_t n, double inv_t, double lse) {
  if (std::fabs(lse) <= math::exact_lse_bound<F>()) return {0.0, lse};
  double m = -INFINITY;
  const math::RowState<double> st = row_state<F, false>(row, n, inv_t, &m);
  return {m, std::log(st.sum)};
}

// The gradient of one row into g (may be the row itself), d = (x − s.shift)/τ − s.c0. id ≥ 0: the
// target's index (its raw logit x_y read by the caller before an in-place write could replace it);
// id < 0 means the target is elsewhere.
template <class F, class In>
inline void grad_row(const In* row, In* g, int64_t n, double inv_t, const GradShift& s,
                     const math::GradCoeffs<F>& c, int64_t id, double x_y) {
  if constexpr (std::is_same<F, double>::value)
    grad_row_f64(row, g, n, inv_t, s.shift, s.c0, c);
  else
    grad_row_f32(row, g, n, static_cast<float>(inv_t), static_cast<float>(s.shift), static_cast<float>(s.c0),
                 c);
  if (id >= 0 && !c.zero) {
    F d_y = math::clamp_exp_arg(static_cast<F>((x_y - s.shift) * inv_t - s.c0));
    d_y = d_y > F(0) ? F(0) : d_y;
    g[id] = store<In>(math::grad_element(c, exp_of(d_y), d_y) + c.target);
  }
}

// Calls f(In{}, F{}) with the logits' element type In and its math type F.
template <class Fn>
inline void by_dtype(DType dt, Fn&& f) {
  switch (dt) {
    case DType::Float32:
      return f(float{}, float{});
    case DType::BFloat16:
      return f(cpu::bf16{}, float{});
    case DType::Float16:
      return f(cpu::f16{}, float{});
    case DType::Float64:
      return f(double{}, double{});
    default:
      break;
  }
}

// Calls f(r, id, row, err) for every row whose target id lies in the vocabulary (OpenMP over rows), then
// raises the lowest row's error: an id outside the vocabulary, or what f recorded in err.
template <class In, class Fn>
inline void for_each_row(const TokenLogprobArgs& in, const RowLayout& L, Fn&& f) {
  const TensorView& x = in.logits;
  RowError err;
  Interrupt stop(16);  // Ctrl-C (grpokit/interrupt.hpp): rows not yet started are skipped
#ifdef GRPOKIT_HAVE_OPENMP
#pragma omp parallel for schedule(static) if (L.rows * L.vocab > kParallelMin)
#endif
  for (int64_t r = 0; r < L.rows; ++r) {
    if (stop.requested()) continue;
    const int64_t id = read_id(in.token_ids, per_row_offset(in.token_ids, r, L.inner));
    if (id < 0 || id >= L.vocab) {
      err.record(r, 1, id);
      continue;
    }
    f(r, id, x.ptr<const In>() + row_offset(x, r, L.inner), err);
  }
  stop.raise();
  err.raise(L.vocab);
}

}  // namespace rows
}  // namespace grpokit
