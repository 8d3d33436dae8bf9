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

void check_state(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                 bool need_step) {
  check_ndim(exp_avg_sq, "exp_avg_sq", {1});
  check_dtype(exp_avg_sq, "exp_avg_sq", diag::kFloatTypes);
  check_cpu(exp_avg_sq, "exp_avg_sq");
  check_ndim(exp_avg, "exp_avg", {1});
  check_dtype(exp_avg, "exp_avg", diag::kFloatTypes);
  check_shape_equal(exp_avg, "exp_avg", exp_avg_sq, "exp_avg_sq");
  check_cpu(exp_avg, "exp_avg");
  if (!(hp.beta1 >= 0.0 && hp.beta1 < 1.0) || !(hp.beta2 >= 0.0 && hp.beta2 < 1.0))
    value_error("betas: expected 0 <= beta < 1, got (", hp.beta1, ", ", hp.beta2, ")");
  if (!(hp.eps >= 0.0) || !std::isfinite(hp.eps)) value_error("eps: expected a finite value >= 0, got ", hp.eps);
  if (!(hp.step >= 0.0) || hp.step != std::floor(hp.step))
    value_error("step: expected a whole number of optimizer steps >= 0, got ", hp.step);
  if (need_step && hp.step < 1.0)
    value_error("step: the optimizer has taken no step yet (step = 0); its state holds no moments");
}

}  // namespace

AdamStateStats adam_state_stats_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq,
                                    const AdamHyper& hp, double rho_threshold, double hist_lo,
                                    double hist_hi, int64_t hist_bins,
                                    const std::vector<double>& phis) {
  check_state(exp_avg, exp_avg_sq, hp, true);
  for (double phi : phis)
    if (!(phi > 0.0) || !std::isfinite(phi))
      value_error("phis: reward scales must be finite and > 0 (a negative scale reverses every step), got ", phi);
  if (hist_bins < 1 || !(hist_hi > hist_lo))
    value_error("histogram: expected bins >= 1 and hi > lo, got bins=", hist_bins, ", [", hist_lo,
                ", ", hist_hi, "]");
  const double t = hp.step;
  const double bc1 = math::bias_correction(hp.beta1, t), bc2 = math::bias_correction(hp.beta2, t);
  // The momentum-only next state (β1 m, β2 v at t + 1), from this step's m̂ and √v̂.
  const double next_m = hp.beta1 * bc1 / math::bias_correction(hp.beta1, t + 1);
  const double next_sv = std::sqrt(hp.beta2 * bc2 / math::bias_correction(hp.beta2, t + 1));
  const int64_t n = exp_avg_sq.shape[0];
  const int64_t sm = exp_avg.strides[0], sv = exp_avg_sq.strides[0];
  const double width = (hist_hi - hist_lo) / static_cast<double>(hist_bins);

  auto empty_stats = [&] {
    AdamStateStats st;
    st.hist.assign(static_cast<size_t>(hist_bins), 0);
    st.sum_abs_u_phi.assign(phis.size(), 0.0);
    st.min_rho = std::numeric_limits<double>::infinity();
    return st;
  };
  const int64_t chunks = diag::num_chunks(n);
  std::vector<AdamStateStats> part(static_cast<size_t>(chunks), empty_stats());
#if defined(GRPOKIT_HAVE_OPENMP)
#pragma omp parallel for schedule(static) if (chunks > 1)
#endif
  for (int64_t c = 0; c < chunks; ++c) {
    AdamStateStats& st = part[static_cast<size_t>(c)];
    for (int64_t j = diag::chunk_begin(c, n, chunks); j < diag::chunk_begin(c + 1, n, chunks); ++j) {
      const double m = load_float(exp_avg, j * sm), v = load_float(exp_avg_sq, j * sv);
      const double sqrt_vhat = std::sqrt(v / bc2), mhat = m / bc1;
      const double rho = math::adam_rho_from_sqrt(sqrt_vhat, hp.eps);
      if (rho > rho_threshold) ++st.n_rho_above;
      const double e = math::reward_scale_elasticity(rho);
      st.sum_elast += e;
      if (v <= 0.0) {
        ++st.n_zero_v;
        continue;  // m = 0 there too: no step, no next step
      }
      const double u = math::adam_update_from_sqrt(mhat, sqrt_vhat, hp.eps, 1.0);
      st.sum_u2 += u * u;
      st.sum_abs_u += std::fabs(u);
      st.sum_abs_u_elast += std::fabs(u) * e;
      for (size_t k = 0; k < phis.size(); ++k)
        st.sum_abs_u_phi[k] += std::fabs(math::adam_update_from_sqrt(mhat, sqrt_vhat, hp.eps, phis[k]));
      const double un = math::adam_update_from_sqrt(next_m * mhat, next_sv * sqrt_vhat, hp.eps, 1.0);
      st.sum_u2_next += un * un;
      st.max_rho = std::max(st.max_rho, rho);
      st.min_rho = std::min(st.min_rho, rho);
      const double lg = rho > 0.0 ? std::log10(rho) : hist_lo;
      const auto bin = static_cast<int64_t>(std::floor((lg - hist_lo) / width));
      ++st.hist[static_cast<size_t>(std::clamp<int64_t>(bin, 0, hist_bins - 1))];
    }
  }
  AdamStateStats st = empty_stats();
  st.n = n;
  for (const AdamStateStats& p : part) {
    st.n_zero_v += p.n_zero_v;
    st.n_rho_above += p.n_rho_above;
    st.sum_u2 += p.sum_u2;
    st.sum_abs_u += p.sum_abs_u;
    st.sum_abs_u_elast += p.sum_abs_u_elast;
    st.sum_elast += p.sum_elast;
    st.sum_u2_next += p.sum_u2_next;
    st.max_rho = std::max(st.max_rho, p.max_rho);
    st.min_rho = std::min(st.min_rho, p.min_rho);
    for (size_t k = 0; k < st.hist.size(); ++k) st.hist[k] += p.hist[k];
    for (size_t k = 0; k < phis.size(); ++k) st.sum_abs_u_phi[k] += p.sum_abs_u_phi[k];
  }
  return st;
}

void adam_update_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq, const AdamHyper& hp,
                     double phi, bool momentum_only_next, const TensorView& out) {
  check_state(exp_avg, exp_avg_sq, hp, true);
  if (!(phi > 0.0) || !std::isfinite(phi))
    value_error("phi: expected a finite reward scale > 0 (a negative scale reverses every step), got ", phi);
  check_dtype(out, "out", diag::kFloatTypes);
  check_shape_equal(out, "out", exp_avg_sq, "exp_avg_sq");
  check_cpu(out, "out");
  check_writable(out, "out");
  const double t = momentum_only_next ? hp.step + 1 : hp.step;
  const double b1 = momentum_only_next ? hp.beta1 : 1.0, b2 = momentum_only_next ? hp.beta2 : 1.0;
  const double bc1 = math::bias_correction(hp.beta1, t), bc2 = math::bias_correction(hp.beta2, t);
  const int64_t n = exp_avg_sq.shape[0];
#if defined(GRPOKIT_HAVE_OPENMP)
#pragma omp parallel for schedule(static) if (n > (1 << 16))
#endif
  for (int64_t j = 0; j < n; ++j) {
    const double m = b1 * load_float(exp_avg, j * exp_avg.strides[0]);
    const double v = b2 * load_float(exp_avg_sq, j * exp_avg_sq.strides[0]);
    diag::store_float(out, j * out.strides[0], v > 0.0 ? math::adam_update(m, v, bc1, bc2, hp.eps, phi) : 0.0);
  }
}

void adam_rho_cpu(const TensorView& exp_avg_sq, const AdamHyper& hp, const TensorView& out_rho,
                  const TensorView& out_elasticity) {
  check_state(exp_avg_sq, exp_avg_sq, hp, true);
  auto check_out = [&](const TensorView& out, const char* name) {
    check_dtype(out, name, diag::kFloatTypes);
    check_shape_equal(out, name, exp_avg_sq, "exp_avg_sq");
    check_cpu(out, name);
    check_writable(out, name);
  };
  check_out(out_rho, "out_rho");
  if (out_elasticity.defined()) check_out(out_elasticity, "out_elasticity");
  const double bc2 = math::bias_correction(hp.beta2, hp.step);
  const int64_t n = exp_avg_sq.shape[0];
  const bool elasticity = out_elasticity.defined();
#if defined(GRPOKIT_HAVE_OPENMP)
#pragma omp parallel for schedule(static) if (n > (1 << 16))
#endif
  for (int64_t j = 0; j < n; ++j) {
    const double rho = math::adam_rho(load_float(exp_avg_sq, j * exp_avg_sq.strides[0]), bc2, hp.eps);
    diag::store_float(out_rho, j * out_rho.strides[0], rho);
    if (elasticity) diag::store_float(out_elasticity, j * out_elasticity.strides[0], math::reward_scale_elasticity(rho));
  }
}

AdamStepSplit adam_step_split_cpu(const TensorView& exp_avg, const TensorView& exp_avg_sq,
                                  const TensorView& grad, const TensorView& param, double l2,
                                  const AdamHyper& hp) {
  check_state(exp_avg, exp_avg_sq, hp, false);
  check_dtype(grad, "grad", diag::kFloatTypes);
  check_shape_equal(grad, "grad", exp_avg_sq, "exp_avg_sq");
  check_cpu(grad, "grad");
  if (param.defined()) {
    check_dtype(param, "param", diag::kFloatTypes);
    check_shape_equal(param, "param", exp_avg_sq, "exp_avg_sq");
    check_cpu(param, "param");
  }
  const double t = hp.step + 1;
  const double bc1 = math::bias_correction(hp.beta1, t), bc2 = math::bias_correction(hp.beta2, t);
  const double bc1p = math::bias_correction(hp.beta1, hp.step), bc2p = math::bias_correction(hp.beta2, hp.step);
  const int64_t n = exp_avg_sq.shape[0];
  const int64_t chunks = diag::num_chunks(n);
  std::vector<AdamStepSplit> part(static_cast<size_t>(chunks));
  std::vector<int64_t> bad(static_cast<size_t>(chunks), -1);  // first non-finite gradient per chunk
#if defined(GRPOKIT_HAVE_OPENMP)
#pragma omp parallel for schedule(static) if (chunks > 1)
#endif
  for (int64_t c = 0; c < chunks; ++c) {
    AdamStepSplit& sp = part[static_cast<size_t>(c)];
    for (int64_t j = diag::chunk_begin(c, n, chunks); j < diag::chunk_begin(c + 1, n, chunks); ++j) {
      const double m = load_float(exp_avg, j * exp_avg.strides[0]);
      const double v = load_float(exp_avg_sq, j * exp_avg_sq.strides[0]);
      double g = load_float(grad, j * grad.strides[0]);
      if (param.defined()) g += l2 * load_float(param, j * param.strides[0]);
      if (!std::isfinite(g)) {
        bad[static_cast<size_t>(c)] = j;
        break;
      }
      if (hp.step >= 1.0 && v > 0.0) {
        const double up = math::adam_update(m, v, bc1p, bc2p, hp.eps, 1.0);
        sp.prev2 += up * up;
      }
      sp.grad2 += g * g;
      const double vt = hp.beta2 * v + (1.0 - hp.beta2) * g * g;
      const double d = bc1 * (std::sqrt(vt / bc2) + hp.eps);
      if (!(d > 0.0)) continue;  // v_t = 0 and ϵ = 0: no step on this coordinate
      const double us = hp.beta1 * m / d, uf = (1.0 - hp.beta1) * g / d;
      sp.stale2 += us * us;
      sp.fresh2 += uf * uf;
      sp.stale_fresh += us * uf;
      sp.u_grad += (us + uf) * g;
    }
  }
  for (int64_t j : bad)
    if (j >= 0)
      value_error("grad: element ", j, " is ", load_float(grad, j * grad.strides[0]),
                  param.defined() ? " (with the L2 term)" : "", "; gradients must be finite");
  AdamStepSplit sp;
  sp.n = n;
  for (const AdamStepSplit& p : part) {
    sp.stale2 += p.stale2;
    sp.fresh2 += p.fresh2;
    sp.stale_fresh += p.stale_fresh;
    sp.prev2 += p.prev2;
    sp.grad2 += p.grad2;
    sp.u_grad += p.u_grad;
  }
  return sp;
}

}  // namespace grpokit
