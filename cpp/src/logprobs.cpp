// CPU engine of token log-probabilities, entropies and the logits gradient.
//
// One thread owns a row at a time (OpenMP over rows), so results do not depend on the thread count.
// A row is read in chunks of kChunk entries: a max pass and an exp pass over the chunk (the second
// read hits L1), reduced in kLanes independent float32 lanes (vectorisable without -ffast-math),
// then merged into a float64 RowState, so even V = 262,144 keeps float32-rounding accuracy.
// The hot loops are compiled for AVX2 and AVX-512 as well as the baseline, picked at run time.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "cpu_kernels.hpp"
#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"

namespace grpokit {
namespace {

using cpu::kLanes;
using cpu::load;
using cpu::store;

constexpr int64_t kChunk = 2048;

int64_t row_offset(const TensorView& x, int64_t r, int64_t inner) {
  return x.ndim == 3 ? (r / inner) * x.strides[0] + (r % inner) * x.strides[1] : r * x.strides[0];
}

int64_t per_row_offset(const TensorView& t, int64_t r, int64_t inner) {
  return t.ndim == 2 ? (r / inner) * t.strides[0] + (r % inner) * t.strides[1] : r * t.strides[0];
}

int64_t read_id(const TensorView& ids, int64_t off) {
  return ids.dtype == DType::Int32 ? static_cast<int64_t>(ids.ptr<const int32_t>()[off])
                                   : ids.ptr<const int64_t>()[off];
}

double read_real(const TensorView& t, int64_t off) {
  return t.dtype == DType::Float32 ? static_cast<double>(t.ptr<const float>()[off])
                                   : t.ptr<const double>()[off];
}

template <class R>
void write_real(const TensorView& t, int64_t off, double v) {
  t.ptr<R>()[off] = static_cast<R>(v);
}

// ---- float32 math (float32 / bfloat16 / float16 logits) -----------------------------------------

template <class In>
GRPOKIT_CPU_CLONES math::ChunkStats<float> chunk_stats_f32(const In* x, int64_t n, float inv_t) {
  float mx[kLanes];
  int bad[kLanes];
  for (int k = 0; k < kLanes; ++k) mx[k] = -INFINITY, bad[k] = 0;
  const int64_t full = n - n % kLanes;
  for (int64_t i = 0; i < full; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const float z = load(x[i + k]) * inv_t;
      mx[k] = mx[k] < z ? z : mx[k];
      bad[k] |= (z != z) | (z == INFINITY);
    }
  }
  float m = -INFINITY;
  int any_bad = 0;
  for (int64_t i = full; i < n; ++i) {
    const float z = load(x[i]) * inv_t;
    m = m < z ? z : m;
    any_bad |= (z != z) | (z == INFINITY);
  }
  for (int k = 0; k < kLanes; ++k) m = m < mx[k] ? mx[k] : m, any_bad |= bad[k];
  if (any_bad) return {INFINITY, NAN, NAN};
  if (!(m > -INFINITY)) return {-INFINITY, 0.0f, 0.0f};

  float s[kLanes], t[kLanes];
  for (int k = 0; k < kLanes; ++k) s[k] = 0.0f, t[k] = 0.0f;
  for (int64_t i = 0; i < full; i += kLanes) {
    for (int k = 0; k < kLanes; ++k) {
      const float d = math::clamp_exp_arg(load(x[i + k]) * inv_t - m);
      const float e = cpu::exp_nonpositive(d);
      s[k] += e;
      t[k] += e * d;
    }
  }
  float ss = 0.0f, tt = 0.0f;
  for (int64_t i = full; i < n; ++i) {
    const float d = math::clamp_exp_arg(load(x[i]) * inv_t - m);
    const float e = cpu::exp_nonpositive(d);
    ss += e;
    tt += e * d;
  }
  for (int k = 0; k < kLanes; ++k) ss += s[k], tt += t[k];
  return {m, ss, tt};
}

template <class In>
GRPOKIT_CPU_CLONES void grad_row_f32(const In* x, In* g, int64_t n, float inv_t, float lse,
                                     const math::GradCoeffs<float>& c) {
  const int64_t full = n - n % kLanes;
  if (c.zero) {
    for (int64_t i = 0; i < n; ++i) g[i] = store<In>(0.0f);
    return;
  }
  for (int64_t i = 0; i < full; i += kLanes) {
    float v[kLanes];
    for (int k = 0; k < kLanes; ++k) {
      const float d = math::clamp_exp_arg(load(x[i + k]) * inv_t - lse);
      v[k] = math::grad_element(c, cpu::exp_nonpositive(d), d);
    }
    for (int k = 0; k < kLanes; ++k) g[i + k] = store<In>(v[k]);  // after all reads: in-place safe
  }
  for (int64_t i = full; i < n; ++i) {
    const float d = math::clamp_exp_arg(load(x[i]) * inv_t - lse);
    g[i] = store<In>(math::grad_element(c, cpu::exp_nonpositive(d), d));
  }
}

// ---- float64 math (float64 logits) ---------------------------------------------------------------

math::ChunkStats<double> chunk_stats_f64(const double* x, int64_t n, double inv_t) {
  double m = -INFINITY;
  bool bad = false;
  for (int64_t i = 0; i < n; ++i) {
    const double z = x[i] * inv_t;
    m = m < z ? z : m;
    bad |= (z != z) || z == INFINITY;
  }
  if (bad) return {INFINITY, NAN, NAN};
  if (!(m > -INFINITY)) return {-INFINITY, 0.0, 0.0};
  double s = 0.0, t = 0.0;
  for (int64_t i = 0; i < n; ++i) {
    const double d = math::clamp_exp_arg(x[i] * inv_t - m);
    const double e = std::exp(d);
    s += e;
    t += e * d;
  }
  return {m, s, t};
}

void grad_row_f64(const double* x, double* g, int64_t n, double inv_t, double lse,
                  const math::GradCoeffs<double>& c) {
  for (int64_t i = 0; i < n; ++i) {
    const double d = math::clamp_exp_arg(x[i] * inv_t - lse);
    g[i] = math::grad_element(c, std::exp(d), d);
  }
}

// ---- rows ------------------------------------------------------------------------------------------

struct RowError {
  int64_t row = -1;
  int kind = 0;  // 1: token id out of range, 2: NaN/+inf logits, 3: no finite logit
  int64_t id = 0;

  void record(int64_t r, int k, int64_t bad_id = 0) {
#ifdef GRPOKIT_HAVE_OPENMP
#pragma omp critical(grpokit_logprobs_error)
#endif
    if (row < 0 || r < row) row = r, kind = k, id = bad_id;
  }

  void raise(int64_t vocab) const {
    if (row < 0) return;
    if (kind == 1)
      value_error("token_ids: row ", row, " holds ", id, ", outside the vocabulary [0, ", vocab, ")");
    if (kind == 2) value_error("logits: row ", row, " contains NaN or +inf");
    value_error("logits: row ", row, " has no finite value (all −inf); its probabilities are undefined");
  }
};

template <class In, class F, class A>
void forward_rows(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                  const TensorView& lse) {
  using R = typename cpu::Real<In>::type;  // result dtype: float, or double for float64 logits
  const TensorView& x = in.logits;
  const RowLayout L = RowLayout::of(x);
  const F inv_t = static_cast<F>(1.0 / in.temperature);
  RowError err;
#ifdef GRPOKIT_HAVE_OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (int64_t r = 0; r < L.rows; ++r) {
    const int64_t id = read_id(in.token_ids, per_row_offset(in.token_ids, r, L.inner));
    if (id < 0 || id >= L.vocab) {
      err.record(r, 1, id);
      continue;
    }
    const In* row = x.ptr<const In>() + row_offset(x, r, L.inner);
    math::RowState<A> st;
    for (int64_t c0 = 0; c0 < L.vocab; c0 += kChunk) {
      const int64_t n = L.vocab - c0 < kChunk ? L.vocab - c0 : kChunk;
      if constexpr (std::is_same<F, double>::value)
        st.merge(chunk_stats_f64(row + c0, n, inv_t));
      else
        st.merge(chunk_stats_f32(row + c0, n, inv_t));
    }
    const A l = st.lse();
    if (!(l < INFINITY)) {  // NaN or +inf
      err.record(r, 2);
      continue;
    }
    if (!(l > -INFINITY)) {
      err.record(r, 3);
      continue;
    }
    const A z_y = static_cast<A>(cpu::load(row[id]) * inv_t);
    write_real<R>(logp, per_row_offset(logp, r, L.inner), z_y - l);
    write_real<R>(lse, per_row_offset(lse, r, L.inner), l);
    if (entropy.defined()) write_real<R>(entropy, per_row_offset(entropy, r, L.inner), st.entropy());
  }
  err.raise(L.vocab);
}

template <class In, class F>
void backward_rows(const TokenLogprobArgs& in, const TensorView& lse, const TensorView& entropy,
                   const TensorView& grad_logp, const TensorView& grad_entropy,
                   const TensorView& grad_logits) {
  const TensorView& x = in.logits;
  const RowLayout L = RowLayout::of(x);
  const double inv_t = 1.0 / in.temperature;
  RowError err;
#ifdef GRPOKIT_HAVE_OPENMP
#pragma omp parallel for schedule(static)
#endif
  for (int64_t r = 0; r < L.rows; ++r) {
    const int64_t id = read_id(in.token_ids, per_row_offset(in.token_ids, r, L.inner));
    if (id < 0 || id >= L.vocab) {
      err.record(r, 1, id);
      continue;
    }
    const In* row = x.ptr<const In>() + row_offset(x, r, L.inner);
    In* g = grad_logits.ptr<In>() + row_offset(grad_logits, r, L.inner);
    const double a = grad_logp.defined() ? read_real(grad_logp, per_row_offset(grad_logp, r, L.inner)) : 0.0;
    const double b = grad_entropy.defined() ? read_real(grad_entropy, per_row_offset(grad_entropy, r, L.inner)) : 0.0;
    const double h = grad_entropy.defined() ? read_real(entropy, per_row_offset(entropy, r, L.inner)) : 0.0;
    const F l = static_cast<F>(read_real(lse, per_row_offset(lse, r, L.inner)));
    const auto c = math::grad_coeffs<F, double>(a, b, h, inv_t);
    // The target's own entry, from the logits before an in-place write replaces them.
    const F d_y = math::clamp_exp_arg(static_cast<F>(cpu::load(row[id]) * static_cast<F>(inv_t)) - l);
    F p_y;
    if constexpr (std::is_same<F, double>::value)
      p_y = std::exp(d_y);
    else
      p_y = cpu::exp_nonpositive(d_y);
    const F g_y = c.zero ? F(0) : math::grad_element(c, p_y, d_y) + c.target;
    if constexpr (std::is_same<F, double>::value)
      grad_row_f64(row, g, L.vocab, inv_t, l, c);
    else
      grad_row_f32(row, g, L.vocab, static_cast<F>(inv_t), l, c);
    g[id] = cpu::store<In>(g_y);
  }
  err.raise(L.vocab);
}

}  // namespace

void token_logprobs_cpu(const TokenLogprobArgs& in, const TensorView& logp,
                        const TensorView& entropy, const TensorView& lse) {
  check_token_logprobs_args(in, logp, entropy, lse);
  check_cpu(in.logits, "logits");
  switch (in.logits.dtype) {
    case DType::Float32: return forward_rows<float, float, double>(in, logp, entropy, lse);
    case DType::BFloat16: return forward_rows<cpu::bf16, float, double>(in, logp, entropy, lse);
    case DType::Float16: return forward_rows<cpu::f16, float, double>(in, logp, entropy, lse);
    case DType::Float64: return forward_rows<double, double, double>(in, logp, entropy, lse);
    default: break;
  }
}

void token_logprobs_backward_cpu(const TokenLogprobArgs& in, const TensorView& lse,
                                 const TensorView& entropy, const TensorView& grad_logp,
                                 const TensorView& grad_entropy, const TensorView& grad_logits) {
  check_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
  check_cpu(in.logits, "logits");
  switch (in.logits.dtype) {
    case DType::Float32:
      return backward_rows<float, float>(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
    case DType::BFloat16:
      return backward_rows<cpu::bf16, float>(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
    case DType::Float16:
      return backward_rows<cpu::f16, float>(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
    case DType::Float64:
      return backward_rows<double, double>(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
    default: break;
  }
}

}  // namespace grpokit
