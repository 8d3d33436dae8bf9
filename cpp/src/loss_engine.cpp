// CPU engine of the unified surrogate loss: per-row passes and deterministic reductions.
//
// Two parallel passes over rows. Pass A reads each row once for its statistics (valid count L_i, the
// sequence log-ratio u_i, OPSM divergence, sampler IS log-weight, mean entropy, ...). Between the
// passes, the global quantities (token counts, the entropy quantile, aggregation coefficients) are
// formed serially. Pass B evaluates math::token_term per token (or a fast row loop, loss_fast.cpp),
// writes the per-token outputs, and distributes the row-level derivatives (∂/∂u_i, ∂/∂⟨H⟩_i) over the
// row. Every per-row result lives in its own slot and is reduced in row order afterwards: the same
// bits for any thread count.
#include <algorithm>
#include <cmath>
#include <string>
#include <vector>

#include "cpu_kernels.hpp"
#include "grpokit/cpu_features.hpp"
#include "grpokit/interrupt.hpp"
#include "grpokit/loss.hpp"
#include "grpokit/math/loss_passes.hpp"
#include "grpokit/math/metric_sums.hpp"
#include "loss_engine.hpp"
#include "loss_rows.hpp"
#include "loss_simd.hpp"

#ifdef GRPOKIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace grpokit {
namespace loss_cpu {
namespace {

constexpr double kInf = INFINITY;

// What pass A leaves for pass B about one row.
struct RowStats {
  int64_t L = 0;            // valid tokens
  math::RowStats r{};       // u_i, ⟨H⟩_i, Ā_i, sampler IS log-weight, OPSM divergence, VESPO's log W_i
  double n_ent_kept = 0.0;  // Σ m·entropy mask
  double n_sel = 0.0;       // valid selected tokens (Selection::PositiveNll)
  double c = 0.0;           // aggregation coefficient
};

// One call: its arguments and what is derived from them once.
struct Call {
  const LossSpec& s;
  const LossInputs& in;
  const LossOutputs& out;
  const Layout& L;
  math::PassFlags pf;
  bool adv_row;                // advantages are (B,)
  bool per_row_ratio;          // the ratio metrics count sequences
  bool fast;                   // pass B runs loss_fast.cpp's loop
  bool has_quantile;           // top-entropy masking
  double h_threshold = -kInf;  // ... its threshold
  double nll_c = 0.0;          // VAPO's NLL coefficient (math::nll_coefficient)
  double m2po_dropped = 0.0;   // valid tokens M2PO left out of the mask
  bool ent_kept(double h) const { return !has_quantile || h >= h_threshold; }
};

// Row i's mask as bytes (nullptr: all valid); `buf` is this thread's conversion buffer.
const uint8_t* mask_of(const Call& k, int64_t i, std::vector<uint8_t>& buf) {
  return flag_bytes(k.in.mask, k.L, i, buf);
}

// Runs fn(i) for every row, in parallel where it pays (≥ 16k elements per thread).
template <class F>
void for_rows(const Call& k, int num_threads, F&& fn) {
  const int64_t B = k.L.B;
  Interrupt stop(16);  // Ctrl-C (grpokit/interrupt.hpp): rows not yet started are skipped
#ifdef GRPOKIT_HAVE_OPENMP
  const int64_t elems = k.L.packed ? k.in.logp.shape[0] : k.L.B * k.L.T;
  const int nt = static_cast<int>(
      std::max<int64_t>(1, std::min<int64_t>(cpu_threads(num_threads), std::min<int64_t>(B, elems / 16384))));
#pragma omp parallel for schedule(static) num_threads(nt)
  for (int64_t i = 0; i < B; ++i)
    if (!stop.requested()) fn(i);
#else
  (void)num_threads;
  for (int64_t i = 0; i < B; ++i)
    if (!stop.requested()) fn(i);
#endif
  stop.raise();
}

// TRL's top-entropy threshold over every valid token of the call (torch.quantile, linear).
template <class T>
double entropy_threshold(const Call& k) {
  std::vector<double> hs;
  std::vector<uint8_t> buf;
  for (int64_t i = 0; i < k.L.B; ++i) {
    const uint8_t* m = mask_of(k, i, buf);
    const Row<const T> h = row_of<const T>(k.in.entropies, k.L, i);
    for (int64_t t = 0, n = k.L.len(i); t < n; ++t)
      if (!m || m[t]) hs.push_back(static_cast<double>(h[t]));
  }
  if (hs.empty()) return -kInf;
  const math::QuantilePosition qp =
      math::quantile_position(1.0 - k.s.top_entropy_quantile, static_cast<int64_t>(hs.size()));
  std::nth_element(hs.begin(), hs.begin() + qp.lo, hs.end());
  const double a = hs[qp.lo];
  const double b = qp.hi == qp.lo ? a : *std::min_element(hs.begin() + qp.lo + 1, hs.end());
  return math::lerp(a, b, qp.frac);
}

// Σ_t [m_t ≠ 0] of a row of mask bytes.
int64_t count_valid(const uint8_t* m, int64_t len) {
  if (!m) return len;
#ifdef GRPOKIT_CPU_DISPATCH
  if (cpu::has_avx512()) return cpu::count_nonzero_avx512(m, len);
#endif
  int64_t n = 0;
#pragma omp simd reduction(+ : n)
  for (int64_t t = 0; t < len; ++t) n += m[t] != 0;
  return n;
}

// Σ_t [m_t ≠ 0][sel_t ≠ 0] of a row of mask and selection bytes (m: nullptr = all valid).
int64_t count_selected(const uint8_t* m, const uint8_t* sel, int64_t len) {
  if (!m) return count_valid(sel, len);
  int64_t n = 0;
#pragma omp simd reduction(+ : n)
  for (int64_t t = 0; t < len; ++t) n += (m[t] != 0) & (sel[t] != 0);
  return n;
}

// Row i of a per-token array on the fast path (padded or packed, unit stride), or element i of a (B,)
// array (per_row); nullptr if absent.
template <class T>
T* fast_row_of(const Call& k, const TensorView& v, int64_t i, bool per_row = false) {
  if (!v.defined()) return nullptr;
  return v.ptr<T>() + (per_row ? i * v.strides[0] : row_addr(v, k.L, i).base);
}
// ... of old_logp; on-policy, logp itself (the log-ratio is then exactly 0)
template <class T>
const T* fast_old(const Call& k, int64_t i) {
  return fast_row_of<const T>(k, k.in.old_logp.defined() ? k.in.old_logp : k.in.logp, i);
}

// ---- pass A: one row's statistics ----------------------------------------------------------------

template <class T>
void row_stats(const Call& k, int64_t i, RowStats& r) {
  using C = T;
  thread_local std::vector<uint8_t> buf;
  const uint8_t* m = mask_of(k, i, buf);
  const int64_t len = k.L.len(i);
  const math::PassFlags& pf = k.pf;
  if (k.fast) {  // L_i, u_i for the sequence-level ratios, the per-sequence sampler IS (A_i per row)
    if (k.s.selection == Selection::PositiveNll) {  // N_sel of VAPO's NLL
      thread_local std::vector<uint8_t> sbuf;
      r.n_sel = static_cast<double>(count_selected(m, flag_bytes(k.in.selection, k.L, i, sbuf), len));
    }
    if (pf.vespo) {
      r.L = count_valid(m, len);
      r.r.vespo_logw = math::clampv<double>(
          fast_row_vespo_log<T>(fast_row_of<const T>(k, k.in.logp, i), fast_old<T>(k, i), m, len),
          -18.420680743952367, 20.0);  // [log 1e-8, 20], as math::row_stats_finish
    } else if (pf.need_u)
      r.r.u = fast_row_log_ratio<T>(k.s, fast_row_of<const T>(k, k.in.logp, i), fast_old<T>(k, i), m,
                                    fast_row_of<const T>(k, k.in.advantages, i, true)[0], len, r.L);
    else
      r.L = count_valid(m, len);
    if (pf.has_ent) {  // ⟨H⟩_i for GTPO, the tokens the top-entropy mask keeps
      const double sh = fast_row_entropy<T>(fast_row_of<const T>(k, k.in.entropies, i), m, len, k.h_threshold,
                                            r.n_ent_kept);
      r.r.hbar = sh / static_cast<double>(r.L > 1 ? r.L : 1);
    }
    if (pf.seq_is)
      r.r.sum_is_log =
          fast_row_is_log<T>(fast_old<T>(k, i), fast_row_of<const T>(k, k.in.sampling_logp, i), m, len);
    return;
  }
  const Row<const T> lp = row_of<const T>(k.in.logp, k.L, i), old = row_of<const T>(k.in.old_logp, k.L, i);
  const Row<const T> adv = row_of<const T>(k.in.advantages, k.L, i, k.adv_row);
  const Row<const T> h = row_of<const T>(k.in.entropies, k.L, i),
                     smp = row_of<const T>(k.in.sampling_logp, k.L, i);
  // the same per-token steps as the CUDA kernels (math/loss_passes.hpp), summed in double
  thread_local std::vector<uint8_t> sbuf;
  const uint8_t* sel =
      k.s.selection == Selection::PositiveNll ? flag_bytes(k.in.selection, k.L, i, sbuf) : nullptr;
  math::RowSums<double> sums{};
  double nk = 0.0, ns = 0.0;
  for (int64_t t = 0; t < len; ++t) {
    if (m && !m[t]) continue;
    if (sel && sel[t]) ns += 1.0;
    const C l = lp[t], lo = pf.has_old ? C(old[t]) : l;
    const C ht = h ? C(h[t]) : C(0), st_smp = smp ? C(smp[t]) : C(0);
    math::row_sums_add<C, double>(k.s, pf, sums, l, lo, C(adv[t]), ht, st_smp);
    if (pf.has_ent && k.ent_kept(static_cast<double>(h[t]))) nk += 1.0;
  }
  r.r = math::row_stats_finish(k.s, sums);
  r.L = static_cast<int64_t>(r.r.L);
  r.n_ent_kept = nk;
  r.n_sel = ns;
}

// ---- pass B: one row's tokens (the general loop) ---------------------------------------------------

// cH: the entropy bonus's coefficient for this row.
template <class T>
void token_row(const Call& k, int64_t i, const RowStats& r, double cH_d, RowResult& a) {
  using C = T;  // compute type: float for float32 inputs (as TRL's fp32 math), double for float64
  const LossSpec& s = k.s;
  const math::PassFlags& pf = k.pf;
  const Layout& L = k.L;
  thread_local std::vector<uint8_t> mbuf, sbuf;
  const uint8_t* m = mask_of(k, i, mbuf);
  const uint8_t* sel = flag_bytes(k.in.selection, L, i, sbuf);
  const Row<const T> lp = row_of<const T>(k.in.logp, L, i), old = row_of<const T>(k.in.old_logp, L, i);
  const Row<const T> adv = row_of<const T>(k.in.advantages, L, i, k.adv_row);
  const Row<const T> ref = row_of<const T>(k.in.ref_logp, L, i), h = row_of<const T>(k.in.entropies, L, i);
  const Row<const T> smp = row_of<const T>(k.in.sampling_logp, L, i),
                     tw = row_of<const T>(k.in.token_weights, L, i);
  const Row<T> g = row_of<T>(k.out.grad_logp, L, i), gh = row_of<T>(k.out.grad_entropy, L, i);
  const Row<T> pt = row_of<T>(k.out.per_token, L, i), om = row_of<T>(k.out.weights, L, i);
  const C c = static_cast<C>(r.c);
  const C cH = static_cast<C>(cH_d);
  const bool opsm_div_high = math::opsm_row_masked(s, pf, r.r.opsm_div);
  const C seq_w_is = math::row_sampler_weight<C>(s, pf, r.r.sum_is_log);
  const int64_t len = L.len(i);

  math::TokenIn<C> ti{};
  ti.u = static_cast<C>(r.r.u);
  ti.hbar = static_cast<C>(r.r.hbar);
  ti.keep = flag_of_row(k.in.keep, i) ? C(1) : C(0);
  double sum_phi = 0.0, sum_nll = 0.0, G_u = 0.0, W_u = 0.0, G_h = 0.0;
  bool first = true;
  for (int64_t t = 0; t < len; ++t) {
    if (m && !m[t]) {
      if (g) g[t] = T(0);
      if (gh) gh[t] = T(0);
      if (pt) pt[t] = T(0);
      if (om) om[t] = T(0);
      continue;
    }
    ti.logp = lp[t];
    ti.old_logp = pf.has_old ? C(old[t]) : ti.logp;
    ti.adv = pf.gmpo ? static_cast<C>(r.r.abar) : C(adv[t]);
    ti.ref_logp = ref ? C(ref[t]) : C(0);
    ti.token_weight = tw ? C(tw[t]) : C(1);
    if (!std::isfinite(ti.logp)) a.fail(t, "logp", ti.logp);
    if (!std::isfinite(ti.old_logp)) a.fail(t, "old_logp", ti.old_logp);
    if (!std::isfinite(C(adv[t]))) a.fail(t, "advantages", adv[t]);
    if (ref && !std::isfinite(ti.ref_logp)) a.fail(t, "ref_logp", ti.ref_logp);
    if (!std::isfinite(ti.token_weight)) a.fail(t, "token_weights", ti.token_weight);
    if (h && !std::isfinite(C(h[t]))) a.fail(t, "entropies", h[t]);
    if (smp && std::isinf(C(smp[t]))) a.fail(t, "sampling_logp", smp[t]);

    // weight rule (math/loss_passes.hpp, as the CUDA kernels)
    const bool hk = h ? k.ent_kept(static_cast<double>(h[t])) : true;
    C wis = C(1);
    ti.w = math::weight_rule<C>(s, pf, ti.keep, ti.token_weight, C(adv[t]), opsm_div_high, hk, seq_w_is,
                                ti.old_logp, smp ? C(smp[t]) : C(0), &wis);
    if (pf.use_is && !pf.vespo) a.m.add_is_weight(wis);
    ti.selected = sel && sel[t];
    if (pf.vespo)
      ti.row_w_is = math::vespo_weight<C>(C(r.r.vespo_logw), ti.adv, C(s.vespo_k_pos), C(s.vespo_lambda_pos),
                                          C(s.vespo_k_neg), C(s.vespo_lambda_neg));

    const math::TokenOut<C> o = math::token_term<C>(s, ti);
    sum_phi += static_cast<double>(o.phi);
    G_u += static_cast<double>(c * o.d_u);
    W_u += static_cast<double>(c * o.omega_u);
    G_h += static_cast<double>(c * o.d_hbar);
    C d_logp = c * o.d_logp;
    if (ti.selected && k.nll_c != 0.0) {  // VAPO's NLL, outside φ and c_i
      const math::ValueGrad<C> nll = math::positive_nll<C>(ti.logp, static_cast<C>(k.nll_c));
      sum_nll += static_cast<double>(nll.v);
      d_logp += nll.d;
    }
    if (g) g[t] = static_cast<T>(d_logp);
    if (om) om[t] = static_cast<T>(c * o.omega_direct);
    if (pt) pt[t] = static_cast<T>(o.phi);
    const bool bonus = s.entropy_coef != 0.0 && hk;
    if (gh) gh[t] = static_cast<T>(bonus ? -C(s.entropy_coef) * cH : C(0));
    if (h && bonus) a.ent_bonus += static_cast<double>(cH) * static_cast<double>(h[t]);
    a.m.add_token(o, !k.per_row_ratio || first, ti.logp, ti.old_logp, h ? C(h[t]) : C(0));
    if (pf.vespo && first) a.m.add_row_weight(ti.row_w_is);  // one weight per sequence
    first = false;
  }
  a.m.row_done(k.per_row_ratio);
  a.loss = r.c * sum_phi + sum_nll;

  // distribute ∂/∂u_i and ∂/∂⟨H⟩_i over the row
  if (!((pf.u_grad || pf.gtpo_h) && r.L > 0)) return;
  const C scale_u = math::row_log_ratio_scale<C>(s, r.L);
  const C Gu = static_cast<C>(G_u), Wu = static_cast<C>(W_u);
  const C Gh = static_cast<C>(G_h) / C(r.L);
  for (int64_t t = 0; t < len; ++t) {
    if (m && !m[t]) continue;
    if (pf.u_grad) {
      const C l = lp[t], lo = pf.has_old ? C(old[t]) : l;
      const C du = math::row_log_ratio_term<C>(s, l, lo, C(adv[t])).d * scale_u;
      if (g) g[t] = static_cast<T>(g[t] + Gu * du);
      if (om) om[t] = static_cast<T>(om[t] + Wu * du);
    }
    if (pf.gtpo_h && gh) gh[t] = static_cast<T>(gh[t] + Gh);
  }
}

// Pass B of one row on the fast path (padded, unit-stride rows; loss_fast.cpp). cH: the entropy
// bonus's coefficient for this row.
template <class T>
void fast_token_row(const Call& k, int64_t i, const RowStats& r, double cH, RowResult& a) {
  const T A = k.adv_row ? fast_row_of<const T>(k, k.in.advantages, i, true)[0] : T(0);
  thread_local std::vector<uint8_t> buf, sbuf;
  const math::PassFlags& pf = k.pf;
  const T keep = flag_of_row(k.in.keep, i) ? T(1) : T(0);
  // the weight rule's per-row factors (keep flag, CPPO, the per-sequence sampler IS weight): its
  // per-token factors are the fast loop's (the sampler IS per token; the extended row: token weights,
  // CPPO of per-token advantages, the top-entropy mask) or off (fast_path_applies)
  math::PassFlags pf_row = pf;
  pf_row.use_is = pf.seq_is;
  LossSpec s_row = k.s;
  if (!k.adv_row) s_row.prune_threshold = -kInf;
  T w_is = T(1);
  T w = math::weight_rule<T>(s_row, pf_row, keep, T(1), A, false, true,
                             math::row_sampler_weight<T>(k.s, pf, r.r.sum_is_log), T(0), T(0), &w_is);
  T vespo = T(0);  // VESPO's detached row weight φ_γ, folded into the row's weight
  if (pf.vespo) {
    const LossSpec& s = k.s;
    vespo = math::vespo_weight<T>(T(r.r.vespo_logw), A, T(s.vespo_k_pos), T(s.vespo_lambda_pos),
                                  T(s.vespo_k_neg), T(s.vespo_lambda_neg));
    w *= vespo;
  }
  FastRow<T> row{};
  row.adv = k.adv_row ? nullptr : fast_row_of<const T>(k, k.in.advantages, i);
  row.tw = fast_row_of<const T>(k, k.in.token_weights, i);
  row.h = fast_row_of<const T>(k, k.in.entropies, i);
  row.sel = flag_bytes(k.in.selection, k.L, i, sbuf);
  row.gh = fast_row_of<T>(k, k.out.grad_entropy, i);
  row.keep = keep;
  row.hbar = static_cast<T>(r.r.hbar);
  row.cH = static_cast<T>(cH);
  // the least T ≥ the threshold: H_t ≥ it in T exactly when H_t ≥ the threshold in double
  T thr = static_cast<T>(k.h_threshold);
  if (static_cast<double>(thr) < k.h_threshold) thr = std::nextafter(thr, static_cast<T>(kInf));
  row.h_thr = thr;
  row.nll = static_cast<T>(k.nll_c);
  row.lp = fast_row_of<const T>(k, k.in.logp, i);
  row.old = fast_old<T>(k, i);
  row.ref = fast_row_of<const T>(k, k.in.ref_logp, i);
  row.smp = pf.use_is ? fast_row_of<const T>(k, k.in.sampling_logp, i) : nullptr;
  row.m = mask_of(k, i, buf);
  row.A = A;
  row.c = static_cast<T>(r.c);
  row.w = w;
  row.u = r.r.u;
  row.len = k.L.len(i);
  row.n_valid = r.L;
  row.token_is = pf.use_is && !pf.seq_is;
  row.smp_bad = pf.seq_is && !std::isfinite(r.r.sum_is_log);
  row.g = fast_row_of<T>(k, k.out.grad_logp, i);
  fast_row<T>(k.s, row, a);
  if (pf.vespo && r.L > 0) a.m.add_row_weight(vespo);
  if (pf.seq_is && r.L > 0) {  // the general loop's add_is_weight(w_is) for each of the L valid tokens
    using S = math::MetricSums<double>;
    const double n = static_cast<double>(r.L);
    a.m.sum[S::sIs] += n * static_cast<double>(w_is);
    a.m.sum[S::sNIs] += n;
    a.m.min[S::mIsMin] = S::lower(static_cast<double>(w_is), a.m.min[S::mIsMin]);
    a.m.max[S::xIsMax] = S::higher(static_cast<double>(w_is), a.m.max[S::xIsMax]);
  }
  if (k.adv_row && !std::isfinite(A) && r.L > 0) {  // reported before any per-token value
    a.err_pos = -1;
    a.fail(0, "advantages", static_cast<double>(A));
  }
}

// ---- errors, then deterministic reductions in row order ----------------------------------------------

void finish(const Call& k, const std::vector<RowResult>& acc) {
  const int64_t B = k.L.B;
  for (int64_t i = 0; i < B; ++i) {
    const RowResult& a = acc[i];
    if (a.err_pos >= 0)
      value_error(a.err_name, ": non-finite value ", a.err_value, " at a valid position (row ", i, ", token ",
                  a.err_pos, "); values under the mask must be finite",
                  std::string(a.err_name) == "sampling_logp" ? " (NaN marks an unscored token)" : "");
  }
  double loss = 0.0, bonus = 0.0;
  math::MetricSums<double> tot = math::MetricSums<double>::zero();
  for (int64_t i = 0; i < B; ++i) {
    loss += acc[i].loss;
    bonus += acc[i].ent_bonus;
    tot.merge(acc[i].m);
  }
  loss -= k.s.entropy_coef * bonus;
  tot.add_m2po_dropped(k.m2po_dropped);
  if (k.out.loss.dtype == DType::Float32)
    *k.out.loss.ptr<float>() = static_cast<float>(loss);
  else
    *k.out.loss.ptr<double>() = loss;
  if (!k.out.metrics.defined()) return;
  double vals[loss_metrics::kNumMetrics];
  tot.finish(k.per_row_ratio, B, vals);
  const std::vector<int> ids = loss_metric_ids(k.s, k.in);
  double* mo = k.out.metrics.ptr<double>();
  for (size_t j = 0; j < ids.size(); ++j) mo[j * k.out.metrics.strides[0]] = vals[ids[j]];
}

template <class T>
void run(Call& k, int num_threads) {
  const int64_t B = k.L.B;
  if (k.has_quantile) k.h_threshold = entropy_threshold<T>(k);

  std::vector<RowStats> st(static_cast<size_t>(B));
  for_rows(k, num_threads, [&](int64_t i) { row_stats<T>(k, i, st[i]); });

  // global counts and aggregation coefficients: the functions the CUDA kernels call
  double n_tok = 0.0, n_rows_nonempty = 0.0, n_ent_kept = 0.0, n_sel = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    n_tok += static_cast<double>(st[i].L);
    n_rows_nonempty += st[i].L > 0 ? 1.0 : 0.0;
    n_ent_kept += st[i].n_ent_kept;
    n_sel += st[i].n_sel;
  }
  const math::AggCounts counts = math::agg_counts(k.s, n_tok, n_rows_nonempty, static_cast<double>(B));
  k.nll_c = math::nll_coefficient(k.s, counts, n_sel);
  const auto row_tokens = [&](int64_t j) { return static_cast<double>(st[j].L); };
  for (int64_t i = 0; i < B; ++i)
    st[i].c = math::agg_coefficient(k.s, counts, static_cast<double>(st[i].L), static_cast<double>(k.L.T),
                                    math::group_tokens(k.s, row_tokens, i));
  // TRL's local coefficient counts the tokens the top-entropy mask keeps
  const double ent_local_c = math::entropy_local_coefficient(k.s, k.has_quantile ? n_ent_kept : n_tok);
  const bool policy_c = k.s.entropy_aggregation == EntropyAggregation::Policy;

  std::vector<RowResult> acc(static_cast<size_t>(B));
  for_rows(k, num_threads, [&](int64_t i) {
    const double cH = policy_c ? st[i].c : ent_local_c;
    if (k.fast)
      fast_token_row<T>(k, i, st[i], cH, acc[i]);
    else
      token_row<T>(k, i, st[i], cH, acc[i]);
  });
  finish(k, acc);
}

}  // namespace
}  // namespace loss_cpu

void policy_loss_cpu(const LossSpec& spec, const LossInputs& in, const LossOutputs& out, int num_threads) {
  using namespace loss_cpu;
  check_loss_args(spec, in, out);
  check_cpu(in.logp, "logp");
  const Layout L = layout_of(in);
  // An entirely empty mask has no loss to define.
  bool any = !in.mask.defined();
  std::vector<uint8_t> buf;
  for (int64_t i = 0; i < L.B && !any; ++i) {
    const uint8_t* m = flag_bytes(in.mask, L, i, buf);
    for (int64_t t = 0, n = L.len(i); t < n && !any; ++t) any = m[t] != 0;
  }
  if (!any) value_error("mask: no valid token (every position is masked); there is no loss to compute");

  // M2PO: the engine runs on the mask less the tokens it drops (loss_m2po.cpp)
  std::vector<uint8_t> m2po;
  int64_t m2po_dropped = 0;
  LossInputs in_m2 = in;
  if (!std::isnan(spec.m2_threshold)) {
    m2po = m2po_keep(spec, in, L, m2po_dropped);
    const int64_t n = static_cast<int64_t>(m2po.size());
    in_m2.mask =
        L.packed ? make_view(m2po.data(), DType::Bool, {n}) : make_view(m2po.data(), DType::Bool, {L.B, L.T});
  }
  const bool adv_row = in.advantages.ndim == 1 && (!L.packed || in.advantages.shape[0] != in.logp.shape[0]);
  Call k{spec,
         in_m2,
         out,
         L,
         math::pass_flags(spec, in.old_logp.defined(), in.entropies.defined(), in.sampling_logp.defined(),
                          in.ref_logp.defined(), in.token_weights.defined()),
         adv_row,
         math::ratio_metrics_per_row(spec),
         fast_path_applies(spec, in_m2, out, adv_row),
         spec.top_entropy_quantile < 1.0};
  k.m2po_dropped = static_cast<double>(m2po_dropped);
  if (in.logp.dtype == DType::Float32)
    run<float>(k, num_threads);
  else
    run<double>(k, num_threads);
}

}  // namespace grpokit
