// What the CPU loss engine's files share (internal): a row's results and the fast row loops' entry.
//
// loss_engine.cpp runs the passes (row statistics, coefficients, the token pass, the reductions);
// loss_fast.cpp holds the vectorised token pass of the common configurations (loss_seq_rows.cpp its
// rows with one ratio per row, loss_vec.hpp what they share); loss_rows.hpp the row addressing;
// loss_checks.cpp the argument checks and the choice of metrics.
#pragma once

#include <cstdint>

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

// Whether the call runs the fast row loops: padded rows, one advantage per row, unit-stride log-prob
// rows, no per-token inputs beyond the mask, ref_logp and sampling_logp (entropies, token weights,
// selections), no per-token outputs but the gradient. Token ratio: any surrogate, any weight rule but
// DppoKl and Vespo, any KL estimator, DRO, the sampler IS per token or per sequence. Sequence-level
// ratios (uses_row_log_ratio): any surrogate but Logp, no DRO, no IS-corrected KL, the sampler IS per
// sequence only. Both: keep flags and CPPO's pruning (a per-row weight).
bool fast_path_applies(const LossSpec& s, const LossInputs& in, const LossOutputs& out, bool adv_row);

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
template <class C>
struct FastRow {
  const C *lp, *old, *ref, *smp;
  const uint8_t* m;
  C A, c, w;
  double u;
  int64_t len, n_valid;
  bool token_is, smp_bad;
  C* g;
};
template <class C>
void fast_row(const LossSpec& s, const FastRow<C>& row, RowResult& a);

// The sequence-ratio row of fast_row (loss_seq_rows.cpp).
template <class C>
void seq_row(const LossSpec& s, const FastRow<C>& row, RowResult& a);

}  // namespace loss_cpu
}  // namespace grpokit
