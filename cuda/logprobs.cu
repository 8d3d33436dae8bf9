// Token log-probabilities, entropies and the logits gradient on the GPU, from the formulas of
// grpokit/math/logprobs.hpp.
//
// One block per row (rows on grid.x, so any number of tokens fits). Forward: each thread streams its
// share of the row once with 16-byte loads, folding every vector into an online (max, Σe, Σe·d)
// state (with Σ exp² too in the kernels instantiated for sum_sq_probs); the block then merges the
// thread states. Backward: one read and one write per element,
// from the saved log-sum-exp (and entropy). Value problems cannot raise without synchronising, so
// a token id outside [0, V) gives NaN outputs for its row (the Python layer's check_finite=True
// looks for them), as do NaN/+inf logits.
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "logprobs_rows.cuh"
#include "grpokit_cuda.hpp"

namespace grpokit {
namespace cuda {
namespace {

using namespace rows;

template <class T, bool kSq>
__global__ void __launch_bounds__(kThreads)
    forward_kernel(const T* x, Rows L, PerRow ids, float inv_t, PerRow logp, PerRow entropy, PerRow lse,
                   PerRow sum_sq) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  const math::RowState<float, kSq> st = block_row_state<kSq>(row, L.vocab, inv_t);
  if (threadIdx.x != 0) return;
  const int64_t id = ids.id(r, L.inner);
  if (id < 0 || id >= L.vocab) {
    logp.write(r, L.inner, NAN);
    lse.write(r, L.inner, NAN);
    entropy.write(r, L.inner, NAN);
    if constexpr (kSq) sum_sq.write(r, L.inner, NAN);
    return;
  }
  // The raw maximum is scaled once, in float64; logp comes from the gap to it (no cancellation).
  const float l = static_cast<float>(st.lse(static_cast<double>(inv_t)));
  logp.write(r, L.inner, math::token_logp(math::scaled_gap(to_float(row[id]), st.max, inv_t), logf(st.sum)));
  lse.write(r, L.inner, l);
  entropy.write(r, L.inner, st.entropy());
  if constexpr (kSq) sum_sq.write(r, L.inner, st.sum_sq_probs());
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    backward_kernel(const T* x, T* g, int64_t gs0, int64_t gs1, Rows L, PerRow ids, float inv_t, PerRow lse,
                    PerRow entropy, PerRow grad_logp, PerRow grad_entropy) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  T* grow = g + (L.ndim == 3 ? (r / L.inner) * gs0 + (r % L.inner) * gs1 : r * gs0);
  const int64_t id = ids.id(r, L.inner);
  const bool bad_id = id < 0 || id >= L.vocab;
  const auto c = math::grad_coeffs<float, float>(grad_logp.real(r, L.inner), grad_entropy.real(r, L.inner),
                                                 grad_entropy.data ? entropy.real(r, L.inner) : 0.0f, inv_t);
  const GradShift gs = block_grad_shift(row, L.vocab, inv_t, lse.real(r, L.inner));
  // The target's logit is read before any thread overwrites it (in-place gradients).
  const float x_y = (threadIdx.x == 0 && !bad_id) ? to_float(row[id]) : 0.0f;
  __syncthreads();
  block_grad_row(row, grow, L.vocab, inv_t, gs, c, bad_id ? -1 : id, x_y, bad_id);
}

}  // namespace

void token_logprobs(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                    const TensorView& lse, const TensorView& sum_sq_probs, std::intptr_t stream) {
  check_token_logprobs_args(in, logp, entropy, lse, sum_sq_probs);
  const RowLaunch go(in, stream);
  if (go.L.rows == 0) return;
  DeviceGuard guard(in.logits.device.index);
  const PerRow ids = PerRow::of(in.token_ids), lp = PerRow::of(logp), h = PerRow::of(entropy),
               l = PerRow::of(lse), sq = PerRow::of(sum_sq_probs);
  dispatch_float(in.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    // Σπ² is its own instantiation: the default kernel carries no third accumulator.
    const auto kernel = sum_sq_probs.defined() ? forward_kernel<T, true> : forward_kernel<T, false>;
    GRPOKIT_LAUNCH(kernel, go.grid, go.threads, go.stream, in.logits.ptr<const T>(), go.L, ids, go.inv_t, lp,
                   h, l, sq);
  });
  check_launch("token_logprobs");
}

void token_logprobs_backward(const TokenLogprobArgs& in, const TensorView& lse, const TensorView& entropy,
                             const TensorView& grad_logp, const TensorView& grad_entropy,
                             const TensorView& grad_logits, std::intptr_t stream) {
  check_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
  const RowLaunch go(in, stream);
  if (go.L.rows == 0) return;
  DeviceGuard guard(in.logits.device.index);
  const int64_t gs0 = grad_logits.strides[0], gs1 = grad_logits.ndim == 3 ? grad_logits.strides[1] : 0;
  const PerRow ids = PerRow::of(in.token_ids), l = PerRow::of(lse), h = PerRow::of(entropy),
               ga = PerRow::of(grad_logp), gb = PerRow::of(grad_entropy);
  dispatch_float(in.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = backward_kernel<T>;
    GRPOKIT_LAUNCH(kernel, go.grid, go.threads, go.stream, in.logits.ptr<const T>(), grad_logits.ptr<T>(),
                   gs0, gs1, go.L, ids, go.inv_t, l, h, ga, gb);
  });
  check_launch("token_logprobs_backward");
}

}  // namespace cuda
}  // namespace grpokit
