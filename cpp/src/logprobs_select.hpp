// Selections over one row of logits for the sampler's truncation (internal to the CPU engine): the
// k-th largest value (top-k) and the nucleus boundary (top-p), without a sort of the row.
//
// 1. Bounds from group maxima (one vectorised pass): the row is split into G interleaved groups
//    (G = row length / 8 rounded down to a power of two, at most kMaxGroups); any j group maxima are j
//    distinct entries, so the k-th largest group maximum is ≤ the row's k-th largest value, and once the
//    largest j group maxima hold the nucleus' target mass, the nucleus boundary is ≥ the smallest of them.
//    For top-k the G maxima are folded into 8k..16k coarser groups first (a looser but valid bound).
// 2. The entries at or above the bound, copied into a per-thread buffer (blocks of kBlock entries
//    whose vectorised maximum is below it are skipped): typically a few times k, or the nucleus.
// 3. The exact selections over the buffer: the k-th largest by nth_element, the nucleus boundary by
//    a most-significant-digit radix walk over order-preserving keys (8-bit digits) that keeps only
//    the chosen bucket's entries at each digit.
// Where no bound applies (k > G, a row shorter than 8·kMinGroups, a flat row whose nucleus outgrows the group
// maxima) the buffer is the whole row: the same selections, linear in V.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <type_traits>
#include <vector>

#include "grpokit/math/sampler.hpp"
#include "logprobs_rows.hpp"

namespace grpokit {
namespace rows {

// Keys that order like the values: grpokit/math/sampler.hpp (shared with the CUDA kernels).
template <class F>
using Keys = math::RadixKeys<F>;

constexpr int kMinGroups = 256, kMaxGroups = 2048;  // group maxima for the bounds; k ≤ G gets one
constexpr int kBlock = 64;  // entries per skip test of the gather

// Whether an inclusive mass reaches the nucleus' target: ≥ (vLLM: mass above < p) or > (SGLang: ≤ p).
inline bool reaches(double inclusive, double target, bool strict) {
  return strict ? inclusive > target : inclusive >= target;
}

// The sampler's mass of a value: e = exp(d), d = (v − m)/τ clamped to [min_exp_arg, 0].
template <class F>
inline F mass_of(F v, F m, F it) {
  F d = math::clamp_exp_arg((v - m) * it);
  return exp_of(d > F(0) ? F(0) : d);
}

// g[j] = max of x[j], x[j + G], x[j + 2·G], ... (n ≥ G, G a multiple of kLanes).
template <class F, class In>
GRPOKIT_CPU_CLONES void group_max(const In* x, int64_t n, int G, F* g) {
  for (int j = 0; j < G; ++j) g[j] = -INFINITY;
  const int64_t full = n - n % G;
  for (int64_t i = 0; i < full; i += G)
    for (int j = 0; j < G; ++j) {
      const F v = static_cast<F>(load(x[i + j]));
      g[j] = g[j] < v ? v : g[j];
    }
  for (int64_t i = full; i < n; ++i) {
    const F v = static_cast<F>(load(x[i]));
    g[i - full] = g[i - full] < v ? v : g[i - full];
  }
}

// Copies the entries ≥ b (as F) to out; returns how many.
template <class F, class In>
GRPOKIT_CPU_CLONES int64_t gather_at_least(const In* x, int64_t n, F b, F* out) {
  if (!(b > -INFINITY)) {  // no bound: the whole row
    for (int64_t i = 0; i < n; ++i) out[i] = static_cast<F>(load(x[i]));
    return n;
  }
  int64_t c = 0, i0 = 0;
  for (; i0 + kBlock <= n; i0 += kBlock) {
    int32_t hit = 0;  // an integer OR of the comparisons: the shape GCC vectorises
    for (int j = 0; j < kBlock; ++j) hit |= static_cast<int32_t>(static_cast<F>(load(x[i0 + j])) >= b);
    if (!hit) continue;
    for (int j = 0; j < kBlock; ++j) {
      const F v = static_cast<F>(load(x[i0 + j]));
      if (v >= b) out[c++] = v;
    }
  }
  for (; i0 < n; ++i0) {
    const F v = static_cast<F>(load(x[i0]));
    if (v >= b) out[c++] = v;
  }
  return c;
}

// e[i] = mass_of(v[i]) for c values (vectorised: the clamps' bounds opaque, see cpu::opaque).
template <class F>
GRPOKIT_CPU_CLONES void masses(const F* v, int64_t c, F m, F it, F* e) {
  if constexpr (std::is_same<F, double>::value) {
    for (int64_t i = 0; i < c; ++i) e[i] = mass_of(v[i], m, it);
  } else {
    const float dmin = cpu::opaque(math::min_exp_arg<float>()), elo = cpu::opaque(cpu::kExpLo);
    for (int64_t i = 0; i < c; ++i) {
      float d = (v[i] - m) * it;
      d = d < dmin ? dmin : d;
      d = d > 0.0f ? 0.0f : d;
      e[i] = cpu::exp_nonpositive(d, elo);
    }
  }
}

// Lower bounds on the kept values from the group maxima (−inf where none applies): bk ≤ the k-th
// largest value (k in [1, G]); bp ≤ the nucleus boundary of the whole row for a target mass
// (target ≥ 0; m the raw maximum, it = 1/τ).
template <class F>
struct Bounds {
  F bk = -INFINITY, bp = -INFINITY;
};

template <class F, class In>
Bounds<F> group_bounds(const In* x, int64_t n, F m, F it, int64_t k, double target, bool strict) {
  Bounds<F> b;
  int G = kMaxGroups;
  while (G > kMinGroups && int64_t(8) * G > n) G /= 2;
  const bool want_k = k > 0 && k <= G, want_p = target >= 0.0;
  if (int64_t(8) * G > n || !(want_k || want_p)) return b;  // short rows: the buffer is the row
  F g[kMaxGroups];
  group_max(x, n, G, g);
  if (want_k) {
    // the k-th largest of Gk ≥ 8·k coarser groups (positions ≡ j mod Gk, folded from the G maxima): a
    // slightly looser bound, but nth_element's mispredicted comparisons shrink with the count
    int Gk = G;
    while (Gk > kMinGroups && Gk >= 16 * k) Gk /= 2;
    F f[kMaxGroups];
    std::copy(g, g + Gk, f);
    for (int i = Gk; i < G; i += Gk)
      for (int j = 0; j < Gk; ++j) f[j] = f[j] < g[i + j] ? g[i + j] : f[j];
    std::nth_element(f, f + (k - 1), f + Gk, std::greater<F>());
    b.bk = f[k - 1];
  }
  if (want_p) {  // the group maxima from the largest down until their mass reaches the target
    F e[kMaxGroups];
    masses(g, G, m, it, e);
    double all = 0.0;
    for (int j = 0; j < G; ++j) all += static_cast<double>(e[j]);
    if (!reaches(all, target, strict)) return b;
    // the largest J of them in order, J = 64, 256, ... up to G, until their prefix reaches it
    for (int J = std::min(64, G), done = 0;; J = std::min(4 * J, G)) {
      std::nth_element(g + done, g + (J - 1), g + G, std::greater<F>());
      std::sort(g + done, g + J, std::greater<F>());
      double acc = 0.0;
      for (int j = 0; j < J; ++j) {
        acc += static_cast<double>(mass_of(g[j], m, it));
        if (reaches(acc, target, strict)) {
          b.bp = g[j];
          return b;
        }
      }
      if (J == G) break;
      done = J;
    }
  }
  return b;
}

// The k-th largest of the c values v (1 ≤ k ≤ c), counting ties; reorders v.
template <class F>
F kth_largest(F* v, int64_t c, int64_t k) {
  std::nth_element(v, v + (k - 1), v + c, std::greater<F>());
  return v[k - 1];
}

// One step of the nucleus walk: bins the c entries by bin(v) (monotone in v, in [0, bins)), finds the
// highest bucket whose inclusive mass (above: the mass of the entries above those in play) reaches
// the target, adds the buckets above it to above and moves its entries to the front. Returns their
// count, or −1 when no bucket reaches the target.
template <class F, class Bin>
int64_t nucleus_step(F* v, F* e, int64_t c, int bins, Bin&& bin, double target, bool strict, double& above,
                     double* mass) {
  std::fill(mass, mass + bins, 0.0);
  for (int64_t i = 0; i < c; ++i) mass[bin(v[i])] += static_cast<double>(e[i]);
  int chosen = -1;
  for (int b = bins - 1; b >= 0; --b) {
    if (mass[b] == 0.0) continue;
    if (reaches(above + mass[b], target, strict)) {
      chosen = b;
      break;
    }
    above += mass[b];
  }
  if (chosen < 0) return -1;
  int64_t kept = 0;
  for (int64_t i = 0; i < c; ++i)
    if (bin(v[i]) == chosen) v[kept] = v[i], e[kept++] = e[i];
  return kept;
}

// The nucleus boundary among the c values v with masses e: the largest value w whose inclusive mass
// Σ_{v ≥ w} e reaches target (see reaches). Every value ≥ w is kept, ties included. A walk over 8-bit
// digits of order-preserving keys; where rounding (or an incomplete buffer) leaves no bucket reaching
// the target, the smallest value of the entries still in play is returned (all of them kept).
// Reorders and overwrites v and e.
template <class F>
F nucleus_boundary(F* v, F* e, int64_t c, double target, bool strict) {
  using KT = Keys<F>;
  using K = typename KT::K;
  double mass[256];
  double above = 0.0;
  for (int shift = 8 * static_cast<int>(sizeof(K)) - 8; shift >= 0 && c > 1; shift -= 8) {
    auto bin = [=](F x) { return static_cast<int>((KT::of(x) >> shift) & K(255)); };
    const int64_t kept = nucleus_step(v, e, c, 256, bin, target, strict, above, mass);
    if (kept < 0) return *std::min_element(v, v + c);
    c = kept;
  }
  return c > 0 ? v[0] : F(-INFINITY);
}

// Per-thread buffers of a row's candidate values (vals) and the selections' scratch (work, mass).
template <class F>
struct RowBuffers {
  std::vector<F> vals, work, mass;
};

template <class F>
RowBuffers<F>& row_buffers(int64_t n) {
  thread_local RowBuffers<F> b;
  if (static_cast<int64_t>(b.vals.size()) < n) {
    b.vals.resize(n);
    b.work.resize(n);
    b.mass.resize(n);
  }
  return b;
}

// Sums over the kept entries {v ≥ t and (v − m)/τ ≥ lmp} of c candidate values: how many, Σ e, Σ e·d
// and the smallest kept value (e = exp(d), d = (v − m)/τ clamped).
struct KeptSums {
  int64_t count = 0;
  double kept = 0, dot = 0;
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
    float sk[kLanes], sd[kLanes], mn[kLanes];
    float nk[kLanes];  // counts: exact in float below 2^24
    for (int k = 0; k < kLanes; ++k) sk[k] = 0.0f, sd[k] = 0.0f, mn[k] = INFINITY, nk[k] = 0.0f;
    for (int64_t i = 0; i < full; i += kLanes) {
      float ek[kLanes], dk[kLanes], vk[kLanes], ck[kLanes];
      for (int k = 0; k < kLanes; ++k) {
        const float v = xc[i + k], raw = (v - m) * it;
        float d = raw < dmin ? dmin : raw;
        d = d > 0.0f ? 0.0f : d;
        const float e = cpu::exp_nonpositive(d, elo);
        // integer masks rather than float selects: the AVX2 and baseline loops vectorise
        const uint32_t keep = 0u - static_cast<uint32_t>((v >= t) & (raw >= lmp));
        ek[k] = cpu::bit_cast<float>(cpu::bit_cast<uint32_t>(e) & keep);
        dk[k] = cpu::bit_cast<float>(cpu::bit_cast<uint32_t>(e * d) & keep);
        vk[k] = cpu::bit_cast<float>((cpu::bit_cast<uint32_t>(v) & keep) |
                                     (cpu::bit_cast<uint32_t>(INFINITY) & ~keep));
        ck[k] = cpu::bit_cast<float>(cpu::bit_cast<uint32_t>(1.0f) & keep);
      }
      for (int k = 0; k < kLanes; ++k) {
        sk[k] += ek[k], sd[k] += dk[k], nk[k] += ck[k];
        mn[k] = vk[k] < mn[k] ? vk[k] : mn[k];
      }
    }
    for (int64_t i = full; i < len; ++i) {
      const float v = xc[i], raw = (v - m) * it;
      float d = raw < dmin ? dmin : raw;
      d = d > 0.0f ? 0.0f : d;
      if (v >= t && raw >= lmp) {
        const float e = cpu::exp_nonpositive(d, elo);
        sk[0] += e, sd[0] += e * d, mn[0] = v < mn[0] ? v : mn[0], nk[0] += 1.0f;
      }
    }
    for (int k = 0; k < kLanes; ++k) {
      ks.kept += sk[k], ks.dot += sd[k], ks.count += static_cast<int64_t>(nk[k]);
      ks.lo = mn[k] < ks.lo ? mn[k] : ks.lo;
    }
  }
}

// float64 math.
inline void kept_sums_f64(const double* x, int64_t n, double m, double it, double t, double lmp,
                          KeptSums& ks) {
  for (int64_t i = 0; i < n; ++i) {
    const double v = x[i], raw = (v - m) * it;
    if (!(v >= t && raw >= lmp)) continue;
    double d = math::clamp_exp_arg(raw);
    d = d > 0.0 ? 0.0 : d;
    const double e = std::exp(d);
    ks.kept += e, ks.dot += e * d, ks.lo = v < ks.lo ? v : ks.lo, ++ks.count;
  }
}

}  // namespace rows
}  // namespace grpokit
