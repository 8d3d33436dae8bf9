// CPU engine of log-probabilities under the kept set the sampler exported (exact replay,
// docs/logprobs.md, "Replaying the sampler's own kept set"): the temperature-scaled softmax restricted
// to the ids kept at each position and renormalised. Per row: the full row state (one read, as
// token_logprobs), then the kept entries' sums from their ids alone; the backward is one pass over
// the row with a cursor into its ascending ids. No (N × V) buffer.
#include <cmath>
#include <cstdint>

#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "grpokit/math/sampler.hpp"
#include "logprobs_rows.hpp"

namespace grpokit {
namespace {

using namespace rows;

// Row r's kept ids are keep_ids[begin, end); an empty range keeps the whole vocabulary.
struct KeepRow {
  int64_t begin = 0, end = 0;
  bool all() const { return begin == end; }
};

KeepRow keep_row(const KeepArgs& k, int64_t r) {
  const TensorView& o = k.offsets;
  return {read_id(o, r * o.strides[0]), read_id(o, (r + 1) * o.strides[0])};
}

int64_t keep_id(const KeepArgs& k, int64_t i) { return read_id(k.ids, i * k.ids.strides[0]); }

template <class In, class F>
void forward_rows(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                  const TensorView& entropy, const TensorView& lse, const TensorView& kept_logmass) {
  using R = typename cpu::Real<In>::type;
  const RowLayout L = RowLayout::of(in.logits);
  const double inv_t = 1.0 / in.temperature;
  for_each_row<In>(in, L, [&](int64_t r, int64_t id, const In* row, RowError& err) {
    double m = -INFINITY;
    const math::RowState<double> st = row_state<F, false>(row, L.vocab, inv_t, &m);
    if (!err.finite_lse(r, st.lse())) return;
    // d = (x − m)/τ as the row state's sums (relative to its maximum m/τ)
    auto gap = [&](int64_t v) {
      return math::scaled_gap(static_cast<double>(static_cast<F>(cpu::load(row[v]))), m, inv_t);
    };
    math::KeptTerms t{std::log(st.sum), 0.0, st.entropy()};
    bool y_kept = true;
    const KeepRow kr = keep_row(k, r);
    if (!kr.all()) {
      double kept = 0.0, dot = 0.0;
      y_kept = false;
      for (int64_t i = kr.begin; i < kr.end; ++i) {
        const int64_t v = keep_id(k, i);
        const double d = gap(v), e = std::exp(d);
        kept += e;
        dot += e > 0.0 ? e * d : 0.0;  // a −inf logit: probability 0, no NaN
        y_kept |= v == id;
      }
      if (!(kept > 0.0)) return err.record(r, 4);
      t = math::kept_terms(st.sum, kept, dot);
    }
    write_real<R>(logp, per_row_offset(logp, r, L.inner),
                  y_kept ? math::token_logp(gap(id), t.log_s) : -INFINITY);
    write_real<R>(lse, per_row_offset(lse, r, L.inner), st.lse());
    write_real<R>(kept_logmass, per_row_offset(kept_logmass, r, L.inner), t.log_mass);
    if (entropy.defined())
      write_real<R>(entropy, per_row_offset(entropy, r, L.inner),
                    k.entropy_over_kept ? t.entropy : st.entropy());
  });
}

// ∂L/∂x_v from math::SamplerGrad (p the full softmax, q the kept one), + a/τ at a kept target.
template <class In, class F>
void backward_rows(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& lse,
                   const TensorView& kept_logmass, const TensorView& entropy, const TensorView& grad_logp,
                   const TensorView& grad_entropy, const TensorView& grad_logits) {
  const RowLayout L = RowLayout::of(in.logits);
  const double inv_t = 1.0 / in.temperature;
  for_each_row<In>(in, L, [&](int64_t r, int64_t id, const In* row, RowError&) {
    In* g = grad_logits.ptr<In>() + row_offset(grad_logits, r, L.inner);
    const KeepRow kr = keep_row(k, r);
    // logp = −inf for a token outside the set or at a −inf logit: no gradient through it
    const bool y_kept =
        (kr.all() || math::ascending_holds([&](int64_t i) { return keep_id(k, i); }, kr.begin, kr.end, id)) &&
        cpu::load(row[id]) > -INFINITY;
    const RowGrads u = row_grads(grad_logp, grad_entropy, entropy, r, L.inner);
    const double a = y_kept ? u.a : 0.0;
    const double log_mass = read_real(kept_logmass, per_row_offset(kept_logmass, r, L.inner));
    const math::SamplerGrad<F> sg{
        static_cast<F>(a * inv_t), static_cast<F>(u.b * inv_t), static_cast<F>(std::exp(-log_mass)),
        static_cast<F>(log_mass),  static_cast<F>(u.h),         k.entropy_over_kept};
    const GradShift sh = grad_shift<F>(row, L.vocab, inv_t, read_real(lse, per_row_offset(lse, r, L.inner)));
    const F it = static_cast<F>(inv_t), shift = static_cast<F>(sh.shift), c0 = static_cast<F>(sh.c0);
    int64_t cur = kr.begin, next = kr.all() ? -1 : keep_id(k, cur);
    for (int64_t i = 0; i < L.vocab; ++i) {
      const F d_raw = (static_cast<F>(cpu::load(row[i])) - shift) * it - c0;  // log p
      F d = math::clamp_exp_arg(d_raw);
      d = d > F(0) ? F(0) : d;
      bool in_kept = kr.all();
      if (i == next) {
        in_kept = true;
        next = ++cur < kr.end ? keep_id(k, cur) : -1;
      }
      F lq = math::clamp_exp_arg(d_raw - sg.lm);  // log q, from log p: q may be ≫ p
      lq = lq > F(0) ? F(0) : lq;
      F gv = sg.element_q(exp_of(d), d, in_kept ? exp_of(lq) : F(0), lq, in_kept);
      if (i == id && y_kept) gv += sg.ca;
      g[i] = store<In>(gv);  // after reading x_i: in-place safe
    }
  });
}

}  // namespace

void check_keep_values(const KeepArgs& k, int64_t rows, int64_t vocab) {
  check_cpu(k.ids, "keep_ids");
  check_cpu(k.offsets, "keep_offsets");
  if (const int64_t o0 = read_id(k.offsets, 0); o0 != 0)
    value_error("keep_offsets: expected 0 first, got ", o0);
  for (int64_t r = 0; r < rows; ++r) {
    const KeepRow kr = keep_row(k, r);
    if (kr.end < kr.begin)
      value_error("keep_offsets: row ", r, " ends at ", kr.end, " before it begins at ", kr.begin,
                  "; expected non-decreasing offsets");
    if (kr.end > k.ids.shape[0])
      value_error("keep_offsets: row ", r, " ends at ", kr.end, ", beyond len(keep_ids) = ", k.ids.shape[0]);
  }
  if (const int64_t last = read_id(k.offsets, rows * k.offsets.strides[0]); last != k.ids.shape[0])
    value_error("keep_offsets: the last offset is ", last, "; expected len(keep_ids) = ", k.ids.shape[0]);
  for (int64_t r = 0; r < rows; ++r) {
    const KeepRow kr = keep_row(k, r);
    for (int64_t i = kr.begin, prev = -1; i < kr.end; ++i) {
      const int64_t v = keep_id(k, i);
      if (v < 0 || v >= vocab)
        value_error("keep_ids: row ", r, " holds ", v, ", outside the vocabulary [0, ", vocab, ")");
      if (v <= prev)
        value_error("keep_ids: row ", r, " holds ", v, " after ", prev,
                    "; expected each row's ids ascending without repeats");
      prev = v;
    }
  }
}

void check_token_logprobs_keep_args(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                                    const TensorView& entropy, const TensorView& lse,
                                    const TensorView& kept_logmass) {
  check_token_logprobs_args(in, logp, entropy, lse);
  check_token_logprobs_args(in, kept_logmass, TensorView{}, kept_logmass);
  check_keep_shapes(k, RowLayout::of(in.logits).rows, in.logits, "logits");
}

void check_keep_shapes(const KeepArgs& k, int64_t rows, const TensorView& like, const char* like_name) {
  check_ndim(k.ids, "keep_ids", {1});
  check_ndim(k.offsets, "keep_offsets", {1});
  check_dtype(k.ids, "keep_ids", {DType::Int32, DType::Int64});
  check_dtype(k.offsets, "keep_offsets", {DType::Int32, DType::Int64});
  check_same_device(k.ids, "keep_ids", like, like_name);
  check_same_device(k.offsets, "keep_offsets", like, like_name);
  if (k.offsets.shape[0] != rows + 1)
    value_error("keep_offsets: expected ", rows + 1, " offsets (one per row of ", like_name,
                ", plus the end), got ", k.offsets.shape[0]);
}

void token_logprobs_keep_cpu(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                             const TensorView& entropy, const TensorView& lse,
                             const TensorView& kept_logmass) {
  check_token_logprobs_keep_args(in, k, logp, entropy, lse, kept_logmass);
  check_cpu(in.logits, "logits");
  check_keep_values(k, RowLayout::of(in.logits).rows, RowLayout::of(in.logits).vocab);
  by_dtype(in.logits.dtype, [&](auto in_t, auto f_t) {
    forward_rows<decltype(in_t), decltype(f_t)>(in, k, logp, entropy, lse, kept_logmass);
  });
}

void check_token_logprobs_keep_backward_args(const TokenLogprobArgs& in, const KeepArgs& k,
                                             const TensorView& lse, const TensorView& kept_logmass,
                                             const TensorView& entropy, const TensorView& grad_logp,
                                             const TensorView& grad_entropy, const TensorView& grad_logits) {
  check_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
  check_token_logprobs_backward_args(in, kept_logmass, TensorView{}, TensorView{}, TensorView{}, grad_logits);
  check_keep_shapes(k, RowLayout::of(in.logits).rows, in.logits, "logits");
}

void token_logprobs_keep_backward_cpu(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& lse,
                                      const TensorView& kept_logmass, const TensorView& entropy,
                                      const TensorView& grad_logp, const TensorView& grad_entropy,
                                      const TensorView& grad_logits) {
  check_token_logprobs_keep_backward_args(in, k, lse, kept_logmass, entropy, grad_logp, grad_entropy,
                                          grad_logits);
  check_cpu(in.logits, "logits");
  check_keep_values(k, RowLayout::of(in.logits).rows, RowLayout::of(in.logits).vocab);
  by_dtype(in.logits.dtype, [&](auto in_t, auto f_t) {
    backward_rows<decltype(in_t), decltype(f_t)>(in, k, lse, kept_logmass, entropy, grad_logp, grad_entropy,
                                                 grad_logits);
  });
}

}  // namespace grpokit
