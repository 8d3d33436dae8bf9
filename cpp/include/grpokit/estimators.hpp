// Advantage estimators beyond group mean / std: every estimator TRL and verl offer, exact to each
// peer's definition (docs/estimators.md has the table and the formulas).
//
// Outcome estimators take rewards (B,) or (B, K) (K reward functions, combined with weights) and
// write advantages (B,). Token estimators take rewards (B, T) (or (B,) placed on the last selected
// token of each row) with a mask (B, T) and write advantages (B, T) (and optionally the returns).
// NaN outcome rewards mark unscorable completions: excluded from every statistic, advantage 0.
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "grpokit/advantages.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {

enum class Estimator : uint8_t {
  Grpo,                  // group mean [/ std] (the foundation's advantages), after combining K rewards
  Rloo,  // leave-one-out baseline (TRL RLOOTrainer, verl rloo), optional batch standardising
  ReinforcePP,  // verl reinforce_plus_plus: discounted return-to-go, masked whitening
  ReinforcePPBaseline,  // verl reinforce_plus_plus_baseline: R − group mean, masked whitening
  Remax,  // verl remax: return-to-go − greedy-baseline reward
  Opo,  // verl opo: R − Σ L_j R_j / Σ L_j
  GrpoPassk,  // verl grpo_passk: only the group's best gets (R_max − R_2nd)[/ (σ + ε)]
  Gpg,  // verl gpg: α (R − group mean) / f_norm, α = B / #non-zero scores
  NormalizeThenSum,  // GDPO: per-reward group standardising, weighted sum, then a batch normalisation
  OptimalTokenBaseline,  // verl optimal_token_baseline: A_t = G_t − Σ G W / Σ W per group and position
  TirOptimalTokenBaseline,  // verl tir_optimal_token_baseline: the same over each row's selected tokens
                            // only (multi-turn: positions counted without the tool-output gaps)
  MaxRl,  // SkyRL maxrl: (R − group mean) / (group mean + ε); a group of one keeps R
  BatchMean,  // AReaL Normalization(mean_level="batch"): R − batch mean [/ (σ + ε)], σ around that mean
              // over the batch or the group (no groups needed without a group σ)
  Running,  // ROLL norm_mean_type="running": R − running mean [/ (running σ + ε)], the running moments
            // (caller-kept) updated with the batch first; the new state is the second output (3,)
};

// The final batch normalisation of the leave-one-out and normalise-then-sum estimators.
enum class BatchNorm : uint8_t {
  None,
  Standardise,  // TRL: (x − nanmean) / (nanstd (n − 1) + final_epsilon)
  MaskedWhiten,  // verl_F.masked_whiten, token-weighted by row lengths (1e-8 in count and variance)
};

Estimator parse_estimator(const std::string& name);  // the Python names, e.g. "reinforce_pp"
const char* estimator_name(Estimator e);
bool is_token_estimator(Estimator e);  // ReinforcePP, Remax, (Tir)OptimalTokenBaseline
bool is_optimal_token_baseline(Estimator e);  // (Tir)OptimalTokenBaseline
BatchNorm parse_batch_norm(const std::string& name);  // "none" | "standardise" | "masked_whiten"

struct EstimatorInputs {
  TensorView rewards;  // (B,), (B, K) outcome; (B, T) or (B,) for token estimators
  TensorView group_ids;  // (B,) int32/int64, optional (else contiguous `group_size` blocks)
  TensorView reward_weights;  // (K,) float64, optional (ones)
  TensorView mask;  // (B, T) bool/int/float: token estimators (required), lengths otherwise
  TensorView lengths;  // (B,) int/float row lengths (alternative to a mask for outcome estimators)
  TensorView baseline_rewards;  // (B,) ReMax greedy-decoding rewards
  TensorView logp;  // (B, T) log π of the sampled tokens (optimal token baseline; RLOO's KL)
  TensorView ref_logp;  // (B, T) reference log-probs (RLOO's KL-in-reward, beta != 0)
  TensorView sum_pi_squared;  // (B, T) Σ_v π_v² per position (optimal token baseline)
  TensorView is_weights;  // (B, T) rollout IS weights ρ (optimal token baseline, optional)
};

struct EstimatorOptions {
  Estimator estimator = Estimator::Grpo;
  int64_t group_size = 0;  // 0 with no group_ids: one group, the batch (estimators that need none)
  // Group statistics (Grpo, GrpoPassk, NormalizeThenSum per reward): as AdvantageOptions.
  Baseline baseline = Baseline::Mean;
  StdDivisor std = StdDivisor::None;
  StdScope std_scope = StdScope::Group;
  double epsilon = 0.0;
  BatchNorm batch_norm = BatchNorm::None;  // Rloo, ReinforcePPBaseline, NormalizeThenSum
  double final_epsilon = 1e-4;  // BatchNorm::Standardise only
  double gamma = 1.0;  // ReinforcePP discount
  double reward_clip_min = -INFINITY;  // Rloo: TRL reward_clip_range, applied to the combined reward
  double reward_clip_max = INFINITY;
  double kl_beta = 0.0;  // Rloo: R_i −= β Σ_t m (logp − ref_logp) (TRL RLOOTrainer beta)
  double f_norm = 1.0;  // Gpg
  bool handle_zero_tail = true;  // OptimalTokenBaseline
  double otb_epsilon = 1e-8;  // OptimalTokenBaseline denominator
  // Running: the state before this batch (count, mean, population std; count 0: none yet), and
  // whether the batch updates it before normalising (ROLL: yes; false normalises with it as given).
  double running_count = 0.0;
  double running_mean = 0.0;
  double running_std = 0.0;
  bool running_update = true;
};

// The checks that need no array values (dtypes, shapes, one device, options, group layout of
// contiguous groups), for backends whose arrays the host cannot read. reward_weights is always a
// host float64 array. On a CUDA device bfloat16/float16 arrays are accepted too.
void check_estimator_args(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                          const TensorView& returns);

// Validates (dtypes, shapes, devices, group layout, finite values) and computes. `out` has the
// rewards' dtype and shape (B,) or (B, T); `returns` (B, T) is optional (token estimators only; for
// Running it is the new state (3,) float64: count, mean, population std).
// Inputs are never written. CPU only.
void estimator_advantages_cpu(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                              const TensorView& returns);

}  // namespace grpokit
