// grpokit: compile-time configuration shared by host and device code.
#pragma once

#if defined(__CUDACC__) || defined(__HIPCC__)
#define GRPOKIT_HD __host__ __device__ __forceinline__
#define GRPOKIT_DEVICE_COMPILE 1
#else
#define GRPOKIT_HD inline
#endif

#define GRPOKIT_VERSION_STRING "0.1.0"
