// A host-thread stand-in for the CUDA execution model, so kernels (.cu files written with the
// GRPOKIT_CUDA_EMULATE guards) run on machines without a GPU: one std::thread per CUDA thread;
// __syncthreads and warp shuffles are std::barrier rendezvous, so a missing or divergent barrier
// deadlocks (the scripts run under a timeout) and shared-memory reuse follows the same order as on
// the device. __shared__ variables are function statics (blocks run one after another).
//
// Include this first, then the .cu file. Used by scripts/emulate_cuda_loss.cpp, emulate_cuda_adam.cpp and
// scripts/emulate_cuda_estimators.cpp. It does not exercise the device compiler, device math or half
// precision (the kernels leave bfloat16/float16 out under GRPOKIT_CUDA_EMULATE).
#pragma once

#include <barrier>
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

// Blocks run one after another with at most 64 threads (2 warps: the cross-warp reduction path is
// exercised; the kernels read blockDim and never assume the launch size).
template <class F>
void emulate_launch(unsigned grid, unsigned block, F&& kernel) {
  block = block < 64 ? block : 64;
  blockDim.x = block;
  gridDim.x = grid;
  for (unsigned b = 0; b < grid; ++b) {
    blockIdx.x = b;
    std::barrier<> bar(block);
    g_block_barrier = &bar;
    g_warp_barriers.clear();
    for (unsigned w = 0; w < block / 32; ++w) g_warp_barriers.emplace_back(new std::barrier<>(32));
    std::vector<std::thread> threads;
    for (unsigned t = 0; t < block; ++t)
      threads.emplace_back([&, t] {
        threadIdx.x = t;
        kernel();
      });
    for (auto& th : threads) th.join();
  }
}

