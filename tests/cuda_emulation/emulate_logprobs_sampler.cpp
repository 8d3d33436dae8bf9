// Runs cuda/logprobs_sampler.cu's kernels on host threads and compares them with the CPU engine
// (cpp/src/logprobs_sampler.cpp): the kept set must agree bit for bit (keep_min, and so which tokens
// get −inf), the values within float32 rounding (the kernels sum in another order, __expf is std::exp
// here). Rows mix every filter and both conventions, with ties (integer logits), −inf entries,
// ±1e4 logits at a small temperature, p = 1, k ≥ V and one-token rows. The same for exact replay
// (cpp/src/logprobs_keep.cpp: a kept set given by id).
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <random>
#include <vector>

#include "cuda_emulator.hpp"
#include "logprobs_sampler.cu"

using namespace grpokit;

namespace {

int g_failures = 0, g_checks = 0;

TensorView on(TensorView v, DeviceType d) {
  v.device.type = d;
  return v;
}

// |cpu − emu| ≤ atol + rtol·|cpu|; NaN matches NaN and an infinity the same infinity. exact: bitwise.
void compare(const char* what, const std::vector<float>& cpu, const std::vector<float>& emu, double rtol,
             double atol, bool exact = false) {
  int bad = 0;
  for (size_t k = 0; k < cpu.size(); ++k) {
    const double w = cpu[k], g = emu[k];
    if ((std::isnan(w) && std::isnan(g)) || w == g) continue;
    if (exact || std::isinf(w) || std::isinf(g) || !(std::fabs(w - g) <= atol + rtol * std::fabs(w))) {
      if (bad < 4) std::printf("  MISMATCH %s [%zu]: cpu %.9g emu %.9g\n", what, k, w, g);
      ++bad;
    }
  }
  ++g_checks;
  if (bad) ++g_failures;
}

// The rows' parameters: every filter alone, combined, off (p = 1, k ≥ V, k ≤ 0), extreme values.
struct RowCase {
  int64_t k;
  double p, min_p;
};
const RowCase kCases[] = {
    {5, 1.0, 0.0}, {0, 0.9, 0.0},      {0, 1.0, 0.1},    {3, 0.5, 0.05}, {1, 1.0, 0.0},   {-1, 1.0, 0.0},
    {0, 1.0, 0.0}, {100000, 0.7, 0.0}, {50, 0.95, 0.02}, {0, 0.01, 0.0}, {2, 0.999, 0.5}, {7, 0.3, 1.0},
};
constexpr int64_t kRows = sizeof(kCases) / sizeof(kCases[0]);

// kind 0: normal logits; 1: integer logits (ties everywhere); 2: a third −inf; 3: ±1e4 at scale.
template <class H>
void check(const char* name, int64_t V, int64_t pad, double temperature, int kind, SamplerConvention conv,
           bool over_kept) {
  std::mt19937 gen(static_cast<unsigned>(V * 131 + kind * 17 + pad + over_kept));
  std::normal_distribution<float> nd(0.0f, 2.5f);
  const int64_t N = kRows, stride = V + pad;
  std::vector<H> x(static_cast<size_t>(N * stride), from_d<H>(0.0f));
  std::vector<int64_t> ids(N), top_k(N);
  std::vector<double> top_p(N), min_p(N);
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t v = 0; v < V; ++v) {
      float z = nd(gen);
      if (kind == 1) z = std::round(z);
      if (kind == 2 && v % 3 == 1) z = -INFINITY;
      if (kind == 3) z = 1e4f + 40.0f * z;
      x[r * stride + v] = from_d<H>(z);
    }
    ids[r] = kind == 2 ? (r * 3) % V : static_cast<int64_t>(gen() % V);
    top_k[r] = kCases[r].k, top_p[r] = kCases[r].p, min_p[r] = kCases[r].min_p;
  }
  TensorView xv = make_view(x.data(), dtype_of<H>(), {N, V});
  xv.strides[0] = stride;
  std::vector<float> out[2][5];
  for (int d = 0; d < 2; ++d) {
    const DeviceType dev = d == 0 ? DeviceType::CPU : DeviceType::CUDA;
    const TokenLogprobArgs in{on(xv, dev), on(make_view(ids.data(), DType::Int64, {N}), dev), temperature};
    SamplerArgs s;
    s.top_k = on(make_view(top_k.data(), DType::Int64, {N}), dev);
    s.top_p = on(make_view(top_p.data(), DType::Float64, {N}), dev);
    s.min_p = on(make_view(min_p.data(), DType::Float64, {N}), dev);
    s.convention = conv;
    s.entropy_over_kept = over_kept;
    for (auto& o : out[d]) o.assign(N, -7.0f);
    auto v = [&](int j) { return on(make_view(out[d][j].data(), DType::Float32, {N}), dev); };
    if (d == 0)
      token_logprobs_sampler_cpu(in, s, v(0), v(1), v(2), v(3), v(4));
    else
      cuda::token_logprobs_sampler(in, s, v(0), v(1), v(2), v(3), v(4), 0);
  }
  char what[200];
  const char* names[5] = {"logp", "entropy", "lse", "kept_logmass", "keep_min"};
  for (int j = 0; j < 5; ++j) {
    std::snprintf(what, sizeof what, "%s %s V=%lld T=%g kind=%d %s over_kept=%d", name, names[j],
                  (long long)V, temperature, kind, conv == SamplerConvention::VLLM ? "vllm" : "sglang",
                  over_kept);
    // float32 sums in another order: a few ulps of the row's scale; keep_min is the kept set: exact.
    compare(what, out[0][j], out[1][j], 2e-5, 2e-5, j == 4);
  }

  // The backward of logp + 0.5·entropy, the kept set held fixed.
  std::vector<float> ga(N, 1.0f), gb(N, 0.5f);
  std::vector<H> g[2];
  for (int d = 0; d < 2; ++d) {
    const DeviceType dev = d == 0 ? DeviceType::CPU : DeviceType::CUDA;
    const TokenLogprobArgs in{on(xv, dev), on(make_view(ids.data(), DType::Int64, {N}), dev), temperature};
    g[d].assign(static_cast<size_t>(N * V), from_d<H>(-7.0f));
    auto v = [&](std::vector<float>& a) { return on(make_view(a.data(), DType::Float32, {N}), dev); };
    const TensorView gv = on(make_view(g[d].data(), dtype_of<H>(), {N, V}), dev);
    if (d == 0)
      token_logprobs_sampler_backward_cpu(in, over_kept, v(out[0][2]), v(out[0][3]), v(out[0][4]),
                                          v(out[0][1]), v(ga), v(gb), gv);
    else
      cuda::token_logprobs_sampler_backward(in, over_kept, v(out[0][2]), v(out[0][3]), v(out[0][4]),
                                            v(out[0][1]), v(ga), v(gb), gv, 0);
  }
  std::vector<float> g0, g1;
  for (int64_t i = 0; i < N * V; ++i) g0.push_back(to_d(g[0][i])), g1.push_back(to_d(g[1][i]));
  std::snprintf(what, sizeof what, "%s grad V=%lld kind=%d over_kept=%d", name, (long long)V, kind,
                over_kept);
  compare(what, g0, g1, sizeof(H) == 2 ? 1.0 / 128 : 1e-4, 2e-6);
}

// Exact replay (token_logprobs_keep): random kept sets by id (any set, not an upper set of values),
// empty rows (the whole vocabulary), tokens outside their set, int32 CSR with a stride; then a row
// whose ids are not ascending, which the kernels mark with NaN.
template <class H>
void check_keep(const char* name, int64_t V, int64_t pad, double temperature, int kind, bool over_kept) {
  std::mt19937 gen(static_cast<unsigned>(V * 7 + kind * 3 + pad + over_kept));
  std::normal_distribution<float> nd(0.0f, 2.5f);
  const int64_t N = 9, stride = V + pad;
  std::vector<H> x(static_cast<size_t>(N * stride), from_d<H>(0.0f));
  std::vector<int64_t> ids(N);
  std::vector<int32_t> csr, offsets{0};  // ids stored at every second entry: a strided view
  for (int64_t r = 0; r < N; ++r) {
    for (int64_t v = 0; v < V; ++v) {
      float z = nd(gen);
      if (kind == 1) z = std::round(z);
      if (kind == 2 && v % 3 == 1 && v != 0) z = -INFINITY;
      if (kind == 3) z = 1e4f + 40.0f * z;
      x[r * stride + v] = from_d<H>(z);
    }
    ids[r] = static_cast<int64_t>(gen() % V);
    const bool all = r % 4 == 0;
    for (int64_t v = 0; v < V && !all; ++v)
      if (v == 0 || gen() % 3 == 0 || (v == ids[r] && r % 3 != 1))  // column 0: a finite logit kept
        csr.push_back(static_cast<int32_t>(v)), csr.push_back(-1);
    offsets.push_back(static_cast<int32_t>(csr.size() / 2));
  }
  const int64_t nnz = static_cast<int64_t>(csr.size() / 2);
  KeepArgs k;
  k.ids = make_view(csr.data(), DType::Int32, {nnz});
  k.ids.strides[0] = 2;
  k.offsets = make_view(offsets.data(), DType::Int32, {N + 1});
  k.entropy_over_kept = over_kept;
  TensorView xv = make_view(x.data(), dtype_of<H>(), {N, V});
  xv.strides[0] = stride;
  std::vector<float> out[2][4];
  std::vector<float> ga(N, 1.0f), gb(N, 0.5f);
  std::vector<H> g[2];
  for (int d = 0; d < 2; ++d) {
    const DeviceType dev = d == 0 ? DeviceType::CPU : DeviceType::CUDA;
    const TokenLogprobArgs in{on(xv, dev), on(make_view(ids.data(), DType::Int64, {N}), dev), temperature};
    KeepArgs kd = k;
    kd.ids = on(k.ids, dev), kd.offsets = on(k.offsets, dev);
    for (auto& o : out[d]) o.assign(N, -7.0f);
    auto v = [&](std::vector<float>& a) { return on(make_view(a.data(), DType::Float32, {N}), dev); };
    g[d].assign(static_cast<size_t>(N * V), from_d<H>(-7.0f));
    const TensorView gv = on(make_view(g[d].data(), dtype_of<H>(), {N, V}), dev);
    if (d == 0) {
      token_logprobs_keep_cpu(in, kd, v(out[d][0]), v(out[d][1]), v(out[d][2]), v(out[d][3]));
      token_logprobs_keep_backward_cpu(in, kd, v(out[d][2]), v(out[d][3]), v(out[d][1]), v(ga), v(gb), gv);
    } else {
      cuda::token_logprobs_keep(in, kd, v(out[d][0]), v(out[d][1]), v(out[d][2]), v(out[d][3]), 0);
      cuda::token_logprobs_keep_backward(in, kd, v(out[0][2]), v(out[0][3]), v(out[0][1]), v(ga), v(gb), gv,
                                         0);
    }
  }
  char what[200];
  const char* names[4] = {"logp", "entropy", "lse", "kept_logmass"};
  for (int j = 0; j < 4; ++j) {
    std::snprintf(what, sizeof what, "keep %s %s V=%lld kind=%d over_kept=%d", name, names[j], (long long)V,
                  kind, over_kept);
    compare(what, out[0][j], out[1][j], 2e-5, 2e-5);
  }
  std::vector<float> g0, g1;
  for (int64_t i = 0; i < N * V; ++i) g0.push_back(to_d(g[0][i])), g1.push_back(to_d(g[1][i]));
  std::snprintf(what, sizeof what, "keep %s grad V=%lld kind=%d over_kept=%d", name, (long long)V, kind,
                over_kept);
  compare(what, g0, g1, sizeof(H) == 2 ? 1.0 / 128 : 1e-4, 2e-6);
  int nan = 0;  // NaN matches NaN in compare: the CPU engine's values must be finite here
  for (float v : g0) nan += std::isnan(v);
  for (float v : out[0][2]) nan += std::isnan(v);
  if (nan)
    std::printf("  NaN in the CPU engine's keep results %s V=%lld kind=%d\n", name, (long long)V, kind);
  g_failures += nan > 0;
  if (V < 2) return;
  // Row 1's first two ids swapped: not ascending. The CPU engine raises; the kernel writes NaN.
  std::vector<int32_t> bad = {1, 0};
  std::vector<int32_t> bad_off(N + 1, 2);
  bad_off[0] = bad_off[1] = 0;
  KeepArgs kb = k;
  kb.ids = on(make_view(bad.data(), DType::Int32, {2}), DeviceType::CUDA);
  kb.offsets = on(make_view(bad_off.data(), DType::Int32, {N + 1}), DeviceType::CUDA);
  const TokenLogprobArgs in{on(xv, DeviceType::CUDA),
                            on(make_view(ids.data(), DType::Int64, {N}), DeviceType::CUDA), temperature};
  auto v = [&](std::vector<float>& a) {
    return on(make_view(a.data(), DType::Float32, {N}), DeviceType::CUDA);
  };
  cuda::token_logprobs_keep(in, kb, v(out[1][0]), v(out[1][1]), v(out[1][2]), v(out[1][3]), 0);
  std::snprintf(what, sizeof what, "keep %s unsorted ids -> NaN V=%lld", name, (long long)V);
  compare(what, std::vector<float>{std::isnan(out[1][0][1]) ? 1.0f : 0.0f}, std::vector<float>{1.0f}, 0, 0,
          true);
}

}  // namespace

int main() {
  // Full blocks: 512 threads (V > 2048), 16 warps in the block's sums; the rows with ties only (short).
  const bool full = emulate_max_block() > 64;
  for (int64_t V : full ? std::vector<int64_t>{2100} : std::vector<int64_t>{1, 3, 7, 33, 100, 257, 1000}) {
    for (int kind : {0, 1, 2, 3}) {
      if ((kind == 2 && V < 3) || (full && kind != 1)) continue;
      const double t = kind == 3 ? 0.7 : 1.3;
      check<float>("f32", V, 5, t, kind, SamplerConvention::VLLM, false);
      check<float>("f32", V, 0, t, kind, SamplerConvention::SGLang, true);
      if (full) continue;
      check<__nv_bfloat16>("bf16", V, 3, t, kind, SamplerConvention::VLLM, true);
      check<__half>("f16", V, 8, 1.0, kind == 3 ? 0 : kind, SamplerConvention::SGLang, false);
      check_keep<float>("f32", V, 5, t, kind, kind % 2 == 0);
      check_keep<__nv_bfloat16>("bf16", V, 3, t, kind, kind % 2 == 1);
    }
    std::printf("V=%lld done (%d of %d checks differ so far)\n", (long long)V, g_failures, g_checks);
    std::fflush(stdout);
  }
  std::printf("%d of %d checks differ, %d launches the device would refuse\n", g_failures, g_checks,
              g_emulate_launch_errors);
  return g_failures != 0 || g_emulate_launch_errors != 0;
}
