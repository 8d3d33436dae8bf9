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
}  // namespace

PYBIND11_MODULE(_core, m) {
  m.doc() = "grpokit CPU engine (private; use the grpokit package)";
  bindings::register_error_translator();
  m.attr("__version__") = GRPOKIT_VERSION_STRING;

  const bindings::Backend cpu{"cpu", &advantages};
  bindings::bind_advantages(m, cpu);
  bindings::bind_stationary(m);
}
