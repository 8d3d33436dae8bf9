// CPU engine of log-probabilities under the sampler's distribution: the temperature-scaled softmax
// truncated by min-p, top-k and top-p (docs/logprobs.md, "Sampler-faithful log-probabilities").
//
// Per row: the full row state (one read, as token_logprobs), then the selections that the active
// filters need (logprobs_select.hpp: a few passes over the row, which stays in cache for typical
// V), then one pass over the kept set {x ≥ keep_min} for its mass and entropy. Every filter keeps an
// upper set of values, so the kept set is described by one number, its smallest logit.
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "grpokit/math/sampler.hpp"
#include "logprobs_rows.hpp"
#include "logprobs_select.hpp"

namespace grpokit {
namespace {

using namespace rows;

// One row's sampler parameters (grpokit/math/sampler.hpp: off is k = 0, p = 1, min_p = 0).
using RowParams = math::SamplerRow;

RowParams row_params(const SamplerArgs& s, int64_t r, int64_t inner) {
  RowParams q;
  if (s.top_k.defined()) q.k = read_id(s.top_k, per_row_offset(s.top_k, r, inner));
  if (s.top_p.defined()) q.p = read_real(s.top_p, per_row_offset(s.top_p, r, inner));
  if (s.min_p.defined()) q.min_p = read_real(s.min_p, per_row_offset(s.min_p, r, inner));
  return q;
}

// What the forward finds for one row, relative to the raw maximum m (d = (x − m)/τ).
struct Kept {
  double keep_min = -INFINITY;  // smallest kept logit (raw)
  double log_mass = 0.0;        // log Σ_kept p
  double log_s = 0.0;           // log Σ_kept exp(d)
  double entropy = 0.0;         // of the kept distribution
};

// The kept set of one row given its raw maximum m.
template <class F, class In>
Kept kept_set(const In* x, int64_t n, F m, double inv_t, const RowParams& q, SamplerConvention conv) {
  const F it = static_cast<F>(inv_t);
  const F log_min_p = q.log_min_p<F>();
  const F t_k = q.top_k_on(n) ? kth_largest<F>(x, n, q.k) : F(-INFINITY);
  // vLLM's nucleus is taken among the survivors of min-p and top-k (both keep upper sets).
  auto early = [&](F v) { return math::kept(v, (v - m) * it, t_k, log_min_p); };
  F t_p = F(-INFINITY);
  if (q.p < 1.0) {
    if (conv == SamplerConvention::VLLM)
      t_p = nucleus_threshold<F>(x, n, early, m, it, q.p, false);
    else
      t_p = nucleus_threshold<F>(x, n, [](F) { return true; }, m, it, q.p, true);
  }
  // One pass: the kept set's smallest value, mass and Σ e·d, and the whole row's mass (the same exps,
  // so log_mass is exactly 0 when everything is kept).
  KeptSums ks;
  const F t = t_p > t_k ? t_p : t_k, lmp = log_min_p;
  if constexpr (std::is_same<F, double>::value)
    kept_sums_f64(x, n, m, it, t, lmp, ks);
  else
    kept_sums_f32(x, n, m, it, t, lmp, ks);
  const math::KeptTerms terms = math::kept_terms(ks.all, ks.kept, ks.dot);
  Kept k;
  k.keep_min = static_cast<double>(static_cast<F>(ks.lo));
  k.log_s = terms.log_s;
  k.log_mass = terms.log_mass;
  k.entropy = terms.entropy;
  return k;
}

template <class In, class F>
void forward_rows(const TokenLogprobArgs& in, const SamplerArgs& s, const TensorView& logp,
                  const TensorView& entropy, const TensorView& lse, const TensorView& kept_logmass,
                  const TensorView& keep_min) {
  using R = typename cpu::Real<In>::type;
  const RowLayout L = RowLayout::of(in.logits);
  const double inv_t = 1.0 / in.temperature;
  for_each_row<In>(in, L, [&](int64_t r, int64_t id, const In* row, RowError& err) {
    double m = -INFINITY;
    const math::RowState<double> st = row_state<F, false>(row, L.vocab, inv_t, &m);
    const double l = st.lse();
    if (!err.finite_lse(r, l)) return;
    const RowParams q = row_params(s, r, L.inner);
    const bool on = q.on(L.vocab);
    Kept k;
    if (on) {
      k = kept_set<F>(row, L.vocab, static_cast<F>(m), inv_t, q, s.convention);
    } else {
      k.log_s = std::log(st.sum);
      k.entropy = st.entropy();
    }
    const double x_y = static_cast<double>(static_cast<F>(cpu::load(row[id])));
    const double lp = x_y >= k.keep_min ? math::token_logp((x_y - m) * inv_t, k.log_s) : -INFINITY;
    write_real<R>(logp, per_row_offset(logp, r, L.inner), lp);
    write_real<R>(lse, per_row_offset(lse, r, L.inner), l);
    write_real<R>(kept_logmass, per_row_offset(kept_logmass, r, L.inner), k.log_mass);
    write_real<R>(keep_min, per_row_offset(keep_min, r, L.inner), k.keep_min);
    if (entropy.defined())
      write_real<R>(entropy, per_row_offset(entropy, r, L.inner),
                    s.entropy_over_kept ? k.entropy : st.entropy());
  });
}

// ∂L/∂x_v = −(1/τ)·[a·q_v + b·r_v·(log r_v + H)] + [v = y]·a/τ, with p the full softmax, q the kept
// one (q = p / Σ_kept p on the kept set, 0 elsewhere) and r the distribution the entropy is of.
template <class In, class F>
void backward_rows(const TokenLogprobArgs& in, bool over_kept, const TensorView& lse,
                   const TensorView& kept_logmass, const TensorView& keep_min, const TensorView& entropy,
                   const TensorView& grad_logp, const TensorView& grad_entropy,
                   const TensorView& grad_logits) {
  const RowLayout L = RowLayout::of(in.logits);
  const double inv_t = 1.0 / in.temperature;
  for_each_row<In>(in, L, [&](int64_t r, int64_t id, const In* row, RowError&) {
    In* g = grad_logits.ptr<In>() + row_offset(grad_logits, r, L.inner);
    const F kmin = static_cast<F>(read_real(keep_min, per_row_offset(keep_min, r, L.inner)));
    const double log_mass = read_real(kept_logmass, per_row_offset(kept_logmass, r, L.inner));
    const F x_y = static_cast<F>(cpu::load(row[id]));
    const bool y_kept = x_y >= kmin;
    RowGrads u = row_grads(grad_logp, grad_entropy, entropy, r, L.inner);
    if (!y_kept) u.a = 0.0;  // logp = −inf there: no gradient (the caller masks such tokens)
    const double a = u.a, b = u.b, h = u.h;
    const GradShift sh = grad_shift<F>(row, L.vocab, inv_t, read_real(lse, per_row_offset(lse, r, L.inner)));
    const F it = static_cast<F>(inv_t), shift = static_cast<F>(sh.shift), c0 = static_cast<F>(sh.c0);
    const math::SamplerGrad<F> c{
        static_cast<F>(a * inv_t), static_cast<F>(b * inv_t), static_cast<F>(std::exp(-log_mass)),
        static_cast<F>(log_mass),  static_cast<F>(h),         over_kept};
    for (int64_t i = 0; i < L.vocab; ++i) {
      const F v = static_cast<F>(cpu::load(row[i]));
      F d = math::clamp_exp_arg(math::scaled_gap(v, shift, it) - c0);
      d = d > F(0) ? F(0) : d;
      F gv = c.element(exp_of(d), d, v >= kmin);
      if (i == id && y_kept) gv += c.ca;
      g[i] = store<In>(gv);
    }
  });
}

template <class Fn>
void by_dtype(DType dt, Fn&& f) {
  switch (dt) {
    case DType::Float32:
      return f(float{}, float{});
    case DType::BFloat16:
      return f(cpu::bf16{}, float{});
    case DType::Float16:
      return f(cpu::f16{}, float{});
    case DType::Float64:
      return f(double{}, double{});
    default:
      break;
  }
}

void check_param(const TensorView& t, const char* name, const TensorView& logits,
                 std::initializer_list<DType> dt, double lo, double hi, bool lo_open, const char* expects) {
  if (!t.defined()) return;
  TensorView lead;
  lead.ndim = logits.ndim - 1;
  for (int i = 0; i < lead.ndim; ++i) lead.shape[i] = logits.shape[i];
  check_shape_equal(t, name, lead, "logits without its last dimension");
  check_dtype(t, name, dt);
  check_same_device(t, name, logits, "logits");
  if (t.dtype == DType::Int32 || t.dtype == DType::Int64) return;  // top_k: every integer is valid
  if (t.device.type != DeviceType::CPU) return;
  const RowLayout L = RowLayout::of(logits);
  for (int64_t r = 0; r < L.rows; ++r) {
    const double v = read_real(t, per_row_offset(t, r, L.inner));
    if (!(v <= hi) || !(lo_open ? v > lo : v >= lo))
      value_error(name, ": row ", r, " holds ", v, "; expected ", expects);
  }
}

}  // namespace

void check_token_logprobs_sampler_args(const TokenLogprobArgs& in, const SamplerArgs& s,
                                       const TensorView& logp, const TensorView& entropy,
                                       const TensorView& lse, const TensorView& kept_logmass,
                                       const TensorView& keep_min) {
  check_token_logprobs_args(in, logp, entropy, lse);
  check_token_logprobs_args(in, kept_logmass, TensorView{}, keep_min);
  check_param(s.top_k, "top_k", in.logits, {DType::Int32, DType::Int64}, 0, 0, false, "");
  check_param(s.top_p, "top_p", in.logits, {DType::Float32, DType::Float64}, 0.0, 1.0, true,
              "a value in (0, 1]");
  check_param(s.min_p, "min_p", in.logits, {DType::Float32, DType::Float64}, 0.0, 1.0, false,
              "a value in [0, 1]");
}

void token_logprobs_sampler_cpu(const TokenLogprobArgs& in, const SamplerArgs& s, const TensorView& logp,
                                const TensorView& entropy, const TensorView& lse,
                                const TensorView& kept_logmass, const TensorView& keep_min) {
  check_token_logprobs_sampler_args(in, s, logp, entropy, lse, kept_logmass, keep_min);
  check_cpu(in.logits, "logits");
  by_dtype(in.logits.dtype, [&](auto in_t, auto f_t) {
    forward_rows<decltype(in_t), decltype(f_t)>(in, s, logp, entropy, lse, kept_logmass, keep_min);
  });
}

void token_logprobs_sampler_backward_cpu(const TokenLogprobArgs& in, bool entropy_over_kept,
                                         const TensorView& lse, const TensorView& kept_logmass,
                                         const TensorView& keep_min, const TensorView& entropy,
                                         const TensorView& grad_logp, const TensorView& grad_entropy,
                                         const TensorView& grad_logits) {
  check_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
  check_token_logprobs_backward_args(in, kept_logmass, TensorView{}, TensorView{}, TensorView{}, grad_logits);
  check_token_logprobs_backward_args(in, keep_min, TensorView{}, TensorView{}, TensorView{}, grad_logits);
  check_cpu(in.logits, "logits");
  by_dtype(in.logits.dtype, [&](auto in_t, auto f_t) {
    backward_rows<decltype(in_t), decltype(f_t)>(in, entropy_over_kept, lse, kept_logmass, keep_min, entropy,
                                                 grad_logp, grad_entropy, grad_logits);
  });
}

}  // namespace grpokit
