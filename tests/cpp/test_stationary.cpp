// Stationary policies: the paper's worked tables (docs/stationary.md, Verification), closed forms
// against the Newton solver and the flow, and bad input.
#include <cmath>
#include <vector>

#include "catch.hpp"
#include "grpokit/error.hpp"
#include "grpokit/stationary.hpp"

using namespace grpokit;
using namespace grpokit::stationary;

namespace {
Eigen::VectorXd vec(std::vector<double> v) { return Eigen::Map<Eigen::VectorXd>(v.data(), v.size()); }
PreferenceModel rewards_model(std::vector<double> r, int64_t G, Normalisation n = Normalisation::MeanStd) {
  GroupSpec s;
  s.group_size = G;
  s.normalisation = n;
  return PreferenceModel::from_rewards(vec(r), s);
}
double maxdiff(const Eigen::VectorXd& a, const Eigen::VectorXd& b) { return (a - b).cwiseAbs().maxCoeff(); }
}  // namespace

TEST_CASE("binary closed forms reproduce the paper's main grid", "[stationary]") {
  // β = 1, p = 0.1: G = 2, 4, 8, 16, ∞ (the main grid of docs/stationary.md, Verification).
  CHECK(binary_g2_k3(1.0, 1.0, 0.1)[0] == Approx(0.316227766).epsilon(1e-9));
  CHECK(binary_finite_k3(1.0, 4, 0.1)[0] == Approx(0.503982560).epsilon(1e-9));
  CHECK(binary_finite_k3(1.0, 8, 0.1)[0] == Approx(0.559594914).epsilon(1e-9));
  CHECK(binary_finite_k3(1.0, 16, 0.1)[0] == Approx(0.577248199).epsilon(1e-9));
  CHECK(binary_ginf_k3(1.0, 0.1)[0] == Approx(0.591547595).epsilon(1e-9));
  CHECK(binary_ginf_k3(0.01, 0.5)[0] == Approx(0.999975002).epsilon(1e-9));
  // 1 − x is computed without cancellation.
  const auto x = binary_ginf_k3(0.01, 0.9);
  CHECK(x[1] == Approx(1.0 - 0.999999000).epsilon(1e-3));
  CHECK(x[0] + x[1] == Approx(1.0).epsilon(1e-15));
  // β = γ gives sqrt(p); stochastic G = 2 rows (γ < 1).
  CHECK(binary_g2_k3(0.5, 0.5, 0.01)[0] == Approx(0.1).epsilon(1e-12));
  CHECK(binary_g2_k3(0.1, 0.5, 0.3)[0] == Approx(0.869041575982).epsilon(1e-11));
  CHECK(binary_phi(0.5, 4) == Approx(0.404006).epsilon(1e-6));
}

TEST_CASE("direct-KL closed forms (Fig. 3, App. B.2)", "[stationary]") {
  CHECK(binary_g2_k3is(1.0, 1.0, 0.5)[0] == Approx(0.731058578630).epsilon(1e-11));
  const auto eq = binary_ginf_k3is(1.0, 0.1);
  REQUIRE(eq.size() == 3);
  CHECK(eq[0].pi[0] == Approx(0.453051419255).epsilon(1e-10));
  CHECK(eq[0].stable);
  CHECK(eq[1].pi[0] == Approx(0.966538512054).epsilon(1e-10));
  CHECK_FALSE(eq[1].stable);
  CHECK(eq[2].boundary);
  CHECK(binary_ginf_k3is(1.0, 0.5).size() == 1);  // collapse: h > 0 on [0, 1]
}

TEST_CASE("categorical closed forms match Newton and the paper's table", "[stationary]") {
  const Eigen::VectorXd r = vec({2, 1, 0}), p = vec({0.2, 0.3, 0.5});
  SolveOptions opt;
  const Eigen::VectorXd g2 = categorical_g2_k3(r, p, 1.0);
  CHECK(maxdiff(g2, vec({0.447213596, 0.259893186, 0.292893219})) < 1e-9);
  const auto n2 = solve_newton(rewards_model({2, 1, 0}, 2), p, 1.0, opt);
  REQUIRE(n2.converged);
  CHECK(maxdiff(n2.pi, g2) < 1e-12);
  const Eigen::VectorXd ginf = categorical_ginf_k3(r, p, 1.0);
  CHECK(maxdiff(ginf, vec({0.641835096, 0.186292506, 0.171872398})) < 1e-9);
  const auto ninf = solve_newton(rewards_model({2, 1, 0}, kInfiniteGroup), p, 1.0, opt);
  REQUIRE(ninf.converged);
  CHECK(maxdiff(ninf.pi, ginf) < 1e-11);
  const auto n4 = solve_newton(rewards_model({2, 1, 0}, 4), p, 0.1, opt);
  REQUIRE(n4.converged);
  CHECK(maxdiff(n4.pi, vec({0.953652956, 0.017918763, 0.028428281})) < 1e-9);
  CHECK(n4.fixed_point_residual < 1e-12);
  CHECK(n4.stable);
}

TEST_CASE("the flow agrees with Newton, with and without inner steps", "[stationary]") {
  const auto m = rewards_model({1, 0.6, 0.3, 0}, 4);
  const Eigen::VectorXd p = vec({0.1, 0.2, 0.3, 0.4});
  const auto nt = solve_newton(m, p, 0.1, SolveOptions{});
  FlowOptions fo;
  const auto fl = solve_flow(m, p, 0.1, fo);
  REQUIRE(fl.converged);
  CHECK(maxdiff(fl.pi, nt.pi) < 1e-10);
  CHECK(maxdiff(nt.pi, vec({0.947421942, 0.012255973, 0.017545488, 0.022776597})) < 1e-9);
  fo.inner_steps = 4;
  const auto f4 = solve_flow(m, p, 0.1, fo);
  REQUIRE(f4.converged);
  CHECK(maxdiff(f4.pi, nt.pi) < 1e-10);
}

TEST_CASE("shift-only and RLHF equivalences", "[stationary]") {
  const Eigen::VectorXd p = vec({0.3, 0.7});
  const auto m = rewards_model({1, 0}, 8, Normalisation::MeanOnly);
  const auto dkl = solve(m, p, 1.0, "closed_form", SolveOptions{Penalty::K3IS});
  CHECK(dkl.pi[0] == Approx(0.506925092044).epsilon(1e-11));
  SolveOptions o;
  o.penalty = Penalty::K3IS;
  const auto nt = solve_newton(m, p, 1.0, o);
  CHECK(maxdiff(nt.pi, dkl.pi) < 1e-12);
  CHECK(shift_k3(vec({1, 0}), p, 1.0, kInfiniteGroup)[0] == Approx(0.547722557505).epsilon(1e-11));
}

TEST_CASE("exact P_G: binomial form, E_pi P_G = 0, Monte Carlo", "[stationary]") {
  const auto m = rewards_model({1, 0}, 8);
  Eigen::VectorXd P;
  m.evaluate(vec({0.3, 0.7}), P, nullptr);  // atoms sorted increasing: (r = 0, r = 1)
  CHECK(0.7 * P[1] == Approx(binary_phi(0.7, 8)).epsilon(1e-13));
  CHECK(std::abs(0.3 * P[0] + 0.7 * P[1]) < 1e-15);
  Eigen::VectorXd Pm, se;
  m.monte_carlo(vec({0.3, 0.7}), 20000, 7, Pm, se);
  CHECK(std::abs(Pm[1] - P[1]) < 5.0 * se[1]);
}

TEST_CASE("bad input gives clear errors", "[stationary]") {
  const auto m = rewards_model({1, 0}, 4);
  CHECK_THROWS_WITH(solve_newton(m, vec({0.5, 0.5}), 0.0, SolveOptions{}), Catch::Contains("beta"));
  CHECK_THROWS_WITH(solve_newton(m, vec({0.5, 0.6}), 1.0, SolveOptions{}), Catch::Contains("summing to 1"));
  CHECK_THROWS_WITH(solve_newton(m, vec({1.5, -0.5}), 1.0, SolveOptions{}), Catch::Contains("pi_ref"));
  CHECK_THROWS_WITH(rewards_model({1, 0}, 1), Catch::Contains("G"));
  CHECK_THROWS_AS(solve_closed_form(rewards_model({2, 1, 0}, 4), vec({0.2, 0.3, 0.5}), 1.0, Penalty::K3),
                  Error);
  // All rewards equal: P_G = 0 and π = π_ref (a documented limit, not an error).
  const auto eq = solve_newton(rewards_model({1, 1, 1}, 4), vec({0.2, 0.3, 0.5}), 1.0, SolveOptions{});
  CHECK(eq.converged);
  CHECK(maxdiff(eq.pi, vec({0.2, 0.3, 0.5})) == 0.0);
}

TEST_CASE("analytic dP/dw matches central differences along the simplex", "[stationary]") {
  std::vector<PreferenceModel> models;
  models.push_back(rewards_model({1.0, 0.6, 0.3, 0.0}, 5));                        // enumerated
  models.push_back(rewards_model({1.0, 0.6, 0.3, 0.0}, 2));                        // pair sign
  models.push_back(rewards_model({1.0, 0.6, 0.3, 0.0}, kInfiniteGroup));           // G = ∞
  models.push_back(rewards_model({1.0, 0.6, 0.3, 0.0}, 6, Normalisation::MeanOnly));  // shift
  {
    GroupSpec s;
    s.group_size = 4;
    s.std_ddof = 1;
    s.std_eps = 1e-4;
    models.push_back(PreferenceModel::from_rewards(vec({1.0, 0.6, 0.3, 0.0}), s));  // TRL-style
  }
  Eigen::MatrixXd Q(4, 4);
  Q << 0, 0.6, 0.7, 0.9, 0.3, 0, 0.5, 0.6, 0.2, 0.4, 0, 0.5, 0.1, 0.3, 0.4, 0;
  models.push_back(PreferenceModel::from_pairwise(Q));
  const Eigen::VectorXd w = vec({0.15, 0.25, 0.2, 0.4});
  for (const auto& m : models) {
    Eigen::VectorXd P;
    Eigen::MatrixXd D;
    m.evaluate(w, P, &D);
    for (int i = 0; i < 4; ++i)
      for (int j = 0; j < 4; ++j) {
        if (i == j) continue;
        Eigen::VectorXd d = Eigen::VectorXd::Zero(4);
        d[i] = 1.0, d[j] = -1.0;
        const double h = 1e-6;
        Eigen::VectorXd Pp, Pm;
        m.evaluate(w + h * d, Pp, nullptr);
        m.evaluate(w - h * d, Pm, nullptr);
        const Eigen::VectorXd fd = (Pp - Pm) / (2 * h);
        CHECK(maxdiff(fd, D * d) < 1e-7);
      }
  }
}

TEST_CASE("the sampled model reweights to the exact P_G", "[stationary]") {
  const auto m = rewards_model({1.0, 0.6, 0.3, 0.0}, 6);
  const Eigen::VectorXd w0 = vec({0.2, 0.3, 0.3, 0.2}), w = vec({0.25, 0.25, 0.3, 0.2});
  const PreferenceModel s = m.sampled(w0, 40000, 11);
  Eigen::VectorXd P, Ps, Pm, se;
  m.evaluate(w, P, nullptr);
  s.evaluate(w, Ps, nullptr);
  m.monte_carlo(w, 40000, 11, Pm, se);
  for (int l = 0; l < 4; ++l) CHECK(std::abs(Ps[l] - P[l]) < 6.0 * se[l]);
}
