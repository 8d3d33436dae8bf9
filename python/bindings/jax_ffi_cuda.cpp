// grpokit._jax_ffi_cuda: the CUDA kernels as an XLA FFI custom call (grpokit.jax; jax_ffi.hpp), built
// with the CUDA kernels when jaxlib's headers were found. The kernels are enqueued on XLA's stream and
// their workspaces come from XLA's scratch allocator: no host synchronisation, no allocation of our own.
#include <cuda_runtime_api.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string_view>

#include "cuda_backend.hpp"
#include "grpokit_cuda.hpp"
#include "jax_ffi.hpp"
#include "tensor_import.hpp"

namespace py = pybind11;
using namespace grpokit;
using namespace grpokit::jax_ffi;

namespace {

ffi::Error grpokit_cuda_impl(ffi::RemainingArgs args, ffi::RemainingRets rets, std::string_view op,
                             std::string_view params, int64_t inputs, int64_t outputs, int64_t num_inputs,
                             int64_t num_outputs, cudaStream_t stream, ffi::ScratchAllocator scratch,
                             int32_t device_ordinal) {
  Place at;
  at.backend = &bindings::cuda_backend();
  at.stream = reinterpret_cast<std::intptr_t>(stream);
  at.loss_workspace_size = &cuda::loss_workspace_size;
  at.scratch = [&scratch](size_t bytes) -> void* {
    auto p = scratch.Allocate(bytes, 256);
    if (!p) throw Error(ErrorKind::Runtime, "grpokit.jax: XLA's scratch allocator refused the workspace");
    return *p;
  };
  const Device device{DeviceType::CUDA, device_ordinal};
  return handle(at, device, args, rets, op, params, inputs, outputs, num_inputs, num_outputs);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(
    grpokit_cuda, grpokit_cuda_impl,
    bind().Ctx<ffi::PlatformStream<cudaStream_t>>().Ctx<ffi::ScratchAllocator>().Ctx<ffi::DeviceOrdinal>());

PYBIND11_MODULE(_jax_ffi_cuda, m) {
  m.doc() = "grpokit's XLA FFI handler for CUDA (private; use grpokit.jax)";
  def_handlers(m, "CUDA", reinterpret_cast<void*>(&grpokit_cuda));
}
