// M2PO's selection (AReaL m2_threshold; docs/losses.md), one algorithm for both engines: a radix
// selection on the bits of the valid tokens' moments m = (log r)² (math::m2po_moment).
//
// Sorted in decreasing order v_0 ≥ … ≥ v_{n−1}, AReaL drops the ranks below i*, the least i ≤ n − 1
// whose rest (the n − i smallest) has a mean under the threshold (i* = n − 1 if none has). grpokit keeps
// every token with m ≤ v_{i*} (ties with the first kept token stay). P(i) = "rank i's rest passes or
// i ≥ n − 1" is monotone, so the search is for j* = i* − 1, the last dropped rank.
//
// Moments are ≥ 0, so they order like their bit patterns (keys). Each pass histograms one digit of the
// keys in the current bucket (the keys sharing the bits fixed so far): a count and an exact sum per bin.
// Scanning the bins from the bottom, the rest of each bin's first rank is known (the bin, the bins below
// and everything below the bucket): the first bin whose rest fails holds j*, and becomes the bucket.
// Pass 0's digit is the exponent, so one bucket's moments are integer significands M times one power of
// two and their sums are exact 128-bit integers: the answer does not depend on the order of the tokens
// (nor on the threads or atomics that summed them). After the last digit the bucket is one value v;
// j*'s successor is tied with it if the rest at the group's last rank passes. The CPU engine calls
// scan between its histogram passes (cpp/src/loss_m2po.cpp); written for the device too (GRPOKIT_HD,
// integer counts and sums), for a CUDA engine that does not take M2PO yet (cuda/loss.cu).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

#include "grpokit/config.hpp"
#include "grpokit/math/loss_passes.hpp"

namespace grpokit {
namespace math {
namespace m2po {

constexpr int kDigitBits = 11, kBins = 1 << kDigitBits;  // pass 0: the 11 exponent bits
constexpr int kPasses = 6;                                // 11 + 4 × 11 + 8 = 63 bits (the sign is 0)

GRPOKIT_HD int shift_of(int pass) {  // the lowest bit of pass `pass`'s digit
  const int sh = 63 - kDigitBits * (pass + 1);
  return sh > 0 ? sh : 0;
}
GRPOKIT_HD uint64_t key_of(double m) {
  uint64_t k;
  memcpy(&k, &m, sizeof k);
  return k;
}
GRPOKIT_HD double value_of(uint64_t k) {
  double m;
  memcpy(&m, &k, sizeof m);
  return m;
}
GRPOKIT_HD int digit_of(uint64_t key, int pass) {
  return static_cast<int>((key >> shift_of(pass)) & (kBins - 1));
}
// The key is in the bucket of `prefix` before pass `pass` (every key is before pass 0).
GRPOKIT_HD bool in_bucket(uint64_t key, uint64_t prefix, int pass) {
  return pass == 0 || (key >> shift_of(pass - 1)) == (prefix >> shift_of(pass - 1));
}
// m = M · 2^(max(e, 1) − 1075), e the exponent bits; inf has M = 2^52 (its bin's value is inf).
GRPOKIT_HD uint64_t significand(uint64_t key) {
  const uint64_t e = key >> 52;
  return (key & ((uint64_t(1) << 52) - 1)) | (e != 0 ? uint64_t(1) << 52 : 0);
}

struct Sum128 {  // an exact sum of significands (unsigned long long: CUDA's 64-bit atomics take it)
  unsigned long long hi, lo;
};
GRPOKIT_HD void add(Sum128& s, unsigned long long M) {
  s.lo += M;
  s.hi += s.lo < M ? 1 : 0;
}
// A bin's sum in double (the same two roundings on both engines), its moments of exponent bits e.
GRPOKIT_HD double sum_value(const Sum128& s, uint64_t e) {
  if (e == 2047) return (s.hi | s.lo) != 0 ? INFINITY : 0.0;
  const double v = static_cast<double>(s.hi) * 18446744073709551616.0 + static_cast<double>(s.lo);
  return ldexp(v, static_cast<int>(e != 0 ? e : 1) - 1075);
}

// P at the rank whose rest is `rest` over n_rest tokens (n_rest ≤ 1: rank ≥ n − 1, where AReaL stops).
GRPOKIT_HD bool rest_passes(const LossSpec& s, double rest, double n_rest) {
  return n_rest <= 1.0 || m2po_rest_passes(s, rest, n_rest);
}

enum State : int { kSearching = 0, kKeepAll = 1, kFound = 2 };

struct Cut {
  double rest = 0.0, n_rest = 0.0;  // the moments below the bucket (all kept): sum, count
  double n_valid = 0.0;             // the valid tokens (pass 0's count)
  uint64_t prefix = 0;              // the key bits fixed so far
  int state = kSearching;
  double value = 0.0;      // kFound: keep the tokens with m < value, and m == value if inclusive
  bool inclusive = false;  // (kKeepAll: keep every valid token)
};

// The scan after pass `pass`'s histogram of the bucket (cnt, sum per digit): the bin holding the last
// dropped rank becomes the bucket; after the last pass, the threshold.
template <class Count>
GRPOKIT_HD void scan(const LossSpec& s, Cut& c, int pass, const Count* cnt, const Sum128* sum) {
  if (pass == 0)
    for (int d = 0; d < kBins; ++d) c.n_valid += static_cast<double>(cnt[d]);
  for (int d = 0; d < kBins; ++d) {
    if (cnt[d] == 0) continue;
    const uint64_t e = pass == 0 ? static_cast<uint64_t>(d) : c.prefix >> 52;
    const double rest = c.rest + sum_value(sum[d], e), n_rest = c.n_rest + static_cast<double>(cnt[d]);
    if (rest_passes(s, rest, n_rest)) {
      c.rest = rest;
      c.n_rest = n_rest;
      continue;
    }
    c.prefix |= static_cast<uint64_t>(d) << shift_of(pass);
    if (pass == kPasses - 1) {
      c.value = value_of(c.prefix);
      c.inclusive = rest_passes(s, c.rest + c.value, c.n_rest + 1.0);
      c.state = kFound;
    }
    return;
  }
  c.state = kKeepAll;  // pass 0 only: the mean of every valid moment passes
}

GRPOKIT_HD bool kept(const Cut& c, double m) {
  return c.state != kFound || m < c.value || (c.inclusive && m == c.value);
}

}  // namespace m2po
}  // namespace math
}  // namespace grpokit
