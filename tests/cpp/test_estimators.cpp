#include <cmath>
#include <limits>
#include <string>
#include <vector>

#include "catch.hpp"
#include "grpokit/corrections.hpp"
#include "grpokit/estimators.hpp"

using namespace grpokit;

namespace {
TensorView vec(std::vector<double>& v) {
  return make_view(v.data(), DType::Float64, {static_cast<int64_t>(v.size())});
}
TensorView mat(std::vector<double>& v, int64_t rows, int64_t cols) {
  return make_view(v.data(), DType::Float64, {rows, cols});
}
}  // namespace

TEST_CASE("leave-one-out equals G/(G-1)(R - mean)", "[estimators]") {
  std::vector<double> r{1.0, 0.0, 0.5, 2.0}, out(4);
  EstimatorInputs in;
  in.rewards = vec(r);
  EstimatorOptions opt;
  opt.estimator = Estimator::Rloo;
  opt.group_size = 4;
  estimator_advantages_cpu(in, opt, vec(out), undefined_tensor());
  const double mean = 3.5 / 4;
  for (int i = 0; i < 4; ++i) CHECK(out[i] == Approx(4.0 / 3.0 * (r[i] - mean)));
}

TEST_CASE("MaxRL divides by the group mean; the batch mean needs no groups", "[estimators]") {
  std::vector<double> r{1.0, 0.0, 0.0, 1.0, 1.0, 1.0}, out(6);
  EstimatorInputs in;
  in.rewards = vec(r);
  EstimatorOptions opt;
  opt.estimator = Estimator::MaxRl;
  opt.group_size = 3;
  opt.epsilon = 1e-6;
  estimator_advantages_cpu(in, opt, vec(out), undefined_tensor());
  CHECK(out[0] == Approx((1.0 - 1.0 / 3) / (1.0 / 3 + 1e-6)));
  CHECK(out[1] == Approx((0.0 - 1.0 / 3) / (1.0 / 3 + 1e-6)));
  CHECK(out[3] == 0.0);  // the all-solved group
  opt.estimator = Estimator::BatchMean;
  opt.group_size = 0;  // none: the batch
  opt.std = StdDivisor::None;
  estimator_advantages_cpu(in, opt, vec(out), undefined_tensor());
  for (int i = 0; i < 6; ++i) CHECK(out[i] == Approx(r[i] - 4.0 / 6.0));
  opt.std = StdDivisor::Sample;
  opt.std_scope = StdScope::Group;  // a group σ needs groups
  CHECK_THROWS_WITH(estimator_advantages_cpu(in, opt, vec(out), undefined_tensor()),
                    Catch::Contains("group_size: expected a positive integer"));
}

TEST_CASE("running: the state merges with the batch before normalising; it comes back in returns",
          "[estimators]") {
  std::vector<double> r{1.0, 3.0}, out(2), state(3, -1.0);
  EstimatorInputs in;
  in.rewards = vec(r);
  EstimatorOptions opt;
  opt.estimator = Estimator::Running;
  opt.std = StdDivisor::Sample;
  opt.running_count = 2.0;  // earlier rewards {-1, 1}: mean 0, population std 1
  opt.running_std = 1.0;
  estimator_advantages_cpu(in, opt, vec(out), vec(state));
  // all four rewards {-1, 1, 1, 3}: mean 1, population std sqrt(2), sample std sqrt(8 / 3)
  CHECK(state[0] == 4.0);
  CHECK(state[1] == Approx(1.0));
  CHECK(state[2] == Approx(std::sqrt(2.0)));
  CHECK(out[0] == Approx(0.0).margin(1e-15));
  CHECK(out[1] == Approx(2.0 / std::sqrt(8.0 / 3.0)));
  opt.running_std = -1.0;
  CHECK_THROWS_WITH(estimator_advantages_cpu(in, opt, vec(out), vec(state)),
                    Catch::Contains("state: expected a finite std >= 0"));
}

TEST_CASE("multi-reward weights: wrong K is an error naming reward_weights", "[estimators]") {
  std::vector<double> r(6, 1.0), w{1.0, 2.0, 3.0}, out(3);
  EstimatorInputs in;
  in.rewards = mat(r, 3, 2);
  in.reward_weights = vec(w);
  EstimatorOptions opt;
  opt.group_size = 3;
  CHECK_THROWS_WITH(estimator_advantages_cpu(in, opt, vec(out), undefined_tensor()),
                    Catch::Contains("reward_weights: expected 2 weights"));
}

TEST_CASE("REINFORCE++ whitening: zero mean, unit variance over the mask", "[estimators]") {
  std::vector<double> r{0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0, -1.0, 0.5}, m{1, 1, 1, 1, 1, 0, 1, 1, 1}, out(9);
  EstimatorInputs in;
  in.rewards = mat(r, 3, 3);
  in.mask = mat(m, 3, 3);
  EstimatorOptions opt;
  opt.estimator = Estimator::ReinforcePP;
  opt.gamma = 0.9;
  estimator_advantages_cpu(in, opt, mat(out, 3, 3), undefined_tensor());
  double s = 0.0, ss = 0.0, n = 0.0;
  for (int k = 0; k < 9; ++k)
    if (m[k] != 0.0) s += out[k], ss += out[k] * out[k], n += 1.0;
  CHECK(out[5] == 0.0);
  CHECK(std::fabs(s / n) < 1e-7);
  CHECK((ss - s * s / n) / (n - 1.0) == Approx(1.0).epsilon(1e-6));
}

TEST_CASE("importance weights: token truncation and sequence masking", "[corrections]") {
  std::vector<double> trn{-1.0, -1.0, -1.0, -1.0}, smp{-2.0, -1.0, -0.5, -1.0}, m{1, 1, 1, 0};
  std::vector<double> w(4), metrics(importance_metric_names().size());
  ImportanceOptions opt;
  opt.clip_max = 2.0;
  importance_weights_cpu(mat(trn, 2, 2), mat(smp, 2, 2), mat(m, 2, 2), opt, mat(w, 2, 2), vec(metrics));
  CHECK(w[0] == 2.0);  // e^1 truncated at 2
  CHECK(w[1] == 1.0);
  CHECK(w[2] == Approx(std::exp(-0.5)));
  CHECK(w[3] == 0.0);  // unselected
  opt.level = IsLevel::Sequence;
  opt.mode = IsMode::Mask;
  std::vector<double> ws(2);
  importance_weights_cpu(mat(trn, 2, 2), mat(smp, 2, 2), mat(m, 2, 2), opt, vec(ws), vec(metrics));
  CHECK(ws[0] == 0.0);  // e^1 > 2: masked
  CHECK(ws[1] == Approx(std::exp(-0.5)));
}

TEST_CASE("rejection: unknown criteria list the valid names", "[corrections]") {
  CHECK_THROWS_WITH(parse_rejection_criterion("seq_max_k1"), Catch::Contains("token_k1"));
  const RejectionCriterion c = parse_rejection_criterion("seq_mean_k3");
  CHECK(c.agg == RsAggregation::SeqMean);
  CHECK(c.k == 3);
}

// Every estimator and criterion once on a small ragged batch (runs under the sanitizer build);
// values are checked against fp64 references in tests/python.
TEST_CASE("every estimator writes finite values and leaves unselected tokens at 0", "[estimators]") {
  const int64_t B = 6, T = 5, K = 2;
  std::vector<double> r{1, 0, 0.5, 2, 0, 1}, rk(B * K), tok(B * T, 0.0), m(B * T), lp(B * T), sp(B * T),
      rho(B * T), base(B, 0.25), w{1.0, 0.5};
  for (int64_t i = 0; i < B; ++i)
    for (int64_t t = 0; t < T; ++t) {
      const int64_t k = i * T + t;
      m[k] = (t <= i % T && !(i == 3 && t == 1)) ? 1.0 : 0.0;  // ragged, one interior gap
      tok[k] = m[k] != 0.0 ? 0.1 * static_cast<double>(i - t) : 0.0;
      lp[k] = -0.1 * static_cast<double>(t + 1);
      sp[k] = 0.3;
      rho[k] = 1.0 + 0.05 * static_cast<double>(t);
    }
  for (int64_t k = 0; k < B * K; ++k) rk[k] = std::sin(static_cast<double>(k));
  for (const char* name : {"grpo", "rloo", "reinforce_pp_baseline", "opo", "grpo_passk", "gpg",
                           "normalize_then_sum", "maxrl", "batch_mean"}) {
    EstimatorInputs in;
    in.rewards = mat(rk, B, K);
    in.reward_weights = vec(w);
    in.mask = mat(m, B, T);
    EstimatorOptions opt;
    opt.estimator = parse_estimator(name);
    opt.group_size = 3;
    opt.batch_norm = opt.estimator == Estimator::NormalizeThenSum ? BatchNorm::MaskedWhiten : BatchNorm::None;
    std::vector<double> out(B, -999.0);
    estimator_advantages_cpu(in, opt, vec(out), undefined_tensor());
    for (double v : out) CHECK(std::isfinite(v));
  }
  for (const char* name : {"reinforce_pp", "remax", "optimal_token_baseline", "tir_optimal_token_baseline"}) {
    EstimatorInputs in;
    in.rewards = mat(tok, B, T);
    in.mask = mat(m, B, T);
    EstimatorOptions opt;
    opt.estimator = parse_estimator(name);
    opt.group_size = 3;
    if (opt.estimator == Estimator::Remax) in.baseline_rewards = vec(base);
    if (opt.estimator == Estimator::OptimalTokenBaseline ||
        opt.estimator == Estimator::TirOptimalTokenBaseline) {
      in.logp = mat(lp, B, T);
      in.sum_pi_squared = mat(sp, B, T);
      in.is_weights = mat(rho, B, T);
    }
    std::vector<double> out(B * T, -999.0), ret(B * T, -999.0);
    estimator_advantages_cpu(in, opt, mat(out, B, T), mat(ret, B, T));
    for (int64_t k = 0; k < B * T; ++k) {
      CHECK(std::isfinite(out[k]));
      CHECK(std::isfinite(ret[k]));
      if (m[k] == 0.0) CHECK(out[k] == 0.0);
    }
  }
  std::vector<double> trn(lp), smp(B * T);
  for (int64_t k = 0; k < B * T; ++k) smp[k] = lp[k] + 0.05 * std::cos(static_cast<double>(k));
  std::vector<std::string> names{"token_k1",    "token_k2",   "token_k3",    "seq_sum_k1",
                                 "seq_sum_k2",  "seq_sum_k3", "seq_mean_k1", "seq_mean_k2",
                                 "seq_mean_k3", "seq_max_k2", "seq_max_k3"};
  std::vector<RejectionCriterion> criteria;
  for (const auto& n : names) {
    RejectionCriterion c = parse_rejection_criterion(n);
    c.lower = 0.9;
    c.upper = c.k == 1 ? 1.1 : 0.01;
    criteria.push_back(c);
  }
  std::vector<double> metrics(rejection_metric_names(names).size());
  std::vector<uint8_t> keep(B * T);
  TensorView kv = make_view(keep.data(), DType::Bool, {B, T});
  rejection_mask_cpu(mat(trn, B, T), mat(smp, B, T), mat(m, B, T), criteria, kv, vec(metrics));
  for (double v : metrics) CHECK(std::isfinite(v));
  for (int64_t k = 0; k < B * T; ++k)
    if (m[k] == 0.0) CHECK(keep[k] == 0);
  ImportanceOptions opt;
  opt.level = IsLevel::Sequence;
  opt.batch_normalize = true;
  opt.clip_max = 2.0;
  std::vector<double> ws(B), im(importance_metric_names().size());
  importance_weights_cpu(mat(trn, B, T), mat(smp, B, T), mat(m, B, T), opt, vec(ws), vec(im));
  for (double v : im) CHECK(std::isfinite(v));
}
