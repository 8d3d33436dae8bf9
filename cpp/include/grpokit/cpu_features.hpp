// What the CPU engine runs on this machine: for `grpokit info` and benchmark reports.
#pragma once

#include <string>

namespace grpokit {

// The widest vector code the engine's hot loops use here: "avx512" (the hand-written AVX-512 loops and
// the x86-64-v4 clones), "avx2" (x86-64-v3 clones), or "baseline". GRPOKIT_NO_AVX512=1 in the
// environment turns the hand-written AVX-512 loops off ("avx512-clones" then).
std::string cpu_simd_level();

// Threads the row loops use by default (OpenMP's maximum; 1 without OpenMP).
int cpu_max_threads();

}  // namespace grpokit
