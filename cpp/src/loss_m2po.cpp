// M2PO's token selection on the CPU (AReaL m2_threshold; docs/losses.md): the valid tokens with the
// largest second moment (log r)² are dropped, largest first, until the mean of the rest is under the
// threshold. The engine then runs on the mask less those tokens (counts, L_i and metrics included).
//
// k, the number AReaL drops, is found without sorting the batch: a binary search over ranks whose
// probes are nth_element calls on a shrinking segment (expected O(n) in all). The tokens kept are those
// with a moment ≤ the moment at rank k: AReaL's torch.sort leaves the order of equal moments
// unspecified; grpokit keeps every token tied with the first one kept (the CUDA engine refuses M2PO
// for now: cuda/loss.cu).
#include <algorithm>
#include <cmath>
#include <functional>
#include <vector>

#include "grpokit/math/loss_passes.hpp"
#include "loss_engine.hpp"
#include "loss_rows.hpp"

namespace grpokit {
namespace loss_cpu {

namespace {

template <class T>
std::vector<uint8_t> m2po_keep_typed(const LossSpec& s, const LossInputs& in, const Layout& L) {
  const bool has_smp = in.sampling_logp.defined(), has_old = in.old_logp.defined();
  std::vector<uint8_t> keep;  // the mask, one byte per position of logp's layout
  std::vector<double> m2;     // the valid tokens' moments
  std::vector<uint8_t> buf;
  for (int64_t i = 0; i < L.B; ++i) {
    const uint8_t* m = flag_bytes(in.mask, L, i, buf);
    const Row<const T> lp = row_of<const T>(in.logp, L, i), old = row_of<const T>(in.old_logp, L, i),
                       smp = row_of<const T>(in.sampling_logp, L, i);
    for (int64_t t = 0, n = L.len(i); t < n; ++t) {
      keep.push_back(!m || m[t] ? 1 : 0);
      if (!keep.back()) continue;
      const T l = lp[t], lo = has_old ? old[t] : l;
      m2.push_back(math::m2po_moment<T>(has_smp, l, lo, has_smp ? smp[t] : T(0)));
    }
  }
  const int64_t n = static_cast<int64_t>(m2.size());
  if (n == 0) return keep;
  // Search the least rank i ∈ [0, n − 1] whose rest passes (n − 1 if none). Invariant: positions
  // [0, lo) hold ranks 0..lo−1, [lo, end) ranks lo..end−1, and `tail` is the sum of ranks ≥ end.
  std::vector<double> v(m2);
  int64_t lo = 0, hi = n - 1, end = n;
  double tail = 0.0;
  while (lo < hi) {
    const int64_t mid = lo + (hi - lo) / 2;
    std::nth_element(v.begin() + lo, v.begin() + mid, v.begin() + end, std::greater<double>());
    double rest = tail;
    for (int64_t j = mid; j < end; ++j) rest += v[j];
    if (math::m2po_rest_passes(s, rest, static_cast<double>(n - mid))) {
      hi = end = mid;
      tail = rest;
    } else {
      lo = mid + 1;
    }
  }
  // rank lo: the largest of [lo, end), or v[end] itself (placed there when `end` was set) if that is empty
  const double first_kept = end > lo ? *std::max_element(v.begin() + lo, v.begin() + end) : v[end];
  for (size_t p = 0, j = 0; p < keep.size(); ++p)
    if (keep[p]) keep[p] = m2[j++] <= first_kept ? 1 : 0;
  return keep;
}

}  // namespace

std::vector<uint8_t> m2po_keep(const LossSpec& s, const LossInputs& in, const Layout& L) {
  return in.logp.dtype == DType::Float32 ? m2po_keep_typed<float>(s, in, L)
                                         : m2po_keep_typed<double>(s, in, L);
}

}  // namespace loss_cpu
}  // namespace grpokit
