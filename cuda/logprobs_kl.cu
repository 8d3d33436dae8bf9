// The full-vocabulary KL against a reference, fused with the token log-probabilities, on the GPU
// (formulas in grpokit/math/logprobs_kl.hpp; the CPU engine is cpp/src/logprobs_kl.cpp).
//
// One block per row pair. Forward: each thread folds runs of kRun of its entries of both rows into a
// KlState (the policy's and the reference's online (max, Σe) and the cross sum); the block then merges
// the thread states. Backward: one read of both rows and one write, from the saved log-sum-exps. As
// in cuda/logprobs.cu, a token id outside [0, V) gives NaN outputs for its row, as do NaN/+inf logits
// (the Python layer's check_finite=True looks for them).
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "grpokit/logprobs_kl.hpp"
#include "grpokit/math/logprobs_kl.hpp"
#include "logprobs_rows.cuh"
#include "grpokit_cuda.hpp"

namespace grpokit {
namespace cuda {
namespace {

using namespace rows;

constexpr int kRun = 4;  // entries a thread folds per merge

// Folds up to kRun entries (values xs, ys; n of them valid) into st.
__device__ __forceinline__ void kl_fold(math::KlState<float>& st, const float (&xs)[kRun],
                                        const float (&ys)[kRun], int n, float inv_t) {
  math::ChunkStats<float> cp{-INFINITY, 0.0f, 0.0f}, cq{-INFINITY, 0.0f, 0.0f};
  bool bad_x = false, bad_y = false;
  for (int k = 0; k < n; ++k) {
    cp.max = fmaxf(cp.max, xs[k]), cq.max = fmaxf(cq.max, ys[k]);
    bad_x |= (xs[k] != xs[k]) || xs[k] == INFINITY;
    bad_y |= (ys[k] != ys[k]) || ys[k] == INFINITY;
  }
  float c = 0.0f;
  for (int k = 0; k < n; ++k) {
    if (cp.max > -INFINITY) {
      const float d = math::clamp_exp_arg(math::scaled_gap(xs[k], cp.max, inv_t));
      const float e = exp_or_zero(d);
      cp.sum += e;
      cp.dot += e * d;
      c += math::kl_cross_term(e, d, ys[k], cq.max, inv_t);
    }
    if (cq.max > -INFINITY)
      cq.sum += exp_or_zero(math::clamp_exp_arg(math::scaled_gap(ys[k], cq.max, inv_t)));
  }
  if (bad_x) cp = {INFINITY, NAN, NAN};
  if (bad_y) cq = {INFINITY, NAN, NAN};
  st.merge(cp, cq, c, inv_t);
}

// Merges another thread's state (its parts read as chunk stats).
__device__ __forceinline__ void kl_merge(math::KlState<float>& st, float pm, float ps, float pd, float qm,
                                         float qs, float c, float inv_t) {
  st.merge(math::ChunkStats<float>{pm, ps, pd}, math::ChunkStats<float>{qm, qs, 0.0f}, c, inv_t);
}

__device__ __forceinline__ math::KlState<float> kl_warp_merge(math::KlState<float> st, float inv_t) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    const float pm = __shfl_xor_sync(0xffffffffu, st.p.max, off),
                ps = __shfl_xor_sync(0xffffffffu, st.p.sum, off),
                pd = __shfl_xor_sync(0xffffffffu, st.p.dot, off),
                qm = __shfl_xor_sync(0xffffffffu, st.q.max, off),
                qs = __shfl_xor_sync(0xffffffffu, st.q.sum, off),
                c = __shfl_xor_sync(0xffffffffu, st.cross, off);
    kl_merge(st, pm, ps, pd, qm, qs, c, inv_t);
  }
  return st;
}

// The state of one row pair reduced over the block; valid in thread 0.
template <class T>
__device__ math::KlState<float> block_kl_state(const T* x, const T* y, int64_t n, float inv_t) {
  math::KlState<float> st;
  const int64_t step = static_cast<int64_t>(blockDim.x) * kRun;
  for (int64_t base = 0; base < n; base += step) {
    float xs[kRun], ys[kRun];
    int m = 0;
    for (int k = 0; k < kRun; ++k) {
      const int64_t i = base + k * blockDim.x + threadIdx.x;  // threads of a warp read consecutive entries
      if (i < n) xs[m] = to_float(x[i]), ys[m] = to_float(y[i]), ++m;
    }
    if (m > 0) kl_fold(st, xs, ys, m, inv_t);
  }
  st = kl_warp_merge(st, inv_t);
  __shared__ float s[6][kThreads / 32];
  const int warp = threadIdx.x / 32, lane = threadIdx.x % 32;
  if (lane == 0) {
    s[0][warp] = st.p.max, s[1][warp] = st.p.sum, s[2][warp] = st.p.dot;
    s[3][warp] = st.q.max, s[4][warp] = st.q.sum, s[5][warp] = st.cross;
  }
  __syncthreads();
  st = math::KlState<float>{};
  if (warp == 0) {
    if (lane < static_cast<int>(blockDim.x / 32))
      kl_merge(st, s[0][lane], s[1][lane], s[2][lane], s[3][lane], s[4][lane], s[5][lane], inv_t);
    st = kl_warp_merge(st, inv_t);
  }
  return st;
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kl_forward_kernel(const T* x, const T* y, Rows L, Rows R, PerRow ids, float inv_t, PerRow logp,
                      PerRow entropy, PerRow kl, PerRow lse, PerRow ref_lse) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  const math::KlState<float> st = block_kl_state(row, y + R.offset(r), L.vocab, inv_t);
  if (threadIdx.x != 0) return;
  const int64_t id = ids.id(r, L.inner);
  const bool bad = id < 0 || id >= L.vocab;
  const double t = static_cast<double>(inv_t);
  logp.write(
      r, L.inner,
      bad ? NAN : math::token_logp(math::scaled_gap(to_float(row[id]), st.p.max, inv_t), logf(st.p.sum)));
  entropy.write(r, L.inner, bad ? NAN : st.p.entropy());
  kl.write(r, L.inner, bad ? NAN : st.kl());
  lse.write(r, L.inner, bad ? NAN : static_cast<float>(st.p.lse(t)));
  ref_lse.write(r, L.inner, bad ? NAN : static_cast<float>(st.q.lse(t)));
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    kl_backward_kernel(const T* x, const T* y, T* g, Rows L, Rows R, Rows G, PerRow ids, float inv_t,
                       PerRow lse, PerRow ref_lse, PerRow entropy, PerRow kl, PerRow grad_logp,
                       PerRow grad_entropy, PerRow grad_kl) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  const T* yrow = y + R.offset(r);
  T* grow = g + G.offset(r);
  const int64_t id = ids.id(r, L.inner);
  const bool bad = id < 0 || id >= L.vocab;
  const float k = grad_kl.real(r, L.inner);
  const auto c = math::kl_grad_coeffs<float, float>(grad_logp.real(r, L.inner), grad_entropy.real(r, L.inner),
                                                    grad_entropy.data ? entropy.real(r, L.inner) : 0.0f, k,
                                                    k != 0.0f ? kl.real(r, L.inner) : 0.0f, inv_t);
  const GradShift gx = block_grad_shift(row, L.vocab, inv_t, lse.real(r, L.inner));
  const GradShift gy = block_grad_shift(yrow, L.vocab, inv_t, ref_lse.real(r, L.inner));
  auto elem = [&](float xv, float yv) {
    if (bad) return NAN;
    if (c.base.zero) return 0.0f;
    const float d = grad_gap(xv, gx, inv_t);
    return math::kl_grad_element(c, exp_or_zero(d), d, math::kl_ref_gap(yv, gy.shift, gy.c0, inv_t));
  };
  // The target's entries are read before any thread overwrites them (in-place gradients).
  const float x_y = (threadIdx.x == 0 && !bad) ? to_float(row[id]) : 0.0f;
  const float y_y = (threadIdx.x == 0 && !bad) ? to_float(yrow[id]) : 0.0f;
  __syncthreads();
  for (int64_t i = threadIdx.x; i < L.vocab; i += blockDim.x)
    grow[i] = from_float<T>(elem(to_float(row[i]), to_float(yrow[i])));
  __syncthreads();
  if (threadIdx.x == 0 && !bad && !c.base.zero) grow[id] = from_float<T>(elem(x_y, y_y) + c.base.target);
}

}  // namespace

void token_logprobs_kl(const TokenLogprobArgs& in, const TensorView& ref_logits, const TensorView& logp,
                       const TensorView& entropy, const TensorView& kl, const TensorView& lse,
                       const TensorView& ref_lse, std::intptr_t stream) {
  check_token_logprobs_kl_args(in, ref_logits, logp, entropy, kl, lse, ref_lse);
  const RowLaunch go(in, stream);
  if (go.L.rows == 0) return;
  DeviceGuard guard(in.logits.device.index);
  const Rows R = Rows::of(ref_logits);
  const PerRow ids = PerRow::of(in.token_ids), lp = PerRow::of(logp), h = PerRow::of(entropy),
               k = PerRow::of(kl), l = PerRow::of(lse), lr = PerRow::of(ref_lse);
  dispatch_float(in.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = kl_forward_kernel<T>;
    GRPOKIT_LAUNCH(kernel, go.grid, go.threads, go.stream, in.logits.ptr<const T>(),
                   ref_logits.ptr<const T>(), go.L, R, ids, go.inv_t, lp, h, k, l, lr);
  });
  check_launch("token_logprobs_kl");
}

void token_logprobs_kl_backward(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                const TensorView& lse, const TensorView& ref_lse, const TensorView& entropy,
                                const TensorView& kl, const TensorView& grad_logp,
                                const TensorView& grad_entropy, const TensorView& grad_kl,
                                const TensorView& grad_logits, std::intptr_t stream) {
  check_token_logprobs_kl_backward_args(in, ref_logits, lse, ref_lse, entropy, kl, grad_logp, grad_entropy,
                                        grad_kl, grad_logits);
  const RowLaunch go(in, stream);
  if (go.L.rows == 0) return;
  DeviceGuard guard(in.logits.device.index);
  const Rows R = Rows::of(ref_logits), G = Rows::of(grad_logits);
  const PerRow ids = PerRow::of(in.token_ids), l = PerRow::of(lse), lr = PerRow::of(ref_lse),
               h = PerRow::of(entropy), k = PerRow::of(kl), ga = PerRow::of(grad_logp),
               gb = PerRow::of(grad_entropy), gk = PerRow::of(grad_kl);
  dispatch_float(in.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = kl_backward_kernel<T>;
    GRPOKIT_LAUNCH(kernel, go.grid, go.threads, go.stream, in.logits.ptr<const T>(),
                   ref_logits.ptr<const T>(), grad_logits.ptr<T>(), go.L, R, G, ids, go.inv_t, l, lr, h, k,
                   ga, gb, gk);
  });
  check_launch("token_logprobs_kl_backward");
}

}  // namespace cuda
}  // namespace grpokit
