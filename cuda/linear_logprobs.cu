// Token log-probabilities from hidden states × output projection on the GPU: for each chunk of the
// vocabulary, cuBLAS computes the (N × chunk) float32 tile of logits into the caller's workspace,
// and a row kernel folds it into per-row online states (forward) or turns it into ∂L/∂logits and
// two more GEMMs accumulate the gradients of hidden and weight (backward). Only one tile of logits
// exists at a time. cuBLAS is linked into grpokit._cuda only.
#include <cuda_runtime.h>

#include <cstdint>
#include <vector>

#include "common.cuh"
#include "grpokit/interrupt.hpp"
#include "grpokit/linear_logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "grpokit_cuda.hpp"
#include "logprobs_rows.cuh"

#ifdef GRPOKIT_HAVE_CUBLAS
#include <cublas_v2.h>
#endif

namespace grpokit {
namespace cuda {

#ifdef GRPOKIT_HAVE_CUBLAS
namespace {

using namespace rows;

constexpr int64_t kDefaultChunk = 2048;
constexpr int64_t kAlign = 256;
constexpr int64_t kState = 5;  // floats of forward state per row (Σexp² used with sum_sq_probs only)

int64_t align_up(int64_t b) { return (b + kAlign - 1) / kAlign * kAlign; }

// cuBLAS's workspace, given per call from the caller's workspace buffer (cuBLAS's recommendation:
// 32 MiB on Hopper and later, 4 MiB before). A handle's default workspace pool is shared by every
// stream the handle is used on, and cuBLAS needs a user workspace under CUDA graph capture; the
// caller's buffer is ordered on the caller's stream by its framework's allocator.
int64_t cublas_workspace_bytes(int device) {
  int major = 0;
  if (cudaDeviceGetAttribute(&major, cudaDevAttrComputeCapabilityMajor, device) != cudaSuccess) {
    cudaGetLastError();  // not sticky; an unknown device gets the larger size
    major = 9;
  }
  return (major >= 9 ? 32 : 4) << 20;
}

int64_t chunk_of(const LinearLogprobArgs& in) {
  const int64_t c = in.chunk_size > 0 ? in.chunk_size : kDefaultChunk;
  return c < in.weight.shape[0] ? c : in.weight.shape[0];
}

// Workspace layout (byte offsets), in the order the buffers appear.
struct Layout {
  int64_t tile = 0;      // float32 [N × chunk]: the logits tile, then ∂L/∂logits
  int64_t state = 0;     // forward: float32 [kState × N] (max, sum, dot, Σexp², target logit) per row
  int64_t tile_lp = 0;   // backward, 16-bit inputs: ∂L/∂logits in the input dtype for the GEMMs
  int64_t gh_acc = 0;    // backward, 16-bit inputs: float32 [N × H] accumulator of grad_hidden
  int64_t blas = 0;      // cuBLAS's workspace (blas_bytes), see handle_for
  int64_t blas_bytes = 0;
  int64_t bytes = 0;

  static Layout of(const LinearLogprobArgs& in, bool backward) {
    const int64_t N = in.hidden.shape[0], H = in.hidden.shape[1], C = chunk_of(in);
    const bool f32 = in.hidden.dtype == DType::Float32;
    Layout l;
    int64_t at = 0;
    l.tile = at;
    at += align_up(N * C * 4);
    if (!backward) {
      l.state = at;
      at += align_up(kState * N * 4);
    } else if (!f32) {
      l.tile_lp = at;
      at += align_up(N * C * 2);
      l.gh_acc = at;
      at += align_up(N * H * 4);
    }
    l.blas = at;
    l.blas_bytes = cublas_workspace_bytes(in.hidden.device.index);
    at += l.blas_bytes;
    l.bytes = at;
    return l;
  }
};

cudaDataType_t cuda_type(DType d) {
  switch (d) {
    case DType::BFloat16:
      return CUDA_R_16BF;
    case DType::Float16:
      return CUDA_R_16F;
    default:
      return CUDA_R_32F;
  }
}

// One cuBLAS handle per (host thread, device), created on first use: a handle's stream and workspace
// are settings of the handle, so host threads sharing one would switch each other's stream between
// the GEMMs of a call. Bound to the caller's stream and workspace on every call. Never destroyed (at
// process exit the CUDA context may already be gone; PyTorch does the same).
cublasHandle_t handle_for(int device, cudaStream_t stream, void* blas_ws, int64_t blas_bytes) {
  thread_local std::vector<cublasHandle_t> handles;
  if (static_cast<int>(handles.size()) <= device) handles.resize(device + 1, nullptr);
  if (handles[device] == nullptr) {
    if (cublasCreate(&handles[device]) != CUBLAS_STATUS_SUCCESS)
      runtime_error("linear_token_logprobs: cublasCreate failed");
    // Full float32 GEMMs for float32 inputs (no TF32), whatever NVIDIA's defaults become.
    cublasSetMathMode(handles[device], CUBLAS_DEFAULT_MATH);
  }
  cublasHandle_t h = handles[device];
  // cublasSetStream resets the workspace to cuBLAS's pool, so the workspace is set after it.
  if (cublasSetStream(h, stream) != CUBLAS_STATUS_SUCCESS ||
      cublasSetWorkspace(h, blas_ws, static_cast<size_t>(blas_bytes)) != CUBLAS_STATUS_SUCCESS)
    runtime_error("linear_token_logprobs: binding the cuBLAS handle to the stream and workspace failed");
  return h;
}

// A (rows × H) operand's row stride as a cuBLAS leading dimension, which must be ≥ max(1, H). The
// stride of a single row is arbitrary in DLPack (a transposed (H, 1) column has strides (1, 1)), so
// it is taken as H; overlapping rows (stride < H, e.g. an expanded tensor) cannot be expressed.
int64_t leading_dim(const TensorView& m, const char* name) {
  const int64_t H = m.shape[1], need = H > 1 ? H : 1;
  if (m.shape[0] <= 1 || H == 0) return need;
  if (m.strides[0] < need)
    value_error(name, ": on the GPU the rows must not overlap (row stride >= ", need, "), got strides (",
                m.strides[0], ", ", m.strides[1], "); pass a contiguous array");
  return m.strides[0];
}

// Row-major C[m × n] (ldc) = op(A) · op(B) in row-major terms is column-major Cᵀ = op(B)ᵀ·op(A)ᵀ;
// callers pass the column-major form directly.
void gemm(cublasHandle_t h, cublasOperation_t ta, cublasOperation_t tb, int64_t m, int64_t n, int64_t k,
          const void* a, cudaDataType_t at, int64_t lda, const void* b, cudaDataType_t bt, int64_t ldb,
          float beta, void* c, cudaDataType_t ct, int64_t ldc) {
  const float alpha = 1.0f;
  for (const int64_t d : {m, n, k, lda, ldb, ldc})
    if (d > 0x7fffffff)
      value_error("linear_token_logprobs: a GEMM dimension or row stride of ", d,
                  " exceeds cuBLAS's 32-bit limit; use fewer rows per call or a smaller chunk_size");
  const cublasStatus_t s =
      cublasGemmEx(h, ta, tb, static_cast<int>(m), static_cast<int>(n), static_cast<int>(k), &alpha, a, at,
                   static_cast<int>(lda), b, bt, static_cast<int>(ldb), &beta, c, ct, static_cast<int>(ldc),
                   CUBLAS_COMPUTE_32F, CUBLAS_GEMM_DEFAULT);
  if (s != CUBLAS_STATUS_SUCCESS)
    runtime_error("linear_token_logprobs: cublasGemmEx failed (status ", int(s), ")");
}

// Z (row-major N × nv, ld = ldz) = hidden · W[v0 : v0 + nv]ᵀ.
void logits_tile(cublasHandle_t h, const LinearLogprobArgs& in, int64_t ldh, int64_t ldw, int64_t v0,
                 int64_t nv, float* z, int64_t ldz) {
  const int64_t N = in.hidden.shape[0], H = in.hidden.shape[1];
  const cudaDataType_t t = cuda_type(in.hidden.dtype);
  const char* w =
      static_cast<const char*>(in.weight.data) + v0 * in.weight.strides[0] * dtype_size(in.weight.dtype);
  gemm(h, CUBLAS_OP_T, CUBLAS_OP_N, nv, N, H, w, t, ldw, in.hidden.data, t, ldh, 0.0f, z, CUDA_R_32F, ldz);
}

template <bool kSq>
__global__ void __launch_bounds__(kThreads)
    tile_stats_kernel(const float* z, int64_t ldz, int64_t nv, int64_t v0, bool first, float inv_t,
                      PerRow ids, float* state, int64_t N) {
  const int64_t r = blockIdx.x;
  const float* row = z + r * ldz;
  const math::RowState<float, kSq> tile = block_row_state<kSq>(row, nv, inv_t);
  if (threadIdx.x != 0) return;
  float* s = state + kState * r;
  math::RowState<float, kSq> st;
  if (!first) {
    st.max = s[0], st.sum = s[1], st.dot = s[2];
    if constexpr (kSq) st.sq = s[3];
  }
  st.merge(math::ChunkStats<float>{tile.max, tile.sum, tile.dot, tile.sq}, inv_t);
  s[0] = st.max, s[1] = st.sum, s[2] = st.dot;  // the maximum raw (grpokit/math/logprobs.hpp)
  if constexpr (kSq) s[3] = st.sq;
  const int64_t id = ids.id(r, 1);
  if (id >= v0 && id < v0 + nv) s[4] = row[id - v0];  // raw
}

template <bool kSq>
__global__ void finish_kernel(const float* state, int64_t N, int64_t vocab, float inv_t, PerRow ids,
                              PerRow logp, PerRow entropy, PerRow lse, PerRow sum_sq) {
  const int64_t r = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (r >= N) return;
  const int64_t id = ids.id(r, 1);
  const float* s = state + kState * r;
  math::RowState<float, kSq> st;
  st.max = s[0], st.sum = s[1], st.dot = s[2];
  if constexpr (kSq) st.sq = s[3];
  const bool bad = id < 0 || id >= vocab;
  const float l = bad ? NAN : static_cast<float>(st.lse(static_cast<double>(inv_t)));
  // ≤ 0, from the gap to the raw maximum, as the CPU engine
  logp.write(r, 1, bad ? NAN : math::token_logp(math::scaled_gap(s[4], st.max, inv_t), logf(st.sum)));
  lse.write(r, 1, l);
  entropy.write(r, 1, bad ? NAN : st.entropy());
  if constexpr (kSq) sum_sq.write(r, 1, bad ? NAN : st.sum_sq_probs());
}

template <class U>
__global__ void __launch_bounds__(kThreads)
    tile_grad_kernel(float* z, int64_t ldz, int64_t nv, int64_t v0, int64_t vocab, float inv_t, PerRow ids,
                     PerRow lse, PerRow entropy, PerRow grad_logp, PerRow grad_entropy, U* out, int64_t ldo) {
  const int64_t r = blockIdx.x;
  float* row = z + r * ldz;
  const int64_t id = ids.id(r, 1);
  const bool bad = id < 0 || id >= vocab;
  const bool here = !bad && id >= v0 && id < v0 + nv;
  const auto c = math::grad_coeffs<float, float>(grad_logp.real(r, 1), grad_entropy.real(r, 1),
                                                 grad_entropy.data ? entropy.real(r, 1) : 0.0f, inv_t);
  const float x_y = (threadIdx.x == 0 && here) ? row[id - v0] : 0.0f;
  __syncthreads();
  // A tile holds part of a row, so the gradient works from the saved lse, as the CPU engine's.
  const GradShift gs{0.0f, lse.real(r, 1)};
  block_grad_row(row, out + r * ldo, nv, inv_t, gs, c, here ? id - v0 : -1, x_y, bad);
}

template <class T>
__global__ void convert_kernel(const float* src, T* dst, int64_t n) {
  const int64_t i = blockIdx.x * static_cast<int64_t>(blockDim.x) + threadIdx.x;
  if (i < n) dst[i] = from_float<T>(src[i]);
}

void check_workspace(const TensorView& ws, const Layout& l) {
  if (l.bytes == 0) return;
  if (!ws.defined() || ws.numel() * dtype_size(ws.dtype) < l.bytes || !ws.is_contiguous() ||
      reinterpret_cast<uintptr_t>(ws.data) % kAlign != 0)
    value_error("workspace: expected a contiguous buffer of at least ", l.bytes, " bytes, aligned to ",
                kAlign, " bytes (cuBLAS's workspace is part of it)");
  check_writable(ws, "workspace");
}

void check_gpu_dtype(const TensorView& hidden) {
  if (hidden.dtype == DType::Float64)
    not_implemented(
        "hidden: float64 is supported on the CPU only; on the GPU pass float32, "
        "bfloat16 or float16");
}

}  // namespace

int64_t linear_workspace_bytes(const LinearLogprobArgs& in, bool backward) {
  return Layout::of(in, backward).bytes;
}

void linear_token_logprobs(const LinearLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                           const TensorView& lse, const TensorView& sum_sq_probs, const TensorView& workspace,
                           std::intptr_t stream) {
  check_linear_token_logprobs_args(in, logp, entropy, lse, sum_sq_probs);
  check_cuda_device(in.hidden, "hidden");
  check_gpu_dtype(in.hidden);
  const int64_t N = in.hidden.shape[0], V = in.weight.shape[0], C = chunk_of(in);
  const Layout lay = Layout::of(in, false);
  check_workspace(workspace, lay);
  if (N == 0) return;
  const int64_t ldh = leading_dim(in.hidden, "hidden"), ldw = leading_dim(in.weight, "weight");
  DeviceGuard guard(in.hidden.device.index);
  const cudaStream_t s = as_stream(stream);
  char* ws = static_cast<char*>(workspace.data);
  cublasHandle_t h = handle_for(in.hidden.device.index, s, ws + lay.blas, lay.blas_bytes);
  float* tile = reinterpret_cast<float*>(ws + lay.tile);
  float* state = reinterpret_cast<float*>(ws + lay.state);
  const float inv_t = static_cast<float>(1.0 / in.temperature);
  const PerRow ids = PerRow::of(in.token_ids);
  // Σπ² is its own instantiation: the default kernels carry no third accumulator.
  const bool sq = sum_sq_probs.defined();
  const auto stats = sq ? tile_stats_kernel<true> : tile_stats_kernel<false>;
  const auto finish = sq ? finish_kernel<true> : finish_kernel<false>;
  Interrupt stop;  // Ctrl-C between chunks: a full launch queue blocks this loop (grpokit/interrupt.hpp)
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    stop.poll();
    const int64_t nv = V - v0 < C ? V - v0 : C;
    logits_tile(h, in, ldh, ldw, v0, nv, tile, C);
    GRPOKIT_LAUNCH(stats, static_cast<unsigned>(N), threads_for(nv), s, tile, C, nv, v0, v0 == 0, inv_t, ids,
                   state, N);
  }
  GRPOKIT_LAUNCH_FLAT(finish, static_cast<unsigned>((N + 255) / 256), 256, s, state, N, V, inv_t, ids,
                      PerRow::of(logp), PerRow::of(entropy), PerRow::of(lse), PerRow::of(sum_sq_probs));
  check_launch("linear_token_logprobs");
}

void linear_token_logprobs_backward(const LinearLogprobArgs& in, const TensorView& lse,
                                    const TensorView& entropy, const TensorView& grad_logp,
                                    const TensorView& grad_entropy, const TensorView& grad_hidden,
                                    const TensorView& grad_weight, const TensorView& workspace,
                                    std::intptr_t stream) {
  check_linear_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_hidden,
                                            grad_weight);
  check_cuda_device(in.hidden, "hidden");
  check_gpu_dtype(in.hidden);
  const int64_t N = in.hidden.shape[0], H = in.hidden.shape[1], V = in.weight.shape[0];
  const int64_t C = chunk_of(in);
  const Layout lay = Layout::of(in, true);
  check_workspace(workspace, lay);
  const int64_t ldh = leading_dim(in.hidden, "hidden"), ldw = leading_dim(in.weight, "weight");
  DeviceGuard guard(in.hidden.device.index);
  const cudaStream_t s = as_stream(stream);
  if (N == 0) {
    if (grad_weight.defined()) cudaMemsetAsync(grad_weight.data, 0, V * H * dtype_size(grad_weight.dtype), s);
    return;
  }
  char* ws = static_cast<char*>(workspace.data);
  cublasHandle_t h = handle_for(in.hidden.device.index, s, ws + lay.blas, lay.blas_bytes);
  const bool f32 = in.hidden.dtype == DType::Float32;
  const cudaDataType_t t = cuda_type(in.hidden.dtype);
  float* tile = reinterpret_cast<float*>(ws + lay.tile);
  void* dz = f32 ? static_cast<void*>(tile) : static_cast<void*>(ws + lay.tile_lp);
  float* gh = f32 ? static_cast<float*>(grad_hidden.data) : reinterpret_cast<float*>(ws + lay.gh_acc);
  const float inv_t = static_cast<float>(1.0 / in.temperature);
  const PerRow ids = PerRow::of(in.token_ids), l = PerRow::of(lse), e = PerRow::of(entropy),
               ga = PerRow::of(grad_logp), gb = PerRow::of(grad_entropy);
  Interrupt stop;  // as in the forward
  for (int64_t v0 = 0; v0 < V; v0 += C) {
    stop.poll();
    const int64_t nv = V - v0 < C ? V - v0 : C;
    logits_tile(h, in, ldh, ldw, v0, nv, tile, C);
    const unsigned grid = static_cast<unsigned>(N);
    const int threads = threads_for(nv);
    dispatch_float(in.hidden.dtype, [&](auto tag) {
      using T = decltype(tag);
      const auto kernel = tile_grad_kernel<T>;
      GRPOKIT_LAUNCH(kernel, grid, threads, s, tile, C, nv, v0, V, inv_t, ids, l, e, ga, gb,
                     static_cast<T*>(dz), C);
    });
    // grad_hidden (N × H) += dZ (N × nv) · W_c (nv × H): column-major Ghᵀ = W_cᵀ · dZᵀ.
    if (grad_hidden.defined()) {
      const char* w =
          static_cast<const char*>(in.weight.data) + v0 * in.weight.strides[0] * dtype_size(in.weight.dtype);
      gemm(h, CUBLAS_OP_N, CUBLAS_OP_N, H, N, nv, w, t, ldw, dz, t, C, v0 == 0 ? 0.0f : 1.0f, gh, CUDA_R_32F,
           H);
    }
    // grad_weight[v0 : v0 + nv] (nv × H) = dZᵀ · hidden: column-major Gwᵀ = hiddenᵀ · dZ. All N
    // rows are in the tile, so each chunk of grad_weight is written once, in its own dtype.
    if (grad_weight.defined()) {
      char* gw = static_cast<char*>(grad_weight.data) + v0 * H * dtype_size(grad_weight.dtype);
      gemm(h, CUBLAS_OP_N, CUBLAS_OP_T, H, nv, N, in.hidden.data, t, ldh, dz, t, C, 0.0f, gw, t, H);
    }
  }
  if (grad_hidden.defined() && !f32) {
    const int64_t n = N * H;
    const unsigned blocks = static_cast<unsigned>((n + 255) / 256);
    dispatch_float(in.hidden.dtype, [&](auto tag) {
      using T = decltype(tag);
      const auto kernel = convert_kernel<T>;
      GRPOKIT_LAUNCH_FLAT(kernel, blocks, 256, s, gh, static_cast<T*>(grad_hidden.data), n);
    });
  }
  check_launch("linear_token_logprobs_backward");
}

#else  // no cuBLAS in this build

int64_t linear_workspace_bytes(const LinearLogprobArgs&, bool) { return 0; }

void linear_token_logprobs(const LinearLogprobArgs&, const TensorView&, const TensorView&, const TensorView&,
                           const TensorView&, const TensorView&, std::intptr_t) {
  not_implemented(
      "linear_token_logprobs: this build of grpokit._cuda has no cuBLAS; rebuild with "
      "cuBLAS (the CUDA toolkit's or the nvidia-cublas wheel's: docs/gpu.md), or pass CPU tensors");
}

void linear_token_logprobs_backward(const LinearLogprobArgs&, const TensorView&, const TensorView&,
                                    const TensorView&, const TensorView&, const TensorView&,
                                    const TensorView&, const TensorView&, std::intptr_t) {
  not_implemented(
      "linear_token_logprobs_backward: this build of grpokit._cuda has no cuBLAS; "
      "rebuild with cuBLAS (the CUDA toolkit's or the nvidia-cublas wheel's: docs/gpu.md), or pass CPU "
      "tensors");
}

#endif

bool cublas_built() {
#ifdef GRPOKIT_HAVE_CUBLAS
  return true;
#else
  return false;
#endif
}

}  // namespace cuda
}  // namespace grpokit
