// Adam-state statistics on the GPU (grpokit.diagnostics): the CPU engine's per-coordinate terms
// (math::adam_coordinate, math::adam_update_coordinate, math::adam_split_term) over the optimizer's
// own device tensors, so a multi-billion-parameter state is never copied to the host.
//
//   stats / split:  a grid of blocks whose count depends on n only; each thread walks a grid stride,
//                   the block reduces its sums in a fixed tree and writes one row of partials to the
//                   workspace. The log10 ρ histogram counts in shared memory with integer atomics and
//                   is flushed to out_hist with integer atomics (integer sums: the same in any order).
//   finish:         one block sums the partial rows in block order into the small output array.
//   update / rho:   elementwise, into float32/float64 arrays of the state's length.
//
// Per-coordinate math is double whatever the state's dtype (float32/float64/bfloat16/float16), as on
// the CPU, with the CPU engine's functions: sqrt and division are correctly rounded on the device, so
// a coordinate's terms agree to an ulp (the compiler contracts a·b + c into FMAs; log10, used only
// for the histogram bin, is within 1 ulp), and the sums differ by their order only. Results are
// bitwise reproducible run to run. Nothing is allocated (the caller passes the
// workspace) and nothing synchronises the host.
#if !defined(GRPOKIT_CUDA_EMULATE)  // tests/cuda_emulation/emulate_adam.cpp runs the kernels on host threads
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <vector>

#include "grpokit/diagnostics.hpp"
#include "grpokit/math/diagnostics.hpp"
#include "grpokit/math/strided.hpp"
#include "grpokit_cuda.hpp"
#include "launch.cuh"
#include "reduce.cuh"

namespace grpokit {
namespace cuda {
namespace {

constexpr int kThreads = 256;
constexpr int64_t kMaxBlocks = 1024;  // partial rows in the workspace
constexpr int64_t kPerBlock = 8192;  // coordinates per block before another block is added
constexpr int kMaxPhis = 8;
constexpr int kSmemBins = 2048;  // larger histograms count in global memory directly

// Depends on n alone (not on the device), so the reduction order, and the result, is fixed by n.
int64_t num_blocks(int64_t n) {
  const int64_t b = (n + kPerBlock - 1) / kPerBlock;
  return b < 1 ? 1 : (b > kMaxBlocks ? kMaxBlocks : b);
}

// Columns of a partial row: sums first (one Sum tree), then max ρ and min ρ.
enum StatPartial {
  pU2,
  pAbsU,
  pAbsUElast,
  pElast,
  pU2Next,
  pZeroV,
  pAbove,
  pPhi0,
  kStatSums = pPhi0 + kMaxPhis
};
enum SplitPartial { qStale2, qFresh2, qStaleFresh, qPrev2, qGrad2, qUGrad, kSplitSums };
constexpr int kPartialCols = kStatSums + 2;  // ≥ kSplitSums + 1 (the split's first bad index)

// 1-D arrays of any float dtype and stride (grpokit/math/strided.hpp): element j at j·s0.
using In = math::Strided;
using Out = math::StridedOut;  // float32/float64
In in_of(const TensorView& v) { return math::strided_of<In>(v); }
Out out_of(const TensorView& v) { return math::strided_of<Out>(v); }
__device__ __forceinline__ double load(const In& x, int64_t j) { return x.real(j); }
__device__ __forceinline__ void store(const Out& x, int64_t j, double v) {
  math::store_real(x.p, x.dt, x.at(j), v);
}

// Thread 0 writes the block's row of partials: its K sums, then the E other reductions.
template <int K, int E>
__device__ __forceinline__ void write_partial_row(double* partial, const double (&sums)[K],
                                                  const double (&rest)[E]) {
  if (threadIdx.x != 0) return;
  double* row = partial + static_cast<int64_t>(blockIdx.x) * kPartialCols;
  for (int c = 0; c < K; ++c) row[c] = sums[c];
  for (int e = 0; e < E; ++e) row[K + e] = rest[e];
}

__device__ __forceinline__ bool finite(double x) { return x == x && x < INFINITY && x > -INFINITY; }

// ---- state statistics ----------------------------------------------------------------------------

struct StatsArgs {
  In m, v;
  int64_t n = 0, blocks = 0;
  math::AdamStatsCoefs k{};
  int n_phis = 0;
  double phis[kMaxPhis] = {};
  int bins = 0;
  double* partial = nullptr;  // blocks × kPartialCols
  double* out = nullptr;  // kAdamStatFields + n_phis
  unsigned long long* hist = nullptr;  // bins, zeroed before the stats kernel
};

__global__ void __launch_bounds__(kThreads) stats_kernel(const StatsArgs a) {
  __shared__ double smem[kStatSums * 32];
  __shared__ unsigned int hist_s[kSmemBins];
  const bool smem_hist = a.bins <= kSmemBins;
  if (smem_hist)
    for (int b = threadIdx.x; b < a.bins; b += blockDim.x) hist_s[b] = 0u;
  __syncthreads();
  double v[kStatSums] = {};
  double hi[1] = {0.0}, lo[1] = {INFINITY};  // max / min ρ over v > 0 (the CPU engine's initial values)
  const int64_t stride = static_cast<int64_t>(blockDim.x) * a.blocks;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < a.n; j += stride) {
    const math::AdamCoordinate x = math::adam_coordinate(load(a.m, j), load(a.v, j), a.k);
    v[pAbove] += x.rho_above ? 1.0 : 0.0;
    v[pElast] += x.elast;
    if (x.zero_v) {
      v[pZeroV] += 1.0;
      continue;
    }
    v[pU2] += x.u * x.u;
    v[pAbsU] += fabs(x.u);
    v[pAbsUElast] += fabs(x.u) * x.elast;
    for (int q = 0; q < a.n_phis; ++q)
      v[pPhi0 + q] += fabs(math::adam_update_from_sqrt(x.mhat, x.sqrt_vhat, a.k.eps, a.phis[q]));
    v[pU2Next] += x.u_next * x.u_next;
    hi[0] = x.rho > hi[0] ? x.rho : hi[0];
    lo[0] = x.rho < lo[0] ? x.rho : lo[0];
    if (smem_hist)
      atomicAdd(&hist_s[x.bin], 1u);
    else
      atomicAdd(&a.hist[x.bin], 1ull);
  }
  block_reduce(v, smem, Sum{}, 0.0);
  block_reduce(hi, smem, Max{}, 0.0);
  block_reduce(lo, smem, Min{}, static_cast<double>(INFINITY));
  write_partial_row(a.partial, v, {hi[0], lo[0]});
  if (!smem_hist) return;
  __syncthreads();
  for (int b = threadIdx.x; b < a.bins; b += blockDim.x)
    if (hist_s[b] != 0u) atomicAdd(&a.hist[b], static_cast<unsigned long long>(hist_s[b]));
}

__global__ void __launch_bounds__(kThreads) stats_finish_kernel(const StatsArgs a) {
  __shared__ double smem[kStatSums * 32];
  double v[kStatSums] = {};
  double hi[1] = {0.0}, lo[1] = {INFINITY};
  for (int64_t b = threadIdx.x; b < a.blocks; b += blockDim.x) {
    const double* row = a.partial + b * kPartialCols;
    for (int c = 0; c < kStatSums; ++c) v[c] += row[c];
    hi[0] = row[kStatSums] > hi[0] ? row[kStatSums] : hi[0];
    lo[0] = row[kStatSums + 1] < lo[0] ? row[kStatSums + 1] : lo[0];
  }
  block_reduce(v, smem, Sum{}, 0.0);
  block_reduce(hi, smem, Max{}, 0.0);
  block_reduce(lo, smem, Min{}, static_cast<double>(INFINITY));
  if (threadIdx.x != 0) return;
  // counts are whole numbers summed in double: exact
  const AdamStateSums sums{a.n,
                           static_cast<int64_t>(v[pZeroV]),
                           static_cast<int64_t>(v[pAbove]),
                           v[pU2],
                           v[pAbsU],
                           v[pAbsUElast],
                           v[pElast],
                           v[pU2Next],
                           hi[0],
                           lo[0]};
  write_stats(sums, a.out);
  for (int q = 0; q < a.n_phis; ++q) a.out[kAdamStatFields + q] = v[pPhi0 + q];
}

// ---- the coming step's split ---------------------------------------------------------------------

struct SplitArgs {
  In m, v, g, p;
  double l2 = 0.0;
  int64_t n = 0, blocks = 0;
  math::AdamSplitCoefs k{};
  double* partial = nullptr;  // blocks × kPartialCols
  double* out = nullptr;  // kAdamSplitFields
};

__global__ void __launch_bounds__(kThreads) split_kernel(const SplitArgs a) {
  __shared__ double smem[kSplitSums * 32];
  double v[kSplitSums] = {};
  double bad[1] = {INFINITY};  // first non-finite gradient (an index, exact in double)
  const int64_t stride = static_cast<int64_t>(blockDim.x) * a.blocks;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < a.n; j += stride) {
    double g = load(a.g, j);
    if (a.p.p) g += a.l2 * load(a.p, j);
    if (!finite(g)) {
      bad[0] = static_cast<double>(j) < bad[0] ? static_cast<double>(j) : bad[0];
      continue;
    }
    const math::AdamSplitTerm x = math::adam_split_term(load(a.m, j), load(a.v, j), g, a.k);
    v[qPrev2] += x.prev * x.prev;
    v[qGrad2] += g * g;
    if (!x.step) continue;
    v[qStale2] += x.us * x.us;
    v[qFresh2] += x.uf * x.uf;
    v[qStaleFresh] += x.us * x.uf;
    v[qUGrad] += (x.us + x.uf) * g;
  }
  block_reduce(v, smem, Sum{}, 0.0);
  block_reduce(bad, smem, Min{}, static_cast<double>(INFINITY));
  write_partial_row(a.partial, v, {bad[0]});
}

__global__ void __launch_bounds__(kThreads) split_finish_kernel(const SplitArgs a) {
  __shared__ double smem[kSplitSums * 32];
  double v[kSplitSums] = {};
  double bad[1] = {INFINITY};
  for (int64_t b = threadIdx.x; b < a.blocks; b += blockDim.x) {
    const double* row = a.partial + b * kPartialCols;
    for (int c = 0; c < kSplitSums; ++c) v[c] += row[c];
    bad[0] = row[kSplitSums] < bad[0] ? row[kSplitSums] : bad[0];
  }
  block_reduce(v, smem, Sum{}, 0.0);
  block_reduce(bad, smem, Min{}, static_cast<double>(INFINITY));
  if (threadIdx.x != 0) return;
  const AdamStepSplit sp{a.n, v[qStale2], v[qFresh2], v[qStaleFresh], v[qPrev2], v[qGrad2], v[qUGrad]};
  write_split(sp, bad[0] < INFINITY ? bad[0] : -1.0, a.out);
}

// ---- per-coordinate outputs ----------------------------------------------------------------------

struct UpdateArgs {
  In m, v;
  Out out;
  int64_t n = 0, blocks = 0;
  math::AdamUpdateCoefs k{};
  double eps = 0.0, phi = 1.0;
};

__global__ void __launch_bounds__(kThreads) update_kernel(const UpdateArgs a) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * a.blocks;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < a.n; j += stride)
    store(a.out, j, math::adam_update_coordinate(load(a.m, j), load(a.v, j), a.k, a.eps, a.phi));
}

struct RhoArgs {
  In v;
  Out rho, elast;
  int64_t n = 0, blocks = 0;
  double bc2 = 1.0, eps = 0.0;
};

__global__ void __launch_bounds__(kThreads) rho_kernel(const RhoArgs a) {
  const int64_t stride = static_cast<int64_t>(blockDim.x) * a.blocks;
  for (int64_t j = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x; j < a.n; j += stride) {
    const double rho = math::adam_rho(load(a.v, j), a.bc2, a.eps);
    store(a.rho, j, rho);
    if (a.elast.p) store(a.elast, j, math::reward_scale_elasticity(rho));
  }
}

// ---- host side -----------------------------------------------------------------------------------

// Elementwise kernels: enough blocks to fill the device, a grid stride beyond that.
int64_t elementwise_blocks(int64_t n) {
  const int64_t b = (n + kThreads - 1) / kThreads;
  return b < 1 ? 1 : (b > 8192 ? 8192 : b);
}

double* check_workspace(const TensorView& ws, int64_t n, const TensorView& exp_avg_sq) {
  return device_workspace(ws, adam_workspace_size(n), "adam_workspace_size(n)", exp_avg_sq, "exp_avg_sq");
}

}  // namespace

int64_t adam_workspace_size(int64_t n) { return num_blocks(n) * kPartialCols; }

void adam_state_stats(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                      double rho_threshold, double hist_lo, double hist_hi, const std::vector<double>& phis,
                      const TensorView& out_stats, const TensorView& out_hist, const TensorView& workspace,
                      std::intptr_t stream) {
  check_adam_state(exp_avg, exp_avg_sq, hp, true, true);
  check_adam_stats_outputs(out_stats, out_hist, phis.size(), exp_avg_sq, true);
  check_adam_stats_options(hist_lo, hist_hi, out_hist.shape[0], phis);
  if (phis.size() > static_cast<size_t>(kMaxPhis))
    value_error("phis: at most ", kMaxPhis, " reward scales per call on the GPU, got ", phis.size());
  StatsArgs a;
  a.m = in_of(exp_avg);
  a.v = in_of(exp_avg_sq);
  a.n = exp_avg_sq.shape[0];
  a.blocks = num_blocks(a.n);
  a.k = math::adam_stats_coefs(hp.beta1, hp.beta2, hp.eps, hp.step, rho_threshold, hist_lo, hist_hi,
                               static_cast<double>(out_hist.shape[0]));
  a.n_phis = static_cast<int>(phis.size());
  for (size_t q = 0; q < phis.size(); ++q) a.phis[q] = phis[q];
  a.bins = static_cast<int>(out_hist.shape[0]);
  a.partial = check_workspace(workspace, a.n, exp_avg_sq);
  a.out = out_stats.ptr<double>();
  a.hist = static_cast<unsigned long long*>(out_hist.data);
  GRPOKIT_DEVICE_GUARD(exp_avg_sq);
  const Stream s = stream_of(stream);
  const size_t hist_bytes = static_cast<size_t>(a.bins) * sizeof(unsigned long long);
#if defined(GRPOKIT_CUDA_EMULATE)
  std::memset(a.hist, 0, hist_bytes);
#else
  cudaMemsetAsync(a.hist, 0, hist_bytes, s);
#endif
  GRPOKIT_LAUNCH(stats_kernel, static_cast<unsigned>(a.blocks), kThreads, s, a);
  GRPOKIT_LAUNCH(stats_finish_kernel, 1, kThreads, s, a);
  GRPOKIT_CHECK_LAUNCH("adam_state_stats");
}

void adam_step_split(const TensorView& exp_avg, const TensorView& exp_avg_sq, const TensorView& grad,
                     const TensorView& param, double l2, const AdamHyper& hp, const TensorView& out,
                     const TensorView& workspace, std::intptr_t stream) {
  check_adam_state(exp_avg, exp_avg_sq, hp, false, true);
  check_adam_input(grad, "grad", exp_avg_sq, true);
  if (param.defined()) check_adam_input(param, "param", exp_avg_sq, true);
  check_adam_split_output(out, exp_avg_sq, true);
  SplitArgs a;
  a.m = in_of(exp_avg);
  a.v = in_of(exp_avg_sq);
  a.g = in_of(grad);
  a.p = in_of(param);
  a.l2 = l2;
  a.n = exp_avg_sq.shape[0];
  a.blocks = num_blocks(a.n);
  a.k = math::adam_split_coefs(hp.beta1, hp.beta2, hp.eps, hp.step);
  a.partial = check_workspace(workspace, a.n, exp_avg_sq);
  a.out = out.ptr<double>();
  GRPOKIT_DEVICE_GUARD(exp_avg_sq);
  const Stream s = stream_of(stream);
  GRPOKIT_LAUNCH(split_kernel, static_cast<unsigned>(a.blocks), kThreads, s, a);
  GRPOKIT_LAUNCH(split_finish_kernel, 1, kThreads, s, a);
  GRPOKIT_CHECK_LAUNCH("adam_step_split");
}

void adam_update(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp, double phi,
                 bool momentum_only_next, const TensorView& out, std::intptr_t stream) {
  check_adam_state(exp_avg, exp_avg_sq, hp, true, true);
  check_adam_phi(phi);
  check_adam_output(out, "out", exp_avg_sq, true);
  UpdateArgs a;
  a.m = in_of(exp_avg);
  a.v = in_of(exp_avg_sq);
  a.out = out_of(out);
  a.n = exp_avg_sq.shape[0];
  a.blocks = elementwise_blocks(a.n);
  a.k = math::adam_update_coefs(hp.beta1, hp.beta2, hp.step, momentum_only_next);
  a.eps = hp.eps;
  a.phi = phi;
  if (a.n == 0) return;
  GRPOKIT_DEVICE_GUARD(exp_avg_sq);
  const Stream s = stream_of(stream);
  GRPOKIT_LAUNCH(update_kernel, static_cast<unsigned>(a.blocks), kThreads, s, a);
  GRPOKIT_CHECK_LAUNCH("adam_update");
}

void adam_rho(const TensorView& exp_avg_sq, const AdamHyper& hp, const TensorView& out_rho,
              const TensorView& out_elasticity, std::intptr_t stream) {
  check_adam_state(exp_avg_sq, exp_avg_sq, hp, true, true);
  check_adam_output(out_rho, "out_rho", exp_avg_sq, true);
  if (out_elasticity.defined()) check_adam_output(out_elasticity, "out_elasticity", exp_avg_sq, true);
  RhoArgs a;
  a.v = in_of(exp_avg_sq);
  a.rho = out_of(out_rho);
  a.elast = out_of(out_elasticity);
  a.n = exp_avg_sq.shape[0];
  a.blocks = elementwise_blocks(a.n);
  a.bc2 = math::bias_correction(hp.beta2, hp.step);
  a.eps = hp.eps;
  if (a.n == 0) return;
  GRPOKIT_DEVICE_GUARD(exp_avg_sq);
  const Stream s = stream_of(stream);
  GRPOKIT_LAUNCH(rho_kernel, static_cast<unsigned>(a.blocks), kThreads, s, a);
  GRPOKIT_CHECK_LAUNCH("adam_rho");
}

}  // namespace cuda
}  // namespace grpokit
