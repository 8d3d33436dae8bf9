#include <cmath>
#include <limits>
#include <vector>

#include "catch.hpp"
#include "grpokit/advantages.hpp"

using namespace grpokit;

namespace {
std::vector<double> run(std::vector<double> r, AdvantageOptions opt, std::vector<int64_t> ids = {}) {
  std::vector<double> out(r.size(), -999.0);
  const auto n = static_cast<int64_t>(r.size());
  TensorView rv = make_view(r.data(), DType::Float64, {n});
  TensorView ov = make_view(out.data(), DType::Float64, {n});
  TensorView iv = ids.empty() ? undefined_tensor() : make_view(ids.data(), DType::Int64, {n});
  advantages_cpu(rv, iv, opt, ov);
  return out;
}
}  // namespace

TEST_CASE("mean-centred advantages per contiguous group", "[advantages]") {
  AdvantageOptions opt;
  opt.group_size = 2;
  const auto a = run({1.0, 0.0, 1.0, 1.0}, opt);
  CHECK(a[0] == 0.5);
  CHECK(a[1] == -0.5);
  CHECK(a[2] == 0.0);
  CHECK(a[3] == 0.0);
}

TEST_CASE("finite rewards at the float64 maximum never overflow; a float step apart sums to zero",
          "[advantages]") {
  const double big = std::numeric_limits<double>::max();
  AdvantageOptions opt;
  opt.group_size = 2;
  auto a = run({big, -big}, opt);  // the mean is 0, not (big − big)/2 through an infinite difference
  CHECK(a[0] == big);
  CHECK(a[1] == -big);
  opt.std = StdDivisor::Sample;  // σ = √2·big overflows; the scaled form does not
  a = run({big, -big}, opt);
  CHECK(a[0] == Approx(1.0 / std::sqrt(2.0)));
  CHECK(a[1] == Approx(-1.0 / std::sqrt(2.0)));
  opt.std = StdDivisor::None;
  opt.group_size = 3;
  const double up = std::nextafter(1.0, 2.0);
  a = run({1.0, up, up}, opt);  // mean 1 + 2u/3: the rounded mean would leave (−u, 0, 0)
  CHECK(a[0] + a[1] + a[2] == Approx(0.0).margin(1e-30));
  CHECK(a[0] == Approx(-2.0 / 3.0 * (up - 1.0)));
}

TEST_CASE("population and sample std, epsilon", "[advantages]") {
  AdvantageOptions opt;
  opt.group_size = 4;
  opt.std = StdDivisor::Population;
  auto a = run({1, 1, 0, 0}, opt);  // σ = 0.5
  CHECK(a[0] == Approx(1.0));
  CHECK(a[3] == Approx(-1.0));
  opt.std = StdDivisor::Sample;  // σ = sqrt(1/3)
  a = run({1, 1, 0, 0}, opt);
  CHECK(a[0] == Approx(0.5 / std::sqrt(1.0 / 3.0)));
  opt.epsilon = 1e-4;
  a = run({1, 1, 0, 0}, opt);
  CHECK(a[0] == Approx(0.5 / (std::sqrt(1.0 / 3.0) + 1e-4)));
}

TEST_CASE("all-equal groups give exactly zero (0/0 := 0)", "[advantages]") {
  AdvantageOptions opt;
  opt.group_size = 3;
  opt.std = StdDivisor::Sample;
  const auto a = run({0.1, 0.1, 0.1, 0.7, 0.7, 0.7}, opt);
  for (double v : a) CHECK(v == 0.0);
}

TEST_CASE("NaN rewards are unscorable: excluded and given 0", "[advantages]") {
  AdvantageOptions opt;
  opt.group_size = 3;
  const double nan = std::numeric_limits<double>::quiet_NaN();
  const auto a = run({1.0, nan, 0.0}, opt);
  CHECK(a[0] == 0.5);
  CHECK(a[1] == 0.0);
  CHECK(a[2] == -0.5);
}

TEST_CASE("leave-one-out baseline", "[advantages]") {
  AdvantageOptions opt;
  opt.group_size = 3;
  opt.baseline = Baseline::LeaveOneOut;
  const auto a = run({3.0, 0.0, 0.0}, opt);
  CHECK(a[0] == Approx(3.0));
  CHECK(a[1] == Approx(-1.5));
}

TEST_CASE("explicit group ids, non-contiguous", "[advantages]") {
  AdvantageOptions opt;
  const auto a = run({1.0, 5.0, 0.0, 7.0}, opt, {10, 20, 10, 20});
  CHECK(a[0] == 0.5);
  CHECK(a[2] == -0.5);
  CHECK(a[1] == -1.0);
  CHECK(a[3] == 1.0);
}

TEST_CASE("batch-scope std", "[advantages]") {
  AdvantageOptions opt;
  opt.group_size = 2;
  opt.std = StdDivisor::Population;
  opt.std_scope = StdScope::Batch;
  // batch rewards 0,2,4,6: mean 3, population σ = sqrt(5)
  const auto a = run({0, 2, 4, 6}, opt);
  CHECK(a[0] == Approx(-1.0 / std::sqrt(5.0)));
  CHECK(a[3] == Approx(1.0 / std::sqrt(5.0)));
}

TEST_CASE("bad input is a grpokit::Error naming the argument", "[advantages][errors]") {
  AdvantageOptions opt;
  opt.group_size = 3;
  CHECK_THROWS_WITH(run({1, 2, 3, 4}, opt), Catch::Contains("group_size"));
  opt.group_size = 1;
  opt.std = StdDivisor::Sample;
  CHECK_THROWS_WITH(run({1, 2}, opt), Catch::Contains("at least 2"));
  opt.group_size = 2;
  CHECK_THROWS_WITH(run({1, std::numeric_limits<double>::infinity()}, opt), Catch::Contains("rewards"));
  std::vector<float> r(4, 1.0f);
  std::vector<double> out(4);
  TensorView rv = make_view(r.data(), DType::Float32, {4});
  TensorView ov = make_view(out.data(), DType::Float64, {4});
  CHECK_THROWS_AS(advantages_cpu(rv, undefined_tensor(), opt, ov), Error);
}
