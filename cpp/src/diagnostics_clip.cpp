// Clip-region membership and excess (§5.4) and the loss-value decomposition (Prop. 4): per-token
// reductions over (B, T) or (B,) arrays.
#include <algorithm>
#include <cmath>
#include <vector>

#include "diagnostics_common.hpp"
#include "grpokit/diagnostics.hpp"
#include "grpokit/interrupt.hpp"
#include "grpokit/math/diagnostics.hpp"

namespace grpokit {
namespace {

using diag::load_float;
using diag::load_int;

// Offset of element (i, t) of a (B,) or (B, T) view.
inline int64_t at(const TensorView& v, int64_t i, int64_t t) {
  return v.ndim == 1 ? i * v.strides[0] : i * v.strides[0] + t * v.strides[1];
}

void check_eps(double eps_low, double eps_high) {
  if (!(eps_low >= 0.0) || !(eps_high >= 0.0) || !std::isfinite(eps_low) || !std::isfinite(eps_high))
    value_error("epsilon: expected finite clip widths >= 0, got epsilon_low=", eps_low,
                ", epsilon_high=", eps_high);
}

// Rows between two looks at the clock for Ctrl-C: about 64k elements.
int rows_per_poll(int64_t T) {
  return static_cast<int>(std::max<int64_t>(1, (int64_t(1) << 16) / std::max<int64_t>(T, 1)));
}

}  // namespace

ClipRegionStats clip_region_cpu(const TensorView& ratios, const TensorView& advantages,
                                const TensorView& mask, double eps_low, double eps_high,
                                const TensorView& prev_excess, const TensorView& out_excess) {
  check_ndim(ratios, "ratios", {1, 2});
  check_dtype(ratios, "ratios", diag::kFloatTypes);
  check_cpu(ratios, "ratios");
  check_eps(eps_low, eps_high);
  const int64_t B = ratios.shape[0], T = ratios.ndim == 2 ? ratios.shape[1] : 1;
  const std::vector<double> adv = diag::read_advantages(advantages, B);
  const bool has_mask = diag::check_mask(mask, ratios, "ratios");
  diag::check_output(out_excess, "out_excess", ratios, "ratios", DType::Float64);
  const bool has_prev = prev_excess.defined();
  if (has_prev) {
    check_dtype(prev_excess, "prev_excess", diag::kFloatTypes);
    check_shape_equal(prev_excess, "prev_excess", ratios, "ratios");
    check_cpu(prev_excess, "prev_excess");
  }

  ClipRegionStats st;
  double* ex = out_excess.ptr<double>();
  Interrupt stop(rows_per_poll(T));  // Ctrl-C (grpokit/interrupt.hpp), between rows
  for (int64_t i = 0; i < B; ++i) {
    stop.poll();
    for (int64_t t = 0; t < T; ++t) {
      double& e = ex[at(out_excess, i, t)];
      e = 0.0;
      if (has_mask && !diag::load_mask(mask, at(mask, i, t))) continue;
      const double s = load_float(ratios, at(ratios, i, t));
      if (!std::isfinite(s))
        value_error("ratios: element (", i, ", ", t, ") is ", s,
                    "; ratios must be finite at valid positions");
      ++st.n_valid;
      e = math::clip_excess(s, adv[i], eps_low, eps_high);
      if (e <= 0.0) continue;
      ++st.n_in_region;
      ++(adv[i] > 0.0 ? st.n_in_region_pos : st.n_in_region_neg);
      st.sum_excess += e;
      st.max_excess = std::max(st.max_excess, e);
      if (has_prev) {
        const double before = load_float(prev_excess, at(prev_excess, i, t));
        if (before > 0.0) {
          ++st.n_in_both;
          st.sum_growth += e - before;
          if (e > before) ++st.n_growing;
        }
      }
    }
  }
  return st;
}

void loss_decomposition_cpu(const TensorView& alpha, const TensorView& ratios, const TensorView& reg,
                            const TensorView& mask, const TensorView& advantages, int64_t group_size,
                            double eps_low, double eps_high, const TensorView& out_group,
                            const TensorView& out_omega_sum) {
  check_ndim(alpha, "alpha", {2});
  check_dtype(alpha, "alpha", diag::kFloatTypes);
  check_cpu(alpha, "alpha");
  const int64_t B = alpha.shape[0], T = alpha.shape[1];
  const int64_t num_groups = diag::check_groups(B, group_size);
  const std::vector<double> adv = diag::read_advantages(advantages, B);
  const bool has_mask = diag::check_mask(mask, alpha, "alpha");
  for (const auto& [view, name] : {std::pair<const TensorView&, const char*>{ratios, "ratios"},
                                   std::pair<const TensorView&, const char*>{reg, "reg"}}) {
    if (!view.defined()) continue;
    check_dtype(view, name, diag::kFloatTypes);
    check_shape_equal(view, name, alpha, "alpha");
    check_cpu(view, name);
  }
  const bool clip = eps_low >= 0.0 && eps_high >= 0.0;
  if (clip) check_eps(eps_low, eps_high);
  check_dtype(out_group, "out_group", {DType::Float64});
  check_ndim(out_group, "out_group", {2});
  check_cpu(out_group, "out_group");
  check_writable(out_group, "out_group");
  if (out_group.shape[0] != num_groups || out_group.shape[1] != 4)
    value_error("out_group: expected shape (", num_groups, ", 4), got ", out_group.shape_str());
  diag::check_output(out_omega_sum, "out_omega_sum", advantages, "advantages", DType::Float64);

  auto finite = [](double v, const char* name, int64_t i, int64_t t) {
    if (!std::isfinite(v))
      value_error(name, ": element (", i, ", ", t, ") is ", v, "; values must be finite at valid positions");
    return v;
  };
  double* og = out_group.ptr<double>();
  double* om = out_omega_sum.ptr<double>();
  Interrupt stop(rows_per_poll(T));  // Ctrl-C (grpokit/interrupt.hpp), between rows
  for (int64_t g = 0; g < num_groups; ++g) {
    double reward = 0.0, ratio_part = 0.0, reg_part = 0.0;
    std::vector<double> omega(static_cast<size_t>(group_size));
    for (int64_t k = 0; k < group_size; ++k) {
      stop.poll();
      const int64_t i = g * group_size + k;
      const double A = adv[i];
      double Om = 0.0;
      for (int64_t t = 0; t < T; ++t) {
        if (has_mask && !diag::load_mask(mask, at(mask, i, t))) continue;
        const double a = finite(load_float(alpha, at(alpha, i, t)), "alpha", i, t);
        Om += a;
        if (ratios.defined()) {
          const double s = finite(load_float(ratios, at(ratios, i, t)), "ratios", i, t);
          const double term = clip ? math::clipped_surrogate(s, A, eps_low, eps_high) : s * A;
          ratio_part += a * (term - A);
        }
        if (reg.defined()) reg_part += a * finite(load_float(reg, at(reg, i, t)), "reg", i, t);
      }
      omega[k] = Om;
      om[i * out_omega_sum.strides[0]] = Om;
      reward += A * Om;
    }
    // G·Cov_pop(A, Ω): equals the reward part when the group's advantages sum to 0 (Eq. 11).
    double ma = 0.0, mo = 0.0, cov = 0.0;
    for (int64_t k = 0; k < group_size; ++k) ma += adv[g * group_size + k], mo += omega[k];
    ma /= static_cast<double>(group_size), mo /= static_cast<double>(group_size);
    for (int64_t k = 0; k < group_size; ++k) cov += (adv[g * group_size + k] - ma) * (omega[k] - mo);
    double* row = og + g * out_group.strides[0];
    row[0] = reward;
    row[out_group.strides[1]] = ratio_part;
    row[2 * out_group.strides[1]] = reg_part;
    row[3 * out_group.strides[1]] = cov;
  }
}

}  // namespace grpokit
