// grpokit._core: stationary policies of GRPO (CPU only; small dense problems, no tensors).
#include <pybind11/eigen.h>
#include <pybind11/stl.h>

#include <string>
#include <vector>

#include "grpokit/stationary.hpp"
#include "ops.hpp"

namespace grpokit {
namespace bindings {

namespace st = grpokit::stationary;
using Eigen::MatrixXd;
using Eigen::VectorXd;

namespace {
VectorXd per_output(const st::PreferenceModel& m, const VectorXd& atoms) {
  VectorXd out(m.num_outputs());
  for (Eigen::Index o = 0; o < out.size(); ++o) out[o] = atoms[m.atom_of()[o]];
  return out;
}
}  // namespace

void bind_stationary(py::module_& m) {
  using Model = st::PreferenceModel;
  py::class_<Model>(m, "StationaryModel", "Reward preference model P_G (see grpokit.stationary)")
      .def_property_readonly("num_outputs", &Model::num_outputs)
      .def_property_readonly("num_atoms", &Model::num_atoms)
      .def_property_readonly("atom_of", &Model::atom_of)
      .def_property_readonly("exact", &Model::exact)
      .def_property_readonly("num_terms", &Model::num_terms)
      .def("describe", &Model::describe)
      .def(
          "preference",
          [](const Model& mo, const VectorXd& pi) {
            VectorXd P;
            mo.evaluate(mo.atom_masses(pi), P, nullptr);
            return per_output(mo, P);
          },
          py::arg("pi"), py::call_guard<py::gil_scoped_release>())
      .def(
          "preference_monte_carlo",
          [](const Model& mo, const VectorXd& pi, int64_t samples, uint64_t seed) {
            VectorXd P, se;
            mo.monte_carlo(mo.atom_masses(pi), samples, seed, P, se);
            return std::make_pair(per_output(mo, P), per_output(mo, se));
          },
          py::arg("pi"), py::arg("samples"), py::arg("seed"), py::call_guard<py::gil_scoped_release>());

  m.def(
      "stationary_model_rewards",
      [](const VectorXd& rewards, int64_t G, const std::string& normalisation, int std_ddof, double std_eps,
         int64_t max_terms) {
        st::GroupSpec spec;
        spec.group_size = G;
        spec.normalisation = st::parse_normalisation(normalisation);
        spec.std_ddof = std_ddof;
        spec.std_eps = std_eps;
        return Model::from_rewards(rewards, spec, max_terms);
      },
      py::arg("rewards"), py::arg("G"), py::arg("normalisation"), py::arg("std_ddof"), py::arg("std_eps"),
      py::arg("max_terms"), "G = -1 means infinity");
  m.def("stationary_model_pairwise", &Model::from_pairwise, py::arg("pairwise"));
  m.def("stationary_model_nlhf", &Model::from_nlhf, py::arg("preference_matrix"));

  py::class_<st::Equilibrium>(m, "StationaryEquilibrium")
      .def_readonly("pi", &st::Equilibrium::pi)
      .def_readonly("stable", &st::Equilibrium::stable)
      .def_readonly("boundary", &st::Equilibrium::boundary);
  py::class_<st::StationaryResult>(m, "StationaryResult")
      .def_readonly("pi", &st::StationaryResult::pi)
      .def_readonly("converged", &st::StationaryResult::converged)
      .def_readonly("residual", &st::StationaryResult::residual)
      .def_readonly("fixed_point_residual", &st::StationaryResult::fixed_point_residual)
      .def_readonly("iterations", &st::StationaryResult::iterations)
      .def_readonly("stages", &st::StationaryResult::stages)
      .def_readonly("method", &st::StationaryResult::method)
      .def_readonly("message", &st::StationaryResult::message)
      .def_readonly("stable", &st::StationaryResult::stable)
      .def_readonly("stability_known", &st::StationaryResult::stability_known)
      .def_readonly("boundary", &st::StationaryResult::boundary)
      .def_readonly("equilibria", &st::StationaryResult::equilibria)
      .def_readonly("preference_std_error", &st::StationaryResult::preference_std_error);

  m.def(
      "stationary_solve",
      [](const Model& mo, const VectorXd& pi_ref, double beta, const std::string& method,
         const std::string& penalty, double tol, int max_iter, double beta_start, double beta_factor,
         int64_t samples, int mc_rounds, double mc_tol, uint64_t seed) {
        st::SolveOptions opt;
        opt.mc_tol = mc_tol;
        opt.mc_samples = samples;
        opt.mc_rounds = mc_rounds;
        opt.seed = seed;
        opt.penalty = st::parse_penalty(penalty);
        opt.tol = tol;
        opt.max_iter = max_iter;
        opt.beta_start = beta_start;
        opt.beta_factor = beta_factor;
        return st::solve(mo, pi_ref, beta, method, opt);
      },
      py::arg("model"), py::arg("pi_ref"), py::arg("beta"), py::arg("method"), py::arg("penalty"),
      py::arg("tol"), py::arg("max_iter"), py::arg("beta_start"), py::arg("beta_factor"),
      py::arg("samples") = 20000, py::arg("mc_rounds") = 8, py::arg("mc_tol") = 2e-3, py::arg("seed") = 0,
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "stationary_flow",
      [](const Model& mo, const VectorXd& pi_ref, double beta, const std::string& penalty, int inner_steps,
         double step, double rtol, double tol, int64_t max_steps) {
        st::FlowOptions opt;
        opt.penalty = st::parse_penalty(penalty);
        opt.inner_steps = inner_steps;
        opt.step = step;
        opt.rtol = rtol;
        opt.tol = tol;
        opt.max_steps = max_steps;
        return st::solve_flow(mo, pi_ref, beta, opt);
      },
      py::arg("model"), py::arg("pi_ref"), py::arg("beta"), py::arg("penalty"), py::arg("inner_steps"),
      py::arg("step"), py::arg("rtol"), py::arg("tol"), py::arg("max_steps"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "stationary_equilibria",
      [](const Model& mo, const VectorXd& pi_ref, double beta, const std::string& penalty) {
        return st::binary_equilibria(mo, pi_ref, beta, st::parse_penalty(penalty));
      },
      py::arg("model"), py::arg("pi_ref"), py::arg("beta"), py::arg("penalty"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "stationary_residuals",
      [](const Model& mo, const VectorXd& pi, const VectorXd& pi_ref, double beta,
         const std::string& penalty) {
        const st::Penalty p = st::parse_penalty(penalty);
        return std::make_pair(st::stationarity_residual(mo, pi, pi_ref, beta, p),
                              st::fixed_point_residual(mo, pi, pi_ref, beta, p));
      },
      py::arg("model"), py::arg("pi"), py::arg("pi_ref"), py::arg("beta"), py::arg("penalty"),
      py::call_guard<py::gil_scoped_release>());
  m.def(
      "stationary_binary",
      [](const VectorXd& p, double beta, int64_t G, const std::string& penalty, double gamma) {
        const st::Penalty pen = st::parse_penalty(penalty);
        MatrixXd out(p.size(), 2);
        for (Eigen::Index i = 0; i < p.size(); ++i) {
          const auto x = st::binary_closed_form(beta, p[i], G, pen, gamma);
          out(i, 0) = x[0];
          out(i, 1) = x[1];
        }
        return out;
      },
      py::arg("p"), py::arg("beta"), py::arg("G"), py::arg("penalty"), py::arg("gamma"),
      py::call_guard<py::gil_scoped_release>(),
      "(n, 2): pi(a), pi(b) of the binary closed forms at each pi_ref(a) = p");
  m.def("stationary_binary_phi", &st::binary_phi, py::arg("x"), py::arg("G"));
  m.def("stationary_log_pooling", &st::log_pooling, py::arg("rewards"), py::arg("pi_ref"), py::arg("beta"));
}

}  // namespace bindings
}  // namespace grpokit
