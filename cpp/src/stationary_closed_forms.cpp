// Closed forms and fast paths for stationary policies (stationary.hpp; docs/stationary.md, The model).
#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

#include "grpokit/error.hpp"
#include "grpokit/stationary.hpp"

namespace grpokit {
namespace stationary {
namespace {

void check_beta(double beta) {
  if (!(beta > 0.0) || !std::isfinite(beta)) value_error("beta: expected a finite value > 0, got ", beta);
}

void check_p(double p) {
  if (!(p >= 0.0 && p <= 1.0)) value_error("p: expected pi_ref(a) in [0, 1], got ", p);
}

// The non-negative root of m² + b m − c = 0 (c >= 0), without cancellation.
double positive_root(double b, double c) {
  const double disc = std::sqrt(b * b + 4.0 * c);
  return b >= 0.0 ? 2.0 * c / (b + disc) : 0.5 * (disc - b);
}

double sigmoid(double y) { return y >= 0.0 ? 1.0 / (1.0 + std::exp(-y)) : std::exp(y) / (1.0 + std::exp(y)); }

// Bisection of a sign change of f on [lo, hi] (f(lo) < 0 < f(hi) or the reverse) to the last bit.
template <class F>
double bisect(F&& f, double lo, double hi) {
  const bool lo_negative = f(lo) < 0.0;
  for (int it = 0; it < 2000; ++it) {
    const double mid = 0.5 * (lo + hi);
    if (mid <= lo || mid >= hi) break;
    if ((f(mid) < 0.0) == lo_negative)
      lo = mid;
    else
      hi = mid;
  }
  return 0.5 * (lo + hi);
}

// The same root by the Illinois variant of regula falsi: superlinear on smooth monotone f (a handful
// of evaluations instead of ~60 halvings), always inside the bracket; it stops when the bracket is
// one ulp wide or an evaluation is exactly 0.
template <class F>
double illinois(F&& f, double lo, double hi) {
  double flo = f(lo), fhi = f(hi);
  int side = 0;
  for (int it = 0; it < 200; ++it) {
    double x = (lo * fhi - hi * flo) / (fhi - flo);
    if (!(x > lo && x < hi)) x = 0.5 * (lo + hi);
    if (x <= lo || x >= hi) break;
    const double fx = f(x);
    if (fx == 0.0) return x;
    if ((fx < 0.0) == (flo < 0.0)) {
      lo = x, flo = fx;
      if (side == -1) fhi *= 0.5;
      side = -1;
    } else {
      hi = x, fhi = fx;
      if (side == 1) flo *= 0.5;
      side = 1;
    }
    if (hi - lo <= 4e-16 * std::max(std::fabs(lo), std::fabs(hi))) break;
  }
  return 0.5 * (lo + hi);
}

// Reward levels of the supported outputs: value, reference mass, distance to the top level.
struct Levels {
  std::vector<double> value, q, gap;  // gap = v_max − v (>= 0, exact: no (t + v_max) − v)
  std::vector<int64_t> level_of;       // per output (−1: unsupported)
};

Levels supported_levels(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref) {
  if (rewards.size() != pi_ref.size())
    value_error("pi_ref: expected ", rewards.size(), " probabilities (one per reward), got ", pi_ref.size());
  Levels lv;
  for (Eigen::Index o = 0; o < rewards.size(); ++o)
    if (pi_ref[o] > 0.0) lv.value.push_back(rewards[o]);
  std::sort(lv.value.begin(), lv.value.end());
  lv.value.erase(std::unique(lv.value.begin(), lv.value.end()), lv.value.end());
  lv.q.assign(lv.value.size(), 0.0);
  lv.level_of.assign(static_cast<size_t>(rewards.size()), -1);
  for (Eigen::Index o = 0; o < rewards.size(); ++o) {
    if (!(pi_ref[o] > 0.0)) continue;
    const auto l = std::lower_bound(lv.value.begin(), lv.value.end(), rewards[o]) - lv.value.begin();
    lv.level_of[o] = l;
    lv.q[l] += pi_ref[o];
  }
  if (lv.value.empty()) value_error("pi_ref: expected at least one positive probability");
  const double vmax = lv.value.back();
  for (double v : lv.value) lv.gap.push_back(vmax - v);
  return lv;
}

// Spread level masses m (summing to 1) over the outputs, proportionally to π_ref.
Eigen::VectorXd expand(const Levels& lv, const std::vector<double>& m, const Eigen::VectorXd& pi_ref) {
  Eigen::VectorXd pi = Eigen::VectorXd::Zero(pi_ref.size());
  for (Eigen::Index o = 0; o < pi_ref.size(); ++o)
    if (lv.level_of[o] >= 0) pi[o] = m[lv.level_of[o]] * (pi_ref[o] / lv.q[lv.level_of[o]]);
  return pi;
}

// π_ℓ = q_ℓ c / (t + gap_ℓ) with t > 0 such that Σ π_ℓ = 1 (the sum decreases in t; the top
// level alone gives t >= q_top c, and Σ <= c/t gives t <= c).
double solve_t(const Levels& lv, double c) {
  // Newton from the left end: S is convex and decreasing, so the iterates rise monotonically to
  // the root without overshooting; bisection in log t is the fallback.
  double t = lv.q.back() * c;
  for (int it = 0; it < 100; ++it) {
    double S = 0.0, dS = 0.0;
    for (size_t l = 0; l < lv.q.size(); ++l) {
      const double inv = 1.0 / (t + lv.gap[l]);
      S += lv.q[l] * c * inv;
      dS += lv.q[l] * c * inv * inv;
    }
    if (!(S > 1.0)) return t;
    const double step = (S - 1.0) / dS;
    if (!(step > 1e-16 * t)) return t + step;
    t += step;
  }
  auto excess = [&](double u) {
    const double t = std::exp(u);
    double s = 0.0;
    for (size_t l = 0; l < lv.q.size(); ++l) s += lv.q[l] * c / (t + lv.gap[l]);
    return 1.0 - s;  // increasing in u
  };
  return std::exp(bisect(excess, std::log(lv.q.back() * c), std::log(c)));
}

std::vector<double> pooled_masses(const Levels& lv, double c, double t) {
  std::vector<double> m(lv.q.size());
  double s = 0.0;
  for (size_t l = 0; l < m.size(); ++l) s += (m[l] = lv.q[l] * c / (t + lv.gap[l]));
  for (double& x : m) x /= s;
  return m;
}

}  // namespace

std::array<double, 2> binary_g2_k3(double beta, double gamma, double p) {
  check_beta(beta);
  check_p(p);
  if (!(gamma >= -1.0 && gamma <= 1.0))
    value_error("gamma: expected P(a>b) − P(b>a) in [-1, 1], got ", gamma);
  if (gamma < 0.0) {  // b is the preferred answer
    const auto yb = binary_g2_k3(beta, -gamma, 1.0 - p);
    return {yb[1], yb[0]};
  }
  if (gamma == 0.0 || p == 0.0 || p == 1.0) return {p, 1.0 - p};  // tie, or a single supported answer
  const double k = beta / gamma;
  // x² − (1 − k) x − k p = 0, and for y = 1 − x: y² − (1 + k) y + k (1 − p) = 0 (smaller root).
  const double x = positive_root(k - 1.0, k * p);
  const double s = (1.0 + k) * (1.0 + k) - 4.0 * k * (1.0 - p);
  const double y = 2.0 * k * (1.0 - p) / ((1.0 + k) + std::sqrt(std::max(s, 0.0)));
  return {x, y};
}

std::array<double, 2> binary_ginf_k3(double beta, double p) {
  check_beta(beta);
  check_p(p);
  if (p == 0.0 || p == 1.0) return {p, 1.0 - p};
  const double b2 = beta * beta;
  const double s = std::sqrt(1.0 + 4.0 * b2 * p * (1.0 - p));
  const double x = (2.0 * b2 * p + 1.0 + s) / (2.0 * (1.0 + b2));
  const double y = 2.0 * b2 * (1.0 - p) * (1.0 - p) / (1.0 + 2.0 * b2 * (1.0 - p) + s);
  return {x, y};
}

double binary_phi(double x, int64_t G) {
  if (!(x >= 0.0 && x <= 1.0)) value_error("x: expected a probability in [0, 1], got ", x);
  if (G == kInfiniteGroup) return std::sqrt(x * (1.0 - x));
  if (G < 2) value_error("G: expected an integer >= 2 or infinity, got ", G);
  if (x == 0.0 || x == 1.0) return 0.0;
  const double lx = std::log(x), l1x = std::log1p(-x), Gd = static_cast<double>(G);
  const double lg = std::lgamma(Gd + 1.0);
  double s = 0.0;
  for (int64_t n = 1; n < G; ++n) {
    const double nd = static_cast<double>(n);
    const double lw = lg - std::lgamma(nd + 1.0) - std::lgamma(Gd - nd + 1.0) + nd * lx + (Gd - nd) * l1x;
    s += std::exp(lw) * std::sqrt((nd / Gd) * (1.0 - nd / Gd));
  }
  return s;
}

std::array<double, 2> binary_finite_k3(double beta, int64_t G, double p) {
  check_beta(beta);
  check_p(p);
  if (G == kInfiniteGroup) return binary_ginf_k3(beta, p);
  if (G < 2) value_error("G: expected an integer >= 2 or infinity, got ", G);
  if (G == 2) return binary_g2_k3(beta, 1.0, p);
  if (p == 0.0 || p == 1.0) return {p, 1.0 - p};
  // β (x − p) = φ_G(x): negative at x = p, positive at x = 1, φ_G concave ⇒ one root.
  const double x = bisect([&](double z) { return beta * (z - p) - binary_phi(z, G); }, p, 1.0);
  return {x, 1.0 - x};
}

std::array<double, 2> binary_g2_k3is(double beta, double gamma, double p) {
  check_beta(beta);
  check_p(p);
  if (!(gamma >= -1.0 && gamma <= 1.0))
    value_error("gamma: expected a preference margin in [-1, 1], got ", gamma);
  if (p == 0.0 || p == 1.0) return {p, 1.0 - p};
  const double y = std::log(p) - std::log1p(-p) + gamma / beta;  // odds × exp(γ/β)
  return {sigmoid(y), sigmoid(-y)};
}

std::vector<Equilibrium> binary_ginf_k3is(double beta, double p) {
  check_beta(beta);
  check_p(p);
  auto point = [](double x, double y, bool stable, bool boundary) {
    Equilibrium e;
    e.pi = Eigen::Vector2d(x, y);
    e.stable = stable;
    e.boundary = boundary;
    return e;
  };
  if (p == 0.0 || p == 1.0) return {point(p, 1.0 - p, true, false)};
  // h(y) with y = logit x: 1/(β sqrt(x(1−x))) − y + logit p. h falls on (−∞, y*], rises after,
  // y* = logit x* = 2 asinh β; interior roots exist iff h(y*) < 0.
  const double lp = std::log(p) - std::log1p(-p);
  auto h = [&](double y) { return 1.0 / (beta * std::sqrt(sigmoid(y) * sigmoid(-y))) - y + lp; };
  const double ystar = 2.0 * std::asinh(beta);
  std::vector<Equilibrium> out;
  if (h(ystar) < 0.0) {
    const double y1 = bisect(h, lp, ystar);     // h(logit p) > 0: the flow from p stops at y1
    const double y2 = bisect(h, ystar, 1400.0);  // h → +∞ as y → ∞
    out.push_back(point(sigmoid(y1), sigmoid(-y1), true, false));
    out.push_back(point(sigmoid(y2), sigmoid(-y2), false, false));
  }
  out.push_back(point(1.0, 0.0, true, true));  // collapse onto the better answer
  return out;
}

std::array<double, 2> binary_closed_form(double beta, double p, int64_t G, Penalty penalty, double gamma) {
  if (G != kInfiniteGroup && G < 2) value_error("G: expected an integer >= 2 or infinity, got ", G);
  if (G != 2 && !(gamma > 0.0))
    value_error(
        "gamma: for G != 2 only the order of the two rewards matters; expected gamma > 0 "
        "(answer a is better), got ",
        gamma);
  if (G != 2 && G != kInfiniteGroup && gamma != 1.0)
    value_error("gamma: finite G > 2 needs deterministic rewards (gamma = 1), got ", gamma);
  if (penalty == Penalty::K3) return G == 2 ? binary_g2_k3(beta, gamma, p) : binary_finite_k3(beta, G, p);
  if (G == 2) return binary_g2_k3is(beta, gamma, p);
  if (G == kInfiniteGroup) {
    const Equilibrium e = binary_ginf_k3is(beta, p).front();
    return {e.pi[0], e.pi[1]};
  }
  not_implemented(
      "binary_closed_form: the direct-KL penalty (k3_is) has no closed form at finite G > 2; "
      "use stationary.solve");
}

Eigen::VectorXd categorical_g2_k3(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref,
                                  double beta) {
  check_beta(beta);
  const Levels lv = supported_levels(rewards, pi_ref);
  // From the highest level down: m² + (β − 1 + 2U) m − β q = 0, U = mass of the levels above.
  std::vector<double> m(lv.q.size());
  double U = 0.0;
  for (size_t i = lv.q.size(); i-- > 0;) {
    m[i] = positive_root(beta - 1.0 + 2.0 * U, beta * lv.q[i]);
    U += m[i];
  }
  return expand(lv, m, pi_ref);
}

Eigen::VectorXd categorical_ginf_k3(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref,
                                    double beta) {
  check_beta(beta);
  const Levels lv = supported_levels(rewards, pi_ref);
  if (lv.q.size() == 1) return expand(lv, {1.0}, pi_ref);
  // Eq. (13): π_ℓ = q_ℓ c / (c − v_ℓ + μ) with c = β σ(π), μ = E_π r. Write c − v_ℓ + μ = t + gap_ℓ;
  // for fixed c, Σ π = 1 fixes t (and then E_π r = μ holds); then σ(π(c)) = c / β fixes c.
  auto sd_minus = [&](double u) {
    const double c = std::exp(u);
    const std::vector<double> m = pooled_masses(lv, c, solve_t(lv, c));
    double mu = 0.0, var = 0.0;
    for (size_t l = 0; l < m.size(); ++l) mu += m[l] * lv.value[l];
    for (size_t l = 0; l < m.size(); ++l) var += m[l] * (lv.value[l] - mu) * (lv.value[l] - mu);
    return c / beta - std::sqrt(var);  // < 0 for small c, > 0 once c / β exceeds the range
  };
  const double hi = std::log(beta * (lv.value.back() - lv.value.front()));
  const double lo = std::max(hi - 640.0, -690.0);
  if (!(sd_minus(lo) < 0.0 && sd_minus(hi) > 0.0))
    runtime_error("categorical_ginf_k3: could not bracket c = beta * sigma(pi) (beta = ", beta,
                  "); use the Newton solver");
  const double c = std::exp(illinois(sd_minus, lo, hi));
  return expand(lv, pooled_masses(lv, c, solve_t(lv, c)), pi_ref);
}

Eigen::VectorXd shift_k3(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref, double beta,
                         int64_t G) {
  check_beta(beta);
  if (G != kInfiniteGroup && G < 2) value_error("G: expected an integer >= 2 or infinity, got ", G);
  const Levels lv = supported_levels(rewards, pi_ref);
  if (lv.q.size() == 1) return expand(lv, {1.0}, pi_ref);
  // π = π_ref / (1 − c_G (r − μ)/β) = q C / (t + gap) with C = β / c_G, c_G = 1 − 1/G.
  const double cg = G == kInfiniteGroup ? 1.0 : 1.0 - 1.0 / static_cast<double>(G);
  const double C = beta / cg;
  return expand(lv, pooled_masses(lv, C, solve_t(lv, C)), pi_ref);
}

Eigen::VectorXd log_pooling(const Eigen::VectorXd& rewards, const Eigen::VectorXd& pi_ref, double beta) {
  check_beta(beta);
  const Levels lv = supported_levels(rewards, pi_ref);  // validates sizes and support
  (void)lv;
  double top = -std::numeric_limits<double>::infinity();
  for (Eigen::Index o = 0; o < rewards.size(); ++o)
    if (pi_ref[o] > 0.0) top = std::max(top, rewards[o]);
  Eigen::VectorXd pi = Eigen::VectorXd::Zero(rewards.size());
  for (Eigen::Index o = 0; o < rewards.size(); ++o)
    if (pi_ref[o] > 0.0) pi[o] = pi_ref[o] * std::exp((rewards[o] - top) / beta);
  return pi / pi.sum();
}

}  // namespace stationary
}  // namespace grpokit
