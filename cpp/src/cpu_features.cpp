#include "grpokit/cpu_features.hpp"

#include "cpu_kernels.hpp"

#ifdef GRPOKIT_HAVE_OPENMP
#include <omp.h>
#endif

namespace grpokit {

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

int cpu_max_threads() {
#ifdef GRPOKIT_HAVE_OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

}  // namespace grpokit
