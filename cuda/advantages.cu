// Group advantages on the GPU, from the same per-element formulas as the CPU engine.
//
// Group scope: one thread per row, summing its group's rewards in row order (the CPU engine's order),
// so results are deterministic. Explicit group_ids cost O(B) per row (a scan for equal ids), which is
// fine for the batch sizes of RL (B up to ~10^4). Batch scope: one block computes the batch std with a
// fixed-order tree reduction, then writes every row.
#include <cuda_runtime.h>

#include "common.cuh"
#include "grpokit/math/advantages.hpp"
#include "grpokit_cuda.hpp"
#include "launch.cuh"

namespace grpokit {
namespace cuda {
namespace {

struct Rows {
  const void* ids;
  bool ids64;
  int64_t ids_stride;
  int64_t group_size;
  int64_t B;
  __device__ int64_t id(int64_t i) const {
    return ids64 ? static_cast<const int64_t*>(ids)[i * ids_stride]
                 : static_cast<int64_t>(static_cast<const int32_t*>(ids)[i * ids_stride]);
  }
};

template <class T>
__device__ double load(const T* r, int64_t rs, int64_t i) {
  return static_cast<double>(r[i * rs]);
}

// Visits the members of row i's group in row order.
template <class F>
__device__ void for_group(const Rows& rows, int64_t i, F&& f) {
  if (rows.ids == nullptr) {
    const int64_t start = (i / rows.group_size) * rows.group_size;
    for (int64_t j = start; j < start + rows.group_size; ++j) f(j);
  } else {
    const int64_t mine = rows.id(i);
    for (int64_t j = 0; j < rows.B; ++j)
      if (rows.id(j) == mine) f(j);
  }
}

// Advantage of row i. `batch_sd` >= 0 is the batch std in units of `batch_scale` (batch scope);
// otherwise the group's.
template <class T>
__device__ void row_advantage(const T* r, int64_t rs, const Rows& rows, const AdvantageOptions& opt,
                              double batch_sd, double batch_scale, T* out, int64_t os, int64_t i) {
  math::MomentSums s;
  for_group(rows, i, [&](int64_t j) { s.add(load(r, rs, j)); });
  double sd = opt.std == StdDivisor::None ? -1.0 : batch_sd, scale = batch_scale;
  if (opt.std != StdDivisor::None && opt.std_scope == StdScope::Group) {
    math::SquaredDeviations m2;
    for_group(rows, i, [&](int64_t j) { math::add_sq_dev(m2, load(r, rs, j), s); });
    sd = math::std_from_m2(m2, s.n, opt.std == StdDivisor::Sample);
    scale = s.scale;
  }
  const bool loo = opt.baseline == Baseline::LeaveOneOut;
  out[i * os] = static_cast<T>(math::group_advantage(load(r, rs, i), s, loo, sd, scale, opt.epsilon));
}

template <class T>
__global__ void advantages_group_kernel(const T* r, int64_t rs, Rows rows, AdvantageOptions opt, T* out,
                                        int64_t os) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < rows.B) row_advantage(r, rs, rows, opt, -1.0, 1.0, out, os, i);
}

constexpr int kBatchThreads = 512;

// Batch scope in one block: the batch std by fixed-order reductions (thread t visits rows t,
// t + blockDim, ... in order, then a fixed tree), then every row. Deterministic. The sums are taken in
// the scaled domain of the batch's largest |r| (math::MomentSums), so ±DBL_MAX never overflows.
template <class T>
__global__ void advantages_batch_kernel(const T* r, int64_t rs, Rows rows, AdvantageOptions opt, T* out,
                                        int64_t os) {
  __shared__ double sum[kBatchThreads];
  __shared__ double cnt[kBatchThreads];
  __shared__ double shift;
  const int t = threadIdx.x;
  const int64_t B = rows.B;
  if (t == 0) {
    shift = 0.0;
    for (int64_t i = 0; i < B; ++i) {
      const double v = load(r, rs, i);
      if (!math::is_nan(v)) {
        shift = v;
        break;
      }
    }
  }
  double m = 0.0;
  for (int64_t i = t; i < B; i += blockDim.x) m = fmax(m, fabs(load(r, rs, i)));  // fmax drops NaN
  sum[t] = m;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) sum[t] = fmax(sum[t], sum[t + w]);
    __syncthreads();
  }
  math::MomentSums s;
  s.scale = math::pow2_scale(sum[0]);
  s.shift = shift;
  __syncthreads();
  double part = 0.0, n = 0.0;
  for (int64_t i = t; i < B; i += blockDim.x) {
    const double v = load(r, rs, i);
    if (!math::is_nan(v)) {
      part += s.diff(v);
      n += 1.0;
    }
  }
  sum[t] = part;
  cnt[t] = n;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) {
      sum[t] += sum[t + w];
      cnt[t] += cnt[t + w];
    }
    __syncthreads();
  }
  s.sum = sum[0];
  s.n = cnt[0];
  __syncthreads();
  math::SquaredDeviations m2;
  for (int64_t i = t; i < B; i += blockDim.x) math::add_sq_dev(m2, load(r, rs, i), s);
  sum[t] = m2.scale;  // reuse the shared buffers: (scale, ssq) pairs, merged in a fixed tree
  cnt[t] = m2.ssq;
  __syncthreads();
  for (int w = blockDim.x / 2; w > 0; w /= 2) {
    if (t < w) {
      math::SquaredDeviations a, b;
      a.scale = sum[t];
      a.ssq = cnt[t];
      b.scale = sum[t + w];
      b.ssq = cnt[t + w];
      a.merge(b);
      sum[t] = a.scale;
      cnt[t] = a.ssq;
    }
    __syncthreads();
  }
  math::SquaredDeviations total;
  total.scale = sum[0];
  total.ssq = cnt[0];
  const double batch_sd = math::std_from_m2(total, s.n, opt.std == StdDivisor::Sample);
  for (int64_t i = t; i < B; i += blockDim.x) row_advantage(r, rs, rows, opt, batch_sd, s.scale, out, os, i);
}

template <class T>
void launch(const TensorView& rewards, const Rows& rows, const AdvantageOptions& opt, const TensorView& out,
            cudaStream_t stream) {
  const T* r = rewards.ptr<const T>();
  T* o = out.ptr<T>();
  if (opt.std != StdDivisor::None && opt.std_scope == StdScope::Batch) {
    GRPOKIT_LAUNCH(advantages_batch_kernel<T>, 1, kBatchThreads, stream, r, rewards.strides[0], rows, opt, o,
                   out.strides[0]);
  } else {
    const int threads = 256;
    const int64_t blocks = (rows.B + threads - 1) / threads;
    GRPOKIT_LAUNCH_FLAT(advantages_group_kernel<T>, static_cast<unsigned>(blocks), threads, stream, r,
                        rewards.strides[0], rows, opt, o, out.strides[0]);
  }
}

}  // namespace

void advantages(const TensorView& rewards, const TensorView& group_ids, const AdvantageOptions& opt,
                const TensorView& out, std::intptr_t stream) {
  check_advantage_args(rewards, group_ids, opt, out);
  check_cuda_device(rewards, "rewards");
  // Value checks (inf) and the size-1-group check need the data on the host; on the GPU they would
  // synchronise, so the kernel treats inf like any value and groups of one give advantage 0.
  Rows rows{group_ids.defined() ? group_ids.data : nullptr,
            group_ids.defined() && group_ids.dtype == DType::Int64,
            group_ids.defined() ? group_ids.strides[0] : 0, opt.group_size, rewards.shape[0]};
  DeviceGuard guard(rewards.device.index);
  const cudaStream_t s = as_stream(stream);
  if (rewards.dtype == DType::Float32)
    launch<float>(rewards, rows, opt, out, s);
  else
    launch<double>(rewards, rows, opt, out, s);
  check_launch("advantages");
}

int device_count(std::string* why) {
  int n = 0;
  const cudaError_t err = cudaGetDeviceCount(&n);
  if (err != cudaSuccess) {
    if (why) *why = cudaGetErrorString(err);
    cudaGetLastError();  // clear the sticky error
    return 0;
  }
  if (n == 0 && why) *why = "no CUDA device is visible";
  return n;
}

std::string build_info() {
  int rt = 0;
  cudaRuntimeGetVersion(&rt);
  return std::string("CUDA runtime ") + std::to_string(rt / 1000) + "." + std::to_string((rt % 1000) / 10) +
         ", architectures " GRPOKIT_CUDA_ARCHS;
}

}  // namespace cuda
}  // namespace grpokit
