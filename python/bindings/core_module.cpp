// grpokit._core: the CPU engine. Always built; imports on any machine.
#include <pybind11/pybind11.h>

#include "grpokit/config.hpp"
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
}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "grpokit CPU engine (private; use the grpokit package)";
  bindings::register_error_translator();
  m.attr("__version__") = GRPOKIT_VERSION_STRING;

  bindings::Backend cpu{};  // filled by name: adding an entry never reorders the others
  cpu.name = "cpu";
  cpu.advantages = &advantages;
  cpu.loss = &loss;
  cpu.token_logprobs = &token_logprobs;
  cpu.token_logprobs_backward = &token_logprobs_backward;
  cpu.linear_workspace_bytes = &linear_workspace_bytes;
  cpu.linear_token_logprobs = &linear_token_logprobs;
  cpu.linear_token_logprobs_backward = &linear_token_logprobs_backward;
  bindings::bind_advantages(m, cpu);
  bindings::bind_loss(m, cpu);
  bindings::bind_logprobs(m, cpu);
  bindings::bind_diagnostics(m);
  bindings::bind_estimators(m);
  bindings::bind_corrections(m);
  bindings::bind_stationary(m);
}
