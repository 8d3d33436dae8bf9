// What the CPU engine runs on this machine: for `grpokit info` and benchmark reports.
#pragma once

#include <string>

namespace grpokit {

// The widest vector code the engine's hot loops use here: "avx512" (the hand-written AVX-512 loops and
// the x86-64-v4 clones), "avx2" (x86-64-v3 clones), or "baseline". GRPOKIT_NO_AVX512=1 in the
// environment turns the hand-written AVX-512 loops off ("avx512-clones" then).
std::string cpu_simd_level();

// Threads the row loops use by default (OpenMP's maximum; 1 without OpenMP or in a forked child).
int cpu_max_threads();

// Threads for a loop: `requested` if > 0, else the default; always 1 in a child forked after the engine
// was loaded (its OpenMP runtime has no threads there, see cpu_features.cpp).
int cpu_threads(int requested);

// The default team size of the parallel loops started from the calling thread, for one scope (OpenMP
// keeps it per thread): a host that owns the cores and calls the engine from its own pool threads
// (XLA's CPU runtime) limits the engine to its thread; restored on exit.
class ScopedCpuThreads {
 public:
  explicit ScopedCpuThreads(int threads);
  ~ScopedCpuThreads();
  ScopedCpuThreads(const ScopedCpuThreads&) = delete;
  ScopedCpuThreads& operator=(const ScopedCpuThreads&) = delete;

 private:
  int saved_;
};

}  // namespace grpokit
