// A host-thread stand-in for the CUDA execution model, so the kernels of cuda/*.cu run on machines
// without a GPU (the emulate_*.cpp tests here, registered with ctest by tests/cpp/CMakeLists.txt):
// one std::thread per CUDA thread; __syncthreads and warp shuffles are std::barrier rendezvous, so a
// missing or divergent barrier deadlocks (ctest's timeout ends it) and shared-memory reuse follows the
// same order as on the device. __shared__ variables are function statics (blocks run one after another).
// It does not exercise the device compiler or device math (__expf is std::exp); __nv_bfloat16 and
// __half are host structs with the device's conversions (round to nearest even). The CUDA headers are
// empty files (the build makes them), the runtime calls the kernels' host code makes are defined here.
//
// Include this first, then the .cu file. Launches go through cuda/launch.cuh.
//
// Launch size: blocks are capped at EMULATE_MAX_BLOCK threads (environment; default 64, at most
// 1024), so a few cases can run at the real launch size (reductions over 8 to 32 warps, block-stride
// loops). A launch the device would refuse (empty grid or block, block > 1024, grid > 2^31 − 1) is
// reported on stderr and counted in g_emulate_launch_errors, and runs nothing.
#pragma once

#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define GRPOKIT_CUDA_EMULATE 1
#define GRPOKIT_EMULATE_HALF 1
#define GRPOKIT_CUDA_ARCHS "none (host emulation)"
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

// ---- CUDA runtime stand-ins ---------------------------------------------------------------------

using cudaStream_t = void*;
static cudaStream_t const cudaStreamLegacy = nullptr;
static cudaStream_t const cudaStreamPerThread = nullptr;
using cudaError_t = int;
constexpr cudaError_t cudaSuccess = 0;
inline cudaError_t cudaGetLastError() { return cudaSuccess; }
inline const char* cudaGetErrorString(cudaError_t) { return "no error"; }
inline cudaError_t cudaGetDevice(int* d) {
  *d = 0;
  return cudaSuccess;
}
inline cudaError_t cudaSetDevice(int) { return cudaSuccess; }
inline cudaError_t cudaGetDeviceCount(int* n) {
  *n = 0;
  return cudaSuccess;
}
inline cudaError_t cudaRuntimeGetVersion(int* v) {
  *v = 0;
  return cudaSuccess;
}
enum cudaDeviceAttr { cudaDevAttrComputeCapabilityMajor };
inline cudaError_t cudaDeviceGetAttribute(int* v, cudaDeviceAttr, int) {
  *v = 8;  // an A100: cuBLAS's workspace is 4 MiB
  return cudaSuccess;
}
inline cudaError_t cudaMemsetAsync(void* p, int v, size_t n, cudaStream_t) {
  std::memset(p, v, n);
  return cudaSuccess;
}

struct dim3 {
  unsigned x = 1, y = 1, z = 1;
  dim3(unsigned x_ = 1, unsigned y_ = 1, unsigned z_ = 1) : x(x_), y(y_), z(z_) {}
};
struct uint4 {
  unsigned x, y, z, w;
};

inline float __expf(float x) { return std::exp(x); }

// ---- bfloat16 / float16 -------------------------------------------------------------------------

struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  _Float16 v;
};
inline float __bfloat162float(__nv_bfloat16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {  // round to nearest even, NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (f != f) return {static_cast<uint16_t>((u >> 16) | 0x40u)};
  return {static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline float __half2float(__half x) { return static_cast<float>(x.v); }
inline __half __float2half(float f) { return {static_cast<_Float16>(f)}; }

// ---- threads, barriers, shuffles, atomics -------------------------------------------------------

static thread_local dim3 threadIdx;
static dim3 blockIdx, blockDim, gridDim;
static std::barrier<>* g_block_barrier = nullptr;
static std::vector<std::unique_ptr<std::barrier<>>> g_warp_barriers;
static std::mutex g_atomic_mutex;
static int g_emulate_launch_errors = 0;

// Threads per emulated block: EMULATE_MAX_BLOCK (default 64: 2 warps, so the cross-warp reduction
// path runs; the kernels read blockDim and never assume the launch size). A test may set it.
inline unsigned& emulate_max_block() {
  static unsigned n = [] {
    const char* e = std::getenv("EMULATE_MAX_BLOCK");
    const long v = e ? std::strtol(e, nullptr, 10) : 64;
    return static_cast<unsigned>(v < 1 ? 1 : (v > 1024 ? 1024 : v));
  }();
  return n;
}

inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }

// One exchange slot per thread; the warp's rendezvous before and after makes it a shuffle.
template <class V>
V warp_exchange(V v, unsigned from, bool valid) {
  static V slot[1024];
  const unsigned t = threadIdx.x, w = t >> 5;
  slot[t] = v;
  g_warp_barriers[w]->arrive_and_wait();
  const V r = valid ? slot[from] : v;
  g_warp_barriers[w]->arrive_and_wait();
  return r;
}
template <class V>
V __shfl_down_sync(unsigned, V v, int off) {
  const unsigned lane = threadIdx.x & 31u;
  const bool valid = lane + static_cast<unsigned>(off) < 32u && threadIdx.x + off < blockDim.x;
  return warp_exchange(v, threadIdx.x + off, valid);
}
template <class V>
V __shfl_xor_sync(unsigned, V v, int mask) {  // the kernels that use it launch whole warps
  const unsigned from = threadIdx.x ^ static_cast<unsigned>(mask);
  return warp_exchange(v, from, from < blockDim.x);
}

inline unsigned long long atomicMin(unsigned long long* p, unsigned long long v) {
  std::lock_guard<std::mutex> lock(g_atomic_mutex);
  const unsigned long long old = *p;
  if (v < old) *p = v;
  return old;
}

template <class V>
V atomicAdd(V* p, V v) {  // integer histograms and counts (the top-entropy selection, Adam's histogram)
  std::lock_guard<std::mutex> lock(g_atomic_mutex);
  const V old = *p;
  *p = old + v;
  return old;
}

// ---- launches (cuda/launch.cuh) -----------------------------------------------------------------

inline unsigned long long emulate_extent(unsigned long long n) { return n; }
inline unsigned long long emulate_extent(const dim3& d) { return d.x; }

inline bool emulate_config_ok(unsigned long long grid, unsigned long long block) {
  if (grid == 0 || grid > 0x7FFFFFFFull || block == 0 || block > 1024) {  // cudaErrorInvalidConfiguration
    std::fprintf(stderr, "EMULATE: invalid launch configuration (grid %llu, block %llu)\n", grid, block);
    ++g_emulate_launch_errors;
    return false;
  }
  gridDim = dim3(static_cast<unsigned>(grid));
  return true;
}

// Blocks run one after another with at most emulate_max_block() threads each.
template <class G, class B, class F>
void emulate_launch(G grid_arg, B block_arg, F&& kernel) {
  const unsigned long long grid = emulate_extent(grid_arg), requested = emulate_extent(block_arg);
  if (!emulate_config_ok(grid, requested)) return;
  const unsigned cap = emulate_max_block();
  const unsigned block = static_cast<unsigned>(requested < cap ? requested : cap);
  blockDim = dim3(block);
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx = dim3(b);
    std::barrier<> bar(block);
    g_block_barrier = &bar;
    g_warp_barriers.clear();
    for (unsigned w = 0; w * 32 < block; ++w)  // a partial last warp rendezvouses its own threads
      g_warp_barriers.emplace_back(new std::barrier<>(block - w * 32 < 32 ? block - w * 32 : 32));
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([&, t] {
        threadIdx = dim3(t);
        kernel();
      });
    for (auto& th : threads) th.join();
  }
}

// Kernels whose threads never cooperate (one element or row per thread, the grid covers the work):
// every thread of the requested launch, one after another on this host thread.
template <class G, class B, class F>
void emulate_flat(G grid_arg, B block_arg, F&& kernel) {
  const unsigned long long grid = emulate_extent(grid_arg), block = emulate_extent(block_arg);
  if (!emulate_config_ok(grid, block)) return;
  blockDim = dim3(static_cast<unsigned>(block));
  g_block_barrier = nullptr;
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx = dim3(b);
    for (unsigned t = 0; t < block; ++t) {
      threadIdx = dim3(t);
      kernel();
    }
  }
}

// ---- element types of the test data ---------------------------------------------------------------

#include <type_traits>

#include "grpokit/math/strided.hpp"

// The DType of an element type, and values through its compute type (math/strided.hpp: the kernels'
// own conversions, rounded to nearest even).
template <class S>
grpokit::DType dtype_of() {
  if constexpr (std::is_same_v<S, double>) return grpokit::DType::Float64;
  if constexpr (std::is_same_v<S, float>) return grpokit::DType::Float32;
  if constexpr (std::is_same_v<S, __nv_bfloat16>) return grpokit::DType::BFloat16;
  return grpokit::DType::Float16;
}
template <class S>
double to_d(S x) {
  return static_cast<double>(grpokit::math::to_compute(x));
}
template <class S>
S from_d(double v) {
  return grpokit::math::from_compute<S>(static_cast<typename grpokit::math::Compute<S>::type>(v));
}
