// Host-side entry points of the CUDA kernels. Plain C++ (no CUDA headers), so the _cuda binding
// module compiles as ordinary C++. Every launcher takes the caller's stream, never allocates device
// memory and never synchronises the host.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include <vector>

#include "grpokit/advantages.hpp"
#include "grpokit/diagnostics.hpp"
#include "grpokit/corrections.hpp"
#include "grpokit/estimators.hpp"
#include "grpokit/linear_logprobs.hpp"
#include "grpokit/logprobs.hpp"
#include "grpokit/loss.hpp"

namespace grpokit {
namespace cuda {

// Number of visible CUDA devices; 0 with `why` set when there is no driver or no device.
int device_count(std::string* why);

// Compiled architectures and the CUDA runtime version this module was built with.
std::string build_info();

// Whether linear_token_logprobs was built with cuBLAS (else its GPU entry points raise NotImplementedError).
bool cublas_built();

void advantages(const TensorView& rewards, const TensorView& group_ids, const AdvantageOptions& opt,
                const TensorView& out, std::intptr_t stream);

// Advantage estimators (cuda/estimators.cu): the caller passes a float64 `workspace` of
// estimator_workspace_size(estimator, B, T) elements (T: mask columns, 0 without a mask; 0 elements:
// none needed). reward_weights stays a host array (its values are passed by value).
int64_t estimator_workspace_size(Estimator estimator, int64_t num_rows, int64_t num_tokens);
void estimator_advantages(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                          const TensorView& returns, const TensorView& workspace, std::intptr_t stream);

// Train–inference corrections (cuda/corrections.cu); metrics stay on the device (float64 (n,)).
int64_t importance_workspace_size(int64_t num_rows);
int64_t rejection_workspace_size(int64_t num_rows, int64_t num_criteria);
void importance_weights(const TensorView& trainer_logp, const TensorView& sampler_logp,
                        const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                        const TensorView& metrics, const TensorView& workspace, std::intptr_t stream);
void rejection_mask(const TensorView& trainer_logp, const TensorView& sampler_logp, const TensorView& mask,
                    const std::vector<RejectionCriterion>& criteria, const TensorView& keep,
                    const TensorView& metrics, const TensorView& workspace, std::intptr_t stream);
int64_t variance_proxy_workspace_size(int64_t num_rows);
void variance_proxy(const VarianceProxyInputs& in, double gradient_norm, const TensorView& metrics,
                    const TensorView& workspace, std::intptr_t stream);

void token_logprobs(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                    const TensorView& lse, const TensorView& sum_sq_probs, std::intptr_t stream);
void token_logprobs_backward(const TokenLogprobArgs& in, const TensorView& lse, const TensorView& entropy,
                             const TensorView& grad_logp, const TensorView& grad_entropy,
                             const TensorView& grad_logits, std::intptr_t stream);
// The full-vocabulary KL against a reference (cuda/logprobs_kl.cu): the CPU engine's
// token_logprobs_kl_cpu and its backward (grpokit/logprobs_kl.hpp), float32/bfloat16/float16.
void token_logprobs_kl(const TokenLogprobArgs& in, const TensorView& ref_logits, const TensorView& logp,
                       const TensorView& entropy, const TensorView& kl, const TensorView& lse,
                       const TensorView& ref_lse, std::intptr_t stream);
void token_logprobs_kl_backward(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                const TensorView& lse, const TensorView& ref_lse, const TensorView& entropy,
                                const TensorView& kl, const TensorView& grad_logp,
                                const TensorView& grad_entropy, const TensorView& grad_kl,
                                const TensorView& grad_logits, std::intptr_t stream);
// Under the sampler's truncation (cuda/logprobs_sampler.cu): the CPU engine's token_logprobs_sampler_cpu
// and its backward, bad rows as NaN.
void token_logprobs_sampler(const TokenLogprobArgs& in, const SamplerArgs& s, const TensorView& logp,
                            const TensorView& entropy, const TensorView& lse, const TensorView& kept_logmass,
                            const TensorView& keep_min, std::intptr_t stream);
void token_logprobs_sampler_backward(const TokenLogprobArgs& in, bool entropy_over_kept,
                                     const TensorView& lse, const TensorView& kept_logmass,
                                     const TensorView& keep_min, const TensorView& entropy,
                                     const TensorView& grad_logp, const TensorView& grad_entropy,
                                     const TensorView& grad_logits, std::intptr_t stream);
// The kept set the sampler exported (cpp/src/logprobs_keep.cpp's computation, one block per row);
// a row whose ids are out of range or not ascending, or whose span is bad, gets NaN outputs.
void token_logprobs_keep(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                         const TensorView& entropy, const TensorView& lse, const TensorView& kept_logmass,
                         std::intptr_t stream);
void token_logprobs_keep_backward(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& lse,
                                  const TensorView& kept_logmass, const TensorView& entropy,
                                  const TensorView& grad_logp, const TensorView& grad_entropy,
                                  const TensorView& grad_logits, std::intptr_t stream);

// The unified surrogate loss (cuda/loss.cu). float32/float64/bfloat16/float16 inputs; the caller
// passes out.workspace (loss_workspace_size(B) float64 elements) and, for value checks, out.status
// (int64 (4,); read it after the call: [0] first non-finite (row, token, input) key, [1] valid tokens,
// [2] cu_seqlens error key; 2^63 − 1 = none). `num_threads` is ignored.
int64_t loss_workspace_size(int64_t num_rows);
void policy_loss(const LossSpec& spec, const LossInputs& in, const LossOutputs& out, int num_threads,
                 std::intptr_t stream);
// Hidden states × weight (cuBLAS). The caller allocates `workspace` (linear_workspace_bytes).
int64_t linear_workspace_bytes(const LinearLogprobArgs& in, bool backward);
void linear_token_logprobs(const LinearLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                           const TensorView& lse, const TensorView& sum_sq_probs, const TensorView& workspace,
                           std::intptr_t stream);
void linear_token_logprobs_backward(const LinearLogprobArgs& in, const TensorView& lse,
                                    const TensorView& entropy, const TensorView& grad_logp,
                                    const TensorView& grad_entropy, const TensorView& grad_hidden,
                                    const TensorView& grad_weight, const TensorView& workspace,
                                    std::intptr_t stream);

// Adam-state statistics (cuda/diagnostics_adam.cu): the CPU engine's adam_state_stats_into_cpu,
// adam_update_cpu, adam_rho_cpu and adam_step_split_into_cpu on the optimizer's device tensors
// (float32/float64/bfloat16/float16 state, float32/float64 outputs, same output layouts). The
// reductions take `workspace` (float64, adam_workspace_size(n) elements on the state's device);
// adam_state_stats takes at most 8 phis. adam_step_split cannot raise on a non-finite gradient: it
// writes the first such index into out[kSplitFirstBad] (−1: none) for the caller to report.
int64_t adam_workspace_size(int64_t n);
void adam_state_stats(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                      double rho_threshold, double hist_lo, double hist_hi, const std::vector<double>& phis,
                      const TensorView& out_stats, const TensorView& out_hist, const TensorView& workspace,
                      std::intptr_t stream);
void adam_update(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp, double phi,
                 bool momentum_only_next, const TensorView& out, std::intptr_t stream);
void adam_rho(const TensorView& exp_avg_sq, const AdamHyper& hp, const TensorView& out_rho,
              const TensorView& out_elasticity, std::intptr_t stream);
void adam_step_split(const TensorView& exp_avg, const TensorView& exp_avg_sq, const TensorView& grad,
                     const TensorView& param, double l2, const AdamHyper& hp, const TensorView& out,
                     const TensorView& workspace, std::intptr_t stream);

}  // namespace cuda
}  // namespace grpokit
