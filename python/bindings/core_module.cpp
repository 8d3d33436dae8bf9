// grpokit._core: the CPU engine. Always built; imports on any machine.
#include <pybind11/pybind11.h>

#include <cstddef>
#include <cstdint>
#include <tuple>
#include <type_traits>
#include <utility>

#include "grpokit/config.hpp"
#include "grpokit/cpu_features.hpp"
#include "ops.hpp"
#include "tensor_import.hpp"

namespace py = pybind11;
using namespace grpokit;

namespace {
// The Backend table's signatures are the CPU entry points' plus trailing GPU-only arguments (scratch,
// stream). `cpu_entry<&f>` has the table's signature (deduced from the slot it is assigned to) and
// calls f with the leading arguments f takes; `no_scratch` is the CPU's scratch size, 0.
template <typename F>
struct Arity;
template <typename R, typename... A>
struct Arity<R (*)(A...)> : std::integral_constant<std::size_t, sizeof...(A)> {};

template <auto F, typename Tuple, std::size_t... I>
void call_leading(const Tuple& args, std::index_sequence<I...>) {
  F(std::get<I>(args)...);
}

template <auto F, typename... A>
void cpu_entry(A... args) {
  static_assert(Arity<decltype(F)>::value <= sizeof...(A), "the table slot has fewer arguments");
  call_leading<F>(std::forward_as_tuple(args...), std::make_index_sequence<Arity<decltype(F)>::value>{});
}

template <typename... A>
int64_t no_scratch(A...) {
  return 0;
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
  cpu.advantages = &cpu_entry<&advantages_cpu>;
  cpu.loss = &cpu_entry<&policy_loss_cpu>;
  cpu.token_logprobs = &cpu_entry<&token_logprobs_cpu>;
  cpu.token_logprobs_backward = &cpu_entry<&token_logprobs_backward_cpu>;
  cpu.token_logprobs_kl = &cpu_entry<&token_logprobs_kl_cpu>;
  cpu.token_logprobs_kl_backward = &cpu_entry<&token_logprobs_kl_backward_cpu>;
  cpu.token_logprobs_sampler = &cpu_entry<&token_logprobs_sampler_cpu>;
  cpu.token_logprobs_sampler_backward = &cpu_entry<&token_logprobs_sampler_backward_cpu>;
  cpu.token_logprobs_keep = &cpu_entry<&token_logprobs_keep_cpu>;
  cpu.token_logprobs_keep_backward = &cpu_entry<&token_logprobs_keep_backward_cpu>;
  cpu.linear_token_logprobs_sampler = &cpu_entry<&linear_token_logprobs_sampler_cpu>;
  cpu.linear_token_logprobs_sampler_backward = &cpu_entry<&linear_token_logprobs_sampler_backward_cpu>;
  cpu.linear_token_logprobs_keep = &cpu_entry<&linear_token_logprobs_keep_cpu>;
  cpu.linear_token_logprobs_keep_backward = &cpu_entry<&linear_token_logprobs_keep_backward_cpu>;
  cpu.linear_workspace_bytes = &no_scratch;
  cpu.linear_token_logprobs = &cpu_entry<&linear_token_logprobs_cpu>;
  cpu.linear_token_logprobs_backward = &cpu_entry<&linear_token_logprobs_backward_cpu>;
  cpu.adam_workspace_size = &no_scratch;
  cpu.adam_state_stats = &cpu_entry<&adam_state_stats_into_cpu>;
  cpu.adam_update = &cpu_entry<&adam_update_cpu>;
  cpu.adam_rho = &cpu_entry<&adam_rho_cpu>;
  cpu.adam_step_split = &cpu_entry<&adam_step_split_into_cpu>;
  cpu.estimator_workspace_size = &no_scratch;
  cpu.estimator_advantages = &cpu_entry<&estimator_advantages_cpu>;
  cpu.importance_workspace_size = &no_scratch;
  cpu.rejection_workspace_size = &no_scratch;
  cpu.importance_weights = &cpu_entry<&importance_weights_cpu>;
  cpu.rejection_mask = &cpu_entry<&rejection_mask_cpu>;
  cpu.variance_proxy_workspace_size = &no_scratch;
  cpu.variance_proxy = &cpu_entry<&variance_proxy_cpu>;
  bindings::bind_advantages(m, cpu);
  bindings::bind_adam(m, cpu);
  bindings::bind_loss(m, cpu);
  bindings::bind_logprobs(m, cpu);
  bindings::bind_logprobs_kl(m, cpu);
  bindings::bind_diagnostics(m);
  bindings::bind_estimators(m, cpu);
  bindings::bind_corrections(m, cpu);
  bindings::bind_stationary(m);
}
