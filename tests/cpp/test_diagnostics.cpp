#include <cmath>
#include <cstdint>
#include <string>
#include <vector>

#include "catch.hpp"
#include "grpokit/diagnostics.hpp"
#include "grpokit/math/diagnostics.hpp"

using namespace grpokit;

namespace {

struct PrefixRun {
  std::vector<int64_t> node, count;
  std::vector<double> coef, bias, abs_sum, group;
};

// Padded (B, T) run of prefix_bias_cpu with a (B, T) mask.
PrefixRun run_padded(std::vector<int64_t> ids, std::vector<uint8_t> mask, std::vector<double> adv,
                     std::vector<double> omega, int64_t B, int64_t T, int64_t G) {
  PrefixRun r;
  const auto n = static_cast<size_t>(B * T);
  r.node.assign(n, 99), r.count.assign(n, 99), r.coef.assign(n, 9), r.bias.assign(n, 9),
      r.abs_sum.assign(n, 9);
  const int64_t groups = G > 0 ? B / G : 1;  // G = 0 is tested as an error
  r.group.assign(static_cast<size_t>(groups * kPrefixGroupStats), 9);
  PrefixBiasOutputs out{make_view(r.node.data(), DType::Int64, {B, T}),
                        make_view(r.count.data(), DType::Int64, {B, T}),
                        make_view(r.coef.data(), DType::Float64, {B, T}),
                        make_view(r.bias.data(), DType::Float64, {B, T}),
                        make_view(r.abs_sum.data(), DType::Float64, {B, T}),
                        make_view(r.group.data(), DType::Float64, {groups, int64_t(kPrefixGroupStats)})};
  prefix_bias_cpu(make_view(ids.data(), DType::Int64, {B, T}), make_view(mask.data(), DType::UInt8, {B, T}),
                  undefined_tensor(), make_view(adv.data(), DType::Float64, {B}),
                  make_view(omega.data(), DType::Float64, {B, T}), G, out);
  return r;
}

}  // namespace

TEST_CASE("prefix bias: worked check 1a (docs/diagnostics.md, Tests) on a 2-token whole-group prefix",
          "[diagnostics]") {
  // r = (1,1,0,0), |o| = (10,30,20,40), α = 1/(G|o|σ), σ = 0.5: W = 0.01458333 on the shared prefix.
  const int64_t B = 4, T = 3;
  const double L[4] = {10, 30, 20, 40};
  std::vector<int64_t> ids = {1, 2, 3, 1, 2, 4, 1, 2, 5, 1, 2, 6};
  std::vector<uint8_t> mask(B * T, 1);
  std::vector<double> adv = {0.5, 0.5, -0.5, -0.5}, omega;
  for (int i = 0; i < B; ++i)
    for (int t = 0; t < T; ++t) omega.push_back(1.0 / (4 * L[i] * 0.5));
  const PrefixRun r = run_padded(ids, mask, adv, omega, B, T, 4);
  for (int t = 0; t < 2; ++t) {
    CHECK(r.count[t] == 4);
    CHECK(r.coef[t] == Approx(0.01458333).margin(1e-8));
    CHECK(r.bias[t] == Approx(0.01458333).margin(1e-8));
  }
  CHECK(r.count[2] == 1);
  CHECK(r.bias[2] == 0.0);
  CHECK(r.node[0] == r.node[T]);  // same prefix, same node
  CHECK(r.node[2] != r.node[T + 2]);
  CHECK(r.group[kPrefixLen] == 2.0);
  CHECK(r.group[kPrefixBias] == Approx(2 * 0.01458333).margin(1e-8));
}

TEST_CASE("prefix bias: uniform weights cancel exactly; padding and interior masks", "[diagnostics]") {
  const int64_t B = 2, T = 4;
  std::vector<int64_t> ids = {7, 8, 9, 0, 7, 8, 1, 1};
  std::vector<uint8_t> mask = {1, 1, 1, 0, 1, 0, 1, 1};  // row 0 ends at t = 2, row 1 masks t = 1
  std::vector<double> adv = {0.3, -0.3};
  std::vector<double> omega = {0.02, 0.02, 0.02, NAN, 0.02, NAN, 0.02, 0.02};  // NaN only where masked
  const PrefixRun r = run_padded(ids, mask, adv, omega, B, T, 2);
  CHECK(r.coef[0] == 0.0);
  CHECK(r.bias[0] == 0.0);
  CHECK(r.node[3] == -1);
  CHECK(r.count[3] == 0);
  // t = 1: token 8 shared; row 1 masks it, so its weight there is 0: W = 0.02·0.3, ω̄ = 0.01
  CHECK(r.count[1] == 2);
  CHECK(r.coef[1] == Approx(0.006));
  CHECK(r.bias[1] == Approx((0.02 - 0.01) * 0.3 + (0.0 - 0.01) * -0.3));
  CHECK(r.group[kPrefixLen] == 2.0);
}

TEST_CASE("prefix bias: packed input with cu_seqlens equals padded", "[diagnostics]") {
  std::vector<int64_t> ids = {1, 2, 3, 1, 2, 1, 4, 4};
  std::vector<int64_t> cu = {0, 3, 5, 6, 8};
  std::vector<double> adv = {1.0, -1.0, 0.5, -0.5};
  std::vector<double> omega = {0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8};
  const int64_t N = 8;
  std::vector<int64_t> node(N), count(N);
  std::vector<double> coef(N), bias(N), abs_sum(N), group(2 * kPrefixGroupStats);
  PrefixBiasOutputs out{make_view(node.data(), DType::Int64, {N}),
                        make_view(count.data(), DType::Int64, {N}),
                        make_view(coef.data(), DType::Float64, {N}),
                        make_view(bias.data(), DType::Float64, {N}),
                        make_view(abs_sum.data(), DType::Float64, {N}),
                        make_view(group.data(), DType::Float64, {2, int64_t(kPrefixGroupStats)})};
  prefix_bias_cpu(make_view(ids.data(), DType::Int64, {N}), undefined_tensor(),
                  make_view(cu.data(), DType::Int64, {5}), make_view(adv.data(), DType::Float64, {4}),
                  make_view(omega.data(), DType::Float64, {N}), 2, out);
  // group 0: rows "1 2 3" and "1 2" share two tokens
  CHECK(count[0] == 2);
  CHECK(coef[0] == Approx(0.1 * 1.0 + 0.4 * -1.0));
  CHECK(coef[1] == Approx(0.2 * 1.0 + 0.5 * -1.0));
  CHECK(count[2] == 1);
  // group 1: "1" and "4 4" share nothing
  CHECK(count[5] == 1);
  CHECK(group[kPrefixGroupStats + kPrefixLen] == 0.0);
}

TEST_CASE("prefix bias: bad input is a clear error", "[diagnostics]") {
  std::vector<int64_t> ids(6, 1);
  std::vector<uint8_t> mask(6, 1);
  std::vector<double> adv = {0.5, -0.5, 0.1}, omega(6, 1.0);
  CHECK_THROWS_WITH(run_padded(ids, mask, adv, omega, 3, 2, 2),
                    Catch::Contains("not a whole number of groups of 2"));
  CHECK_THROWS_WITH(run_padded(ids, mask, adv, omega, 3, 2, 0),
                    Catch::Contains("group_size: expected a positive"));
  adv[1] = NAN;
  CHECK_THROWS_WITH(run_padded(ids, mask, adv, omega, 3, 2, 3),
                    Catch::Contains("advantages: element 1 is nan"));
}

TEST_CASE("clip region: sign-aware excess", "[diagnostics]") {
  CHECK(math::clip_excess(1.3, 1.0, 0.2, 0.2) == Approx(0.1));
  CHECK(math::clip_excess(1.3, -1.0, 0.2, 0.2) == 0.0);  // beyond the other bound: not clipped
  CHECK(math::clip_excess(0.7, -1.0, 0.2, 0.2) == Approx(0.1));
  CHECK(math::clip_excess(0.7, 1.0, 0.2, 0.2) == 0.0);
  CHECK(math::clip_excess(5.0, 0.0, 0.2, 0.2) == 0.0);
  CHECK(math::clipped_surrogate(1.3, 1.0, 0.2, 0.2) == Approx(1.2));
  CHECK(math::clipped_surrogate(1.3, -1.0, 0.2, 0.2) == Approx(-1.3));
  std::vector<double> r = {1.3, 1.0, 0.7, 0.9}, adv = {1.0, -1.0}, out(4), prev = {0.05, 0, 0.2, 0};
  const ClipRegionStats st =
      clip_region_cpu(make_view(r.data(), DType::Float64, {2, 2}), make_view(adv.data(), DType::Float64, {2}),
                      undefined_tensor(), 0.2, 0.2, make_view(prev.data(), DType::Float64, {2, 2}),
                      make_view(out.data(), DType::Float64, {2, 2}));
  CHECK(st.n_valid == 4);
  CHECK(st.n_in_region == 2);
  CHECK(st.n_in_both == 2);
  CHECK(st.n_growing == 1);  // 0.05 → 0.1 grows, 0.2 → 0.1 shrinks
  CHECK(out[0] == Approx(0.1));
  CHECK(out[2] == Approx(0.1));
}

TEST_CASE("overshoot closed forms: worked check 11 (docs/diagnostics.md, Tests)", "[diagnostics]") {
  CHECK(math::overshoot_limit(0, 0.9, 0.95) == Approx(0.923381).margin(1e-6));
  CHECK(math::overshoot_limit(4, 0.9, 0.95) == Approx(0.671280).margin(1e-6));
  CHECK(math::overshoot_coefficient(10, 0, 0.9, 0.95) == Approx(0.904707).margin(1e-6));
  CHECK(math::overshoot_coefficient(2, 4, 0.9, 0.95) == Approx(0.329763).margin(1e-6));
  CHECK(math::overshoot_eps_factor(1e-3, std::sqrt(0.95) * 1e-3, 1e-8) == Approx(1.025978).margin(1e-6));
  CHECK(math::reward_scale_elasticity(10.0) == Approx(0.909091).margin(1e-6));
}

TEST_CASE("Adam state: ρ, elasticity and the φ-scaled step", "[diagnostics]") {
  // one coordinate at step 1 with √v̂ = 1e-6, ϵ = 1e-5 (worked check 9, docs/diagnostics.md: φ = 10
  // gives 5.5×)
  const double b2 = 0.999;
  std::vector<double> m = {0.1 * 1e-6}, v = {(1 - b2) * 1e-12}, out(1);
  AdamHyper hp;
  hp.beta1 = 0.9, hp.beta2 = b2, hp.eps = 1e-5, hp.step = 1;
  auto mv = make_view(m.data(), DType::Float64, {1}), vv = make_view(v.data(), DType::Float64, {1});
  const AdamStateStats st = adam_state_stats_cpu(mv, vv, hp, 0.01, -12, 4, 16);
  CHECK(st.n_rho_above == 1);
  CHECK(st.max_rho == Approx(10.0));
  CHECK(st.sum_abs_u_elast / st.sum_abs_u == Approx(10.0 / 11.0));
  adam_update_cpu(mv, vv, hp, 1.0, false, make_view(out.data(), DType::Float64, {1}));
  const double u1 = out[0];
  adam_update_cpu(mv, vv, hp, 10.0, false, make_view(out.data(), DType::Float64, {1}));
  CHECK(out[0] / u1 == Approx(5.5));
  hp.step = 0;
  CHECK_THROWS_WITH(adam_state_stats_cpu(mv, vv, hp, 0.01, -12, 4, 16), Catch::Contains("no step yet"));
  hp.step = 1;
  CHECK_THROWS_WITH(adam_update_cpu(mv, vv, hp, -1.0, false, make_view(out.data(), DType::Float64, {1})),
                    Catch::Contains("phi: expected a finite reward scale > 0"));
}

TEST_CASE("Adam state: array outputs carry the struct's values in the shared layout", "[diagnostics]") {
  // 5 coordinates, one never updated (v = 0), one with ρ beyond the histogram's range
  std::vector<double> m = {1e-3, -2e-4, 0.0, 5e-6, 1e-3}, v = {1e-6, 4e-8, 0.0, 1e-12, 1e-40};
  AdamHyper hp;
  hp.beta1 = 0.9, hp.beta2 = 0.99, hp.eps = 1e-8, hp.step = 3;
  auto mv = make_view(m.data(), DType::Float64, {5}), vv = make_view(v.data(), DType::Float64, {5});
  const std::vector<double> phis = {0.5, 4.0};
  const AdamStateStats st = adam_state_stats_cpu(mv, vv, hp, 0.01, -12, 4, 8, phis);
  std::vector<double> out(kAdamStatFields + 2, -1.0);
  std::vector<int64_t> hist(8, -1);
  adam_state_stats_into_cpu(mv, vv, hp, 0.01, -12, 4, phis,
                            make_view(out.data(), DType::Float64, {kAdamStatFields + 2}),
                            make_view(hist.data(), DType::Int64, {8}));
  CHECK(out[kAdamN] == 5);
  CHECK(out[kAdamNZeroV] == 1);
  CHECK(out[kAdamNRhoAbove] == double(st.n_rho_above));
  CHECK(out[kAdamSumAbsU] == st.sum_abs_u);
  CHECK(out[kAdamSumU2Next] == st.sum_u2_next);
  CHECK(out[kAdamStatFields + 1] == st.sum_abs_u_phi[1]);
  CHECK(hist == st.hist);
  // one coordinate's terms from the shared function equal the definitions
  const math::AdamStatsCoefs k = math::adam_stats_coefs(0.9, 0.99, 1e-8, 3, 0.01, -12, 4, 8);
  const math::AdamCoordinate c = math::adam_coordinate(m[0], v[0], k);
  const double mhat = m[0] / (1 - std::pow(0.9, 3)), sv = std::sqrt(v[0] / (1 - std::pow(0.99, 3)));
  CHECK(c.u == Approx(mhat / (sv + 1e-8)).epsilon(1e-15));
  CHECK(c.rho == Approx(1e-8 / sv).epsilon(1e-15));
  CHECK(c.bin == static_cast<int>(std::floor((std::log10(c.rho) + 12) / 2)));
  CHECK(hist[7] == 1);                                 // ρ = 1e12 in the last bin
  CHECK(math::adam_coordinate(1.0, NAN, k).bin == 7);  // a NaN state: ρ = ∞, the last bin (no UB cast)
  CHECK_THROWS_WITH(adam_state_stats_into_cpu(mv, vv, hp, 0.01, -12, 4, phis,
                                              make_view(out.data(), DType::Float64, {kAdamStatFields}),
                                              make_view(hist.data(), DType::Int64, {8})),
                    Catch::Contains("out_stats: expected a contiguous float64 array of 12 elements"));
  std::vector<double> g = {1.0, NAN, 0.0, 0.0, 0.0}, sp(kAdamSplitFields);
  CHECK_THROWS_WITH(
      adam_step_split_into_cpu(mv, mv, make_view(g.data(), DType::Float64, {5}), TensorView{}, 0.0, hp,
                               make_view(sp.data(), DType::Float64, {kAdamSplitFields})),
      Catch::Contains("grad: element 1 is nan"));
}
