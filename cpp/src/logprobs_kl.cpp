// CPU engine of the full-vocabulary KL against a reference, fused with the token log-probabilities:
// one read of each row pair forward, one read of each and one write backward (grpokit/logprobs_kl.hpp).
//
// A row pair is read in chunks of kChunk entries (the log-prob engine's vectorised chunk reductions
// for each side, then the cross sum over the chunk from L1) and merged into a float64 KlState, so the
// accuracy is that of the log-prob op; one thread owns a row, so results do not depend on the thread
// count.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "logprobs_rows.hpp"
#include "grpokit/logprobs_kl.hpp"
#include "grpokit/math/logprobs_kl.hpp"

namespace grpokit {
namespace {

using namespace rows;

// The cross sum of one chunk relative to its maxima m_x, m_y (grpokit/math/logprobs_kl.hpp).
template <class F, class In>
GRPOKIT_CPU_CLONES F cross_chunk(const In* x, const In* y, int64_t n, F m_x, F m_y, F inv_t) {
  F s = 0;
  for (int64_t i = 0; i < n; ++i) {
    const F d = math::clamp_exp_arg(math::scaled_gap(static_cast<F>(load(x[i])), m_x, inv_t));
    s += math::kl_cross_term(exp_of(d), d, static_cast<F>(load(y[i])), m_y, inv_t);
  }
  return s;
}

template <class F, class In>
math::KlState<double> kl_state(const In* x, const In* y, int64_t n, double inv_t) {
  math::KlState<double> st;
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t m = n - c0 < kChunk ? n - c0 : kChunk;
    const math::ChunkStats<double> cp = chunk_stats<F, false>(x + c0, m, inv_t);
    const math::ChunkStats<double> cq = chunk_stats<F, false>(y + c0, m, inv_t);
    F c = 0;
    if (cp.sum > 0.0 && cq.sum == cq.sum)
      c = cross_chunk<F>(x + c0, y + c0, m, static_cast<F>(cp.max), static_cast<F>(cq.max),
                         static_cast<F>(inv_t));
    st.merge(cp, cq, static_cast<double>(c), inv_t);
  }
  return st;
}

// The reference row of row r.
template <class In>
const In* ref_row(const TensorView& ref, int64_t r, int64_t inner) {
  return ref.ptr<const In>() + row_offset(ref, r, inner);
}

template <class In, class F>
void forward_rows(const TokenLogprobArgs& in, const TensorView& ref, const TensorView& logp,
                  const TensorView& entropy, const TensorView& kl, const TensorView& lse,
                  const TensorView& ref_lse) {
  using R = typename cpu::Real<In>::type;
  const RowLayout L = RowLayout::of(in.logits);
  const double inv_t = 1.0 / in.temperature;
  for_each_row<In>(in, L, [&](int64_t r, int64_t id, const In* row, RowError& err) {
    const math::KlState<double> st = kl_state<F>(row, ref_row<In>(ref, r, L.inner), L.vocab, inv_t);
    const double l = st.p.lse(inv_t), lr = st.q.lse(inv_t);
    if (!err.finite_lse(r, l) || !err.finite_lse(r, lr, true)) return;
    const double z = math::scaled_gap(static_cast<double>(load(row[id])), st.p.max, inv_t);
    write_real<R>(logp, per_row_offset(logp, r, L.inner), math::token_logp(z, std::log(st.p.sum)));
    write_real<R>(entropy, per_row_offset(entropy, r, L.inner), st.p.entropy());
    write_real<R>(kl, per_row_offset(kl, r, L.inner), st.kl());
    write_real<R>(lse, per_row_offset(lse, r, L.inner), l);
    write_real<R>(ref_lse, per_row_offset(ref_lse, r, L.inner), lr);
  });
}

// The gradient of one row pair into g (may be the policy row itself: each entry is read before it is
// written), without the target term.
template <class F, class In>
GRPOKIT_CPU_CLONES void kl_grad_row(const In* x, const In* y, In* g, int64_t n, F inv_t, F xs, F xc, F ys,
                                    F yc, const math::KlGradCoeffs<F>& c) {
  for (int64_t i = 0; i < n; ++i) {
    F d = math::clamp_exp_arg((static_cast<F>(load(x[i])) - xs) * inv_t - xc);
    d = d > F(0) ? F(0) : d;
    const F e = math::kl_ref_gap(static_cast<F>(load(y[i])), ys, yc, inv_t);
    g[i] = store<In>(math::kl_grad_element(c, exp_of(d), d, e));
  }
}

template <class In, class F>
void backward_rows(const TokenLogprobArgs& in, const TensorView& ref, const TensorView& lse,
                   const TensorView& ref_lse, const TensorView& entropy, const TensorView& kl,
                   const TensorView& grad_logp, const TensorView& grad_entropy, const TensorView& grad_kl,
                   const TensorView& grad_logits) {
  const RowLayout L = RowLayout::of(in.logits);
  const double inv_t = 1.0 / in.temperature;
  for_each_row<In>(in, L, [&](int64_t r, int64_t id, const In* row, RowError&) {
    const In* y = ref_row<In>(ref, r, L.inner);
    In* g = grad_logits.ptr<In>() + row_offset(grad_logits, r, L.inner);
    const RowGrads u = row_grads(grad_logp, grad_entropy, entropy, r, L.inner);
    const double k = grad_kl.defined() ? read_real(grad_kl, per_row_offset(grad_kl, r, L.inner)) : 0.0;
    const double v = k != 0.0 ? read_real(kl, per_row_offset(kl, r, L.inner)) : 0.0;
    const auto c = math::kl_grad_coeffs<F, double>(u.a, u.b, u.h, k, v, inv_t);
    if (c.base.zero) {
      for (int64_t i = 0; i < L.vocab; ++i) g[i] = store<In>(0.0f);
      return;
    }
    const GradShift sx = grad_shift<F>(row, L.vocab, inv_t, read_real(lse, per_row_offset(lse, r, L.inner)));
    const GradShift sy =
        grad_shift<F>(y, L.vocab, inv_t, read_real(ref_lse, per_row_offset(ref_lse, r, L.inner)));
    const F t = static_cast<F>(inv_t), xs = static_cast<F>(sx.shift), xc = static_cast<F>(sx.c0);
    const F ys = static_cast<F>(sy.shift), yc = static_cast<F>(sy.c0);
    const F x_y = static_cast<F>(load(row[id]));  // before an in-place write replaces it
    kl_grad_row<F>(row, y, g, L.vocab, t, xs, xc, ys, yc, c);
    F d = math::clamp_exp_arg((x_y - xs) * t - xc);
    d = d > F(0) ? F(0) : d;
    const F e = math::kl_ref_gap(static_cast<F>(load(y[id])), ys, yc, t);
    g[id] = store<In>(math::kl_grad_element(c, exp_of(d), d, e) + c.base.target);
  });
}

}  // namespace

void token_logprobs_kl_cpu(const TokenLogprobArgs& in, const TensorView& ref_logits, const TensorView& logp,
                           const TensorView& entropy, const TensorView& kl, const TensorView& lse,
                           const TensorView& ref_lse) {
  check_token_logprobs_kl_args(in, ref_logits, logp, entropy, kl, lse, ref_lse);
  check_cpu(in.logits, "logits");
  by_dtype(in.logits.dtype, [&](auto in_tag, auto f_tag) {
    forward_rows<decltype(in_tag), decltype(f_tag)>(in, ref_logits, logp, entropy, kl, lse, ref_lse);
  });
}

void token_logprobs_kl_backward_cpu(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                    const TensorView& lse, const TensorView& ref_lse,
                                    const TensorView& entropy, const TensorView& kl,
                                    const TensorView& grad_logp, const TensorView& grad_entropy,
                                    const TensorView& grad_kl, const TensorView& grad_logits) {
  check_token_logprobs_kl_backward_args(in, ref_logits, lse, ref_lse, entropy, kl, grad_logp, grad_entropy,
                                        grad_kl, grad_logits);
  check_cpu(in.logits, "logits");
  by_dtype(in.logits.dtype, [&](auto in_tag, auto f_tag) {
    backward_rows<decltype(in_tag), decltype(f_tag)>(in, ref_logits, lse, ref_lse, entropy, kl, grad_logp,
                                                     grad_entropy, grad_kl, grad_logits);
  });
}

}  // namespace grpokit
