// The stationarity problem reduced to the supported atoms (reward levels with π_ref mass > 0): its
// residual and Jacobian, damped Newton on the atom logits, stability, and the finishing of a result.
// Shared by the solvers (stationary_solvers.cpp) and the equilibrium scans (stationary_equilibria.cpp).
#pragma once

#include <algorithm>
#include <cmath>
#include <limits>
#include <sstream>
#include <vector>

#include <Eigen/Eigenvalues>

#include "grpokit/error.hpp"
#include "grpokit/stationary.hpp"

namespace grpokit {
namespace stationary {
namespace detail {

using Eigen::MatrixXd;
using Eigen::VectorXd;

inline double sup_norm(const VectorXd& v) { return v.size() ? v.cwiseAbs().maxCoeff() : 0.0; }
inline double scale_of(double beta) { return std::max(1.0, beta); }  // tolerances are relative to max(1, β)
inline double sigmoid(double y) {
  return y >= 0.0 ? 1.0 / (1.0 + std::exp(-y)) : std::exp(y) / (1.0 + std::exp(y));
}

// A · (diag w − w wᵀ), the chain rule through softmax, in O(k²).
inline MatrixXd times_softmax_jacobian(const MatrixXd& A, const VectorXd& w) {
  MatrixXd out = A * w.asDiagonal();
  out.noalias() -= (A * w) * w.transpose();
  return out;
}

// The problem reduced to the supported atoms (reward levels with π_ref mass > 0).
struct Reduced {
  const PreferenceModel& model;
  const VectorXd& pi_ref;
  double beta;
  Penalty penalty;
  VectorXd q;  // reference atom masses (all atoms)
  std::vector<int64_t> active;  // atoms with q > 0

  Reduced(const PreferenceModel& m, const VectorXd& p, double b, Penalty pen)
      : model(m), pi_ref(p), beta(b), penalty(pen), q(m.atom_masses(p)) {
    for (Eigen::Index l = 0; l < q.size(); ++l)
      if (q[l] > 0.0) active.push_back(l);
  }
  int64_t n() const { return static_cast<int64_t>(active.size()); }

  VectorXd full(const VectorXd& w_active) const {
    VectorXd w = VectorXd::Zero(q.size());
    for (int64_t a = 0; a < n(); ++a) w[active[a]] = w_active[a];
    return w;
  }
  VectorXd outputs(const VectorXd& w_active) const {  // π ∝ π_ref inside each atom
    const VectorXd w = full(w_active);
    VectorXd pi(pi_ref.size());
    for (Eigen::Index o = 0; o < pi.size(); ++o) {
      const int64_t l = model.atom_of()[o];
      pi[o] = q[l] > 0.0 ? w[l] * (pi_ref[o] / q[l]) : 0.0;
    }
    return pi;
  }

  // Atom residual R (active) and, optionally, J = ∂R/∂θ over the active atom logits.
  //   k3:    R_ℓ = w_ℓ (β − P_ℓ + P̄) − β q_ℓ                        (R = 0 ⇔ eq. (11))
  //   k3_is: R_ℓ = −w_ℓ [(P_ℓ − P̄) − β (log(w_ℓ/q_ℓ) − KL(w‖q))]    (R = 0 ⇔ log pooling)
  // The expected on-policy GRPO update of per-atom logits is dθ/dt = −R(θ).
  VectorXd residual(const VectorXd& wa, MatrixXd* J) const {
    const int64_t k = n();
    VectorXd Pf, P(k);
    MatrixXd Df;
    model.evaluate(full(wa), Pf, J ? &Df : nullptr);
    for (int64_t a = 0; a < k; ++a) P[a] = Pf[active[a]];
    const double Pbar = wa.dot(P);
    VectorXd lg(k), R(k);
    double kl = 0.0;
    if (penalty == Penalty::K3IS) {
      for (int64_t a = 0; a < k; ++a) {
        lg[a] = wa[a] > 0.0 ? std::log(wa[a] / q[active[a]]) : 0.0;
        kl += wa[a] * lg[a];
      }
    }
    for (int64_t a = 0; a < k; ++a)
      R[a] = penalty == Penalty::K3 ? wa[a] * (beta - P[a] + Pbar) - beta * q[active[a]]
                                    : -wa[a] * ((P[a] - Pbar) - beta * (lg[a] - kl));
    if (!J) return R;
    MatrixXd D(k, k);
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b) D(a, b) = Df(active[a], active[b]);
    const VectorXd dPbar = P + D.transpose() * wa;  // ∂P̄/∂w_b
    MatrixXd dRdw(k, k);
    for (int64_t a = 0; a < k; ++a)
      for (int64_t b = 0; b < k; ++b) {
        const double d = a == b ? 1.0 : 0.0;
        if (penalty == Penalty::K3) {
          dRdw(a, b) = d * (beta - P[a] + Pbar) + wa[a] * (dPbar[b] - D(a, b));
        } else {
          const double inner = (P[a] - Pbar) - beta * (lg[a] - kl);
          dRdw(a, b) = -d * inner - wa[a] * (D(a, b) - dPbar[b]) + beta * d - beta * wa[a] * (lg[b] + 1.0);
        }
      }
    *J = times_softmax_jacobian(dRdw, wa);
    return R;
  }
};

// What Newton drives to zero. k3: R itself (R_ℓ → −β q_ℓ ≠ 0 as w_ℓ → 0). k3_is: R has the
// factor w_ℓ, so near-boundary points (w_ℓ ≈ 1e-14) are spurious roots; Newton uses
//   F_ℓ = (P_ℓ − P̄) − β (log(w_ℓ/q_ℓ) − KL)   (R = −w F),
// with ∂F/∂θ = (D − 1·∂P̄ᵀ + β·1·(log(w/q) + 1)ᵀ)·(diag w − w wᵀ) − β (I − 1 wᵀ), no division by w.
inline VectorXd newton_system(const Reduced& pb, const VectorXd& wa, MatrixXd* J) {
  if (pb.penalty == Penalty::K3) return pb.residual(wa, J);
  const int64_t k = pb.n();
  VectorXd Pf, P(k), lg(k);
  MatrixXd Df;
  pb.model.evaluate(pb.full(wa), Pf, J ? &Df : nullptr);
  double kl = 0.0;
  for (int64_t a = 0; a < k; ++a) {
    P[a] = Pf[pb.active[a]];
    lg[a] = std::log(wa[a] / pb.q[pb.active[a]]);
    kl += wa[a] * lg[a];
  }
  const double Pbar = wa.dot(P);
  const VectorXd F = (P.array() - Pbar - pb.beta * (lg.array() - kl)).matrix();
  if (!J) return F;
  MatrixXd D(k, k);
  for (int64_t a = 0; a < k; ++a)
    for (int64_t b = 0; b < k; ++b) D(a, b) = Df(pb.active[a], pb.active[b]);
  const VectorXd dPbar = P + D.transpose() * wa;
  const VectorXd ones = VectorXd::Ones(k);
  const VectorXd lg1 = (lg.array() + 1.0).matrix();
  *J = times_softmax_jacobian(D - ones * dPbar.transpose() + pb.beta * ones * lg1.transpose(), wa) -
       pb.beta * (MatrixXd::Identity(k, k) - ones * wa.transpose());
  return F;
}

inline VectorXd softmax(const VectorXd& th) {
  const VectorXd e = (th.array() - th.maxCoeff()).exp();
  return e / e.sum();
}

inline bool is_stable(const Reduced& pb, const VectorXd& wa);

// Stability under dθ/dt = −R(θ), in the gauge θ_last = 0: eigenvalues of −(J_ij − J_last,j).
// Sets r.stable and r.stability_known (not assessed beyond kMaxStabilityLevels levels).
inline void assess_stability(StationaryResult& r, const Reduced& pb, const VectorXd& wa) {
  r.stability_known = pb.n() <= kMaxStabilityLevels;
  r.stable = r.stability_known && is_stable(pb, wa);
}

inline bool is_stable(const Reduced& pb, const VectorXd& wa) {
  const int64_t k = pb.n();
  if (k < 2) return true;
  MatrixXd J;
  pb.residual(wa, &J);
  MatrixXd M(k - 1, k - 1);
  for (int64_t i = 0; i < k - 1; ++i)
    for (int64_t j = 0; j < k - 1; ++j) M(i, j) = -(J(i, j) - J(k - 1, j));
  const Eigen::EigenSolver<MatrixXd> es(M, false);
  if (es.info() != Eigen::Success) return false;
  return es.eigenvalues().real().maxCoeff() < -1e-12 * scale_of(pb.beta);
}

inline void finish(StationaryResult& r, const Reduced& pb) {
  r.boundary = false;
  for (Eigen::Index o = 0; o < r.pi.size(); ++o)
    if (pb.pi_ref[o] > 0.0 && r.pi[o] == 0.0) r.boundary = true;
  if (!pb.model.exact()) {
    r.residual = r.fixed_point_residual = std::numeric_limits<double>::quiet_NaN();
    return;
  }
  r.residual = sup_norm(stationarity_residual(pb.model, r.pi, pb.pi_ref, pb.beta, pb.penalty));
  r.fixed_point_residual = sup_norm(fixed_point_residual(pb.model, r.pi, pb.pi_ref, pb.beta, pb.penalty));
  // R = 0 can hold approximately at points that are not stationary (a mass of 1e-14 hides any
  // bracket); the paper's own fixed-point form must hold too, or the answer is not returned as one.
  if (r.converged && !(r.fixed_point_residual <= 1e-8)) {
    r.converged = false;
    std::ostringstream os;
    os << r.method << " reached a small residual " << r.residual << " at a point that violates the "
       << "fixed-point equation (residual " << r.fixed_point_residual << "): not a stationary policy";
    if (!r.message.empty()) os << "; " << r.message;
    r.message = os.str();
  }
}

inline StationaryResult trivial(const Reduced& pb) {
  StationaryResult r;
  r.pi = pb.outputs(VectorXd::Ones(1));
  r.converged = true;
  r.method = "trivial";
  r.message = "one reward level carries all of pi_ref: P_G = 0 there, so pi = pi_ref";
  r.stable = true;
  finish(r, pb);
  r.equilibria.push_back({r.pi, true, false});
  return r;
}

// Damped Newton on the free atom logits (the last is the gauge) at one β.
struct NewtonOutcome {
  bool ok = false;
  int iterations = 0;
  double residual = 0.0;
};

inline NewtonOutcome newton(const Reduced& pb, VectorXd& theta, double tol, int max_iter) {
  const int64_t k = pb.n();
  NewtonOutcome out;
  MatrixXd J;
  VectorXd R = newton_system(pb, softmax(theta), &J);
  double norm = sup_norm(R);
  for (int it = 0; it < max_iter && std::isfinite(norm); ++it) {
    if (norm <= tol) break;
    ++out.iterations;
    const MatrixXd A = J.topLeftCorner(k - 1, k - 1);
    Eigen::FullPivLU<MatrixXd> lu(A);
    if (!lu.isInvertible()) break;
    VectorXd d = VectorXd::Zero(k);
    d.head(k - 1) = lu.solve(-R.head(k - 1));
    const double dmax = sup_norm(d);
    if (dmax > 2.0) d *= 2.0 / dmax;  // trust region on the logits
    bool accepted = false;
    for (double lam = 1.0; lam > 1e-10; lam *= 0.5) {
      VectorXd t2 = theta + lam * d;
      const double n2 = sup_norm(newton_system(pb, softmax(t2), nullptr));
      if (n2 < norm) {  // accepted: only now pay for the Jacobian
        theta = t2;
        R = newton_system(pb, softmax(theta), &J);
        norm = n2;
        accepted = true;
        break;
      }
    }
    if (!accepted) break;
  }
  out.residual = norm;
  out.ok = norm <= tol;
  return out;
}

// Roots of the binary residual in y = log(w_a / w_b), whose sign is the sign of R_a:
//   k3:    R_a = β (w_a − q_a) − w_a w_b (P_a − P_b)
//   k3_is: R_a = w_a w_b [β (y − log(q_a/q_b)) − (P_a − P_b)]   (the factor w_a w_b is dropped)
inline double binary_sign_function(const Reduced& pb, double y) {
  VectorXd wa(2);
  wa << sigmoid(y), sigmoid(-y);
  VectorXd P;
  pb.model.evaluate(pb.full(wa), P, nullptr);
  const double dP = P[pb.active[0]] - P[pb.active[1]];
  const double qa = pb.q[pb.active[0]], qb = pb.q[pb.active[1]];
  if (pb.penalty == Penalty::K3) return pb.beta * (wa[0] - qa) - wa[0] * wa[1] * dP;
  return pb.beta * (y - std::log(qa / qb)) - dP;
}

}  // namespace detail
}  // namespace stationary
}  // namespace grpokit
