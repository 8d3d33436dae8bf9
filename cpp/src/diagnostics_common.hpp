// Element access shared by the diagnostics' CPU engine (internal header).
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

#include "grpokit/interrupt.hpp"
#include "grpokit/math/strided.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {
namespace diag {

// Element `off` of a float view as double, of an integer view as int64; a mask element (any dtype of
// math::kFlagDTypes, set when nonzero); a float store.
inline double load_float(const TensorView& t, int64_t off) { return math::load_real(t.data, t.dtype, off); }
inline int64_t load_int(const TensorView& t, int64_t off) { return math::load_int(t.data, t.dtype, off); }
inline bool load_mask(const TensorView& m, int64_t off) { return math::flag_at(m.data, m.dtype, off); }
inline void store_float(const TensorView& t, int64_t off, double x) {
  math::store_real(t.data, t.dtype, off, x);
}

// Per-coordinate passes over parameter-sized arrays are split into a fixed number of chunks that
// depends on n only (not on the thread count); partial results are combined in chunk order, so
// reductions are deterministic however many threads run them.
inline int64_t num_chunks(int64_t n) {
  const int64_t per = int64_t(1) << 15;
  return n / per < 1 ? 1 : (n / per > 256 ? 256 : n / per);
}
inline int64_t chunk_begin(int64_t c, int64_t n, int64_t chunks) { return c * n / chunks; }
// body(c, j) for each coordinate j of each chunk c, the chunks in parallel; body returns false to
// end its chunk early. Ctrl-C (grpokit/interrupt.hpp) is polled every 4096 coordinates.
template <class F>
void for_each_chunk(int64_t n, int64_t chunks, F&& body) {
  Interrupt stop;
#if defined(GRPOKIT_HAVE_OPENMP)
#pragma omp parallel for schedule(static) if (chunks > 1)
#endif
  for (int64_t c = 0; c < chunks; ++c)
    for (int64_t j = chunk_begin(c, n, chunks); j < chunk_begin(c + 1, n, chunks); ++j)
      if (((j & 4095) == 0 && stop.requested()) || !body(c, j)) break;
  stop.raise();
}

constexpr std::initializer_list<DType> kFloatTypes = {DType::Float32, DType::Float64};
constexpr std::initializer_list<DType> kIdTypes = {DType::Int32, DType::Int64};

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
