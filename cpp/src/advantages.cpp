#include "grpokit/advantages.hpp"

#include <cmath>
#include <vector>

#include "engine_util.hpp"
#include "grpokit/math/advantages.hpp"

namespace grpokit {
namespace {

using detail::GroupLayout;
using detail::make_layout;

template <class T>
void run(const TensorView& rewards, const GroupLayout& layout, const AdvantageOptions& opt,
         const TensorView& out) {
  const T* r = rewards.ptr<const T>();
  T* a = out.ptr<T>();
  const int64_t rs = rewards.strides[0], os = out.strides[0];
  const int64_t B = rewards.shape[0];
  auto reward = [&](int64_t i) { return static_cast<double>(r[i * rs]); };
  const bool sample = opt.std == StdDivisor::Sample;

  // The std (< 0: no scaling) in units of its sums' scale: nothing overflows at ±DBL_MAX.
  double batch_sd = -1.0, batch_scale = 1.0;
  if (opt.std != StdDivisor::None && opt.std_scope == StdScope::Batch) {
    math::MomentSums s;
    for (int64_t i = 0; i < B; ++i) s.add(reward(i));
    math::SquaredDeviations m2;
    for (int64_t i = 0; i < B; ++i) math::add_sq_dev(m2, reward(i), s);
    batch_sd = math::std_from_m2(m2, s.n, sample);
    batch_scale = s.scale;
  }

  const bool loo = opt.baseline == Baseline::LeaveOneOut;
  for (int64_t g = 0; g < layout.num_groups(); ++g) {
    const int64_t* members = layout.rows.data() + layout.offsets[g];
    const int64_t n = layout.offsets[g + 1] - layout.offsets[g];
    math::MomentSums s;
    for (int64_t k = 0; k < n; ++k) s.add(reward(members[k]));
    double sd = batch_sd, scale = batch_scale;
    if (opt.std != StdDivisor::None && opt.std_scope == StdScope::Group) {
      math::SquaredDeviations m2;
      for (int64_t k = 0; k < n; ++k) math::add_sq_dev(m2, reward(members[k]), s);
      sd = math::std_from_m2(m2, s.n, sample);
      scale = s.scale;
    }
    for (int64_t k = 0; k < n; ++k)
      a[members[k] * os] =
          static_cast<T>(math::group_advantage(reward(members[k]), s, loo, sd, scale, opt.epsilon));
  }
}

bool needs_two_per_group(const AdvantageOptions& opt) {
  return opt.std != StdDivisor::None || opt.baseline == Baseline::LeaveOneOut;
}

}  // namespace

Baseline parse_baseline(const std::string& name) {
  if (name == "mean") return Baseline::Mean;
  if (name == "leave_one_out") return Baseline::LeaveOneOut;
  value_error("baseline: expected one of 'mean', 'leave_one_out', got '", name, "'");
}

StdDivisor parse_std_divisor(const std::string& name) {
  if (name == "none") return StdDivisor::None;
  if (name == "population") return StdDivisor::Population;
  if (name == "sample") return StdDivisor::Sample;
  value_error("std: expected one of 'none', 'population', 'sample', got '", name, "'");
}

StdScope parse_std_scope(const std::string& name) {
  if (name == "group") return StdScope::Group;
  if (name == "batch") return StdScope::Batch;
  value_error("std_scope: expected one of 'group', 'batch', got '", name, "'");
}

void check_advantage_args(const TensorView& rewards, const TensorView& group_ids, const AdvantageOptions& opt,
                          const TensorView& out) {
  check_ndim(rewards, "rewards", {1});
  check_dtype(rewards, "rewards", {DType::Float32, DType::Float64});
  const int64_t B = rewards.shape[0];
  if (B == 0) value_error("rewards: expected at least one reward, got an empty array");
  if (!(opt.epsilon >= 0.0) || std::isinf(opt.epsilon))
    value_error("epsilon: expected a finite value >= 0, got ", opt.epsilon);
  if (group_ids.defined()) {
    check_ndim(group_ids, "group_ids", {1});
    check_dtype(group_ids, "group_ids", {DType::Int32, DType::Int64});
    check_shape_equal(group_ids, "group_ids", rewards, "rewards");
    check_same_device(group_ids, "group_ids", rewards, "rewards");
  } else {
    if (opt.group_size <= 0)
      value_error("group_size: expected a positive integer (or pass group_ids), got ", opt.group_size);
    if (B % opt.group_size != 0)
      value_error("group_size: the batch of ", B, " rewards is not a whole number of groups of ",
                  opt.group_size, "; pass group_ids for uneven groups");
    if (opt.group_size < 2 && needs_two_per_group(opt))
      value_error(
          "group_size: groups of 1 completion have no spread; std normalisation and "
          "leave-one-out baselines need at least 2 completions per group");
  }
  check_shape_equal(out, "out", rewards, "rewards");
  check_dtype(out, "out", {rewards.dtype});
  check_same_device(out, "out", rewards, "rewards");
  check_writable(out, "out");
  if (out.data == rewards.data && B > 0) value_error("out: must not alias rewards");
}

void advantages_cpu(const TensorView& rewards, const TensorView& group_ids, const AdvantageOptions& opt,
                    const TensorView& out) {
  check_advantage_args(rewards, group_ids, opt, out);
  check_cpu(rewards, "rewards");
  const int64_t B = rewards.shape[0];

  // Value checks: NaN means "unscorable" (allowed); ±inf has no meaningful advantage.
  for (int64_t i = 0; i < B; ++i) {
    const double v = rewards.dtype == DType::Float32
                         ? static_cast<double>(rewards.ptr<const float>()[i * rewards.strides[0]])
                         : rewards.ptr<const double>()[i * rewards.strides[0]];
    if (std::isinf(v))
      value_error("rewards: element ", i, " is ", v,
                  "; rewards must be finite (NaN marks an unscorable completion)");
  }

  const GroupLayout layout = make_layout(B, group_ids, opt.group_size);
  if (needs_two_per_group(opt)) {
    for (int64_t g = 0; g < layout.num_groups(); ++g) {
      if (layout.offsets[g + 1] - layout.offsets[g] < 2)
        value_error("group_size: group ", g,
                    " has a single completion; std normalisation and "
                    "leave-one-out baselines need at least 2 completions per group");
    }
  }
  if (rewards.dtype == DType::Float32)
    run<float>(rewards, layout, opt, out);
  else
    run<double>(rewards, layout, opt, out);
}

}  // namespace grpokit
