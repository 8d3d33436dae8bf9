// Device building blocks of the token log-probability kernels (logits and hidden-state paths):
// 16-bit conversions, vectorised row traversal, and block-wide row reductions built on the
// RowState/ChunkStats merges of grpokit/math/logprobs.hpp.
#pragma once

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "grpokit/math/strided.hpp"
#include "grpokit/tensor.hpp"
#include "launch.cuh"

namespace grpokit {
namespace cuda {
namespace rows {

constexpr int kThreads = 512;

// Threads per row: whole warps, about 8 entries each, at most kThreads.
inline int threads_for(int64_t n) {
  int t = 32;
  while (t < kThreads && t * 8 < n) t *= 2;
  return t;
}

// float32 / bfloat16 / float16 elements to float and back (grpokit/math/strided.hpp).
template <class T>
__device__ __forceinline__ float to_float(T x) {
  return math::to_compute(x);
}
template <class T>
__device__ __forceinline__ T from_float(float v) {
  return math::from_compute<T>(v);
}

// Calls f(T{}) with T the device type of a float32 / bfloat16 / float16 array (host side).
template <class F>
void dispatch_float(DType d, F&& f) {
  switch (d) {
    case DType::BFloat16:
      f(__nv_bfloat16{});
      return;
    case DType::Float16:
      f(__half{});
      return;
    default:
      f(float{});
      return;
  }
}

// Fast exp of a clamped argument; exactly 0 at the clamp (a −inf logit), as on the CPU.
__device__ __forceinline__ float exp_or_zero(float d) {
  return d <= math::min_exp_arg<float>() ? 0.0f : __expf(d);
}

// A per-row array of the leading shape (N,) or (B, T).
struct PerRow {
  void* data = nullptr;
  int64_t s0 = 0, s1 = 0;
  int ndim = 1;
  bool f64 = false;  // float64 (else float32); for ids: int64 (else int32)

  static PerRow of(const TensorView& t) {
    PerRow p;
    if (!t.defined()) return p;
    p.data = t.data;
    p.ndim = t.ndim;
    p.s0 = t.strides[0];
    p.s1 = t.ndim == 2 ? t.strides[1] : 0;
    p.f64 = t.dtype == DType::Float64 || t.dtype == DType::Int64;
    return p;
  }
  __device__ int64_t offset(int64_t r, int64_t inner) const {
    return ndim == 2 ? (r / inner) * s0 + (r % inner) * s1 : r * s0;
  }
  __device__ float real(int64_t r, int64_t inner) const {
    if (data == nullptr) return 0.0f;
    const int64_t o = offset(r, inner);
    return f64 ? static_cast<float>(static_cast<const double*>(data)[o]) : static_cast<const float*>(data)[o];
  }
  __device__ double real64(int64_t r, int64_t inner) const {  // the value as given (sampler parameters)
    const int64_t o = offset(r, inner);
    return f64 ? static_cast<const double*>(data)[o]
               : static_cast<double>(static_cast<const float*>(data)[o]);
  }
  __device__ int64_t id(int64_t r, int64_t inner) const {
    const int64_t o = offset(r, inner);
    return f64 ? static_cast<const int64_t*>(data)[o]
               : static_cast<int64_t>(static_cast<const int32_t*>(data)[o]);
  }
  __device__ void write(int64_t r, int64_t inner, float v) const {
    if (data != nullptr) static_cast<float*>(data)[offset(r, inner)] = v;
  }
};

// Rows of (N, V) or (B, T, V) logits (or of their gradient: the same layout with its own strides).
struct Rows {
  int64_t rows, inner, vocab;
  int64_t s0, s1;  // strides of the leading dims (elements)
  int ndim;
  __device__ int64_t offset(int64_t r) const {
    return ndim == 3 ? (r / inner) * s0 + (r % inner) * s1 : r * s0;
  }
  static Rows of(const TensorView& x) {
    const RowLayout L = RowLayout::of(x);
    return Rows{L.rows, L.inner, L.vocab, x.strides[0], x.ndim == 3 ? x.strides[1] : 0, x.ndim};
  }
};

// What the launchers of the logits kernels check and derive before launching one block per row.
struct RowLaunch {
  Rows L;
  cudaStream_t stream;
  float inv_t;
  dim3 grid;
  int threads;

  RowLaunch(const TokenLogprobArgs& in, std::intptr_t s) {
    check_cuda_device(in.logits, "logits");
    if (in.logits.dtype == DType::Float64)
      not_implemented(
          "logits: float64 logits are supported on the CPU only; on the GPU pass "
          "float32, bfloat16 or float16");
    L = Rows::of(in.logits);
    if (L.rows > 0x7fffffff) value_error("logits: at most 2^31 − 1 rows per call, got ", L.rows);
    stream = as_stream(s);
    inv_t = static_cast<float>(1.0 / in.temperature);
    grid = dim3(static_cast<unsigned>(L.rows));
    threads = threads_for(L.vocab);
  }
};

// Visits the row's elements, `f(index, value)` for scalars and `fv(index, values[kVec])` for aligned
// 16-byte vectors; each thread takes a strided share. Threads of a warp read consecutive vectors.
template <class T, class F, class FV>
__device__ __forceinline__ void for_row(const T* row, int64_t n, F&& f, FV&& fv) {
  constexpr int kVec = 16 / sizeof(T);
  const uintptr_t addr = reinterpret_cast<uintptr_t>(row);
  int64_t head = addr % sizeof(T) != 0 ? n : static_cast<int64_t>(((16 - addr % 16) % 16) / sizeof(T));
  if (head > n) head = n;
  for (int64_t i = threadIdx.x; i < head; i += blockDim.x) f(i, to_float(row[i]));
  const int64_t nvec = (n - head) / kVec;
  const uint4* vp = reinterpret_cast<const uint4*>(row + head);
  for (int64_t v = threadIdx.x; v < nvec; v += blockDim.x) {
    const uint4 raw = vp[v];
    const T* e = reinterpret_cast<const T*>(&raw);
    float vals[kVec];
#pragma unroll
    for (int k = 0; k < kVec; ++k) vals[k] = to_float(e[k]);
    fv(head + v * kVec, vals);
  }
  for (int64_t i = head + nvec * kVec + threadIdx.x; i < n; i += blockDim.x) f(i, to_float(row[i]));
}

// kSq: the states also carry Σ exp² (for Σπ²); only those instantiations shuffle and sum it.
// States hold raw maxima (the temperature rule of grpokit/math/logprobs.hpp); inv_t scales the gaps.
template <bool kSq>
__device__ __forceinline__ math::RowState<float, kSq> warp_merge(math::RowState<float, kSq> st, float inv_t) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    math::ChunkStats<float> o{__shfl_xor_sync(0xffffffffu, st.max, off),
                              __shfl_xor_sync(0xffffffffu, st.sum, off),
                              __shfl_xor_sync(0xffffffffu, st.dot, off)};
    if constexpr (kSq) o.sq = __shfl_xor_sync(0xffffffffu, st.sq, off);
    st.merge(o, inv_t);
  }
  return st;
}

// Folds a run of raw values into a thread's state. Usually the run stays below the running maximum
// and is added relative to it directly; a new maximum takes one merge (a rescale of the state).
template <bool kSq, int N>
__device__ __forceinline__ void fold(math::RowState<float, kSq>& st, const float (&z)[N], float inv_t) {
  float m = z[0];
  bool bad = false;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    m = fmaxf(m, z[k]);
    bad |= (z[k] != z[k]) || z[k] == INFINITY;
  }
  if (bad) {
    st.merge(math::ChunkStats<float>{INFINITY, NAN, NAN}, inv_t);
    return;
  }
  if (!(m > -INFINITY)) return;
  const float ref = m <= st.max ? st.max : m;
  float s = 0.0f, t = 0.0f, q = 0.0f;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    const float d = math::clamp_exp_arg(math::scaled_gap(z[k], ref, inv_t));
    const float e = exp_or_zero(d);
    s += e;
    t += e * d;
    if constexpr (kSq) q += d < math::min_sq_arg<float>() ? 0.0f : e * e;  // the CPU's cut-off
  }
  if (ref == st.max) {
    st.sum += s;
    st.dot += t;
    if constexpr (kSq) st.sq += q;
  } else {
    st.merge(math::ChunkStats<float>{m, s, t, q}, inv_t);
  }
}

// The state of one row (n entries, temperature 1/inv_t; the maximum raw) reduced over the block; valid
// in thread 0. Needs blockDim.x a multiple of 32, at most kThreads.
template <bool kSq, class T>
__device__ __forceinline__ math::RowState<float, kSq> block_row_state(const T* row, int64_t n, float inv_t) {
  math::RowState<float, kSq> st;
  for_row(
      row, n, [&](int64_t, float v) { fold<kSq, 1>(st, {v}, inv_t); },
      [&](int64_t, const float* v) {
        constexpr int kVec = 16 / sizeof(T);
        float z[kVec];
#pragma unroll
        for (int k = 0; k < kVec; ++k) z[k] = v[k];
        fold<kSq, kVec>(st, z, inv_t);
      });
  st = warp_merge(st, inv_t);
  __shared__ float sm[kThreads / 32], ss[kThreads / 32], sd[kThreads / 32], sq[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    sm[warp] = st.max, ss[warp] = st.sum, sd[warp] = st.dot;
    if constexpr (kSq) sq[warp] = st.sq;
  }
  __syncthreads();
  st = math::RowState<float, kSq>{};
  if (warp == 0) {
    if (lane < static_cast<int>(blockDim.x / 32))
      st.merge(math::ChunkStats<float>{sm[lane], ss[lane], sd[lane], kSq ? sq[lane] : 0.0f}, inv_t);
    st = warp_merge(st, inv_t);
  }
  return st;
}

// Where the gradient's d = (x − shift)/τ − c0 comes from, in every thread: (0, lse) from the saved lse
// within math::exact_lse_bound, else the row's raw maximum and log Σ, recomputed (an extra read of the
// row, as the CPU engine does). lse is the same in every thread of the block (the branch is uniform).
struct GradShift {
  float shift, c0;
};

template <class T>
__device__ __forceinline__ GradShift block_grad_shift(const T* row, int64_t n, float inv_t, float lse) {
  if (fabsf(lse) <= static_cast<float>(math::exact_lse_bound<float>())) return {0.0f, lse};
  __shared__ GradShift s;
  const math::RowState<float, false> st = block_row_state<false>(row, n, inv_t);
  if (threadIdx.x == 0) s = {st.max, logf(st.sum)};
  __syncthreads();
  const GradShift r = s;
  __syncthreads();  // s is read by every thread before a later call may rewrite it
  return r;
}

// d = (x − shift)/τ − c0 clamped to [min_exp_arg, 0] (the forward's lse bounds every scaled logit;
// rounding must not push d above 0, where exp overflows).
__device__ __forceinline__ float grad_gap(float x, const GradShift& g, float inv_t) {
  const float d = math::clamp_exp_arg(math::scaled_gap(x, g.shift, inv_t) - g.c0);
  return d > 0.0f ? 0.0f : d;
}

// One row of the logits gradient, written to grow (T = U and grow = row is in place). id_here is
// the target's index in this row (or −1: elsewhere or out of range), x_y its raw logit, read by the
// caller before any write; bad marks an out-of-range token (the row becomes NaN).
template <class T, class U>
__device__ __forceinline__ void block_grad_row(const T* row, U* grow, int64_t n, float inv_t,
                                               const GradShift& gs, const math::GradCoeffs<float>& c,
                                               int64_t id_here, float x_y, bool bad) {
  constexpr int kVec = 16 / sizeof(T);
  auto elem = [&](float v) {
    if (bad) return NAN;
    if (c.zero) return 0.0f;
    const float d = grad_gap(v, gs, inv_t);
    return math::grad_element(c, exp_or_zero(d), d);
  };
  const bool vec_ok = sizeof(T) == sizeof(U) &&
                      reinterpret_cast<uintptr_t>(grow) % 16 == reinterpret_cast<uintptr_t>(row) % 16;
  if (vec_ok) {
    for_row(
        row, n, [&](int64_t i, float v) { grow[i] = from_float<U>(elem(v)); },
        [&](int64_t i, const float* v) {
          uint4 raw;
          U* e = reinterpret_cast<U*>(&raw);
#pragma unroll
          for (int k = 0; k < kVec; ++k) e[k] = from_float<U>(elem(v[k]));
          *reinterpret_cast<uint4*>(grow + i) = raw;
        });
  } else {
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) grow[i] = from_float<U>(elem(to_float(row[i])));
  }
  __syncthreads();
  if (threadIdx.x == 0 && id_here >= 0 && !bad && !c.zero) {
    const float d = grad_gap(x_y, gs, inv_t);
    grow[id_here] = from_float<U>(math::grad_element(c, exp_or_zero(d), d) + c.target);
  }
}

}  // namespace rows
}  // namespace cuda
}  // namespace grpokit
