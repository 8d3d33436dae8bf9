#include "grpokit/estimators.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "engine_util.hpp"
#include "grpokit/math/advantages.hpp"
#include "grpokit/math/estimators.hpp"

namespace grpokit {
namespace {

using detail::GroupLayout;
using detail::read_mask;
using detail::read_real;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

struct NamedEstimator {
  const char* name;
  Estimator value;
};
constexpr NamedEstimator kEstimators[] = {
    {"grpo", Estimator::Grpo},
    {"rloo", Estimator::Rloo},
    {"reinforce_pp", Estimator::ReinforcePP},
    {"reinforce_pp_baseline", Estimator::ReinforcePPBaseline},
    {"remax", Estimator::Remax},
    {"opo", Estimator::Opo},
    {"grpo_passk", Estimator::GrpoPassk},
    {"gpg", Estimator::Gpg},
    {"normalize_then_sum", Estimator::NormalizeThenSum},
    {"optimal_token_baseline", Estimator::OptimalTokenBaseline},
    {"tir_optimal_token_baseline", Estimator::TirOptimalTokenBaseline},
};

bool is_otb(Estimator e) {
  return e == Estimator::OptimalTokenBaseline || e == Estimator::TirOptimalTokenBaseline;
}

bool needs_groups(Estimator e) { return e != Estimator::ReinforcePP && e != Estimator::Remax; }

// ---- validation ---------------------------------------------------------------------------------

// Every array of a call lives on `dev` (the rewards' device): the CPU engine checks values too, the
// CUDA launchers only what the host knows (reading device values would synchronise).
void check_on(const TensorView& t, const char* name, const Device& dev) {
  if (dev.type == DeviceType::CPU) return check_cpu(t, name);
  if (t.device != dev)
    device_error(name, " is on ", device_name(t.device), " but rewards is on ", device_name(dev),
                 "; all arrays of one call must be on the same device");
}

void check_real(const TensorView& t, const char* name, const Device& dev) {
  if (dev.type == DeviceType::CPU)
    check_dtype(t, name, {DType::Float32, DType::Float64});
  else  // the GPU reads half precision too (float32 arithmetic at least)
    check_dtype(t, name, {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16});
  check_on(t, name, dev);
}

void check_token_array(const TensorView& t, const char* name, const TensorView& mask, const Device& dev) {
  check_ndim(t, name, {2});
  check_real(t, name, dev);
  check_shape_equal(t, name, mask, "mask");
}

// Finite at selected positions (NaN/inf in padding is allowed: masks select, never multiply).
// Host arrays only: a device array's values are not read.
void check_finite_selected(const TensorView& t, const char* name, const TensorView& mask) {
  if (t.device.type != DeviceType::CPU || mask.device.type != DeviceType::CPU) return;
  for (int64_t i = 0; i < t.shape[0]; ++i)
    for (int64_t j = 0; j < t.shape[1]; ++j)
      if (read_mask(mask, i, j) && !std::isfinite(read_real(t, i, j)))
        value_error(name, ": element (", i, ", ", j, ") is ", read_real(t, i, j),
                    " at a selected position; values must be finite where mask is set");
}

void check_groups(const EstimatorInputs& in, const EstimatorOptions& opt, int64_t B, const Device& dev) {
  if (in.group_ids.defined()) {
    check_ndim(in.group_ids, "group_ids", {1});
    check_dtype(in.group_ids, "group_ids", {DType::Int32, DType::Int64});
    check_on(in.group_ids, "group_ids", dev);
    if (in.group_ids.shape[0] != B)
      value_error("group_ids: expected ", B, " ids (one per completion), got ", in.group_ids.shape[0]);
    return;
  }
  if (opt.group_size <= 0)
    value_error("group_size: expected a positive integer (or pass group_ids), got ", opt.group_size);
  if (B % opt.group_size != 0)
    value_error("group_size: the batch of ", B, " completions is not a whole number of groups of ",
                opt.group_size, "; pass group_ids for uneven groups");
}

void check_inputs(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                  const TensorView& returns, const Device& dev) {
  const char* est = estimator_name(opt.estimator);
  const TensorView& r = in.rewards;
  check_real(r, "rewards", dev);
  check_ndim(r, "rewards", {1, 2});
  const int64_t B = r.shape[0];
  if (B == 0) value_error("rewards: expected at least one completion, got an empty array");
  if (!(opt.epsilon >= 0.0) || std::isinf(opt.epsilon))
    value_error("epsilon: expected a finite value >= 0, got ", opt.epsilon);
  if (!(opt.final_epsilon >= 0.0) || std::isinf(opt.final_epsilon))
    value_error("final_epsilon: expected a finite value >= 0, got ", opt.final_epsilon);

  if (is_token_estimator(opt.estimator)) {
    if (!in.mask.defined())
      value_error("mask: estimator '", est, "' works on tokens and needs a (B, T) mask");
    check_ndim(in.mask, "mask", {2});
    detail::check_mask_dtype(in.mask, "mask");
    check_on(in.mask, "mask", dev);
    if (in.mask.shape[0] != B)
      value_error("mask: expected ", B, " rows (one per completion), got shape ", in.mask.shape_str());
    if (r.ndim == 2) check_shape_equal(r, "rewards", in.mask, "mask");
    if (in.reward_weights.defined())
      value_error("reward_weights: estimator '", est, "' takes token rewards (B, T), not several "
                  "reward functions; combine them first");
    check_shape_equal(out, "out", in.mask, "mask");
    if (returns.defined()) {
      check_shape_equal(returns, "returns", in.mask, "mask");
      check_dtype(returns, "returns", {r.dtype});
      check_writable(returns, "returns");
    }
    if (in.lengths.defined()) value_error("lengths: estimator '", est, "' takes a mask, not lengths");
  } else {
    if (returns.defined()) value_error("returns: only token estimators produce returns");
    check_ndim(out, "out", {1});
    if (out.shape[0] != B) value_error("out: expected shape (", B, ",), got ", out.shape_str());
    if (in.reward_weights.defined()) {
      check_ndim(in.reward_weights, "reward_weights", {1});
      check_dtype(in.reward_weights, "reward_weights", {DType::Float64});
      check_cpu(in.reward_weights, "reward_weights");  // a few host values on every backend
      const int64_t K = r.ndim == 2 ? r.shape[1] : 1;
      if (in.reward_weights.shape[0] != K)
        value_error("reward_weights: expected ", K, " weights (one per reward column of rewards ",
                    r.shape_str(), "), got ", in.reward_weights.shape[0]);
      for (int64_t k = 0; k < K; ++k)
        if (!std::isfinite(read_real(in.reward_weights, k)))
          value_error("reward_weights: element ", k, " is ", read_real(in.reward_weights, k),
                      "; weights must be finite");
    }
    if (in.mask.defined() && in.lengths.defined())
      value_error("lengths: pass either mask or lengths, not both");
    if (in.mask.defined()) {
      check_ndim(in.mask, "mask", {2});
      detail::check_mask_dtype(in.mask, "mask");
      check_on(in.mask, "mask", dev);
      if (in.mask.shape[0] != B)
        value_error("mask: expected ", B, " rows (one per completion), got shape ", in.mask.shape_str());
    }
    if (in.lengths.defined()) {
      check_ndim(in.lengths, "lengths", {1});
      check_dtype(in.lengths, "lengths", {DType::Int32, DType::Int64, DType::Float32, DType::Float64});
      check_on(in.lengths, "lengths", dev);
      if (in.lengths.shape[0] != B)
        value_error("lengths: expected ", B, " lengths (one per completion), got ", in.lengths.shape[0]);
    }
  }
  check_dtype(out, "out", {r.dtype});
  check_on(out, "out", dev);
  check_writable(out, "out");
  if (out.data == r.data) value_error("out: must not alias rewards");

  if (opt.estimator == Estimator::Remax) {
    if (!in.baseline_rewards.defined())
      value_error("baseline_rewards: estimator 'remax' needs the (B,) rewards of the greedy completions");
    check_ndim(in.baseline_rewards, "baseline_rewards", {1});
    check_real(in.baseline_rewards, "baseline_rewards", dev);
    if (in.baseline_rewards.shape[0] != B)
      value_error("baseline_rewards: expected ", B, " rewards, got ", in.baseline_rewards.shape[0]);
    for (int64_t i = 0; dev.type == DeviceType::CPU && i < B; ++i)
      if (!std::isfinite(read_real(in.baseline_rewards, i)))
        value_error("baseline_rewards: element ", i, " is ", read_real(in.baseline_rewards, i),
                    "; values must be finite");
  } else if (in.baseline_rewards.defined()) {
    value_error("baseline_rewards: only estimator 'remax' takes greedy baseline rewards");
  }

  if (is_otb(opt.estimator)) {
    if (!in.logp.defined() || !in.sum_pi_squared.defined())
      value_error("logp, sum_pi_squared: estimator '", est, "' needs the (B, T) "
                  "log-probabilities of the sampled tokens and Σπ² per position");
    check_token_array(in.logp, "logp", in.mask, dev);
    check_token_array(in.sum_pi_squared, "sum_pi_squared", in.mask, dev);
    check_finite_selected(in.logp, "logp", in.mask);
    check_finite_selected(in.sum_pi_squared, "sum_pi_squared", in.mask);
    if (in.is_weights.defined()) {
      check_token_array(in.is_weights, "is_weights", in.mask, dev);
      check_finite_selected(in.is_weights, "is_weights", in.mask);
    }
  } else if (opt.estimator == Estimator::Rloo) {
    // KL in the reward (TRL RLOOTrainer): the log-probs are needed when beta != 0, unused otherwise.
    if (!std::isfinite(opt.kl_beta)) value_error("beta: expected a finite value, got ", opt.kl_beta);
    if (opt.kl_beta != 0.0 && (!in.logp.defined() || !in.ref_logp.defined() || !in.mask.defined()))
      value_error("logp, ref_logp: estimator 'rloo' with beta != 0 needs the (B, T) log-probs of the "
                  "policy and the reference, and the mask");
    if (in.logp.defined() || in.ref_logp.defined()) {
      if (!in.mask.defined()) value_error("mask: logp and ref_logp need the (B, T) mask");
      for (const auto& [t, name] : {std::pair{in.logp, "logp"}, std::pair{in.ref_logp, "ref_logp"}}) {
        if (!t.defined()) continue;
        check_token_array(t, name, in.mask, dev);
        if (opt.kl_beta != 0.0) check_finite_selected(t, name, in.mask);
      }
    }
    if (in.sum_pi_squared.defined() || in.is_weights.defined())
      value_error("sum_pi_squared, is_weights: only the optimal-token-baseline estimators take them");
  } else if (in.logp.defined() || in.sum_pi_squared.defined() || in.is_weights.defined()) {
    value_error("logp, sum_pi_squared, is_weights: only the optimal-token-baseline estimators (and "
                "'rloo', for its KL in the reward) take them");
  }
  if (in.ref_logp.defined() && opt.estimator != Estimator::Rloo)
    value_error("ref_logp: only estimator 'rloo' takes reference log-probs (KL in the reward)");
  if (!(opt.reward_clip_min <= opt.reward_clip_max))
    value_error("reward_clip_range: expected min <= max, got (", opt.reward_clip_min, ", ",
                opt.reward_clip_max, ")");

  if (opt.estimator == Estimator::Opo && !in.mask.defined() && !in.lengths.defined())
    value_error("lengths: estimator 'opo' weighs rewards by completion length; pass mask (B, T) or lengths (B,)");
  if (opt.estimator == Estimator::ReinforcePP && !(std::isfinite(opt.gamma) && opt.gamma >= 0.0))
    value_error("gamma: expected a finite discount >= 0, got ", opt.gamma);
  if (opt.estimator == Estimator::Gpg && !(std::isfinite(opt.f_norm) && opt.f_norm != 0.0))
    value_error("f_norm: expected a finite non-zero value, got ", opt.f_norm);
  if (opt.batch_norm == BatchNorm::MaskedWhiten && is_token_estimator(opt.estimator))
    value_error("batch_norm: token estimators whiten (or not) by definition");
  if (needs_groups(opt.estimator)) check_groups(in, opt, B, dev);
}

// ---- shared pieces --------------------------------------------------------------------------------

// R_i = Σ_k w_k r_ik over non-NaN r_ik (TRL's weighted nansum); NaN when every r_ik is NaN (an
// unscorable completion). ±inf is an error.
std::vector<double> combined_rewards(const TensorView& r, const TensorView& weights) {
  const int64_t B = r.shape[0], K = r.ndim == 2 ? r.shape[1] : 1;
  std::vector<double> R(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) {
    double sum = 0.0;
    bool any = false;
    for (int64_t k = 0; k < K; ++k) {
      const double v = read_real(r, i, k);
      if (std::isinf(v)) {
        if (r.ndim == 2) value_error("rewards: element (", i, ", ", k, ") is ", v, "; rewards must be finite (NaN marks an unscorable reward)");
        value_error("rewards: element ", i, " is ", v, "; rewards must be finite (NaN marks an unscorable completion)");
      }
      if (math::is_nan(v)) continue;
      sum += (weights.defined() ? read_real(weights, k) : 1.0) * v;
      any = true;
    }
    R[i] = any ? sum : kNaN;
  }
  return R;
}

// Row lengths L_i: selected tokens of the mask, the given lengths, or 1 (unweighted rows).
std::vector<double> row_lengths(const EstimatorInputs& in, int64_t B) {
  std::vector<double> L(static_cast<size_t>(B), 1.0);
  if (in.mask.defined()) {
    for (int64_t i = 0; i < B; ++i) {
      double n = 0.0;
      for (int64_t t = 0; t < in.mask.shape[1]; ++t) n += read_mask(in.mask, i, t) ? 1.0 : 0.0;
      L[i] = n;
    }
  } else if (in.lengths.defined()) {
    for (int64_t i = 0; i < B; ++i) {
      const double v = in.lengths.dtype == DType::Int32 || in.lengths.dtype == DType::Int64
                           ? static_cast<double>(detail::read_int(in.lengths, i))
                           : read_real(in.lengths, i);
      if (!(v >= 0.0) || std::isinf(v)) value_error("lengths: element ", i, " is ", v, "; expected a finite length >= 0");
      L[i] = v;
    }
  }
  return L;
}

void require_pairs(const GroupLayout& layout, const char* est) {
  for (int64_t g = 0; g < layout.num_groups(); ++g)
    if (layout.size(g) < 2)
      value_error("group_size: group ", g, " has a single completion; estimator '", est,
                  "' needs at least 2 completions per group");
}

// Group mean over valid values (two-pass around a shift, as the foundation: all-equal stays exact).
double group_mean(const std::vector<double>& x, const int64_t* members, int64_t n) {
  math::MomentSums s;
  for (int64_t k = 0; k < n; ++k) s.add(x[members[k]]);
  return s.mean();
}

double group_std(const std::vector<double>& x, const int64_t* members, int64_t n, double mean,
                 StdDivisor divisor) {
  if (divisor == StdDivisor::None) return -1.0;
  math::SquaredDeviations m2;
  double count = 0.0;
  for (int64_t k = 0; k < n; ++k) {
    if (math::is_nan(x[members[k]])) continue;
    math::add_sq_dev(m2, x[members[k]], mean);
    count += 1.0;
  }
  return math::std_from_m2(m2, count, divisor == StdDivisor::Sample);
}

// The final batch normalisation over rows whose value is not NaN; NaN rows end as 0.
void batch_normalise(std::vector<double>& A, const std::vector<double>& L, BatchNorm how,
                     double final_eps) {
  const size_t B = A.size();
  if (how == BatchNorm::Standardise) {
    // TRL: (x − nanmean) / (nanstd + eps), nanstd with Bessel's correction; one value → NaN → 0.
    double sum = 0.0, n = 0.0;
    for (size_t i = 0; i < B; ++i)
      if (!math::is_nan(A[i])) sum += A[i], n += 1.0;
    const double mean = n > 0.0 ? sum / n : 0.0;
    math::SquaredDeviations m2;
    for (size_t i = 0; i < B; ++i) math::add_sq_dev(m2, A[i], mean);
    for (size_t i = 0; i < B; ++i)
      A[i] = math::batch_standardised(A[i], mean, math::std_from_m2(m2, n, true), n, final_eps);
  } else if (how == BatchNorm::MaskedWhiten) {
    // verl_F.masked_whiten of the (B, T) broadcast A_i·m_it: rows weigh by their length L_i.
    double sum = 0.0, n = 0.0;
    for (size_t i = 0; i < B; ++i)
      if (!math::is_nan(A[i])) sum += L[i] * A[i], n += L[i];
    if (n <= 1.0)
      value_error("mask: masked whitening needs more than one selected token over the scorable "
                  "completions, got ", n);
    const double mean = math::verl_masked_mean(sum, n);
    double ss = 0.0;
    for (size_t i = 0; i < B; ++i)
      if (!math::is_nan(A[i])) ss += L[i] * (A[i] - mean) * (A[i] - mean);
    const double var = math::verl_masked_var(ss, n);
    for (size_t i = 0; i < B; ++i) A[i] = math::is_nan(A[i]) ? 0.0 : math::verl_whiten(A[i], mean, var);
  } else {
    for (double& a : A)
      if (math::is_nan(a)) a = 0.0;
  }
}

// ---- outcome estimators (B,) --------------------------------------------------------------------

// The foundation's group advantages on the combined rewards (one definition of GRPO).
std::vector<double> grpo_like(const std::vector<double>& R, const TensorView& group_ids,
                              const EstimatorOptions& opt, Baseline baseline) {
  const int64_t B = static_cast<int64_t>(R.size());
  std::vector<double> A(R.size());
  AdvantageOptions a;
  a.group_size = opt.group_size;
  a.baseline = baseline;
  a.std = baseline == Baseline::LeaveOneOut ? StdDivisor::None : opt.std;
  a.std_scope = opt.std_scope;
  a.epsilon = opt.epsilon;
  advantages_cpu(make_view(const_cast<double*>(R.data()), DType::Float64, {B}), group_ids, a,
                 make_view(A.data(), DType::Float64, {B}));
  return A;
}

std::vector<double> outcome(const EstimatorInputs& in, const EstimatorOptions& opt) {
  const int64_t B = in.rewards.shape[0];
  const char* est = estimator_name(opt.estimator);
  std::vector<double> R = combined_rewards(in.rewards, in.reward_weights);
  const GroupLayout layout = detail::make_layout(B, in.group_ids, opt.group_size);
  const std::vector<double> L = row_lengths(in, B);
  std::vector<double> A(R.size(), kNaN);  // NaN: no signal (excluded from batch statistics)

  switch (opt.estimator) {
    case Estimator::Grpo:
      return grpo_like(R, in.group_ids, opt, opt.baseline);

    case Estimator::Rloo: {
      require_pairs(layout, est);
      for (int64_t i = 0; i < B; ++i) {
        double kl = 0.0;
        if (opt.kl_beta != 0.0)
          for (int64_t t = 0; t < in.mask.shape[1]; ++t)
            if (read_mask(in.mask, i, t)) kl += read_real(in.logp, i, t) - read_real(in.ref_logp, i, t);
        R[i] = math::rloo_shaped_reward(R[i], opt.reward_clip_min, opt.reward_clip_max, opt.kl_beta, kl);
      }
      const std::vector<double> loo = grpo_like(R, in.group_ids, opt, Baseline::LeaveOneOut);
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        int64_t valid = 0;
        for (int64_t k = 0; k < layout.size(g); ++k) valid += math::is_nan(R[m[k]]) ? 0 : 1;
        // A lone scorable completion has no leave-one-out baseline (TRL: 0/0 = NaN, then 0).
        for (int64_t k = 0; k < layout.size(g); ++k)
          if (valid >= 2 && !math::is_nan(R[m[k]])) A[m[k]] = loo[m[k]];
      }
      break;
    }

    case Estimator::ReinforcePPBaseline:
    case Estimator::Gpg: {
      require_pairs(layout, est);
      double alpha = 1.0;
      if (opt.estimator == Estimator::Gpg) {
        double rows = 0.0, nonzero = 0.0;
        for (double v : R)
          if (!math::is_nan(v)) rows += 1.0, nonzero += v != 0.0 ? 1.0 : 0.0;
        alpha = math::gpg_alpha(rows, nonzero) / opt.f_norm;
      }
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        const double mean = group_mean(R, m, layout.size(g));
        for (int64_t k = 0; k < layout.size(g); ++k)
          if (!math::is_nan(R[m[k]])) A[m[k]] = alpha * (R[m[k]] - mean);
      }
      break;
    }

    case Estimator::Opo: {
      require_pairs(layout, est);
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        double num = 0.0, den = 0.0;
        for (int64_t k = 0; k < layout.size(g); ++k)
          if (!math::is_nan(R[m[k]])) num += L[m[k]] * R[m[k]], den += L[m[k]];
        if (den == 0.0) {
          bool any = false;
          for (int64_t k = 0; k < layout.size(g); ++k) any = any || !math::is_nan(R[m[k]]);
          if (any)
            value_error("lengths: group ", g, " has total length 0; the OPO baseline Σ L_j R_j / Σ L_j "
                        "is undefined");
          continue;
        }
        const double base = math::opo_baseline(num, den);
        for (int64_t k = 0; k < layout.size(g); ++k)
          if (!math::is_nan(R[m[k]])) A[m[k]] = R[m[k]] - base;
      }
      break;
    }

    case Estimator::GrpoPassk: {
      require_pairs(layout, est);
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        const int64_t n = layout.size(g);
        int64_t best = -1, valid = 0;
        for (int64_t k = 0; k < n; ++k) {
          if (math::is_nan(R[m[k]])) continue;
          ++valid;
          A[m[k]] = 0.0;
          if (best < 0 || R[m[k]] > R[best]) best = m[k];
        }
        if (valid < 2) continue;
        double second = -std::numeric_limits<double>::infinity();
        for (int64_t k = 0; k < n; ++k)
          if (m[k] != best && !math::is_nan(R[m[k]]) && R[m[k]] > second) second = R[m[k]];
        const double mean = group_mean(R, m, n);
        const double sd = group_std(R, m, n, mean, opt.std);
        const double gap = R[best] - second;
        A[best] = math::passk_advantage(gap, sd, opt.epsilon);
      }
      break;
    }

    case Estimator::NormalizeThenSum: {
      require_pairs(layout, est);
      const TensorView& r = in.rewards;
      const int64_t K = r.ndim == 2 ? r.shape[1] : 1;
      std::vector<double> col(static_cast<size_t>(B));
      std::vector<double> S(static_cast<size_t>(B), 0.0);
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t i = 0; i < B; ++i) col[i] = read_real(r, i, k);
        const double w = in.reward_weights.defined() ? read_real(in.reward_weights, k) : 1.0;
        for (int64_t g = 0; g < layout.num_groups(); ++g) {
          const int64_t* m = layout.members(g);
          const double mean = group_mean(col, m, layout.size(g));
          const double sd = group_std(col, m, layout.size(g), mean, opt.std);
          for (int64_t j = 0; j < layout.size(g); ++j)  // NaN rewards add nothing (TRL's nansum)
            S[m[j]] += w * math::advantage_value(col[m[j]], mean, sd, opt.epsilon);
        }
      }
      for (int64_t i = 0; i < B; ++i) A[i] = math::is_nan(R[i]) ? kNaN : S[i];
      break;
    }

    default:
      break;
  }
  batch_normalise(A, L, opt.batch_norm, opt.final_epsilon);
  return A;
}

// ---- token estimators (B, T) --------------------------------------------------------------------

struct TokenRewards {
  int64_t B, T;
  std::vector<double> r;     // B*T, 0 where unselected
  std::vector<char> sel;     // B*T selection
  double at(int64_t i, int64_t t) const { return r[i * T + t]; }
  bool on(int64_t i, int64_t t) const { return sel[i * T + t] != 0; }
};

// Token rewards from (B, T) or from (B,) outcome rewards put on each row's last selected token.
TokenRewards token_rewards(const EstimatorInputs& in) {
  TokenRewards tr{in.mask.shape[0], in.mask.shape[1], {}, {}};
  tr.r.assign(static_cast<size_t>(tr.B * tr.T), 0.0);
  tr.sel.assign(static_cast<size_t>(tr.B * tr.T), 0);
  for (int64_t i = 0; i < tr.B; ++i) {
    int64_t last = -1;
    for (int64_t t = 0; t < tr.T; ++t) {
      if (!read_mask(in.mask, i, t)) continue;
      tr.sel[i * tr.T + t] = 1;
      last = t;
      if (in.rewards.ndim == 2) {
        const double v = read_real(in.rewards, i, t);
        if (!std::isfinite(v))
          value_error("rewards: element (", i, ", ", t, ") is ", v,
                      " at a selected position; token rewards must be finite where mask is set");
        tr.r[i * tr.T + t] = v;
      }
    }
    if (in.rewards.ndim == 1) {
      const double v = read_real(in.rewards, i);
      if (!std::isfinite(v))
        value_error("rewards: element ", i, " is ", v, "; token estimators need finite rewards");
      if (last >= 0) tr.r[i * tr.T + last] = v;
    }
  }
  return tr;
}

// Undiscounted reward-to-go of r·m at every position (verl's flip-cumsum-flip).
std::vector<double> reward_to_go(const TokenRewards& tr) {
  std::vector<double> G(tr.r.size());
  for (int64_t i = 0; i < tr.B; ++i) {
    double run = 0.0;
    for (int64_t t = tr.T - 1; t >= 0; --t) {
      run += tr.at(i, t);  // unselected positions hold 0
      G[i * tr.T + t] = run;
    }
  }
  return G;
}

void token_estimator(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                     const TensorView& returns) {
  const TokenRewards tr = token_rewards(in);
  const int64_t B = tr.B, T = tr.T;
  std::vector<double> A(static_cast<size_t>(B * T), 0.0), G;

  if (opt.estimator == Estimator::ReinforcePP) {
    G.assign(A.size(), 0.0);
    double sum = 0.0, n = 0.0;
    for (int64_t i = 0; i < B; ++i) {
      double run = 0.0;
      for (int64_t t = T - 1; t >= 0; --t) {
        run = math::return_to_go_step(tr.at(i, t), run, opt.gamma, tr.on(i, t), &G[i * T + t]);
        if (tr.on(i, t)) sum += G[i * T + t], n += 1.0;
      }
    }
    if (n <= 1.0)
      value_error("mask: masked whitening needs more than one selected token, got ", n);
    const double mean = math::verl_masked_mean(sum, n);
    double ss = 0.0;
    for (size_t k = 0; k < A.size(); ++k)
      if (tr.sel[k]) ss += (G[k] - mean) * (G[k] - mean);
    const double var = math::verl_masked_var(ss, n);
    for (size_t k = 0; k < A.size(); ++k) A[k] = tr.sel[k] ? math::verl_whiten(G[k], mean, var) : 0.0;
  } else if (opt.estimator == Estimator::Remax) {
    G = reward_to_go(tr);
    for (int64_t i = 0; i < B; ++i) {
      const double b = read_real(in.baseline_rewards, i);
      for (int64_t t = 0; t < T; ++t) A[i * T + t] = tr.on(i, t) ? G[i * T + t] - b : 0.0;
    }
  } else {  // (Tir)OptimalTokenBaseline
    G = reward_to_go(tr);
    const bool compact = opt.estimator == Estimator::TirOptimalTokenBaseline;
    const GroupLayout layout = detail::make_layout(B, in.group_ids, opt.group_size);
    require_pairs(layout, estimator_name(opt.estimator));
    // W: cumulative path-variance proxy; slot: the position a token is compared at across the
    // group (t, or its rank among the row's selected tokens for the multi-turn variant).
    std::vector<double> W(A.size(), 0.0), L(static_cast<size_t>(B), 0.0);
    std::vector<int64_t> slot(A.size(), -1);
    for (int64_t i = 0; i < B; ++i) {
      double cum = 0.0;
      for (int64_t t = 0; t < T; ++t) {
        if (!tr.on(i, t)) continue;
        const double rho = in.is_weights.defined() ? read_real(in.is_weights, i, t) : 1.0;
        cum += math::otb_token_weight(read_real(in.logp, i, t), read_real(in.sum_pi_squared, i, t), rho);
        W[i * T + t] = cum;
        slot[i * T + t] = compact ? static_cast<int64_t>(L[i]) : t;
        L[i] += 1.0;
      }
    }
    std::vector<double> num(static_cast<size_t>(T)), den(static_cast<size_t>(T));
    std::vector<int64_t> rows;
    for (int64_t g = 0; g < layout.num_groups(); ++g) {
      rows.clear();
      for (int64_t k = 0; k < layout.size(g); ++k)  // the multi-turn variant skips empty rows
        if (!compact || L[layout.members(g)[k]] > 0.0) rows.push_back(layout.members(g)[k]);
      std::fill(num.begin(), num.end(), 0.0);
      std::fill(den.begin(), den.end(), 0.0);
      for (int64_t i : rows)
        for (int64_t t = 0; t < T; ++t)
          if (tr.on(i, t)) num[slot[i * T + t]] += G[i * T + t] * W[i * T + t], den[slot[i * T + t]] += W[i * T + t];
      // Zero tail: past the second-longest completion only the longest one remains, and its own
      // return would be its baseline; verl zeroes the baseline there instead.
      int64_t longest = -1, count_max = 0;
      double lmax = -1.0, lsecond = -1.0;
      for (int64_t i : rows) {
        if (L[i] > lmax) lsecond = lmax, lmax = L[i], longest = i, count_max = 1;
        else if (L[i] == lmax) ++count_max, lsecond = L[i];
        else if (L[i] > lsecond) lsecond = L[i];
      }
      const bool alone = rows.size() == 1;  // verl: a single trajectory keeps its return
      for (int64_t i : rows) {
        const bool zero_tail = math::otb_has_zero_tail(opt.handle_zero_tail, alone, i == longest,
                                                       static_cast<double>(count_max), lmax, lsecond);
        for (int64_t t = 0; t < T; ++t) {
          if (!tr.on(i, t)) continue;
          const int64_t s = slot[i * T + t];
          const bool zero = alone || (zero_tail && s >= static_cast<int64_t>(lsecond));
          const double b = math::otb_baseline(num[s], den[s], opt.otb_epsilon, zero);
          A[i * T + t] = G[i * T + t] - b;
        }
      }
    }
  }
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) {
      detail::write_real(out, i, t, A[i * T + t]);
      if (returns.defined()) detail::write_real(returns, i, t, G[i * T + t]);
    }
}

}  // namespace

Estimator parse_estimator(const std::string& name) {
  for (const auto& e : kEstimators)
    if (name == e.name) return e.value;
  std::string valid;
  for (const auto& e : kEstimators) valid += (valid.empty() ? "'" : ", '") + std::string(e.name) + "'";
  value_error("estimator: expected one of ", valid, ", got '", name, "'");
}

const char* estimator_name(Estimator e) {
  for (const auto& n : kEstimators)
    if (n.value == e) return n.name;
  return "?";
}

bool is_token_estimator(Estimator e) {
  return e == Estimator::ReinforcePP || e == Estimator::Remax || is_otb(e);
}

BatchNorm parse_batch_norm(const std::string& name) {
  if (name == "none") return BatchNorm::None;
  if (name == "standardise") return BatchNorm::Standardise;
  if (name == "masked_whiten") return BatchNorm::MaskedWhiten;
  value_error("batch_norm: expected one of 'none', 'standardise', 'masked_whiten', got '", name, "'");
}

void check_estimator_args(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                          const TensorView& returns) {
  check_inputs(in, opt, out, returns, in.rewards.device);
}

void estimator_advantages_cpu(const EstimatorInputs& in, const EstimatorOptions& opt,
                              const TensorView& out, const TensorView& returns) {
  check_inputs(in, opt, out, returns, Device{});
  if (is_token_estimator(opt.estimator)) {
    token_estimator(in, opt, out, returns);
    return;
  }
  const std::vector<double> A = outcome(in, opt);
  for (int64_t i = 0; i < static_cast<int64_t>(A.size()); ++i) detail::write_real(out, i, 0, A[i]);
}

}  // namespace grpokit
