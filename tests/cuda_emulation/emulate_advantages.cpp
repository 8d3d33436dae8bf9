// Runs cuda/advantages.cu's kernels on host threads (cuda_emulator.hpp) and compares them with the CPU
// engine (advantages_cpu): every baseline × std divisor × std scope, contiguous groups and uneven
// group ids (int32 and int64, strided), NaN rewards (unscorable completions), strided rewards and
// outputs, float32 and float64, batch sizes around the 512-thread batch block and the 256-thread row
// blocks. With EMULATE_MAX_BLOCK=1024 the batch-scope block runs at its real size (16 warps).
#include "cuda_emulator.hpp"

#include "advantages.cu"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using namespace grpokit;

namespace {

const Device kGpu{DeviceType::CUDA, 0};
int g_bad = 0, g_runs = 0;

template <class R>
void run(int64_t B, int64_t G, bool ids64, int64_t stride, const AdvantageOptions& base, unsigned seed,
         double scale = 1.0) {
  std::mt19937 gen(seed);
  std::normal_distribution<double> nd(0.5, 2.0);
  const DType dt = sizeof(R) == 4 ? DType::Float32 : DType::Float64;
  std::vector<R> r(static_cast<size_t>(B * stride), R(-9)), out_cpu(B * stride, R(-7)),
      out_emu(B * stride, R(-7));
  for (int64_t i = 0; i < B; ++i) r[i * stride] = (i % 11 == 5) ? R(NAN) : static_cast<R>(scale * nd(gen));
  // G > 0: contiguous groups of G; G == 0: ids i mod 3 (every group of size ≥ 2 when B ≥ 6), strided.
  std::vector<int32_t> id32(static_cast<size_t>(2 * B));
  std::vector<int64_t> id64(static_cast<size_t>(2 * B));
  for (int64_t i = 0; i < B; ++i) id32[2 * i] = static_cast<int32_t>(id64[2 * i] = (i * 7) % 3);
  AdvantageOptions opt = base;
  opt.group_size = G;
  TensorView ids;
  if (G == 0) {
    ids = ids64 ? make_view(id64.data(), DType::Int64, {B}) : make_view(id32.data(), DType::Int32, {B});
    ids.strides[0] = 2;
  }
  auto view = [&](std::vector<R>& v, Device d) {
    TensorView t = make_view(v.data(), dt, {B}, d);
    t.strides[0] = stride;
    return t;
  };
  advantages_cpu(view(r, Device{}), ids, opt, view(out_cpu, Device{}));
  TensorView ids_gpu = ids;
  ids_gpu.device = kGpu;
  const int errors_before = g_emulate_launch_errors;
  cuda::advantages(view(r, kGpu), ids_gpu, opt, view(out_emu, kGpu), 0);
  ++g_runs;
  const double tol = sizeof(R) == 4 ? 2e-6 : 1e-12;
  int bad = g_emulate_launch_errors != errors_before;
  for (int64_t k = 0; k < B * stride; ++k) {
    const double w = out_cpu[k], g = out_emu[k];
    if (!(std::isnan(w) && std::isnan(g)) && w != g && !(std::fabs(w - g) <= tol * (1.0 + std::fabs(w)))) {
      if (bad < 4)
        std::printf("  MISMATCH B=%lld G=%lld stride=%lld [%lld]: cpu %.17g emu %.17g\n", (long long)B,
                    (long long)G, (long long)stride, (long long)k, w, g);
      ++bad;
    }
  }
  g_bad += bad != 0;
}

}  // namespace

int main() {
  const bool full = emulate_max_block() > 64;
  const std::vector<int64_t> sizes =
      full ? std::vector<int64_t>{1030} : std::vector<int64_t>{6, 8, 63, 130, 300};
  int cases = 0;
  for (Baseline bl : {Baseline::Mean, Baseline::LeaveOneOut})
    for (StdDivisor sd : {StdDivisor::None, StdDivisor::Population, StdDivisor::Sample})
      for (StdScope sc : {StdScope::Group, StdScope::Batch})
        for (double eps : {0.0, 1e-4}) {
          AdvantageOptions o;
          o.baseline = bl, o.std = sd, o.std_scope = sc, o.epsilon = eps;
          for (int64_t B : sizes) {
            const unsigned seed = static_cast<unsigned>(B + 31 * cases++);
            if (B % 2 == 0) run<float>(B, 2, false, 1, o, seed);
            run<double>(B, B % 3 == 0 ? 3 : 0, false, 2, o, seed);
            run<double>(B, 0, true, 1, o, seed);
            run<float>(B, 0, false, 3, o, seed);
            run<double>(B, 0, true, 1, o, seed, 1e307);  // the scaled statistics near the float64 maximum
          }
        }
  std::printf(
      "advantages emulation (blocks of at most %u threads): %d of %d runs differ, %d launches the "
      "device would refuse\n",
      emulate_max_block(), g_bad, g_runs, g_emulate_launch_errors);
  return g_bad != 0 || g_runs == 0;
}
