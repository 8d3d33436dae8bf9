#include "grpokit/estimators.hpp"

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>
#include <vector>

#include "engine_util.hpp"
#include "estimators_internal.hpp"
#include "grpokit/math/advantages.hpp"
#include "grpokit/math/estimators.hpp"

namespace grpokit {
namespace {

using detail::GroupLayout;
using detail::needs_groups;
using detail::read_mask;
using detail::read_real;

constexpr double kNaN = std::numeric_limits<double>::quiet_NaN();

// ---- shared pieces --------------------------------------------------------------------------------

// R_i = Σ_k w_k r_ik over non-NaN r_ik (TRL's weighted nansum); NaN when every r_ik is NaN (an
// unscorable completion). ±inf is an error.
std::vector<double> combined_rewards(const TensorView& r, const TensorView& weights) {
  const int64_t B = r.shape[0], K = r.ndim == 2 ? r.shape[1] : 1;
  std::vector<double> R(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i) {
    double sum = 0.0;
    bool any = false;
    for (int64_t k = 0; k < K; ++k) {
      const double v = read_real(r, i, k);
      if (std::isinf(v)) {
        if (r.ndim == 2)
          value_error("rewards: element (", i, ", ", k, ") is ", v,
                      "; rewards must be finite (NaN marks an unscorable reward)");
        value_error("rewards: element ", i, " is ", v,
                    "; rewards must be finite (NaN marks an unscorable completion)");
      }
      if (math::is_nan(v)) continue;
      sum += (weights.defined() ? read_real(weights, k) : 1.0) * v;
      any = true;
    }
    R[i] = any ? sum : kNaN;
  }
  return R;
}

// Row lengths L_i: selected tokens of the mask, the given lengths, or 1 (unweighted rows).
std::vector<double> row_lengths(const EstimatorInputs& in, int64_t B) {
  std::vector<double> L(static_cast<size_t>(B), 1.0);
  if (in.mask.defined()) {
    for (int64_t i = 0; i < B; ++i) {
      double n = 0.0;
      for (int64_t t = 0; t < in.mask.shape[1]; ++t) n += read_mask(in.mask, i, t) ? 1.0 : 0.0;
      L[i] = n;
    }
  } else if (in.lengths.defined()) {
    for (int64_t i = 0; i < B; ++i) {
      const double v = in.lengths.dtype == DType::Int32 || in.lengths.dtype == DType::Int64
                           ? static_cast<double>(detail::read_int(in.lengths, i))
                           : read_real(in.lengths, i);
      if (!(v >= 0.0) || std::isinf(v))
        value_error("lengths: element ", i, " is ", v, "; expected a finite length >= 0");
      L[i] = v;
    }
  }
  return L;
}

void require_pairs(const GroupLayout& layout, const char* est) {
  for (int64_t g = 0; g < layout.num_groups(); ++g)
    if (layout.size(g) < 2)
      value_error("group_size: group ", g, " has a single completion; estimator '", est,
                  "' needs at least 2 completions per group");
}

// Group sums over valid values (math::MomentSums: around a shift, scaled; all-equal stays exact).
math::MomentSums group_sums(const std::vector<double>& x, const int64_t* members, int64_t n) {
  math::MomentSums s;
  for (int64_t k = 0; k < n; ++k) s.add(x[members[k]]);
  return s;
}

// The group std in units of s.scale (-1: no divisor).
double group_std(const std::vector<double>& x, const int64_t* members, int64_t n, const math::MomentSums& s,
                 StdDivisor divisor) {
  if (divisor == StdDivisor::None) return -1.0;
  math::SquaredDeviations m2;
  for (int64_t k = 0; k < n; ++k) math::add_sq_dev(m2, x[members[k]], s);
  return math::std_from_m2(m2, s.n, divisor == StdDivisor::Sample);
}

// The final batch normalisation over rows whose value is not NaN; NaN rows end as 0. The statistics are
// taken in the scaled domain of the largest |A| (math::pow2_scale), so finite values never overflow.
void batch_normalise(std::vector<double>& A, const std::vector<double>& L, BatchNorm how, double final_eps) {
  const size_t B = A.size();
  double maxabs = 0.0;
  for (double v : A) maxabs = std::fmax(maxabs, std::fabs(v));  // fmax drops NaN
  const double sc = math::pow2_scale(maxabs);
  if (how == BatchNorm::Standardise) {
    // TRL: (x − nanmean) / (nanstd + eps), nanstd with Bessel's correction; one value → NaN → 0.
    double sum = 0.0, n = 0.0;
    for (size_t i = 0; i < B; ++i)
      if (!math::is_nan(A[i])) sum += A[i] / sc, n += 1.0;
    const double mean = n > 0.0 ? sum / n : 0.0;
    math::SquaredDeviations m2;
    for (size_t i = 0; i < B; ++i)
      if (!math::is_nan(A[i])) m2.add(A[i] / sc - mean);
    const double sd = math::std_from_m2(m2, n, true);
    for (size_t i = 0; i < B; ++i) A[i] = math::batch_standardised(A[i] / sc, mean, sd, n, final_eps / sc);
  } else if (how == BatchNorm::MaskedWhiten) {
    // verl_F.masked_whiten of the (B, T) broadcast A_i·m_it: rows weigh by their length L_i.
    double sum = 0.0, n = 0.0;
    for (size_t i = 0; i < B; ++i)
      if (!math::is_nan(A[i])) sum += L[i] * (A[i] / sc), n += L[i];
    if (n <= 1.0)
      value_error(
          "mask: masked whitening needs more than one selected token over the scorable "
          "completions, got ",
          n);
    const double mean = math::verl_masked_mean(sum, n);
    double ss = 0.0;
    for (size_t i = 0; i < B; ++i)
      if (!math::is_nan(A[i])) ss += L[i] * (A[i] / sc - mean) * (A[i] / sc - mean);
    const double var = math::verl_masked_var(ss, n);
    for (size_t i = 0; i < B; ++i)
      A[i] = math::is_nan(A[i]) ? 0.0 : math::verl_whiten(A[i] / sc, mean, var, sc);
  } else {
    for (double& a : A)
      if (math::is_nan(a)) a = 0.0;
  }
}

// ---- outcome estimators (B,) --------------------------------------------------------------------

// The foundation's group advantages on the combined rewards (one definition of GRPO).
std::vector<double> grpo_like(const std::vector<double>& R, const TensorView& group_ids,
                              const EstimatorOptions& opt, Baseline baseline) {
  const int64_t B = static_cast<int64_t>(R.size());
  std::vector<double> A(R.size());
  AdvantageOptions a;
  a.group_size = opt.group_size;
  a.baseline = baseline;
  a.std = baseline == Baseline::LeaveOneOut ? StdDivisor::None : opt.std;
  a.std_scope = opt.std_scope;
  a.epsilon = opt.epsilon;
  advantages_cpu(make_view(const_cast<double*>(R.data()), DType::Float64, {B}), group_ids, a,
                 make_view(A.data(), DType::Float64, {B}));
  return A;
}

// AReaL's Normalization(mean_level="batch") of the rewards: R − the batch mean (or the mean of the
// batch's other rewards), over σ + ε where σ is taken around that baseline over the batch or each
// group (std_scope). Everything in units of the batch sums' scale.
void batch_mean(const std::vector<double>& R, const GroupLayout& layout, const EstimatorOptions& opt,
                std::vector<double>& A) {
  const size_t B = R.size();
  math::MomentSums b;
  for (double v : R) b.add(v);
  const bool loo = opt.baseline == Baseline::LeaveOneOut;
  std::vector<double> C(B, kNaN), sd(B, -1.0);
  for (size_t i = 0; i < B; ++i)  // AReaL: a leave-one-out mean over a single value is 0
    if (!math::is_nan(R[i]))
      C[i] = loo ? (b.n > 1.0 ? b.loo_centred(R[i]) : R[i] / b.scale) : b.centred(R[i]);
  const bool sample = opt.std == StdDivisor::Sample;
  if (opt.std != StdDivisor::None && opt.std_scope == StdScope::Batch) {
    math::SquaredDeviations m2;
    for (double c : C)
      if (!math::is_nan(c)) m2.add(c);
    std::fill(sd.begin(), sd.end(), math::areal_std(m2, b.n, sample, b.scale));
  } else if (opt.std != StdDivisor::None) {
    for (int64_t g = 0; g < layout.num_groups(); ++g) {
      const int64_t* m = layout.members(g);
      math::SquaredDeviations m2;
      double n = 0.0;
      for (int64_t k = 0; k < layout.size(g); ++k)
        if (!math::is_nan(C[m[k]])) m2.add(C[m[k]]), n += 1.0;
      for (int64_t k = 0; k < layout.size(g); ++k) sd[m[k]] = math::areal_std(m2, n, sample, b.scale);
    }
  }
  for (size_t i = 0; i < B; ++i)
    if (!math::is_nan(R[i])) A[i] = math::scaled_advantage(C[i], b.scale, sd[i], b.scale, opt.epsilon);
}

// ROLL's running normalisation: the batch's moments (two-pass sums) merged into the caller's state
// (math::RunningMoments), then R − running mean [/ (running σ + ε)]. Writes the new state to `state`.
void running(const std::vector<double>& R, const EstimatorOptions& opt, std::vector<double>& A,
             const TensorView& state) {
  math::RunningMoments m{opt.running_count, opt.running_mean, opt.running_std};
  if (opt.running_update) {
    math::MomentSums b;
    for (double v : R) b.add(v);
    math::SquaredDeviations m2;
    for (double v : R) math::add_sq_dev(m2, v, b);
    m.merge(math::batch_moments(b, m2));
  }
  const double sd = opt.std == StdDivisor::None ? -1.0 : m.divisor_std(opt.std == StdDivisor::Sample);
  for (size_t i = 0; i < R.size(); ++i) A[i] = math::running_advantage(R[i], m.mean, sd, opt.epsilon);
  if (state.defined())
    for (int64_t k = 0; k < 3; ++k)
      detail::write_real(state, k, 0, k == 0 ? m.count : k == 1 ? m.mean : m.std);
}

std::vector<double> outcome(const EstimatorInputs& in, const EstimatorOptions& opt,
                            const TensorView& returns) {
  const int64_t B = in.rewards.shape[0];
  const char* est = estimator_name(opt.estimator);
  std::vector<double> R = combined_rewards(in.rewards, in.reward_weights);
  // group_size 0 without ids (an estimator that needs no groups): one group, the batch.
  const GroupLayout layout = detail::make_layout(B, in.group_ids, opt.group_size > 0 ? opt.group_size : B);
  const std::vector<double> L = row_lengths(in, B);
  std::vector<double> A(R.size(), kNaN);  // NaN: no signal (excluded from batch statistics)

  switch (opt.estimator) {
    case Estimator::Grpo:
      return grpo_like(R, in.group_ids, opt, opt.baseline);

    case Estimator::Rloo: {
      require_pairs(layout, est);
      for (int64_t i = 0; i < B; ++i) {
        double kl = 0.0;
        if (opt.kl_beta != 0.0)
          for (int64_t t = 0; t < in.mask.shape[1]; ++t)
            if (read_mask(in.mask, i, t)) kl += read_real(in.logp, i, t) - read_real(in.ref_logp, i, t);
        R[i] = math::rloo_shaped_reward(R[i], opt.reward_clip_min, opt.reward_clip_max, opt.kl_beta, kl);
      }
      const std::vector<double> loo = grpo_like(R, in.group_ids, opt, Baseline::LeaveOneOut);
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        int64_t valid = 0;
        for (int64_t k = 0; k < layout.size(g); ++k) valid += math::is_nan(R[m[k]]) ? 0 : 1;
        // A lone scorable completion has no leave-one-out baseline (TRL: 0/0 = NaN, then 0).
        for (int64_t k = 0; k < layout.size(g); ++k)
          if (valid >= 2 && !math::is_nan(R[m[k]])) A[m[k]] = loo[m[k]];
      }
      break;
    }

    case Estimator::ReinforcePPBaseline:
    case Estimator::Gpg: {
      require_pairs(layout, est);
      double alpha = 1.0;
      if (opt.estimator == Estimator::Gpg) {
        double rows = 0.0, nonzero = 0.0;
        for (double v : R)
          if (!math::is_nan(v)) rows += 1.0, nonzero += v != 0.0 ? 1.0 : 0.0;
        alpha = math::gpg_alpha(rows, nonzero) / opt.f_norm;
      }
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        const math::MomentSums s = group_sums(R, m, layout.size(g));
        for (int64_t k = 0; k < layout.size(g); ++k)
          if (!math::is_nan(R[m[k]])) A[m[k]] = alpha * math::unscale(s.centred(R[m[k]]), s.scale);
      }
      break;
    }

    case Estimator::Opo: {
      require_pairs(layout, est);
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        const math::MomentSums s = group_sums(R, m, layout.size(g));  // its scale keeps Σ L R finite
        double num = 0.0, den = 0.0;
        for (int64_t k = 0; k < layout.size(g); ++k)
          if (!math::is_nan(R[m[k]])) num += L[m[k]] * (R[m[k]] / s.scale), den += L[m[k]];
        if (den == 0.0) {
          bool any = false;
          for (int64_t k = 0; k < layout.size(g); ++k) any = any || !math::is_nan(R[m[k]]);
          if (any)
            value_error("lengths: group ", g,
                        " has total length 0; the OPO baseline Σ L_j R_j / Σ L_j "
                        "is undefined");
          continue;
        }
        const double base = math::opo_baseline(num, den);
        for (int64_t k = 0; k < layout.size(g); ++k)
          if (!math::is_nan(R[m[k]])) A[m[k]] = math::unscale(R[m[k]] / s.scale - base, s.scale);
      }
      break;
    }

    case Estimator::GrpoPassk: {
      require_pairs(layout, est);
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        const int64_t n = layout.size(g);
        int64_t best = -1, valid = 0;
        for (int64_t k = 0; k < n; ++k) {
          if (math::is_nan(R[m[k]])) continue;
          ++valid;
          A[m[k]] = 0.0;
          if (best < 0 || R[m[k]] > R[best]) best = m[k];
        }
        if (valid < 2) continue;
        double second = -std::numeric_limits<double>::infinity();
        for (int64_t k = 0; k < n; ++k)
          if (m[k] != best && !math::is_nan(R[m[k]]) && R[m[k]] > second) second = R[m[k]];
        const math::MomentSums s = group_sums(R, m, n);
        const double gap = R[best] / s.scale - second / s.scale;
        A[best] = math::scaled_advantage(gap, s.scale, group_std(R, m, n, s, opt.std), s.scale, opt.epsilon);
      }
      break;
    }

    case Estimator::NormalizeThenSum: {
      require_pairs(layout, est);
      const TensorView& r = in.rewards;
      const int64_t K = r.ndim == 2 ? r.shape[1] : 1;
      std::vector<double> col(static_cast<size_t>(B));
      std::vector<double> S(static_cast<size_t>(B), 0.0);
      for (int64_t k = 0; k < K; ++k) {
        for (int64_t i = 0; i < B; ++i) col[i] = read_real(r, i, k);
        const double w = in.reward_weights.defined() ? read_real(in.reward_weights, k) : 1.0;
        for (int64_t g = 0; g < layout.num_groups(); ++g) {
          const int64_t* m = layout.members(g);
          const math::MomentSums s = group_sums(col, m, layout.size(g));
          const double sd = group_std(col, m, layout.size(g), s, opt.std);
          for (int64_t j = 0; j < layout.size(g); ++j)  // NaN rewards add nothing (TRL's nansum)
            S[m[j]] += w * math::group_advantage(col[m[j]], s, false, sd, s.scale, opt.epsilon);
        }
      }
      for (int64_t i = 0; i < B; ++i) A[i] = math::is_nan(R[i]) ? kNaN : S[i];
      break;
    }

    case Estimator::MaxRl:
      for (int64_t g = 0; g < layout.num_groups(); ++g) {
        const int64_t* m = layout.members(g);
        const math::MomentSums s = group_sums(R, m, layout.size(g));
        for (int64_t k = 0; k < layout.size(g); ++k)  // SkyRL: a lone completion's μ is 0
          if (!math::is_nan(R[m[k]]))
            A[m[k]] = s.n <= 1.0
                          ? R[m[k]]
                          : math::maxrl_advantage(s.centred(R[m[k]]), s.mean_scaled(), s.scale, opt.epsilon);
      }
      break;

    case Estimator::BatchMean:
      batch_mean(R, layout, opt, A);
      break;

    case Estimator::Running:
      running(R, opt, A, returns);
      break;

    default:
      break;
  }
  batch_normalise(A, L, opt.batch_norm, opt.final_epsilon);
  return A;
}

// ---- token estimators (B, T) --------------------------------------------------------------------

struct TokenRewards {
  int64_t B, T;
  std::vector<double> r;     // B*T, 0 where unselected
  std::vector<char> sel;     // B*T selection
  double at(int64_t i, int64_t t) const { return r[i * T + t]; }
  bool on(int64_t i, int64_t t) const { return sel[i * T + t] != 0; }
};

// Token rewards from (B, T) or from (B,) outcome rewards put on each row's last selected token.
TokenRewards token_rewards(const EstimatorInputs& in) {
  TokenRewards tr{in.mask.shape[0], in.mask.shape[1], {}, {}};
  tr.r.assign(static_cast<size_t>(tr.B * tr.T), 0.0);
  tr.sel.assign(static_cast<size_t>(tr.B * tr.T), 0);
  for (int64_t i = 0; i < tr.B; ++i) {
    int64_t last = -1;
    for (int64_t t = 0; t < tr.T; ++t) {
      if (!read_mask(in.mask, i, t)) continue;
      tr.sel[i * tr.T + t] = 1;
      last = t;
      if (in.rewards.ndim == 2) {
        const double v = read_real(in.rewards, i, t);
        if (!std::isfinite(v))
          value_error("rewards: element (", i, ", ", t, ") is ", v,
                      " at a selected position; token rewards must be finite where mask is set");
        tr.r[i * tr.T + t] = v;
      }
    }
    if (in.rewards.ndim == 1) {
      const double v = read_real(in.rewards, i);
      if (!std::isfinite(v))
        value_error("rewards: element ", i, " is ", v, "; token estimators need finite rewards");
      if (last >= 0) tr.r[i * tr.T + last] = v;
    }
  }
  return tr;
}

// Undiscounted reward-to-go of r·m at every position (verl's flip-cumsum-flip).
std::vector<double> reward_to_go(const TokenRewards& tr) {
  std::vector<double> G(tr.r.size());
  for (int64_t i = 0; i < tr.B; ++i) {
    double run = 0.0;
    for (int64_t t = tr.T - 1; t >= 0; --t) {
      run += tr.at(i, t);  // unselected positions hold 0
      G[i * tr.T + t] = run;
    }
  }
  return G;
}

void token_estimator(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                     const TensorView& returns) {
  const TokenRewards tr = token_rewards(in);
  const int64_t B = tr.B, T = tr.T;
  std::vector<double> A(static_cast<size_t>(B * T), 0.0), G;

  if (opt.estimator == Estimator::ReinforcePP) {
    G.assign(A.size(), 0.0);
    double sum = 0.0, n = 0.0;
    for (int64_t i = 0; i < B; ++i) {
      double run = 0.0;
      for (int64_t t = T - 1; t >= 0; --t) {
        run = math::return_to_go_step(tr.at(i, t), run, opt.gamma, tr.on(i, t), &G[i * T + t]);
        if (tr.on(i, t)) sum += G[i * T + t], n += 1.0;
      }
    }
    if (n <= 1.0) value_error("mask: masked whitening needs more than one selected token, got ", n);
    const double mean = math::verl_masked_mean(sum, n);
    double ss = 0.0;
    for (size_t k = 0; k < A.size(); ++k)
      if (tr.sel[k]) ss += (G[k] - mean) * (G[k] - mean);
    const double var = math::verl_masked_var(ss, n);
    for (size_t k = 0; k < A.size(); ++k) A[k] = tr.sel[k] ? math::verl_whiten(G[k], mean, var) : 0.0;
  } else if (opt.estimator == Estimator::Remax) {
    G = reward_to_go(tr);
    for (int64_t i = 0; i < B; ++i) {
      const double b = read_real(in.baseline_rewards, i);
      for (int64_t t = 0; t < T; ++t) A[i * T + t] = tr.on(i, t) ? G[i * T + t] - b : 0.0;
    }
  } else {  // (Tir)OptimalTokenBaseline
    G = reward_to_go(tr);
    const bool compact = opt.estimator == Estimator::TirOptimalTokenBaseline;
    const GroupLayout layout = detail::make_layout(B, in.group_ids, opt.group_size);
    require_pairs(layout, estimator_name(opt.estimator));
    // W: cumulative path-variance proxy; slot: the position a token is compared at across the
    // group (t, or its rank among the row's selected tokens for the multi-turn variant).
    std::vector<double> W(A.size(), 0.0), L(static_cast<size_t>(B), 0.0);
    std::vector<int64_t> slot(A.size(), -1);
    for (int64_t i = 0; i < B; ++i) {
      double cum = 0.0;
      for (int64_t t = 0; t < T; ++t) {
        if (!tr.on(i, t)) continue;
        const double rho = in.is_weights.defined() ? read_real(in.is_weights, i, t) : 1.0;
        cum += math::otb_token_weight(read_real(in.logp, i, t), read_real(in.sum_pi_squared, i, t), rho);
        W[i * T + t] = cum;
        slot[i * T + t] = compact ? static_cast<int64_t>(L[i]) : t;
        L[i] += 1.0;
      }
    }
    std::vector<double> num(static_cast<size_t>(T)), den(static_cast<size_t>(T));
    std::vector<int64_t> rows;
    for (int64_t g = 0; g < layout.num_groups(); ++g) {
      rows.clear();
      for (int64_t k = 0; k < layout.size(g); ++k)  // the multi-turn variant skips empty rows
        if (!compact || L[layout.members(g)[k]] > 0.0) rows.push_back(layout.members(g)[k]);
      std::fill(num.begin(), num.end(), 0.0);
      std::fill(den.begin(), den.end(), 0.0);
      for (int64_t i : rows)
        for (int64_t t = 0; t < T; ++t)
          if (tr.on(i, t))
            num[slot[i * T + t]] += G[i * T + t] * W[i * T + t], den[slot[i * T + t]] += W[i * T + t];
      // Zero tail: past the second-longest completion only the longest one remains, and its own
      // return would be its baseline; verl zeroes the baseline there instead.
      int64_t longest = -1, count_max = 0;
      double lmax = -1.0, lsecond = -1.0;
      for (int64_t i : rows) {
        if (L[i] > lmax)
          lsecond = lmax, lmax = L[i], longest = i, count_max = 1;
        else if (L[i] == lmax)
          ++count_max, lsecond = L[i];
        else if (L[i] > lsecond)
          lsecond = L[i];
      }
      const bool alone = rows.size() == 1;  // verl: a single trajectory keeps its return
      for (int64_t i : rows) {
        const bool zero_tail = math::otb_has_zero_tail(opt.handle_zero_tail, alone, i == longest,
                                                       static_cast<double>(count_max), lmax, lsecond);
        for (int64_t t = 0; t < T; ++t) {
          if (!tr.on(i, t)) continue;
          const int64_t s = slot[i * T + t];
          const bool zero = alone || (zero_tail && s >= static_cast<int64_t>(lsecond));
          const double b = math::otb_baseline(num[s], den[s], opt.otb_epsilon, zero);
          A[i * T + t] = G[i * T + t] - b;
        }
      }
    }
  }
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) {
      detail::write_real(out, i, t, A[i * T + t]);
      if (returns.defined()) detail::write_real(returns, i, t, G[i * T + t]);
    }
}

}  // namespace

void estimator_advantages_cpu(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                              const TensorView& returns) {
  detail::check_estimator_inputs(in, opt, out, returns, Device{});
  if (is_token_estimator(opt.estimator)) {
    token_estimator(in, opt, out, returns);
    return;
  }
  const std::vector<double> A = outcome(in, opt, returns);
  for (int64_t i = 0; i < static_cast<int64_t>(A.size()); ++i) detail::write_real(out, i, 0, A[i]);
}

}  // namespace grpokit
