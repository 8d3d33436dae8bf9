// The policy loss's hottest row loop written for AVX-512 (internal to the CPU engine).
//
// The interval form of the clip (math::clip_interval) over one row of float32 tokens: TRL's
// grpo/dapo/dr_grpo/bnpo and verl's vanilla without dual-clip, i.e. most training runs. GCC's
// `omp simd` version of the same loop (loss_fast.cpp, interval_row) keeps its seven row sums in
// stack arrays and widens the byte mask four vectors at a time, which costs ≈ 0.9 ns/token; here the
// sums stay in registers, the mask is a k-register, counts are integer popcounts, the tail is a
// masked iteration and the streams are prefetched: the loop then runs at the speed of memory
// (benchmarks/RESULTS.md).
//
// Same math as math::clip_interval + cpu::exp_vec (same polynomial, same rounding of n), so the
// results differ from the portable loop only in the order of the float sums and FMA contraction.
#pragma once

#include <cmath>
#include <cstdint>

#include "cpu_kernels.hpp"

namespace grpokit {
namespace cpu {

// A row's sums for the interval clip (both versions of the loop).
struct IntervalRowSums {
  double sum_v = 0, ratio_sum = 0, ppo_kl = 0, rmin = 0, rmax = 0;
  int64_t outside = 0;  // valid tokens outside the clip interval
  bool bad = false;  // a valid log-ratio is not finite (so is every non-finite ℓ or ℓ_old), or Σ d overflowed
};

}  // namespace cpu
}  // namespace grpokit

#ifdef GRPOKIT_CPU_DISPATCH
#include <immintrin.h>

// GCC 12's min/max intrinsics pass _mm512_undefined_ps() through, which -Wmaybe-uninitialized reports.
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wmaybe-uninitialized"

namespace grpokit {
namespace cpu {

// cpu::exp_vec for 16 lanes: clamp to [−87, 88], x = n·ln2 + f (Cody–Waite), Cephes' degree-6
// polynomial for e^f, times 2^n by vscalefps. n is rounded to nearest even (exp_vec rounds halves away
// from zero: the two differ only when x·log2 e is exactly k + ½, and both are within 2 ulp there).
GRPOKIT_CPU_AVX512 inline __m512 exp_vec_avx512(__m512 x) {
  x = _mm512_min_ps(_mm512_max_ps(x, _mm512_set1_ps(-87.0f)), _mm512_set1_ps(88.0f));
  const __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                        _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
  const __m512 f = _mm512_fmadd_ps(n, _mm512_set1_ps(2.12194440e-4f),
                                   _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x));
  __m512 p = _mm512_set1_ps(1.9875691500e-4f);
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.3981999507e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(8.3334519073e-3f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(4.1665795894e-2f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(1.6666665459e-1f));
  p = _mm512_fmadd_ps(p, f, _mm512_set1_ps(5.0000001201e-1f));
  p = _mm512_add_ps(_mm512_fmadd_ps(_mm512_mul_ps(p, f), f, f), _mm512_set1_ps(1.0f));
  return _mm512_scalef_ps(p, n);
}

// Σ_t [m_t ≠ 0] (a row's valid tokens): 64 mask bytes per k-register test and popcount.
GRPOKIT_CPU_AVX512 inline int64_t count_nonzero_avx512(const uint8_t* m, int64_t len) {
  int64_t n = 0, t = 0;
  for (; t + 64 <= len; t += 64) {
    const __m512i v = _mm512_loadu_si512(m + t);
    n += __builtin_popcountll(_mm512_test_epi8_mask(v, v));
  }
  if (t < len) {
    const __mmask64 live = ~0ull >> (64 - (len - t));
    const __m512i v = _mm512_maskz_loadu_epi8(live, m + t);
    n += __builtin_popcountll(_mm512_mask_test_epi8_mask(live, v, v));
  }
  return n;
}

// Software prefetch 2 KiB (32 lines) ahead of each stream. The hardware prefetchers alone left the row
// loop at ≈ 11 GB/s on arrays beyond the L3 (1024×8192 float32: 9.8 ms); with this, 3.2 ms (≈ 34 GB/s,
// the machine's copy bandwidth), and 25 % faster from the L3. Measured distances 256 B … 4 KiB: 2 KiB best.
GRPOKIT_CPU_AVX512 inline void prefetch(const void* p) {
  _mm_prefetch(static_cast<const char*>(p) + 2048, _MM_HINT_T0);
}

// One row: g[t] = cA·r·[r in the interval]·[log-ratio inside its clamp] at valid tokens, 0 elsewhere;
// the row sums of v = clamp(r, v_lo, v_hi), r and −(ℓ − ℓ_old) over valid tokens; ratio min/max.
// m = nullptr: every token is valid. LOG_CLAMP: whether [log_lo, log_hi] is finite (verl's clamp).
template <bool LOG_CLAMP>
GRPOKIT_CPU_AVX512 IntervalRowSums interval_row_avx512(const float* lp, const float* old, const uint8_t* m,
                                                       int64_t len, float log_lo, float log_hi, float v_lo,
                                                       float v_hi, float cA, float* g) {
  const __m512 llo = _mm512_set1_ps(log_lo), lhi = _mm512_set1_ps(log_hi);
  const __m512 vlo = _mm512_set1_ps(v_lo), vhi = _mm512_set1_ps(v_hi), ca = _mm512_set1_ps(cA);
  __m512 s_v = _mm512_setzero_ps(), s_r = _mm512_setzero_ps(), s_d = _mm512_setzero_ps();
  __m512 rmin = _mm512_set1_ps(INFINITY), rmax = _mm512_set1_ps(-INFINITY);
  int64_t outside = 0;
  for (int64_t t = 0; t < len; t += 16) {
    const int64_t rest = len - t;
    const __mmask16 live = rest >= 16 ? __mmask16(0xFFFF) : __mmask16((1u << rest) - 1u);
    __mmask16 ok = live;
    if (m) {
      const __m128i mb = _mm_maskz_loadu_epi8(live, m + t);
      ok = _mm_mask_test_epi8_mask(live, mb, mb);
    }
    prefetch(lp + t);
    prefetch(old + t);
    prefetch(g + t);
    if (m && (t & 63) == 0) prefetch(m + t);
    const __m512 l = _mm512_maskz_loadu_ps(ok, lp + t), o = _mm512_maskz_loadu_ps(ok, old + t);
    const __m512 d = _mm512_sub_ps(l, o);  // 0 at padding (both loads zeroed)
    __mmask16 inside = 0xFFFF;
    __m512 x = d;
    if constexpr (LOG_CLAMP) {
      inside = _mm512_cmp_ps_mask(d, llo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(d, lhi, _CMP_LE_OQ);
      x = _mm512_min_ps(_mm512_max_ps(d, llo), lhi);
    }
    const __m512 r = exp_vec_avx512(x);
    const __mmask16 in_iv = _mm512_cmp_ps_mask(r, vlo, _CMP_GE_OQ) & _mm512_cmp_ps_mask(r, vhi, _CMP_LE_OQ);
    _mm512_mask_storeu_ps(g + t, live, _mm512_maskz_mul_ps(ok & in_iv & inside, ca, r));
    s_v = _mm512_mask_add_ps(s_v, ok & in_iv, s_v, r);  // v = r inside; the bound outside (added below)
    s_r = _mm512_mask_add_ps(s_r, ok, s_r, r);
    s_d = _mm512_sub_ps(s_d, d);  // a non-finite d (so every non-finite ℓ or ℓ_old) makes the sum so
    rmin = _mm512_mask_min_ps(rmin, ok, rmin, r);
    rmax = _mm512_mask_max_ps(rmax, ok, rmax, r);
    outside += __builtin_popcount(static_cast<unsigned>(ok & static_cast<__mmask16>(~in_iv)));
  }
  // lanes in a fixed order
  alignas(64) float v[5][16];
  _mm512_store_ps(v[0], s_v);
  _mm512_store_ps(v[1], s_r);
  _mm512_store_ps(v[2], s_d);
  _mm512_store_ps(v[3], rmin);
  _mm512_store_ps(v[4], rmax);
  IntervalRowSums out;
  float sv = 0, sr = 0, sd = 0, lo = INFINITY, hi = -INFINITY;
  for (int k = 0; k < 16; ++k) {
    sv += v[0][k];
    sr += v[1][k];
    sd += v[2][k];
    lo = v[3][k] < lo ? v[3][k] : lo;
    hi = v[4][k] > hi ? v[4][k] : hi;
  }
  // outside the interval v is its one finite bound (1 + ε_high for A > 0, 1 − ε_low for A < 0)
  out.sum_v =
      static_cast<double>(sv) +
      (outside > 0 ? static_cast<double>(outside) * static_cast<double>(std::isfinite(v_hi) ? v_hi : v_lo)
                   : 0.0);
  out.ratio_sum = sr;
  out.ppo_kl = sd;
  out.rmin = lo;
  out.rmax = hi;
  out.outside = outside;
  out.bad = !std::isfinite(sd);
  return out;
}

}  // namespace cpu
}  // namespace grpokit

#pragma GCC diagnostic pop
#endif  // GRPOKIT_CPU_DISPATCH
