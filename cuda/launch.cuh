// The one way a kernel is launched, on the device and under host emulation
// (tests/cuda_emulation/cuda_emulator.hpp defines emulate_launch / emulate_flat and GRPOKIT_CUDA_EMULATE).
// `kernel` is one token: a template instantiation such as stats_kernel<T> is fine, one with a comma
// goes through a pointer variable first.
//   GRPOKIT_LAUNCH:      threads of a block cooperate (barriers, shuffles, shared memory).
//   GRPOKIT_LAUNCH_FLAT: threads never cooperate (one element or row each), so the emulator may run
//                        them one after another on one host thread.
#pragma once

#if defined(GRPOKIT_CUDA_EMULATE)
#define GRPOKIT_LAUNCH(kernel, grid, block, stream, ...) \
  ((void)(stream), emulate_launch(grid, block, [&] { kernel(__VA_ARGS__); }))
#define GRPOKIT_LAUNCH_FLAT(kernel, grid, block, stream, ...) \
  ((void)(stream), emulate_flat(grid, block, [&] { kernel(__VA_ARGS__); }))
#else
#define GRPOKIT_LAUNCH(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#define GRPOKIT_LAUNCH_FLAT(kernel, grid, block, stream, ...) kernel<<<grid, block, 0, stream>>>(__VA_ARGS__)
#endif
