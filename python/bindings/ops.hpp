// The table of engine entry points a binding module exposes. _core fills it with the CPU engine,
// _cuda with the CUDA kernels; the Python signatures are identical, so the Python layer dispatches
// on the device of the inputs alone.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>
#include <vector>

#include "grpokit/advantages.hpp"
#include "grpokit/diagnostics.hpp"
#include "grpokit/corrections.hpp"
#include "grpokit/estimators.hpp"
#include "grpokit/loss.hpp"
#include "grpokit/linear_logprobs.hpp"
#include "grpokit/logprobs.hpp"
#include "grpokit/logprobs_kl.hpp"

namespace grpokit {
namespace bindings {

namespace py = pybind11;

struct Backend {
  const char* name;  // "cpu" | "cuda"
  void (*advantages)(const TensorView& rewards, const TensorView& group_ids, const AdvantageOptions& opt,
                     const TensorView& out, std::intptr_t stream);
  void (*loss)(const LossSpec& spec, const LossInputs& in, const LossOutputs& out, int num_threads,
               std::intptr_t stream);
  void (*token_logprobs)(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                         const TensorView& lse, const TensorView& sum_sq_probs, std::intptr_t stream);
  void (*token_logprobs_backward)(const TokenLogprobArgs& in, const TensorView& lse,
                                  const TensorView& entropy, const TensorView& grad_logp,
                                  const TensorView& grad_entropy, const TensorView& grad_logits,
                                  std::intptr_t stream);
  // The full-vocabulary KL against a reference, fused with the above (null where not implemented yet).
  void (*token_logprobs_kl)(const TokenLogprobArgs& in, const TensorView& ref_logits, const TensorView& logp,
                            const TensorView& entropy, const TensorView& kl, const TensorView& lse,
                            const TensorView& ref_lse, std::intptr_t stream);
  void (*token_logprobs_kl_backward)(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                     const TensorView& lse, const TensorView& ref_lse,
                                     const TensorView& entropy, const TensorView& kl,
                                     const TensorView& grad_logp, const TensorView& grad_entropy,
                                     const TensorView& grad_kl, const TensorView& grad_logits,
                                     std::intptr_t stream);
  // Under the sampler's truncation (null where the backend has no such kernels yet).
  void (*token_logprobs_sampler)(const TokenLogprobArgs& in, const SamplerArgs& s, const TensorView& logp,
                                 const TensorView& entropy, const TensorView& lse,
                                 const TensorView& kept_logmass, const TensorView& keep_min,
                                 std::intptr_t stream);
  void (*token_logprobs_sampler_backward)(const TokenLogprobArgs& in, bool entropy_over_kept,
                                          const TensorView& lse, const TensorView& kept_logmass,
                                          const TensorView& keep_min, const TensorView& entropy,
                                          const TensorView& grad_logp, const TensorView& grad_entropy,
                                          const TensorView& grad_logits, std::intptr_t stream);
  // Under the kept set the sampler exported (exact replay; null where not implemented yet).
  void (*token_logprobs_keep)(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                              const TensorView& entropy, const TensorView& lse,
                              const TensorView& kept_logmass, std::intptr_t stream);
  void (*token_logprobs_keep_backward)(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& lse,
                                       const TensorView& kept_logmass, const TensorView& entropy,
                                       const TensorView& grad_logp, const TensorView& grad_entropy,
                                       const TensorView& grad_logits, std::intptr_t stream);
  void (*linear_token_logprobs_sampler)(const LinearLogprobArgs& in, const SamplerArgs& s,
                                        const TensorView& logp, const TensorView& entropy,
                                        const TensorView& lse, const TensorView& kept_logmass,
                                        const TensorView& keep_min, std::intptr_t stream);
  void (*linear_token_logprobs_sampler_backward)(const LinearLogprobArgs& in, bool entropy_over_kept,
                                                 const TensorView& lse, const TensorView& kept_logmass,
                                                 const TensorView& keep_min, const TensorView& entropy,
                                                 const TensorView& grad_logp, const TensorView& grad_entropy,
                                                 const TensorView& grad_hidden, const TensorView& grad_weight,
                                                 std::intptr_t stream);
  void (*linear_token_logprobs_keep)(const LinearLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                                     const TensorView& entropy, const TensorView& lse,
                                     const TensorView& kept_logmass, std::intptr_t stream);
  void (*linear_token_logprobs_keep_backward)(const LinearLogprobArgs& in, const KeepArgs& k,
                                              const TensorView& lse, const TensorView& kept_logmass,
                                              const TensorView& entropy, const TensorView& grad_logp,
                                              const TensorView& grad_entropy, const TensorView& grad_hidden,
                                              const TensorView& grad_weight, std::intptr_t stream);
  // Bytes of device scratch the hidden-state ops need (0 on the CPU, which allocates its own tile).
  int64_t (*linear_workspace_bytes)(const LinearLogprobArgs& in, bool backward);
  void (*linear_token_logprobs)(const LinearLogprobArgs& in, const TensorView& logp,
                                const TensorView& entropy, const TensorView& lse,
                                const TensorView& sum_sq_probs, const TensorView& workspace,
                                std::intptr_t stream);
  void (*linear_token_logprobs_backward)(const LinearLogprobArgs& in, const TensorView& lse,
                                         const TensorView& entropy, const TensorView& grad_logp,
                                         const TensorView& grad_entropy, const TensorView& grad_hidden,
                                         const TensorView& grad_weight, const TensorView& workspace,
                                         std::intptr_t stream);
  // Adam-state statistics (grpokit.diagnostics): results into arrays on the state's device, in the
  // layouts of grpokit/diagnostics.hpp. Float64 scratch elements the reductions need (0 on the CPU).
  int64_t (*adam_workspace_size)(int64_t n);
  void (*adam_state_stats)(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                           double rho_threshold, double hist_lo, double hist_hi,
                           const std::vector<double>& phis, const TensorView& out_stats,
                           const TensorView& out_hist, const TensorView& workspace, std::intptr_t stream);
  void (*adam_update)(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                      double phi, bool momentum_only_next, const TensorView& out, std::intptr_t stream);
  void (*adam_rho)(const TensorView& exp_avg_sq, const AdamHyper& hp, const TensorView& out_rho,
                   const TensorView& out_elasticity, std::intptr_t stream);
  void (*adam_step_split)(const TensorView& exp_avg, const TensorView& exp_avg_sq, const TensorView& grad,
                          const TensorView& param, double l2, const AdamHyper& hp, const TensorView& out,
                          const TensorView& workspace, std::intptr_t stream);
  // Advantage estimators and train–inference corrections. Scratch sizes are float64 elements the
  // caller allocates (0 on the CPU, which needs none).
  int64_t (*estimator_workspace_size)(Estimator estimator, int64_t num_rows, int64_t num_tokens);
  void (*estimator_advantages)(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                               const TensorView& returns, const TensorView& workspace, std::intptr_t stream);
  int64_t (*importance_workspace_size)(int64_t num_rows);
  int64_t (*rejection_workspace_size)(int64_t num_rows, int64_t num_criteria);
  void (*importance_weights)(const TensorView& trainer_logp, const TensorView& sampler_logp,
                             const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                             const TensorView& metrics, const TensorView& workspace, std::intptr_t stream);
  void (*rejection_mask)(const TensorView& trainer_logp, const TensorView& sampler_logp,
                         const TensorView& mask, const std::vector<RejectionCriterion>& criteria,
                         const TensorView& keep, const TensorView& metrics, const TensorView& workspace,
                         std::intptr_t stream);
  int64_t (*variance_proxy_workspace_size)(int64_t num_rows);
  void (*variance_proxy)(const VarianceProxyInputs& in, double gradient_norm, const TensorView& metrics,
                         const TensorView& workspace, std::intptr_t stream);
};

void bind_advantages(py::module_& m, const Backend& backend);
void bind_loss(py::module_& m, const Backend& backend);
void bind_logprobs(py::module_& m, const Backend& backend);
void bind_logprobs_kl(py::module_& m, const Backend& backend);
void bind_adam(py::module_& m, const Backend& backend);
void bind_diagnostics(py::module_& m);  // CPU only (the rest of grpokit.diagnostics)
void bind_estimators(py::module_& m, const Backend& backend);
void bind_corrections(py::module_& m, const Backend& backend);
void bind_stationary(py::module_& m);  // CPU only

}  // namespace bindings
}  // namespace grpokit
