// The CUDA loss's top-entropy threshold (top_entropy_quantile < 1; internal to cuda/loss.cu): a radix
// select on the device, with no host sync, that finds the CPU engine's threshold to the bit.
#pragma once

#include <cstdint>
#include <cstring>

#include "grpokit/math/loss.hpp"
#include "loss_args.cuh"
#include "reduce.cuh"

namespace grpokit {
namespace cuda {
namespace {

// ---- 2b. top-entropy threshold (top_entropy_quantile < 1) ----------------------------------------------
//
// The CPU engine collects every valid token's entropy as a double, takes a = the lo-th and b = the
// (lo+1)-th smallest (0-based, lo = ⌊q(n−1)⌋, q = 1 − top_entropy_quantile; b = a when q(n−1) is whole)
// and keeps tokens with H ≥ lerp(a, b, q(n−1) − lo). Selection by radix over keys that order like the
// values finds a and b exactly; the interpolation is then the same double arithmetic.

constexpr int kRadixBits = 8, kRadixBins = 1 << kRadixBits;

struct SelectState {  // in the workspace, after the global fields (loss_workspace_size counts it)
  unsigned long long hist[2][kRadixBins];  // this pass's digit counts (zeroed after each pick)
  unsigned long long prefix[2];  // key bits fixed so far of the lo-th and (lo+1)-th smallest
  unsigned long long rank[2];    // their rank among the keys that share that prefix
  unsigned long long n_kept;     // valid tokens with H ≥ threshold
  double frac;                   // q(n−1) − lo
  double threshold;
  int targets;                   // 0: no valid token (threshold −inf), 1: q(n−1) whole, 2
};
constexpr int64_t kSelectDoubles = (sizeof(SelectState) + sizeof(double) - 1) / sizeof(double);

// Keys: x < y ⇔ key(x) < key(y) for non-NaN values; −0 is folded into +0 (they compare equal).
template <class C>
struct RadixKey;
template <>
struct RadixKey<float> {
  static constexpr int kBits = 32;
  __device__ static unsigned long long of(float x) {
    if (x == 0.0f) x = 0.0f;
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
  }
  __device__ static double value(unsigned long long k) {
    const uint32_t k32 = static_cast<uint32_t>(k);
    const uint32_t u = (k32 & 0x80000000u) ? (k32 & 0x7FFFFFFFu) : ~k32;
    float x;
    memcpy(&x, &u, sizeof x);
    return static_cast<double>(x);
  }
};
template <>
struct RadixKey<double> {
  static constexpr int kBits = 64;
  __device__ static unsigned long long of(double x) {
    if (x == 0.0) x = 0.0;
    unsigned long long u;
    memcpy(&u, &x, sizeof u);
    return (u & 0x8000000000000000ull) ? ~u : (u | 0x8000000000000000ull);
  }
  __device__ static double value(unsigned long long k) {
    const unsigned long long u = (k & 0x8000000000000000ull) ? (k & 0x7FFFFFFFFFFFFFFFull) : ~k;
    double x;
    memcpy(&x, &u, sizeof x);
    return x;
  }
};

__device__ __forceinline__ unsigned long long high_bits(unsigned long long k, int shift) {
  return shift >= 64 ? 0ull : k >> shift;
}

// One block: the ranks from the call's valid-token count (counts_kernel's n_tok).
__global__ void __launch_bounds__(kReduceThreads) select_init_kernel(const Args a) {
  SelectState* sel = a.esel;
  for (int k = threadIdx.x; k < 2 * kRadixBins; k += blockDim.x)
    sel->hist[k / kRadixBins][k % kRadixBins] = 0ull;
  if (threadIdx.x != 0) return;
  const double n = a.glob[gNTok];
  sel->prefix[0] = sel->prefix[1] = 0ull;
  sel->n_kept = 0ull;
  sel->threshold = -INFINITY;
  sel->targets = 0;
  if (!(n >= 1.0)) return;
  const math::QuantilePosition qp =
      math::quantile_position(1.0 - a.s.top_entropy_quantile, static_cast<int64_t>(n));
  sel->frac = qp.frac;
  sel->targets = qp.hi == qp.lo ? 1 : 2;
  sel->rank[0] = static_cast<unsigned long long>(qp.lo);
  sel->rank[1] = static_cast<unsigned long long>(qp.lo) + 1ull;
}

// Grid = B rows: histogram of digit `pass` (from the top) of the keys matching each target's prefix.
template <class T>
__global__ void __launch_bounds__(kRowThreads) select_hist_kernel(const Args a, int pass) {
  using C = typename Compute<T>::type;
  using K = RadixKey<C>;
  const SelectState* sel = a.esel;
  if (sel->targets == 0) return;
  __shared__ unsigned int h[2][kRadixBins];
  for (int k = threadIdx.x; k < 2 * kRadixBins; k += blockDim.x) h[k / kRadixBins][k % kRadixBins] = 0u;
  __syncthreads();
  const int shift = K::kBits - kRadixBits * (pass + 1);  // this digit's lowest bit
  const bool split = sel->targets == 2 && sel->prefix[0] != sel->prefix[1];  // the targets' paths differ
  const unsigned long long p0 = high_bits(sel->prefix[0], shift + kRadixBits);
  const unsigned long long p1 = high_bits(sel->prefix[1], shift + kRadixBits);
  const int64_t i = blockIdx.x;
  const RowRange rr = row_range(a, i);
  const RowAddr am = addr(a, a.mask.s0, a.mask.s1, i, rr), ae = addr(a, a.ent.s0, a.ent.s1, i, rr);
  for (int64_t t = threadIdx.x; t < rr.len; t += blockDim.x) {
    if (a.mask.p && !flag_at(a.mask.p, a.mask_dt, am.base + t * am.step)) continue;
    const unsigned long long key = K::of(C(ld<T>(a.ent, ae, t)));
    const unsigned long long top = high_bits(key, shift + kRadixBits);
    const unsigned digit = static_cast<unsigned>((key >> shift) & (kRadixBins - 1));
    if (top == p0) atomicAdd(&h[0][digit], 1u);
    if (split && top == p1) atomicAdd(&h[1][digit], 1u);
  }
  __syncthreads();
  for (int k = threadIdx.x; k < 2 * kRadixBins; k += blockDim.x) {
    const unsigned c = h[k / kRadixBins][k % kRadixBins];
    if (c != 0u) atomicAdd(&a.esel->hist[k / kRadixBins][k % kRadixBins], static_cast<unsigned long long>(c));
  }
}

// One block: each target's digit is the bucket holding its rank; after the last digit the keys are the
// lo-th and (lo+1)-th smallest entropies themselves.
template <class T>
__global__ void __launch_bounds__(kReduceThreads) select_pick_kernel(const Args a, int pass) {
  using C = typename Compute<T>::type;
  using K = RadixKey<C>;
  SelectState* sel = a.esel;
  if (sel->targets == 0) return;
  const int shift = K::kBits - kRadixBits * (pass + 1);
  if (threadIdx.x == 0) {
    const bool split = sel->targets == 2 && sel->prefix[0] != sel->prefix[1];
    for (int t = 0; t < sel->targets; ++t) {
      const unsigned long long* h = sel->hist[split ? t : 0];
      unsigned long long r = sel->rank[t];
      int d = 0;
      for (; d < kRadixBins - 1 && r >= h[d]; ++d) r -= h[d];
      sel->prefix[t] |= static_cast<unsigned long long>(d) << shift;
      sel->rank[t] = r;
    }
    if (shift == 0) {
      const double lo = K::value(sel->prefix[0]);
      const double hi = sel->targets == 2 ? K::value(sel->prefix[1]) : lo;
      sel->threshold = math::lerp(lo, hi, sel->frac);
    }
  }
  __syncthreads();
  for (int k = threadIdx.x; k < 2 * kRadixBins; k += blockDim.x)
    sel->hist[k / kRadixBins][k % kRadixBins] = 0ull;
}

__device__ __forceinline__ bool entropy_kept(const Args& a, double h) {
  return a.esel == nullptr || h >= a.esel->threshold;
}

// Grid = B rows: the number of valid tokens kept, TRL's normaliser of the entropy bonus.
template <class T>
__global__ void __launch_bounds__(kRowThreads) select_count_kernel(const Args a) {
  using C = typename Compute<T>::type;
  __shared__ double smem[32];
  const int64_t i = blockIdx.x;
  const RowRange rr = row_range(a, i);
  const RowAddr am = addr(a, a.mask.s0, a.mask.s1, i, rr), ae = addr(a, a.ent.s0, a.ent.s1, i, rr);
  double c[1] = {0.0};
  for (int64_t t = threadIdx.x; t < rr.len; t += blockDim.x) {
    if (a.mask.p && !flag_at(a.mask.p, a.mask_dt, am.base + t * am.step)) continue;
    c[0] += entropy_kept(a, static_cast<double>(C(ld<T>(a.ent, ae, t)))) ? 1.0 : 0.0;
  }
  block_reduce(c, smem, Sum{}, 0.0);
  if (threadIdx.x == 0 && c[0] > 0.0) atomicAdd(&a.esel->n_kept, static_cast<unsigned long long>(c[0]));
}

}  // namespace
}  // namespace cuda
}  // namespace grpokit
