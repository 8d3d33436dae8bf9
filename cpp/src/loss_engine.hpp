// What the CPU loss engine's files share (internal): a row's results and the fast row loops' entry.
//
// loss_engine.cpp runs the passes (row statistics, coefficients, the token pass, the reductions);
// loss_fast.cpp holds the vectorised token pass of the common configurations (loss_seq_rows.cpp its
// rows with one ratio per row, loss_vec.hpp what they share); loss_rows.hpp the row addressing;
// loss_checks.cpp the argument checks and the choice of metrics.
#pragma once

#include <cstdint>
#include <vector>

#include "grpokit/loss.hpp"
#include "grpokit/math/metric_sums.hpp"

namespace grpokit {
namespace loss_cpu {

// One row's results, in its own slot: rows are reduced in row order afterwards, so the bits do not
// depend on the thread count.
struct RowResult {
  double loss = 0.0;       // c_i Σ_t φ
  double ent_bonus = 0.0;  // Σ_t cH·m′·H
  math::MetricSums<double> m = math::MetricSums<double>::zero();
  // the first non-finite input at a valid position
  int64_t err_pos = -1;
  const char* err_name = nullptr;
  double err_value = 0.0;
  void fail(int64_t t, const char* name, double v) {
    if (err_pos >= 0) return;
    err_pos = t;
    err_name = name;
    err_value = v;
  }
};

// Whether the call runs the fast row loops: padded or packed rows, unit-stride rows of the per-token arrays,
// no per-token outputs but the gradients. Token ratio: any surrogate, any weight rule but DppoKl and Vespo,
// any KL estimator, DRO, the sampler IS per token or per sequence, and (the extended row,
// fast_row_is_extended) per-token advantages, token weights, entropies (GTPO's term, the top-entropy
// mask, the entropy bonus and its gradient) and the clip_cov / kl_cov / positive_nll selections.
// Sequence-level ratios (uses_row_log_ratio): one advantage per row, any surrogate but Logp, no DRO, no
// IS-corrected KL, the sampler IS per sequence only, no per-token inputs beyond mask and ref_logp. Both: keep
// flags and CPPO's pruning.
bool fast_path_applies(const LossSpec& s, const LossInputs& in, const LossOutputs& out, bool adv_row);

// M2PO (m2_threshold set): the mask, one byte per position of logp's layout, less the tokens M2PO drops
// (loss_m2po.cpp); `dropped` is set to their number.
struct Layout;
std::vector<uint8_t> m2po_keep(const LossSpec& s, const LossInputs& in, const Layout& L, int64_t& dropped);

// Pass A of a padded row on the fast path with a sequence-level ratio: its log-ratio u_i (as
// math::row_stats_finish forms it) and its valid tokens.
template <class C>
double fast_row_log_ratio(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, int64_t len,
                          int64_t& n_valid);

// Pass A of a padded row with the sampler IS per sequence: Σ_t (ℓ_old − ℓ_smp) over its valid tokens
// in double, a NaN difference (an unscored token) as 0 (math::row_sums_add); non-finite once a valid
// sampling_logp is ±inf.
template <class C>
double fast_row_is_log(const C* old, const C* smp, const uint8_t* m, int64_t len);

// One padded row on the fast path. The row's inputs: ref (ref_logp, read when the spec has a KL
// term), smp (sampling_logp when the sampler IS applies, else nullptr; read per token when token_is),
// m (mask bytes; nullptr: every token valid), A, c, w (the row's weight: keep flag, CPPO, the
// per-sequence sampler IS weight), u (the log-ratio of a sequence-level ratio), n_valid (pass A),
// smp_bad (pass A saw a ±inf sampling_logp). Writes g (0 at padding) and the row's loss and metric sums.
// The extended row's inputs (nullptr where absent): adv (per-token advantages; A is then unused), tw,
// h (entropies), sel (selection bytes), gh (grad_entropy, written); keep (δ_i), hbar (⟨H⟩_i), cH (the
// entropy bonus's coefficient), h_thr (the top-entropy threshold, −inf when none), nll (VAPO's NLL
// coefficient, math::nll_coefficient: 0 without positive_nll).
template <class C>
struct FastRow {
  const C *lp, *old, *ref, *smp;
  const uint8_t* m;
  C A, c, w;
  double u;
  int64_t len, n_valid;
  bool token_is, smp_bad;
  C* g;
  const C *adv, *tw, *h;
  const uint8_t* sel;
  C* gh;
  C keep, hbar, cH, h_thr;
  C nll;
};

// Whether a fast row reads per-token inputs beyond mask, ref_logp and sampling_logp (loss_fast_extra.cpp).
template <class C>
bool fast_row_is_extended(const LossSpec& s, const FastRow<C>& row) {
  return row.adv || row.tw || row.h || row.sel || row.gh || s.selection != Selection::None;
}

// The extended token-ratio row of fast_row (loss_fast_extra.cpp).
template <class C>
void extended_row(const LossSpec& s, const FastRow<C>& row, RowResult& a);

// Pass A of a VESPO row (no sampler IS): Σ_t clamp(ℓ − ℓ_old, ±20) over its valid tokens, in double, as
// math::row_sums_add sums it.
template <class C>
double fast_row_vespo_log(const C* lp, const C* old, const uint8_t* m, int64_t len);

// Pass A of an extended row with entropies: Σ_t H_t over its valid tokens (in double) and how many
// reach the top-entropy threshold h_thr.
template <class C>
double fast_row_entropy(const C* h, const uint8_t* m, int64_t len, double h_thr, double& n_kept);
template <class C>
void fast_row(const LossSpec& s, const FastRow<C>& row, RowResult& a);

// The sequence-ratio row of fast_row (loss_seq_rows.cpp).
template <class C>
void seq_row(const LossSpec& s, const FastRow<C>& row, RowResult& a);

}  // namespace loss_cpu
}  // namespace grpokit
