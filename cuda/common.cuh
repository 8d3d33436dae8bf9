// Shared helpers of the CUDA kernels.
#pragma once

#include <cuda_runtime.h>

#include "grpokit/error.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {
namespace cuda {

inline cudaStream_t as_stream(std::intptr_t s) {
  // DLPack stream convention: 1 = legacy default stream, 2 = per-thread default, 0 = unspecified.
  if (s == 0 || s == 1) return cudaStreamLegacy;
  if (s == 2) return cudaStreamPerThread;
  return reinterpret_cast<cudaStream_t>(s);
}

inline void check_launch(const char* op) {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) runtime_error(op, ": CUDA kernel launch failed: ", cudaGetErrorString(err));
}

inline void check_cuda_device(const TensorView& t, const char* name) {
  if (t.device.type != DeviceType::CUDA)
    device_error(name, ": expected a CUDA array, got one on ", device_name(t.device));
}

// Sets the current device to the arrays' device for the duration of a launch.
class DeviceGuard {
 public:
  explicit DeviceGuard(int device) {
    cudaGetDevice(&previous_);
    if (previous_ != device) cudaSetDevice(device);
  }
  ~DeviceGuard() {
    int now = 0;
    cudaGetDevice(&now);
    if (now != previous_) cudaSetDevice(previous_);
  }

 private:
  int previous_ = 0;
};

}  // namespace cuda
}  // namespace grpokit
