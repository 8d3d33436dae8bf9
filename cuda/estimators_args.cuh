// What the estimator kernels share (cuda/estimators.cu, the outcome estimators, and
// cuda/estimators_token.cuh, the token estimators): the arguments, the workspace layout and the
// group visit. Included by estimators.cu only (one translation unit).
#pragma once

#include <cmath>
#include <cstdint>
#include <string>

#include "grpokit/estimators.hpp"
#include "grpokit/math/advantages.hpp"
#include "grpokit/math/estimators.hpp"
#include "grpokit_cuda.hpp"
#include "launch.cuh"
#include "strided.cuh"

namespace grpokit {
namespace cuda {
namespace {

using namespace strided;  // NOLINT(build/namespaces): the kernels' array accessors

constexpr int kRowThreads = 128;     // thread-per-row and per-element kernels
constexpr int kReduceThreads = 128;  // single-block kernels (a power of two)
constexpr int kMaxRewardColumns = 64;
constexpr double kNaN = NAN;

struct Args {
  EstimatorOptions opt;
  int64_t B = 0, T = 0, K = 1;  // T: columns of the mask (0 without one); K: reward columns
  In r;
  bool r2d = false;
  bool has_w = false;
  double w[kMaxRewardColumns] = {};  // reward weights, passed by value (a handful of host numbers)
  In ids, mask, len, base, logp, ref, spp, isw;
  Out out, ret;
  double* ws = nullptr;
};

// ---- workspace layout (float64) -----------------------------------------------------------------------
// Outcome: R, L, A (B each), globals (8). reinforce_pp: row partials (2B), globals (8). Optimal token
// baseline: G, W, Σ G·W, Σ W by (row, slot) (4·B·T), then L, leader, next, zero-tail slot, lone flag (5·B).
constexpr int kGlobals = 8;

// ---- groups ------------------------------------------------------------------------------------------

// Visits the members of row i's group in row order (contiguous blocks, or equal group ids: O(B) per
// row, fine for RL batch sizes, and what cuda/advantages.cu does).
template <class F>
__device__ void for_group(const Args& a, int64_t i, F&& f) {
  if (!a.ids.defined()) {
    const int64_t G = a.opt.group_size > 0 ? a.opt.group_size : a.B;  // 0: one group, the batch
    const int64_t start = (i / G) * G;
    for (int64_t j = start; j < start + G; ++j) f(j);
  } else {
    const int64_t mine = int_at(a.ids, i);
    for (int64_t j = 0; j < a.B; ++j)
      if (int_at(a.ids, j) == mine) f(j);
  }
}

}  // namespace
}  // namespace cuda
}  // namespace grpokit
