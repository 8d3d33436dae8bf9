// Diagnostics of GRPO's hidden biases (docs/diagnostics.md §1–4): the CPU
// engine parts that touch per-token or per-parameter arrays.
//
//  * prefix_bias_cpu: the prefix trie of each group's completions and, for every node (a prefix
//    shared by a subset G̃ of the group), W = Σ_{i∈G̃} ω_{i,t} A_i (Prop. 1), the weight-induced bias
//    Σ_{i∈G̃} (ω_{i,t} − ω̄) A_i (ω̄ the mean of ω over G̃) and Σ_{i∈G̃} |ω_{i,t} A_i|.
//  * clip_region_cpu: sign-aware membership of ℛ_clip and the excess beyond the bound (§5.4).
//  * adam_*_cpu: statistics of a torch-style Adam state (exp_avg, exp_avg_sq, step) per parameter
//    tensor: ρ = ϵ/√v̂, elasticity to a reward scale, preconditioned steps, stale/fresh split.
//
// All results are float64; every input is read-only. Errors are grpokit::Error naming the argument.
#pragma once

#include <cstdint>
#include <vector>

#include "grpokit/config.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {

// ---- shared-prefix bias ---------------------------------------------------------------------
//
// Completions: `ids` padded (B, T) with an optional `mask` (B, T) (bool or integer; absent = all
// tokens valid), or packed (N,) with `cu_seqlens` (B+1,) (then `mask`, if given, is (N,)).
// A completion runs up to its last valid token; masked tokens inside it still form the context
// (the trie path) but carry weight 0, exactly as they do in the loss. `omega` has the shape of
// `ids` (float32/float64): ω_{i,t} = effective α · ratio factor (0 where the clipped branch binds).
// `advantages` (B,) float32/float64. Groups are contiguous blocks of `group_size` rows.

// Columns of the per-group output (num_groups, kPrefixGroupStats), float64.
enum PrefixGroupStat : int {
  kPrefixLen = 0,          // depth of the prefix shared by the whole group (0: none)
  kPrefixCoef = 1,         // Σ over that prefix's tokens of W
  kPrefixBias = 2,  // Σ over that prefix's tokens of the weight-induced bias (= G·Cov_pop(ω, A) per token)
  kPrefixAbs = 3,  // Σ over that prefix's tokens of Σ_i |ω A|
  kSharedBias = 4,  // Σ of the bias over every node shared by ≥ 2 completions
  kSharedAbs = 5,  // Σ over the same nodes of Σ_i |ω A|
  kWeightLengthCorr =
      6,  // Pearson corr over the group of (mean ω of a completion, its valid-token count); NaN if undefined
  kPrefixGroupStats = 7,
};

struct PrefixBiasOutputs {
  TensorView node;  // int64, shape of ids: node id within the group (DFS order), −1 after the end
  TensorView count;  // int64: |G̃|, completions sharing this token's prefix; 0 after the end
  TensorView coef;  // float64: W of the node
  TensorView bias;  // float64: Σ (ω − ω̄) A over the node
  TensorView abs_sum;  // float64: Σ |ω A| over the node
  TensorView group;  // float64 (num_groups, kPrefixGroupStats)
};

void prefix_bias_cpu(const TensorView& ids, const TensorView& mask, const TensorView& cu_seqlens,
                     const TensorView& advantages, const TensorView& omega, int64_t group_size,
                     const PrefixBiasOutputs& out);

// ---- clip region ----------------------------------------------------------------------------
//
// `ratios` (B, T) token-level (with optional `mask` (B, T)) or (B,) sequence-level, float32/64;
// `advantages` (B,). `out_excess` (shape of ratios, float64) receives the excess beyond the bound
// (0 outside ℛ_clip and at masked positions). With `prev_excess` (the previous inner step's
// out_excess) the growth of tokens in ℛ_clip at both steps is reported.
struct ClipRegionStats {
  int64_t n_valid = 0;
  int64_t n_in_region = 0;
  int64_t n_in_region_pos = 0;  // A > 0, s > 1 + ε_high
  int64_t n_in_region_neg = 0;  // A < 0, s < 1 − ε_low
  double sum_excess = 0.0;
  double max_excess = 0.0;
  int64_t n_in_both = 0;  // in ℛ_clip now and at the previous step
  int64_t n_growing = 0;  // of those, excess grew
  double sum_growth = 0.0;  // Σ (excess now − excess before) over n_in_both
};

ClipRegionStats clip_region_cpu(const TensorView& ratios, const TensorView& advantages,
                                const TensorView& mask, double eps_low, double eps_high,
                                const TensorView& prev_excess, const TensorView& out_excess);

// ---- Adam state ----------------------------------------------------------------------------
//
// One parameter tensor's state as torch.optim.Adam/AdamW keeps it: `exp_avg` m and `exp_avg_sq` v
// (1-D, same length, float32/float64, any stride; the CUDA kernels also read bfloat16/float16),
// `step` t. Bias corrections use t.
struct AdamHyper {
  double beta1 = 0.9;
  double beta2 = 0.999;
  double eps = 1e-8;
  double step = 0.0;
};

// Histogram of log10 ρ: `hist_bins` equal bins over [hist_lo, hist_hi]; values outside fall into
// the first / last bin. Coordinates with v = 0 (never updated) are counted apart (ρ = +inf).
struct AdamStateSums {  // the scalar part, which both engines fill (write_stats below lays it out)
  int64_t n = 0;
  int64_t n_zero_v = 0;
  int64_t n_rho_above = 0;  // ρ > rho_threshold (v = 0 included)
  double sum_u2 = 0.0;  // ‖u_t‖², u = m̂/(√v̂ + ϵ)
  double sum_abs_u = 0.0;  // Σ |u|
  double sum_abs_u_elast = 0.0;  // Σ |u|·ρ/(1+ρ)
  double sum_elast = 0.0;  // Σ ρ/(1+ρ)
  double sum_u2_next = 0.0;  // ‖u_{t+1}‖² of the momentum-only next step (g = 0)
  double max_rho = 0.0;  // over v > 0
  double min_rho = 0.0;  // over v > 0 (+inf if none)
};
struct AdamStateStats : AdamStateSums {
  std::vector<int64_t> hist;
  std::vector<double> sum_abs_u_phi;  // Σ |u_φ| for each requested reward scale φ
};

// `phis`: reward scales φ > 0 for which Σ|u_φ| is accumulated in the same pass.
AdamStateStats adam_state_stats_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq,
                                    const AdamHyper& hp, double rho_threshold, double hist_lo, double hist_hi,
                                    int64_t hist_bins, const std::vector<double>& phis = {});

// Per-coordinate preconditioned step into `out` (1-D float32/float64, same length): u_φ =
// φm̂/(φ√v̂ + ϵ) of the state, or, with `momentum_only_next`, of the state one step later with a
// zero gradient (m ← β1 m, v ← β2 v, t ← t + 1): the step momentum alone will still take.
void adam_update_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp, double phi,
                     bool momentum_only_next, const TensorView& out);

// Per coordinate ρ = ϵ/√v̂ into `out_rho` and, if defined, the elasticity ρ/(1+ρ) into
// `out_elasticity` (1-D float32/float64, the length of the state; ρ = +inf where v = 0).
void adam_rho_cpu(const TensorView& exp_avg_sq, const AdamHyper& hp, const TensorView& out_rho,
                  const TensorView& out_elasticity);

// The coming step t = hp.step + 1 split into the part carried by momentum and the part from the
// current gradient: u_t = u_stale + u_fresh with u_stale = β1 m_{t−1}/d, u_fresh = (1−β1) g_t/d,
// d = (1−β1^t)(√v̂_t + ϵ), v_t = β2 v_{t−1} + (1−β2) g_t². `grad` has the length of the state;
// with `param` defined, g_t = grad + l2 · param (torch.optim.Adam's coupled weight decay).
struct AdamStepSplit {
  int64_t n = 0;
  double stale2 = 0.0;  // ‖u_stale‖²
  double fresh2 = 0.0;  // ‖u_fresh‖²
  double stale_fresh = 0.0;  // ⟨u_stale, u_fresh⟩
  double prev2 = 0.0;  // ‖u_{t−1}‖² of the state before the step (0 when hp.step == 0)
  double grad2 = 0.0;  // ‖g_t‖²
  double u_grad = 0.0;  // ⟨u_t, g_t⟩
};

AdamStepSplit adam_step_split_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq,
                                  const TensorView& grad, const TensorView& param, double l2,
                                  const AdamHyper& hp);

// ---- the same statistics as arrays (the layout both engines write) ------------------------------
//
// adam_state_stats_into_cpu / cuda::adam_state_stats write one parameter tensor's statistics into
// `out_stats` (float64, kAdamStatFields + phis.size(), contiguous; counts are whole numbers, exact
// in float64) and its histogram into `out_hist` (int64, hist_bins = its length, contiguous). With
// many tensors the caller passes rows of one (tensors, fields) array and reads them all at once.
enum AdamStatField : int {
  kAdamN = 0,
  kAdamNZeroV,
  kAdamNRhoAbove,
  kAdamSumU2,
  kAdamSumAbsU,
  kAdamSumAbsUElast,
  kAdamSumElast,
  kAdamSumU2Next,
  kAdamMaxRho,
  kAdamMinRho,
  kAdamStatFields  // then Σ|u_φ| for each φ, in order
};
// adam_step_split_into_cpu / cuda::adam_step_split: `out` float64 (kAdamSplitFields,). The CPU
// engine raises on a non-finite gradient; the CUDA kernels cannot, so they report the first such
// element in kSplitFirstBad (−1: none) and the caller raises (grpokit.diagnostics does).
enum AdamSplitField : int {
  kSplitN = 0,
  kSplitStale2,
  kSplitFresh2,
  kSplitStaleFresh,
  kSplitPrev2,
  kSplitGrad2,
  kSplitUGrad,
  kSplitFirstBad,
  kAdamSplitFields
};

// The scalar statistics and the split in their array layout (both engines write through these).
GRPOKIT_HD void write_stats(const AdamStateSums& s, double* o) {
  const double v[kAdamStatFields] = {static_cast<double>(s.n),
                                     static_cast<double>(s.n_zero_v),
                                     static_cast<double>(s.n_rho_above),
                                     s.sum_u2,
                                     s.sum_abs_u,
                                     s.sum_abs_u_elast,
                                     s.sum_elast,
                                     s.sum_u2_next,
                                     s.max_rho,
                                     s.min_rho};
  for (int k = 0; k < kAdamStatFields; ++k) o[k] = v[k];
}
GRPOKIT_HD void write_split(const AdamStepSplit& s, double first_bad, double* o) {
  const double v[kAdamSplitFields] = {
      static_cast<double>(s.n), s.stale2, s.fresh2, s.stale_fresh, s.prev2, s.grad2, s.u_grad, first_bad};
  for (int k = 0; k < kAdamSplitFields; ++k) o[k] = v[k];
}

void adam_state_stats_into_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                               double rho_threshold, double hist_lo, double hist_hi,
                               const std::vector<double>& phis, const TensorView& out_stats,
                               const TensorView& out_hist);
void adam_step_split_into_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq, const TensorView& grad,
                              const TensorView& param, double l2, const AdamHyper& hp, const TensorView& out);

// Argument checks shared by the CPU engine and the CUDA launchers. On_device: the state may also be
// bfloat16/float16 and every array must be on exp_avg_sq's CUDA device (else: on the CPU).
void check_adam_state(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                      bool need_step, bool on_device);
void check_adam_input(const TensorView& t, const char* name, const TensorView& exp_avg_sq, bool on_device);
void check_adam_output(const TensorView& out, const char* name, const TensorView& exp_avg_sq, bool on_device);
void check_adam_phi(double phi);
// rho_threshold, the histogram range and phis; with the array outputs also their shapes.
void check_adam_stats_options(double hist_lo, double hist_hi, int64_t hist_bins,
                              const std::vector<double>& phis);
void check_adam_stats_outputs(const TensorView& out_stats, const TensorView& out_hist, size_t n_phis,
                              const TensorView& exp_avg_sq, bool on_device);
void check_adam_split_output(const TensorView& out, const TensorView& exp_avg_sq, bool on_device);

// ---- Prop. 4: what the surrogate's value measures ----------------------------------------------
//
// Decomposition of J = Σ_i Σ_t α_{i,t} min(s A_i, clip(s) A_i) − β Σ_i Σ_t α_{i,t} R_{i,t} per group:
//   reward part   Σ_i A_i Ω_i with Ω_i = Σ_t α_{i,t} (the value at s = 1, Eq. 8),
//   ratio part    Σ_i Σ_t α_{i,t} (min(s A_i, clip(s) A_i) − A_i) (importance-ratio fluctuation),
//   reg part      Σ_i Σ_t α_{i,t} R_{i,t} (multiplied by β by the caller).
// `alpha`, `ratios` (optional: s = 1), `reg` (optional) (B, T) float32/64, `mask` (B, T) optional,
// `advantages` (B,). Clipping is off when eps_low / eps_high are negative. `out_group`
// (num_groups, 4) float64 columns: reward, ratio, reg, G·Cov_pop(A, Ω). `out_omega_sum` (B,) Ω_i.
void loss_decomposition_cpu(const TensorView& alpha, const TensorView& ratios, const TensorView& reg,
                            const TensorView& mask, const TensorView& advantages, int64_t group_size,
                            double eps_low, double eps_high, const TensorView& out_group,
                            const TensorView& out_omega_sum);

}  // namespace grpokit
