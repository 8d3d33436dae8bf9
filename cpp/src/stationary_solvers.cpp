// Solvers of the stationarity condition (stationary.hpp): Newton with β-continuation on atom
// logits, the expected on-policy GRPO flow on output logits, binary scans, residuals, dispatch.
#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include <Eigen/Eigenvalues>

#include "grpokit/error.hpp"
#include "grpokit/stationary.hpp"
#include "stationary_reduced.hpp"

namespace grpokit {
namespace stationary {

using namespace detail;  // the reduced problem and Newton (stationary_reduced.hpp)

namespace {

using Eigen::MatrixXd;
using Eigen::VectorXd;
bool tilted_family_applies(const PreferenceModel& model, Penalty penalty);  // defined with its use below

}  // namespace

void check_problem(const PreferenceModel& model, const VectorXd& pi_ref, double beta) {
  if (!(beta > 0.0) || !std::isfinite(beta)) value_error("beta: expected a finite value > 0, got ", beta);
  if (pi_ref.size() != model.num_outputs())
    value_error("pi_ref: expected ", model.num_outputs(), " probabilities (one per output), got ",
                pi_ref.size());
  double s = 0.0;
  for (Eigen::Index o = 0; o < pi_ref.size(); ++o) {
    if (!(pi_ref[o] >= 0.0) || !std::isfinite(pi_ref[o]))
      value_error("pi_ref: element ", o, " is ", pi_ref[o], "; expected finite probabilities >= 0");
    s += pi_ref[o];
  }
  if (!(std::abs(s - 1.0) <= 1e-9))
    value_error("pi_ref: expected probabilities summing to 1 (within 1e-9), got a sum of ", s);
}

namespace {
// Checks a (policy, problem) pair and returns P_G(o|π) per output.
VectorXd output_preferences(const PreferenceModel& model, const VectorXd& pi, const VectorXd& pi_ref,
                            double beta) {
  check_problem(model, pi_ref, beta);
  const VectorXd w = model.atom_masses(pi);  // checks the size
  for (Eigen::Index o = 0; o < pi.size(); ++o)
    if (!(pi[o] >= 0.0) || !std::isfinite(pi[o]) || (pi[o] > 0.0 && pi_ref[o] == 0.0))
      value_error("pi: element ", o, " is ", pi[o],
                  "; expected finite probabilities >= 0, and 0 "
                  "where pi_ref is 0");
  if (!(std::abs(w.sum() - 1.0) <= 1e-6))
    value_error("pi: expected probabilities summing to 1, got ", w.sum());
  VectorXd Pa;
  model.evaluate(w, Pa, nullptr);
  VectorXd P(pi.size());
  for (Eigen::Index o = 0; o < pi.size(); ++o) P[o] = Pa[model.atom_of()[o]];
  return P;
}
}  // namespace

VectorXd stationarity_residual(const PreferenceModel& model, const VectorXd& pi, const VectorXd& pi_ref,
                               double beta, Penalty penalty) {
  const VectorXd P = output_preferences(model, pi, pi_ref, beta);
  const Eigen::Index K = pi.size();
  const double Pbar = pi.dot(P);
  VectorXd R = VectorXd::Zero(K);
  if (penalty == Penalty::K3) {
    for (Eigen::Index o = 0; o < K; ++o) R[o] = pi[o] * (beta - P[o] + Pbar) - beta * pi_ref[o];
    return R;
  }
  double kl = 0.0;
  for (Eigen::Index o = 0; o < K; ++o)
    if (pi[o] > 0.0) kl += pi[o] * std::log(pi[o] / pi_ref[o]);
  for (Eigen::Index o = 0; o < K; ++o)
    if (pi[o] > 0.0) R[o] = -pi[o] * ((P[o] - Pbar) - beta * (std::log(pi[o] / pi_ref[o]) - kl));
  return R;
}

VectorXd fixed_point_residual(const PreferenceModel& model, const VectorXd& pi, const VectorXd& pi_ref,
                              double beta, Penalty penalty) {
  const VectorXd P = output_preferences(model, pi, pi_ref, beta);
  const Eigen::Index K = pi.size();
  VectorXd out = VectorXd::Zero(K);
  if (penalty == Penalty::K3) {  // eq. (11): π (1 − (P − E_π P)/β) = π_ref
    const double Pbar = pi.dot(P);
    for (Eigen::Index o = 0; o < K; ++o) out[o] = pi[o] * (1.0 - (P[o] - Pbar) / beta) - pi_ref[o];
    return out;
  }
  // π = π_ref exp(P/β) / Z over the support of π (a boundary point keeps its zeros).
  double top = -std::numeric_limits<double>::infinity(), Z = 0.0;
  for (Eigen::Index o = 0; o < K; ++o)
    if (pi[o] > 0.0) top = std::max(top, P[o]);
  VectorXd g = VectorXd::Zero(K);
  for (Eigen::Index o = 0; o < K; ++o)
    if (pi[o] > 0.0) Z += (g[o] = pi_ref[o] * std::exp((P[o] - top) / beta));
  for (Eigen::Index o = 0; o < K; ++o)
    if (pi[o] > 0.0) out[o] = pi[o] - g[o] / Z;
  return out;
}

StationaryResult solve_newton(const PreferenceModel& model, const VectorXd& pi_ref, double beta,
                              const SolveOptions& opt) {
  check_problem(model, pi_ref, beta);
  if (!(opt.tol > 0.0)) value_error("tol: expected a value > 0, got ", opt.tol);
  if (opt.max_iter < 1) value_error("max_iter: expected a positive integer, got ", opt.max_iter);
  if (!(opt.beta_factor > 1.0)) value_error("beta_factor: expected a value > 1, got ", opt.beta_factor);
  const Reduced pb0(model, pi_ref, beta, opt.penalty);
  if (pb0.n() == 1) return trivial(pb0);

  StationaryResult r;
  r.method = "newton";
  VectorXd theta(pb0.n());
  for (int64_t a = 0; a < pb0.n(); ++a) theta[a] = std::log(pb0.q[pb0.active[a]]);
  theta.array() -= theta[pb0.n() - 1];

  // β-continuation: at large β the stationary policy is ≈ π_ref; shrink β geometrically,
  // warm-starting each stage, adapting the factor (grow after easy stages, shrink on failure).
  double b = std::max(opt.beta_start, beta), factor = opt.beta_factor, last_ok = -1.0;
  NewtonOutcome step;
  while (true) {
    const Reduced pb(model, pi_ref, b, opt.penalty);
    VectorXd trial = theta;
    const double tol = (b == beta ? opt.tol : std::max(opt.tol, 1e-10)) * scale_of(b);
    step = newton(pb, trial, tol, opt.max_iter);
    r.iterations += step.iterations;
    ++r.stages;
    if (step.ok) {
      theta = trial;
      last_ok = b;
      if (b == beta) break;
      if (step.iterations <= 4) factor = std::min(factor * 1.5, 4.0);
      b = std::max(beta, b / factor);
      continue;
    }
    factor = std::sqrt(factor);
    if (last_ok < 0.0 || factor < 1.0 + 1e-4) break;
    b = std::max(beta, last_ok / factor);
  }
  const Reduced pb(model, pi_ref, beta, opt.penalty);
  const VectorXd wa = softmax(theta);
  r.pi = pb.outputs(wa);
  r.converged = step.ok && last_ok == beta;
  if (!r.converged) {
    std::ostringstream os;
    os << "Newton with beta-continuation did not converge: stalled at beta = "
       << (last_ok < 0.0 ? b : last_ok) << " (target " << beta << ") with residual " << step.residual
       << " > tol " << opt.tol * scale_of(b) << " after " << r.iterations << " iterations";
    if (opt.penalty == Penalty::K3IS)
      os << "; with the direct-KL penalty the branch from pi_ref can end (a fold) and the policy "
            "may collapse onto the best outputs: try method='flow' or equilibria()";
    r.message = os.str();
  }
  finish(r, pb);
  if (r.converged) assess_stability(r, pb, wa);
  if (pb.n() == 2 || (pb.n() > 2 && tilted_family_applies(model, opt.penalty)))
    r.equilibria = binary_equilibria(model, pi_ref, beta, opt.penalty);
  else if (r.converged)
    r.equilibria.push_back({r.pi, r.stable, r.boundary});
  return r;
}

StationaryResult solve_flow(const PreferenceModel& model, const VectorXd& pi_ref, double beta,
                            const FlowOptions& opt) {
  check_problem(model, pi_ref, beta);
  if (opt.inner_steps < 1) value_error("inner_steps: expected an integer >= 1, got ", opt.inner_steps);
  if (!(opt.tol > 0.0)) value_error("tol: expected a value > 0, got ", opt.tol);
  if (!(opt.step >= 0.0)) value_error("step: expected a value >= 0 (0: automatic), got ", opt.step);
  if (!(opt.rtol > 0.0 && opt.rtol < 1.0)) value_error("rtol: expected a value in (0, 1), got ", opt.rtol);
  if (opt.max_steps < 1) value_error("max_steps: expected a positive integer, got ", opt.max_steps);
  const Reduced pb(model, pi_ref, beta, opt.penalty);
  if (pb.n() == 1) return trivial(pb);

  // Per-output logits of the supported outputs, from log π_ref.
  std::vector<Eigen::Index> idx;
  for (Eigen::Index o = 0; o < pi_ref.size(); ++o)
    if (pi_ref[o] > 0.0) idx.push_back(o);
  const Eigen::Index m = static_cast<Eigen::Index>(idx.size());
  VectorXd ref(m), theta(m);
  for (Eigen::Index i = 0; i < m; ++i) ref[i] = pi_ref[idx[i]], theta[i] = std::log(ref[i]);
  auto policy = [&](const VectorXd& th) {
    VectorXd pi = VectorXd::Zero(pi_ref.size());
    const VectorXd s = softmax(th);
    for (Eigen::Index i = 0; i < m; ++i) pi[idx[i]] = s[i];
    return pi;
  };
  auto prefs = [&](const VectorXd& pi) {  // P per supported output
    VectorXd Pa;
    model.evaluate(model.atom_masses(pi), Pa, nullptr);
    VectorXd P(m);
    for (Eigen::Index i = 0; i < m; ++i) P[i] = Pa[model.atom_of()[idx[i]]];
    return P;
  };
  auto velocity = [&](const VectorXd& th) {  // dθ/dt = −R on the supported outputs
    const VectorXd R = stationarity_residual(model, policy(th), pi_ref, beta, opt.penalty);
    VectorXd v(m);
    for (Eigen::Index i = 0; i < m; ++i) v[i] = -R[idx[i]];
    return v;
  };
  const double tol = opt.tol * scale_of(beta);
  StationaryResult r;
  r.method = opt.inner_steps == 1 ? "flow" : "flow_inner_steps";
  VectorXd k1 = velocity(theta);
  double res = sup_norm(k1);
  if (opt.inner_steps == 1) {
    // Heun–Euler with relative-error control: the change of the velocity over a step must stay
    // below rtol·|velocity| (the residual of a non-gradient field is not monotone, so plain
    // residual-decrease control fails; docs/stationary.md, Solvers).
    double h = opt.step > 0.0 ? opt.step : 0.1 / (beta + 1.0);
    while (res > tol && r.iterations < opt.max_steps) {
      ++r.iterations;
      const VectorXd k2 = velocity(theta + h * k1);
      const double err = sup_norm(k1 - k2);
      const double allowed = opt.rtol * std::max(sup_norm(k1), 1e-300);
      if (err <= allowed) {
        theta += 0.5 * h * (k1 + k2);
        k1 = velocity(theta);
        res = sup_norm(k1);
        h *= std::min(2.0, 0.9 * allowed / std::max(err, 1e-300));
      } else {
        h *= std::max(0.2, 0.9 * allowed / err);
      }
      if (!std::isfinite(res) || !(h > 0.0)) break;
    }
  } else {
    // GRPO's loop: π_old frozen for μ plain gradient steps on the surrogate J(π; π_old), whose
    // penalty gradient is eq. (8) (k3) or log(π/π_ref) (k3_is).
    const double lr = opt.step > 0.0 ? opt.step : 0.2 / (beta + 1.0);
    while (res > tol && r.iterations < opt.max_steps) {
      ++r.iterations;
      const VectorXd old = softmax(theta);
      const VectorXd P_old = prefs(policy(theta));
      for (int s = 0; s < opt.inner_steps; ++s) {
        const VectorXd pi = softmax(theta);
        VectorXd g(m);
        for (Eigen::Index i = 0; i < m; ++i)
          g[i] = P_old[i] - beta * (opt.penalty == Penalty::K3
                                        ? -old[i] * ref[i] / (pi[i] * pi[i]) + old[i] / pi[i]
                                        : std::log(pi[i] / ref[i]));
        theta.array() += lr * (pi.array() * (g.array() - pi.dot(g)));
      }
      res = sup_norm(velocity(theta));
      if (!std::isfinite(res)) break;
    }
  }
  r.pi = policy(theta);
  r.converged = res <= tol;
  if (!r.converged) {
    std::ostringstream os;
    os << "the flow did not converge: residual " << res << " > tol " << tol << " after " << r.iterations
       << " steps";
    double smallest = std::numeric_limits<double>::infinity();
    for (Eigen::Index i = 0; i < m; ++i) smallest = std::min(smallest, r.pi[idx[i]] / ref[i]);
    if (smallest < 1e-8)
      os << "; some pi/pi_ref = " << smallest << ": the flow is approaching the boundary "
         << "(collapse onto the best outputs)";
    r.message = os.str();
  }
  finish(r, pb);
  r.stable = r.converged;  // an attractor of the flow it followed
  if (r.converged) r.equilibria.push_back({r.pi, r.stable, r.boundary});
  return r;
}

namespace {

// Direct KL (k3_is) at G = ∞ with σ-normalised advantages, any number of reward levels.
// Stationarity is π ∝ π_ref · exp((r − μ_π)/(β σ_π)): every stationary policy is a tilt
// π_s ∝ π_ref · e^{s r} whose inverse temperature solves g(s) = β s σ_s − 1 = 0, and the family is
// invariant under the expected flow (ds/dt = −g(s)/σ_s; directions off the family decay at rate β).
// So all interior equilibria are the roots of one scalar function: a root where g crosses upwards
// attracts, one where it crosses downwards repels; the collapse onto the best level (s → ∞, where
// g → −1) always attracts.
std::vector<Equilibrium> tilted_equilibria(const Reduced& pb) {
  const VectorXd& r_all = pb.model.atom_rewards();
  const int64_t k = pb.n();
  VectorXd r(k), q(k);
  for (int64_t a = 0; a < k; ++a) {
    r[a] = r_all[pb.active[a]];
    q[a] = pb.q[pb.active[a]];
  }
  const double r_max = r.maxCoeff(), r_min = r.minCoeff();
  const double span = r_max - r_min;
  auto tilt = [&](double s) {  // w_s ∝ q e^{s (r − r_max)} (shifted: no overflow)
    VectorXd w(k);
    for (int64_t a = 0; a < k; ++a) w[a] = q[a] * std::exp(s * (r[a] - r_max));
    return VectorXd(w / w.sum());
  };
  auto g = [&](double s) {
    const VectorXd w = tilt(s);
    const double mu = w.dot(r);
    double var = 0.0;
    for (int64_t a = 0; a < k; ++a) var += w[a] * (r[a] - mu) * (r[a] - mu);
    return pb.beta * s * std::sqrt(var) - 1.0;
  };
  // s in units of 1/span: tilts beyond e^{±750} of the reward range are numerically the collapse.
  std::vector<double> ss;
  for (double x = -8.0; x <= std::log(750.0); x += 0.01) ss.push_back(std::exp(x) / span);
  std::vector<double> gs(ss.size());
  for (size_t i = 0; i < ss.size(); ++i) gs[i] = g(ss[i]);
  std::vector<Equilibrium> out;
  for (size_t i = 0; i + 1 < ss.size(); ++i) {
    if ((gs[i] < 0.0) == (gs[i + 1] < 0.0)) continue;
    const bool upward = gs[i] < 0.0;
    double lo = ss[i], hi = ss[i + 1];
    for (int it = 0; it < 200; ++it) {
      const double mid = 0.5 * (lo + hi);
      if (mid <= lo || mid >= hi) break;
      if ((g(mid) < 0.0) == upward)
        lo = mid;
      else
        hi = mid;
    }
    out.push_back({pb.outputs(tilt(0.5 * (lo + hi))), upward, false});
  }
  VectorXd best = VectorXd::Zero(k);  // the collapse onto the best level, kept in π_ref's proportions
  double q_best = 0.0;
  for (int64_t a = 0; a < k; ++a)
    if (r[a] == r_max) q_best += q[a];
  for (int64_t a = 0; a < k; ++a)
    if (r[a] == r_max) best[a] = q[a] / q_best;
  out.push_back({pb.outputs(best), true, true});
  (void)r_min;
  return out;
}

bool tilted_family_applies(const PreferenceModel& model, Penalty penalty) {
  if (penalty != Penalty::K3IS || !model.has_rewards() || model.is_pairwise() || model.is_nlhf())
    return false;
  const GroupSpec& s = model.spec();
  return s.infinite() && s.normalisation != Normalisation::MeanOnly && s.std_eps == 0.0 && s.std_ddof == 0;
}

}  // namespace

std::vector<Equilibrium> binary_equilibria(const PreferenceModel& model, const VectorXd& pi_ref, double beta,
                                           Penalty penalty) {
  check_problem(model, pi_ref, beta);
  const Reduced pb(model, pi_ref, beta, penalty);
  if (pb.n() > 2 && tilted_family_applies(model, penalty)) return tilted_equilibria(pb);
  if (pb.n() != 2)
    value_error("equilibria: expected a binary problem (two supported reward levels or outputs), got ",
                pb.n());
  auto f = [&](double y) { return binary_sign_function(pb, y); };
  // Grid in y = logit(w_a): uniform in w_a (where most roots are) and uniform in y to ±745.
  std::vector<double> ys;
  for (int i = 0; i < 4000; ++i) {
    const double x = (i + 0.5) / 4000.0;
    ys.push_back(std::log(x) - std::log1p(-x));
  }
  for (double y = -745.0; y <= 745.0; y += 0.5) ys.push_back(y);
  std::sort(ys.begin(), ys.end());
  std::vector<double> fs(ys.size());
  for (size_t i = 0; i < ys.size(); ++i) fs[i] = f(ys[i]);
  std::vector<Equilibrium> out;
  auto point = [&](double y, bool stable, bool boundary) {
    VectorXd wa(2);
    if (boundary)
      wa << (y > 0 ? 1.0 : 0.0), (y > 0 ? 0.0 : 1.0);
    else
      wa << sigmoid(y), sigmoid(-y);
    out.push_back({pb.outputs(wa), stable, boundary});
  };
  if (fs.front() > 0.0) point(-1.0, true, true);  // R_a > 0 near w_a = 0: the flow empties atom a
  for (size_t i = 0; i + 1 < ys.size(); ++i) {
    if (fs[i] == 0.0) {
      point(ys[i], i > 0 && fs[i - 1] < 0.0, false);
      continue;
    }
    if ((fs[i] < 0.0) != (fs[i + 1] < 0.0) && fs[i + 1] != 0.0) {
      double lo = ys[i], hi = ys[i + 1];
      const bool increasing = fs[i] < 0.0;
      for (int it = 0; it < 200; ++it) {
        const double mid = 0.5 * (lo + hi);
        if (mid <= lo || mid >= hi) break;
        if ((f(mid) < 0.0) == increasing)
          lo = mid;
        else
          hi = mid;
      }
      point(0.5 * (lo + hi), increasing, false);  // R_a increasing in w_a: attracting
    }
  }
  if (fs.back() < 0.0) point(1.0, true, true);  // R_a < 0 near w_a = 1: the flow fills atom a
  return out;
}

bool has_closed_form(const PreferenceModel& model, const VectorXd& pi_ref, Penalty penalty) {
  const Reduced pb(model, pi_ref, 1.0, penalty);
  if (pb.n() <= 1) return true;
  if (model.is_nlhf()) return penalty == Penalty::K3IS && pb.n() == 2;
  if (model.is_pairwise()) return pb.n() == 2;
  const GroupSpec& s = model.spec();
  if (s.normalisation == Normalisation::MeanOnly) return true;
  if (s.std_eps != 0.0) return false;
  if (penalty == Penalty::K3) return s.group_size == 2 || s.infinite() || pb.n() == 2;
  return pb.n() == 2 && (s.group_size == 2 || s.infinite());
}

StationaryResult solve_closed_form(const PreferenceModel& model, const VectorXd& pi_ref, double beta,
                                   Penalty penalty) {
  check_problem(model, pi_ref, beta);
  const Reduced pb(model, pi_ref, beta, penalty);
  if (pb.n() == 1) return trivial(pb);
  if (!has_closed_form(model, pi_ref, penalty))
    not_implemented("method='closed_form': no closed form for ", model.describe(), " with penalty '",
                    penalty_name(penalty), "' (", pb.n(), " supported levels); use method='newton'");
  StationaryResult r;
  r.converged = true;
  const GroupSpec& s = model.spec();
  const int64_t G = s.group_size;
  // Sample std scales every advantage by sqrt((G − 1)/G): the paper's model at β sqrt(G/(G − 1)).
  const double beta_ddof = (s.std_ddof == 1 && !s.infinite())
                               ? beta * std::sqrt(static_cast<double>(G) / static_cast<double>(G - 1))
                               : beta;
  auto binary = [&](const std::array<double, 2>& x) {  // x over (active[1], active[0]) = (top, bottom)
    VectorXd wa(2);
    wa << x[1], x[0];
    return pb.outputs(wa);
  };
  const double p_top = pb.q[pb.active[1]];  // binary: atom 1 is the better level (sorted rewards)
  if (model.is_nlhf() || model.is_pairwise()) {
    // Binary margin of a = active[1] over b = active[0]: P(a|π) − P(b|π) does not depend on π
    // here; read it off at π = δ_b.
    VectorXd e0 = VectorXd::Zero(model.num_atoms()), Pb;
    e0[pb.active[0]] = 1.0;
    model.evaluate(e0, Pb, nullptr);
    const double gamma = model.is_nlhf() ? Pb[pb.active[1]] - 0.5  // M(a,b) − 1/2
                                         : Pb[pb.active[1]];        // Q(a,b) − Q(b,a)
    if (penalty == Penalty::K3IS) {
      r.method = model.is_nlhf() ? "closed_form:nlhf_logistic" : "closed_form:logistic_g2";
      r.pi = binary(binary_g2_k3is(beta, gamma, p_top));
    } else {
      r.method = "closed_form:eq14";
      r.pi = binary(binary_g2_k3(beta, gamma, p_top));
    }
  } else if (s.normalisation == Normalisation::MeanOnly) {
    const Eigen::VectorXd rewards = [&] {
      VectorXd rv(pi_ref.size());
      for (Eigen::Index o = 0; o < rv.size(); ++o) rv[o] = model.atom_rewards()[model.atom_of()[o]];
      return rv;
    }();
    if (penalty == Penalty::K3) {
      r.method = "closed_form:shift_only";
      r.pi = shift_k3(rewards, pi_ref, beta, G);
    } else {
      r.method = "closed_form:rlhf_beta_eff";
      r.pi = log_pooling(rewards, pi_ref,
                         s.infinite() ? beta : beta * static_cast<double>(G) / static_cast<double>(G - 1));
    }
  } else if (penalty == Penalty::K3) {
    VectorXd rewards(pi_ref.size());
    for (Eigen::Index o = 0; o < rewards.size(); ++o) rewards[o] = model.atom_rewards()[model.atom_of()[o]];
    if (s.infinite()) {
      r.method = pb.n() == 2 ? "closed_form:eq15" : "closed_form:semi_closed_ginf";
      r.pi = pb.n() == 2 ? binary(binary_ginf_k3(beta, p_top)) : categorical_ginf_k3(rewards, pi_ref, beta);
    } else if (G == 2) {
      r.method = pb.n() == 2 ? "closed_form:eq14" : "closed_form:sequential_g2";
      r.pi = categorical_g2_k3(rewards, pi_ref, beta_ddof);
    } else {
      r.method = "closed_form:bisection_finite_g";
      r.pi = binary(binary_finite_k3(beta_ddof, G, p_top));
    }
  } else if (s.infinite()) {
    const std::vector<Equilibrium> eq = binary_ginf_k3is(beta, p_top);
    r.method = "closed_form:direct_kl_ginf";
    r.pi = binary({eq.front().pi[0], eq.front().pi[1]});  // the one the flow from π_ref reaches
    if (eq.size() == 1)
      r.message =
          "no interior stationary policy: the direct-KL GRPO flow at G = inf collapses onto "
          "the better answer (boundary)";
    for (const Equilibrium& e : eq)
      r.equilibria.push_back({binary({e.pi[0], e.pi[1]}), e.stable, e.boundary});
  } else {
    r.method = "closed_form:logistic_g2";
    r.pi = binary(binary_g2_k3is(beta_ddof, 1.0, p_top));
  }
  finish(r, pb);
  r.stable = true;
  for (const Equilibrium& e : r.equilibria)
    if ((e.pi - r.pi).cwiseAbs().maxCoeff() == 0.0) r.stable = e.stable;
  if (r.equilibria.empty()) {
    if (pb.n() == 2) {
      r.equilibria = binary_equilibria(model, pi_ref, beta, penalty);
      for (const Equilibrium& e : r.equilibria)  // the scan's verdict on the closed-form root
        if (!e.boundary && (e.pi - r.pi).cwiseAbs().maxCoeff() < 1e-6) r.stable = e.stable;
    } else {
      const VectorXd w = model.atom_masses(r.pi);
      VectorXd wa(pb.n());
      for (int64_t a = 0; a < pb.n(); ++a) wa[a] = w[pb.active[a]];
      assess_stability(r, pb, wa);
      r.equilibria.push_back({r.pi, r.stable, r.boundary});
    }
  }
  // A closed form is exact; a large residual means a numerical failure, never a silent answer.
  if (model.exact() && !(r.residual <= 1e-8 * scale_of(beta))) {
    r.converged = false;
    std::ostringstream os;
    os << "closed form '" << r.method << "' left a stationarity residual of " << r.residual
       << " (numerical failure); use method='newton'";
    r.message = os.str();
  }
  return r;
}

StationaryResult solve_monte_carlo(const PreferenceModel& model, const VectorXd& pi_ref, double beta,
                                   const SolveOptions& opt) {
  check_problem(model, pi_ref, beta);
  if (opt.mc_rounds < 2) value_error("mc_rounds: expected an integer >= 2, got ", opt.mc_rounds);
  // Round k draws its groups at the previous solution (π_ref first), so the likelihood ratios stay
  // moderate where it matters; Newton solves each smooth sample-average problem. The rounds stop
  // when the solution moves by less than mc_tol (sup-norm) from one round to the next.
  VectorXd w0 = model.atom_masses(pi_ref), previous;
  StationaryResult r;
  int64_t iterations = 0;
  double change = std::numeric_limits<double>::infinity();
  int rounds = 0;
  while (rounds < opt.mc_rounds) {
    const PreferenceModel sm = model.sampled(w0, opt.mc_samples, opt.seed + static_cast<uint64_t>(rounds));
    previous = r.pi;
    r = solve_newton(sm, pi_ref, beta, opt);
    ++rounds;
    iterations += r.iterations;
    if (!r.converged) break;
    w0 = model.atom_masses(r.pi);
    VectorXd P, se;
    model.monte_carlo(w0, opt.mc_samples, opt.seed + 7919 + static_cast<uint64_t>(rounds), P, se);
    r.preference_std_error = se.maxCoeff();
    if (previous.size() == r.pi.size()) {
      change = (r.pi - previous).cwiseAbs().maxCoeff();
      if (change <= opt.mc_tol) break;
    }
  }
  r.iterations = iterations;
  r.method = "newton_monte_carlo";
  std::ostringstream os;
  os << "P_G by Monte Carlo (" << opt.mc_samples << " groups per round, " << rounds
     << " rounds; exact enumeration would need " << model.num_terms() << " terms): standard error of "
     << "P_G at pi <= " << r.preference_std_error << "; the last round moved pi by " << change
     << "; residuals are those of the sampled problem";
  if (r.converged && !(change <= opt.mc_tol)) {
    r.converged = false;
    os << "; the rounds did not settle below mc_tol = " << opt.mc_tol
       << ": raise samples (Monte Carlo noise) or mc_rounds";
  }
  r.message = r.message.empty() ? os.str() : r.message + "; " + os.str();
  return r;
}

StationaryResult solve(const PreferenceModel& model, const VectorXd& pi_ref, double beta,
                       const std::string& method, const SolveOptions& opt) {
  if (!model.exact() && (method == "newton" || method == "auto"))
    return solve_monte_carlo(model, pi_ref, beta, opt);
  if (method == "newton") return solve_newton(model, pi_ref, beta, opt);
  if (method == "closed_form") return solve_closed_form(model, pi_ref, beta, opt.penalty);
  if (method == "auto") {
    check_problem(model, pi_ref, beta);
    if (has_closed_form(model, pi_ref, opt.penalty))
      return solve_closed_form(model, pi_ref, beta, opt.penalty);
    StationaryResult r = solve_newton(model, pi_ref, beta, opt);
    if (r.converged || opt.penalty != Penalty::K3IS) return r;
    // Direct KL: the branch from π_ref can end in a fold (several equilibria, as at G = ∞); the
    // GRPO flow from π_ref then goes to the attractor GRPO itself would reach.
    FlowOptions fo;
    fo.penalty = opt.penalty;
    fo.max_steps = 20000;  // a bounded fallback: method='flow' runs longer on request
    StationaryResult f = solve_flow(model, pi_ref, beta, fo);
    f.stages = r.stages;
    f.iterations += r.iterations;
    f.message = "Newton's continuation branch ended (" + r.message + "); the GRPO flow from pi_ref " +
                (f.converged ? "converged instead" : "did not converge either: " + f.message);
    return f;
  }
  value_error("method: expected one of 'auto', 'closed_form', 'newton' (or 'flow' in Python), got '", method,
              "'");
}

}  // namespace stationary
}  // namespace grpokit
