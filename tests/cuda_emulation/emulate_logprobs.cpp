// Runs cuda/logprobs.cu's, cuda/logprobs_kl.cu's and cuda/linear_logprobs.cu's kernels on host threads and
// compares them with the CPU engine: a check of the kernels' indexing, vector/scalar row traversal, warp and
// block reductions (incl. the Σπ² accumulator) and barriers on machines without a GPU. It does not exercise
// the device compiler; __expf is std::exp here, and bfloat16/float16 are host structs with the device's
// round-to-nearest-even conversions (cuda_emulator.hpp). cuBLAS is a naive host GEMM with float32
// accumulation. With EMULATE_MAX_BLOCK > 64 it runs a few launches at their real block size instead. ctest
// runs it both ways (tests/cpp/CMakeLists.txt).
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <stdexcept>
#include <memory>
#include <random>
#include <thread>
#include <type_traits>
#include <vector>

#include "cuda_emulator.hpp"

// ---- cuBLAS stand-in: column-major GEMM, float32 accumulation ----------------------------------

#define GRPOKIT_HAVE_CUBLAS 1
using cublasHandle_t = int*;
using cublasStatus_t = int;
constexpr cublasStatus_t CUBLAS_STATUS_SUCCESS = 0;
constexpr cublasStatus_t CUBLAS_STATUS_INVALID_VALUE = 7;
enum cublasOperation_t { CUBLAS_OP_N, CUBLAS_OP_T };
enum cublasMath_t { CUBLAS_DEFAULT_MATH, CUBLAS_TF32_TENSOR_OP_MATH };
enum cudaDataType_t { CUDA_R_32F, CUDA_R_16BF, CUDA_R_16F };
enum cublasComputeType_t { CUBLAS_COMPUTE_32F };
enum cublasGemmAlgo_t { CUBLAS_GEMM_DEFAULT };
inline cublasStatus_t cublasCreate(cublasHandle_t* h) {
  static int dummy;
  *h = &dummy;
  return CUBLAS_STATUS_SUCCESS;
}
// cuBLAS's rules that a GPU would enforce: cublasSetStream drops a user workspace (the kernels must
// set theirs after it), a workspace is 256-byte aligned, float32 GEMMs never run in TF32.
static const void* g_blas_ws = nullptr;
static cublasMath_t g_math = CUBLAS_DEFAULT_MATH;
inline cublasStatus_t cublasSetStream(cublasHandle_t, cudaStream_t) {
  g_blas_ws = nullptr;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetWorkspace(cublasHandle_t, void* p, size_t n) {
  if (reinterpret_cast<uintptr_t>(p) % 256 != 0 || n < (16u << 10)) return CUBLAS_STATUS_INVALID_VALUE;
  g_blas_ws = p;
  return CUBLAS_STATUS_SUCCESS;
}
inline cublasStatus_t cublasSetMathMode(cublasHandle_t, cublasMath_t m) {
  g_math = m;
  return CUBLAS_STATUS_SUCCESS;
}

inline float emu_read(const void* p, cudaDataType_t t, int64_t i) {
  switch (t) {
    case CUDA_R_16BF:
      return __bfloat162float(static_cast<const __nv_bfloat16*>(p)[i]);
    case CUDA_R_16F:
      return __half2float(static_cast<const __half*>(p)[i]);
    default:
      return static_cast<const float*>(p)[i];
  }
}
inline void emu_write(void* p, cudaDataType_t t, int64_t i, float v) {
  switch (t) {
    case CUDA_R_16BF:
      static_cast<__nv_bfloat16*>(p)[i] = __float2bfloat16(v);
      return;
    case CUDA_R_16F:
      static_cast<__half*>(p)[i] = __float2half(v);
      return;
    default:
      static_cast<float*>(p)[i] = v;
  }
}
inline cublasStatus_t cublasGemmEx(cublasHandle_t, cublasOperation_t ta, cublasOperation_t tb, int m, int n,
                                   int k, const float* alpha, const void* a, cudaDataType_t at, int lda,
                                   const void* b, cudaDataType_t bt, int ldb, const float* beta, void* c,
                                   cudaDataType_t ct, int ldc, cublasComputeType_t, cublasGemmAlgo_t) {
  // cuBLAS's argument checks (column-major: op(A) is m × k, op(B) is k × n).
  auto least = [](int v) { return v > 1 ? v : 1; };
  if (m < 0 || n < 0 || k < 0 || lda < least(ta == CUBLAS_OP_N ? m : k) ||
      ldb < least(tb == CUBLAS_OP_N ? k : n) || ldc < least(m)) {
    std::printf("  cublasGemmEx: invalid arguments m=%d n=%d k=%d lda=%d ldb=%d ldc=%d\n", m, n, k, lda, ldb,
                ldc);
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  if (g_blas_ws == nullptr || g_math != CUBLAS_DEFAULT_MATH) {
    std::printf("  cublasGemmEx: no user workspace bound after cublasSetStream, or TF32 math\n");
    return CUBLAS_STATUS_INVALID_VALUE;
  }
  for (int j = 0; j < n; ++j)
    for (int i = 0; i < m; ++i) {
      float s = 0.0f;
      for (int l = 0; l < k; ++l) {
        const float av = emu_read(a, at, ta == CUBLAS_OP_N ? i + int64_t(l) * lda : l + int64_t(i) * lda);
        const float bv = emu_read(b, bt, tb == CUBLAS_OP_N ? l + int64_t(j) * ldb : j + int64_t(l) * ldb);
        s += av * bv;
      }
      const int64_t o = i + int64_t(j) * ldc;
      emu_write(c, ct, o, *alpha * s + (*beta != 0.0f ? *beta * emu_read(c, ct, o) : 0.0f));
    }
  return CUBLAS_STATUS_SUCCESS;
}

#include "linear_logprobs.cu"
#include "logprobs.cu"
#include "logprobs_kl.cu"

using namespace grpokit;

namespace {

int g_failures = 0, g_checks = 0;

// |cpu − emu| ≤ atol + rtol·|cpu|, NaN matching NaN.
void compare(const char* what, const std::vector<float>& cpu, const std::vector<float>& emu, double rtol,
             double atol) {
  int bad = 0;
  for (size_t k = 0; k < cpu.size(); ++k) {
    const double w = cpu[k], g = emu[k];
    if (std::isnan(w) && std::isnan(g)) continue;
    if (!(std::fabs(w - g) <= atol + rtol * std::fabs(w))) {
      if (bad < 4) std::printf("  MISMATCH %s [%zu]: cpu %.9g emu %.9g\n", what, k, w, g);
      ++bad;
    }
  }
  ++g_checks;
  if (bad) ++g_failures;
}

// A workspace as the Python layer allocates it: a fresh framework buffer, 256-byte aligned.
struct Workspace {
  std::vector<unsigned char> raw;
  TensorView view;
  explicit Workspace(int64_t bytes) : raw(static_cast<size_t>(bytes + 256)) {
    const uintptr_t a = reinterpret_cast<uintptr_t>(raw.data());
    unsigned char* p = raw.data() + (256 - a % 256) % 256;
    view = make_view(p, DType::UInt8, {bytes}, Device{DeviceType::CUDA, 0});
  }
};

TensorView on(TensorView v, DeviceType d) {
  v.device.type = d;
  return v;
}

// Rows of V logits at row stride V + pad (plus an offset so rows start unaligned when odd); the
// emulated kernels and the CPU engine read the same buffer.
template <class H>
void check_logits(const char* name, int64_t N, int64_t V, int64_t pad, int64_t offset, double temperature,
                  int kind, bool sum_sq) {
  std::mt19937 gen(static_cast<unsigned>(N * 7919 + V * 31 + pad + kind));
  std::normal_distribution<float> nd(0.0f, 3.0f);
  const int64_t stride = V + pad;
  std::vector<H> x(static_cast<size_t>(offset + N * stride), from_d<H>(0.0f));
  for (int64_t r = 0; r < N; ++r)
    for (int64_t v = 0; v < V; ++v) {
      float z = nd(gen);
      if (kind == 1 && v % 5 == 0) z = (v % 10 == 0) ? 1e4f : -1e4f;  // extreme logits
      if (kind == 2 && v % 3 != 0) z = -INFINITY;                      // mostly −inf
      x[offset + r * stride + v] = from_d<H>(z);
    }
  std::vector<int64_t> ids(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) ids[r] = kind == 2 ? (r * 3) % V : static_cast<int64_t>(gen() % V);
  TensorView xv = make_view(x.data() + offset, dtype_of<H>(), {N, V});
  xv.strides[0] = stride;
  const TensorView idv = make_view(ids.data(), DType::Int64, {N});
  std::vector<float> out[2][4];
  for (int k = 0; k < 2; ++k) {
    const DeviceType d = k == 0 ? DeviceType::CPU : DeviceType::CUDA;
    for (auto& o : out[k]) o.assign(static_cast<size_t>(N), -7.0f);
    const TokenLogprobArgs in{on(xv, d), on(idv, d), temperature};
    auto v = [&](int j) { return on(make_view(out[k][j].data(), DType::Float32, {N}), d); };
    const TensorView sq = sum_sq ? v(3) : TensorView{};
    if (k == 0)
      token_logprobs_cpu(in, v(0), v(1), v(2), sq);
    else
      cuda::token_logprobs(in, v(0), v(1), v(2), sq, 0);
  }
  char what[160];
  const char* names[4] = {"logp", "entropy", "lse", "sum_sq_probs"};
  for (int j = 0; j < (sum_sq ? 4 : 3); ++j) {
    std::snprintf(what, sizeof what, "%s %s N=%lld V=%lld pad=%lld T=%g kind=%d sq=%d", name, names[j],
                  (long long)N, (long long)V, (long long)pad, temperature, kind, sum_sq);
    // float32 sums in another order (and exp vs __expf): a few ulps of the row's scale. ±1e4 logits
    // too: both engines take differences from the raw maximum and scale once (math/logprobs.hpp).
    compare(what, out[0][j], out[1][j], 2e-5, j == 0 || j == 2 ? 2e-5 : 2e-6);
  }
  if (!sum_sq)
    for (float v : out[1][3]) g_failures += v != -7.0f;  // untouched without the request

  // The backward's launches (the gradient of logp + 0.5·entropy).
  std::vector<float> ga(static_cast<size_t>(N), 1.0f), gb(static_cast<size_t>(N), 0.5f);
  std::vector<H> g[2];
  for (int k = 0; k < 2; ++k) {
    const DeviceType d = k == 0 ? DeviceType::CPU : DeviceType::CUDA;
    g[k].assign(static_cast<size_t>(N * V), from_d<H>(-7.0f));
    const TokenLogprobArgs in{on(xv, d), on(idv, d), temperature};
    auto v = [&](std::vector<float>& a) { return on(make_view(a.data(), DType::Float32, {N}), d); };
    const TensorView gv = on(make_view(g[k].data(), dtype_of<H>(), {N, V}), d);
    if (k == 0)
      token_logprobs_backward_cpu(in, v(out[0][2]), v(out[0][1]), v(ga), v(gb), gv);
    else
      cuda::token_logprobs_backward(in, v(out[0][2]), v(out[0][1]), v(ga), v(gb), gv, 0);
  }
  std::vector<float> g0, g1;
  for (int64_t i = 0; i < N * V; ++i) g0.push_back(to_d(g[0][i])), g1.push_back(to_d(g[1][i]));
  std::snprintf(what, sizeof what, "%s grad N=%lld V=%lld kind=%d", name, (long long)N, (long long)V, kind);
  // 16-bit gradients: one rounding. ±1e4 logits: both engines recompute the row's raw maximum for
  // |lse| > math::exact_lse_bound and are exact there. One-hot rows: p = 1 to float32 rounding of
  // d, a few 1e-7 times |a|.
  compare(what, g0, g1, sizeof(H) == 2 ? 1.0 / 128 : 1e-4, 2e-6);
}

// The full KL against a reference: rows of V policy logits and a reference near them, each at row
// stride V + pad (the reference one entry further, so the two rows' alignments differ); forward's five
// outputs and the gradient of logp + 0.5·entropy + 0.7·kl. kind as in check_logits (2: −inf in both).
template <class H>
void check_kl(const char* name, int64_t N, int64_t V, int64_t pad, double temperature, int kind) {
  std::mt19937 gen(static_cast<unsigned>(N * 31 + V * 7 + pad + kind));
  std::normal_distribution<float> nd(0.0f, 3.0f);
  const int64_t stride = V + pad;
  std::vector<H> x(static_cast<size_t>(N * stride), from_d<H>(0.0f)), y(x.size() + 1, from_d<H>(0.0f));
  for (int64_t r = 0; r < N; ++r)
    for (int64_t v = 0; v < V; ++v) {
      float z = nd(gen), w = z + nd(gen) / 3.0f;
      if (kind == 1 && v % 5 == 0) z = (v % 10 == 0) ? 1e4f : -1e4f, w = z + 1.0f;
      if (kind == 2 && v % 3 != 0) z = w = -INFINITY;
      x[r * stride + v] = from_d<H>(z), y[1 + r * stride + v] = from_d<H>(w);
    }
  std::vector<int64_t> ids(static_cast<size_t>(N));
  for (int64_t r = 0; r < N; ++r) ids[r] = kind == 2 ? (r * 3) % V : static_cast<int64_t>(gen() % V);
  TensorView xv = make_view(x.data(), dtype_of<H>(), {N, V}),
             yv = make_view(y.data() + 1, dtype_of<H>(), {N, V});
  xv.strides[0] = yv.strides[0] = stride;
  const TensorView idv = make_view(ids.data(), DType::Int64, {N});
  std::vector<float> out[2][5], ga(N, 1.0f), gb(N, 0.5f), gk(N, 0.7f);
  std::vector<H> g[2];
  for (int k = 0; k < 2; ++k) {
    const DeviceType d = k == 0 ? DeviceType::CPU : DeviceType::CUDA;
    for (auto& o : out[k]) o.assign(static_cast<size_t>(N), -7.0f);
    g[k].assign(static_cast<size_t>(N * V), from_d<H>(-7.0f));
    const TokenLogprobArgs in{on(xv, d), on(idv, d), temperature};
    auto v = [&](std::vector<float>& a) { return on(make_view(a.data(), DType::Float32, {N}), d); };
    const TensorView gv = on(make_view(g[k].data(), dtype_of<H>(), {N, V}), d);
    // Both backwards read the CPU's saved lse, ref_lse, entropy and kl.
    if (k == 0) {
      token_logprobs_kl_cpu(in, on(yv, d), v(out[k][0]), v(out[k][1]), v(out[k][2]), v(out[k][3]),
                            v(out[k][4]));
      token_logprobs_kl_backward_cpu(in, on(yv, d), v(out[0][3]), v(out[0][4]), v(out[0][1]), v(out[0][2]),
                                     v(ga), v(gb), v(gk), gv);
    } else {
      cuda::token_logprobs_kl(in, on(yv, d), v(out[k][0]), v(out[k][1]), v(out[k][2]), v(out[k][3]),
                              v(out[k][4]), 0);
      cuda::token_logprobs_kl_backward(in, on(yv, d), v(out[0][3]), v(out[0][4]), v(out[0][1]), v(out[0][2]),
                                       v(ga), v(gb), v(gk), gv, 0);
    }
  }
  char what[160];
  const char* names[5] = {"logp", "entropy", "kl", "lse", "ref_lse"};
  for (int j = 0; j < 5; ++j) {
    std::snprintf(what, sizeof what, "kl %s %s N=%lld V=%lld pad=%lld T=%g kind=%d", name, names[j],
                  (long long)N, (long long)V, (long long)pad, temperature, kind);
    // float32 sums in another order (the GPU's state is float32, the CPU's float64): ulps of the row's scale.
    compare(what, out[0][j], out[1][j], 2e-5, j == 0 || j >= 3 ? 2e-5 : 1e-5);
  }
  std::vector<float> g0, g1;
  for (int64_t i = 0; i < N * V; ++i) g0.push_back(to_d(g[0][i])), g1.push_back(to_d(g[1][i]));
  std::snprintf(what, sizeof what, "kl %s grad N=%lld V=%lld kind=%d", name, (long long)N, (long long)V,
                kind);
  compare(what, g0, g1, sizeof(H) == 2 ? 1.0 / 128 : 1e-4, 2e-6);
}

// One out-of-range token id: every output of its row is NaN on the GPU (the CPU raises instead).
void check_bad_id() {
  const int64_t N = 2, V = 40;
  std::vector<float> x(N * V, 0.5f), out[4];
  std::vector<int64_t> ids{3, V};
  for (auto& o : out) o.assign(N, -7.0f);
  const DeviceType d = DeviceType::CUDA;
  const TokenLogprobArgs in{on(make_view(x.data(), DType::Float32, {N, V}), d),
                            on(make_view(ids.data(), DType::Int64, {N}), d), 1.0};
  auto v = [&](int j) { return on(make_view(out[j].data(), DType::Float32, {N}), d); };
  cuda::token_logprobs(in, v(0), v(1), v(2), v(3), 0);
  bool ok = std::fabs(out[3][0] - 1.0f / V) < 1e-7f;
  for (int j = 0; j < 4; ++j) ok = ok && std::isnan(out[j][1]);
  ++g_checks;
  if (!ok) {
    std::printf("  MISMATCH bad id: sum_sq %g / %g\n", out[3][0], out[3][1]);
    ++g_failures;
  }
}

// hidden · weightᵀ: the CPU engine on float32 copies of the (rounded) inputs against the emulated
// cuBLAS tile loop, forward (with and without Σπ²) and backward.
// layout 0: contiguous; 1: one row of hidden with DLPack strides (1, 1) (a transposed (H, 1) column:
// the row stride of a single row is arbitrary) and weight rows padded to Hd + 3.
template <class H>
void check_linear(const char* name, int64_t N, int64_t Hd, int64_t V, int64_t chunk, double temperature,
                  int layout = 0) {
  const int64_t wstride = layout == 1 ? Hd + 3 : Hd;
  std::mt19937 gen(static_cast<unsigned>(N * 131 + V + chunk));
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<H> h(N * Hd), w(V * wstride);
  std::vector<float> hf(N * Hd), wf(V * wstride);
  for (int64_t i = 0; i < N * Hd; ++i) h[i] = from_d<H>(nd(gen)), hf[i] = to_d(h[i]);
  for (int64_t i = 0; i < V * wstride; ++i) w[i] = from_d<H>(nd(gen) * 0.7f), wf[i] = to_d(w[i]);
  auto hid = [&](void* p, DType dt) {
    TensorView v = make_view(p, dt, {N, Hd});
    if (layout == 1 && N == 1) v.strides[0] = 1;
    return v;
  };
  auto wt = [&](void* p, DType dt) {
    TensorView v = make_view(p, dt, {V, Hd});
    v.strides[0] = wstride;
    return v;
  };
  std::vector<int64_t> ids(N);
  for (auto& id : ids) id = static_cast<int64_t>(gen() % V);
  std::vector<float> out[3][4];
  for (int k = 0; k < 3; ++k) {  // CPU with Σπ², emulated GPU with and without it
    const DeviceType d = k == 0 ? DeviceType::CPU : DeviceType::CUDA;
    LinearLogprobArgs in;
    in.hidden = on(k == 0 ? hid(hf.data(), DType::Float32) : hid(h.data(), dtype_of<H>()), d);
    in.weight = on(k == 0 ? wt(wf.data(), DType::Float32) : wt(w.data(), dtype_of<H>()), d);
    in.token_ids = on(make_view(ids.data(), DType::Int64, {N}), d);
    in.temperature = temperature;
    in.chunk_size = chunk;
    for (auto& o : out[k]) o.assign(N, -7.0f);
    auto v = [&](int j) { return on(make_view(out[k][j].data(), DType::Float32, {N}), d); };
    if (k == 0) {
      linear_token_logprobs_cpu(in, v(0), v(1), v(2), v(3));
    } else {
      Workspace ws(cuda::linear_workspace_bytes(in, false));
      cuda::linear_token_logprobs(in, v(0), v(1), v(2), k == 1 ? v(3) : TensorView{}, ws.view, 0);
    }
  }
  char what[160];
  const char* names[4] = {"logp", "entropy", "lse", "sum_sq_probs"};
  for (int k = 1; k < 3; ++k)
    for (int j = 0; j < (k == 1 ? 4 : 3); ++j) {
      std::snprintf(what, sizeof what, "linear %s %s N=%lld V=%lld chunk=%lld sq=%d", name, names[j],
                    (long long)N, (long long)V, (long long)chunk, k == 1);
      compare(what, out[0][j], out[k][j], 5e-5, 5e-5);
    }
  // Backward of logp + 0.5·entropy: float32 only (the CPU engine has no 16-bit hidden states).
  if constexpr (std::is_same<H, float>::value) {
    std::vector<float> ga(N, 1.0f), gb(N, 0.5f), gh[2], gw[2];
    for (int k = 0; k < 2; ++k) {
      const DeviceType d = k == 0 ? DeviceType::CPU : DeviceType::CUDA;
      LinearLogprobArgs in;
      in.hidden = on(hid(hf.data(), DType::Float32), d);
      in.weight = on(wt(wf.data(), DType::Float32), d);
      in.token_ids = on(make_view(ids.data(), DType::Int64, {N}), d);
      in.temperature = temperature;
      in.chunk_size = chunk;
      gh[k].assign(N * Hd, -7.0f);
      gw[k].assign(V * Hd, -7.0f);
      auto v = [&](std::vector<float>& a) { return on(make_view(a.data(), DType::Float32, {N}), d); };
      const TensorView ghv = on(make_view(gh[k].data(), DType::Float32, {N, Hd}), d);
      const TensorView gwv = on(make_view(gw[k].data(), DType::Float32, {V, Hd}), d);
      if (k == 0) {
        linear_token_logprobs_backward_cpu(in, v(out[0][2]), v(out[0][1]), v(ga), v(gb), ghv, gwv);
      } else {
        Workspace ws(cuda::linear_workspace_bytes(in, true) + 1);
        cuda::linear_token_logprobs_backward(in, v(out[0][2]), v(out[0][1]), v(ga), v(gb), ghv, gwv, ws.view,
                                             0);
      }
    }
    std::snprintf(what, sizeof what, "linear %s grad_hidden V=%lld", name, (long long)V);
    compare(what, gh[0], gh[1], 1e-4, 1e-5);
    std::snprintf(what, sizeof what, "linear %s grad_weight V=%lld", name, (long long)V);
    compare(what, gw[0], gw[1], 1e-4, 1e-5);
  }
}

// Rows that overlap (an expanded weight, row stride 0) cannot be a cuBLAS operand: a clear error
// before anything is launched, not a cuBLAS status.
void check_overlapping_weight() {
  const int64_t N = 2, Hd = 4, V = 3;
  std::vector<float> h(N * Hd, 0.5f), w(Hd, 0.25f), out[2];
  std::vector<int64_t> ids{0, 2};
  LinearLogprobArgs in;
  const Device dev{DeviceType::CUDA, 0};
  in.hidden = make_view(h.data(), DType::Float32, {N, Hd}, dev);
  in.weight = make_view(w.data(), DType::Float32, {V, Hd}, dev);
  in.weight.strides[0] = 0;
  in.token_ids = make_view(ids.data(), DType::Int64, {N}, dev);
  for (auto& o : out) o.assign(N, -7.0f);
  Workspace ws(cuda::linear_workspace_bytes(in, false));
  bool raised = false;
  try {
    cuda::linear_token_logprobs(in, make_view(out[0].data(), DType::Float32, {N}, dev), TensorView{},
                                make_view(out[1].data(), DType::Float32, {N}, dev), TensorView{}, ws.view, 0);
  } catch (const std::exception& e) {
    raised = std::strstr(e.what(), "weight: on the GPU the rows must not overlap") != nullptr;
    if (!raised) std::printf("  unexpected error: %s\n", e.what());
  }
  ++g_checks;
  if (!raised || out[0][0] != -7.0f) {
    std::printf("  MISMATCH overlapping weight: no clear error before the launch\n");
    ++g_failures;
  }
}

}  // namespace

int main() {
  if (emulate_max_block() > 64) {
    // A few launches at their real block size (512 threads for V ≥ 2048): 16 warps per block.
    check_logits<float>("f32 full", 2, 5000, 3, 1, 0.7, 0, true);
    check_logits<float>("f32 full", 2, 5000, 0, 0, 1.0, 2, false);
    check_logits<__nv_bfloat16>("bf16 full", 2, 4099, 3, 1, 1.3, 1, true);
    check_logits<__half>("f16 full", 1, 700, 8, 0, 1.0, 0, true);  // 128 threads
    check_linear<float>("f32 full", 2, 8, 5000, 4096, 0.9);
    check_kl<float>("f32 full", 2, 5000, 3, 0.7, 0);
    check_kl<__nv_bfloat16>("bf16 full", 1, 3000, 0, 1.0, 1);
    std::printf("full blocks: %d of %d checks differ\n", g_failures, g_checks);
    return g_failures != 0 || g_emulate_launch_errors != 0;
  }
  // V: 1, below one 16-byte vector, odd, around the emulated block's share, several chunks (CPU).
  for (int64_t V : {1, 3, 7, 33, 100, 257, 1000, 5000}) {
    for (int kind : {0, 1, 2}) {
      if (kind == 2 && V < 3) continue;
      check_logits<float>("f32", 3, V, 5, 1, 0.7, kind, true);
      check_logits<float>("f32", 2, V, 0, 0, 1.0, kind, false);
      check_logits<__nv_bfloat16>("bf16", 2, V, 3, 1, 1.3, kind, true);
      check_logits<__half>("f16", 2, V, 8, 0, 1.0, kind, true);
      check_kl<float>("f32", 3, V, 5, 0.7, kind);
      check_kl<__nv_bfloat16>("bf16", 2, V, 0, 1.3, kind);
      check_kl<__half>("f16", 2, V, 8, 1.0, kind);
    }
    std::printf("V=%lld done (%d of %d checks differ so far)\n", (long long)V, g_failures, g_checks);
    std::fflush(stdout);
  }
  check_bad_id();
  check_linear<float>("f32", 5, 8, 300, 128, 0.9);
  check_linear<float>("f32", 3, 5, 37, 0, 1.0);
  check_linear<__nv_bfloat16>("bf16", 4, 8, 200, 64, 1.0);
  check_linear<float>("f32 strided", 1, 6, 50, 16, 1.0, 1);
  check_linear<__nv_bfloat16>("bf16 strided", 1, 6, 50, 0, 1.0, 1);
  check_linear<float>("f32 padded", 3, 6, 40, 16, 1.0, 1);
  check_overlapping_weight();
  std::printf("%d of %d checks differ, %d launches the device would refuse\n", g_failures, g_checks,
              g_emulate_launch_errors);
  return g_failures != 0 || g_emulate_launch_errors != 0;
}
