// Diagnostics: import arrays, release the GIL, call the engine. bind_adam (both backends) writes the
// Adam-state statistics into caller-allocated arrays on the state's device; bind_diagnostics (CPU
// only) returns the other reductions as dicts. See grpokit.diagnostics for the documented Python API.
#include <pybind11/stl.h>

#include "grpokit/diagnostics.hpp"
#include "grpokit/math/diagnostics.hpp"
#include "ops.hpp"
#include "tensor_import.hpp"

namespace grpokit {
namespace bindings {
namespace {

AdamHyper hyper(double beta1, double beta2, double eps, double step) {
  AdamHyper hp;
  hp.beta1 = beta1;
  hp.beta2 = beta2;
  hp.eps = eps;
  hp.step = step;
  return hp;
}

}  // namespace

void bind_adam(py::module_& m, const Backend& backend) {
  m.def("adam_workspace_size", backend.adam_workspace_size, py::arg("n"),
        "float64 elements of scratch adam_state_stats_into / adam_step_split_into need for a state of n");

  m.def(
      "adam_state_stats_into",
      [backend](py::object exp_avg, py::object exp_avg_sq, double beta1, double beta2, double eps,
                double step, double rho_threshold, double hist_lo, double hist_hi,
                const std::vector<double>& phis, py::object out_stats, py::object out_hist,
                py::object workspace, std::intptr_t stream) {
        Imported m1 = import_array(exp_avg, "exp_avg", stream, false),
                 v = import_array(exp_avg_sq, "exp_avg_sq", stream, false),
                 o = import_array(out_stats, "out_stats", stream, true),
                 h = import_array(out_hist, "out_hist", stream, true),
                 w = import_array(workspace, "workspace", stream, true);
        py::gil_scoped_release nogil;
        backend.adam_state_stats(m1.view(), v.view(), hyper(beta1, beta2, eps, step), rho_threshold, hist_lo,
                                 hist_hi, phis, o.view(), h.view(), w.view(), stream);
      },
      py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
      py::arg("step"), py::arg("rho_threshold"), py::arg("hist_lo"), py::arg("hist_hi"), py::arg("phis"),
      py::arg("out_stats"), py::arg("out_hist"), py::arg("workspace") = py::none(), py::arg("stream") = 0,
      "adam_state_stats into out_stats (float64, fields of grpokit/diagnostics.hpp then Σ|u_φ|) and "
      "out_hist (int64, its length = the number of bins).");

  m.def(
      "adam_update",
      [backend](py::object exp_avg, py::object exp_avg_sq, double beta1, double beta2, double eps,
                double step, double phi, bool momentum_only_next, py::object out, std::intptr_t stream) {
        Imported m1 = import_array(exp_avg, "exp_avg", stream, false),
                 v = import_array(exp_avg_sq, "exp_avg_sq", stream, false),
                 o = import_array(out, "out", stream, true);
        py::gil_scoped_release nogil;
        backend.adam_update(m1.view(), v.view(), hyper(beta1, beta2, eps, step), phi, momentum_only_next,
                            o.view(), stream);
      },
      py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"),
      py::arg("step"), py::arg("phi"), py::arg("momentum_only_next"), py::arg("out"), py::arg("stream") = 0,
      "Per-coordinate preconditioned Adam step of a state into out.");

  m.def(
      "adam_rho",
      [backend](py::object exp_avg_sq, double beta1, double beta2, double eps, double step,
                py::object out_rho, py::object out_elasticity, std::intptr_t stream) {
        Imported v = import_array(exp_avg_sq, "exp_avg_sq", stream, false),
                 r = import_array(out_rho, "out_rho", stream, true),
                 e = import_array(out_elasticity, "out_elasticity", stream, true);
        py::gil_scoped_release nogil;
        backend.adam_rho(v.view(), hyper(beta1, beta2, eps, step), r.view(), e.view(), stream);
      },
      py::arg("exp_avg_sq"), py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("step"),
      py::arg("out_rho"), py::arg("out_elasticity"), py::arg("stream") = 0,
      "Per-coordinate ρ and elasticity ρ/(1+ρ).");

  m.def(
      "adam_step_split_into",
      [backend](py::object exp_avg, py::object exp_avg_sq, py::object grad, py::object param, double l2,
                double beta1, double beta2, double eps, double step, py::object out, py::object workspace,
                std::intptr_t stream) {
        Imported m1 = import_array(exp_avg, "exp_avg", stream, false),
                 v = import_array(exp_avg_sq, "exp_avg_sq", stream, false),
                 g = import_array(grad, "grad", stream, false),
                 p = import_array(param, "param", stream, false), o = import_array(out, "out", stream, true),
                 w = import_array(workspace, "workspace", stream, true);
        py::gil_scoped_release nogil;
        backend.adam_step_split(m1.view(), v.view(), g.view(), p.view(), l2, hyper(beta1, beta2, eps, step),
                                o.view(), w.view(), stream);
      },
      py::arg("exp_avg"), py::arg("exp_avg_sq"), py::arg("grad"), py::arg("param"), py::arg("l2"),
      py::arg("beta1"), py::arg("beta2"), py::arg("eps"), py::arg("step"), py::arg("out"),
      py::arg("workspace") = py::none(), py::arg("stream") = 0,
      "adam_step_split into out (float64, fields of grpokit/diagnostics.hpp; out[7] the first non-finite "
      "gradient element on the GPU, -1 if none).");
}

void bind_diagnostics(py::module_& m) {
  m.def(
      "prefix_bias",
      [](py::object ids, py::object mask, py::object cu_seqlens, py::object advantages, py::object omega,
         int64_t group_size, py::object node, py::object count, py::object coef, py::object bias,
         py::object abs_sum, py::object group) {
        Imported i = import_array(ids, "ids", 0, false), mk = import_array(mask, "mask", 0, false),
                 cu = import_array(cu_seqlens, "cu_seqlens", 0, false),
                 a = import_array(advantages, "advantages", 0, false),
                 w = import_array(omega, "omega", 0, false);
        Imported o_node = import_array(node, "out.node", 0, true),
                 o_count = import_array(count, "out.count", 0, true),
                 o_coef = import_array(coef, "out.coef", 0, true),
                 o_bias = import_array(bias, "out.bias", 0, true),
                 o_abs = import_array(abs_sum, "out.abs_sum", 0, true),
                 o_group = import_array(group, "out.group", 0, true);
        PrefixBiasOutputs out{o_node.view(), o_count.view(), o_coef.view(),
                              o_bias.view(), o_abs.view(),   o_group.view()};
        py::gil_scoped_release nogil;
        prefix_bias_cpu(i.view(), mk.view(), cu.view(), a.view(), w.view(), group_size, out);
      },
      py::arg("ids"), py::arg("mask"), py::arg("cu_seqlens"), py::arg("advantages"), py::arg("omega"),
      py::arg("group_size"), py::arg("node"), py::arg("count"), py::arg("coef"), py::arg("bias"),
      py::arg("abs_sum"), py::arg("group"),
      "Shared-prefix bias into the given outputs. See grpokit.diagnostics.prefix_bias_from_weights.");

  m.def(
      "clip_region",
      [](py::object ratios, py::object advantages, py::object mask, double eps_low, double eps_high,
         py::object prev_excess, py::object out_excess) {
        Imported r = import_array(ratios, "ratios", 0, false),
                 a = import_array(advantages, "advantages", 0, false),
                 mk = import_array(mask, "mask", 0, false),
                 p = import_array(prev_excess, "prev_excess", 0, false),
                 o = import_array(out_excess, "out_excess", 0, true);
        ClipRegionStats st;
        {
          py::gil_scoped_release nogil;
          st = clip_region_cpu(r.view(), a.view(), mk.view(), eps_low, eps_high, p.view(), o.view());
        }
        py::dict d;
        d["n_valid"] = st.n_valid;
        d["n_in_region"] = st.n_in_region;
        d["n_in_region_pos"] = st.n_in_region_pos;
        d["n_in_region_neg"] = st.n_in_region_neg;
        d["sum_excess"] = st.sum_excess;
        d["max_excess"] = st.max_excess;
        d["n_in_both"] = st.n_in_both;
        d["n_growing"] = st.n_growing;
        d["sum_growth"] = st.sum_growth;
        return d;
      },
      py::arg("ratios"), py::arg("advantages"), py::arg("mask"), py::arg("eps_low"), py::arg("eps_high"),
      py::arg("prev_excess"), py::arg("out_excess"),
      "Sign-aware clip-region excess into out_excess; returns the counts and sums.");

  m.def(
      "loss_decomposition",
      [](py::object alpha, py::object ratios, py::object reg, py::object mask, py::object advantages,
         int64_t group_size, double eps_low, double eps_high, py::object out_group,
         py::object out_omega_sum) {
        Imported al = import_array(alpha, "alpha", 0, false), r = import_array(ratios, "ratios", 0, false),
                 rg = import_array(reg, "reg", 0, false), mk = import_array(mask, "mask", 0, false),
                 a = import_array(advantages, "advantages", 0, false),
                 og = import_array(out_group, "out_group", 0, true),
                 oo = import_array(out_omega_sum, "out_omega_sum", 0, true);
        py::gil_scoped_release nogil;
        loss_decomposition_cpu(al.view(), r.view(), rg.view(), mk.view(), a.view(), group_size, eps_low,
                               eps_high, og.view(), oo.view());
      },
      py::arg("alpha"), py::arg("ratios"), py::arg("reg"), py::arg("mask"), py::arg("advantages"),
      py::arg("group_size"), py::arg("eps_low"), py::arg("eps_high"), py::arg("out_group"),
      py::arg("out_omega_sum"), "Prop. 4 decomposition of the surrogate's value per group.");

  m.def("overshoot_coefficient", &math::overshoot_coefficient, py::arg("T"), py::arg("k"), py::arg("beta1"),
        py::arg("beta2"), "C_{T,k} of Eq. 36 (Eq. 32 at k = 0).");
  m.def("overshoot_limit", &math::overshoot_limit, py::arg("k"), py::arg("beta1"), py::arg("beta2"),
        "(β1/√β2)^(k+1), the large-T limit (Eq. 33, 37).");
  m.def("overshoot_eps_factor", &math::overshoot_eps_factor, py::arg("sqrt_vhat_before"),
        py::arg("sqrt_vhat_after"), py::arg("eps"), "Eq. 38's factor.");
  m.def("reward_scale_elasticity", &math::reward_scale_elasticity, py::arg("rho"),
        "ρ/(1+ρ): d log|Δθ| / d log φ at φ = 1.");
}

}  // namespace bindings
}  // namespace grpokit
