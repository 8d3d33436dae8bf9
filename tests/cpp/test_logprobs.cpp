#include <cmath>
#include <cstdint>
#include <limits>
#include <vector>

#include "../../cpp/src/cpu_kernels.hpp"
#include "catch.hpp"
#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"

using namespace grpokit;

TEST_CASE("vectorisable exp is accurate on (-inf, 0]", "[logprobs]") {
  double worst = 0.0;
  for (float x = -87.0f; x <= 0.0f; x += 0.0137f) {
    const double want = std::exp(static_cast<double>(x));
    worst = std::max(worst, std::abs(cpu::exp_nonpositive(x) - want) / want);
  }
  CHECK(worst < 3e-7);  // about 2 float32 ulps
  CHECK(cpu::exp_nonpositive(0.0f) == 1.0f);
  CHECK(cpu::exp_nonpositive(-88.0f) == 0.0f);
  CHECK(cpu::exp_nonpositive(-std::numeric_limits<float>::infinity()) == 0.0f);
}

TEST_CASE("bfloat16 stores round to nearest even", "[logprobs]") {
  CHECK(cpu::store<cpu::bf16>(1.0f).bits == 0x3f80);
  CHECK(cpu::store<cpu::bf16>(1.0f + 1.0f / 256.0f).bits == 0x3f80);  // tie -> even
  CHECK(cpu::store<cpu::bf16>(1.0f + 3.0f / 256.0f).bits == 0x3f82);  // tie -> even (up)
  CHECK(cpu::load(cpu::bf16{0x4049}) == 3.140625f);
}

TEST_CASE("row states merge independently of the chunking", "[logprobs]") {
  const std::vector<double> z = {0.5, -3.0, 7.25, 7.0, -1e4, 2.0, -INFINITY, 1.5};
  auto stats = [&](size_t b, size_t e) {
    double m = -INFINITY;
    for (size_t i = b; i < e; ++i) m = std::max(m, z[i]);
    double s = 0, t = 0, q = 0;
    for (size_t i = b; i < e; ++i) {
      const double d = math::clamp_exp_arg(z[i] - m);
      s += std::exp(d);
      t += std::exp(d) * d;
      q += std::exp(2 * d);
    }
    return math::ChunkStats<double>{m, s, t, q};
  };
  math::RowState<double, true> whole, pieces;
  whole.merge(stats(0, z.size()));
  for (size_t b = 0; b < z.size(); b += 3) pieces.merge(stats(b, std::min(z.size(), b + 3)));
  CHECK(pieces.lse() == Approx(whole.lse()).epsilon(1e-14));
  CHECK(pieces.entropy() == Approx(whole.entropy()).epsilon(1e-12));
  CHECK(pieces.sum_sq_probs() == Approx(whole.sum_sq_probs()).epsilon(1e-14));
  // Independent values: entropy and Σp² of softmax(z) by definition.
  double lse = whole.lse(), h = 0, p2 = 0;
  for (double v : z)
    if (v > -INFINITY) h -= std::exp(v - lse) * (v - lse), p2 += std::exp(2 * (v - lse));
  CHECK(whole.entropy() == Approx(h).epsilon(1e-12));
  CHECK(whole.sum_sq_probs() == Approx(p2).epsilon(1e-14));
  // The default state never touches sq.
  math::RowState<double> plain;
  plain.merge(stats(0, z.size()));
  CHECK(plain.sq == 0.0);
}

TEST_CASE("token_logprobs_cpu on a tiny row and its errors", "[logprobs]") {
  std::vector<float> x = {0.0f, 0.0f, 0.0f, 0.0f, 1.0f, 2.0f, 3.0f, 4.0f};
  std::vector<int64_t> ids = {1, 3};
  std::vector<float> logp(2), h(2), lse(2);
  TokenLogprobArgs in{make_view(x.data(), DType::Float32, {2, 4}), make_view(ids.data(), DType::Int64, {2}),
                      1.0};
  token_logprobs_cpu(in, make_view(logp.data(), DType::Float32, {2}),
                     make_view(h.data(), DType::Float32, {2}), make_view(lse.data(), DType::Float32, {2}));
  CHECK(logp[0] == Approx(-std::log(4.0)));
  CHECK(h[0] == Approx(std::log(4.0)));
  const double l1 = std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(4.0));
  CHECK(logp[1] == Approx(4.0 - l1));
  ids[0] = 4;
  CHECK_THROWS_WITH(token_logprobs_cpu(in, make_view(logp.data(), DType::Float32, {2}), undefined_tensor(),
                                       make_view(lse.data(), DType::Float32, {2})),
                    Catch::Contains("token_ids: row 0 holds 4"));
}

#include "../../cpp/src/logprobs_rows.hpp"

TEST_CASE("every compiled version of the forward chunk kernel agrees with float64", "[logprobs]") {
  // Lengths around the 16-lane blocks, values with −inf entries and a wide range.
  for (int64_t n : {1, 15, 16, 17, 100, 2048}) {
    std::vector<float> x(static_cast<size_t>(n));
    for (int64_t i = 0; i < n; ++i)
      x[i] = static_cast<float>(std::sin(0.7 * i) * 12.0 - (i % 5 == 3 ? INFINITY : 0.0));
    if (n > 1) x[0] = 3.0f;  // keep one finite entry
    double m = -INFINITY;
    for (float v : x) m = std::max(m, static_cast<double>(v) * 0.8);
    double s = 0, t = 0, q = 0;
    for (float v : x) {
      const double d = static_cast<double>(v) * 0.8 - m;
      if (d > -INFINITY) s += std::exp(d), t += std::exp(d) * d, q += std::exp(2 * d);
    }
    // The default versions (sq untouched) and the Σπ² ones (sq summed; the rest identical).
    std::vector<math::ChunkStats<float>> got = {rows::chunk_stats_f32<false>(x.data(), n, 0.8f)};
    std::vector<math::ChunkStats<float>> got_sq = {rows::chunk_stats_f32<true>(x.data(), n, 0.8f)};
#ifdef GRPOKIT_CPU_DISPATCH
    if (cpu::has_avx512()) {
      got.push_back(rows::chunk_stats_avx512<float, false>(x.data(), n, 0.8f));
      got_sq.push_back(rows::chunk_stats_avx512<float, true>(x.data(), n, 0.8f));
    }
    got.push_back(rows::chunk_stats_avx2<float, false>(x.data(), n, 0.8f));  // the AVX2 clone on an AVX2 CPU
    got_sq.push_back(rows::chunk_stats_avx2<float, true>(x.data(), n, 0.8f));
#endif
    for (size_t k = 0; k < got.size(); ++k) {
      const auto& c = got[k];
      CHECK(c.max * 0.8 == Approx(m).epsilon(1e-6));  // the chunk's raw maximum (scaled by the caller)
      CHECK(c.sum == Approx(s).epsilon(2e-6));
      CHECK(c.dot == Approx(t).epsilon(2e-5).margin(1e-5));
      CHECK(c.sq == 0.0f);
      CHECK(got_sq[k].max == c.max);
      CHECK(got_sq[k].sum == c.sum);
      CHECK(got_sq[k].dot == c.dot);
      CHECK(got_sq[k].sq == Approx(q).epsilon(2e-6));
    }
  }
}

TEST_CASE("token_logprobs_keep_cpu replays a kept set given by id, and its errors", "[logprobs]") {
  // row 0 keeps {1, 3} (not an upper set: 2 is larger than 1 and dropped), row 1 the whole vocabulary
  std::vector<double> x = {0.0, 1.0, 2.0, 0.5, 1.0, 2.0, 3.0, 4.0};
  std::vector<int64_t> ids = {3, 2}, keep_ids = {1, 3}, offsets = {0, 2, 2};
  std::vector<double> logp(2), h(2), lse(2), mass(2);
  TokenLogprobArgs in{make_view(x.data(), DType::Float64, {2, 4}), make_view(ids.data(), DType::Int64, {2}),
                      1.0};
  KeepArgs k{make_view(keep_ids.data(), DType::Int64, {2}), make_view(offsets.data(), DType::Int64, {3}),
             true};
  auto v = [](std::vector<double>& a) { return make_view(a.data(), DType::Float64, {2}); };
  token_logprobs_keep_cpu(in, k, v(logp), v(h), v(lse), v(mass));
  const double s0 = std::exp(1.0) + std::exp(0.5), all0 = 1.0 + std::exp(1.0) + std::exp(2.0) + std::exp(0.5);
  CHECK(logp[0] == Approx(0.5 - std::log(s0)).epsilon(1e-12));
  CHECK(mass[0] == Approx(std::log(s0 / all0)).epsilon(1e-12));
  const double q1 = std::exp(1.0) / s0, q3 = std::exp(0.5) / s0;
  CHECK(h[0] == Approx(-q1 * std::log(q1) - q3 * std::log(q3)).epsilon(1e-12));
  CHECK(mass[1] == 0.0);
  CHECK(logp[1] == Approx(3.0 - std::log(std::exp(1.0) + std::exp(2.0) + std::exp(3.0) + std::exp(4.0))));
  keep_ids = {3, 1};
  CHECK_THROWS_WITH(token_logprobs_keep_cpu(in, k, v(logp), v(h), v(lse), v(mass)),
                    Catch::Contains("keep_ids: row 0 holds 1 after 3"));
  keep_ids = {1, 4};
  CHECK_THROWS_WITH(token_logprobs_keep_cpu(in, k, v(logp), v(h), v(lse), v(mass)),
                    Catch::Contains("keep_ids: row 0 holds 4, outside the vocabulary [0, 4)"));
  keep_ids = {1, 3};
  offsets = {0, 2, 1};
  CHECK_THROWS_WITH(token_logprobs_keep_cpu(in, k, v(logp), v(h), v(lse), v(mass)),
                    Catch::Contains("keep_offsets: row 1 ends at 1 before it begins at 2"));
}
