// The full-vocabulary KL against a reference: the KlState merges independently of how a row pair is
// split (the CPU engine's chunks, the GPU's threads), and the engine against the definition.
#include <cmath>
#include <cstdint>
#include <vector>

#include "catch.hpp"
#include "grpokit/error.hpp"
#include "grpokit/logprobs_kl.hpp"
#include "grpokit/math/logprobs_kl.hpp"

using namespace grpokit;

namespace {

// KL(softmax(x/τ) ‖ softmax(y/τ)) by definition, in double.
double kl_by_definition(const std::vector<double>& x, const std::vector<double>& y, double t) {
  auto lse = [&](const std::vector<double>& z) {
    double m = -INFINITY, s = 0;
    for (double v : z) m = std::max(m, v / t);
    for (double v : z) s += std::exp(v / t - m);
    return m + std::log(s);
  };
  const double lx = lse(x), ly = lse(y);
  double kl = 0;
  for (size_t i = 0; i < x.size(); ++i)
    if (x[i] > -INFINITY) kl += std::exp(x[i] / t - lx) * ((x[i] / t - lx) - (y[i] / t - ly));
  return kl;
}

// The state of x[b, e) and y[b, e), as one part.
void fold(math::KlState<double>& st, const std::vector<double>& x, const std::vector<double>& y, size_t b,
          size_t e, double inv_t) {
  math::ChunkStats<double> cp{-INFINITY, 0, 0}, cq{-INFINITY, 0, 0};
  for (size_t i = b; i < e; ++i) cp.max = std::max(cp.max, x[i]), cq.max = std::max(cq.max, y[i]);
  double c = 0;
  for (size_t i = b; i < e; ++i) {
    if (cp.max > -INFINITY) {
      const double d = math::clamp_exp_arg(math::scaled_gap(x[i], cp.max, inv_t)), e_x = std::exp(d);
      cp.sum += e_x, cp.dot += e_x * d;
      c += math::kl_cross_term(e_x, d, y[i], cq.max, inv_t);
    }
    if (cq.max > -INFINITY) cq.sum += std::exp(math::scaled_gap(y[i], cq.max, inv_t));
  }
  st.merge(cp, cq, c, inv_t);
}

}  // namespace

TEST_CASE("KL states merge independently of the split", "[logprobs_kl]") {
  const std::vector<double> x = {0.5, -3.0, 7.25, 7.0, -1e4, 2.0, -INFINITY, 1.5, 40.0, 39.0};
  const std::vector<double> y = {1.5, -2.0, 6.0, 7.5, 3.0, -INFINITY, -INFINITY, 0.0, 38.0, 39.5};
  for (double t : {1.0, 0.7, 3.0}) {
    math::KlState<double> whole;
    fold(whole, x, y, 0, x.size(), 1 / t);
    const double want = kl_by_definition(x, y, t);
    CHECK(whole.kl() == Approx(want).epsilon(1e-12));
    for (size_t part : {1, 2, 3, 4}) {
      math::KlState<double> pieces;
      for (size_t b = 0; b < x.size(); b += part) fold(pieces, x, y, b, std::min(x.size(), b + part), 1 / t);
      CHECK(pieces.kl() == Approx(want).epsilon(1e-12));
      CHECK(pieces.p.entropy() == Approx(whole.p.entropy()).epsilon(1e-12));
    }
  }
  // The reference excluding a token the policy keeps: +inf, however the row is split.
  std::vector<double> y2 = y;
  y2[0] = -INFINITY;
  for (size_t part : {1, 3, 10}) {
    math::KlState<double> st;
    for (size_t b = 0; b < x.size(); b += part) fold(st, x, y2, b, std::min(x.size(), b + part), 1.0);
    CHECK(std::isinf(st.kl()));
  }
}

TEST_CASE("token_logprobs_kl_cpu against the definition, and its checks", "[logprobs_kl]") {
  const int64_t N = 2, V = 5;
  std::vector<double> x = {0.1, 2.0, -1.0, 0.5, 3.0, 1.0, 1.0, 1.0, 1.0, 1.0};
  std::vector<double> y = {0.0, 1.0, 0.0, 2.0, 3.0, 1.0, 2.0, 3.0, 4.0, 5.0};
  std::vector<int64_t> ids = {1, 4};
  std::vector<double> logp(N), h(N), kl(N), lse(N), ref_lse(N);
  const TokenLogprobArgs in{make_view(x.data(), DType::Float64, {N, V}),
                            make_view(ids.data(), DType::Int64, {N}), 1.3};
  auto v = [&](std::vector<double>& a) { return make_view(a.data(), DType::Float64, {N}); };
  const TensorView yv = make_view(y.data(), DType::Float64, {N, V});
  token_logprobs_kl_cpu(in, yv, v(logp), v(h), v(kl), v(lse), v(ref_lse));
  for (int64_t r = 0; r < N; ++r) {
    const std::vector<double> xr(x.begin() + r * V, x.begin() + (r + 1) * V),
        yr(y.begin() + r * V, y.begin() + (r + 1) * V);
    CHECK(kl[r] == Approx(kl_by_definition(xr, yr, 1.3)).epsilon(1e-12));
  }
  // Gradient of Σ kl: p_v·(log p_v − log q_v − KL)/τ sums to 0 over a row.
  std::vector<double> g(N * V), gk = {1.0, 1.0};
  token_logprobs_kl_backward_cpu(in, yv, v(lse), v(ref_lse), v(h), v(kl), TensorView{}, TensorView{}, v(gk),
                                 make_view(g.data(), DType::Float64, {N, V}));
  for (int64_t r = 0; r < N; ++r) {
    double s = 0;
    for (int64_t i = 0; i < V; ++i) s += g[r * V + i];
    CHECK(std::abs(s) < 1e-14);
  }
  const TensorView short_ref = make_view(y.data(), DType::Float64, {N, V - 1});
  CHECK_THROWS_WITH(token_logprobs_kl_cpu(in, short_ref, v(logp), v(h), v(kl), v(lse), v(ref_lse)),
                    Catch::Contains("ref_logits"));
}
