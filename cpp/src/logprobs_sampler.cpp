// CPU engine of log-probabilities under the sampler's distribution: the temperature-scaled softmax
// truncated by min-p, top-k and top-p (docs/logprobs.md, "Sampler-faithful log-probabilities").
//
// Per row: the full row state (one read, as token_logprobs), then the selections that the active
// filters need (logprobs_select.hpp: a lower bound on the kept values from the row's group maxima,
// one pass copying the entries above it, exact selections over those), then the kept set's mass and
// entropy from the same few entries. Every filter keeps an upper set of values, so the kept set is
// described by one number, its smallest logit.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <type_traits>

#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "logprobs_rows.hpp"
#include "logprobs_select.hpp"

namespace grpokit {
namespace {

using namespace rows;

// One row's sampler parameters (off: k = 0, p = 1, min_p = 0).
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

// A value below which no entry passes min-p's test (v − m)/τ ≥ log(min_p), with room for the test's
// float rounding: entries between it and the exact cut are copied and then tested.
template <class F>
F min_p_bound(double m, double inv_t, double min_p) {
  const double cut = std::log(min_p) / inv_t;  // ≤ 0
  const double slack = (std::fabs(m) + std::fabs(cut)) * (sizeof(F) == sizeof(double) ? 1e-12 : 1e-5);
  return static_cast<F>(m + cut - slack);
}

// The kept set of one row given its raw maximum m and the whole row's mass s_all = Σ exp((x − m)/τ)
// (the row state's): the candidates above a lower bound on every kept value, the selections over
// them (logprobs_select.hpp), and the kept set's sums.
template <class F, class In>
Kept kept_set(const In* x, int64_t n, F m, double inv_t, double s_all, const RowParams& q,
              SamplerConvention conv) {
  const F it = static_cast<F>(inv_t);
  const bool use_k = q.k > 0 && q.k < n, use_p = q.p < 1.0, use_mp = q.min_p > 0.0;
  const bool vllm = conv == SamplerConvention::VLLM;
  // min-p compares p_v with min_p · p_max, i.e. d_v with log(min_p); it and top-k keep upper sets.
  const F lmp = use_mp ? static_cast<F>(std::log(q.min_p)) : F(-INFINITY);
  auto min_p_keeps = [&](F v) { return !use_mp || (v - m) * it >= lmp; };
  // top-p's mass is the whole row's, except under vLLM after top-k or min-p: the survivors'.
  const bool p_over_all = use_p && !(vllm && (use_k || use_mp));
  const Bounds<F> b = group_bounds<F>(x, n, m, it, use_k ? q.k : 0, p_over_all ? q.p * s_all : -1.0, !vllm);
  F lo = b.bk > b.bp ? b.bk : b.bp;
  if (use_mp) lo = std::max(lo, min_p_bound<F>(static_cast<double>(m), inv_t, q.min_p));
  RowBuffers<F>& buf = row_buffers<F>(n);
  F *vals = buf.vals.data(), *work = buf.work.data(), *mass = buf.mass.data();
  const int64_t c = gather_at_least(x, n, lo, vals);  // every kept value is among them
  F t = F(-INFINITY);
  // Fewer than k candidates: the k-th largest value lies below them all and keeps each.
  if (use_k && c >= q.k) {
    std::copy(vals, vals + c, work);
    t = kth_largest(work, c, q.k);
  }
  if (use_p) {  // the entries top-p ranks, with their masses
    masses(vals, c, m, it, mass);
    int64_t w = 0;
    double total = 0.0;
    for (int64_t i = 0; i < c; ++i) {
      const F v = vals[i];
      if (!p_over_all && !(v >= t && min_p_keeps(v))) continue;
      work[w] = v;
      mass[w] = mass[i];
      total += static_cast<double>(mass[w++]);
    }
    const F t_p = nucleus_boundary(work, mass, w, q.p * (p_over_all ? s_all : total), !vllm);
    t = t_p > t ? t_p : t;
  }
  KeptSums ks;
  if constexpr (std::is_same<F, double>::value)
    kept_sums_f64(vals, c, m, it, t, lmp, ks);
  else
    kept_sums_f32(vals, c, m, it, t, lmp, ks);
  Kept k;
  k.keep_min = ks.lo;
  k.log_s = std::log(ks.kept);
  // everything kept: exactly 0 (the row state's sum and the kept sum round differently)
  k.log_mass = ks.count == n ? 0.0 : std::min(0.0, std::log(ks.kept / s_all));
  const double h = k.log_s - ks.dot / ks.kept;
  k.entropy = h > 0.0 ? h : 0.0;
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
    const bool on = (q.k > 0 && q.k < L.vocab) || q.p < 1.0 || q.min_p > 0.0;
    Kept k;
    if (on) {
      // st.sum is relative to st.max = m/τ, the scale of kept_set's exps
      k = kept_set<F>(row, L.vocab, static_cast<F>(m), inv_t, st.sum, q, s.convention);
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
    const F ca = static_cast<F>(a * inv_t), cb = static_cast<F>(b * inv_t), hh = static_cast<F>(h);
    const F cq = static_cast<F>(std::exp(-log_mass)), lm = static_cast<F>(log_mass);
    for (int64_t i = 0; i < L.vocab; ++i) {
      const F v = static_cast<F>(cpu::load(row[i]));
      F d = math::clamp_exp_arg((v - shift) * it - c0);
      d = d > F(0) ? F(0) : d;
      const F p = exp_of(d);
      const bool kept = v >= kmin;
      const F qv = kept ? p * cq : F(0);
      F gv;
      if (over_kept)
        gv = kept ? -qv * (ca + cb * (d - lm + hh)) : F(0);
      else
        gv = -(ca * qv + cb * p * (d + hh));
      if (i == id && y_kept) gv += ca;
      g[i] = store<In>(gv);
    }
  });
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
