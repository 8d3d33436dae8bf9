#include "grpokit/cpu_features.hpp"

#include "cpu_kernels.hpp"

#ifdef GRPOKIT_HAVE_OPENMP
#include <omp.h>
#include <pthread.h>
#endif

namespace grpokit {

#ifdef GRPOKIT_HAVE_OPENMP
namespace {
// GNU OpenMP's thread pool does not survive fork(): the child inherits the pool's bookkeeping but not
// its threads, so its first parallel region waits forever for them (multiprocessing's "fork" start
// method, DataLoader workers). The child therefore runs the engine on its own thread: correct, and the
// usual choice for worker processes, which are already one of many. A runtime that survives fork
// (LLVM's libomp) is not an option: the engine links whatever OpenMP the compiler ships, and torch
// loads its own GNU OpenMP into the same process.
bool forked_child = false;
void on_fork_child() {
  forked_child = true;
  omp_set_num_threads(1);
}
[[maybe_unused]] const int fork_handler = pthread_atfork(nullptr, nullptr, &on_fork_child);
}  // namespace
#endif

int cpu_threads(int requested) {
#ifdef GRPOKIT_HAVE_OPENMP
  if (forked_child) return 1;
  return requested > 0 ? requested : omp_get_max_threads();
#else
  (void)requested;
  return 1;
#endif
}

#ifdef GRPOKIT_HAVE_OPENMP
ScopedCpuThreads::ScopedCpuThreads(int threads) : saved_(omp_get_max_threads()) {
  omp_set_num_threads(threads > 0 ? threads : 1);
}
ScopedCpuThreads::~ScopedCpuThreads() { omp_set_num_threads(saved_); }
#else
ScopedCpuThreads::ScopedCpuThreads(int) : saved_(1) {}
ScopedCpuThreads::~ScopedCpuThreads() = default;
#endif

std::string cpu_simd_level() {
#ifdef GRPOKIT_CPU_DISPATCH
  __builtin_cpu_init();
  if (cpu::has_avx512()) return "avx512";
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "avx512-clones";  // GRPOKIT_NO_AVX512 set
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return "avx2";
#endif
  return "baseline";
}

int cpu_max_threads() { return cpu_threads(0); }

}  // namespace grpokit
