// Reading one element of a flag array (a mask, keep flags, a selection) of any accepted dtype:
// nonzero = set. Flags select, never multiply. Both loss engines read flags through it.
#pragma once

#include <cstdint>

#include "grpokit/config.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {
namespace math {

// Element `off` of the flag array at p. An unknown dtype (never accepted by the checks) reads as set.
GRPOKIT_HD bool flag_at(const void* p, DType dt, int64_t off) {
  switch (dt) {
    case DType::Bool:
    case DType::UInt8:
    case DType::Int8:
      return static_cast<const int8_t*>(p)[off] != 0;
    case DType::Int32:
      return static_cast<const int32_t*>(p)[off] != 0;
    case DType::Int64:
      return static_cast<const int64_t*>(p)[off] != 0;
    case DType::Float32:
      return static_cast<const float*>(p)[off] != 0.0f;
    case DType::Float64:
      return static_cast<const double*>(p)[off] != 0.0;
    default:
      return true;
  }
}

}  // namespace math
}  // namespace grpokit
