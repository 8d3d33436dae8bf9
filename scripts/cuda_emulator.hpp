// A host-thread stand-in for the CUDA execution model, so kernels (.cu files written with the
// GRPOKIT_CUDA_EMULATE guards) run on machines without a GPU: one std::thread per CUDA thread;
// __syncthreads and warp shuffles are std::barrier rendezvous, so a missing or divergent barrier
// deadlocks (the scripts run under a timeout) and shared-memory reuse follows the same order as on
// the device. __shared__ variables are function statics (blocks run one after another).
//
// Include this first, then the .cu file. Used by scripts/emulate_cuda_loss.cpp, emulate_cuda_adam.cpp and
// scripts/emulate_cuda_estimators.cpp. It does not exercise the device compiler, device math or half
// precision unless the includer defines GRPOKIT_EMULATE_HALF first: then __nv_bfloat16 / __half are
// host structs with the device's conversions (round to nearest even), for kernels that opt in.
//
// Launch size: blocks are capped at EMULATE_MAX_BLOCK threads (environment; default 64, at most
// 1024), so a few cases can run at the real launch size (reductions over 8 or 32 warps, block-stride
// loops). A launch the device would refuse (empty grid or block, block > 1024, grid > 2^31 − 1) is
// reported on stderr and counted in g_emulate_launch_errors, and runs nothing.
#pragma once

#include <barrier>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <thread>
#include <vector>

#define GRPOKIT_CUDA_EMULATE 1
#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

using cudaStream_t = void*;
struct Dim3 {
  unsigned x = 0, y = 1, z = 1;
};
static thread_local Dim3 threadIdx;
static Dim3 blockIdx, blockDim, gridDim;
static std::barrier<>* g_block_barrier = nullptr;
static std::vector<std::unique_ptr<std::barrier<>>> g_warp_barriers;
static std::mutex g_atomic_mutex;
static int g_emulate_launch_errors = 0;

#if defined(GRPOKIT_EMULATE_HALF)
#include "cuda_emulator_half.hpp"
#endif

// Threads per emulated block: EMULATE_MAX_BLOCK (default 64).
inline unsigned emulate_max_block() {
  static const unsigned n = [] {
    const char* e = std::getenv("EMULATE_MAX_BLOCK");
    const long v = e ? std::strtol(e, nullptr, 10) : 64;
    return static_cast<unsigned>(v < 1 ? 1 : (v > 1024 ? 1024 : v));
  }();
  return n;
}

inline void __syncthreads() { g_block_barrier->arrive_and_wait(); }

template <class V>
V __shfl_down_sync(unsigned, V v, int off) {
  static V slot[1024];
  const unsigned t = threadIdx.x, lane = t & 31u, w = t >> 5;
  slot[t] = v;
  g_warp_barriers[w]->arrive_and_wait();
  const V r = lane + static_cast<unsigned>(off) < 32u ? slot[t + off] : v;
  g_warp_barriers[w]->arrive_and_wait();
  return r;
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

// Blocks run one after another with at most emulate_max_block() threads (default 64, 2 warps: the
// cross-warp reduction path is exercised; the kernels read blockDim and never assume the launch size).
template <class F>
void emulate_launch(uint64_t grid, unsigned block, F&& kernel) {
  if (grid == 0 || grid > 0x7FFFFFFFull || block == 0 || block > 1024) {  // cudaErrorInvalidConfiguration
    std::fprintf(stderr, "EMULATE: invalid launch configuration (grid %llu, block %u)\n",
                 static_cast<unsigned long long>(grid), block);
    ++g_emulate_launch_errors;
    return;
  }
  const unsigned cap = emulate_max_block();
  block = block < cap ? block : cap;
  blockDim.x = block;
  gridDim.x = static_cast<unsigned>(grid);
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx.x = b;
    std::barrier<> bar(block);
    g_block_barrier = &bar;
    g_warp_barriers.clear();
    for (unsigned w = 0; w * 32 < block; ++w)  // a partial last warp rendezvouses its own threads
      g_warp_barriers.emplace_back(new std::barrier<>(block - w * 32 < 32 ? block - w * 32 : 32));
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([&, t] {
        threadIdx.x = t;
        kernel();
      });
    for (auto& th : threads) th.join();
  }
}

