// Fixed-order block reductions shared by the kernels: thread-strided partials, then a fixed
// shuffle/shared-memory tree, so a result never depends on scheduling (bitwise reproducible).
// No CUDA headers: tests/cuda_emulation/emulate_*.cpp compile the kernels that include it on the host.
#pragma once

namespace grpokit {
namespace cuda {

struct Sum {
  template <class V>
  __device__ V operator()(V x, V y) const {
    return x + y;
  }
};
struct Min {
  template <class V>
  __device__ V operator()(V x, V y) const {
    return y < x ? y : x;
  }
};
struct Max {
  template <class V>
  __device__ V operator()(V x, V y) const {
    return y > x ? y : x;
  }
};

// Reduces K values per thread over the block; the results are in thread 0's v. blockDim.x is a
// multiple of 32; `smem` holds K × 32 values.
template <class V, int K, class Op>
__device__ void block_reduce(V (&v)[K], V* smem, Op op, V identity) {
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
#pragma unroll
  for (int k = 0; k < K; ++k)
    for (int off = 16; off > 0; off >>= 1) v[k] = op(v[k], __shfl_down_sync(0xffffffffu, v[k], off));
  __syncthreads();  // smem may still be read by a previous reduction
  if (lane == 0)
#pragma unroll
    for (int k = 0; k < K; ++k) smem[k * 32 + warp] = v[k];
  __syncthreads();
  if (warp == 0) {
#pragma unroll
    for (int k = 0; k < K; ++k) {
      V x = lane < nwarps ? smem[k * 32 + lane] : identity;
      for (int off = 16; off > 0; off >>= 1) x = op(x, __shfl_down_sync(0xffffffffu, x, off));
      v[k] = x;
    }
  }
}

}  // namespace cuda
}  // namespace grpokit
