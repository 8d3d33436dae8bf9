#include <cmath>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "grpokit/corrections.hpp"
#include "grpokit/estimators.hpp"

using namespace grpokit;

namespace {
TensorView vec(std::vector<double>& v) { return make_view(v.data(), DType::Float64, {static_cast<int64_t>(v.size())}); }
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
