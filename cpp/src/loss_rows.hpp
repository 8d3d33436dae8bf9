// Row addressing of the CPU loss engine (internal): padded (B, T) or packed (N,) + cu_seqlens
// arrays read one completion (row) at a time, and flag arrays of any dtype read as bytes.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "grpokit/error.hpp"
#include "grpokit/loss.hpp"
#include "grpokit/math/strided.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {
namespace loss_cpu {

struct Layout {
  bool packed = false;
  int64_t B = 0, T = 0;
  std::vector<int64_t> cu;  // packed: B+1 offsets
  int64_t len(int64_t i) const { return packed ? cu[i + 1] - cu[i] : T; }
  int64_t begin(int64_t i) const { return packed ? cu[i] : 0; }
};

// The layout of logp; packed offsets are checked (start at 0, non-decreasing, end at N).
inline Layout layout_of(const LossInputs& in) {
  Layout L;
  L.packed = in.cu_seqlens.defined();
  if (!L.packed) {
    L.B = in.logp.shape[0];
    L.T = in.logp.shape[1];
    return L;
  }
  const TensorView& cu = in.cu_seqlens;
  L.B = cu.shape[0] - 1;
  L.cu.resize(static_cast<size_t>(L.B + 1));
  for (int64_t k = 0; k <= L.B; ++k)
    L.cu[k] = cu.dtype == DType::Int32 ? cu.ptr<const int32_t>()[k * cu.strides[0]]
                                       : cu.ptr<const int64_t>()[k * cu.strides[0]];
  if (L.cu[0] != 0) value_error("cu_seqlens: must start at 0, got ", L.cu[0]);
  for (int64_t k = 0; k < L.B; ++k)
    if (L.cu[k + 1] < L.cu[k])
      value_error("cu_seqlens: offsets must be non-decreasing, got ", L.cu[k], " then ", L.cu[k + 1]);
  if (L.cu[L.B] != in.logp.shape[0])
    value_error("cu_seqlens: the last offset (", L.cu[L.B], ") must equal the number of tokens (",
                in.logp.shape[0], ")");
  return L;
}

// Element offset of row i's first token and the step between its tokens.
struct RowAddr {
  int64_t base = 0, step = 0;
};
inline RowAddr row_addr(const TensorView& v, const Layout& L, int64_t i) {
  if (L.packed) return {L.cu[i] * v.strides[0], v.strides[0]};
  return {i * v.strides[0], v.strides[1]};
}

// One row of a per-token array, or a per-row scalar broadcast over the row (step 0).
template <class V>
struct Row {
  V* p = nullptr;
  int64_t step = 0;
  V& operator[](int64_t t) const { return p[t * step]; }
  explicit operator bool() const { return p != nullptr; }
  bool unit() const { return step == 1; }
};

// per_row: a (B,) array broadcast over the row (advantages per completion).
template <class V>
Row<V> row_of(const TensorView& v, const Layout& L, int64_t i, bool per_row = false) {
  Row<V> r;
  if (!v.defined()) return r;
  if (per_row) {
    r.p = v.ptr<V>() + i * v.strides[0];
    return r;
  }
  const RowAddr a = row_addr(v, L, i);
  r.p = v.ptr<V>() + a.base;
  r.step = a.step;
  return r;
}

using math::flag_at;

// Row i of a per-token flag array as one byte (0/1 or any nonzero) per token: the array itself when
// it already is unit-stride bytes, else converted once into `buf`. nullptr when v is undefined.
inline const uint8_t* flag_bytes(const TensorView& v, const Layout& L, int64_t i, std::vector<uint8_t>& buf) {
  if (!v.defined()) return nullptr;
  const RowAddr a = row_addr(v, L, i);
  const bool bytes = v.dtype == DType::Bool || v.dtype == DType::UInt8 || v.dtype == DType::Int8;
  if (bytes && a.step == 1) return static_cast<const uint8_t*>(v.data) + a.base;
  const int64_t n = L.len(i);
  buf.resize(static_cast<size_t>(n));
  uint8_t* out = buf.data();
  // typed once per row (float and integer masks from torch and JAX convert at memory speed)
  const bool known = math::visit_typed(v.data, v.dtype, false, [&](auto x) {
    x += a.base;
    if (a.step == 1)
      for (int64_t t = 0; t < n; ++t) out[t] = x[t] != 0;
    else
      for (int64_t t = 0; t < n; ++t) out[t] = x[t * a.step] != 0;
    return true;
  });
  if (!known) std::fill(out, out + n, uint8_t{1});  // flag_at's reading of an unknown dtype
  return out;
}

// Element i of a (B,) flag array; true when undefined.
inline bool flag_of_row(const TensorView& v, int64_t i) {
  return !v.defined() || flag_at(v.data, v.dtype, i * v.strides[0]);
}

}  // namespace loss_cpu
}  // namespace grpokit
