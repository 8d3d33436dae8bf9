// Selections over one row of logits for the sampler's truncation (internal to the CPU engine): the
// k-th largest value (top-k) and the nucleus boundary (top-p), each by a most-significant-digit radix
// select over order-preserving integer keys of the values: a fixed number of passes over the row
// (3 for float32 math, 6 for float64), a 2048-bin histogram on the stack, no sort and no copy of
// the row. Only entries whose key matches the digits chosen so far are binned after the first pass.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "grpokit/math/sampler.hpp"
#include "logprobs_rows.hpp"

namespace grpokit {
namespace rows {

// Keys, digits and the choice of a bin: grpokit/math/sampler.hpp (shared with the CUDA kernels).
template <class F>
using Keys = math::RadixKeys<F>;

// Walks the digits from the top: level(shift, width, prefix, mask) bins the entries whose key
// matches prefix under mask by bits [shift, shift + width) and returns the chosen digit.
template <class K, class Level>
inline K radix_walk(Level&& level) {
  math::RadixWalk<K> w;
  while (!w.done()) w.choose(static_cast<int>(level(w.shift(), w.width(), w.prefix, w.mask)));
  return w.prefix;
}

// The k-th largest value of the row (1 ≤ k ≤ n), counting ties: {x ≥ result} holds ≥ k entries.
template <class F, class In>
F kth_largest(const In* x, int64_t n, int64_t k) {
  using KT = Keys<F>;
  using K = typename KT::K;
  int64_t hist[math::kSelectBins];
  const K key = radix_walk<K>([&](int shift, int width, K prefix, K mask) -> K {
    const int bins = 1 << width;
    std::memset(hist, 0, sizeof(int64_t) * bins);
    for (int64_t i0 = 0; i0 < n; i0 += kLanes) {
      const int len = n - i0 < kLanes ? static_cast<int>(n - i0) : kLanes;
      K u[kLanes];
      for (int j = 0; j < len; ++j) u[j] = KT::of(static_cast<F>(load(x[i0 + j])));
      for (int j = 0; j < len; ++j)
        if ((u[j] & mask) == prefix) ++hist[(u[j] >> shift) & K(bins - 1)];
    }
    return K(math::kth_largest_bin(hist, bins, k));
  });
  return KT::value(key);
}

// The nucleus boundary among the candidates (cand(x) true; an upper set of values): with masses
// e_v = exp((x_v − m)/τ) and S their sum, the largest value w whose inclusive mass Σ_{x ≥ w} e reaches
// p·S (≥ for vLLM, > for SGLang). Every candidate ≥ w is kept. Where rounding leaves no bucket
// reaching it, the lowest one is taken (all of it kept).
template <class F, class In, class Cand>
F nucleus_threshold(const In* x, int64_t n, Cand&& cand, F m, F inv_t, double p, bool strictly_above) {
  using KT = Keys<F>;
  using K = typename KT::K;
  double mass[math::kSelectBins];
  math::NucleusScan scan;
  const K key = radix_walk<K>([&](int shift, int width, K prefix, K mask) -> K {
    const int bins = 1 << width;
    std::memset(mass, 0, sizeof(double) * bins);
    // First level: blocks of kLanes, keys, candidacy and exps computed for all (vectorisable), then
    // binned; later levels: only the few entries matching the prefix reach the exp.
    for (int64_t i0 = 0; i0 < n && mask != 0; ++i0) {
      const F v = static_cast<F>(load(x[i0]));
      const K u = KT::of(v);
      if ((u & mask) != prefix || !cand(v)) continue;
      F d = math::clamp_exp_arg((v - m) * inv_t);
      d = d > F(0) ? F(0) : d;
      mass[(u >> shift) & K(bins - 1)] += static_cast<double>(exp_of(d));
    }
    for (int64_t i0 = 0; i0 < n && mask == 0; i0 += kLanes) {
      const int len = n - i0 < kLanes ? static_cast<int>(n - i0) : kLanes;
      K u[kLanes];
      F e[kLanes];
      bool ok[kLanes];
      for (int k = 0; k < len; ++k) {
        const F v = static_cast<F>(load(x[i0 + k]));
        u[k] = KT::of(v);
        ok[k] = (u[k] & mask) == prefix && cand(v);
        F d = math::clamp_exp_arg((v - m) * inv_t);
        d = d > F(0) ? F(0) : d;
        e[k] = exp_of(d);
      }
      for (int k = 0; k < len; ++k)
        if (ok[k]) mass[(u[k] >> shift) & K(bins - 1)] += static_cast<double>(e[k]);
    }
    return K(math::nucleus_bin(mass, bins, p, strictly_above, scan));
  });
  return KT::value(key);
}

// Sums over a row for the kept set {x ≥ t and (x − m)/τ ≥ lmp}: Σ e over all entries and over the
// kept ones, Σ e·d over the kept ones, and the smallest kept value (e = exp(d), d = (x − m)/τ clamped).
struct KeptSums {
  double all = 0, kept = 0, dot = 0;
  double lo = INFINITY;
};

// float32 math: kLanes float lanes per kChunk entries (the selects vectorise), folded into float64.
template <class In>
GRPOKIT_CPU_CLONES void kept_sums_f32(const In* x, int64_t n, float m, float it, float t, float lmp,
                                      KeptSums& ks) {
  const float dmin = cpu::opaque(math::min_exp_arg<float>()), elo = cpu::opaque(cpu::kExpLo);
  for (int64_t c0 = 0; c0 < n; c0 += kChunk) {
    const int64_t len = n - c0 < kChunk ? n - c0 : kChunk, full = len - len % kLanes;
    const In* xc = x + c0;
    float sa[kLanes], sk[kLanes], sd[kLanes], mn[kLanes];
    for (int k = 0; k < kLanes; ++k) sa[k] = 0.0f, sk[k] = 0.0f, sd[k] = 0.0f, mn[k] = INFINITY;
    for (int64_t i = 0; i < full; i += kLanes) {
      float e[kLanes], ek[kLanes], dk[kLanes], vk[kLanes];
      for (int k = 0; k < kLanes; ++k) {
        const float v = load(xc[i + k]), raw = (v - m) * it;
        float d = raw < dmin ? dmin : raw;
        d = d > 0.0f ? 0.0f : d;
        e[k] = cpu::exp_nonpositive(d, elo);
        const bool keep = math::kept(v, raw, t, lmp);
        ek[k] = keep ? e[k] : 0.0f;
        dk[k] = keep ? e[k] * d : 0.0f;
        vk[k] = keep ? v : INFINITY;
      }
      for (int k = 0; k < kLanes; ++k) {
        sa[k] += e[k], sk[k] += ek[k], sd[k] += dk[k];
        mn[k] = vk[k] < mn[k] ? vk[k] : mn[k];
      }
    }
    for (int64_t i = full; i < len; ++i) {
      const float v = load(xc[i]), raw = (v - m) * it;
      float d = raw < dmin ? dmin : raw;
      d = d > 0.0f ? 0.0f : d;
      const float e = cpu::exp_nonpositive(d, elo);
      sa[0] += e;
      if (math::kept(v, raw, t, lmp)) sk[0] += e, sd[0] += e * d, mn[0] = v < mn[0] ? v : mn[0];
    }
    for (int k = 0; k < kLanes; ++k) {
      ks.all += sa[k], ks.kept += sk[k], ks.dot += sd[k];
      ks.lo = mn[k] < ks.lo ? mn[k] : ks.lo;
    }
  }
}

// float64 math.
template <class In>
void kept_sums_f64(const In* x, int64_t n, double m, double it, double t, double lmp, KeptSums& ks) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = static_cast<double>(load(x[i])), raw = (v - m) * it;
    double d = math::clamp_exp_arg(raw);
    d = d > 0.0 ? 0.0 : d;
    const double e = std::exp(d);
    ks.all += e;
    if (math::kept(v, raw, t, lmp)) ks.kept += e, ks.dot += e * d, ks.lo = v < ks.lo ? v : ks.lo;
  }
}

}  // namespace rows
}  // namespace grpokit
