// grpokit: compile-time configuration shared by host and device code.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GRPOKIT_HD __host__ __device__ __forceinline__
#define GRPOKIT_DEVICE_COMPILE 1
#else
#define GRPOKIT_HD inline
#endif

// GRPOKIT_VERSION_STRING is a compile definition of every target that links grpokit_core,
// set by CMakeLists.txt from pyproject.toml's version: the version is declared there only.
