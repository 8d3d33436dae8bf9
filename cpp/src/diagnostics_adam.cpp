// Statistics of a torch-style Adam/AdamW state, one parameter tensor at a time (§4.4, §5.4).
// The arrays are the optimizer's own tensors, read in place (zero-copy through DLPack).
#include <algorithm>
#include <cmath>
#include <limits>

#include "diagnostics_common.hpp"
#include "grpokit/diagnostics.hpp"
#include "grpokit/math/diagnostics.hpp"

namespace grpokit {
namespace {

using diag::load_float;

// dst.*f += src.*f for each listed field: a chunk's partial sums merged into the total.
template <class S, class... F>
void add_fields(S& dst, const S& src, F... f) {
  ((dst.*f += src.*f), ...);
}

constexpr std::initializer_list<DType> kDeviceStateTypes = {DType::Float32, DType::Float64, DType::BFloat16,
                                                            DType::Float16};

void check_place(const TensorView& t, const char* name, const TensorView& ref, bool on_device) {
  if (!on_device) return check_cpu(t, name);
  if (t.device.type != DeviceType::CUDA)
    device_error(name, ": expected a CUDA array, got one on ", device_name(t.device));
  check_same_device(t, name, ref, "exp_avg_sq");
}

void check_contiguous_1d(const TensorView& t, const char* name, DType dt, int64_t len, const TensorView& ref,
                         bool on_device) {
  check_ndim(t, name, {1});
  check_dtype(t, name, {dt});
  check_place(t, name, ref, on_device);
  check_writable(t, name);
  if (t.shape[0] != len || (len > 1 && t.strides[0] != 1))
    value_error(name, ": expected a contiguous ", dtype_name(dt), " array of ", len, " elements, got shape ",
                t.shape_str(), " stride ", t.strides[0]);
}

}  // namespace

void check_adam_state(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                      bool need_step, bool on_device) {
  check_ndim(exp_avg_sq, "exp_avg_sq", {1});
  check_dtype(exp_avg_sq, "exp_avg_sq", on_device ? kDeviceStateTypes : diag::kFloatTypes);
  check_place(exp_avg_sq, "exp_avg_sq", exp_avg_sq, on_device);
  check_adam_input(exp_avg, "exp_avg", exp_avg_sq, on_device);
  if (!(hp.beta1 >= 0.0 && hp.beta1 < 1.0) || !(hp.beta2 >= 0.0 && hp.beta2 < 1.0))
    value_error("betas: expected 0 <= beta < 1, got (", hp.beta1, ", ", hp.beta2, ")");
  if (!(hp.eps >= 0.0) || !std::isfinite(hp.eps))
    value_error("eps: expected a finite value >= 0, got ", hp.eps);
  if (!(hp.step >= 0.0) || hp.step != std::floor(hp.step))
    value_error("step: expected a whole number of optimizer steps >= 0, got ", hp.step);
  if (need_step && hp.step < 1.0)
    value_error("step: the optimizer has taken no step yet (step = 0); its state holds no moments");
}

void check_adam_input(const TensorView& t, const char* name, const TensorView& exp_avg_sq, bool on_device) {
  check_ndim(t, name, {1});
  check_dtype(t, name, on_device ? kDeviceStateTypes : diag::kFloatTypes);
  check_shape_equal(t, name, exp_avg_sq, "exp_avg_sq");
  check_place(t, name, exp_avg_sq, on_device);
}

void check_adam_output(const TensorView& out, const char* name, const TensorView& exp_avg_sq,
                       bool on_device) {
  check_dtype(out, name, diag::kFloatTypes);
  check_shape_equal(out, name, exp_avg_sq, "exp_avg_sq");
  check_place(out, name, exp_avg_sq, on_device);
  check_writable(out, name);
}

void check_adam_phi(double phi) {
  if (!(phi > 0.0) || !std::isfinite(phi))
    value_error("phi: expected a finite reward scale > 0 (a negative scale reverses every step), got ", phi);
}

void check_adam_stats_options(double hist_lo, double hist_hi, int64_t hist_bins,
                              const std::vector<double>& phis) {
  for (double phi : phis)
    if (!(phi > 0.0) || !std::isfinite(phi))
      value_error("phis: reward scales must be finite and > 0 (a negative scale reverses every step), got ",
                  phi);
  if (hist_bins < 1 || hist_bins > (int64_t(1) << 24) || !(hist_hi > hist_lo) || !std::isfinite(hist_lo) ||
      !std::isfinite(hist_hi))
    value_error("histogram: expected 1 <= bins <= 2^24 and finite hi > lo, got bins=", hist_bins, ", [",
                hist_lo, ", ", hist_hi, "]");
}

void check_adam_stats_outputs(const TensorView& out_stats, const TensorView& out_hist, size_t n_phis,
                              const TensorView& exp_avg_sq, bool on_device) {
  check_contiguous_1d(out_stats, "out_stats", DType::Float64, kAdamStatFields + static_cast<int64_t>(n_phis),
                      exp_avg_sq, on_device);
  check_ndim(out_hist, "out_hist", {1});
  check_contiguous_1d(out_hist, "out_hist", DType::Int64, out_hist.shape[0], exp_avg_sq, on_device);
}

void check_adam_split_output(const TensorView& out, const TensorView& exp_avg_sq, bool on_device) {
  check_contiguous_1d(out, "out", DType::Float64, kAdamSplitFields, exp_avg_sq, on_device);
}

AdamStateStats adam_state_stats_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq,
                                    const AdamHyper& hp, double rho_threshold, double hist_lo, double hist_hi,
                                    int64_t hist_bins, const std::vector<double>& phis) {
  check_adam_state(exp_avg, exp_avg_sq, hp, true, false);
  check_adam_stats_options(hist_lo, hist_hi, hist_bins, phis);
  const math::AdamStatsCoefs k = math::adam_stats_coefs(hp.beta1, hp.beta2, hp.eps, hp.step, rho_threshold,
                                                        hist_lo, hist_hi, static_cast<double>(hist_bins));
  const int64_t n = exp_avg_sq.shape[0];
  const int64_t sm = exp_avg.strides[0], sv = exp_avg_sq.strides[0];

  auto empty_stats = [&] {
    AdamStateStats st;
    st.hist.assign(static_cast<size_t>(hist_bins), 0);
    st.sum_abs_u_phi.assign(phis.size(), 0.0);
    st.min_rho = std::numeric_limits<double>::infinity();
    return st;
  };
  const int64_t chunks = diag::num_chunks(n);
  std::vector<AdamStateStats> part(static_cast<size_t>(chunks), empty_stats());
  diag::for_each_chunk(n, chunks, [&](int64_t c, int64_t j) {
    AdamStateStats& st = part[static_cast<size_t>(c)];
    const math::AdamCoordinate x =
        math::adam_coordinate(load_float(exp_avg, j * sm), load_float(exp_avg_sq, j * sv), k);
    if (x.rho_above) ++st.n_rho_above;
    st.sum_elast += x.elast;
    if (x.zero_v) {
      ++st.n_zero_v;
      return true;  // m = 0 there too: no step, no next step
    }
    st.sum_u2 += x.u * x.u;
    st.sum_abs_u += std::fabs(x.u);
    st.sum_abs_u_elast += std::fabs(x.u) * x.elast;
    for (size_t q = 0; q < phis.size(); ++q)
      st.sum_abs_u_phi[q] += std::fabs(math::adam_update_from_sqrt(x.mhat, x.sqrt_vhat, hp.eps, phis[q]));
    st.sum_u2_next += x.u_next * x.u_next;
    st.max_rho = std::max(st.max_rho, x.rho);
    st.min_rho = std::min(st.min_rho, x.rho);
    ++st.hist[static_cast<size_t>(x.bin)];
    return true;
  });
  AdamStateStats st = empty_stats();
  st.n = n;
  for (const AdamStateStats& p : part) {
    add_fields(st, p, &AdamStateStats::n_zero_v, &AdamStateStats::n_rho_above, &AdamStateStats::sum_u2,
               &AdamStateStats::sum_abs_u, &AdamStateStats::sum_abs_u_elast, &AdamStateStats::sum_elast,
               &AdamStateStats::sum_u2_next);
    st.max_rho = std::max(st.max_rho, p.max_rho);
    st.min_rho = std::min(st.min_rho, p.min_rho);
    for (size_t b = 0; b < st.hist.size(); ++b) st.hist[b] += p.hist[b];
    for (size_t q = 0; q < phis.size(); ++q) st.sum_abs_u_phi[q] += p.sum_abs_u_phi[q];
  }
  return st;
}

void adam_update_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp, double phi,
                     bool momentum_only_next, const TensorView& out) {
  check_adam_state(exp_avg, exp_avg_sq, hp, true, false);
  check_adam_phi(phi);
  check_adam_output(out, "out", exp_avg_sq, false);
  const math::AdamUpdateCoefs k = math::adam_update_coefs(hp.beta1, hp.beta2, hp.step, momentum_only_next);
  const int64_t n = exp_avg_sq.shape[0];
  diag::for_each_chunk(n, diag::num_chunks(n), [&](int64_t, int64_t j) {
    const double m = load_float(exp_avg, j * exp_avg.strides[0]);
    const double v = load_float(exp_avg_sq, j * exp_avg_sq.strides[0]);
    diag::store_float(out, j * out.strides[0], math::adam_update_coordinate(m, v, k, hp.eps, phi));
    return true;
  });
}

void adam_rho_cpu(const TensorView& exp_avg_sq, const AdamHyper& hp, const TensorView& out_rho,
                  const TensorView& out_elasticity) {
  check_adam_state(exp_avg_sq, exp_avg_sq, hp, true, false);
  check_adam_output(out_rho, "out_rho", exp_avg_sq, false);
  if (out_elasticity.defined()) check_adam_output(out_elasticity, "out_elasticity", exp_avg_sq, false);
  const double bc2 = math::bias_correction(hp.beta2, hp.step);
  const int64_t n = exp_avg_sq.shape[0];
  const bool elasticity = out_elasticity.defined();
  diag::for_each_chunk(n, diag::num_chunks(n), [&](int64_t, int64_t j) {
    const double rho = math::adam_rho(load_float(exp_avg_sq, j * exp_avg_sq.strides[0]), bc2, hp.eps);
    diag::store_float(out_rho, j * out_rho.strides[0], rho);
    if (elasticity)
      diag::store_float(out_elasticity, j * out_elasticity.strides[0], math::reward_scale_elasticity(rho));
    return true;
  });
}

AdamStepSplit adam_step_split_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq,
                                  const TensorView& grad, const TensorView& param, double l2,
                                  const AdamHyper& hp) {
  check_adam_state(exp_avg, exp_avg_sq, hp, false, false);
  check_adam_input(grad, "grad", exp_avg_sq, false);
  if (param.defined()) check_adam_input(param, "param", exp_avg_sq, false);
  const math::AdamSplitCoefs k = math::adam_split_coefs(hp.beta1, hp.beta2, hp.eps, hp.step);
  const int64_t n = exp_avg_sq.shape[0];
  const int64_t chunks = diag::num_chunks(n);
  std::vector<AdamStepSplit> part(static_cast<size_t>(chunks));
  std::vector<int64_t> bad(static_cast<size_t>(chunks), -1);  // first non-finite gradient per chunk
  diag::for_each_chunk(n, chunks, [&](int64_t c, int64_t j) {
    AdamStepSplit& sp = part[static_cast<size_t>(c)];
    const double m = load_float(exp_avg, j * exp_avg.strides[0]);
    const double v = load_float(exp_avg_sq, j * exp_avg_sq.strides[0]);
    double g = load_float(grad, j * grad.strides[0]);
    if (param.defined()) g += l2 * load_float(param, j * param.strides[0]);
    if (!std::isfinite(g)) {
      bad[static_cast<size_t>(c)] = j;
      return false;
    }
    const math::AdamSplitTerm x = math::adam_split_term(m, v, g, k);
    sp.prev2 += x.prev * x.prev;
    sp.grad2 += g * g;
    if (!x.step) return true;
    sp.stale2 += x.us * x.us;
    sp.fresh2 += x.uf * x.uf;
    sp.stale_fresh += x.us * x.uf;
    sp.u_grad += (x.us + x.uf) * g;
    return true;
  });
  for (int64_t j : bad)
    if (j >= 0)
      value_error("grad: element ", j, " is ", load_float(grad, j * grad.strides[0]),
                  param.defined() ? " (with the L2 term)" : "", "; gradients must be finite");
  AdamStepSplit sp;
  sp.n = n;
  for (const AdamStepSplit& p : part) {
    add_fields(sp, p, &AdamStepSplit::stale2, &AdamStepSplit::fresh2, &AdamStepSplit::stale_fresh,
               &AdamStepSplit::prev2, &AdamStepSplit::grad2, &AdamStepSplit::u_grad);
  }
  return sp;
}

void adam_state_stats_into_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                               double rho_threshold, double hist_lo, double hist_hi,
                               const std::vector<double>& phis, const TensorView& out_stats,
                               const TensorView& out_hist) {
  check_adam_state(exp_avg, exp_avg_sq, hp, true, false);
  check_adam_stats_outputs(out_stats, out_hist, phis.size(), exp_avg_sq, false);
  const AdamStateStats st =
      adam_state_stats_cpu(exp_avg, exp_avg_sq, hp, rho_threshold, hist_lo, hist_hi, out_hist.shape[0], phis);
  double* o = out_stats.ptr<double>();
  write_stats(st, o);
  for (size_t q = 0; q < phis.size(); ++q) o[kAdamStatFields + q] = st.sum_abs_u_phi[q];
  std::copy(st.hist.begin(), st.hist.end(), out_hist.ptr<int64_t>());
}

void adam_step_split_into_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq, const TensorView& grad,
                              const TensorView& param, double l2, const AdamHyper& hp,
                              const TensorView& out) {
  check_adam_state(exp_avg, exp_avg_sq, hp, false, false);
  check_adam_split_output(out, exp_avg_sq, false);
  const AdamStepSplit sp = adam_step_split_cpu(exp_avg, exp_avg_sq, grad, param, l2, hp);
  write_split(sp, -1.0, out.ptr<double>());  // no first bad element: the CPU engine raised instead
}

}  // namespace grpokit
