// CPU engine of token log-probabilities, entropies and the logits gradient.
//
// One thread owns a row at a time (OpenMP over rows), so results do not depend on the thread count.
// A row is read in chunks of kChunk entries: a max pass and an exp pass over the chunk (the second
// read hits L1), reduced in kLanes independent float32 lanes (vectorisable without -ffast-math),
// then merged into a float64 RowState, so even V = 262,144 keeps float32-rounding accuracy.
// The hot loops are compiled for AVX-512 and AVX2+FMA as well as the baseline, picked at run time.
#include <cmath>
#include <cstdint>
#include <cstring>
#include <limits>
#include <type_traits>

#include "logprobs_rows.hpp"
#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"

namespace grpokit {
namespace {

using namespace rows;

template <class In, class F, class A, bool kSq>
void forward_rows(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                  const TensorView& lse, const TensorView& sum_sq) {
  using R = typename cpu::Real<In>::type;  // result dtype: float, or double for float64 logits
  const RowLayout L = RowLayout::of(in.logits);
  const double inv_t = 1.0 / in.temperature;
  for_each_row<In>(in, L, [&](int64_t r, int64_t id, const In* row, RowError& err) {
    double m = -INFINITY;
    const math::RowState<A, kSq> st = row_state<F, kSq>(row, L.vocab, inv_t, &m);
    const A l = st.lse();
    if (!err.finite_lse(r, l)) return;
    const double lp = row_logp(st, m, static_cast<double>(cpu::load(row[id])), inv_t);
    write_real<R>(logp, per_row_offset(logp, r, L.inner), lp);
    write_real<R>(lse, per_row_offset(lse, r, L.inner), l);
    if (entropy.defined()) write_real<R>(entropy, per_row_offset(entropy, r, L.inner), st.entropy());
    if constexpr (kSq) write_real<R>(sum_sq, per_row_offset(sum_sq, r, L.inner), st.sum_sq_probs());
  });
}

template <class In, class F>
void backward_rows(const TokenLogprobArgs& in, const TensorView& lse, const TensorView& entropy,
                   const TensorView& grad_logp, const TensorView& grad_entropy,
                   const TensorView& grad_logits) {
  const RowLayout L = RowLayout::of(in.logits);
  const double inv_t = 1.0 / in.temperature;
  for_each_row<In>(in, L, [&](int64_t r, int64_t id, const In* row, RowError&) {
    In* g = grad_logits.ptr<In>() + row_offset(grad_logits, r, L.inner);
    const RowGrads u = row_grads(grad_logp, grad_entropy, entropy, r, L.inner);
    const auto c = math::grad_coeffs<F, double>(u.a, u.b, u.h, inv_t);
    const GradShift s = grad_shift<F>(row, L.vocab, inv_t, read_real(lse, per_row_offset(lse, r, L.inner)));
    // The target's own entry, from the logits before an in-place write replaces them.
    grad_row(row, g, L.vocab, inv_t, s, c, id, static_cast<double>(cpu::load(row[id])));
  });
}

template <bool kSq>
void forward_dtype(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                   const TensorView& lse, const TensorView& sum_sq) {
  switch (in.logits.dtype) {
    case DType::Float32:
      return forward_rows<float, float, double, kSq>(in, logp, entropy, lse, sum_sq);
    case DType::BFloat16:
      return forward_rows<cpu::bf16, float, double, kSq>(in, logp, entropy, lse, sum_sq);
    case DType::Float16:
      return forward_rows<cpu::f16, float, double, kSq>(in, logp, entropy, lse, sum_sq);
    case DType::Float64:
      return forward_rows<double, double, double, kSq>(in, logp, entropy, lse, sum_sq);
    default:
      break;
  }
}

}  // namespace

void token_logprobs_cpu(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                        const TensorView& lse, const TensorView& sum_sq_probs) {
  check_token_logprobs_args(in, logp, entropy, lse, sum_sq_probs);
  check_cpu(in.logits, "logits");
  // Σπ² is a separate instantiation: the default kernels carry no third accumulator.
  if (sum_sq_probs.defined())
    forward_dtype<true>(in, logp, entropy, lse, sum_sq_probs);
  else
    forward_dtype<false>(in, logp, entropy, lse, sum_sq_probs);
}

void token_logprobs_backward_cpu(const TokenLogprobArgs& in, const TensorView& lse, const TensorView& entropy,
                                 const TensorView& grad_logp, const TensorView& grad_entropy,
                                 const TensorView& grad_logits) {
  check_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
  check_cpu(in.logits, "logits");
  switch (in.logits.dtype) {
    case DType::Float32:
      return backward_rows<float, float>(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
    case DType::BFloat16:
      return backward_rows<cpu::bf16, float>(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
    case DType::Float16:
      return backward_rows<cpu::f16, float>(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
    case DType::Float64:
      return backward_rows<double, double>(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
    default:
      break;
  }
}

}  // namespace grpokit
