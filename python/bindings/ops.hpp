// The table of engine entry points a binding module exposes. _core fills it with the CPU engine,
// _cuda with the CUDA kernels; the Python signatures are identical, so the Python layer dispatches
// on the device of the inputs alone.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "grpokit/advantages.hpp"

namespace grpokit {
namespace bindings {

namespace py = pybind11;

struct Backend {
  const char* name;  // "cpu" | "cuda"
  void (*advantages)(const TensorView& rewards, const TensorView& group_ids,
                     const AdvantageOptions& opt, const TensorView& out, std::intptr_t stream);
};

void bind_advantages(py::module_& m, const Backend& backend);
void bind_stationary(py::module_& m);  // CPU only

}  // namespace bindings
}  // namespace grpokit
