// The one way a kernel is launched, on the device and under host emulation
// (tests/cuda_emulation/cuda_emulator.hpp defines emulate_launch / emulate_flat and GRPOKIT_CUDA_EMULATE).
// `kernel` is one token: a template instantiation such as stats_kernel<T> is fine, one with a comma
// goes through a pointer variable first.
//   GRPOKIT_LAUNCH:      threads of a block cooperate (barriers, shuffles, shared memory).
//   GRPOKIT_LAUNCH_FLAT: threads never cooperate (one element or row each), so the emulator may run
//                        them one after another on one host thread.
#pragma once

#include <cstdint>

#include "grpokit/error.hpp"
#include "grpokit/tensor.hpp"

#if !defined(GRPOKIT_CUDA_EMULATE)
#include "common.cuh"
#endif

#if defined(GRPOKIT_CUDA_EMULATE)
#define GRPOKIT_LAUNCH(kernel, grid, block, stream, ...) \
  ((void)(stream), emulate_launch(grid, block, [&] { kernel(__VA_ARGS__); }))
#define GRPOKIT_LAUNCH_FLAT(kernel, grid, block, stream, ...) \
  ((void)(stream), emulate_flat(grid, block, [&] { kernel(__VA_ARGS__); }))
#else
#define GRPOKIT_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#define GRPOKIT_LAUNCH_FLAT(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif

namespace grpokit {
namespace cuda {

// The host side of a launch: the stream, the arrays' device made current, the launch check; under
// emulation the kernels run on host threads and these do nothing.
#if defined(GRPOKIT_CUDA_EMULATE)
using Stream = void*;
inline Stream stream_of(std::intptr_t) { return nullptr; }
#define GRPOKIT_DEVICE_GUARD(t) (void)0
#define GRPOKIT_CHECK_LAUNCH(op) (void)0
#define GRPOKIT_CHECK_CUDA_DEVICE(t, name) (void)0
#else
using Stream = cudaStream_t;
inline Stream stream_of(std::intptr_t s) { return as_stream(s); }
#define GRPOKIT_DEVICE_GUARD(t) DeviceGuard guard((t).device.index)
#define GRPOKIT_CHECK_LAUNCH(op) check_launch(op)
#define GRPOKIT_CHECK_CUDA_DEVICE(t, name) check_cuda_device(t, name)
#endif

// The caller's float64 scratch: a contiguous 1-D array of at least `need` elements on like's device.
// size_fn names the function that gives its size, like_name the array it must sit beside.
inline double* device_workspace(const TensorView& ws, int64_t need, const char* size_fn,
                                const TensorView& like, const char* like_name) {
  if (!ws.defined()) value_error("workspace: required on the GPU (float64, ", size_fn, " elements)");
  check_dtype(ws, "workspace", {DType::Float64});
  check_ndim(ws, "workspace", {1});
  check_same_device(ws, "workspace", like, like_name);
  check_writable(ws, "workspace");
  if (ws.strides[0] != 1 || ws.shape[0] < need)
    value_error("workspace: expected a contiguous float64 array of at least ", need, " elements, got shape ",
                ws.shape_str());
  return ws.ptr<double>();
}

}  // namespace cuda
}  // namespace grpokit
