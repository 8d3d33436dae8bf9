// grpokit._core: the CPU engine. Always built; imports on any machine.
#include <pybind11/pybind11.h>

#include "grpokit/config.hpp"
#include "grpokit/cpu_features.hpp"
#include "ops.hpp"
#include "tensor_import.hpp"

namespace py = pybind11;
using namespace grpokit;

namespace {
void advantages(const TensorView& r, const TensorView& ids, const AdvantageOptions& opt,
                const TensorView& out, std::intptr_t /*stream*/) {
  advantages_cpu(r, ids, opt, out);
}
void loss(const LossSpec& spec, const LossInputs& in, const LossOutputs& out, int num_threads,
          std::intptr_t /*stream*/) {
  policy_loss_cpu(spec, in, out, num_threads);
}
void token_logprobs(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                    const TensorView& lse, const TensorView& sum_sq_probs, std::intptr_t /*stream*/) {
  token_logprobs_cpu(in, logp, entropy, lse, sum_sq_probs);
}
void token_logprobs_backward(const TokenLogprobArgs& in, const TensorView& lse,
                             const TensorView& entropy, const TensorView& grad_logp,
                             const TensorView& grad_entropy, const TensorView& grad_logits,
                             std::intptr_t /*stream*/) {
  token_logprobs_backward_cpu(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
}
int64_t linear_workspace_bytes(const LinearLogprobArgs&, bool) { return 0; }
void linear_token_logprobs(const LinearLogprobArgs& in, const TensorView& logp,
                           const TensorView& entropy, const TensorView& lse,
                           const TensorView& sum_sq_probs, const TensorView& /*workspace*/,
                           std::intptr_t /*stream*/) {
  linear_token_logprobs_cpu(in, logp, entropy, lse, sum_sq_probs);
}
void linear_token_logprobs_backward(const LinearLogprobArgs& in, const TensorView& lse,
                                    const TensorView& entropy, const TensorView& grad_logp,
                                    const TensorView& grad_entropy, const TensorView& grad_hidden,
                                    const TensorView& grad_weight, const TensorView& /*workspace*/,
                                    std::intptr_t /*stream*/) {
  linear_token_logprobs_backward_cpu(in, lse, entropy, grad_logp, grad_entropy, grad_hidden,
                                     grad_weight);
}
int64_t adam_workspace_size(int64_t) { return 0; }
void adam_state_stats(const TensorView& m, const TensorView& v, const AdamHyper& hp, double rho_threshold,
                      double hist_lo, double hist_hi, const std::vector<double>& phis, const TensorView& out_stats,
                      const TensorView& out_hist, const TensorView& /*workspace*/, std::intptr_t /*stream*/) {
  adam_state_stats_into_cpu(m, v, hp, rho_threshold, hist_lo, hist_hi, phis, out_stats, out_hist);
}
void adam_update(const TensorView& m, const TensorView& v, const AdamHyper& hp, double phi, bool next,
                 const TensorView& out, std::intptr_t /*stream*/) {
  adam_update_cpu(m, v, hp, phi, next, out);
}
void adam_rho(const TensorView& v, const AdamHyper& hp, const TensorView& out_rho, const TensorView& out_elasticity,
              std::intptr_t /*stream*/) {
  adam_rho_cpu(v, hp, out_rho, out_elasticity);
}
void adam_step_split(const TensorView& m, const TensorView& v, const TensorView& grad, const TensorView& param,
                     double l2, const AdamHyper& hp, const TensorView& out, const TensorView& /*workspace*/,
                     std::intptr_t /*stream*/) {
  adam_step_split_into_cpu(m, v, grad, param, l2, hp, out);
}
int64_t no_workspace_est(Estimator, int64_t, int64_t) { return 0; }
int64_t no_workspace_rows(int64_t) { return 0; }
int64_t no_workspace_rs(int64_t, int64_t) { return 0; }
void estimator_advantages(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                          const TensorView& returns, const TensorView& /*workspace*/, std::intptr_t /*stream*/) {
  estimator_advantages_cpu(in, opt, out, returns);
}
void importance_weights(const TensorView& a, const TensorView& b, const TensorView& m,
                        const ImportanceOptions& opt, const TensorView& w, const TensorView& metrics,
                        const TensorView& /*workspace*/, std::intptr_t /*stream*/) {
  importance_weights_cpu(a, b, m, opt, w, metrics);
}
void rejection_mask(const TensorView& a, const TensorView& b, const TensorView& m,
                    const std::vector<RejectionCriterion>& criteria, const TensorView& keep,
                    const TensorView& metrics, const TensorView& /*workspace*/, std::intptr_t /*stream*/) {
  rejection_mask_cpu(a, b, m, criteria, keep, metrics);
}
}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "grpokit CPU engine (private; use the grpokit package)";
  bindings::register_error_translator();
  m.attr("__version__") = GRPOKIT_VERSION_STRING;
  m.def("cpu_simd_level", &cpu_simd_level, "The widest vector code the CPU engine's hot loops use here.");
  m.def("cpu_max_threads", &cpu_max_threads, "Threads the CPU engine's row loops use by default.");

  bindings::Backend cpu{};  // filled by name: adding an entry never reorders the others
  cpu.name = "cpu";
  cpu.advantages = &advantages;
  cpu.loss = &loss;
  cpu.token_logprobs = &token_logprobs;
  cpu.token_logprobs_backward = &token_logprobs_backward;
  cpu.linear_workspace_bytes = &linear_workspace_bytes;
  cpu.linear_token_logprobs = &linear_token_logprobs;
  cpu.linear_token_logprobs_backward = &linear_token_logprobs_backward;
  cpu.adam_workspace_size = &adam_workspace_size;
  cpu.adam_state_stats = &adam_state_stats;
  cpu.adam_update = &adam_update;
  cpu.adam_rho = &adam_rho;
  cpu.adam_step_split = &adam_step_split;
  cpu.estimator_workspace_size = &no_workspace_est;
  cpu.estimator_advantages = &estimator_advantages;
  cpu.importance_workspace_size = &no_workspace_rows;
  cpu.rejection_workspace_size = &no_workspace_rs;
  cpu.importance_weights = &importance_weights;
  cpu.rejection_mask = &rejection_mask;
  bindings::bind_advantages(m, cpu);
  bindings::bind_adam(m, cpu);
  bindings::bind_loss(m, cpu);
  bindings::bind_logprobs(m, cpu);
  bindings::bind_diagnostics(m);
  bindings::bind_estimators(m, cpu);
  bindings::bind_corrections(m, cpu);
  bindings::bind_stationary(m);
}
