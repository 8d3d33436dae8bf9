// Token log-probabilities, entropies and the logits gradient on the GPU, from the formulas of
// grpokit/math/logprobs.hpp.
//
// One block per row (rows on grid.x, so any number of tokens fits). Forward: each thread streams its
// share of the row once with 16-byte loads, folding every vector into an online (max, Σe, Σe·d)
// state; the block then merges the thread states. Backward: one read and one write per element,
// from the saved log-sum-exp (and entropy). Value problems cannot raise without synchronising, so
// a token id outside [0, V) gives NaN outputs for its row (the Python layer's check_finite=True
// looks for them), as do NaN/+inf logits.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "grpokit_cuda.hpp"

namespace grpokit {
namespace cuda {
namespace {

constexpr int kThreads = 512;

__device__ __forceinline__ float to_float(float x) { return x; }
__device__ __forceinline__ float to_float(__nv_bfloat16 x) { return __bfloat162float(x); }
__device__ __forceinline__ float to_float(__half x) { return __half2float(x); }

template <class T>
__device__ __forceinline__ T from_float(float v);
template <>
__device__ __forceinline__ float from_float<float>(float v) { return v; }
template <>
__device__ __forceinline__ __nv_bfloat16 from_float<__nv_bfloat16>(float v) { return __float2bfloat16(v); }
template <>
__device__ __forceinline__ __half from_float<__half>(float v) { return __float2half(v); }

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
    return f64 ? static_cast<float>(static_cast<const double*>(data)[o])
               : static_cast<const float*>(data)[o];
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

struct Rows {
  int64_t rows, inner, vocab;
  int64_t s0, s1;  // logits strides of the leading dims (elements)
  int ndim;
  __device__ int64_t offset(int64_t r) const {
    return ndim == 3 ? (r / inner) * s0 + (r % inner) * s1 : r * s0;
  }
};

Rows rows_of(const TensorView& x) {
  const RowLayout L = RowLayout::of(x);
  return Rows{L.rows, L.inner, L.vocab, x.strides[0], x.ndim == 3 ? x.strides[1] : 0, x.ndim};
}

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

__device__ __forceinline__ math::RowState<float> warp_merge(math::RowState<float> st) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    math::ChunkStats<float> o{__shfl_xor_sync(0xffffffffu, st.max, off),
                              __shfl_xor_sync(0xffffffffu, st.sum, off),
                              __shfl_xor_sync(0xffffffffu, st.dot, off)};
    st.merge(o);
  }
  return st;
}

// Folds a run of values into a thread's state: stats relative to the run's max, then one merge.
template <int N>
__device__ __forceinline__ void fold(math::RowState<float>& st, const float (&z)[N]) {
  float m = z[0];
  bool bad = false;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    m = fmaxf(m, z[k]);
    bad |= (z[k] != z[k]) || z[k] == INFINITY;
  }
  if (bad) {
    st.merge(math::ChunkStats<float>{INFINITY, NAN, NAN});
    return;
  }
  if (!(m > -INFINITY)) return;
  float s = 0.0f, t = 0.0f;
#pragma unroll
  for (int k = 0; k < N; ++k) {
    const float d = math::clamp_exp_arg(z[k] - m);
    const float e = exp_or_zero(d);
    s += e;
    t += e * d;
  }
  st.merge(math::ChunkStats<float>{m, s, t});
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* x, Rows L, PerRow ids, float inv_t, PerRow logp, PerRow entropy,
                   PerRow lse) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  math::RowState<float> st;
  for_row(
      row, L.vocab, [&](int64_t, float v) { fold<1>(st, {v * inv_t}); },
      [&](int64_t, const float* v) {
        constexpr int kVec = 16 / sizeof(T);
        float z[kVec];
#pragma unroll
        for (int k = 0; k < kVec; ++k) z[k] = v[k] * inv_t;
        fold<kVec>(st, z);
      });
  st = warp_merge(st);
  __shared__ float sm[kThreads / 32], ss[kThreads / 32], sd[kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) sm[warp] = st.max, ss[warp] = st.sum, sd[warp] = st.dot;
  __syncthreads();
  if (warp != 0) return;
  st = math::RowState<float>{};
  if (lane < static_cast<int>(blockDim.x / 32)) st.merge(math::ChunkStats<float>{sm[lane], ss[lane], sd[lane]});
  st = warp_merge(st);
  if (lane != 0) return;
  const int64_t id = ids.id(r, L.inner);
  if (id < 0 || id >= L.vocab) {
    logp.write(r, L.inner, NAN);
    lse.write(r, L.inner, NAN);
    entropy.write(r, L.inner, NAN);
    return;
  }
  const float l = st.lse();
  logp.write(r, L.inner, to_float(row[id]) * inv_t - l);
  lse.write(r, L.inner, l);
  entropy.write(r, L.inner, st.entropy());
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* x, T* g, int64_t gs0, int64_t gs1, Rows L, PerRow ids, float inv_t,
                    PerRow lse, PerRow entropy, PerRow grad_logp, PerRow grad_entropy) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  T* grow = g + (L.ndim == 3 ? (r / L.inner) * gs0 + (r % L.inner) * gs1 : r * gs0);
  const int64_t id = ids.id(r, L.inner);
  const float l = lse.real(r, L.inner);
  const bool bad_id = id < 0 || id >= L.vocab;
  const auto c = math::grad_coeffs<float, float>(grad_logp.real(r, L.inner),
                                                 grad_entropy.real(r, L.inner),
                                                 grad_entropy.data ? entropy.real(r, L.inner) : 0.0f,
                                                 inv_t);
  // The target's logit is read before any thread overwrites it (in-place gradients).
  const float z_y = (threadIdx.x == 0 && !bad_id) ? to_float(row[id]) * inv_t : 0.0f;
  __syncthreads();
  constexpr int kVec = 16 / sizeof(T);
  const bool vec_ok = (reinterpret_cast<uintptr_t>(grow) % 16) == (reinterpret_cast<uintptr_t>(row) % 16);
  auto elem = [&](float v) {
    if (bad_id) return NAN;
    if (c.zero) return 0.0f;
    const float d = math::clamp_exp_arg(v * inv_t - l);
    return math::grad_element(c, exp_or_zero(d), d);
  };
  if (vec_ok) {
    for_row(
        row, L.vocab, [&](int64_t i, float v) { grow[i] = from_float<T>(elem(v)); },
        [&](int64_t i, const float* v) {
          uint4 raw;
          T* e = reinterpret_cast<T*>(&raw);
#pragma unroll
          for (int k = 0; k < kVec; ++k) e[k] = from_float<T>(elem(v[k]));
          *reinterpret_cast<uint4*>(grow + i) = raw;
        });
  } else {
    for (int64_t i = threadIdx.x; i < L.vocab; i += blockDim.x) grow[i] = from_float<T>(elem(to_float(row[i])));
  }
  __syncthreads();
  if (threadIdx.x == 0 && !bad_id && !c.zero) {
    const float d = math::clamp_exp_arg(z_y - l);
    grow[id] = from_float<T>(math::grad_element(c, exp_or_zero(d), d) + c.target);
  }
}

int threads_for(int64_t vocab) {
  // Small vocabularies do not need 512 threads; keep whole warps.
  int t = 32;
  while (t < kThreads && t * 8 < vocab) t *= 2;
  return t;
}

void check_float_dtype(const TensorView& x) {
  if (x.dtype == DType::Float64)
    not_implemented("logits: float64 logits are supported on the CPU only; on the GPU pass "
                    "float32, bfloat16 or float16");
}

}  // namespace

void token_logprobs(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                    const TensorView& lse, std::intptr_t stream) {
  check_token_logprobs_args(in, logp, entropy, lse);
  check_cuda_device(in.logits, "logits");
  check_float_dtype(in.logits);
  const Rows L = rows_of(in.logits);
  if (L.rows == 0) return;
  if (L.rows > 0x7fffffff) value_error("logits: at most 2^31 − 1 rows per call, got ", L.rows);
  DeviceGuard guard(in.logits.device.index);
  const cudaStream_t s = as_stream(stream);
  const float inv_t = static_cast<float>(1.0 / in.temperature);
  const dim3 grid(static_cast<unsigned>(L.rows));
  const int threads = threads_for(L.vocab);
  const PerRow ids = PerRow::of(in.token_ids), lp = PerRow::of(logp), h = PerRow::of(entropy),
               l = PerRow::of(lse);
  switch (in.logits.dtype) {
    case DType::Float32:
      forward_kernel<<<grid, threads, 0, s>>>(in.logits.ptr<const float>(), L, ids, inv_t, lp, h, l);
      break;
    case DType::BFloat16:
      forward_kernel<<<grid, threads, 0, s>>>(in.logits.ptr<const __nv_bfloat16>(), L, ids, inv_t, lp, h, l);
      break;
    default:
      forward_kernel<<<grid, threads, 0, s>>>(in.logits.ptr<const __half>(), L, ids, inv_t, lp, h, l);
      break;
  }
  check_launch("token_logprobs");
}

void token_logprobs_backward(const TokenLogprobArgs& in, const TensorView& lse,
                             const TensorView& entropy, const TensorView& grad_logp,
                             const TensorView& grad_entropy, const TensorView& grad_logits,
                             std::intptr_t stream) {
  check_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
  check_cuda_device(in.logits, "logits");
  check_float_dtype(in.logits);
  const Rows L = rows_of(in.logits);
  if (L.rows == 0) return;
  if (L.rows > 0x7fffffff) value_error("logits: at most 2^31 − 1 rows per call, got ", L.rows);
  DeviceGuard guard(in.logits.device.index);
  const cudaStream_t s = as_stream(stream);
  const float inv_t = static_cast<float>(1.0 / in.temperature);
  const dim3 grid(static_cast<unsigned>(L.rows));
  const int threads = threads_for(L.vocab);
  const int64_t gs0 = grad_logits.strides[0], gs1 = grad_logits.ndim == 3 ? grad_logits.strides[1] : 0;
  const PerRow ids = PerRow::of(in.token_ids), l = PerRow::of(lse), h = PerRow::of(entropy),
               ga = PerRow::of(grad_logp), gb = PerRow::of(grad_entropy);
  switch (in.logits.dtype) {
    case DType::Float32:
      backward_kernel<<<grid, threads, 0, s>>>(in.logits.ptr<const float>(), grad_logits.ptr<float>(),
                                               gs0, gs1, L, ids, inv_t, l, h, ga, gb);
      break;
    case DType::BFloat16:
      backward_kernel<<<grid, threads, 0, s>>>(in.logits.ptr<const __nv_bfloat16>(),
                                               grad_logits.ptr<__nv_bfloat16>(), gs0, gs1, L, ids,
                                               inv_t, l, h, ga, gb);
      break;
    default:
      backward_kernel<<<grid, threads, 0, s>>>(in.logits.ptr<const __half>(), grad_logits.ptr<__half>(),
                                               gs0, gs1, L, ids, inv_t, l, h, ga, gb);
      break;
  }
  check_launch("token_logprobs_backward");
}

}  // namespace cuda
}  // namespace grpokit
