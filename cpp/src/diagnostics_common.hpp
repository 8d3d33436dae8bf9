// Element access shared by the diagnostics' CPU engine (internal header).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "grpokit/tensor.hpp"

namespace grpokit {
namespace diag {

inline double load_float(const TensorView& t, int64_t off) {
  return t.dtype == DType::Float32 ? static_cast<double>(t.ptr<const float>()[off])
                                   : t.ptr<const double>()[off];
}

inline int64_t load_int(const TensorView& t, int64_t off) {
  switch (t.dtype) {
    case DType::Int32:
      return t.ptr<const int32_t>()[off];
    case DType::Int64:
      return t.ptr<const int64_t>()[off];
    case DType::Int8:
      return t.ptr<const int8_t>()[off];
    default:
      return t.ptr<const uint8_t>()[off];  // Bool, UInt8
  }
}

inline void store_float(const TensorView& t, int64_t off, double x) {
  if (t.dtype == DType::Float32)
    t.ptr<float>()[off] = static_cast<float>(x);
  else
    t.ptr<double>()[off] = x;
}

// Per-coordinate passes over parameter-sized arrays are split into a fixed number of chunks that
// depends on n only (not on the thread count); partial results are combined in chunk order, so
// reductions are deterministic however many threads run them.
inline int64_t num_chunks(int64_t n) {
  const int64_t per = int64_t(1) << 15;
  return n / per < 1 ? 1 : (n / per > 256 ? 256 : n / per);
}
inline int64_t chunk_begin(int64_t c, int64_t n, int64_t chunks) { return c * n / chunks; }

constexpr std::initializer_list<DType> kFloatTypes = {DType::Float32, DType::Float64};
constexpr std::initializer_list<DType> kIdTypes = {DType::Int32, DType::Int64};
constexpr std::initializer_list<DType> kMaskTypes = {DType::Bool, DType::UInt8, DType::Int8, DType::Int32,
                                                     DType::Int64};

// A (B,) float vector, checked finite, as float64.
std::vector<double> read_advantages(const TensorView& advantages, int64_t B);

// Checks an optional (shape-of-ref) mask; returns true if it is defined.
bool check_mask(const TensorView& mask, const TensorView& ref, const char* ref_name);

// Contiguous groups of `group_size` over B rows: the error for anything else.
int64_t check_groups(int64_t B, int64_t group_size);

void check_output(const TensorView& out, const char* name, const TensorView& ref, const char* ref_name,
                  DType dtype);

}  // namespace diag
}  // namespace grpokit
