// Strided element access of any dtype and a fixed-order block reduction, for the estimator and
// correction kernels (cuda/estimators.cu, cuda/corrections.cu). Those kernels read many optional
// inputs whose dtypes vary independently (rewards bfloat16, lengths int32, mask uint8, ...), so an
// array carries its dtype and every read converts to double: the arithmetic is the CPU engine's
// (double), and the kernels are not instantiated per dtype combination.
//
// Host-emulatable: with GRPOKIT_CUDA_EMULATE (tests/cuda_emulation/cuda_emulator.hpp) no CUDA header is
// needed and half precision is left out.
#pragma once

#if !defined(GRPOKIT_CUDA_EMULATE)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cmath>
#include <cstdint>

#include "grpokit/tensor.hpp"

namespace grpokit {
namespace cuda {
namespace strided {

// A read-only strided array (1-D or 2-D); p == nullptr when the optional input is absent.
struct In {
  const void* p = nullptr;
  DType dt = DType::Float64;
  int64_t s0 = 0, s1 = 0;
  __device__ __host__ bool defined() const { return p != nullptr; }
};

struct Out {
  void* p = nullptr;
  DType dt = DType::Float64;
  int64_t s0 = 0, s1 = 0;
  __device__ __host__ bool defined() const { return p != nullptr; }
};

// An In or Out of a view (null for an undefined one).
template <class A>
A view_of(const TensorView& v) {
  A a;
  if (!v.defined()) return a;
  a.p = v.data;
  a.dt = v.dtype;
  a.s0 = v.strides[0];
  a.s1 = v.ndim > 1 ? v.strides[1] : 0;
  return a;
}
inline In in_of(const TensorView& v) { return view_of<In>(v); }
inline Out out_of(const TensorView& v) { return view_of<Out>(v); }

// Element (i, j) as double (j is ignored for 1-D arrays: s1 = 0).
__device__ inline double real_at(const In& a, int64_t i, int64_t j = 0) {
  const int64_t off = i * a.s0 + j * a.s1;
  switch (a.dt) {
    case DType::Float64:
      return static_cast<const double*>(a.p)[off];
    case DType::Float32:
      return static_cast<double>(static_cast<const float*>(a.p)[off]);
#if !defined(GRPOKIT_CUDA_EMULATE)
    case DType::BFloat16:
      return static_cast<double>(__bfloat162float(static_cast<const __nv_bfloat16*>(a.p)[off]));
    case DType::Float16:
      return static_cast<double>(__half2float(static_cast<const __half*>(a.p)[off]));
#endif
    case DType::Int32:
      return static_cast<double>(static_cast<const int32_t*>(a.p)[off]);
    case DType::Int64:
      return static_cast<double>(static_cast<const int64_t*>(a.p)[off]);
    default:
      return NAN;
  }
}

__device__ inline int64_t int_at(const In& a, int64_t i) {
  return a.dt == DType::Int64 ? static_cast<const int64_t*>(a.p)[i * a.s0]
                              : static_cast<int64_t>(static_cast<const int32_t*>(a.p)[i * a.s0]);
}

// A mask element: selected when non-zero (masks select, never multiply).
__device__ inline bool flag_at(const In& m, int64_t i, int64_t j) {
  const int64_t off = i * m.s0 + j * m.s1;
  switch (m.dt) {
    case DType::Bool:
    case DType::UInt8:
    case DType::Int8:
      return static_cast<const int8_t*>(m.p)[off] != 0;
    case DType::Int32:
      return static_cast<const int32_t*>(m.p)[off] != 0;
    case DType::Int64:
      return static_cast<const int64_t*>(m.p)[off] != 0;
    case DType::Float32:
      return static_cast<const float*>(m.p)[off] != 0.0f;
    case DType::Float64:
      return static_cast<const double*>(m.p)[off] != 0.0;
    default:
      return false;
  }
}

// Writes v rounded once to the array's dtype (bool: v != 0).
__device__ inline void store(const Out& o, int64_t i, int64_t j, double v) {
  const int64_t off = i * o.s0 + j * o.s1;
  switch (o.dt) {
    case DType::Float64:
      static_cast<double*>(o.p)[off] = v;
      break;
    case DType::Float32:
      static_cast<float*>(o.p)[off] = static_cast<float>(v);
      break;
#if !defined(GRPOKIT_CUDA_EMULATE)
    case DType::BFloat16:
      static_cast<__nv_bfloat16*>(o.p)[off] = __double2bfloat16(v);
      break;
    case DType::Float16:
      static_cast<__half*>(o.p)[off] = __double2half(v);
      break;
#endif
    case DType::Bool:
      static_cast<bool*>(o.p)[off] = v != 0.0;
      break;
    default:
      break;
  }
}

// Reduces K values per thread over the block in a fixed tree ('s' sum, 'm' min, 'M' max per slot);
// every thread gets the results. blockDim.x is a power of two; smem holds K × blockDim.x doubles.
// The order depends on blockDim.x only, so results are bitwise reproducible run to run.
template <int K>
__device__ void block_reduce(double (&v)[K], double* smem, const char* ops) {
  const int t = threadIdx.x, n = blockDim.x;
  for (int k = 0; k < K; ++k) smem[k * n + t] = v[k];
  __syncthreads();
  for (int w = n / 2; w > 0; w /= 2) {
    if (t < w)
      for (int k = 0; k < K; ++k) {
        const double a = smem[k * n + t], b = smem[k * n + t + w];
        smem[k * n + t] = ops[k] == 's' ? a + b : ops[k] == 'm' ? (b < a ? b : a) : (b > a ? b : a);
      }
    __syncthreads();
  }
  for (int k = 0; k < K; ++k) v[k] = smem[k * n];
  __syncthreads();  // smem may be reused by the next reduction
}

// Grid-stride loop bounds: kernels never assume the launch size.
__device__ inline int64_t first_index() {
  return static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ inline int64_t grid_stride() { return static_cast<int64_t>(gridDim.x) * blockDim.x; }

inline unsigned grid_for(int64_t n, int threads) {
  const int64_t blocks = (n + threads - 1) / threads;
  return static_cast<unsigned>(blocks < 1 ? 1 : (blocks > (1 << 20) ? (1 << 20) : blocks));
}

}  // namespace strided
}  // namespace cuda
}  // namespace grpokit
