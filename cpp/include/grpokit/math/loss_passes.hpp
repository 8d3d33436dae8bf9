// The per-token steps of the loss engine's passes, as GRPOKIT_HD functions: the row statistics of
// pass A, the aggregation coefficients between the passes, and the weight rule of pass B. Both the
// CPU engine (cpp/src/loss_engine.cpp) and the CUDA kernels (cuda/loss.cu) call them: one place per rule.
//
// Everything is allocation-free, exception-free and templated on the compute type C.
#pragma once

#include <cstdint>

#include "grpokit/config.hpp"
#include "grpokit/math/loss.hpp"

namespace grpokit {
namespace math {

template <class C>
GRPOKIT_HD bool is_nan_v(C x) {
  return x != x;
}
template <class C>
GRPOKIT_HD bool is_finite_v(C x) {
  return x == x && x < C(INFINITY) && x > C(-INFINITY);
}

// What a call needs, derived once from the spec and which optional inputs are present.
struct PassFlags {
  bool has_old, has_ent, has_smp, has_ref, has_tw;
  bool use_is;       // the sampler IS weight is applied
  bool seq_is;       // ... per sequence
  bool is_truncate;  // truncate (else mask) outside [is_min, is_max]
  bool opsm;         // off-policy sequence mask
  bool gmpo;         // GeoMean surrogate (row-mean advantage)
  bool vespo;        // VESPO's per-row weight
  bool need_u;       // pass A computes the row log-ratio
  bool u_grad;       // the row log-ratio carries gradient (pass B distributes ∂/∂u_i)
  bool gtpo_h;       // GTPO's entropy term (∂/∂⟨H⟩_i distributed)
};

GRPOKIT_HD PassFlags pass_flags(const LossSpec& s, bool has_old, bool has_ent, bool has_smp, bool has_ref,
                                bool has_tw) {
  PassFlags f{};
  f.has_old = has_old;
  f.has_ent = has_ent;
  f.has_smp = has_smp;
  f.has_ref = has_ref;
  f.has_tw = has_tw;
  f.use_is = s.sampler_is != SamplerIs::None && has_smp;
  f.seq_is =
      f.use_is && (s.sampler_is == SamplerIs::SequenceTruncate || s.sampler_is == SamplerIs::SequenceMask);
  f.is_truncate = s.sampler_is == SamplerIs::TokenTruncate || s.sampler_is == SamplerIs::SequenceTruncate;
  f.opsm = !is_nan_v(s.off_policy_mask_threshold);
  f.gmpo = s.surrogate == Surrogate::GeoMean;
  f.vespo = s.surrogate == Surrogate::Logp && s.logp_weight == LogpWeight::Vespo;
  f.need_u = uses_row_log_ratio(s) || f.vespo;
  f.u_grad = row_log_ratio_has_grad(s);
  f.gtpo_h = s.gtpo_entropy && s.beta != 0.0 && has_ent;
  return f;
}

// ---- pass A: row statistics ---------------------------------------------------------------------

// Partial sums of one row over some of its valid tokens (a thread's share on the GPU). A is the
// accumulator type: the CPU engine sums in double, the CUDA kernels in the compute type.
template <class A>
struct RowSums {
  A n, su, svw, sh, sa, sis, sop;
};

// Adds one valid token. `lo` is old_logp (= logp when absent); `h`, `smp` are read only when present.
// Per-token terms are computed in C; differences of log-probs that are only summed (sampler IS, OPSM)
// are taken in A.
template <class C, class A>
GRPOKIT_HD void row_sums_add(const LossSpec& s, const PassFlags& f, RowSums<A>& a, C l, C lo, C adv, C h,
                             C smp) {
  a.n += A(1);
  if (f.need_u) {
    a.su += static_cast<A>(row_log_ratio_term<C>(s, l, lo, adv).v);
    a.svw += static_cast<A>(clampv<C>(l - lo, C(-20), C(20)));
  }
  if (f.has_ent) a.sh += static_cast<A>(h);
  a.sa += static_cast<A>(adv);
  if (f.use_is) {
    const A d = static_cast<A>(lo) - static_cast<A>(smp);
    const A dd = is_nan_v(d) ? A(0) : d;
    a.sis += dd;
    if (f.vespo && !f.seq_is) {  // VESPO folds token IS weights into W (TRL)
      const A lw = log(static_cast<A>(sampler_is_weight<C>(C(dd), f.is_truncate, C(s.is_min), C(s.is_max))));
      a.svw += clampv<A>(lw, A(-18.420680743952367), A(20));  // [log 1e-8, 20]
    }
  }
  if (f.opsm) {
    const A d = static_cast<A>(f.has_smp ? smp : lo) - static_cast<A>(l);
    a.sop += is_nan_v(d) ? A(0) : d;
  }
}

// A row's statistics (double: they are per-row scalars).
struct RowStats {
  double L, u, hbar, abar, sum_is_log, opsm_div, vespo_logw;
};

template <class A>
GRPOKIT_HD RowStats row_stats_finish(const LossSpec& s, const RowSums<A>& a) {
  RowStats r{};
  const double n = static_cast<double>(a.n);
  const double Ld = n > 1.0 ? n : 1.0;
  r.L = n;
  r.u = static_cast<double>(a.su) * row_log_ratio_scale<double>(s, static_cast<int64_t>(n));
  r.hbar = static_cast<double>(a.sh) / Ld;
  r.abar = static_cast<double>(a.sa) / Ld;  // GMPO: the row-mean advantage
  r.sum_is_log = static_cast<double>(a.sis);
  r.opsm_div = static_cast<double>(a.sop) / Ld;
  r.vespo_logw = clampv<double>(static_cast<double>(a.svw), -18.420680743952367, 20.0);
  return r;
}

// ---- M2PO (AReaL m2_threshold): a selection before pass A ------------------------------------------

// A valid token's second moment (log r)²: r = π_old/π_sampler when sampling_logp is given (AReaL's
// behaviour vs proximal policy; an unscored token, NaN, has 0), else π/π_old (the current policy is
// the proximal one). In double, on both engines.
template <class C>
GRPOKIT_HD double m2po_moment(bool has_smp, C l, C lo, C smp) {
  const double d = has_smp ? static_cast<double>(lo) - static_cast<double>(smp)
                           : static_cast<double>(l) - static_cast<double>(lo);
  return is_nan_v(d) ? 0.0 : d * d;
}

// AReaL's stopping test at rank i of the moments sorted in decreasing order: the mean of the ranks ≥ i
// (sum `rest` of n − i values) is under the threshold. M2PO drops the ranks below the first i that
// passes, at most n − 1 of them.
GRPOKIT_HD bool m2po_rest_passes(const LossSpec& s, double rest, double n_rest) {
  return rest / n_rest < s.m2_threshold;
}

// ---- between the passes: counts and the aggregation coefficient c_i -----------------------------

struct AggCounts {
  double N_tok, N_seq, N_prompt, scale;
};

// n_tok: valid tokens of the call; n_nonempty: rows with L_i > 0; B: rows.
GRPOKIT_HD AggCounts agg_counts(const LossSpec& s, double n_tok, double n_nonempty, double B) {
  AggCounts k{};
  k.scale = s.dp_size / (s.divide_by_ga ? s.gradient_accumulation_steps : 1.0);
  const double nt = s.num_items_in_batch >= 0.0 ? s.num_items_in_batch : n_tok;
  k.N_tok = nt > 1.0 ? nt : 1.0;
  const double ns = s.num_sequences >= 0.0 ? s.num_sequences : (s.seq_count_nonempty ? n_nonempty : B);
  k.N_seq = ns > 1.0 ? ns : 1.0;
  const double np = s.num_prompts >= 0.0 ? s.num_prompts : (s.group_size >= 1.0 ? B / s.group_size : B);
  k.N_prompt = np > 1.0 ? np : 1.0;
  return k;
}

// PromptMean: the valid tokens of row i's prompt group, the rows [g·G, g·G + G) with G = group_size;
// row_tokens(j) is row j's valid-token count (0 for the other aggregations, which do not read it).
template <class RowTokens>
GRPOKIT_HD double group_tokens(const LossSpec& s, const RowTokens& row_tokens, int64_t i) {
  if (s.aggregation != Aggregation::PromptMean) return 0.0;
  const int64_t G = static_cast<int64_t>(s.group_size), first = (i / G) * G;
  double n = 0.0;
  for (int64_t j = first; j < first + G; ++j) n += row_tokens(j);
  return n;
}

// padded_T: the padded length, verl's default constant normaliser C when max_completion_length <= 0;
// n_group: group_tokens() of the row (PromptMean).
GRPOKIT_HD double agg_coefficient(const LossSpec& s, const AggCounts& k, double Li, double padded_T,
                                  double n_group) {
  switch (s.aggregation) {
    case Aggregation::TokenMean:
      return k.scale / k.N_tok;
    case Aggregation::TokenSum:
      return k.scale;
    case Aggregation::SeqMeanTokenMean:
      return k.scale / (k.N_seq * (Li > 1.0 ? Li : 1.0));
    case Aggregation::SeqMeanTokenSum:
      return k.scale / k.N_seq;
    case Aggregation::SeqMeanTokenSumNorm:
      return k.scale / (k.N_seq * (s.max_completion_length > 0.0 ? s.max_completion_length : padded_T));
    case Aggregation::PromptMean:
      return k.scale / (k.N_prompt * (n_group > 1.0 ? n_group : 1.0));
  }
  return 0.0;
}

// VAPO's NLL coefficient μ·scale/N_sel, N_sel the call's valid selected tokens (NeMo-RL: the mean of −ℓ
// over this micro-batch's positive tokens, 0 when there are none); 0 unless Selection::PositiveNll.
GRPOKIT_HD double nll_coefficient(const LossSpec& s, const AggCounts& k, double n_sel) {
  if (s.selection != Selection::PositiveNll || !(n_sel > 0.0)) return 0.0;
  return s.positive_example_nll_weight * k.scale / n_sel;
}

// TRL's local entropy-bonus coefficient 1 / (max(Σ m, 1) · K) (no top-entropy selection).
GRPOKIT_HD double entropy_local_coefficient(const LossSpec& s, double n_tok) {
  return 1.0 / ((n_tok > 1.0 ? n_tok : 1.0) * s.gradient_accumulation_steps);
}

// ---- pass B: the weight rule ----------------------------------------------------------------------

// w_{i,t} = δ_i·λ_{i,t}·[CPPO]·[OPSM]·[entropy kept]·ρ (sampler IS). `seq_w_is` is the row's IS weight
// when it is per sequence; the token IS weight actually applied is written to *wis (1 when none).
template <class C>
GRPOKIT_HD C weight_rule(const LossSpec& s, const PassFlags& f, C keep, C token_weight, C adv_raw,
                         bool opsm_div_high, bool entropy_kept, C seq_w_is, C lo, C smp, C* wis) {
  C w = keep * token_weight;
  const double abs_a = adv_raw < C(0) ? -static_cast<double>(adv_raw) : static_cast<double>(adv_raw);
  if (s.prune_threshold > -INFINITY && !(abs_a > s.prune_threshold)) w = C(0);  // CPPO: |A| > γ
  if (f.opsm && opsm_div_high && !(adv_raw >= C(0))) w = C(0);
  if (!entropy_kept) w = C(0);
  *wis = C(1);
  if (f.use_is && !f.vespo) {
    C r = seq_w_is;
    if (!f.seq_is) {
      const C d = lo - smp;
      r = sampler_is_weight<C>(is_nan_v(d) ? C(0) : d, f.is_truncate, C(s.is_min), C(s.is_max));
    }
    w *= r;
    *wis = r;
  }
  return w;
}

// The row's sequence-level sampler IS weight (1 unless per-sequence IS applies).
template <class C>
GRPOKIT_HD C row_sampler_weight(const LossSpec& s, const PassFlags& f, double sum_is_log) {
  return f.seq_is ? sampler_is_weight<C>(C(sum_is_log), f.is_truncate, C(s.is_min), C(s.is_max)) : C(1);
}

GRPOKIT_HD bool opsm_row_masked(const LossSpec& s, const PassFlags& f, double opsm_div) {
  return f.opsm && !(opsm_div <= s.off_policy_mask_threshold);
}

}  // namespace math
}  // namespace grpokit
