// The sampler's truncation rules (docs/logprobs.md, "Sampler-faithful log-probabilities"), shared by
// the CPU engine (cpp/src/logprobs_select.hpp, logprobs_sampler.cpp) and the CUDA kernels
// (cuda/logprobs_sampler.cu): the radix selection's keys, digits and bin choices for the k-th largest
// value (top-k) and the nucleus boundary (top-p), which rows truncate at all, the kept set's
// predicate, its log-probability terms, and one element of the kept-set gradient. The engines own
// the loops (how a row is read and a histogram is filled); the rules are here.
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>
#include <type_traits>

#include "grpokit/config.hpp"

namespace grpokit {
namespace math {

// Order-preserving unsigned keys of float / double values (−0 just below +0; the callers compare
// values, so both are kept).
template <class F>
struct RadixKeys {
  using K = typename std::conditional<sizeof(F) == sizeof(double), uint64_t, uint32_t>::type;
  static constexpr K kSign = K(1) << (8 * sizeof(K) - 1);
  GRPOKIT_HD static K of(F v) {
    K u;
    memcpy(&u, &v, sizeof u);
    return (u & kSign) ? ~u : (u | kSign);
  }
  GRPOKIT_HD static F value(K k) {
    const K u = (k & kSign) ? (k & ~kSign) : ~k;
    F v;
    memcpy(&v, &u, sizeof v);
    return v;
  }
};

// Bits per radix digit: 2048 bins, 3 levels for float32 keys, 6 for float64.
constexpr int kSelectDigitBits = 11;
constexpr int kSelectBins = 1 << kSelectDigitBits;

// The most-significant-digit walk over keys of type K: at each level the entries whose key matches
// the digits chosen so far (matches) are binned by the next digit (bin), and the caller chooses one.
template <class K>
struct RadixWalk {
  K prefix = 0, mask = 0;
  int top = 8 * sizeof(K);  // bits not yet chosen

  GRPOKIT_HD bool done() const { return top <= 0; }
  GRPOKIT_HD int width() const { return top < kSelectDigitBits ? top : kSelectDigitBits; }
  GRPOKIT_HD int shift() const { return top - width(); }
  GRPOKIT_HD int bins() const { return 1 << width(); }
  GRPOKIT_HD bool first() const { return mask == 0; }
  GRPOKIT_HD bool matches(K u) const { return (u & mask) == prefix; }
  GRPOKIT_HD int bin(K u) const { return static_cast<int>((u >> shift()) & K(bins() - 1)); }
  GRPOKIT_HD void choose(int digit) {
    prefix |= K(digit) << shift();
    mask |= K(bins() - 1) << shift();
    top -= width();
  }
};

// Top-k: the bin holding the k-th largest of the binned entries, scanning from the top; k becomes its
// rank within that bin. Ties count: {x ≥ the k-th largest} holds ≥ k entries.
template <class C>
GRPOKIT_HD int kth_largest_bin(const C* count, int bins, int64_t& k) {
  for (int b = bins - 1; b > 0; --b) {
    if (k <= static_cast<int64_t>(count[b])) return b;
    k -= static_cast<int64_t>(count[b]);
  }
  return 0;
}

// Top-p: with masses e_v = exp((x_v − m)/τ) of the candidates and S their sum, the boundary is the
// largest value w whose inclusive mass Σ_{x ≥ w} e reaches p·S (≥ for vLLM, > for SGLang: strictly).
// `above` is the mass of the bins above the current prefix; `target` is set at the first level (from
// the total of its bins). Where rounding leaves no bin reaching it, the lowest nonempty one is taken
// (all of it kept).
struct NucleusScan {
  double above = 0.0, target = -1.0;
};

template <class M>
GRPOKIT_HD int nucleus_bin(const M* mass, int bins, double p, bool strictly, NucleusScan& s) {
  if (s.target < 0) {
    double total = 0.0;
    for (int b = 0; b < bins; ++b) total += static_cast<double>(mass[b]);
    s.target = p * total;
  }
  int lowest = -1;
  for (int b = bins - 1; b >= 0; --b) {
    if (mass[b] == M(0)) continue;
    lowest = b;
    const double inclusive = s.above + static_cast<double>(mass[b]);
    if (strictly ? inclusive > s.target : inclusive >= s.target) return b;
    s.above = inclusive;
  }
  if (lowest < 0) return 0;
  s.above -= static_cast<double>(mass[lowest]);  // the mass strictly above the chosen bin
  return lowest;
}

// One row's sampler parameters (off: k = 0, p = 1, min_p = 0) and whether they truncate a row of V.
struct SamplerRow {
  int64_t k = 0;
  double p = 1.0, min_p = 0.0;

  GRPOKIT_HD bool top_k_on(int64_t vocab) const { return k > 0 && k < vocab; }
  GRPOKIT_HD bool on(int64_t vocab) const { return top_k_on(vocab) || p < 1.0 || min_p > 0.0; }
  // min-p compares p_v with min_p · p_max, i.e. d_v = (x_v − m)/τ with log(min_p); −inf when off.
  template <class F>
  GRPOKIT_HD F log_min_p() const {
    return min_p > 0.0 ? static_cast<F>(log(min_p)) : F(-INFINITY);
  }
};

// The kept set {v : x_v ≥ t and d_v ≥ log_min_p} (t: the larger of the top-k and top-p thresholds):
// min-p and top-k keep upper sets, so the set is described by its smallest logit (keep_min).
template <class F>
GRPOKIT_HD bool kept(F x, F d_raw, F t, F log_min_p) {
  return x >= t && d_raw >= log_min_p;
}

// What a row's forward reports from Σ e over the row (all), over the kept set (kept) and Σ e·d over
// the kept set (dot), e = exp(d) relative to the raw maximum.
struct KeptTerms {
  double log_s = 0.0;     // log Σ_kept exp(d)
  double log_mass = 0.0;  // log Σ_kept p (≤ 0; exactly 0 when everything is kept)
  double entropy = 0.0;   // of the kept, renormalised distribution
};

GRPOKIT_HD KeptTerms kept_terms(double all, double kept_sum, double dot) {
  KeptTerms k;
  k.log_s = log(kept_sum);
  k.log_mass = kept_sum < all ? log(kept_sum / all) : 0.0;
  const double h = k.log_s - dot / kept_sum;
  k.entropy = h > 0.0 ? h : 0.0;
  return k;
}

// Whether ids at(begin) < … < at(end − 1) hold v: a binary search (exact replay's kept ids; `at` reads
// one id of the caller's array).
template <class At>
GRPOKIT_HD bool ascending_holds(const At& at, int64_t begin, int64_t end, int64_t v) {
  while (begin < end) {
    const int64_t mid = begin + (end - begin) / 2, u = at(mid);
    if (u == v) return true;
    if (u < v)
      begin = mid + 1;
    else
      end = mid;
  }
  return false;
}

// One element of the logits gradient under truncation, with the kept set held fixed:
//   ∂L/∂x_v = −(1/τ)·[a·q_v + b·r_v·(log r_v + H)]   (+ a/τ at the target, added by the caller)
// p the full softmax, q the kept one (q = p / Σ_kept p on the kept set, 0 elsewhere), r the
// distribution the entropy is of. a is 0 where the target lies outside the kept set (logp = −inf).
template <class F>
struct SamplerGrad {
  F ca, cb;  // a/τ, b/τ
  F cq, lm;  // exp(−log_mass), log_mass
  F h;       // the saved entropy
  bool over_kept;

  GRPOKIT_HD F element(F p, F d, bool in_kept) const {
    return element_q(p, d, in_kept ? p * cq : F(0), d - lm, in_kept);
  }
  // The same from q and lq = log q given (exact replay: a kept set without the row's maximum can
  // hold q ≫ p, where p underflows or 1/Σ_kept p overflows).
  GRPOKIT_HD F element_q(F p, F d, F q, F lq, bool in_kept) const {
    if (over_kept) return in_kept && q > F(0) ? -q * (ca + cb * (lq + h)) : F(0);
    return -(ca * q + cb * p * (d + h));
  }
};

}  // namespace math
}  // namespace grpokit
