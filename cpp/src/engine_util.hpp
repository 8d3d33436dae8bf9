// Engine-internal helpers shared by the CPU loops (not part of the public C++ API): reading strided
// elements as double, reading masks by selection, and the row layout of groups.
#pragma once

#include <cstdint>
#include <unordered_map>
#include <vector>

#include "grpokit/math/strided.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {
namespace detail {

// Element (i) of a 1-D or (i, j) of a 2-D view: a float as double, an integer, a mask (selected when
// nonzero; math/strided.hpp holds the one dtype policy). Masks select, never multiply.
inline int64_t offset_of(const TensorView& t, int64_t i, int64_t j) {
  return i * t.strides[0] + (t.ndim > 1 ? j * t.strides[1] : 0);
}
inline double read_real(const TensorView& t, int64_t i, int64_t j = 0) {
  return math::load_real(t.data, t.dtype, offset_of(t, i, j));
}
inline int64_t read_int(const TensorView& t, int64_t i, int64_t j = 0) {
  return math::load_int(t.data, t.dtype, offset_of(t, i, j));
}
inline bool read_mask(const TensorView& m, int64_t i, int64_t j) {
  return math::flag_at(m.data, m.dtype, offset_of(m, i, j));
}
inline void check_mask_dtype(const TensorView& m, const char* name) {
  check_dtype(m, name, math::kFlagDTypes);
}
inline void write_real(const TensorView& t, int64_t i, int64_t j, double v) {
  math::store_real(t.data, t.dtype, offset_of(t, i, j), v);
}

// Members of each group in row order (CSR), whatever way the groups were given.
struct GroupLayout {
  std::vector<int64_t> offsets;  // num_groups + 1
  std::vector<int64_t> rows;     // B
  int64_t num_groups() const { return static_cast<int64_t>(offsets.size()) - 1; }
  int64_t size(int64_t g) const { return offsets[g + 1] - offsets[g]; }
  const int64_t* members(int64_t g) const { return rows.data() + offsets[g]; }
};

// Contiguous blocks of `group_size` rows, or explicit ids (groups in order of first appearance;
// members keep their row order, so sums are deterministic).
inline GroupLayout make_layout(int64_t B, const TensorView& group_ids, int64_t group_size) {
  GroupLayout g;
  g.rows.resize(static_cast<size_t>(B));
  if (!group_ids.defined()) {
    for (int64_t i = 0; i < B; ++i) g.rows[i] = i;
    for (int64_t s = 0; s <= B; s += group_size) g.offsets.push_back(s);
    return g;
  }
  std::unordered_map<int64_t, int64_t> index;
  std::vector<int64_t> group_of(static_cast<size_t>(B)), counts;
  for (int64_t i = 0; i < B; ++i) {
    auto it = index.emplace(read_int(group_ids, i), static_cast<int64_t>(counts.size())).first;
    if (it->second == static_cast<int64_t>(counts.size())) counts.push_back(0);
    group_of[i] = it->second;
    ++counts[it->second];
  }
  g.offsets.assign(counts.size() + 1, 0);
  for (size_t k = 0; k < counts.size(); ++k) g.offsets[k + 1] = g.offsets[k] + counts[k];
  std::vector<int64_t> fill(g.offsets.begin(), g.offsets.end() - 1);
  for (int64_t i = 0; i < B; ++i) g.rows[fill[group_of[i]]++] = i;
  return g;
}

}  // namespace detail
}  // namespace grpokit
