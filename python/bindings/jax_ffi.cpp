// grpokit._jax_ffi: the CPU engine as an XLA FFI custom call (grpokit.jax; jax_ffi.hpp), built only
// when jaxlib's headers were found at build time (CMakeLists.txt).
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "grpokit/cpu_features.hpp"
#include "jax_ffi.hpp"
#include "tensor_import.hpp"

namespace py = pybind11;
using namespace grpokit;
using namespace grpokit::jax_ffi;

namespace {

// The CPU engine's entry points with the table's signatures (the stream and scratch go unused).
const bindings::Backend& cpu_backend() {
  static const bindings::Backend cpu = [] {
    bindings::Backend b{};
    b.name = "cpu";
    b.advantages = [](const TensorView& r, const TensorView& ids, const AdvantageOptions& opt,
                      const TensorView& out, std::intptr_t) { advantages_cpu(r, ids, opt, out); };
    b.estimator_workspace_size = [](Estimator, int64_t, int64_t) -> int64_t { return 0; };
    b.estimator_advantages = [](const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                                const TensorView& returns, const TensorView&,
                                std::intptr_t) { estimator_advantages_cpu(in, opt, out, returns); };
    b.loss = [](const LossSpec& spec, const LossInputs& in, const LossOutputs& out, int threads,
                std::intptr_t) { policy_loss_cpu(spec, in, out, threads); };
    b.token_logprobs = [](const TokenLogprobArgs& in, const TensorView& lp, const TensorView& ent,
                          const TensorView& lse, const TensorView& sq,
                          std::intptr_t) { token_logprobs_cpu(in, lp, ent, lse, sq); };
    b.token_logprobs_backward = [](const TokenLogprobArgs& in, const TensorView& lse, const TensorView& ent,
                                   const TensorView& g_lp, const TensorView& g_ent,
                                   const TensorView& g_logits, std::intptr_t) {
      token_logprobs_backward_cpu(in, lse, ent, g_lp, g_ent, g_logits);
    };
    b.linear_workspace_bytes = [](const LinearLogprobArgs&, bool) -> int64_t { return 0; };
    b.linear_token_logprobs = [](const LinearLogprobArgs& in, const TensorView& lp, const TensorView& ent,
                                 const TensorView& lse, const TensorView& sq, const TensorView&,
                                 std::intptr_t) { linear_token_logprobs_cpu(in, lp, ent, lse, sq); };
    b.linear_token_logprobs_backward =
        [](const LinearLogprobArgs& in, const TensorView& lse, const TensorView& ent, const TensorView& g_lp,
           const TensorView& g_ent, const TensorView& g_h, const TensorView& g_w, const TensorView&,
           std::intptr_t) { linear_token_logprobs_backward_cpu(in, lse, ent, g_lp, g_ent, g_h, g_w); };
    return b;
  }();
  return cpu;
}

ffi::Error grpokit_cpu_impl(ffi::RemainingArgs args, ffi::RemainingRets rets, std::string_view op,
                            std::string_view params, int64_t inputs, int64_t outputs, int64_t num_inputs,
                            int64_t num_outputs) {
  Place at;
  at.backend = &cpu_backend();
  // XLA calls this from its own pool threads and keeps them busy around the call: an OpenMP team
  // started here competes with them for the same cores (measured: the loss several times slower than on
  // one thread). The engine runs on XLA's thread unless the call asks for threads (`num_threads`).
  int threads = 0;
  try {
    threads = static_cast<int>(number(parse_params(params), "num_threads", 0));
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(e.what());
  }
  const ScopedCpuThreads limit(threads > 0 ? threads : 1);
  return handle(at, Device{}, args, rets, op, params, inputs, outputs, num_inputs, num_outputs);
}

using Descriptors = std::vector<std::optional<std::pair<std::string, std::vector<int64_t>>>>;

DType dtype_named(const std::string& name) {
  static const std::map<std::string, DType> names = {
      {"bool", DType::Bool},         {"int8", DType::Int8},       {"uint8", DType::UInt8},
      {"int32", DType::Int32},       {"int64", DType::Int64},     {"float16", DType::Float16},
      {"bfloat16", DType::BFloat16}, {"float32", DType::Float32}, {"float64", DType::Float64}};
  auto it = names.find(name);
  if (it == names.end()) type_error("grpokit.jax: unsupported dtype ", name);
  return it->second;
}

// The trace-time check: the views get distinct dummy addresses (the checks compare and order
// addresses, never read them).
void check(const std::string& op, const std::string& params, const Descriptors& inputs,
           const Descriptors& outputs) {
  uintptr_t next = uintptr_t{1} << 40;
  auto views = [&next](const Descriptors& list, bool read_only) {
    std::vector<TensorView> out;
    for (const auto& d : list) {
      void* data = d ? reinterpret_cast<void*>(next) : nullptr;
      out.push_back(d ? contiguous(data, dtype_named(d->first), d->second, Device{}, read_only)
                      : TensorView{});
      next += uintptr_t{1} << 40;
    }
    return out;
  };
  Place at;
  at.backend = &cpu_backend();
  run_op(at, op, parse_params(params), views(inputs, true), views(outputs, false), true);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(grpokit_cpu, grpokit_cpu_impl, bind());

PYBIND11_MODULE(_jax_ffi, m) {
  m.doc() = "grpokit's XLA FFI handler for the CPU (private; use grpokit.jax)";
  def_handlers(m, "cpu", reinterpret_cast<void*>(&grpokit_cpu));
  m.def("check", &check, py::arg("op"), py::arg("params"), py::arg("inputs"), py::arg("outputs"),
        "Validates an op's arguments from (dtype, shape) descriptors; raises the engine's errors.");
}
