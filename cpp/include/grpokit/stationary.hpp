// Stationary policies of GRPO ("What is the Alignment Objective of GRPO?", Vojnovic & Yun, 2025).
//
// One context, a finite set of K outputs, a reference policy π_ref (K,) and either deterministic
// rewards r (K,) or, for G = 2, a pairwise-preference matrix Q(o, o') = P(r > r' | o, o'). A
// stationary policy solves the paper's fixed-point equation (11): for every output with π(o) > 0,
//
//     π(o) · [1 − (P_G(o|π) − E_π P_G) / β] = π_ref(o)                         (penalty "k3")
//     π(o) = π_ref(o) · exp(P_G(o|π) / β) / Z                                  (penalty "k3_is")
//
// where P_G(o|π) = E[A_1 | o_1 = o, o_2..o_G iid ~ π] is the reward preference model (the expected
// advantage of o in a group drawn from π). "k3" is GRPO's penalty (stationary-equivalent to the
// reverse KL(π_ref‖π)); "k3_is" is the importance-weighted penalty (direct KL(π‖π_ref)).
//
// Outputs with equal reward are merged into one "atom" (a reward level): P_G depends on an output
// only through its reward, and every stationary policy is proportional to π_ref inside a level.
// The solvers therefore work on atom masses; the exact P_G enumerates compositions of the G − 1
// other group members over the atoms (C(G + L − 2, L − 1) terms for L atoms).
//
// Conventions: population std (divisor G) and 0/0 := 0 as the paper; `std_ddof = 1` and `std_eps`
// reproduce trainers (TRL: ddof 1, eps 1e-4). Outputs with π_ref(o) = 0 get π(o) = 0 (support).
#pragma once

#include <Eigen/Dense>

#include <array>
#include <cstdint>
#include <string>
#include <vector>

namespace grpokit {
namespace stationary {

constexpr int64_t kInfiniteGroup = -1;         // G → ∞ (the law-of-large-numbers limit)
constexpr int64_t kDefaultMaxTerms = 20000000;  // exact enumeration limit (compositions × atoms)
constexpr int64_t kMaxStabilityLevels = 256;    // stability needs a dense eigenvalue problem

enum class Penalty : uint8_t { K3, K3IS };                // "k3" | "k3_is"
enum class Normalisation : uint8_t { MeanStd, MeanOnly };  // "mean_std" | "mean_only" (shift-only)

Penalty parse_penalty(const std::string& name);
Normalisation parse_normalisation(const std::string& name);
const char* penalty_name(Penalty p);

struct GroupSpec {
  int64_t group_size = 2;  // G >= 2, or kInfiniteGroup
  Normalisation normalisation = Normalisation::MeanStd;
  int std_ddof = 0;        // 0: population std (the paper); 1: sample std (torch.std, TRL, verl)
  double std_eps = 0.0;    // added to the std before dividing (TRL 1e-4; the paper 0)
  bool infinite() const { return group_size == kInfiniteGroup; }
};

// P_G on atom masses, with an optional Monte Carlo estimate when exact enumeration is too large.
class PreferenceModel {
 public:
  // Deterministic rewards (K,), finite. Throws grpokit::Error (ValueError) on bad arguments.
  static PreferenceModel from_rewards(const Eigen::VectorXd& rewards, const GroupSpec& spec,
                                      int64_t max_terms = kDefaultMaxTerms);
  // G = 2, possibly stochastic rewards: Q (K, K), Q(o,o') = P(r > r'), Q + Qᵀ <= 1 off the
  // diagonal (the rest is the tie probability). P_2(o|π) = Σ_o' π(o') (Q(o,o') − Q(o',o)).
  static PreferenceModel from_pairwise(const Eigen::MatrixXd& Q);
  // NLHF's preference term: P(o|π) = Σ_o' π(o') M(o,o'), M(o,o') = P(o ≻ o'), M + Mᵀ = 1.
  static PreferenceModel from_nlhf(const Eigen::MatrixXd& M);

  int64_t num_outputs() const { return static_cast<int64_t>(atom_of_.size()); }
  int64_t num_atoms() const { return num_atoms_; }
  const std::vector<int64_t>& atom_of() const { return atom_of_; }
  const Eigen::VectorXd& atom_rewards() const { return atom_value_; }  // empty for matrix models
  const GroupSpec& spec() const { return spec_; }
  bool has_rewards() const { return kind_ != Kind::Linear; }
  bool is_pairwise() const { return kind_ == Kind::Linear && !nlhf_; }
  bool is_nlhf() const { return nlhf_; }
  // Whether P_G is exact (always, except an enumeration over the limit) and its number of terms.
  bool exact() const { return kind_ != Kind::TooLarge; }
  double num_terms() const { return num_terms_; }
  std::string describe() const;

  // Atom masses of a policy over outputs.
  Eigen::VectorXd atom_masses(const Eigen::VectorXd& pi) const;
  // P on atom masses w (L,): P (L,) and, if dPdw is given, ∂P_ℓ/∂w_j (L, L), the derivative along
  // the simplex (a constant added to a row is irrelevant). Throws NotImplemented for TooLarge.
  void evaluate(const Eigen::VectorXd& w, Eigen::VectorXd& P, Eigen::MatrixXd* dPdw) const;
  // Monte Carlo over full groups: w_ℓ P_ℓ = E_{n~Mult(G,w)}[(n_ℓ/G) A_ℓ(n)], with standard errors.
  // Deterministic for a given seed. Finite-G reward models only.
  void monte_carlo(const Eigen::VectorXd& w, int64_t samples, uint64_t seed, Eigen::VectorXd& P,
                   Eigen::VectorXd& std_error) const;
  // A smooth sample-average model for the solvers: `samples` groups drawn once from w0, reweighted
  // to any w by the likelihood ratio Π (w_j / w0_j)^{c_j} (same table form as the exact model).
  PreferenceModel sampled(const Eigen::VectorXd& w0, int64_t samples, uint64_t seed) const;

 private:
  enum class Kind : uint8_t { Enumerated, PairSign, Infinite, Shift, Linear, TooLarge };
  double group_advantage(const int32_t* counts, int64_t atom) const;  // A of `atom` in counts

  Kind kind_ = Kind::Linear;
  GroupSpec spec_{};
  bool nlhf_ = false;
  int64_t num_atoms_ = 0;
  std::vector<int64_t> atom_of_;
  Eigen::VectorXd atom_value_;  // reward of each atom (sorted increasing)
  Eigen::MatrixXd matrix_;      // Linear: P = M w
  double pair_scale_ = 1.0;     // PairSign: |A| of a two-level pair (1, or 1/sqrt 2 with ddof 1)
  double num_terms_ = 0.0;
  // Enumerated: compositions c of G − 1 over the atoms, log multinomial coefficient, and A_ℓ(c + e_ℓ).
  std::vector<int32_t> counts_;
  std::vector<double> log_coef_;
  std::vector<double> adv_;
  int64_t sampled_groups_ = 0;  // > 0: a sampled (Monte Carlo) table
};

// ---- results ------------------------------------------------------------------------------------

struct Equilibrium {
  Eigen::VectorXd pi;   // (K,)
  bool stable = false;  // attracting for the expected on-policy GRPO flow
  bool boundary = false;  // some output with π_ref > 0 has π = 0 (the KKT "π(o) = 0" branch)
};

struct StationaryResult {
  Eigen::VectorXd pi;             // (K,)
  bool converged = false;         // false: `pi` is the last iterate, not a stationary policy
  double residual = 0.0;          // sup_o |R_o|, the stationarity residual on logits (see docs)
  double fixed_point_residual = 0.0;  // sup_o of the residual of eq. (11) / its log-pooling form
  int64_t iterations = 0;         // Newton iterations, flow steps or bisection steps
  int64_t stages = 0;             // β-continuation stages (Newton)
  std::string method;             // which solver produced `pi`
  std::string message;            // why it did not converge, or a note on the solution
  bool stable = false;
  bool stability_known = true;    // false: not assessed (more than kMaxStabilityLevels levels)
  bool boundary = false;
  std::vector<Equilibrium> equilibria;  // all stationary policies found (binary: all of them)
  double preference_std_error = 0.0;    // Monte Carlo P_G: sup of its standard error at `pi`
};

struct SolveOptions {
  Penalty penalty = Penalty::K3;
  double tol = 1e-13;          // target sup-norm of R
  int max_iter = 100;          // Newton iterations per continuation stage
  double beta_start = 1e3;     // continuation starts here (π ≈ π_ref) ...
  double beta_factor = 1.5;    // ... and divides β by (an adapted) factor per stage
  // When exact P_G is too large: Monte Carlo groups per round, the most rounds (each resamples at
  // the previous solution; they stop once π moves less than mc_tol between rounds), seed.
  int64_t mc_samples = 20000;
  int mc_rounds = 8;
  double mc_tol = 2e-3;
  uint64_t seed = 0;
};

struct FlowOptions {
  Penalty penalty = Penalty::K3;
  int inner_steps = 1;         // μ: gradient steps per frozen π_old (1: the on-policy ODE)
  double step = 0.0;           // initial step (μ = 1) or fixed learning rate (μ > 1); 0: automatic
  double rtol = 0.2;           // relative-error step control (μ = 1)
  double tol = 1e-12;          // stop when sup|R| < tol
  int64_t max_steps = 200000;
};

// ---- solvers -----------------------------------------------------------------------------------

// Validates β > 0 and π_ref (K,) (finite, >= 0, sums to 1 within 1e-9). Throws ValueError.
void check_problem(const PreferenceModel& model, const Eigen::VectorXd& pi_ref, double beta);

// Newton on the atom logits with the analytic Jacobian and β-continuation.
StationaryResult solve_newton(const PreferenceModel& model, const Eigen::VectorXd& pi_ref, double beta,
                              const SolveOptions& opt);
// The expected on-policy GRPO flow on per-output logits from log π_ref (independent of Newton).
StationaryResult solve_flow(const PreferenceModel& model, const Eigen::VectorXd& pi_ref, double beta,
                            const FlowOptions& opt);
// Closed forms / fast paths where one applies (see docs); throws NotImplemented otherwise.
StationaryResult solve_closed_form(const PreferenceModel& model, const Eigen::VectorXd& pi_ref, double beta,
                                   Penalty penalty);
bool has_closed_form(const PreferenceModel& model, const Eigen::VectorXd& pi_ref, Penalty penalty);
// Newton on a Monte Carlo P_G (exact enumeration too large): mc_rounds rounds of mc_samples groups.
StationaryResult solve_monte_carlo(const PreferenceModel& model, const Eigen::VectorXd& pi_ref, double beta,
                                   const SolveOptions& opt);
// method: "auto" (closed form if any, else Newton; Monte Carlo Newton when P_G is too large),
// "closed_form", "newton".
StationaryResult solve(const PreferenceModel& model, const Eigen::VectorXd& pi_ref, double beta,
                       const std::string& method, const SolveOptions& opt);
// All stationary policies, each with its stability: of a problem with two supported atoms (scan +
// bisection of R, plus the boundary points that attract the flow), and — direct KL (k3_is) at G = ∞
// with the paper's population std — of any number of reward levels (every stationary policy is a
// tilt π_ref·e^{s r}: the roots of one scalar equation, plus the collapse onto the best level).
// Throws for other problems with more than two atoms.
std::vector<Equilibrium> binary_equilibria(const PreferenceModel& model, const Eigen::VectorXd& pi_ref,
                                           double beta, Penalty penalty);

// Residuals of a given policy: R on logits (per output) and the fixed-point form (per output).
Eigen::VectorXd stationarity_residual(const PreferenceModel& model, const Eigen::VectorXd& pi,
                                      const Eigen::VectorXd& pi_ref, double beta, Penalty penalty);
Eigen::VectorXd fixed_point_residual(const PreferenceModel& model, const Eigen::VectorXd& pi,
                                     const Eigen::VectorXd& pi_ref, double beta, Penalty penalty);

// ---- closed forms (binary: x = π(a), returned as {x, 1 − x}, each accurate near 0) -----------

// Eq. (14): G = 2, γ = P(a≻b) − P(b≻a) ∈ (0, 1]. γ = 0 gives p.
std::array<double, 2> binary_g2_k3(double beta, double gamma, double p);
// Eq. (15): G → ∞, r(a) > r(b).
std::array<double, 2> binary_ginf_k3(double beta, double p);
// Finite G, deterministic r(a) > r(b): the unique root of β(x − p) = φ_G(x) on [p, 1] (bisection).
std::array<double, 2> binary_finite_k3(double beta, int64_t G, double p);
// φ_G(x) = E_{n~Bin(G,x)} sqrt((n/G)(1 − n/G)) = x · P_G(a|x) (binary, population std).
double binary_phi(double x, int64_t G);
// Direct KL, G = 2: the odds of a are multiplied by exp(γ/β) (logistic form).
std::array<double, 2> binary_g2_k3is(double beta, double gamma, double p);
// Direct KL, G → ∞ (App. B.2): the stable interior root x1 and unstable x2 when they exist, and
// the boundary x = 1 (stable). Returned as equilibria over (a, b).
std::vector<Equilibrium> binary_ginf_k3is(double beta, double p);
// Binary dispatch (the paper's figures): k3 with G = 2 (γ), any finite G (γ = 1) or G = ∞ (γ > 0);
// k3_is with G = 2 (γ) or G = ∞ (γ > 0; the equilibrium the flow from π_ref reaches).
std::array<double, 2> binary_closed_form(double beta, double p, int64_t G, Penalty penalty,
                                         double gamma = 1.0);
// G = 2, deterministic rewards, any K: the sequential closed form over reward levels.
Eigen::VectorXd categorical_g2_k3(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref, double beta);
// G → ∞, any K: nested bisection of the semi-closed form of eq. (13).
Eigen::VectorXd categorical_ginf_k3(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref,
                                    double beta);
// Shift-only advantages with the k3 penalty: π = π_ref / (1 − (1 − 1/G)(r − E_π r)/β).
Eigen::VectorXd shift_k3(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref, double beta,
                         int64_t G);
// RLHF logarithmic pooling: π ∝ π_ref exp(r/β).
Eigen::VectorXd log_pooling(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref, double beta);

}  // namespace stationary
}  // namespace grpokit
