// M2PO's token selection on the CPU (AReaL m2_threshold; docs/losses.md): the valid tokens with the
// largest second moment (log r)² are dropped, largest first, until the mean of the rest is under the
// threshold. The engine then runs on the mask less those tokens (counts, L_i and metrics included).
//
// The radix selection of math/m2po_select.hpp (the CUDA engine refuses M2PO for now). Moments are
// computed on the fly from the inputs, never stored for the whole batch:
//   1. every valid token: the histogram of the exponents (count, exact sum of significands); the scan
//      picks the exponent bucket that holds the last dropped rank (or keeps every token);
//   2. the bucket's keys are gathered (their count is known: one allocation);
//   3. passes 1–5 histogram the next 11 (last: 8) bits of the gathered keys, scan, and compact them
//      in place to the bin picked; the last leaves the threshold value and its tie rule;
//   4. the mask: valid and kept (math::m2po::kept).
#include <cstring>
#include <vector>

#include "grpokit/math/loss_passes.hpp"
#include "grpokit/math/m2po_select.hpp"
#include "loss_engine.hpp"
#include "loss_rows.hpp"

namespace grpokit {
namespace loss_cpu {

namespace {

namespace m2 = math::m2po;

// f(p, m) for each valid token, p its position in logp's layout (row-major over the rows' lengths).
template <class T, class F>
void for_each_moment(const LossInputs& in, const Layout& L, F&& f) {
  const bool has_smp = in.sampling_logp.defined(), has_old = in.old_logp.defined();
  std::vector<uint8_t> buf;
  int64_t p = 0;
  for (int64_t i = 0; i < L.B; ++i) {
    const uint8_t* m = flag_bytes(in.mask, L, i, buf);
    const Row<const T> lp = row_of<const T>(in.logp, L, i), old = row_of<const T>(in.old_logp, L, i),
                       smp = row_of<const T>(in.sampling_logp, L, i);
    for (int64_t t = 0, n = L.len(i); t < n; ++t, ++p) {
      if (m && !m[t]) continue;
      const T l = lp[t], lo = has_old ? old[t] : l;
      f(p, math::m2po_moment<T>(has_smp, l, lo, has_smp ? smp[t] : T(0)));
    }
  }
}

struct Histogram {
  int64_t cnt[m2::kBins];
  m2::Sum128 sum[m2::kBins];
  void clear() {
    memset(cnt, 0, sizeof cnt);
    memset(sum, 0, sizeof sum);
  }
  void add(uint64_t key, int pass) {
    const int d = m2::digit_of(key, pass);
    ++cnt[d];
    m2::add(sum[d], m2::significand(key));
  }
};

template <class T>
std::vector<uint8_t> m2po_keep_typed(const LossSpec& s, const LossInputs& in, const Layout& L,
                                     int64_t& dropped) {
  int64_t positions = 0;
  for (int64_t i = 0; i < L.B; ++i) positions += L.len(i);
  std::vector<uint8_t> keep(static_cast<size_t>(positions), 0);  // the mask, one byte per position
  std::vector<Histogram> hist(1);  // 48 KiB: off the stack
  Histogram& h = hist[0];
  h.clear();
  m2::Cut c;
  for_each_moment<T>(in, L, [&](int64_t, double m) { h.add(m2::key_of(m), 0); });
  m2::scan(s, c, 0, h.cnt, h.sum);
  if (c.state == m2::kSearching) {
    std::vector<uint64_t> keys;
    keys.reserve(static_cast<size_t>(h.cnt[c.prefix >> 52]));
    for_each_moment<T>(in, L, [&](int64_t, double m) {
      const uint64_t k = m2::key_of(m);
      if (m2::in_bucket(k, c.prefix, 1)) keys.push_back(k);
    });
    for (int pass = 1; pass < m2::kPasses; ++pass) {
      h.clear();
      for (const uint64_t k : keys) h.add(k, pass);
      m2::scan(s, c, pass, h.cnt, h.sum);
      if (pass + 1 == m2::kPasses) break;
      size_t n = 0;
      for (const uint64_t k : keys)
        if (m2::in_bucket(k, c.prefix, pass + 1)) keys[n++] = k;
      keys.resize(n);
    }
  }
  int64_t n_kept = 0;
  for_each_moment<T>(in, L, [&](int64_t p, double m) {
    const bool k = m2::kept(c, m);
    keep[static_cast<size_t>(p)] = k ? 1 : 0;
    n_kept += k ? 1 : 0;
  });
  dropped = static_cast<int64_t>(c.n_valid) - n_kept;
  return keep;
}

}  // namespace

std::vector<uint8_t> m2po_keep(const LossSpec& s, const LossInputs& in, const Layout& L, int64_t& dropped) {
  return in.logp.dtype == DType::Float32 ? m2po_keep_typed<float>(s, in, L, dropped)
                                         : m2po_keep_typed<double>(s, in, L, dropped);
}

}  // namespace loss_cpu
}  // namespace grpokit
