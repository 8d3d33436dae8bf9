// grpokit._cuda: the CUDA kernels. Built when a CUDA compiler is found; imported lazily by the
// package. The CUDA runtime is linked statically, so importing needs no driver: without one,
// device_count() says why and every op raises a clear error.
#include <pybind11/pybind11.h>

#include <string>

#include "grpokit/config.hpp"
#include "cuda_backend.hpp"
#include "grpokit_cuda.hpp"
#include "tensor_import.hpp"

namespace py = pybind11;
using namespace grpokit;

PYBIND11_MODULE(_cuda, m) {
  m.doc() = "grpokit CUDA kernels (private; use the grpokit package)";
  bindings::register_error_translator();
  m.attr("__version__") = GRPOKIT_VERSION_STRING;
  m.def(
      "device_count",
      []() {
        std::string why;
        const int n = cuda::device_count(&why);
        return py::make_tuple(n, why);
      },
      "(number of visible CUDA devices, reason when 0)");
  m.def("build_info", &cuda::build_info, "CUDA runtime version and compiled architectures");
  m.def("cublas_built", &cuda::cublas_built, "whether linear_token_logprobs has its cuBLAS GPU path");

  const bindings::Backend& gpu = bindings::cuda_backend();
  bindings::bind_advantages(m, gpu);
  bindings::bind_adam(m, gpu);
  bindings::bind_logprobs(m, gpu);
  bindings::bind_logprobs_kl(m, gpu);
  bindings::bind_loss(m, gpu);
  bindings::bind_estimators(m, gpu);
  bindings::bind_corrections(m, gpu);
  m.def("loss_workspace_size", &cuda::loss_workspace_size, py::arg("num_rows"),
        "float64 elements of scratch policy_loss needs for num_rows completions");
}
