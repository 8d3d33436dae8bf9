// The reward preference model P_G(o | π) on atom masses (stationary.hpp).
#include <algorithm>
#include <cmath>
#include <functional>
#include <limits>
#include <random>
#include <sstream>

#include "grpokit/error.hpp"
#include "grpokit/interrupt.hpp"
#include "grpokit/math/advantages.hpp"
#include "grpokit/stationary.hpp"

namespace grpokit {
namespace stationary {
namespace {

constexpr double kNegInf = -std::numeric_limits<double>::infinity();

// log C(n + k − 1, k − 1): the number of compositions of n into k parts, in log space.
double log_num_compositions(int64_t n, int64_t k) {
  return std::lgamma(static_cast<double>(n + k)) - std::lgamma(static_cast<double>(k)) -
         std::lgamma(static_cast<double>(n + 1));
}

// Statistics of the G − 1 "other" members of a group (counts c over atoms with rewards v), from
// which the advantage of any atom ℓ added as the first member follows in O(1) (Welford update).
// Everything is shifted by the reward of the first present atom, so a group whose rewards are all
// equal has a deviation of exactly 0 (numerical pitfall 1 of the notes: no E[r²] − m²).
struct OthersStats {
  double shift = 0.0;  // reward of the first present atom
  double mean = 0.0;   // mean of (v − shift) over the others
  double m2 = 0.0;     // Σ c_j (v_j − shift − mean)²
};

OthersStats others_stats(const int32_t* c, const double* v, int64_t L) {
  OthersStats s;
  int64_t n = 0;
  bool first = true;
  for (int64_t j = 0; j < L; ++j) {
    if (c[j] == 0) continue;
    if (first) s.shift = v[j], first = false;
    n += c[j];
    s.mean += c[j] * (v[j] - s.shift);
  }
  s.mean /= static_cast<double>(n);
  for (int64_t j = 0; j < L; ++j) {
    if (c[j] == 0) continue;
    const double d = v[j] - s.shift - s.mean;
    s.m2 += c[j] * d * d;
  }
  return s;
}

// A of a first member with reward v_l joining G − 1 others with statistics s.
double advantage_with(const OthersStats& s, double v_l, const GroupSpec& spec) {
  const double G = static_cast<double>(spec.group_size);
  const double d = v_l - s.shift - s.mean;  // exactly 0 when every reward of the group is v_l
  const double centred = d * (G - 1.0) / G;
  if (spec.normalisation == Normalisation::MeanOnly) return centred;
  const double m2 = s.m2 + d * d * (G - 1.0) / G;
  const double sd = math::std_from_m2(m2, G, spec.std_ddof == 1);
  return math::advantage_value(centred, 0.0, sd, spec.std_eps);  // 0/0 := 0
}

void check_square_probabilities(const Eigen::MatrixXd& Q, const char* name) {
  if (Q.rows() != Q.cols() || Q.rows() < 1)
    value_error(name, ": expected a square (K, K) matrix with K >= 1, got shape (", Q.rows(), ", ", Q.cols(),
                ")");
  for (Eigen::Index i = 0; i < Q.rows(); ++i)
    for (Eigen::Index j = 0; j < Q.cols(); ++j)
      if (!(Q(i, j) >= 0.0 && Q(i, j) <= 1.0))
        value_error(name, ": entry (", i, ", ", j, ") is ", Q(i, j), "; expected a probability in [0, 1]");
}

// Counts c (L,) of n draws from the atom masses w: Mult(n, w) by conditional binomials.
void sample_others(const Eigen::VectorXd& w, int64_t n, std::mt19937_64& rng, int32_t* c) {
  const int64_t L = w.size();
  int64_t left = n;
  double rest = w.sum();
  for (int64_t j = 0; j < L; ++j) {
    if (left == 0 || j == L - 1) {
      c[j] = static_cast<int32_t>(j == L - 1 ? left : 0);
      left -= c[j];
      continue;
    }
    const double prob = rest > 0.0 ? std::min(1.0, std::max(0.0, w[j] / rest)) : 0.0;
    std::binomial_distribution<int64_t> bin(left, prob);
    c[j] = static_cast<int32_t>(bin(rng));
    left -= c[j];
    rest -= w[j];
  }
}

}  // namespace

Penalty parse_penalty(const std::string& name) {
  if (name == "k3") return Penalty::K3;
  if (name == "k3_is") return Penalty::K3IS;
  value_error("penalty: expected one of 'k3', 'k3_is', got '", name, "'");
}

Normalisation parse_normalisation(const std::string& name) {
  if (name == "mean_std") return Normalisation::MeanStd;
  if (name == "mean_only") return Normalisation::MeanOnly;
  value_error("normalisation: expected one of 'mean_std', 'mean_only', got '", name, "'");
}

const char* penalty_name(Penalty p) { return p == Penalty::K3 ? "k3" : "k3_is"; }

PreferenceModel PreferenceModel::from_rewards(const Eigen::VectorXd& rewards, const GroupSpec& spec,
                                              int64_t max_terms) {
  const Eigen::Index K = rewards.size();
  if (K < 1) value_error("rewards: expected at least one output, got an empty array");
  for (Eigen::Index o = 0; o < K; ++o)
    if (!std::isfinite(rewards[o]))
      value_error("rewards: element ", o, " is ", rewards[o], "; rewards must be finite");
  if (!spec.infinite() && spec.group_size < 2)
    value_error("G: expected an integer >= 2 or infinity, got ", spec.group_size);
  if (spec.std_ddof != 0 && spec.std_ddof != 1)
    value_error("std_ddof: expected 0 (population std, the paper) or 1 (sample std), got ", spec.std_ddof);
  if (!(spec.std_eps >= 0.0) || !std::isfinite(spec.std_eps))
    value_error("std_eps: expected a finite value >= 0, got ", spec.std_eps);
  if (spec.normalisation == Normalisation::MeanOnly && (spec.std_ddof != 0 || spec.std_eps != 0.0))
    value_error("std_ddof, std_eps: only apply to normalisation='mean_std' (got std_ddof=", spec.std_ddof,
                ", std_eps=", spec.std_eps, " with 'mean_only')");
  if (max_terms < 1) value_error("max_terms: expected a positive integer, got ", max_terms);

  PreferenceModel m;
  m.spec_ = spec;
  // Atoms: the distinct reward values, increasing.
  std::vector<double> levels(rewards.data(), rewards.data() + K);
  std::sort(levels.begin(), levels.end());
  levels.erase(std::unique(levels.begin(), levels.end()), levels.end());
  const int64_t L = static_cast<int64_t>(levels.size());
  m.num_atoms_ = L;
  m.atom_value_ = Eigen::Map<Eigen::VectorXd>(levels.data(), L);
  m.atom_of_.resize(static_cast<size_t>(K));
  for (Eigen::Index o = 0; o < K; ++o)
    m.atom_of_[o] = std::lower_bound(levels.begin(), levels.end(), rewards[o]) - levels.begin();

  if (spec.normalisation == Normalisation::MeanOnly) {
    m.kind_ = Kind::Shift;
    m.num_terms_ = static_cast<double>(L);
    return m;
  }
  if (spec.infinite()) {
    m.kind_ = Kind::Infinite;
    m.num_terms_ = static_cast<double>(L);
    return m;
  }
  if (spec.group_size == 2 && spec.std_eps == 0.0) {
    // A pair of different rewards has A = ±1 (population std) or ±1/sqrt 2 (sample std).
    m.kind_ = Kind::PairSign;
    m.pair_scale_ = spec.std_ddof == 1 ? std::sqrt(0.5) : 1.0;
    m.num_terms_ = static_cast<double>(L);
    return m;
  }
  const int64_t n = spec.group_size - 1;
  m.num_terms_ = std::exp(log_num_compositions(n, L)) * static_cast<double>(L);
  if (m.num_terms_ > static_cast<double>(max_terms)) {
    m.kind_ = Kind::TooLarge;
    return m;
  }
  m.kind_ = Kind::Enumerated;
  // Enumerate the compositions c of n over L atoms, recursively (depth L).
  std::vector<int32_t> c(static_cast<size_t>(L), 0);
  const double* v = m.atom_value_.data();
  const double lg_n = std::lgamma(static_cast<double>(n + 1));
  Interrupt stop(1024);  // Ctrl-C (grpokit/interrupt.hpp)
  std::function<void(int64_t, int64_t)> visit = [&](int64_t j, int64_t left) {
    if (j < L - 1) {
      for (int64_t x = 0; x <= left; ++x) {
        c[j] = static_cast<int32_t>(x);
        visit(j + 1, left - x);
      }
      return;
    }
    stop.poll();
    c[j] = static_cast<int32_t>(left);
    double lc = lg_n;
    for (int64_t i = 0; i < L; ++i) lc -= std::lgamma(static_cast<double>(c[i] + 1));
    m.log_coef_.push_back(lc);
    m.counts_.insert(m.counts_.end(), c.begin(), c.end());
    const OthersStats s = others_stats(c.data(), v, L);
    for (int64_t l = 0; l < L; ++l) m.adv_.push_back(advantage_with(s, v[l], spec));
  };
  visit(0, n);
  return m;
}

PreferenceModel PreferenceModel::from_pairwise(const Eigen::MatrixXd& Q) {
  check_square_probabilities(Q, "pairwise");
  const Eigen::Index K = Q.rows();
  for (Eigen::Index i = 0; i < K; ++i)
    for (Eigen::Index j = i + 1; j < K; ++j)
      if (Q(i, j) + Q(j, i) > 1.0 + 1e-12)
        value_error("pairwise: Q(", i, ", ", j, ") + Q(", j, ", ", i, ") = ", Q(i, j) + Q(j, i),
                    " > 1; Q(o, o') must be P(r > r' | o, o') (ties take the remainder)");
  PreferenceModel m;
  m.kind_ = Kind::Linear;
  m.spec_.group_size = 2;
  m.num_atoms_ = K;
  m.atom_of_.resize(static_cast<size_t>(K));
  for (Eigen::Index o = 0; o < K; ++o) m.atom_of_[o] = o;
  m.matrix_ = Q - Q.transpose();
  m.num_terms_ = static_cast<double>(K * K);
  return m;
}

PreferenceModel PreferenceModel::from_nlhf(const Eigen::MatrixXd& M) {
  check_square_probabilities(M, "preference_matrix");
  const Eigen::Index K = M.rows();
  for (Eigen::Index i = 0; i < K; ++i)
    for (Eigen::Index j = i; j < K; ++j)
      if (std::abs(M(i, j) + M(j, i) - 1.0) > 1e-9)
        value_error("preference_matrix: M(", i, ", ", j, ") + M(", j, ", ", i, ") = ", M(i, j) + M(j, i),
                    "; NLHF needs P(o > o') + P(o' > o) = 1 (and 1/2 on the "
                    "diagonal)");
  PreferenceModel m = from_pairwise(Eigen::MatrixXd::Zero(K, K));
  m.matrix_ = M;
  m.nlhf_ = true;
  return m;
}

std::string PreferenceModel::describe() const {
  std::ostringstream os;
  if (kind_ == Kind::Linear) {
    os << (nlhf_ ? "NLHF preference matrix over " : "pairwise preferences (G = 2) over ") << num_outputs()
       << " outputs";
    return os.str();
  }
  os << num_outputs() << " outputs in " << num_atoms_ << " reward level" << (num_atoms_ == 1 ? "" : "s")
     << ", G = ";
  if (spec_.infinite())
    os << "inf";
  else
    os << spec_.group_size;
  if (spec_.normalisation == Normalisation::MeanOnly) {
    os << ", shift-only advantages";
  } else {
    os << ", " << (spec_.std_ddof == 1 ? "sample" : "population") << " std";
    if (spec_.std_eps != 0.0) os << " + " << spec_.std_eps;
  }
  if (kind_ == Kind::Enumerated && sampled_groups_ > 0)
    os << ", Monte Carlo P_G (" << sampled_groups_ << " sampled groups)";
  else if (kind_ == Kind::Enumerated)
    os << ", exact P_G (" << num_terms_ << " terms)";
  if (kind_ == Kind::TooLarge) os << ", exact P_G too large (" << num_terms_ << " terms)";
  return os.str();
}

Eigen::VectorXd PreferenceModel::atom_masses(const Eigen::VectorXd& pi) const {
  if (pi.size() != num_outputs())
    value_error("pi: expected ", num_outputs(), " probabilities (one per output), got ", pi.size());
  Eigen::VectorXd w = Eigen::VectorXd::Zero(num_atoms_);
  for (Eigen::Index o = 0; o < pi.size(); ++o) w[atom_of_[o]] += pi[o];
  return w;
}

void PreferenceModel::evaluate(const Eigen::VectorXd& w, Eigen::VectorXd& P, Eigen::MatrixXd* dPdw) const {
  const int64_t L = num_atoms_;
  P.setZero(L);
  if (dPdw) dPdw->setZero(L, L);
  const double* v = atom_value_.data();
  switch (kind_) {
    case Kind::Linear:
      P.noalias() = matrix_ * w;
      if (dPdw) *dPdw = matrix_;
      return;
    case Kind::PairSign: {
      // P_ℓ = s (mass strictly below − mass strictly above); atoms are sorted by reward.
      const double total = w.sum();
      double below = 0.0;
      for (int64_t l = 0; l < L; ++l) {
        P[l] = pair_scale_ * (below - (total - below - w[l]));
        below += w[l];
      }
      if (dPdw)
        for (int64_t l = 0; l < L; ++l)
          for (int64_t j = 0; j < L; ++j) (*dPdw)(l, j) = pair_scale_ * (j < l ? 1.0 : j > l ? -1.0 : 0.0);
      return;
    }
    case Kind::Shift: {
      const double cg = spec_.infinite() ? 1.0 : 1.0 - 1.0 / static_cast<double>(spec_.group_size);
      const double mu = w.dot(atom_value_);
      for (int64_t l = 0; l < L; ++l) P[l] = cg * (v[l] - mu);
      if (dPdw)
        for (int64_t l = 0; l < L; ++l)
          for (int64_t j = 0; j < L; ++j) (*dPdw)(l, j) = -cg * v[j];
      return;
    }
    case Kind::Infinite: {
      const double mu = w.dot(atom_value_);
      double var = 0.0;
      for (int64_t l = 0; l < L; ++l) var += w[l] * (v[l] - mu) * (v[l] - mu);
      if (!(var > 0.0)) return;  // one reward level carries all the mass: 0/0 := 0
      const double sd = std::sqrt(var), denom = sd + spec_.std_eps;
      for (int64_t l = 0; l < L; ++l) P[l] = (v[l] - mu) / denom;
      if (dPdw)  // ∂μ/∂w_j = v_j, ∂σ/∂w_j = (v_j − μ)²/(2σ) along the simplex (row constants dropped)
        for (int64_t l = 0; l < L; ++l)
          for (int64_t j = 0; j < L; ++j)
            (*dPdw)(l, j) =
                -(v[j] - mu) / denom - (v[l] - mu) / (denom * denom) * (v[j] - mu) * (v[j] - mu) / (2.0 * sd);
      return;
    }
    case Kind::TooLarge:
      not_implemented("exact P_G would enumerate ", num_terms_, " terms (", describe(),
                      "); use Monte Carlo (method='monte_carlo') or raise max_terms");
    case Kind::Enumerated:
      break;
  }
  // Σ_c multinomial(G−1; c) Π w^c A_ℓ(c + e_ℓ); ∂/∂w_j brings down c_j / w_j.
  std::vector<double> logw(static_cast<size_t>(L));
  bool any_zero = false;
  for (int64_t j = 0; j < L; ++j) {
    logw[j] = w[j] > 0.0 ? std::log(w[j]) : kNegInf;
    any_zero = any_zero || !(w[j] > 0.0);
  }
  const int64_t ncomp = static_cast<int64_t>(log_coef_.size());
  Eigen::MatrixXd S = Eigen::MatrixXd::Zero(L, L);  // Σ wt A_ℓ c_j
  Interrupt stop(1024);  // Ctrl-C (grpokit/interrupt.hpp)
  for (int64_t k = 0; k < ncomp; ++k) {
    stop.poll();
    const int32_t* c = counts_.data() + k * L;
    const double* a = adv_.data() + k * L;
    double s = log_coef_[k];
    for (int64_t j = 0; j < L; ++j)
      if (c[j]) s += c[j] * logw[j];
    if (s == kNegInf) continue;
    const double wt = std::exp(s);
    for (int64_t l = 0; l < L; ++l) P[l] += wt * a[l];
    if (dPdw)
      for (int64_t j = 0; j < L; ++j)
        if (c[j])
          for (int64_t l = 0; l < L; ++l) S(l, j) += wt * a[l] * c[j];
  }
  if (!dPdw) return;
  for (int64_t j = 0; j < L; ++j)
    if (w[j] > 0.0) dPdw->col(j) = S.col(j) / w[j];
  if (!any_zero) return;
  // Columns of atoms with zero mass: only compositions with c_j = 1 contribute.
  for (int64_t k = 0; k < ncomp; ++k) {
    const int32_t* c = counts_.data() + k * L;
    const double* a = adv_.data() + k * L;
    for (int64_t j = 0; j < L; ++j) {
      if (w[j] > 0.0 || c[j] != 1) continue;
      double s = log_coef_[k];
      for (int64_t i = 0; i < L; ++i)
        if (i != j && c[i]) s += c[i] * logw[i];
      if (s == kNegInf) continue;
      const double wt = std::exp(s);
      for (int64_t l = 0; l < L; ++l) (*dPdw)(l, j) += wt * a[l];
    }
  }
}

PreferenceModel PreferenceModel::sampled(const Eigen::VectorXd& w0, int64_t samples, uint64_t seed) const {
  if (kind_ == Kind::Linear || spec_.infinite())
    value_error("sampled: Monte Carlo applies to reward models with a finite G");
  if (samples < 2) value_error("samples: expected at least 2, got ", samples);
  const int64_t L = num_atoms_;
  PreferenceModel m = *this;
  m.kind_ = Kind::Enumerated;
  m.sampled_groups_ = samples;
  m.num_terms_ = static_cast<double>(samples * L);
  m.counts_.assign(static_cast<size_t>(samples * L), 0);
  m.log_coef_.assign(static_cast<size_t>(samples), 0.0);
  m.adv_.assign(static_cast<size_t>(samples * L), 0.0);
  std::mt19937_64 rng(seed);
  const double logN = std::log(static_cast<double>(samples));
  Interrupt stop(1024);  // Ctrl-C (grpokit/interrupt.hpp)
  for (int64_t s = 0; s < samples; ++s) {
    stop.poll();
    int32_t* c = m.counts_.data() + s * L;
    sample_others(w0, spec_.group_size - 1, rng, c);
    double lc = -logN;  // weight 1/N at w = w0, times the likelihood ratio elsewhere
    for (int64_t j = 0; j < L; ++j)
      if (c[j]) lc -= c[j] * std::log(w0[j]);
    m.log_coef_[s] = lc;
    const OthersStats st = others_stats(c, atom_value_.data(), L);
    for (int64_t l = 0; l < L; ++l) m.adv_[s * L + l] = advantage_with(st, atom_value_[l], spec_);
  }
  return m;
}

void PreferenceModel::monte_carlo(const Eigen::VectorXd& w, int64_t samples, uint64_t seed,
                                  Eigen::VectorXd& P, Eigen::VectorXd& std_error) const {
  if (kind_ == Kind::Linear)
    value_error("method: Monte Carlo applies to reward models; a pairwise/NLHF model is exact");
  if (spec_.infinite()) value_error("method: Monte Carlo needs a finite G; G = inf is exact");
  if (samples < 2) value_error("samples: expected at least 2, got ", samples);
  const int64_t L = num_atoms_, G = spec_.group_size;
  const double* v = atom_value_.data();
  // P_ℓ = E_{c ~ Mult(G − 1, w)} [A_ℓ(c + e_ℓ)]: every atom is scored on the same draws, and an
  // atom of zero mass is estimated too (no division by w_ℓ).
  std::mt19937_64 rng(seed);
  std::vector<int32_t> c(static_cast<size_t>(L));
  Eigen::VectorXd sum = Eigen::VectorXd::Zero(L), sum2 = Eigen::VectorXd::Zero(L);
  Interrupt stop(1024);  // Ctrl-C (grpokit/interrupt.hpp)
  for (int64_t s = 0; s < samples; ++s) {
    stop.poll();
    sample_others(w, G - 1, rng, c.data());
    const OthersStats st = others_stats(c.data(), v, L);
    for (int64_t l = 0; l < L; ++l) {
      const double a = advantage_with(st, v[l], spec_);
      sum[l] += a;
      sum2[l] += a * a;
    }
  }
  const double N = static_cast<double>(samples);
  P = sum / N;
  std_error.resize(L);
  for (int64_t l = 0; l < L; ++l) {
    const double var = std::max(0.0, (sum2[l] - N * P[l] * P[l]) / (N - 1.0));
    std_error[l] = std::sqrt(var / N);
  }
}

}  // namespace stationary
}  // namespace grpokit
