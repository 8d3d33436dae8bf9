#include "grpokit/corrections.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "engine_util.hpp"
#include "grpokit/math/advantages.hpp"
#include "grpokit/math/corrections.hpp"
#include "grpokit/math/estimators.hpp"

namespace grpokit {
namespace {

using detail::read_mask;
using detail::read_real;

constexpr double kInf = std::numeric_limits<double>::infinity();

// Log-ratios lr = trainer − sampler at selected positions. A NaN sampler log-prob (the sampler could
// not score the token) gives lr = 0 and scored = false (TRL's nan_to_num).
struct LogRatios {
  int64_t B = 0, T = 0;
  std::vector<double> lr, diff;  // diff: e^{trainer} − e^{sampler} (filled on request)
  std::vector<char> sel, scored;
  std::vector<double> len, seq_sum;  // selected tokens per row, Σ_t lr per row
  double n_selected = 0.0;
  size_t at(int64_t i, int64_t t) const { return static_cast<size_t>(i * T + t); }
  // Calls f(i, begin, end, mean) for each segment of row i (a maximal run of selected tokens, or the
  // selected tokens sharing a segment id) with the mean of x over its selected tokens (Σ / (n + eps)).
  template <class F>
  void for_segments(int64_t i, const std::vector<double>& x, double eps, const TensorView& ids, F&& f) const {
    const auto selected = [&](int64_t t) { return sel[at(i, t)] != 0; };
    for (int64_t t = 0; t < T;) {
      if (!selected(t)) {
        ++t;
        continue;
      }
      const int64_t id = ids.defined() ? detail::read_int(ids, i, t) : 0;
      const auto same = [&](int64_t u) { return detail::read_int(ids, i, u) == id; };
      const int64_t end =
          ids.defined() ? math::segment_end_by_id(selected, same, t, T) : math::segment_end(selected, t, T);
      double sum = 0.0, n = 0.0;
      for (int64_t u = t; u < end; ++u)
        if (selected(u)) sum += x[at(i, u)], n += 1.0;
      f(t, end, math::mean_log_ratio(sum, n, eps));
      t = end;
    }
  }
};

// Arrays on `dev` (the CPU engine's, or a CUDA device for the GPU launchers' host-side checks).
void check_on(const TensorView& t, const char* name, const Device& dev) {
  if (dev.type == DeviceType::CPU) return check_cpu(t, name);
  if (t.device != dev)
    device_error(name, " is on ", device_name(t.device), " but trainer_logp is on ", device_name(dev),
                 "; all arrays of one call must be on the same device");
}

void check_log_ratio_inputs(const TensorView& trn, const TensorView& smp, const TensorView& mask,
                            const Device& dev) {
  check_ndim(trn, "trainer_logp", {2});
  const auto check_logp = [&dev](const TensorView& v, const char* name) {
    if (dev.type != DeviceType::CPU)  // the GPU reads half precision too
      check_dtype(v, name, {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16});
    else
      check_dtype(v, name, {DType::Float32, DType::Float64});
    check_on(v, name, dev);
  };
  check_logp(trn, "trainer_logp");
  check_shape_equal(smp, "sampler_logp", trn, "trainer_logp");
  check_logp(smp, "sampler_logp");
  check_shape_equal(mask, "mask", trn, "trainer_logp");
  detail::check_mask_dtype(mask, "mask");
  check_on(mask, "mask", dev);
}

LogRatios log_ratios(const TensorView& trn, const TensorView& smp, const TensorView& mask,
                     bool with_diff = false) {
  check_log_ratio_inputs(trn, smp, mask, Device{});
  LogRatios r;
  r.B = trn.shape[0];
  r.T = trn.shape[1];
  const size_t n = static_cast<size_t>(r.B * r.T);
  r.lr.assign(n, 0.0);
  r.sel.assign(n, 0);
  r.scored.assign(n, 0);
  if (with_diff) r.diff.assign(n, 0.0);
  r.len.assign(static_cast<size_t>(r.B), 0.0);
  r.seq_sum.assign(static_cast<size_t>(r.B), 0.0);
  for (int64_t i = 0; i < r.B; ++i)
    for (int64_t t = 0; t < r.T; ++t) {
      if (!read_mask(mask, i, t)) continue;
      const double a = read_real(trn, i, t), b = read_real(smp, i, t);
      if (!std::isfinite(a))
        value_error("trainer_logp: element (", i, ", ", t, ") is ", a,
                    " at a selected position; "
                    "log-probabilities must be finite where mask is set");
      if (std::isinf(b))
        value_error("sampler_logp: element (", i, ", ", t, ") is ", b,
                    " at a selected position; "
                    "log-probabilities must be finite where mask is set (NaN marks an unscored token)");
      const size_t k = r.at(i, t);
      r.sel[k] = 1;
      r.scored[k] = math::is_nan(b) ? 0 : 1;
      r.lr[k] = math::sampler_log_ratio(a, b);
      if (with_diff) r.diff[k] = math::prob_difference(a, b);
      r.len[i] += 1.0;
      r.seq_sum[i] += r.lr[k];
      r.n_selected += 1.0;
    }
  if (r.n_selected == 0.0) value_error("mask: no position is selected; corrections need at least one token");
  return r;
}

void put(const TensorView& metrics, size_t k, double v) { metrics.ptr<double>()[k * metrics.strides[0]] = v; }

void check_metrics_out(const TensorView& metrics, size_t n, const Device& dev) {
  check_ndim(metrics, "metrics", {1});
  check_dtype(metrics, "metrics", {DType::Float64});
  check_on(metrics, "metrics", dev);
  check_writable(metrics, "metrics");
  if (metrics.shape[0] != static_cast<int64_t>(n))
    value_error("metrics: expected ", n, " slots, got ", metrics.shape[0]);
}

}  // namespace

const std::vector<std::string>& importance_metric_names() {
  static const std::vector<std::string> names = {
      "ratio_mean",          // TRL: mean of the applied weights (tokens, or sequences at sequence level)
      "ratio_min",           // TRL
      "ratio_max",           // TRL
      "ratio_token_mean",    // verl rollout_is_mean: token-weighted masked mean of the applied weights
      "fraction_high",       // verl: raw ratio > clip_max
      "fraction_low",        // verl: raw ratio < clip_min (or 1/clip_max without clip_min)
      "masked_fraction",  // selected tokens whose weight the mask mode set to 0 (verl rollout_is_oob_ratio)
      "seq_masked_fraction",  // sequences with at least one zeroed weight
      "ess",  // verl rollout_is_eff_sample_size
      "std",  // verl rollout_is_std
      "batch_norm_factor",  // verl rollout_is_batch_norm_factor (1 without batch_normalize)
      "kl",  // verl kl: masked mean of sampler − trainer log-probs (k1 of KL(π_smp‖π_trn))
      "k3_kl",  // verl k3_kl: masked mean of e^{lr} − lr − 1
      "chi2_token",  // verl chi2_token: masked mean of ρ² − 1
      "chi2_seq",  // verl chi2_seq: mean over rows of (Π ρ)² − 1
      "logp_diff_mean",  // TRL sampling_logp_difference/mean: mean |trainer − sampler|
      "logp_diff_max",  // TRL sampling_logp_difference/max
      "fraction_high_token",  // ROLL is_weight_clipfrac: selected tokens whose (broadcast) raw ratio >
                              // clip_max
  };
  return names;
}

namespace {

void check_importance(const TensorView& trainer_logp, const TensorView& sampler_logp, const TensorView& mask,
                      const ImportanceOptions& opt, const TensorView& weights, const TensorView& metrics,
                      const Device& dev) {
  if (!(opt.clip_max > 0.0)) value_error("clip_max: expected a positive bound (or None), got ", opt.clip_max);
  if (!(opt.clip_min >= 0.0) && opt.clip_min != -INFINITY)
    value_error("clip_min: expected a bound >= 0 (or None), got ", opt.clip_min);
  if (!(opt.clip_min <= opt.clip_max))
    value_error("clip_min: expected clip_min <= clip_max, got ", opt.clip_min, " > ", opt.clip_max);
  if (!(opt.log_clamp > 0.0)) value_error("log_clamp: expected a positive bound, got ", opt.log_clamp);
  if (!(opt.geo_eps >= 0.0 && opt.geo_eps < 1.0))
    value_error("geo_eps: expected a number in [0, 1), got ", opt.geo_eps);
  check_log_ratio_inputs(trainer_logp, sampler_logp, mask, dev);
  const int64_t B = trainer_logp.shape[0];
  if (weight_per_row(opt.level)) {
    check_ndim(weights, "weights", {1});
    if (weights.shape[0] != B) value_error("weights: expected shape (", B, ",), got ", weights.shape_str());
  } else {
    check_shape_equal(weights, "weights", trainer_logp, "trainer_logp");
  }
  check_dtype(weights, "weights", {trainer_logp.dtype});
  check_on(weights, "weights", dev);
  check_writable(weights, "weights");
  check_metrics_out(metrics, importance_metric_names().size(), dev);
  const TensorView& ids = opt.segment_ids;
  if (!ids.defined()) return;
  if (opt.level != IsLevel::Segment) value_error("segment_ids: only level='segment' reads segment ids");
  check_shape_equal(ids, "segment_ids", trainer_logp, "trainer_logp");
  check_dtype(ids, "segment_ids", {DType::Int32, DType::Int64});
  check_on(ids, "segment_ids", dev);
}

// Segment ids at selected positions: >= 0 and non-decreasing along each row (host arrays only).
void check_segment_ids(const TensorView& ids, const LogRatios& r) {
  for (int64_t i = 0; i < r.B; ++i) {
    int64_t prev = 0;
    for (int64_t t = 0; t < r.T; ++t) {
      if (!r.sel[r.at(i, t)]) continue;
      const int64_t id = detail::read_int(ids, i, t);
      if (id < 0) value_error("segment_ids: element (", i, ", ", t, ") is ", id, "; ids must be >= 0");
      if (id < prev)
        value_error("segment_ids: element (", i, ", ", t, ") is ", id, " after ", prev,
                    " at an earlier selected position of its row; ids must not decrease along a row");
      prev = id;
    }
  }
}

}  // namespace

void check_importance_args(const TensorView& trainer_logp, const TensorView& sampler_logp,
                           const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                           const TensorView& metrics) {
  check_importance(trainer_logp, sampler_logp, mask, opt, weights, metrics, trainer_logp.device);
}

void importance_weights_cpu(const TensorView& trainer_logp, const TensorView& sampler_logp,
                            const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                            const TensorView& metrics) {
  check_importance(trainer_logp, sampler_logp, mask, opt, weights, metrics, Device{});
  const LogRatios r = log_ratios(trainer_logp, sampler_logp, mask);
  if (opt.segment_ids.defined()) check_segment_ids(opt.segment_ids, r);
  const int64_t B = r.B, T = r.T;
  const bool seq = weight_per_row(opt.level);
  const int mode = static_cast<int>(opt.mode);

  // Raw and applied weights, per token (broadcast at row level) and per row. row_lr: the row's
  // log-ratio a row-level weight exponentiates (Σ lr, or its mean at geometric level).
  std::vector<double> raw_row(static_cast<size_t>(B)), w_row(static_cast<size_t>(B)), row_lr(raw_row);
  std::vector<double> raw(r.lr.size(), 0.0), w(r.lr.size(), 0.0), tok_lr(r.lr);
  for (int64_t i = 0; i < B; ++i) {
    const double geo = math::mean_log_ratio(r.seq_sum[i], r.len[i], opt.geo_eps);
    const double geo_ratio = std::exp(geo);
    const auto apply = [&](double x) {
      return math::apply_is_weight(x, mode, opt.clip_min, opt.clip_max, geo_ratio);
    };
    row_lr[i] = opt.level == IsLevel::Geometric ? geo : r.seq_sum[i];
    raw_row[i] = std::exp(math::clamp_log_ratio(row_lr[i], opt.log_clamp));
    w_row[i] = apply(raw_row[i]);
    if (opt.level == IsLevel::Segment)
      r.for_segments(i, r.lr, opt.geo_eps, opt.segment_ids, [&](int64_t t0, int64_t t1, double mean) {
        for (int64_t t = t0; t < t1; ++t) tok_lr[r.at(i, t)] = mean;
      });
    for (int64_t t = 0; t < T; ++t) {
      const size_t k = r.at(i, t);
      if (!r.sel[k]) continue;
      raw[k] = seq ? raw_row[i] : std::exp(math::clamp_log_ratio(tok_lr[k], opt.log_clamp));
      w[k] = seq ? w_row[i] : apply(raw[k]);
    }
  }

  // ---- metrics (before batch renormalisation, as verl) ----
  const double upper = opt.clip_max;
  const double lower = math::is_lower_bound(opt.clip_min, upper);
  double sum_w = 0.0, wmin = kInf, wmax = -kInf, n_items = 0.0;
  if (seq) {  // every row counts (an empty row has ratio exp(0) = 1), as TRL's (B, 1) ratio
    for (int64_t i = 0; i < B; ++i)
      sum_w += w_row[i], wmin = std::min(wmin, w_row[i]), wmax = std::max(wmax, w_row[i]);
    n_items = static_cast<double>(B);
  } else {
    for (size_t k = 0; k < w.size(); ++k)
      if (r.sel[k]) sum_w += w[k], wmin = std::min(wmin, w[k]), wmax = std::max(wmax, w[k]);
    n_items = r.n_selected;
  }
  const auto zeroed_at = [&](size_t k) {
    return opt.mode != IsMode::Truncate && w[k] == 0.0 && raw[k] != 0.0;
  };
  double token_sum = 0.0, high = 0.0, low = 0.0, zeroed = 0.0, high_token = 0.0;
  for (size_t k = 0; k < w.size(); ++k) {
    if (!r.sel[k]) continue;
    token_sum += w[k];
    high_token += raw[k] > upper ? 1.0 : 0.0;
    if (!seq) high += raw[k] > upper ? 1.0 : 0.0, low += raw[k] < lower ? 1.0 : 0.0;
    zeroed += zeroed_at(k) ? 1.0 : 0.0;
  }
  double rows_valid = 0.0, rows_zeroed = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    if (seq) {  // verl compares the unclamped log-ratio sums with log(bounds), over all rows
      high += row_lr[i] > std::log(upper) ? 1.0 : 0.0;
      low += row_lr[i] < std::log(lower) ? 1.0 : 0.0;
    }
    if (r.len[i] == 0.0) continue;
    rows_valid += 1.0;
    bool any = false;
    for (int64_t t = 0; t < T; ++t) {
      const size_t k = r.at(i, t);
      any = any || (r.sel[k] && zeroed_at(k));
    }
    rows_zeroed += any ? 1.0 : 0.0;
  }
  const double n = r.n_selected;
  // verl's ESS and std use the applied weights clamped to [0, upper].
  double c_sum = 0.0, c_sq = 0.0;
  for (size_t k = 0; k < w.size(); ++k)
    if (r.sel[k]) {
      const double c = math::truncate_weight(w[k], 0.0, upper);
      c_sum += c, c_sq += c * c;
    }
  const double c_mean = math::verl_masked_mean(c_sum, n);
  double ess_sq = 0.0;
  for (size_t k = 0; k < w.size(); ++k)
    if (r.sel[k]) {
      const double c = math::truncate_weight(w[k], 0.0, upper) / (c_mean + 1e-8);
      ess_sq += c * c;
    }

  // Mismatch between the two policies, over scored tokens.
  double kl = 0.0, k3 = 0.0, chi2 = 0.0, n_scored = 0.0, dmax = 0.0;
  double dsum = 0.0;
  for (size_t k = 0; k < r.lr.size(); ++k) {
    if (!r.scored[k]) continue;
    const double lr = r.lr[k];
    kl += -lr;
    k3 += math::mismatch_k3(lr);
    const double rho = std::exp(math::clamp_log_ratio(lr, math::kVerlLogRatioBound));
    chi2 += rho * rho;
    dsum += std::fabs(lr);
    dmax = std::max(dmax, std::fabs(lr));
    n_scored += 1.0;
  }
  double chi2_seq = 0.0;
  for (int64_t i = 0; i < B; ++i)
    chi2_seq += std::exp(2.0 * math::clamp_log_ratio(r.seq_sum[i], math::kVerlLogRatioBound));

  // Batch renormalisation to mean 1 (verl: tokens, or the sequences that have tokens).
  double factor = 1.0;
  if (opt.batch_normalize) {
    double mean = 0.0;
    if (seq) {
      double s = 0.0;
      for (int64_t i = 0; i < B; ++i)
        if (r.len[i] > 0.0) s += math::verl_masked_mean(w_row[i] * r.len[i], r.len[i]);
      mean = s / std::max(rows_valid, 1e-8);
    } else {
      mean = math::verl_masked_mean(token_sum, n);
    }
    if (mean > 1e-8) factor = mean;
  }

  size_t m = 0;
  put(metrics, m++, sum_w / n_items);
  put(metrics, m++, wmin);
  put(metrics, m++, wmax);
  put(metrics, m++, math::verl_masked_mean(token_sum, n));
  put(metrics, m++, seq ? high / static_cast<double>(B) : math::verl_masked_mean(high, n));
  put(metrics, m++, seq ? low / static_cast<double>(B) : math::verl_masked_mean(low, n));
  put(metrics, m++, math::verl_masked_mean(zeroed, n));
  put(metrics, m++, rows_valid > 0.0 ? rows_zeroed / rows_valid : 0.0);
  put(metrics, m++, 1.0 / math::verl_masked_mean(ess_sq, n));
  put(metrics, m++, math::is_weight_std(c_sq, c_mean, n));
  put(metrics, m++, factor);
  put(metrics, m++, math::verl_masked_mean(kl, n_scored));
  put(metrics, m++, math::verl_masked_mean(k3, n_scored));
  put(metrics, m++, math::verl_masked_mean(chi2, n_scored) - 1.0);
  put(metrics, m++, chi2_seq / static_cast<double>(B) - 1.0);
  put(metrics, m++, n_scored > 0.0 ? dsum / n_scored : 0.0);
  put(metrics, m++, dmax);
  put(metrics, m++, math::verl_masked_mean(high_token, n));

  for (int64_t i = 0; i < B; ++i) {
    if (seq) {
      detail::write_real(weights, i, 0, w_row[i] / factor);
      continue;
    }
    for (int64_t t = 0; t < T; ++t) detail::write_real(weights, i, t, w[r.at(i, t)] / factor);
  }
}

RejectionCriterion parse_rejection_criterion(const std::string& name) {
  static const char* kValid =
      "'token_k1', 'token_k2', 'token_k3', 'seq_sum_k1', 'seq_sum_k2', 'seq_sum_k3', 'seq_mean_k1', "
      "'seq_mean_k2', 'seq_mean_k3', 'seq_max_k2', 'seq_max_k3' (verl), 'token_ratio', 'geometric_ratio', "
      "'sequence_ratio', 'segment_ratio', 'token_diff', 'geometric_diff', 'sequence_diff', 'segment_diff' "
      "(ROLL)";
  const auto invalid = [&]() {
    value_error("criteria: expected names among ", kValid, ", got '", name, "'");
  };
  // Aggregation names: verl's (family 1), ROLL's (family 2), both (3).
  struct AggName {
    const char* name;
    RsAggregation agg;
    int family;
  };
  static const AggName kAggs[] = {
      {"token", RsAggregation::Token, 3},       {"seq_sum", RsAggregation::SeqSum, 1},
      {"seq_mean", RsAggregation::SeqMean, 1},  {"seq_max", RsAggregation::SeqMax, 1},
      {"geometric", RsAggregation::RowMean, 2}, {"sequence", RsAggregation::SeqSum, 2},
      {"segment", RsAggregation::Segment, 2}};
  RejectionCriterion c;
  const auto pos = name.rfind('_');
  if (pos == std::string::npos) invalid();
  const std::string agg = name.substr(0, pos), stat = name.substr(pos + 1);
  const bool roll = stat == "ratio" || stat == "diff";  // ROLL's filters
  if (roll)
    c.k = stat == "ratio" ? math::kRsRatio : math::kRsDiff;
  else if (stat.size() == 2 && stat[0] == 'k' && stat[1] >= '1' && stat[1] <= '3')
    c.k = stat[1] - '0';
  else
    invalid();
  const AggName* found = nullptr;
  for (const auto& a : kAggs)
    if (agg == a.name && (a.family & (roll ? 2 : 1))) found = &a;
  if (found == nullptr || (found->agg == RsAggregation::SeqMax && c.k == 1)) invalid();
  c.agg = found->agg;
  return c;
}

std::vector<std::string> rejection_metric_names(const std::vector<std::string>& criteria) {
  std::vector<std::string> names;
  for (const auto& c : criteria)
    for (const char* s : {"_mean", "_max", "_min", "_masked_fraction", "_seq_masked_fraction"})
      names.push_back(c + s);
  names.push_back("masked_fraction");
  names.push_back("seq_masked_fraction");
  return names;
}

namespace {

void check_rejection(const TensorView& trainer_logp, const TensorView& sampler_logp, const TensorView& mask,
                     const std::vector<RejectionCriterion>& criteria, const TensorView& keep,
                     const TensorView& metrics, const Device& dev) {
  if (criteria.empty()) value_error("criteria: expected at least one rejection criterion");
  for (const auto& c : criteria) {
    if (c.k == 1 && !(c.lower > 0.0 && c.upper > 0.0 && c.lower <= c.upper))
      value_error("thresholds: k1 criteria need ratio bounds 0 < lower <= upper, got ", c.lower, ", ",
                  c.upper);
    const bool roll = c.k == math::kRsRatio || c.k == math::kRsDiff;
    if (roll && !(c.lower <= c.upper))
      value_error("thresholds: ROLL's filters need bounds lower <= upper, got ", c.lower, ", ", c.upper);
    if (c.k != 1 && !roll && !(c.upper > 0.0))
      value_error("thresholds: expected a positive upper bound, got ", c.upper);
  }
  check_log_ratio_inputs(trainer_logp, sampler_logp, mask, dev);
  check_shape_equal(keep, "keep", trainer_logp, "trainer_logp");
  check_dtype(keep, "keep", {DType::Bool});
  check_on(keep, "keep", dev);
  check_writable(keep, "keep");
  check_metrics_out(metrics, 5 * criteria.size() + 2, dev);
}

}  // namespace

void check_rejection_args(const TensorView& trainer_logp, const TensorView& sampler_logp,
                          const TensorView& mask, const std::vector<RejectionCriterion>& criteria,
                          const TensorView& keep, const TensorView& metrics) {
  check_rejection(trainer_logp, sampler_logp, mask, criteria, keep, metrics, trainer_logp.device);
}

void rejection_mask_cpu(const TensorView& trainer_logp, const TensorView& sampler_logp,
                        const TensorView& mask, const std::vector<RejectionCriterion>& criteria,
                        const TensorView& keep, const TensorView& metrics) {
  check_rejection(trainer_logp, sampler_logp, mask, criteria, keep, metrics, Device{});
  bool with_diff = false;
  for (const auto& c : criteria) with_diff = with_diff || c.k == math::kRsDiff;
  const LogRatios r = log_ratios(trainer_logp, sampler_logp, mask, with_diff);
  const int64_t B = r.B, T = r.T;

  const double n = r.n_selected;
  std::vector<char> kept(r.sel);  // the combined keep flags over selected tokens
  size_t m = 0;
  std::vector<double> stat(r.lr.size()), row(static_cast<size_t>(B));
  for (const auto& c : criteria) {
    auto passes = [&](double s) { return math::rs_passes(c.k, s, c.lower, c.upper); };
    // per token: the criterion's value, then its statistic at token and segment level
    const bool per_token = c.agg == RsAggregation::Token || c.agg == RsAggregation::Segment;
    for (size_t k = 0; k < r.lr.size(); ++k)
      stat[k] = r.sel[k] ? math::rs_token_value(c.k, r.lr[k], with_diff ? r.diff[k] : 0.0) : 0.0;
    double smin = kInf, smax = -kInf, ssum = 0.0, rejected = 0.0, rows_valid = 0.0, rows_rejected = 0.0;
    for (int64_t i = 0; i < B; ++i) {
      if (c.agg == RsAggregation::Segment) {
        r.for_segments(i, stat, 0.0, TensorView{}, [&](int64_t t0, int64_t t1, double mean) {
          for (int64_t t = t0; t < t1; ++t) stat[r.at(i, t)] = mean;
        });
      } else if (c.agg != RsAggregation::Token) {
        double s = 0.0, mx = -kInf;
        for (int64_t t = 0; t < T; ++t)
          if (r.sel[r.at(i, t)]) s += stat[r.at(i, t)], mx = std::max(mx, stat[r.at(i, t)]);
        row[i] = math::rs_finish(c.k, math::rs_row_statistic(static_cast<int>(c.agg), s, mx, r.len[i]));
        if (r.len[i] > 0.0) smin = std::min(smin, row[i]), smax = std::max(smax, row[i]);
      }
      bool row_rejected = false;
      for (int64_t t = 0; t < T; ++t) {
        const size_t k = r.at(i, t);
        if (!r.sel[k]) continue;
        const double s = per_token ? math::rs_finish(c.k, stat[k]) : row[i];
        if (per_token) smin = std::min(smin, s), smax = std::max(smax, s);
        ssum += s;
        if (!passes(s)) {
          rejected += 1.0;
          row_rejected = true;
          kept[k] = 0;
        }
      }
      if (r.len[i] > 0.0) rows_valid += 1.0, rows_rejected += row_rejected ? 1.0 : 0.0;
    }
    put(metrics, m++, math::verl_masked_mean(ssum, n));
    put(metrics, m++, smax);
    put(metrics, m++, smin);
    put(metrics, m++, math::verl_masked_mean(rejected, n));
    put(metrics, m++, rows_valid > 0.0 ? rows_rejected / rows_valid : 0.0);
  }
  double rejected = 0.0, rows_rejected = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    bool any = false;
    for (int64_t t = 0; t < T; ++t) {
      const size_t k = r.at(i, t);
      keep.ptr<bool>()[i * keep.strides[0] + t * keep.strides[1]] = kept[k] != 0;
      if (r.sel[k] && !kept[k]) rejected += 1.0, any = true;
    }
    rows_rejected += any ? 1.0 : 0.0;
  }
  put(metrics, m++, math::verl_masked_mean(rejected, n));
  put(metrics, m++, rows_rejected / static_cast<double>(B));  // verl: over every row
}

const std::vector<std::string>& variance_proxy_metric_names() {
  static const std::vector<std::string> names = {"proxy1_signal_strength", "proxy2_total_power",
                                                 "proxy3_pure_noise", "expected_a_squared", "expected_w"};
  return names;
}

namespace {

void check_variance_proxy(const VarianceProxyInputs& in, double gradient_norm, const TensorView& metrics,
                          const Device& dev) {
  if (!(gradient_norm >= 0.0) && !std::isnan(gradient_norm))
    value_error("gradient_norm: expected a norm >= 0 (or None), got ", gradient_norm);
  check_ndim(in.logp, "logp", {2});
  const bool gpu = dev.type != DeviceType::CPU;
  const auto check_real = [&](const TensorView& v, const char* name) {
    check_shape_equal(v, name, in.logp, "logp");
    if (gpu)
      check_dtype(v, name, {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16});
    else
      check_dtype(v, name, {DType::Float32, DType::Float64});
    check_on(v, name, dev);
  };
  check_real(in.logp, "logp");
  check_real(in.sum_pi_squared, "sum_pi_squared");
  check_real(in.advantages, "advantages");
  check_shape_equal(in.mask, "mask", in.logp, "logp");
  detail::check_mask_dtype(in.mask, "mask");
  check_on(in.mask, "mask", dev);
  if (in.is_weights.data != nullptr) check_real(in.is_weights, "is_weights");
  check_metrics_out(metrics, variance_proxy_metric_names().size(), dev);
}

}  // namespace

void check_variance_proxy_args(const VarianceProxyInputs& in, double gradient_norm,
                               const TensorView& metrics) {
  check_variance_proxy(in, gradient_norm, metrics, in.logp.device);
}

void variance_proxy_cpu(const VarianceProxyInputs& in, double gradient_norm, const TensorView& metrics) {
  check_variance_proxy(in, gradient_norm, metrics, Device{});
  const int64_t B = in.logp.shape[0], T = in.logp.shape[1];
  if (B == 0) value_error("logp: expected at least one row, got shape ", in.logp.shape_str());
  const bool has_is = in.is_weights.data != nullptr;
  double power = 0.0, a2 = 0.0, w = 0.0;
  for (int64_t i = 0; i < B; ++i) {
    double sa = 0.0, sw = 0.0, swo = 0.0, sr = 0.0, len = 0.0;
    for (int64_t t = 0; t < T; ++t) {
      if (!read_mask(in.mask, i, t)) continue;
      const auto at = [&](const TensorView& v, const char* name) {
        const double x = read_real(v, i, t);
        if (!std::isfinite(x))
          value_error(name, ": element (", i, ", ", t, ") is ", x,
                      " at a selected position; expected a finite value");
        return x;
      };
      const double lp = at(in.logp, "logp"), spp = at(in.sum_pi_squared, "sum_pi_squared");
      const double a = at(in.advantages, "advantages"), rho = has_is ? at(in.is_weights, "is_weights") : 1.0;
      const double wt = math::otb_token_weight(lp, spp, rho);
      sa += a, sw += wt, swo += math::variance_proxy_unweighted(wt, rho), sr += rho, len += 1.0;
    }
    const math::VarianceProxyRow r = math::variance_proxy_row(sa, sw, swo, sr, len, has_is);
    power += r.power, a2 += r.a2, w += r.w;
  }
  double out[5];
  math::variance_proxy_metrics(power, a2, w, static_cast<double>(B), gradient_norm, out);
  for (size_t k = 0; k < 5; ++k) put(metrics, k, out[k]);
}

}  // namespace grpokit
