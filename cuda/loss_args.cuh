// The CUDA loss kernels' arguments (internal to cuda/loss.cu): launch sizes, the float64 workspace
// layout, the Args every kernel takes by value, and element access (rows of padded or packed arrays,
// compute-type conversions, flags).
#pragma once

#if !defined(GRPOKIT_CUDA_EMULATE)
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cstdint>

#include "grpokit/loss.hpp"
#include "grpokit/math/strided.hpp"
#include "grpokit/math/metric_sums.hpp"
#include "grpokit/loss_metrics.hpp"

namespace grpokit {
namespace cuda {
namespace {

constexpr int kRowThreads = 256;     // per-row kernels (stats, tokens)
constexpr int kReduceThreads = 1024; // single-block kernels (counts, finish)
constexpr unsigned long long kNoError = 0x7FFFFFFFFFFFFFFFull;

// ---- workspace layout (float64) ---------------------------------------------------------------------

enum StatField { kL, kU, kHbar, kAbar, kSumIsLog, kOpsmDiv, kVespoLogw, kFirst, kC, kNSel, kNumStat };
enum GlobalField { gNTok, gNNonEmpty, gEntC, gNllC, kNumGlobal };  // gNllC: math::nll_coefficient

// A row's results: its loss (entropy bonus included) and metric sums (math/metric_sums.hpp).
using Metrics = math::MetricSums<double>;
struct RowResult {
  double loss;
  Metrics m;
};
constexpr int64_t kNumAcc = (sizeof(RowResult) + sizeof(double) - 1) / sizeof(double);

using namespace loss_metrics;

// Input codes of the value checks, in the CPU engine's order of checking at one token.
enum BadInput { bLogp, bOld, bAdv, bRef, bTw, bEnt, bSmp, kNumBad };

// ---- arguments ---------------------------------------------------------------------------------------

struct Arr {  // a per-token (or per-row) array: element (row offset + t·step)
  const void* p = nullptr;
  int64_t s0 = 0, s1 = 0;
};
struct OutArr {
  void* p = nullptr;
  int64_t s0 = 0, s1 = 0;
};

struct SelectState;  // 2b. below

struct Args {
  LossSpec s;
  math::PassFlags f;
  int64_t B = 0, T = 0, N = 0;  // padded: (B, T); packed: N tokens
  bool packed = false;
  const void* cu = nullptr;
  bool cu64 = false;
  int64_t cu_s = 0;
  Arr lp, old, adv, ref, ent, smp, tw;
  bool adv_row = false;  // advantages are (B,)
  Arr mask, keep, sel;
  DType mask_dt = DType::Bool, keep_dt = DType::Bool, sel_dt = DType::Bool;
  OutArr g, gh, pt, om;
  void* loss = nullptr;
  double* metrics = nullptr;
  int64_t metrics_s = 0;
  int n_metrics = 0;
  int metric_ids[kNumMetrics] = {};
  bool per_row_ratio = false;  // ratio metrics count sequences (math::ratio_metrics_per_row)
  double* st = nullptr;        // B × kNumStat
  RowResult* acc = nullptr;    // B
  double* glob = nullptr;      // kNumGlobal
  SelectState* esel = nullptr;  // top-entropy selection (top_entropy_quantile < 1), else null
  unsigned long long* status = nullptr;  // (4,): first bad (row, token, input), n_tok, cu_seqlens error
};

// ---- element access ------------------------------------------------------------------------------

using math::Compute;  // the arithmetic type of T, and the conversions to it and back
using math::from_compute;
using math::to_compute;

struct RowRange {
  int64_t begin, len;
};

__device__ int64_t cu_at(const Args& a, int64_t k) {
  return a.cu64 ? static_cast<const int64_t*>(a.cu)[k * a.cu_s]
                : static_cast<int64_t>(static_cast<const int32_t*>(a.cu)[k * a.cu_s]);
}

// Row i's tokens. Packed offsets are clamped to [0, N] so bad cu_seqlens never read out of bounds
// (the counts kernel reports them when checks are on).
__device__ RowRange row_range(const Args& a, int64_t i) {
  if (!a.packed) return {0, a.T};
  int64_t b = cu_at(a, i), e = cu_at(a, i + 1);
  b = b < 0 ? 0 : (b > a.N ? a.N : b);
  e = e < b ? b : (e > a.N ? a.N : e);
  return {b, e - b};
}

// Offset of token t of row i is base + t·step.
struct RowAddr {
  int64_t base, step;
};
__device__ __forceinline__ RowAddr addr(const Args& a, int64_t s0, int64_t s1, int64_t i, const RowRange& r) {
  return a.packed ? RowAddr{r.begin * s0, s0} : RowAddr{i * s0, s1};
}

template <class T>
__device__ __forceinline__ auto ld(const Arr& x, const RowAddr& ad, int64_t t) {
  return to_compute(static_cast<const T*>(x.p)[ad.base + t * ad.step]);
}

using math::flag_at;

}  // namespace
}  // namespace cuda
}  // namespace grpokit
