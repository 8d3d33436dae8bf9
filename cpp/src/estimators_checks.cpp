// Advantage estimators: their names, and the checks every backend runs before it reads an array (the
// CPU engine checks values too; the CUDA launchers call check_estimator_args). The estimators:
// estimators.cpp.
#include <cmath>
#include <string>

#include "engine_util.hpp"
#include "estimators_internal.hpp"
#include "grpokit/estimators.hpp"

namespace grpokit {
namespace {

using detail::needs_groups;
using detail::read_mask;
using detail::read_real;

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
    {"maxrl", Estimator::MaxRl},
    {"batch_mean", Estimator::BatchMean},
    {"running", Estimator::Running},
};

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

// The running estimator's state in (options) and out (`returns`: (3,) float64, optional).
void check_running(const EstimatorOptions& opt, const TensorView& state, const Device& dev) {
  if (!(opt.running_count >= 0.0) || std::isinf(opt.running_count))
    value_error("state: expected a count >= 0, got ", opt.running_count);
  if (!std::isfinite(opt.running_mean)) value_error("state: expected a finite mean, got ", opt.running_mean);
  if (!(opt.running_std >= 0.0) || std::isinf(opt.running_std))
    value_error("state: expected a finite std >= 0, got ", opt.running_std);
  if (opt.baseline != Baseline::Mean)
    value_error("baseline: estimator 'running' subtracts the running mean; expected 'mean'");
  if (!state.defined()) return;
  check_ndim(state, "returns", {1});
  check_dtype(state, "returns", {DType::Float64});
  check_on(state, "returns", dev);
  check_writable(state, "returns");
  if (state.shape[0] != 3)
    value_error("returns: the running state has 3 values, got shape ", state.shape_str());
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
      value_error("reward_weights: estimator '", est,
                  "' takes token rewards (B, T), not several "
                  "reward functions; combine them first");
    check_shape_equal(out, "out", in.mask, "mask");
    if (returns.defined()) {
      check_shape_equal(returns, "returns", in.mask, "mask");
      check_dtype(returns, "returns", {r.dtype});
      check_writable(returns, "returns");
    }
    if (in.lengths.defined()) value_error("lengths: estimator '", est, "' takes a mask, not lengths");
  } else {
    if (returns.defined() && opt.estimator != Estimator::Running)
      value_error("returns: only token estimators produce returns");
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

  if (is_optimal_token_baseline(opt.estimator)) {
    if (!in.logp.defined() || !in.sum_pi_squared.defined())
      value_error("logp, sum_pi_squared: estimator '", est,
                  "' needs the (B, T) "
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
      value_error(
          "logp, ref_logp: estimator 'rloo' with beta != 0 needs the (B, T) log-probs of the "
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
    value_error(
        "logp, sum_pi_squared, is_weights: only the optimal-token-baseline estimators (and "
        "'rloo', for its KL in the reward) take them");
  }
  if (in.ref_logp.defined() && opt.estimator != Estimator::Rloo)
    value_error("ref_logp: only estimator 'rloo' takes reference log-probs (KL in the reward)");
  if (!(opt.reward_clip_min <= opt.reward_clip_max))
    value_error("reward_clip_range: expected min <= max, got (", opt.reward_clip_min, ", ",
                opt.reward_clip_max, ")");

  if (opt.estimator == Estimator::Opo && !in.mask.defined() && !in.lengths.defined())
    value_error(
        "lengths: estimator 'opo' weighs rewards by completion length; pass mask (B, T) or lengths (B,)");
  if (opt.estimator == Estimator::ReinforcePP && !(std::isfinite(opt.gamma) && opt.gamma >= 0.0))
    value_error("gamma: expected a finite discount >= 0, got ", opt.gamma);
  if (opt.estimator == Estimator::Gpg && !(std::isfinite(opt.f_norm) && opt.f_norm != 0.0))
    value_error("f_norm: expected a finite non-zero value, got ", opt.f_norm);
  if (opt.batch_norm == BatchNorm::MaskedWhiten && is_token_estimator(opt.estimator))
    value_error("batch_norm: token estimators whiten (or not) by definition");
  if (opt.estimator == Estimator::Running) check_running(opt, returns, dev);
  if (needs_groups(opt)) check_groups(in, opt, B, dev);
}

}  // namespace

namespace detail {

bool needs_groups(const EstimatorOptions& opt) {
  switch (opt.estimator) {
    case Estimator::ReinforcePP:
    case Estimator::Remax:
    case Estimator::Running:
      return false;
    case Estimator::BatchMean:
      return opt.std != StdDivisor::None && opt.std_scope == StdScope::Group;
    default:
      return true;
  }
}

void check_estimator_inputs(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                            const TensorView& returns, const Device& dev) {
  check_inputs(in, opt, out, returns, dev);
}

}  // namespace detail

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

bool is_optimal_token_baseline(Estimator e) {
  return e == Estimator::OptimalTokenBaseline || e == Estimator::TirOptimalTokenBaseline;
}

bool is_token_estimator(Estimator e) {
  return e == Estimator::ReinforcePP || e == Estimator::Remax || is_optimal_token_baseline(e);
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

}  // namespace grpokit
