// Runs cuda/diagnostics_adam.cu's kernels on host threads and compares them with the CPU engine
// (adam_state_stats_into_cpu, adam_update_cpu, adam_rho_cpu, adam_step_split_into_cpu) on random
// Adam states: a check of the kernels' indexing, grid stride, partial rows, fixed-order reductions,
// histogram atomics and barriers on machines without a GPU. It does not exercise the device compiler.
// It also runs cuda/loss.cu's top-entropy selection on entropies full of ties, signed zeros and
// single tokens (emulate_loss.cpp covers it on random entropies, every rule).
// One std::thread per CUDA thread (at most 64 per block, or EMULATE_MAX_BLOCK: ctest runs a few
// checks again at the real launch size, 256 / 1024 threads); a missing barrier deadlocks (ctest
// ends at its timeout).
//
#include <algorithm>
#include <barrier>
#include <cmath>
#include <cstdio>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emulator.hpp"

#include "diagnostics_adam.cu"
#include "loss.cu"

// ---- the checks --------------------------------------------------------------------------------------

using namespace grpokit;

static int g_fail = 0;
static const Device kGpu{DeviceType::CUDA, 0};

#define EXPECT(cond, ...)                                  \
  do {                                                     \
    if (!(cond)) {                                         \
      if (g_fail < 20) {                                   \
        std::printf("  FAIL %s:%d: ", __FILE__, __LINE__); \
        std::printf(__VA_ARGS__);                          \
        std::printf("\n");                                 \
      }                                                    \
      ++g_fail;                                            \
    }                                                      \
  } while (0)

bool close(double want, double got, double rtol) {
  if (std::isnan(want) || std::isnan(got)) return std::isnan(want) && std::isnan(got);
  if (std::isinf(want) || std::isinf(got)) return want == got;
  return std::fabs(want - got) <= rtol * std::fabs(want) + 1e-300;
}

uint16_t to_bf16(float f) {  // round to nearest even
  uint32_t b;
  std::memcpy(&b, &f, 4);
  b += 0x7FFFu + ((b >> 16) & 1u);
  return static_cast<uint16_t>(b >> 16);
}
float from_bf16(uint16_t h) {
  const uint32_t b = static_cast<uint32_t>(h) << 16;
  float f;
  std::memcpy(&f, &b, 4);
  return f;
}

// One state array stored in `dt` with `stride`, and its values as float64 (what the CPU reads).
struct Stored {
  DType dt;
  int64_t n, stride;
  std::vector<double> f64;
  std::vector<float> f32;
  std::vector<uint16_t> u16;
  std::vector<_Float16> h16;
  std::vector<double> exact;  // the stored values, widened
  TensorView device_view() {
    void* p = dt == DType::Float64    ? static_cast<void*>(f64.data())
              : dt == DType::Float32  ? static_cast<void*>(f32.data())
              : dt == DType::BFloat16 ? static_cast<void*>(u16.data())
                                      : static_cast<void*>(h16.data());
    TensorView v = make_view(p, dt, {n * stride}, kGpu);
    v.shape[0] = n;
    v.strides[0] = stride;
    return v;
  }
  TensorView host_view() { return make_view(exact.data(), DType::Float64, {n}); }
};

Stored store_as(const std::vector<double>& x, DType dt, int64_t stride) {
  Stored s{dt, static_cast<int64_t>(x.size()), stride, {}, {}, {}, {}, {}};
  const size_t len = x.size() * static_cast<size_t>(stride);
  for (size_t j = 0; j < x.size(); ++j) {
    const size_t o = j * static_cast<size_t>(stride);
    switch (dt) {
      case DType::Float64:
        s.f64.resize(len, NAN);
        s.f64[o] = x[j];
        s.exact.push_back(x[j]);
        break;
      case DType::Float32:
        s.f32.resize(len, NAN);
        s.f32[o] = float(x[j]);
        s.exact.push_back(s.f32[o]);
        break;
      case DType::BFloat16:
        s.u16.resize(len, 0x7FC0);
        s.u16[o] = to_bf16(float(x[j]));
        s.exact.push_back(from_bf16(s.u16[o]));
        break;
      default:
        s.h16.resize(len, _Float16(NAN));
        s.h16[o] = _Float16(float(x[j]));
        s.exact.push_back(double(s.h16[o]));
        break;
    }
  }
  return s;
}

// A state after `t` steps of gradients spanning many magnitudes, with never-updated coordinates (m = v
// = 0) and, for float16, values small enough to be subnormal.
void make_state(int64_t n, unsigned seed, double beta1, double beta2, int t, std::vector<double>& m,
                std::vector<double>& v) {
  std::mt19937_64 g(seed);
  std::normal_distribution<double> z(0.0, 1.0);
  std::uniform_real_distribution<double> lg(-9.0, 0.0);
  m.assign(n, 0.0);
  v.assign(n, 0.0);
  for (int64_t j = 0; j < n; ++j) {
    if (j % 13 == 5) continue;  // never updated
    const double scale = std::pow(10.0, lg(g));
    for (int s = 0; s < t; ++s) {
      const double gr = scale * z(g);
      m[j] = beta1 * m[j] + (1 - beta1) * gr;
      v[j] = beta2 * v[j] + (1 - beta2) * gr * gr;
    }
  }
}

const char* dt_name(DType d) { return dtype_name(d); }

void check_stats(int64_t n, DType dt, int64_t stride, int64_t bins) {
  const AdamHyper hp{0.9, 0.99, 1e-6, 3.0};
  std::vector<double> m, v;
  make_state(n, static_cast<unsigned>(n * 7 + bins), hp.beta1, hp.beta2, 3, m, v);
  Stored sm = store_as(m, dt, stride), sv = store_as(v, dt, 1);
  const std::vector<double> phis{0.1, 10.0, 3.0};
  const size_t F = kAdamStatFields + phis.size();
  std::vector<double> want(F), got(F, -7.0), again(F, -7.0);
  std::vector<int64_t> hw(bins), hg(bins, 99), hg2(bins, 99);
  adam_state_stats_into_cpu(sm.host_view(), sv.host_view(), hp, 0.01, -12, 4, phis,
                            make_view(want.data(), DType::Float64, {int64_t(F)}),
                            make_view(hw.data(), DType::Int64, {bins}));
  std::vector<double> ws(cuda::adam_workspace_size(n), NAN);
  const TensorView wsv = make_view(ws.data(), DType::Float64, {int64_t(ws.size())}, kGpu);
  for (int rep = 0; rep < 2; ++rep) {
    std::vector<double>& o = rep ? again : got;
    std::vector<int64_t>& h = rep ? hg2 : hg;
    cuda::adam_state_stats(sm.device_view(), sv.device_view(), hp, 0.01, -12, 4, phis,
                           make_view(o.data(), DType::Float64, {int64_t(F)}, kGpu),
                           make_view(h.data(), DType::Int64, {bins}, kGpu), wsv, 0);
  }
  for (int f : {kAdamN, kAdamNZeroV, kAdamNRhoAbove, kAdamMaxRho, kAdamMinRho})
    EXPECT(want[f] == got[f], "stats n=%lld %s field %d: cpu %.17g emu %.17g", (long long)n, dt_name(dt), f,
           want[f], got[f]);
  for (size_t f = kAdamSumU2; f < F; ++f)
    if (f != kAdamMaxRho && f != kAdamMinRho)
      EXPECT(close(want[f], got[f], 1e-12), "stats n=%lld %s field %zu: cpu %.17g emu %.17g", (long long)n,
             dt_name(dt), f, want[f], got[f]);
  EXPECT(hw == hg, "stats n=%lld %s bins=%lld: histograms differ", (long long)n, dt_name(dt),
         (long long)bins);
  EXPECT(std::memcmp(got.data(), again.data(), F * sizeof(double)) == 0 && hg == hg2,
         "stats n=%lld: two runs differ (not deterministic)", (long long)n);
}

void check_elementwise(int64_t n, DType dt, int64_t stride) {
  const AdamHyper hp{0.8, 0.95, 1e-5, 2.0};
  std::vector<double> m, v;
  make_state(n, static_cast<unsigned>(n + 3), hp.beta1, hp.beta2, 2, m, v);
  Stored sm = store_as(m, dt, stride), sv = store_as(v, dt, stride);
  for (bool next : {false, true})
    for (double phi : {1.0, 10.0}) {
      std::vector<double> want(n), got(n, -7);
      std::vector<float> want32(n), got32(n, -7);
      adam_update_cpu(sm.host_view(), sv.host_view(), hp, phi, next,
                      make_view(want.data(), DType::Float64, {n}));
      cuda::adam_update(sm.device_view(), sv.device_view(), hp, phi, next,
                        make_view(got.data(), DType::Float64, {n}, kGpu), 0);
      adam_update_cpu(sm.host_view(), sv.host_view(), hp, phi, next,
                      make_view(want32.data(), DType::Float32, {n}));
      cuda::adam_update(sm.device_view(), sv.device_view(), hp, phi, next,
                        make_view(got32.data(), DType::Float32, {n}, kGpu), 0);
      EXPECT(std::memcmp(want.data(), got.data(), n * 8) == 0 &&
                 std::memcmp(want32.data(), got32.data(), n * 4) == 0,
             "update n=%lld %s next=%d phi=%g: not bitwise equal", (long long)n, dt_name(dt), next, phi);
    }
  std::vector<double> rw(n), rg(n, -7);
  std::vector<float> ew(n), eg(n, -7);
  adam_rho_cpu(sv.host_view(), hp, make_view(rw.data(), DType::Float64, {n}),
               make_view(ew.data(), DType::Float32, {n}));
  cuda::adam_rho(sv.device_view(), hp, make_view(rg.data(), DType::Float64, {n}, kGpu),
                 make_view(eg.data(), DType::Float32, {n}, kGpu), 0);
  EXPECT(std::memcmp(rw.data(), rg.data(), n * 8) == 0 && std::memcmp(ew.data(), eg.data(), n * 4) == 0,
         "rho n=%lld %s: not bitwise equal", (long long)n, dt_name(dt));
  std::fill(rg.begin(), rg.end(), -7.0);
  cuda::adam_rho(sv.device_view(), hp, make_view(rg.data(), DType::Float64, {n}, kGpu), TensorView{}, 0);
  EXPECT(std::memcmp(rw.data(), rg.data(), n * 8) == 0, "rho without elasticity n=%lld", (long long)n);
}

void check_split(int64_t n, DType dt, double step, bool with_param, int64_t bad_at) {
  const AdamHyper hp{0.9, 0.999, 1e-8, step};
  std::vector<double> m, v, g(n), p(n);
  make_state(n, static_cast<unsigned>(n * 3 + 1), hp.beta1, hp.beta2, static_cast<int>(step), m, v);
  std::mt19937_64 r(n);
  std::normal_distribution<double> z(0.0, 1e-3);
  for (int64_t j = 0; j < n; ++j) {
    g[j] = j % 17 == 3 ? 0.0 : z(r);
    p[j] = 100 * z(r);
  }
  if (bad_at >= 0) {
    g[bad_at] = NAN;
    if (bad_at + 5 < n) g[bad_at + 5] = INFINITY;  // a later one: the first is reported
  }
  Stored sm = store_as(m, dt, 1), sv = store_as(v, dt, 1), sg = store_as(g, dt, 2), sp = store_as(p, dt, 1);
  const double l2 = with_param ? 0.01 : 0.0;
  std::vector<double> want(kAdamSplitFields, -7), got(kAdamSplitFields, -7);
  std::vector<double> ws(cuda::adam_workspace_size(n), NAN);
  cuda::adam_step_split(sm.device_view(), sv.device_view(), sg.device_view(),
                        with_param ? sp.device_view() : TensorView{}, l2, hp,
                        make_view(got.data(), DType::Float64, {kAdamSplitFields}, kGpu),
                        make_view(ws.data(), DType::Float64, {int64_t(ws.size())}, kGpu), 0);
  bool raised = false;
  std::string msg;
  try {
    adam_step_split_into_cpu(sm.host_view(), sv.host_view(), sg.host_view(),
                             with_param ? sp.host_view() : TensorView{}, l2, hp,
                             make_view(want.data(), DType::Float64, {kAdamSplitFields}));
  } catch (const std::exception& e) {
    raised = true;
    msg = e.what();
  }
  if (bad_at >= 0) {
    EXPECT(raised && msg.find("element " + std::to_string(bad_at) + " ") != std::string::npos,
           "split n=%lld: CPU should report element %lld, got '%s'", (long long)n, (long long)bad_at,
           msg.c_str());
    EXPECT(got[kSplitFirstBad] == double(bad_at), "split n=%lld: first bad %g, expected %lld", (long long)n,
           got[kSplitFirstBad], (long long)bad_at);
    return;
  }
  EXPECT(!raised, "split: CPU raised %s", msg.c_str());
  EXPECT(got[kSplitN] == want[kSplitN] && got[kSplitFirstBad] == -1.0, "split n=%lld: n/first bad",
         (long long)n);
  for (int f = kSplitStale2; f <= kSplitUGrad; ++f)
    EXPECT(close(want[f], got[f], 1e-12), "split n=%lld %s step=%g param=%d field %d: cpu %.17g emu %.17g",
           (long long)n, dt_name(dt), step, with_param, f, want[f], got[f]);
}

void check_errors() {
  std::vector<float> a(4, 1.0f);
  std::vector<double> o(kAdamStatFields + 9), ws(64);
  std::vector<int64_t> h(8);
  AdamHyper hp;
  hp.step = 1;
  const TensorView x = make_view(a.data(), DType::Float32, {4}, kGpu);
  const TensorView host = make_view(a.data(), DType::Float32, {4});
  auto expect_throw = [](const char* what, auto&& f) {
    try {
      f();
    } catch (const std::exception& e) {
      if (std::string(e.what()).find(what) != std::string::npos) return;
      EXPECT(false, "expected an error with '%s', got '%s'", what, e.what());
      return;
    }
    EXPECT(false, "expected an error with '%s'", what);
  };
  const std::vector<double> nine(9, 1.0);
  expect_throw("at most 8 reward scales", [&] {
    cuda::adam_state_stats(
        x, x, hp, 0.01, -12, 4, nine, make_view(o.data(), DType::Float64, {kAdamStatFields + 9}, kGpu),
        make_view(h.data(), DType::Int64, {8}, kGpu), make_view(ws.data(), DType::Float64, {64}, kGpu), 0);
  });
  expect_throw("exp_avg: expected a CUDA array", [&] {
    cuda::adam_update(host, x, hp, 1.0, false, make_view(o.data(), DType::Float64, {4}, kGpu), 0);
  });
  expect_throw("workspace: expected a contiguous float64 array of at least", [&] {
    cuda::adam_state_stats(
        x, x, hp, 0.01, -12, 4, {}, make_view(o.data(), DType::Float64, {kAdamStatFields}, kGpu),
        make_view(h.data(), DType::Int64, {8}, kGpu), make_view(ws.data(), DType::Float64, {1}, kGpu), 0);
  });
  expect_throw("no step yet", [&] {
    AdamHyper h0;
    cuda::adam_rho(x, h0, make_view(o.data(), DType::Float64, {4}, kGpu), TensorView{}, 0);
  });
}

// The selected threshold decides which tied tokens are kept: the kept set, hence the weights ω and the
// entropy gradient, differs at once if the threshold is off by one ulp or the rank by one.
template <class T>
void check_quantile_case(const char* what, const std::vector<double>& h, int64_t B, double q, bool packed) {
  const DType dt = sizeof(T) == 4 ? DType::Float32 : DType::Float64;
  const int64_t N = static_cast<int64_t>(h.size()), L = N / B;
  std::vector<T> lp(N), old(N), ent(N), adv(B);
  std::vector<uint8_t> mask(N, 1);
  std::vector<int64_t> cu(B + 1);
  std::mt19937 g(static_cast<unsigned>(N));
  std::uniform_real_distribution<double> u(0.05, 0.95);
  for (int64_t k = 0; k < N; ++k) {
    lp[k] = T(std::log(u(g)));
    old[k] = T(double(lp[k]) + 0.1 * (u(g) - 0.5));
    ent[k] = T(h[k]);
    if (!packed && k % L >= L - (k / L) % 3) mask[k] = 0;  // ragged rows
  }
  for (int64_t i = 0; i < B; ++i) {
    adv[i] = T(i % 2 ? -0.7 : 1.3);
    cu[i + 1] = cu[i] + L;
  }
  auto view = [&](void* p, DType d) { return packed ? make_view(p, d, {N}) : make_view(p, d, {B, L}); };
  LossSpec s;
  set_spec_field(s, "top_entropy_quantile", q);
  set_spec_field(s, "entropy_coef", 0.3);
  LossInputs in;
  in.logp = view(lp.data(), dt);
  in.old_logp = view(old.data(), dt);
  in.advantages = make_view(adv.data(), dt, {B});
  in.entropies = view(ent.data(), dt);
  if (packed)
    in.cu_seqlens = make_view(cu.data(), DType::Int64, {B + 1});
  else
    in.mask = view(mask.data(), DType::Bool);
  std::vector<T> loss[2], grad[2], gh[2], w[2];
  std::vector<double> ws(cuda::loss_workspace_size(B), NAN);
  LossOutputs out[2];
  for (int k = 0; k < 2; ++k) {
    loss[k].assign(1, T(-7));
    grad[k].assign(N, T(-7));
    gh[k].assign(N, T(-7));
    w[k].assign(N, T(-7));
    out[k].loss = make_view(loss[k].data(), dt, {1});
    out[k].grad_logp = view(grad[k].data(), dt);
    out[k].grad_entropy = view(gh[k].data(), dt);
    out[k].weights = view(w[k].data(), dt);
  }
  out[1].workspace = make_view(ws.data(), DType::Float64, {int64_t(ws.size())});
  policy_loss_cpu(s, in, out[0], 1);
  cuda::policy_loss(s, in, out[1], 0, 0);
  // The threshold itself, bitwise, against the CPU engine's rule restated (cpp/src/loss.cpp, run()).
  std::vector<double> hs;
  for (int64_t k = 0; k < N; ++k)
    if (packed || mask[k]) hs.push_back(static_cast<double>(ent[k]));
  const double pos = (1.0 - q) * static_cast<double>(hs.size() - 1);
  const size_t lo = static_cast<size_t>(std::floor(pos)), hi = static_cast<size_t>(std::ceil(pos));
  std::vector<double> sorted(hs);
  std::sort(sorted.begin(), sorted.end());
  const double thr = math::lerp(sorted[lo], sorted[hi == lo ? lo : lo + 1], pos - static_cast<double>(lo));
  unsigned long long kept = 0;
  for (double x : hs) kept += x >= thr;
  const auto* sel = reinterpret_cast<const cuda::SelectState*>(
      ws.data() + B * (cuda::kNumStat + cuda::kNumAcc) + cuda::kNumGlobal);
  EXPECT(std::memcmp(&sel->threshold, &thr, sizeof thr) == 0 && sel->n_kept == kept,
         "top-entropy %s q=%g: threshold %.17g (want %.17g), kept %llu (want %llu)", what, q, sel->threshold,
         thr, sel->n_kept, kept);
  const double rtol = sizeof(T) == 4 ? 2e-5 : 1e-9;
  int bad = 0;
  for (int64_t k = 0; k < N; ++k) {
    // kept ⇔ ω ≠ 0 and the entropy gradient ≠ 0 (every advantage is nonzero)
    bad += (w[0][k] == T(0)) != (w[1][k] == T(0)) || (gh[0][k] == T(0)) != (gh[1][k] == T(0));
    bad += !close(double(grad[0][k]), double(grad[1][k]), rtol) ||
           !close(double(gh[0][k]), double(gh[1][k]), rtol);
  }
  bad += !close(double(loss[0][0]), double(loss[1][0]), rtol);
  EXPECT(bad == 0, "top-entropy %s q=%g %s %s: %d values differ", what, q,
         sizeof(T) == 4 ? "float32" : "float64", packed ? "packed" : "padded", bad);
}

void check_quantile() {
  std::mt19937 g(5);
  std::vector<double> ties(4 * 37), equal(3 * 5, 0.75), signs(2 * 9), single(1, 0.4), wide(5 * 64);
  const double levels[4] = {0.1, 0.5, 0.5000001, 2.0};
  for (auto& x : ties) x = levels[g() % 4];
  const double sv[5] = {-1.5, -0.0, 0.0, 0.25, 3.0};
  for (auto& x : signs) x = sv[g() % 5];
  std::uniform_real_distribution<double> e(-30, 30);
  for (auto& x : wide) x = std::ldexp(1.0 + (g() % 7) / 8.0, static_cast<int>(e(g)));  // many exponents, ties
  std::vector<double> smooth(6 * 41);
  std::uniform_real_distribution<double> un(0.1, 2.0);
  for (auto& x : smooth) x = un(g);
  for (double q : {0.2, 0.5, 0.7, 1.0 / 3.0})
    for (bool packed : {false, true}) {
      check_quantile_case<float>("ties", ties, 4, q, packed);
      check_quantile_case<double>("ties", ties, 4, q, packed);
      check_quantile_case<float>("all equal", equal, 3, q, packed);
      check_quantile_case<double>("signs and zeros", signs, 2, q, packed);
      check_quantile_case<float>("signs and zeros", signs, 2, q, packed);
      check_quantile_case<float>("one token", single, 1, q, packed);
      check_quantile_case<double>("wide", wide, 5, q, packed);
      check_quantile_case<float>("wide", wide, 5, q, packed);
      check_quantile_case<float>("smooth", smooth, 6, q, packed);
      check_quantile_case<double>("smooth", smooth, 6, q, packed);
    }
  std::printf("top-entropy selection done (%d failures so far)\n", g_fail);
}

int main() {
  const std::vector<DType> dts{DType::Float32, DType::Float64, DType::BFloat16, DType::Float16};
  if (emulate_max_block() > 64) {  // real launch sizes: 8-warp blocks, grid strides over several blocks
    check_quantile();
    for (int64_t n : {8193, 30001})
      for (DType dt : {DType::Float32, DType::BFloat16}) check_stats(n, dt, 3, 64);
    check_stats(20000, DType::Float32, 1, 3000);
    for (int64_t n : {1000, 9001}) check_elementwise(n, DType::Float16, 2);
    check_split(17000, DType::Float32, 3.0, true, 12345);
    check_split(17000, DType::BFloat16, 4.0, false, -1);
  } else {
    check_quantile();
    // sizes around one block's share (8192 coordinates) and a few blocks, none a multiple of 64
    for (int64_t n : {1, 7, 100, 8191, 8193, 30001}) {
      for (DType dt : dts) check_stats(n, dt, n % 2 ? 1 : 3, 64);
      std::printf("stats n=%lld done (%d failures so far)\n", (long long)n, g_fail);
      std::fflush(stdout);
    }
    check_stats(20000, DType::Float32, 1, 3000);  // more bins than shared memory holds: global atomics
    check_stats(0, DType::Float32, 1, 16);
    for (int64_t n : {1, 65, 1000, 9001})
      for (DType dt : dts) check_elementwise(n, dt, n % 2 ? 2 : 1);
    std::printf("update / rho done (%d failures so far)\n", g_fail);
    for (int64_t n : {1, 333, 17000})
      for (double step : {0.0, 4.0})
        for (bool param : {false, true})
          check_split(n, n == 333 ? DType::BFloat16 : DType::Float32, step, param, -1);
    check_split(17000, DType::Float64, 3.0, true, -1);
    check_split(17000, DType::Float32, 3.0, true, 12345);
    check_split(17000, DType::Float32, 3.0, false, 2);
    check_errors();
  }
  if (g_emulate_launch_errors) {
    std::printf("%d launches the device would refuse\n", g_emulate_launch_errors);
    ++g_fail;
  }
  std::printf("adam emulation (blocks of at most %u threads): %s (%d failures)\n", emulate_max_block(),
              g_fail ? "FAIL" : "ok", g_fail);
  return g_fail != 0;
}
