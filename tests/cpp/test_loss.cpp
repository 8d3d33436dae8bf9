#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "catch.hpp"
#include "grpokit/loss.hpp"

using namespace grpokit;

namespace {

struct Batch {
  int64_t B = 3, T = 4;
  std::vector<double> lp, old, adv;
  std::vector<uint8_t> mask;
  explicit Batch(int64_t rows = 3, int64_t cols = 4) : B(rows), T(cols) {
    for (int64_t i = 0; i < B * T; ++i) {
      lp.push_back(std::log(0.2 + 0.05 * static_cast<double>(i % 7)));
      old.push_back(lp.back() + 0.1 * std::sin(static_cast<double>(i)));
      mask.push_back(i % T < (i / T) % T + 2 ? 1 : 0);  // ragged lengths
    }
    for (int64_t i = 0; i < B; ++i) adv.push_back(std::cos(static_cast<double>(3 * i)));
  }
};

struct Result {
  double loss = 0.0;
  std::vector<double> grad;
};

Result run(const LossSpec& s, Batch& b, int threads = 1, uint8_t* selection = nullptr) {
  Result r;
  r.grad.assign(static_cast<size_t>(b.B * b.T), -1.0);
  LossInputs in;
  in.logp = make_view(b.lp.data(), DType::Float64, {b.B, b.T});
  in.old_logp = make_view(b.old.data(), DType::Float64, {b.B, b.T});
  in.advantages = make_view(b.adv.data(), DType::Float64, {b.B});
  in.mask = make_view(b.mask.data(), DType::Bool, {b.B, b.T});
  if (selection) in.selection = make_view(selection, DType::Bool, {b.B, b.T});
  LossOutputs out;
  out.loss = make_view(&r.loss, DType::Float64, {1});
  out.grad_logp = make_view(r.grad.data(), DType::Float64, {b.B, b.T});
  policy_loss_cpu(s, in, out, threads);
  return r;
}

}  // namespace

TEST_CASE("on-policy GRPO: loss −mean_i A_i, gradient −A_i/(B·L_i)", "[loss]") {
  Batch b;
  b.old = b.lp;
  LossSpec s;
  s.aggregation = Aggregation::SeqMeanTokenMean;
  const Result r = run(s, b);
  const double A0 = b.adv[0], A1 = b.adv[1], A2 = b.adv[2];
  CHECK(r.loss == Approx(-(A0 + A1 + A2) / 3.0));
  CHECK(r.grad[0] == Approx(-A0 / (3 * 2)));  // row 0 has 2 valid tokens
  CHECK(r.grad[2] == 0.0);                    // padding
  CHECK(r.grad[4] == Approx(-A1 / (3 * 3)));  // row 1 has 3
}

TEST_CASE("the gradient matches central differences of the loss", "[loss]") {
  Batch b;
  for (Surrogate sur : {Surrogate::Clip, Surrogate::Sapo, Surrogate::Logp}) {
    for (RatioLevel lvl : {RatioLevel::Token, RatioLevel::Sequence, RatioLevel::SequenceSum}) {
      LossSpec s;
      s.surrogate = sur;
      s.ratio = lvl;
      s.logp_weight = LogpWeight::One;
      const Result r = run(s, b);
      for (size_t k = 0; k < b.lp.size(); ++k) {
        if (!b.mask[k]) continue;
        const double h = 1e-6, x = b.lp[k];
        b.lp[k] = x + h;
        const double fp = run(s, b).loss;
        b.lp[k] = x - h;
        const double fm = run(s, b).loss;
        b.lp[k] = x;
        CHECK(r.grad[k] == Approx((fp - fm) / (2 * h)).margin(1e-7));
      }
    }
  }
}

TEST_CASE("results are bitwise identical for any thread count", "[loss]") {
  Batch b(40, 2000);  // > 16k elements per thread: the call really runs multi-threaded
  LossSpec s;
  s.ratio = RatioLevel::Sequence;
  const Result r1 = run(s, b, 1), r3 = run(s, b, 3);
  CHECK(std::memcmp(&r1.loss, &r3.loss, sizeof(double)) == 0);
  CHECK(std::memcmp(r1.grad.data(), r3.grad.data(), r1.grad.size() * sizeof(double)) == 0);
}

TEST_CASE("bad input is an error, padding is never read", "[loss]") {
  Batch b;
  b.lp[2] = std::nan("");  // masked: fine
  LossSpec s;
  CHECK_NOTHROW(run(s, b));
  b.lp[0] = std::nan("");
  CHECK_THROWS_AS(run(s, b), Error);
  b.lp[0] = -1.0;
  s.epsilon_low = -0.1;
  CHECK_THROWS_AS(run(s, b), Error);
  s = LossSpec{};
  for (auto& m : b.mask) m = 0;
  CHECK_THROWS_AS(run(s, b), Error);
}

TEST_CASE("the interval form of the clip equals clip_branch without δ and dual-clip, ties included",
          "[loss]") {
  const double inf = INFINITY;
  for (double eps_low : {0.2, 0.1}) {
    for (double eps_high : {0.28, 0.2}) {
      // ratios on a grid that hits both bounds exactly, plus the extremes
      std::vector<double> rs = {0.0, 1e-30, 1.0 - eps_low, 1.0 + eps_high, 1.0, 1e30, inf};
      for (int k = 0; k <= 400; ++k) rs.push_back(0.5 + 0.0025 * k);
      for (double A : {-1.5, -1e-8, 0.0, 1e-8, 2.0}) {
        const math::ClipInterval<double> iv = math::clip_interval(A, eps_low, eps_high);
        for (double r : rs) {
          math::ClipFlags f{};
          const math::ValueGrad<double> b = math::clip_branch(r, A, eps_low, eps_high, inf, inf, &f);
          const double v = std::min(std::max(r, iv.lo), iv.hi);
          const bool inside = r >= iv.lo && r <= iv.hi;
          INFO("A = " << A << ", r = " << r);
          CHECK(v == b.v);
          CHECK((inside ? 1.0 : 0.0) == b.d);
          CHECK(!inside == (A < 0 ? f.low : (A > 0 ? f.high : false)));
          CHECK((f.low || f.high) == f.verl);
          CHECK_FALSE(f.dual);
        }
      }
    }
  }
}

TEST_CASE("prompt_mean: on-policy, each group's token mean of −A, averaged over groups", "[loss]") {
  Batch b(4, 4);  // rows 0–1 and 2–3 are two prompt groups; row lengths 2, 3, 4, 5→4 (T = 4)
  b.old = b.lp;
  LossSpec s;
  s.aggregation = Aggregation::PromptMean;
  s.group_size = 2;
  const Result r = run(s, b);
  std::vector<double> L(4, 0.0);
  for (int64_t i = 0; i < 4; ++i)
    for (int64_t t = 0; t < 4; ++t) L[i] += b.mask[i * 4 + t];
  const double g0 = L[0] + L[1], g1 = L[2] + L[3];
  const double want =
      -((b.adv[0] * L[0] + b.adv[1] * L[1]) / g0 + (b.adv[2] * L[2] + b.adv[3] * L[3]) / g1) / 2;
  CHECK(r.loss == Approx(want));
  CHECK(r.grad[0] == Approx(-b.adv[0] / (2 * g0)));   // row 0, group 0
  CHECK(r.grad[8] == Approx(-b.adv[2] / (2 * g1)));   // row 2, group 1
  s.num_prompts = 4;                                   // the step holds 4 prompts: half the weight
  CHECK(run(s, b).loss == Approx(want / 2));
}

TEST_CASE("positive_nll: + μ·mean(−ℓ) over the selected valid tokens, outside the aggregation", "[loss]") {
  Batch b;
  LossSpec s;
  const Result base = run(s, b);
  std::vector<uint8_t> sel(static_cast<size_t>(b.B * b.T), 0);
  for (int64_t t = 0; t < b.T; ++t) sel[static_cast<size_t>(2 * b.T + t)] = 1;  // row 2: the positive sample
  s.selection = Selection::PositiveNll;
  s.positive_example_nll_weight = 0.5;
  const Result r = run(s, b, 1, sel.data());
  double sum = 0.0, n = 0.0;
  for (int64_t t = 0; t < b.T; ++t)
    if (b.mask[static_cast<size_t>(2 * b.T + t)]) sum -= b.lp[static_cast<size_t>(2 * b.T + t)], n += 1.0;
  CHECK(r.loss == Approx(base.loss + 0.5 * sum / n));
  CHECK(r.grad[8] == Approx(base.grad[8] - 0.5 / n));  // row 2, token 0
  CHECK(r.grad[0] == base.grad[0]);  // row 0: not selected
  std::vector<uint8_t> none(sel.size(), 0);
  CHECK(run(s, b, 1, none.data()).loss == base.loss);  // no positive token: no term
}

TEST_CASE("m2_threshold: the largest (log r)² leave the mask until the rest's mean is under it", "[loss]") {
  Batch b;
  b.old = b.lp;
  b.old[1] = b.lp[1] + 2.0;  // row 0, token 1: (log r)² = 4, every other token 0
  LossSpec s;
  const Result full = run(s, b);
  std::vector<uint8_t> mask = b.mask;
  s.m2_threshold = 0.1;  // the mean with it, 4/n, is over 0.1; without it 0
  const Result r = run(s, b);
  b.mask[1] = 0;
  s.m2_threshold = NAN;
  const Result dropped = run(s, b);
  CHECK(r.loss == Approx(dropped.loss));
  CHECK(r.grad[1] == 0.0);
  CHECK(r.grad[0] == Approx(dropped.grad[0]));
  CHECK(r.loss != Approx(full.loss));
  b.mask = mask;
  s.m2_threshold = 100.0;  // already under it: nothing is dropped
  CHECK(run(s, b).loss == full.loss);
}
