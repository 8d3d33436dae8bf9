// The LossSpec row, declared once: every rule enum with its names, every field with its default and,
// for a field that can be unset, the value the engine reads as "unset".
//
// Everything else is generated from the two lists below: the enums and the struct here; the name maps,
// enum tables and field descriptions of cpp/src/loss_spec.cpp; the binding's _core.loss_spec_fields();
// and the Python record grpokit.LossSpec (python/grpokit/_presets.py), whose `None` is the unset value.
// Adding a field or a rule value is one line here (then its formula in math/loss.hpp).
//
// Plain data, usable on the device (kernels receive a LossSpec by value).
#pragma once

#include <cmath>
#include <cstdint>

namespace grpokit {
namespace math {

// ---- rule enums: X(Enumerator, name, "what it does") ------------------------------------------------
// The name is the string a user writes (LossSpec(ratio="sequence")); enumerators count from 0 in
// list order, which is how the tables of cpp/src/loss_spec.cpp map a name to its enumerator.

#define GRPOKIT_RATIO_LEVELS(X)                                                                          \
  X(Token, token, "r = exp(ℓ − ℓ_old)")                                                                  \
  X(Sequence, sequence, "GSPO: s_i = exp(mean_t(ℓ − ℓ_old)), gradient through the mean")                 \
  X(SequenceToken, sequence_token, "GSPO-token: value s_i, gradient s_i·∇ℓ_t: exp(sg(log s_i) + ℓ − sg ℓ)") \
  X(SequenceSum, sequence_sum, "GCPO: the raw sequence ratio exp(Σ_t(ℓ − ℓ_old)), gradient through the sum")

#define GRPOKIT_SURROGATES(X)                                                                            \
  X(Clip, clip,                                                                                          \
    "PPO min with TRL's δ and verl's dual clip c: v = min(min(r, δ), clip(r)) for A ≥ 0, "               \
    "min(max(min(r, δ), clip(r)), c) for A < 0")                                                         \
  X(Unclipped, unclipped, "v = r (KL-Cov's base term)")                                                  \
  X(Sapo, sapo, "SAPO's soft gate v = (4/τ)·σ(τ(r − 1)), τ by the sign of A")                            \
  X(Logp, logp, "v = sg(w)·log π with w from logp_weight: CISPO, GPG, DPPO, VESPO, REINFORCE")           \
  X(GeoMean, geo_mean, "GMPO / verl geo_mean: v = exp(mean_t of the sign-aware clipped log-ratio)")

#define GRPOKIT_LOGP_WEIGHTS(X)                                                                          \
  X(One, one, "w = 1: GPG, REINFORCE, DRO")                                                              \
  X(Ratio, ratio, "sg(r): the paper's CISPO row, sg[I]·log π")                                           \
  X(Clip, clip, "sg(clip(r, 1 − ε_low, 1 + ε_high)): verl CISPO")                                       \
  X(Cap, cap, "sg(min(r, ε_high)) with ε_high a raw cap: TRL CISPO")                                     \
  X(DppoTv, dppo_tv, "sg(min(r, c)) on tokens inside the total-variation trust region (verl dppo_tv)")   \
  X(DppoKl, dppo_kl, "sg(min(r, c)) on tokens inside the binary-KL trust region (verl dppo_kl)")         \
  X(Vespo, vespo, "sg(φ_γ(W_i)), W_i the sequence IS ratio (TRL VESPO)")

#define GRPOKIT_AGGREGATIONS(X)                                                                          \
  X(TokenMean, token_mean, "Σ_i Σ_t φ / N_tok (TRL dapo/cispo/vespo/bnpo, verl token-mean)")             \
  X(TokenSum, token_sum, "Σ_i Σ_t φ (verl token-sum)")                                                   \
  X(SeqMeanTokenMean, seq_mean_token_mean, "Σ_i (Σ_t φ / L_i) / N_seq (TRL grpo/sapo, verl seq-mean-token-mean)") \
  X(SeqMeanTokenSum, seq_mean_token_sum, "Σ_i Σ_t φ / N_seq (TRL luspo, verl seq-mean-token-sum)")       \
  X(SeqMeanTokenSumNorm, seq_mean_token_sum_norm,                                                        \
    "Σ_i Σ_t φ / (N_seq · C), C = max_completion_length (TRL dr_grpo, verl seq-mean-token-sum-norm)")    \
  X(PromptMean, prompt_mean,                                                                             \
    "Σ_g (Σ_{i∈g} Σ_t φ / N_tok(g)) / N_prompt, g the groups of group_size rows (SkyRL prompt_mean)")

#define GRPOKIT_KL_ESTIMATORS(X)                                                                         \
  X(None, none, "no KL term")                                                                            \
  X(K1, k1, "k1 = log π − log π_ref")                                                                   \
  X(K2, k2, "k2 = ½(log π − log π_ref)²")                                                               \
  X(K3, k3, "k3 = π_ref/π − log(π_ref/π) − 1")                                                          \
  X(Abs, abs, "|log π − log π_ref|")

#define GRPOKIT_SAMPLER_IS(X)                                                                            \
  X(None, none, "no sampler importance-sampling correction")                                             \
  X(TokenTruncate, token_truncate, "per-token ρ truncated to [is_min, is_max]")                          \
  X(TokenMask, token_mask, "per-token ρ, zero outside [is_min, is_max]")                                 \
  X(SequenceTruncate, sequence_truncate, "per-sequence ρ truncated to [is_min, is_max]")                 \
  X(SequenceMask, sequence_mask, "per-sequence ρ, zero outside [is_min, is_max]")

#define GRPOKIT_ENTROPY_AGGREGATIONS(X)                                                                  \
  X(LocalTokenMean, local_token_mean,                                                                    \
    "TRL: Σ m′H / max(Σ m′, 1) over the call's tokens, ÷ gradient_accumulation_steps")                   \
  X(Policy, policy, "verl: the policy term's aggregation")

// verl's entropy-mechanism rules act on a caller-selected token subset (the `selection` input).
#define GRPOKIT_SELECTIONS(X)                                                                            \
  X(None, none, "no token selection")                                                                    \
  X(ClipCov, clip_cov, "the selected tokens get no policy term")                                         \
  X(KlCov, kl_cov, "+ ppo_kl_coef·|ℓ − ℓ_old| on the selected tokens")

// Every rule enum: X(Type, its value list).
#define GRPOKIT_LOSS_RULE_ENUMS(X)                  \
  X(RatioLevel, GRPOKIT_RATIO_LEVELS)               \
  X(Surrogate, GRPOKIT_SURROGATES)                  \
  X(LogpWeight, GRPOKIT_LOGP_WEIGHTS)               \
  X(Aggregation, GRPOKIT_AGGREGATIONS)              \
  X(KlEstimator, GRPOKIT_KL_ESTIMATORS)             \
  X(SamplerIs, GRPOKIT_SAMPLER_IS)                  \
  X(EntropyAggregation, GRPOKIT_ENTROPY_AGGREGATIONS) \
  X(Selection, GRPOKIT_SELECTIONS)

#define GRPOKIT_ENUMERATOR_(E, name, doc) E,
#define GRPOKIT_DECLARE_RULE_ENUM_(Type, VALUES) enum class Type : uint8_t { VALUES(GRPOKIT_ENUMERATOR_) };
GRPOKIT_LOSS_RULE_ENUMS(GRPOKIT_DECLARE_RULE_ENUM_)
#undef GRPOKIT_DECLARE_RULE_ENUM_
#undef GRPOKIT_ENUMERATOR_

// ---- the fields, in record order ---------------------------------------------------------------------
// RULE(Type, name, default enumerator); REAL(name, default); FLAG(name, default);
// UNSETTABLE(name, default, unset): a number the caller may leave unset (Python None), which the engine
// reads as `unset` (+inf or −inf = no bound, NaN = off);
// COUNT(name): a count of the whole optimizer step, unset by default: −1 = count it in this call.
// Defaults are TRL's GRPOConfig defaults.
#define GRPOKIT_LOSS_SPEC_FIELDS(RULE, REAL, FLAG, UNSETTABLE, COUNT)                                            \
  /* rules */                                                                                            \
  RULE(RatioLevel, ratio, Token)                                                                         \
  RULE(Surrogate, surrogate, Clip)                                                                       \
  RULE(LogpWeight, logp_weight, One) /* for Surrogate::Logp */                                           \
  RULE(Aggregation, aggregation, TokenMean)                                                              \
  RULE(KlEstimator, kl, None)                                                                            \
  RULE(SamplerIs, sampler_is, None)                                                                      \
  RULE(EntropyAggregation, entropy_aggregation, LocalTokenMean)                                          \
  RULE(Selection, selection, None)                                                                       \
  /* clipping */                                                                                         \
  REAL(epsilon_low, 0.2)                       /* TRL `epsilon`, verl `clip_ratio_low` */                \
  REAL(epsilon_high, 0.2)                      /* TRL `epsilon_high` (a raw cap for LogpWeight::Cap) */  \
  UNSETTABLE(delta, INFINITY, INFINITY)        /* TRL two-sided clip δ (INTELLECT-2) */                  \
  UNSETTABLE(clip_ratio_c, INFINITY, INFINITY) /* verl dual-clip c for A < 0 (and DPPO's cap) */         \
  UNSETTABLE(log_ratio_min, -INFINITY, -INFINITY) /* clamp of the log-ratio before exp (verl ±20) */     \
  UNSETTABLE(log_ratio_max, INFINITY, INFINITY)   /* (GSPO-token max 10) */                              \
  /* regularisers */                                                                                     \
  REAL(beta, 0.0)                 /* KL coefficient (and GTPO's entropy-term coefficient) */             \
  FLAG(kl_is_corrected, false)    /* TRL use_bias_correction_kl: β·k·r with r differentiable */          \
  FLAG(kl_straight_through, false) /* verl "+" estimators: value of `kl`, gradient of k2 */              \
  UNSETTABLE(kl_log_clamp, INFINITY, INFINITY)   /* verl 20 */                                           \
  UNSETTABLE(kl_value_clamp, INFINITY, INFINITY) /* verl 10 */                                           \
  FLAG(gtpo_entropy, false)       /* GTPO's R: β·δ_i·⟨H⟩_i·I·λ (when entropies are given) */             \
  REAL(dro_beta, 0.0)             /* DRO: + ½·dro_beta·(ℓ − ℓ_old)² */                                   \
  REAL(ppo_kl_coef, 1.0)          /* KL-Cov: + ppo_kl_coef·|ℓ − ℓ_old| on selected tokens */             \
  REAL(entropy_coef, 0.0)         /* entropy bonus: loss −= entropy_coef · aggregated entropy */         \
  /* weight rules */                                                                                     \
  REAL(top_entropy_quantile, 1.0) /* keep tokens with H ≥ quantile(H, 1 − q) */                          \
  UNSETTABLE(off_policy_mask_threshold, NAN, NAN) /* DeepSeek-V3.2 OPSM δ */                             \
  UNSETTABLE(prune_threshold, -INFINITY, -INFINITY) /* CPPO γ: keep completions with |A| > γ */          \
  UNSETTABLE(is_min, -INFINITY, -INFINITY) /* sampler IS bounds (TRL vllm_importance_sampling_clip_*) */ \
  UNSETTABLE(is_max, 3.0, INFINITY)                                                                      \
  /* method parameters */                                                                                \
  REAL(sapo_temperature_pos, 1.0)                                                                        \
  REAL(sapo_temperature_neg, 1.05)                                                                       \
  REAL(vespo_k_pos, 2.0)                                                                                 \
  REAL(vespo_lambda_pos, 3.0)                                                                            \
  REAL(vespo_k_neg, 3.0)                                                                                 \
  REAL(vespo_lambda_neg, 2.0)                                                                            \
  /* aggregation counts and conventions */                                                               \
  COUNT(num_items_in_batch)    /* N_tok of the whole optimizer step (all micro-batches and ranks) */     \
  COUNT(num_sequences)         /* N_seq of the whole optimizer step */                                    \
  COUNT(max_completion_length) /* C of SeqMeanTokenSumNorm (TRL max_completion_length, verl loss_scale_factor) */ \
  COUNT(group_size)            /* rows per prompt group (contiguous blocks) of PromptMean; TRL num_generations */ \
  COUNT(num_prompts)           /* N_prompt of the whole optimizer step (PromptMean) */                   \
  REAL(dp_size, 1.0)                     /* multiplies the loss (TRL num_processes, verl dp_size) */     \
  REAL(gradient_accumulation_steps, 1.0) /* TRL's ÷K where divide_by_ga (and the TRL entropy bonus) */   \
  FLAG(divide_by_ga, false)              /* TRL grpo/bnpo/dr_grpo/luspo/sapo */                          \
  FLAG(seq_count_nonempty, false)        /* verl: N_seq counts rows with L_i > 0 only */

// The engine reads any negative count as unset; validate_spec refuses negatives other than −1.
#define GRPOKIT_COUNT_UNSET (-1.0)

#define GRPOKIT_RULE_MEMBER_(Type, name, value) Type name = Type::value;
#define GRPOKIT_REAL_MEMBER_(name, value) double name = value;
#define GRPOKIT_FLAG_MEMBER_(name, value) bool name = value;
#define GRPOKIT_UNSETTABLE_MEMBER_(name, value, unset) double name = value;
#define GRPOKIT_COUNT_MEMBER_(name) double name = GRPOKIT_COUNT_UNSET;
// One method: plain data (copied by value into kernels).
struct LossSpec {
  GRPOKIT_LOSS_SPEC_FIELDS(GRPOKIT_RULE_MEMBER_, GRPOKIT_REAL_MEMBER_, GRPOKIT_FLAG_MEMBER_,
                           GRPOKIT_UNSETTABLE_MEMBER_, GRPOKIT_COUNT_MEMBER_)
};
#undef GRPOKIT_RULE_MEMBER_
#undef GRPOKIT_REAL_MEMBER_
#undef GRPOKIT_FLAG_MEMBER_
#undef GRPOKIT_UNSETTABLE_MEMBER_
#undef GRPOKIT_COUNT_MEMBER_

}  // namespace math
}  // namespace grpokit
