// Strided element access of any dtype (grpokit/math/strided.hpp) and a fixed-order block reduction,
// for the estimator and correction kernels (cuda/estimators.cu, cuda/corrections.cu): every read
// converts to double, so the arithmetic is the CPU engine's (double).
//
// Host-emulatable: with GRPOKIT_CUDA_EMULATE (tests/cuda_emulation/cuda_emulator.hpp) no CUDA header is
// needed; the emulator's 16-bit types are read, not written (math::store_real).
#pragma once

#if !defined(GRPOKIT_CUDA_EMULATE)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cmath>
#include <cstdint>

#include "grpokit/math/strided.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {
namespace cuda {
namespace strided {

// Strided arrays of any dtype and their element access (grpokit/math/strided.hpp, shared with the CPU
// engine); p == nullptr when the optional input is absent.
using In = math::Strided;
using Out = math::StridedOut;
inline In in_of(const TensorView& v) { return math::strided_of<In>(v); }
inline Out out_of(const TensorView& v) { return math::strided_of<Out>(v); }

// Element (i, j) as double (j is ignored for 1-D arrays: s1 = 0), as int64, as a flag.
__device__ inline double real_at(const In& a, int64_t i, int64_t j = 0) { return a.real(i, j); }
__device__ inline int64_t int_at(const In& a, int64_t i) { return a.integer(i); }
__device__ inline bool flag_at(const In& m, int64_t i, int64_t j) { return m.flag(i, j); }

// Writes v rounded once to the array's dtype (bool: v != 0).
__device__ inline void store(const Out& o, int64_t i, int64_t j, double v) {
  math::store_real(o.p, o.dt, o.at(i, j), v);
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
