// The CPU loss's extended token-ratio rows: the vectorised row of loss_vec_row.hpp (X = true) with
// per-token advantages, token weights, entropies (GTPO's term, the top-entropy mask, the entropy bonus
// and its gradient) and the clip_cov / kl_cov / positive_nll selections. An absent input is a row of A, 1 or
// 0, so one loop serves every combination. Built with the flags of loss_fast.cpp (CMakeLists.txt).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <vector>

#include "loss_engine.hpp"
#include "loss_vec.hpp"
#include "loss_vec_row.hpp"

namespace grpokit {
namespace loss_cpu {
namespace {

// A row of `len` copies of x, in a buffer of this thread (slot: which buffer).
template <class C>
const C* filled(int slot, C x, int64_t len) {
  thread_local std::vector<C> buf[3];
  std::vector<C>& b = buf[slot];
  if (b.size() < static_cast<size_t>(len)) b.resize(static_cast<size_t>(len));
  std::fill(b.begin(), b.begin() + len, x);
  return b.data();
}

// The selection bytes of a row as 0/1 values of C (the loop's lanes are all of width C).
template <class C>
const C* selection_values(const uint8_t* sel, int64_t len) {
  thread_local std::vector<C> buf;
  buf.resize(static_cast<size_t>(len));
  C* v = buf.data();
#pragma omp simd
  for (int64_t t = 0; t < len; ++t) v[t] = sel[t] != 0 ? C(1) : C(0);
  return v;
}

}  // namespace

template <class C>
double fast_row_entropy(const C* h, const uint8_t* m, int64_t len, double h_thr, double& n_kept) {
  const LaneInt<C>* valid = lane_mask<C>(m, len);
  double su = 0.0, nk = 0.0;
#pragma omp simd reduction(+ : su, nk)
  for (int64_t t = 0; t < len; ++t) {
    const double x = static_cast<double>(h[t]);
    su += valid[t] != 0 ? x : 0.0;
    nk += (valid[t] != 0) & (x >= h_thr) ? 1.0 : 0.0;
  }
  n_kept = nk;
  return su;
}

template <class C>
double fast_row_vespo_log(const C* lp, const C* old, const uint8_t* m, int64_t len) {
  const LaneInt<C>* valid = lane_mask<C>(m, len);
  double su = 0.0;
#pragma omp simd reduction(+ : su)
  for (int64_t t = 0; t < len; ++t) {
    const C d = lp[t] - old[t];
    su += valid[t] != 0 ? static_cast<double>(math::clampv<C>(d, C(-20), C(20))) : 0.0;
  }
  return su;
}

template <class C>
void extended_row(const LossSpec& s, const FastRow<C>& row, RowResult& a) {
  const int64_t len = row.len;
  const bool gtpo = s.gtpo_entropy && s.beta != 0.0 && row.h;
  RowExtras<C> ex{};
  ex.adv = row.adv ? row.adv : filled<C>(0, row.A, len);
  ex.tw = row.tw ? row.tw : filled<C>(1, C(1), len);
  ex.h = row.h ? row.h : filled<C>(2, C(0), len);
  ex.sel = row.sel ? selection_values<C>(row.sel, len) : filled<C>(2, C(0), len);
  thread_local std::vector<C> gh_scratch;
  if (!row.gh) gh_scratch.resize(static_cast<size_t>(len));
  ex.gh = row.gh ? row.gh : gh_scratch.data();
  ex.h_thr = cpu::opaque(row.h_thr);
  ex.prune = cpu::opaque(static_cast<C>(s.prune_threshold));
  ex.gtpo = cpu::opaque(gtpo ? static_cast<C>(s.beta) * row.keep : C(0));
  ex.hbar = row.hbar;
  ex.gh_kept = cpu::opaque(s.entropy_coef != 0.0 ? -static_cast<C>(s.entropy_coef) * row.cH : C(0));
  ex.clip_cov = cpu::opaque(C(s.selection == Selection::ClipCov ? 1 : 0));
  ex.kl_cov = cpu::opaque(s.selection == Selection::KlCov ? static_cast<C>(s.ppo_kl_coef) : C(0));
  ex.nll = cpu::opaque(row.nll);
  const LaneInt<C>* valid = lane_mask<C>(row.m, len);
  if (row.token_is)
    vector_row_rules<C, true, true>(s, row, valid, ex, a);
  else
    vector_row_rules<C, false, true>(s, row, valid, ex, a);
  if (row.h && s.entropy_coef != 0.0)
    a.ent_bonus = static_cast<double>(row.cH) * static_cast<double>(ex.kept_h);
  // GTPO: ∂/∂⟨H⟩_i summed over the row, shared by its valid tokens' entropies
  if (gtpo && row.gh && row.n_valid > 0) {
    const C share = ex.gh_sum / C(row.n_valid);
    C* gh = row.gh;
#pragma omp simd
    for (int64_t t = 0; t < len; ++t) gh[t] = valid[t] != 0 ? gh[t] + share : gh[t];
  }
}

template double fast_row_vespo_log<float>(const float*, const float*, const uint8_t*, int64_t);
template double fast_row_vespo_log<double>(const double*, const double*, const uint8_t*, int64_t);
template double fast_row_entropy<float>(const float*, const uint8_t*, int64_t, double, double&);
template double fast_row_entropy<double>(const double*, const uint8_t*, int64_t, double, double&);
template void extended_row<float>(const LossSpec&, const FastRow<float>&, RowResult&);
template void extended_row<double>(const LossSpec&, const FastRow<double>&, RowResult&);

}  // namespace loss_cpu
}  // namespace grpokit
