// Host stand-ins for CUDA's __nv_bfloat16 and __half and their float conversions, for the emulator
// scripts (cuda_emulator.hpp with GRPOKIT_EMULATE_HALF, emulate_cuda_logprobs.cpp). bfloat16 rounds to
// nearest even like __float2bfloat16; float16 uses the host's _Float16.
#pragma once

#include <cstdint>
#include <cstring>

struct __nv_bfloat16 {
  uint16_t bits;
};
struct __half {
  _Float16 v;
};
inline float __bfloat162float(__nv_bfloat16 x) {
  const uint32_t u = static_cast<uint32_t>(x.bits) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline __nv_bfloat16 __float2bfloat16(float f) {  // round to nearest even, NaN stays NaN
  uint32_t u;
  std::memcpy(&u, &f, 4);
  if (f != f) return {static_cast<uint16_t>((u >> 16) | 0x40u)};
  return {static_cast<uint16_t>((u + 0x7fffu + ((u >> 16) & 1u)) >> 16)};
}
inline float __half2float(__half x) { return static_cast<float>(x.v); }
inline __half __float2half(float f) { return {static_cast<_Float16>(f)}; }
