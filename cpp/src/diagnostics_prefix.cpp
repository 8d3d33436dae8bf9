// Shared-prefix bias (Prop. 1): the prefix trie of each group, built depth by depth.
//
// Instead of hashing (parent, token) pairs, each depth splits the set of completions that still
// share a prefix by their token at that depth (a sort of a usually tiny set). A completion that no
// longer shares its prefix with anyone is a chain of single-member nodes, written in one sweep.
// Cost: O(N) for the unshared tails plus O(Σ_shared-depths |G̃| log |G̃|); no allocation per token.
// Deterministic: the order of nodes (DFS, ties by row) and every summation order are fixed.
#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "diagnostics_common.hpp"
#include "grpokit/diagnostics.hpp"
#include "grpokit/interrupt.hpp"

namespace grpokit {
namespace {

using diag::load_float;
using diag::load_int;

// Where row i's t-th element of an array lives (padded (B, T) or packed (N,) + cu_seqlens).
struct Layout {
  bool packed = false;
  std::vector<int64_t> starts;  // packed: cu_seqlens[:-1]
  int64_t offset(const TensorView& t, int64_t i, int64_t pos) const {
    return packed ? (starts[i] + pos) * t.strides[0] : i * t.strides[0] + pos * t.strides[1];
  }
};

struct Completion {
  int64_t row = 0;
  int64_t len = 0;     // up to and including the last valid token
  double adv = 0.0;
};

struct Writer {
  const TensorView& ids;
  const TensorView& mask;
  const TensorView& omega;
  const PrefixBiasOutputs& out;
  const Layout& lay;
  bool has_mask;

  bool valid(int64_t row, int64_t t) const {
    return !has_mask || diag::load_mask(mask, lay.offset(mask, row, t));
  }
  double weight(int64_t row, int64_t t) const {  // ω, 0 at masked positions (never read there)
    return valid(row, t) ? load_float(omega, lay.offset(omega, row, t)) : 0.0;
  }
  int64_t token(int64_t row, int64_t t) const { return load_int(ids, lay.offset(ids, row, t)); }
  void write(int64_t row, int64_t t, int64_t node, int64_t count, double coef, double bias,
             double abs_sum) const {
    out.node.ptr<int64_t>()[lay.offset(out.node, row, t)] = node;
    out.count.ptr<int64_t>()[lay.offset(out.count, row, t)] = count;
    out.coef.ptr<double>()[lay.offset(out.coef, row, t)] = coef;
    out.bias.ptr<double>()[lay.offset(out.bias, row, t)] = bias;
    out.abs_sum.ptr<double>()[lay.offset(out.abs_sum, row, t)] = abs_sum;
  }
};

double pearson(const std::vector<double>& x, const std::vector<double>& y) {
  const double n = static_cast<double>(x.size());
  double mx = 0, my = 0;
  for (size_t k = 0; k < x.size(); ++k) mx += x[k], my += y[k];
  mx /= n, my /= n;
  double sxy = 0, sxx = 0, syy = 0;
  for (size_t k = 0; k < x.size(); ++k) {
    sxy += (x[k] - mx) * (y[k] - my);
    sxx += (x[k] - mx) * (x[k] - mx);
    syy += (y[k] - my) * (y[k] - my);
  }
  if (!(sxx > 0.0) || !(syy > 0.0)) return std::numeric_limits<double>::quiet_NaN();
  return sxy / std::sqrt(sxx * syy);
}

void run_group(const Writer& w, std::vector<Completion> members, double* stats) {
  const int64_t G = static_cast<int64_t>(members.size());
  std::fill(stats, stats + kPrefixGroupStats, 0.0);

  // Per-completion mean ω over valid tokens vs valid-token count (the length α's 1/|o_i| uses).
  {
    std::vector<double> mean_w, n_valid;
    for (const auto& c : members) {
      // Shifted by the first weight, so a constant ω has an exact mean (and corr NaN, not noise).
      double shift = 0.0, s = 0.0, n = 0.0;
      for (int64_t t = 0; t < c.len; ++t) {
        if (!w.valid(c.row, t)) continue;
        const double om = w.weight(c.row, t);
        if (n == 0.0) shift = om;
        s += om - shift, n += 1.0;
      }
      mean_w.push_back(n > 0 ? shift + s / n : 0.0);
      n_valid.push_back(n);
    }
    stats[kWeightLengthCorr] = G >= 2 ? pearson(mean_w, n_valid) : std::numeric_limits<double>::quiet_NaN();
  }

  int64_t next_node = 0;
  // A completion alone below depth t: its nodes have one member, W = ωA and no bias.
  auto write_chain = [&](const Completion& c, int64_t from) {
    for (int64_t t = from; t < c.len; ++t) {
      const double wa = w.weight(c.row, t) * c.adv;
      w.write(c.row, t, next_node++, 1, wa, 0.0, std::fabs(wa));
    }
  };

  struct Pending {
    int64_t depth;
    std::vector<Completion> set;
  };
  std::vector<Pending> stack;
  {
    std::vector<Completion> start;
    for (const auto& c : members)
      if (c.len > 0) start.push_back(c);
    if (start.size() == 1)
      write_chain(start[0], 0);
    else if (!start.empty())
      stack.push_back({0, std::move(start)});
  }
  std::vector<std::pair<int64_t, size_t>> keyed;
  std::vector<double> wbuf;
  while (!stack.empty()) {
    Pending p = std::move(stack.back());
    stack.pop_back();
    const int64_t t = p.depth;
    keyed.clear();
    for (size_t k = 0; k < p.set.size(); ++k) keyed.emplace_back(w.token(p.set[k].row, t), k);
    std::sort(keyed.begin(), keyed.end());  // by token, ties by position in the set (= row order)

    // Runs of equal tokens are the children; push them in reverse so the DFS visits tokens in order.
    std::vector<Pending> children;
    for (size_t lo = 0; lo < keyed.size();) {
      size_t hi = lo;
      while (hi < keyed.size() && keyed[hi].first == keyed[lo].first) ++hi;
      const int64_t count = static_cast<int64_t>(hi - lo);
      if (count == 1) {
        write_chain(p.set[keyed[lo].second], t);
        lo = hi;
        continue;
      }
      wbuf.clear();
      double wsum = 0.0;
      for (size_t k = lo; k < hi; ++k) {
        wbuf.push_back(w.weight(p.set[keyed[k].second].row, t));
        wsum += wbuf.back();
      }
      const double wbar = wsum / static_cast<double>(count);
      double coef = 0.0, bias = 0.0, abs_sum = 0.0;
      for (size_t k = lo; k < hi; ++k) {
        const double a = p.set[keyed[k].second].adv, om = wbuf[k - lo];
        coef += om * a;
        bias += (om - wbar) * a;  // two-pass: exact cancellation for uniform ω
        abs_sum += std::fabs(om * a);
      }
      const int64_t node = next_node++;
      std::vector<Completion> deeper;
      for (size_t k = lo; k < hi; ++k) {
        const Completion& c = p.set[keyed[k].second];
        w.write(c.row, t, node, count, coef, bias, abs_sum);
        if (c.len > t + 1) deeper.push_back(c);
      }
      stats[kSharedBias] += bias;
      stats[kSharedAbs] += abs_sum;
      if (count == G) {  // the whole group still shares: the chain from the root
        stats[kPrefixLen] = static_cast<double>(t + 1);
        stats[kPrefixCoef] += coef;
        stats[kPrefixBias] += bias;
        stats[kPrefixAbs] += abs_sum;
      }
      if (deeper.size() == 1)
        write_chain(deeper[0], t + 1);
      else if (!deeper.empty())
        children.push_back({t + 1, std::move(deeper)});
      lo = hi;
    }
    for (auto it = children.rbegin(); it != children.rend(); ++it) stack.push_back(std::move(*it));
  }
}

}  // namespace

void prefix_bias_cpu(const TensorView& ids, const TensorView& mask, const TensorView& cu_seqlens,
                     const TensorView& advantages, const TensorView& omega, int64_t group_size,
                     const PrefixBiasOutputs& out) {
  check_dtype(ids, "ids", diag::kIdTypes);
  check_cpu(ids, "ids");
  Layout lay;
  lay.packed = cu_seqlens.defined();
  int64_t B = 0, T = 0;
  if (lay.packed) {
    check_ndim(ids, "ids", {1});
    check_ndim(cu_seqlens, "cu_seqlens", {1});
    check_dtype(cu_seqlens, "cu_seqlens", diag::kIdTypes);
    check_cpu(cu_seqlens, "cu_seqlens");
    if (cu_seqlens.shape[0] < 2)
      value_error("cu_seqlens: expected (B+1,) offsets with B >= 1, got shape ", cu_seqlens.shape_str());
    B = cu_seqlens.shape[0] - 1;
    int64_t prev = load_int(cu_seqlens, 0);
    if (prev != 0) value_error("cu_seqlens: expected cu_seqlens[0] == 0, got ", prev);
    for (int64_t i = 1; i <= B; ++i) {
      const int64_t cur = load_int(cu_seqlens, i * cu_seqlens.strides[0]);
      if (cur < prev)
        value_error("cu_seqlens: offsets must be non-decreasing, got ", prev, " then ", cur, " at index ", i);
      lay.starts.push_back(prev);
      prev = cur;
    }
    if (prev != ids.shape[0])
      value_error("cu_seqlens: the last offset (", prev, ") must equal the number of packed tokens (",
                  ids.shape[0], ")");
  } else {
    check_ndim(ids, "ids", {2});
    B = ids.shape[0];
    T = ids.shape[1];
  }
  if (B == 0) value_error("ids: expected at least one completion, got none");
  const int64_t num_groups = diag::check_groups(B, group_size);
  const std::vector<double> adv = diag::read_advantages(advantages, B);
  check_dtype(omega, "omega", diag::kFloatTypes);
  check_shape_equal(omega, "omega", ids, "ids");
  check_cpu(omega, "omega");
  const bool has_mask = diag::check_mask(mask, ids, "ids");
  diag::check_output(out.node, "out.node", ids, "ids", DType::Int64);
  diag::check_output(out.count, "out.count", ids, "ids", DType::Int64);
  diag::check_output(out.coef, "out.coef", ids, "ids", DType::Float64);
  diag::check_output(out.bias, "out.bias", ids, "ids", DType::Float64);
  diag::check_output(out.abs_sum, "out.abs_sum", ids, "ids", DType::Float64);
  check_dtype(out.group, "out.group", {DType::Float64});
  check_ndim(out.group, "out.group", {2});
  check_cpu(out.group, "out.group");
  check_writable(out.group, "out.group");
  if (out.group.shape[0] != num_groups || out.group.shape[1] != kPrefixGroupStats)
    value_error("out.group: expected shape (", num_groups, ", ", int(kPrefixGroupStats), "), got ",
                out.group.shape_str());

  const Writer w{ids, mask, omega, out, lay, has_mask};
  auto row_len = [&](int64_t i) -> int64_t {
    const int64_t n = lay.packed ? (i + 1 < B ? lay.starts[i + 1] : ids.shape[0]) - lay.starts[i] : T;
    int64_t len = has_mask ? 0 : n;
    for (int64_t t = 0; t < n; ++t) {
      if (!w.valid(i, t)) continue;
      len = t + 1;
      const double om = load_float(omega, lay.offset(omega, i, t));
      if (!std::isfinite(om))
        value_error("omega: completion ", i, ", token ", t, " is ", om,
                    "; weights must be finite at valid positions");
    }
    return len;
  };

  // Padding first, so every position is defined even past a completion's end.
  std::vector<Completion> all(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) {
    all[i] = Completion{i, row_len(i), adv[i]};
    const int64_t n = lay.packed ? (i + 1 < B ? lay.starts[i + 1] : ids.shape[0]) - lay.starts[i] : T;
    for (int64_t t = all[i].len; t < n; ++t) w.write(i, t, -1, 0, 0.0, 0.0, 0.0);
  }

  double* gstats = out.group.ptr<double>();
  const int64_t gs0 = out.group.strides[0], gs1 = out.group.strides[1];
  Interrupt stop;  // Ctrl-C (grpokit/interrupt.hpp): groups not yet started are skipped
#if defined(GRPOKIT_HAVE_OPENMP)
#pragma omp parallel for schedule(dynamic, 1)
#endif
  for (int64_t g = 0; g < num_groups; ++g) {
    if (stop.requested()) continue;
    double stats[kPrefixGroupStats];
    run_group(w, std::vector<Completion>(all.begin() + g * group_size, all.begin() + (g + 1) * group_size),
              stats);
    for (int k = 0; k < kPrefixGroupStats; ++k) gstats[g * gs0 + k * gs1] = stats[k];
  }
  stop.raise();
}

}  // namespace grpokit
