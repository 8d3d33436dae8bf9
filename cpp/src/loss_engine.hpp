// What the CPU loss engine's files share (internal): a row's results and the fast row loops' entry.
//
// loss_engine.cpp runs the passes (row statistics, coefficients, the token pass, the reductions);
// loss_fast.cpp holds the vectorised token pass of the common configurations; loss_rows.hpp the row
// addressing; loss_checks.cpp the argument checks and the choice of metrics.
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
// rows, no per-token inputs beyond the mask and ref_logp (entropies, sampler IS, keep flags, token
// weights, selections), no per-token outputs but the gradient. Token ratio: any surrogate, any weight
// rule but DppoKl and Vespo, any KL estimator, DRO. Sequence-level ratios (uses_row_log_ratio): any
// surrogate but Logp, no DRO, no IS-corrected KL.
bool fast_path_applies(const LossSpec& s, const LossInputs& in, const LossOutputs& out, bool adv_row);

// Pass A of a padded row on the fast path with a sequence-level ratio: its log-ratio u_i (as
// math::row_stats_finish forms it) and its valid tokens.
template <class C>
double fast_row_log_ratio(const LossSpec& s, const C* lp, const C* old, const uint8_t* m, C A, int64_t len,
                          int64_t& n_valid);

// One padded row on the fast path: writes g (0 at padding) and the row's loss and metric sums.
// ref: ref_logp's row (read when the spec has a KL term); m: the row's mask bytes (nullptr: every
// token valid); u: the row's log-ratio (sequence-level ratios); n_valid: its valid tokens (pass A).
template <class C>
void fast_row(const LossSpec& s, const C* lp, const C* old, const C* ref, const uint8_t* m, C A, C c,
              double u, int64_t len, int64_t n_valid, C* g, RowResult& a);

}  // namespace loss_cpu
}  // namespace grpokit
