// Element access of strided arrays by dtype code, for both engines (GRPOKIT_HD): a value as double,
// an integer, a flag (mask, keep flag, selection), a store; the compute type of an element type and
// the conversions to and from it. Inputs whose dtypes vary independently (rewards bfloat16, lengths
// int32, mask uint8, ...) carry their dtype and every read converts, so kernels are not instantiated
// per dtype combination.
//
// The one flag policy: a flag array may have any dtype of kFlagDTypes, and any nonzero value marks a
// valid (selected, kept) position: flags select, never multiply. The argument checks refuse every
// other dtype, so an unknown dtype is never read; it would read as set (a flag), NaN (a value) or 0
// (an integer). 16-bit floats are read and written on the device (and its host
// emulation) only: the CPU engine refuses them.
#pragma once

#include <cmath>
#include <cstdint>
#include <initializer_list>

#if defined(__CUDACC__)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#endif
#if defined(__CUDACC__) || defined(GRPOKIT_EMULATE_HALF)
#define GRPOKIT_HALF_TYPES 1  // __nv_bfloat16 and __half exist (the device's, or the emulator's)
#endif

#include "grpokit/config.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {
namespace math {

// The dtypes a mask, keep-flag or selection array may have (every op checks against this list).
constexpr std::initializer_list<DType> kFlagDTypes = {
    DType::Bool, DType::UInt8, DType::Int8, DType::Int32, DType::Int64, DType::Float32, DType::Float64};

// An element as the engines compute with it: itself, or float for the 16-bit floats.
template <class T>
GRPOKIT_HD T widen(T x) {
  return x;
}
#if defined(GRPOKIT_HALF_TYPES)
GRPOKIT_HD float widen(__nv_bfloat16 x) { return __bfloat162float(x); }
GRPOKIT_HD float widen(__half x) { return __half2float(x); }
#endif

// f(p as a pointer to the dtype's element type), or `unknown` for a dtype it does not read. The one
// dtype switch of the reads below (and of row loops that type an array once, not per element).
template <class R, class F>
GRPOKIT_HD R visit_typed(const void* p, DType dt, R unknown, F&& f) {
  switch (dt) {
    case DType::Bool:
    case DType::UInt8:
      return f(static_cast<const uint8_t*>(p));
    case DType::Int8:
      return f(static_cast<const int8_t*>(p));
    case DType::Int32:
      return f(static_cast<const int32_t*>(p));
    case DType::Int64:
      return f(static_cast<const int64_t*>(p));
    case DType::Float32:
      return f(static_cast<const float*>(p));
    case DType::Float64:
      return f(static_cast<const double*>(p));
#if defined(GRPOKIT_HALF_TYPES)
    case DType::BFloat16:
      return f(static_cast<const __nv_bfloat16*>(p));
    case DType::Float16:
      return f(static_cast<const __half*>(p));
#endif
    default:
      return unknown;
  }
}

// f(element `off` of the array at p) with the element in its own type (16-bit floats as float), or
// `unknown` for a dtype it does not read.
template <class R, class F>
GRPOKIT_HD R visit_element(const void* p, DType dt, int64_t off, R unknown, F&& f) {
  return visit_typed(p, dt, unknown, [&](auto q) -> R { return f(widen(q[off])); });
}

// A flag (mask, keep flag, selection): set when nonzero, compared in its own type.
GRPOKIT_HD bool flag_at(const void* p, DType dt, int64_t off) {
  return visit_element(p, dt, off, true, [](auto x) { return x != 0; });
}
// A value as double (NaN for an unknown dtype).
GRPOKIT_HD double load_real(const void* p, DType dt, int64_t off) {
  return visit_element(p, dt, off, static_cast<double>(NAN), [](auto x) { return static_cast<double>(x); });
}
// An integer (ids, lengths, offsets) as int64 (0 for an unknown dtype).
GRPOKIT_HD int64_t load_int(const void* p, DType dt, int64_t off) {
  return visit_element(p, dt, off, int64_t{0}, [](auto x) { return static_cast<int64_t>(x); });
}

// Writes v rounded once to the array's dtype (bool: v != 0).
GRPOKIT_HD void store_real(void* p, DType dt, int64_t off, double v) {
  switch (dt) {
    case DType::Float64:
      static_cast<double*>(p)[off] = v;
      break;
    case DType::Float32:
      static_cast<float*>(p)[off] = static_cast<float>(v);
      break;
#if defined(__CUDACC__)  // the emulator's 16-bit types convert from float only
    case DType::BFloat16:
      static_cast<__nv_bfloat16*>(p)[off] = __double2bfloat16(v);
      break;
    case DType::Float16:
      static_cast<__half*>(p)[off] = __double2half(v);
      break;
#endif
    case DType::Bool:
      static_cast<bool*>(p)[off] = v != 0.0;
      break;
    default:
      break;
  }
}

// A strided 1-D or 2-D array with its dtype (element (i, j) at i·s0 + j·s1; s1 = 0 for 1-D), passed
// to kernels by value; p == nullptr when an optional input is absent.
template <class P>
struct StridedArray {
  P* p = nullptr;
  DType dt = DType::Float64;
  int64_t s0 = 0, s1 = 0;
  GRPOKIT_HD bool defined() const { return p != nullptr; }
  GRPOKIT_HD int64_t at(int64_t i, int64_t j = 0) const { return i * s0 + j * s1; }
  GRPOKIT_HD double real(int64_t i, int64_t j = 0) const { return load_real(p, dt, at(i, j)); }
  GRPOKIT_HD int64_t integer(int64_t i, int64_t j = 0) const { return load_int(p, dt, at(i, j)); }
  GRPOKIT_HD bool flag(int64_t i, int64_t j = 0) const { return flag_at(p, dt, at(i, j)); }
};
using Strided = StridedArray<const void>;
using StridedOut = StridedArray<void>;

// The array of a view (null for an undefined one); host code.
template <class A>
A strided_of(const TensorView& v) {
  A a;
  if (!v.defined()) return a;
  a.p = v.data;
  a.dt = v.dtype;
  a.s0 = v.strides[0];
  a.s1 = v.ndim > 1 ? v.strides[1] : 0;
  return a;
}

// The arithmetic type of an element type: float for float32 and the 16-bit types, double for float64.
template <class T>
struct Compute {
  using type = float;
};
template <>
struct Compute<double> {
  using type = double;
};

// Conversions to the compute type and back (rounded once).
GRPOKIT_HD float to_compute(float x) { return x; }
GRPOKIT_HD double to_compute(double x) { return x; }
template <class T>
GRPOKIT_HD T from_compute(float v) {
  return static_cast<T>(v);
}
template <class T>
GRPOKIT_HD T from_compute(double v) {
  return static_cast<T>(v);
}
#if defined(GRPOKIT_HALF_TYPES)
GRPOKIT_HD float to_compute(__nv_bfloat16 x) { return __bfloat162float(x); }
GRPOKIT_HD float to_compute(__half x) { return __half2float(x); }
template <>
GRPOKIT_HD __nv_bfloat16 from_compute<__nv_bfloat16>(float v) {
  return __float2bfloat16(v);
}
template <>
GRPOKIT_HD __half from_compute<__half>(float v) {
  return __float2half(v);
}
#endif

}  // namespace math
}  // namespace grpokit
