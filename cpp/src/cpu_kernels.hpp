// Building blocks of the vectorised CPU loops (internal to the CPU engine): 16-bit float loads and
// stores, exps that compilers vectorise without -ffast-math, and run-time ISA dispatch.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>

#include "grpokit/math/strided.hpp"

namespace grpokit {
namespace cpu {

// Independent accumulators per loop: enough for one AVX-512 register of floats, and a fixed order,
// so a sum does not depend on the ISA the loop was compiled for.
constexpr int kLanes = 16;

// AVX-512 and AVX2+FMA versions of a hot loop next to the baseline one, chosen when the library
// loads (GCC function multi-versioning). FMA contraction makes the versions differ in the last
// bits, never more.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__) && defined(__GLIBC__) && \
    !defined(GRPOKIT_NO_CLONES)  // ifunc needs glibc
#define GRPOKIT_CPU_CLONES __attribute__((target_clones("arch=x86-64-v4", "arch=x86-64-v3", "default")))
#define GRPOKIT_CPU_DISPATCH 1
#define GRPOKIT_CPU_AVX512 __attribute__((target("arch=x86-64-v4")))
#define GRPOKIT_CPU_AVX2_CLONES __attribute__((target_clones("arch=x86-64-v3", "default")))
#else
#define GRPOKIT_CPU_CLONES
#endif

#ifdef GRPOKIT_CPU_DISPATCH
// Whether the CPU runs x86-64-v4 (AVX-512 F/BW/DQ/VL) code. GRPOKIT_NO_AVX512=1 in the environment
// (read once) turns the hand-written AVX-512 loops off, so tests can compare them with the portable ones.
inline bool has_avx512() {
  static const bool yes = [] {
    __builtin_cpu_init();
    const char* off = std::getenv("GRPOKIT_NO_AVX512");
    return !(off && *off && *off != '0') && __builtin_cpu_supports("avx512f") &&
           __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq") &&
           __builtin_cpu_supports("avx512vl");
  }();
  return yes;
}
#endif

struct bf16 {
  uint16_t bits;
};

#if defined(__FLT16_MANT_DIG__)
using f16 = _Float16;
#else
struct f16 {
  uint16_t bits;
};
#endif

// The bits of a value read as another type of the same size (C++20's std::bit_cast).
template <class To, class From>
inline To bit_cast(From v) {
  static_assert(sizeof(To) == sizeof(From), "bit_cast: sizes differ");
  To out;
  std::memcpy(&out, &v, sizeof out);
  return out;
}

inline float load(float x) { return x; }
inline double load(double x) { return x; }
inline float load(bf16 x) { return bit_cast<float>(static_cast<uint32_t>(x.bits) << 16); }

template <class Out>
inline Out store(float v);
template <>
inline float store<float>(float v) {
  return v;
}
template <>
inline bf16 store<bf16>(float v) {
  // Round to nearest even; NaN stays a (quiet) NaN.
  const uint32_t u = bit_cast<uint32_t>(v);
  const uint32_t rounded = (u + 0x7fffu + ((u >> 16) & 1u)) >> 16;
  return bf16{static_cast<uint16_t>(v != v ? ((u >> 16) | 0x40u) : rounded)};
}

#if defined(__FLT16_MANT_DIG__)
inline float load(f16 x) { return static_cast<float>(x); }
template <>
inline f16 store<f16>(float v) {
  return static_cast<f16>(v);
}
#else
// Scalar IEEE binary16 conversions for compilers without _Float16.
inline float load(f16 x) {
  const uint32_t h = x.bits, sign = (h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu;
  if (exp == 0x1f) return bit_cast<float>(sign | 0x7f800000u | (man << 13));
  if (exp == 0) return (sign ? -1.0f : 1.0f) * static_cast<float>(man) * 5.9604644775390625e-8f;
  return bit_cast<float>(sign | ((exp + 112) << 23) | (man << 13));
}
template <>
inline f16 store<f16>(float v) {
  const uint32_t u = bit_cast<uint32_t>(v), sign = (u >> 16) & 0x8000u;
  const float a = v < 0 ? -v : v;
  if (v != v) return f16{static_cast<uint16_t>(sign | 0x7e00u)};
  if (a >= 65520.0f) return f16{static_cast<uint16_t>(sign | 0x7c00u)};
  if (a < 6.103515625e-05f) {  // subnormal: multiples of 2^-24, round to nearest even by the FPU
    const float q = a * 16777216.0f;
    const auto m = static_cast<uint32_t>(q + 12582912.0f - 12582912.0f);
    return f16{static_cast<uint16_t>(sign | m)};
  }
  const uint32_t au = bit_cast<uint32_t>(a);
  const uint32_t r = au + 0xfffu + ((au >> 13) & 1u);
  return f16{static_cast<uint16_t>(sign | (((r >> 23) - 112) << 10) | ((r >> 13) & 0x3ffu))};
}
#endif

template <>
inline double store<double>(float v) {
  return v;
}

template <class Out>
inline Out store(double v);
template <>
inline double store<double>(double v) {
  return v;
}

// The dtype the engine reports results in for logits of type In: the compute type.
template <class In>
using Real = math::Compute<In>;

// A constant hidden from the optimiser by an empty asm, for the bounds of clamps in hot loops.
// With a visible constant, GCC threads the clamp's constant arm through the arithmetic after it;
// the resulting branches hold FP operations it will not if-convert (FP traps), and the AVX2 and
// baseline loops stay scalar. Call it outside the loop.
inline float opaque(float v) {
#if defined(__GNUC__) && defined(__x86_64__)
  asm("" : "+x"(v));
#endif
  return v;
}
inline double opaque(double v) {
#if defined(__GNUC__) && defined(__x86_64__)
  asm("" : "+x"(v));
#endif
  return v;
}

// v where x ≥ lo, else 0, in a form the loops vectorise: a select under AVX-512 (kSelect, a masked
// move), else an integer mask (a float select becomes a branch GCC will not if-convert for AVX2).
template <bool kSelect = false>
inline float zero_below(float v, float x, float lo) {
  if constexpr (kSelect) {
    return x < lo ? 0.0f : v;
  } else {
    const uint32_t keep = 0u - static_cast<uint32_t>(!(x < lo));
    return bit_cast<float>(bit_cast<uint32_t>(v) & keep);
  }
}

// Cephes' degree-6 polynomial for e^r, |r| ≤ ln2/2 (the reduced argument of both float exps below).
inline float exp_reduced(float r) {
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  return p * r * r + r + 1.0f;
}

// exp for float without libm calls, written so compilers vectorise it: x = n·ln2 + f, e^f by the
// polynomial, 2^n from the exponent bits. Max relative error ≈ 2 ulp on [−87, 88]; inputs outside
// are clamped (e^−87 ≈ 1.6e−38, e^88 ≈ 1.7e38). The loss's row loops use it (and the double one below).
inline float exp_vec(float x) {
  // two selects, not one nested: GCC 12 made the nested form four compares and two blends
  x = x < -87.0f ? -87.0f : x;
  x = x > 88.0f ? 88.0f : x;
  const float t = x * 1.44269504088896341f;
  // round half away from zero, ±½ with t's sign by bit operations (the same n as t ≥ 0 ? ½ : −½ for
  // every t, −0 and NaN included): a select here made GCC 12 convert both sums and blend the results
  const float half = bit_cast<float>((bit_cast<uint32_t>(t) & 0x80000000u) | 0x3f000000u);
  const int n = static_cast<int>(t + half);
  const float nf = static_cast<float>(n);
  const float f = (x - nf * 0.693359375f) + nf * 2.12194440e-4f;
  const float p = exp_reduced(f);
  union {
    int i;
    float v;
  } scale;
  scale.i = (n + 127) << 23;
  return p * scale.v;
}

// exp for double without libm calls, written so compilers vectorise it: x = n·ln2 + f (n rounded by
// the 1.5·2^52 shift, whose low mantissa bits are n: no double → int64 conversion, which AVX2 lacks;
// ln2 split in two, Cody–Waite), e^f by Cephes' Padé form 1 + 2f·P(f²)/(Q(f²) − f·P(f²)), times 2^n
// built from exponent bits (as 2·2^(n−1), so that n = 1024 stays representable). Within 2 ulp of
// std::exp on [−708, 709.78] (checked against NumPy's exp on 4·10^5 points); 0 below −708 (std::exp's
// values there are under 3.3e−308), +inf above log(DBL_MAX), NaN stays NaN.
inline double exp_vec(double x) {
  constexpr double kShift = 6755399441055744.0;  // 1.5·2^52
  const double xc = x < -708.0 ? -708.0 : (x > 709.78 ? 709.78 : x);
  const double shifted = xc * 1.4426950408889634 + kShift;
  const double n = shifted - kShift;
  const double f = (xc - n * 6.93145751953125e-1) - n * 1.42860682030941723212e-6;
  const double ff = f * f;
  const double p =
      f * ((1.26177193074810590878e-4 * ff + 3.02994407707441961300e-2) * ff + 9.99999999999999999910e-1);
  const double q =
      ((3.00198505138664455042e-6 * ff + 2.52448340349684104192e-3) * ff + 2.27265548208155028766e-1) * ff +
      2.00000000000000000009e0;
  const double e = 1.0 + 2.0 * p / (q - p);
  const double scale =
      bit_cast<double>((bit_cast<uint64_t>(shifted) - bit_cast<uint64_t>(kShift) + 1022u) << 52);
  const double v = (2.0 * e) * scale;
  return x > 709.782712893384 ? double(INFINITY) : (x < -708.0 ? 0.0 : v);
}

// log for float and double without libm calls, written so compilers vectorise it: x = m·2^e with m in
// [√½, √2) from the exponent bits, log m = f − f²/2 + f³·P(f) (float, Cephes' logf) or
// f − f²/2 + f·f²·P(f)/Q(f) (double, Cephes' log), f = m − 1, plus e·ln2 split in two. Within 1 ulp of
// std::log for normal positive x (checked against NumPy on 4·10^5 points); 0 → −inf, +inf → +inf,
// negative or NaN → NaN; subnormal inputs are not supported (their result is not a logarithm).
inline float log_vec(float x) {
  const uint32_t u = bit_cast<uint32_t>(x);
  float e = static_cast<float>(static_cast<int32_t>((u >> 23) & 0xffu) - 126);
  float m = bit_cast<float>((u & 0x007fffffu) | 0x3f000000u);  // [0.5, 1)
  const bool small = m < 0.707106781186547524f;
  e = small ? e - 1.0f : e;
  const float f = (small ? m + m : m) - 1.0f;
  const float z = f * f;
  float p = 7.0376836292e-2f;
  p = p * f - 1.1514610310e-1f;
  p = p * f + 1.1676998740e-1f;
  p = p * f - 1.2420140846e-1f;
  p = p * f + 1.4249322787e-1f;
  p = p * f - 1.6668057665e-1f;
  p = p * f + 2.0000714765e-1f;
  p = p * f - 2.4999993993e-1f;
  p = p * f + 3.3333331174e-1f;
  float y = f * z * p + e * -2.12194440e-4f - 0.5f * z;
  const float r = (f + y) + e * 0.693359375f;
  return x > 0.0f ? (x < INFINITY ? r : x) : (x == 0.0f ? -INFINITY : NAN);
}
inline double log_vec(double x) {
  const uint64_t u = bit_cast<uint64_t>(x);
  double e = static_cast<double>(static_cast<int64_t>((u >> 52) & 0x7ffu) - 1022);
  double m = bit_cast<double>((u & 0x000fffffffffffffull) | 0x3fe0000000000000ull);  // [0.5, 1)
  const bool small = m < 0.70710678118654752440;
  e = small ? e - 1.0 : e;
  const double f = (small ? m + m : m) - 1.0;
  const double z = f * f;
  const double p =
      ((((1.01875663804580931796e-4 * f + 4.97494994976747001425e-1) * f + 4.70579119878881725854e0) * f +
        1.44989225341610930846e1) *
           f +
       1.79368678507819816313e1) *
          f +
      7.70838733755885391666e0;
  const double q =
      ((((f + 1.12873587189167450590e1) * f + 4.52279145837532221105e1) * f + 8.29875266912776603211e1) * f +
       7.11544750618563894466e1) *
          f +
      2.31251620126765340583e1;
  const double y = f * (z * p / q) - e * 2.121944400546905827679e-4 - 0.5 * z;
  const double r = (f + y) + e * 0.693359375;
  return x > 0.0 ? (x < double(INFINITY) ? r : x) : (x == 0.0 ? -double(INFINITY) : double(NAN));
}

// exp(x) is 0 in float32 below this (the smallest normal float's logarithm).
constexpr float kExpLo = -87.3365478515625f;

// exp(x) for x ≤ 0 in float32, branch-free so that loops over it vectorise: Cody–Waite reduction
// x = n·ln2 + r and Cephes' degree-6 polynomial for exp(r) (about 1 ulp); exactly 0 below lo
// (pass opaque(kExpLo) from outside the loop); NaN stays NaN.
template <bool kSelect = false>
inline float exp_nonpositive(float x, float lo = kExpLo) {
  const float xc = x < lo ? lo : x;
  // round(x / ln2) by the 1.5·2^23 trick; its low mantissa bits are n itself, so 2^n is built with
  // integer operations only (no float → int conversion, which is undefined for NaN).
  const float shifted = xc * 1.44269504088896341f + 12582912.0f;
  const float n = shifted - 12582912.0f;
  const float r = (xc - n * 0.693359375f) + n * 2.12194440e-4f;
  const float value =
      exp_reduced(r) * bit_cast<float>((bit_cast<uint32_t>(shifted) - 0x4B400000u + 127u) << 23);
  return zero_below<kSelect>(value, x, lo);
}

}  // namespace cpu
}  // namespace grpokit
