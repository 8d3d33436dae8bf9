// Runs cuda/estimators.cu's and cuda/corrections.cu's kernels on host threads (cuda_emulator.hpp)
// and compares them with the CPU engine on random inputs: every estimator (outcome and token, each
// option that changes the code path, contiguous groups and uneven group ids, mask or lengths, K = 1
// or 3 reward columns with NaN entries and an unscorable row, an all-masked row, strided rewards; the
// running estimator's new state) and every correction (token/sequence/geometric/segment level,
// truncate/mask/geo_mask modes, clip and
// log-clamp bounds, batch renormalisation, NaN sampler log-probs; each rejection criterion, verl's and
// ROLL's, and combinations), float32 and
// float64, several shapes. A check of indexing, pass structure, reductions and barriers without a
// GPU (not of the device compiler, device math or half precision: the GPU tests cover those).
//
#include "cuda_emulator.hpp"

#include "estimators.cu"
#include "corrections.cu"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using namespace grpokit;

namespace {

int g_bad_runs = 0, g_runs = 0;

// |cpu − emu| ≤ rtol·|cpu| + atol·max|cpu|; NaN and ±inf must match exactly.
template <class A, class B>
bool compare(const std::string& what, const std::vector<A>& want, const std::vector<B>& got, double rtol,
             double atol) {
  double scale = 1e-30;
  for (auto w : want)
    if (std::isfinite(double(w))) scale = std::max(scale, std::fabs(double(w)));
  int bad = 0;
  for (size_t k = 0; k < want.size(); ++k) {
    const double w = double(want[k]), g = double(got[k]);
    const bool both_nan = std::isnan(w) && std::isnan(g);
    const bool same_inf = std::isinf(w) && w == g;
    if (!both_nan && !same_inf && !(std::fabs(w - g) <= rtol * std::fabs(w) + atol * scale)) {
      if (bad < 4) std::printf("  MISMATCH %s [%zu]: cpu %.17g emu %.17g\n", what.c_str(), k, w, g);
      ++bad;
    }
  }
  return bad == 0;
}

struct Shape {
  int64_t B, T, G;  // G > 0: contiguous groups of G; G = 0: uneven group ids (i mod 4)
};

// Row lengths: row 0 full, row 2 empty (an all-masked row), others random in [1, T].
std::vector<uint8_t> make_mask(int64_t B, int64_t T, std::mt19937& g) {
  std::vector<uint8_t> m(static_cast<size_t>(B * T), 0);
  for (int64_t i = 0; i < B; ++i) {
    const int64_t len = i == 0 ? T : (i == 2 ? 0 : 1 + static_cast<int64_t>(g() % T));
    for (int64_t t = 0; t < T; ++t) m[i * T + t] = t < len;
    if (len > 2 && i % 3 == 1) m[i * T + 1] = 0;  // a gap (multi-turn tool output)
  }
  return m;
}

struct EstCase {
  std::string name;
  EstimatorOptions opt;
  int K = 1;               // reward columns (outcome estimators)
  bool use_mask = false;   // outcome: lengths from the mask
  bool use_lengths = false;
  bool kl = false;         // RLOO's KL-in-reward inputs
  bool isw = false;        // OTB rollout IS weights
  bool token_rewards_2d = true;
  bool returns = false;
  bool state = false;      // the running estimator's new state (3,) float64, in place of returns
  double scale = 1.0;      // outcome rewards × scale (float64 only): the scaled statistics at ±1e308
};

template <class R>
void run_estimator(const EstCase& c, const Shape& sh, bool strided_rewards, double rtol, double atol) {
  const int64_t B = sh.B, T = sh.T;
  const DType dt = dtype_of<R>();
  std::mt19937 g(static_cast<unsigned>(B * 977 + T * 31 + c.name.size()));
  std::normal_distribution<double> n01(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.05, 0.95);
  const bool token = is_token_estimator(c.opt.estimator);
  std::vector<uint8_t> mask = make_mask(B, T, g);
  // Outcome rewards: a mix of exact values (0, 1: ties, GPG's zeros) and random ones; NaN entries
  // when K > 1, and one unscorable row (every column NaN).
  const int64_t K = token ? 1 : c.K, stride = strided_rewards ? 2 : 1;
  std::vector<R> rew(static_cast<size_t>(B * K * stride), R(-99));
  for (int64_t i = 0; i < B; ++i)
    for (int64_t k = 0; k < K; ++k) {
      const unsigned pick = g() % 4;
      double v = pick == 0 ? 0.0 : pick == 1 ? 1.0 : n01(g);
      if ((K > 1 && g() % 5 == 0) || i == 1) v = NAN;  // row 1: unscorable
      if (sizeof(R) == sizeof(double)) v *= c.scale;
      rew[(i * K + k) * stride] = R(v);
    }
  std::vector<R> trew(static_cast<size_t>(B * T)), logp(B * T), ref(B * T), spp(B * T), isw(B * T), base(B);
  for (int64_t k = 0; k < B * T; ++k) {
    const double p = u(g);
    trew[k] = R(mask[k] ? (g() % 3 == 0 ? n01(g) : 0.0) : NAN);  // padding is never read
    logp[k] = R(mask[k] ? std::log(p) : NAN);
    ref[k] = R(std::log(p) + 0.1 * n01(g));
    spp[k] = R(p * p + 0.3 * u(g) * (1 - p) * (1 - p));
    isw[k] = R(0.5 + u(g));
  }
  for (int64_t i = 0; i < B; ++i) base[i] = R(n01(g));
  std::vector<int64_t> ids(static_cast<size_t>(B)), lengths(static_cast<size_t>(B));
  for (int64_t i = 0; i < B; ++i)
    ids[i] = (i * 7) % 4 + 10, lengths[i] = i == 2 ? 0 : 1 + static_cast<int64_t>(g() % 6);
  std::vector<double> weights = {1.0, 0.5, -2.0};

  EstimatorInputs in;
  if (token) {
    in.rewards = c.token_rewards_2d ? make_view(trew.data(), dt, {B, T}) : make_view(base.data(), dt, {B});
    if (!c.token_rewards_2d) {  // (B,) outcome rewards on the last token: use random values
      for (int64_t i = 0; i < B; ++i) rew[i] = R(n01(g));
      in.rewards = make_view(rew.data(), dt, {B});
    }
  } else {
    in.rewards = K > 1 ? make_view(rew.data(), dt, {B, K}) : make_view(rew.data(), dt, {B});
    in.rewards.strides[0] *= stride;
    if (K > 1) in.rewards.strides[1] *= stride;
    if (K > 1) in.reward_weights = make_view(weights.data(), DType::Float64, {K});
  }
  EstimatorOptions opt = c.opt;
  if (sh.G > 0 && opt.group_size > 0) opt.group_size = sh.G;
  if (sh.G == 0) in.group_ids = make_view(ids.data(), DType::Int64, {B});
  if (token || c.use_mask || c.kl) in.mask = make_view(mask.data(), DType::Bool, {B, T});
  if (c.use_lengths) in.lengths = make_view(lengths.data(), DType::Int64, {B});
  if (c.kl) {
    in.logp = make_view(logp.data(), dt, {B, T});
    in.ref_logp = make_view(ref.data(), dt, {B, T});
  }
  if (opt.estimator == Estimator::Remax) in.baseline_rewards = make_view(base.data(), dt, {B});
  if (opt.estimator == Estimator::OptimalTokenBaseline ||
      opt.estimator == Estimator::TirOptimalTokenBaseline) {
    in.logp = make_view(logp.data(), dt, {B, T});
    in.sum_pi_squared = make_view(spp.data(), dt, {B, T});
    if (c.isw) in.is_weights = make_view(isw.data(), dt, {B, T});
  }
  const int64_t n_out = token ? B * T : B;
  std::vector<R> out_cpu(n_out, R(-7)), out_emu(n_out, R(-7)), ret_cpu(n_out, R(-7)), ret_emu(n_out, R(-7));
  auto view = [&](std::vector<R>& v) {
    return token ? make_view(v.data(), dt, {B, T}) : make_view(v.data(), dt, {B});
  };
  std::vector<double> ws(
      static_cast<size_t>(cuda::estimator_workspace_size(opt.estimator, B, in.mask.defined() ? T : 0)), NAN);
  const TensorView wsv =
      ws.empty() ? TensorView{} : make_view(ws.data(), DType::Float64, {static_cast<int64_t>(ws.size())});
  std::vector<double> st_cpu(3, -7.0), st_emu(3, -7.0);
  auto second = [&](std::vector<R>& ret, std::vector<double>& st) {
    if (c.state) return make_view(st.data(), DType::Float64, {3});
    return c.returns ? view(ret) : TensorView{};
  };
  ++g_runs;
  try {
    estimator_advantages_cpu(in, opt, view(out_cpu), second(ret_cpu, st_cpu));
  } catch (const std::exception& e) {
    std::printf("  CPU ERROR %s B=%lld T=%lld G=%lld: %s\n", c.name.c_str(), (long long)B, (long long)T,
                (long long)sh.G, e.what());
    ++g_bad_runs;
    return;
  }
  cuda::estimator_advantages(in, opt, view(out_emu), second(ret_emu, st_emu), wsv, 0);
  const std::string tag = c.name + (sizeof(R) == 4 ? " f32" : " f64") + " B=" + std::to_string(B) +
                          " T=" + std::to_string(T) + (sh.G ? " G=" + std::to_string(sh.G) : " ids") +
                          (strided_rewards ? " strided" : "");
  bool ok = compare(tag + " advantages", out_cpu, out_emu, rtol, atol);
  if (c.returns) ok = compare(tag + " returns", ret_cpu, ret_emu, rtol, atol) && ok;
  if (c.state) ok = compare(tag + " state", st_cpu, st_emu, 1e-12, 0.0) && ok;
  if (!ok) ++g_bad_runs;
}

std::vector<EstCase> estimator_cases() {
  std::vector<EstCase> cs;
  auto add = [&](const std::string& name, Estimator e, auto&& tweak) {
    EstCase c;
    c.name = name;
    c.opt.estimator = e;
    c.opt.group_size = 1;  // replaced by the shape's group size
    tweak(c);
    cs.push_back(c);
  };
  auto none = [](EstCase&) {};
  add("grpo", Estimator::Grpo, none);
  add("grpo_pop", Estimator::Grpo, [](EstCase& c) { c.opt.std = StdDivisor::Population; });
  add("grpo_sample_K3", Estimator::Grpo,
      [](EstCase& c) { c.opt.std = StdDivisor::Sample, c.opt.epsilon = 1e-4, c.K = 3; });
  add("grpo_batch_std", Estimator::Grpo, [](EstCase& c) {
    c.opt.std = StdDivisor::Sample, c.opt.std_scope = StdScope::Batch, c.opt.epsilon = 1e-4, c.K = 3;
  });
  add("grpo_loo", Estimator::Grpo, [](EstCase& c) { c.opt.baseline = Baseline::LeaveOneOut; });
  add("rloo", Estimator::Rloo, none);
  add("rloo_norm_K3", Estimator::Rloo,
      [](EstCase& c) { c.opt.batch_norm = BatchNorm::Standardise, c.K = 3; });
  add("rloo_clip_kl", Estimator::Rloo, [](EstCase& c) {
    c.opt.reward_clip_min = -0.5, c.opt.reward_clip_max = 0.8, c.opt.kl_beta = 0.1, c.kl = true;
  });
  add("rpp_baseline_mask", Estimator::ReinforcePPBaseline,
      [](EstCase& c) { c.opt.batch_norm = BatchNorm::MaskedWhiten, c.use_mask = true; });
  add("rpp_baseline_len_K3", Estimator::ReinforcePPBaseline,
      [](EstCase& c) { c.opt.batch_norm = BatchNorm::MaskedWhiten, c.use_lengths = true, c.K = 3; });
  add("opo_mask", Estimator::Opo, [](EstCase& c) { c.use_mask = true; });
  add("opo_len_K3", Estimator::Opo, [](EstCase& c) { c.use_lengths = true, c.K = 3; });
  add("grpo_passk", Estimator::GrpoPassk,
      [](EstCase& c) { c.opt.std = StdDivisor::Sample, c.opt.epsilon = 1e-6; });
  add("grpo_passk_nostd_K3", Estimator::GrpoPassk, [](EstCase& c) { c.K = 3; });
  add("gpg", Estimator::Gpg, none);
  add("gpg_fnorm_K3", Estimator::Gpg, [](EstCase& c) { c.opt.f_norm = 2.5, c.K = 3; });
  add("normalize_then_sum_K3", Estimator::NormalizeThenSum, [](EstCase& c) {
    c.opt.std = StdDivisor::Sample, c.opt.epsilon = 1e-4, c.opt.batch_norm = BatchNorm::Standardise, c.K = 3;
  });
  add("gdpo_K3", Estimator::NormalizeThenSum, [](EstCase& c) {
    c.opt.std = StdDivisor::Sample, c.opt.epsilon = 1e-6, c.opt.batch_norm = BatchNorm::MaskedWhiten, c.K = 3,
    c.use_mask = true;
  });
  add("maxrl_K3", Estimator::MaxRl, [](EstCase& c) { c.opt.epsilon = 1e-6, c.K = 3; });
  add("batch_mean", Estimator::BatchMean, [](EstCase& c) {
    c.opt.group_size = 0, c.opt.std = StdDivisor::Sample, c.opt.std_scope = StdScope::Batch,
    c.opt.epsilon = 1e-5;
  });
  add("batch_mean_loo_group_std", Estimator::BatchMean, [](EstCase& c) {
    c.opt.baseline = Baseline::LeaveOneOut, c.opt.std = StdDivisor::Population,
    c.opt.std_scope = StdScope::Group;
  });
  add("running_roll", Estimator::Running, [](EstCase& c) {  // a state from earlier batches, updated
    c.opt.std = StdDivisor::Sample, c.opt.epsilon = 1e-6, c.opt.running_count = 37.0,
    c.opt.running_mean = 0.25, c.opt.running_std = 0.9, c.state = true;
  });
  add("running_empty_no_std", Estimator::Running, [](EstCase& c) { c.state = true; });
  add("running_1e307", Estimator::Running, [](EstCase& c) {
    c.opt.std = StdDivisor::Sample, c.opt.epsilon = 1e-6, c.opt.running_count = 9.0,
    c.opt.running_mean = -3e307, c.opt.running_std = 8e307, c.state = true, c.scale = 5e307;
  });
  add("running_no_update", Estimator::Running, [](EstCase& c) {
    c.opt.std = StdDivisor::Population, c.opt.running_count = 5.0, c.opt.running_mean = -1.0,
    c.opt.running_std = 1.5, c.opt.running_update = false;
  });
  for (const auto& [name, e] :
       {std::pair{"grpo_sample_1e307", Estimator::Grpo}, std::pair{"gdpo_1e307", Estimator::NormalizeThenSum},
        std::pair{"grpo_passk_1e307", Estimator::GrpoPassk},
        std::pair{"batch_mean_1e307", Estimator::BatchMean}})
    add(name, e, [](EstCase& c) { c.opt.std = StdDivisor::Sample, c.opt.epsilon = 1e-6, c.scale = 5e307; });
  add("grpo_batch_std_1e307", Estimator::Grpo, [](EstCase& c) {
    c.opt.std = StdDivisor::Population, c.opt.std_scope = StdScope::Batch, c.scale = 5e307;
  });
  add("rpp_baseline_whiten_1e307", Estimator::ReinforcePPBaseline,
      [](EstCase& c) { c.opt.batch_norm = BatchNorm::MaskedWhiten, c.use_mask = true, c.scale = 2e307; });
  add("reinforce_pp", Estimator::ReinforcePP, [](EstCase& c) { c.returns = true; });
  add("reinforce_pp_gamma_1d", Estimator::ReinforcePP,
      [](EstCase& c) { c.opt.gamma = 0.9, c.token_rewards_2d = false; });
  add("remax", Estimator::Remax, [](EstCase& c) { c.returns = true; });
  add("remax_1d", Estimator::Remax, [](EstCase& c) { c.token_rewards_2d = false; });
  add("otb_isw", Estimator::OptimalTokenBaseline, [](EstCase& c) { c.isw = true, c.returns = true; });
  add("otb_no_tail_1d", Estimator::OptimalTokenBaseline,
      [](EstCase& c) { c.opt.handle_zero_tail = false, c.token_rewards_2d = false; });
  add("tir_otb_isw", Estimator::TirOptimalTokenBaseline, [](EstCase& c) { c.isw = true, c.returns = true; });
  add("tir_otb_1d", Estimator::TirOptimalTokenBaseline, [](EstCase& c) { c.token_rewards_2d = false; });
  return cs;
}

// ---- corrections ---------------------------------------------------------------------------------------

template <class R>
struct LogProbs {
  std::vector<R> trn, smp;
  std::vector<uint8_t> mask;
};

template <class R>
LogProbs<R> make_logprobs(int64_t B, int64_t T, double noise, unsigned seed) {
  std::mt19937 g(seed);
  std::normal_distribution<double> n01(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.05, 0.95);
  LogProbs<R> lp;
  lp.mask = make_mask(B, T, g);
  for (int64_t k = 0; k < B * T; ++k) {
    const double a = std::log(u(g));
    const bool sel = lp.mask[k] != 0;
    lp.trn.push_back(R(sel ? a : (k % 2 ? INFINITY : NAN)));  // padding is never read
    lp.smp.push_back(
        R(sel && g() % 11 == 0 ? NAN : a + noise * n01(g)));  // NaN: the sampler did not score it
  }
  return lp;
}

template <class R>
void run_importance(int64_t B, int64_t T, const ImportanceOptions& given, const std::string& name,
                    double rtol, double atol, bool segment_ids = false) {
  const DType dt = dtype_of<R>();
  LogProbs<R> lp = make_logprobs<R>(B, T, 0.4, static_cast<unsigned>(B * 13 + T));
  // Explicit segment ids: a new turn at a third of the selected positions, a turn spanning masked gaps
  // otherwise; unselected positions hold -5 (never read).
  ImportanceOptions opt = given;
  std::vector<int64_t> ids(static_cast<size_t>(B * T), -5);
  if (segment_ids) {
    std::mt19937 g(static_cast<unsigned>(B + 7 * T));
    for (int64_t i = 0; i < B; ++i)
      for (int64_t t = 0, id = 0; t < T; ++t)
        if (lp.mask[i * T + t]) ids[i * T + t] = (id += g() % 3 == 0 ? 1 : 0);
    opt.segment_ids = make_view(ids.data(), DType::Int64, {B, T});
  }
  const bool seq = weight_per_row(opt.level);
  const int64_t nw = seq ? B : B * T;
  const int64_t M = static_cast<int64_t>(importance_metric_names().size());
  std::vector<R> w_cpu(nw, R(-7)), w_emu(nw, R(-7));
  std::vector<double> m_cpu(M, -7.0), m_emu(M, -7.0), ws(cuda::importance_workspace_size(B), NAN);
  auto wv = [&](std::vector<R>& v) {
    return seq ? make_view(v.data(), dt, {B}) : make_view(v.data(), dt, {B, T});
  };
  const TensorView a = make_view(lp.trn.data(), dt, {B, T}), b = make_view(lp.smp.data(), dt, {B, T});
  const TensorView m = make_view(lp.mask.data(), DType::Bool, {B, T});
  ++g_runs;
  importance_weights_cpu(a, b, m, opt, wv(w_cpu), make_view(m_cpu.data(), DType::Float64, {M}));
  cuda::importance_weights(a, b, m, opt, wv(w_emu), make_view(m_emu.data(), DType::Float64, {M}),
                           make_view(ws.data(), DType::Float64, {static_cast<int64_t>(ws.size())}), 0);
  const std::string tag =
      name + (sizeof(R) == 4 ? " f32" : " f64") + " B=" + std::to_string(B) + " T=" + std::to_string(T);
  bool ok = compare(tag + " weights", w_cpu, w_emu, rtol, atol);
  const auto& names = importance_metric_names();
  for (int64_t k = 0; k < M; ++k) {  // each metric on its own scale
    if (names[k] == "std") {
      // verl's one-pass E[c²] − mean² cancels when the weights are nearly equal: compare variances,
      // with a rounding bound relative to E[c²] (either summation order is as exact as the other).
      const double mean = m_cpu[3];  // ratio_token_mean: the scale of the weights
      const double dv = std::fabs(m_cpu[k] * m_cpu[k] - m_emu[k] * m_emu[k]);
      if (!(dv <= 1e-13 * (1.0 + mean * mean))) {
        std::printf("  MISMATCH %s std: cpu %.17g emu %.17g\n", tag.c_str(), m_cpu[k], m_emu[k]);
        ok = false;
      }
      continue;
    }
    ok = compare(tag + " " + names[k], std::vector<double>{m_cpu[k]}, std::vector<double>{m_emu[k]},
                 std::max(rtol, 1e-12), 1e-14) &&
         ok;
  }
  if (!ok) ++g_bad_runs;
}

template <class R>
void run_rejection(int64_t B, int64_t T, const std::vector<std::string>& names,
                   const std::vector<std::pair<double, double>>& bounds, double rtol) {
  const DType dt = dtype_of<R>();
  LogProbs<R> lp = make_logprobs<R>(B, T, 0.15, static_cast<unsigned>(B * 7 + T * 3));
  std::vector<RejectionCriterion> crit;
  for (size_t k = 0; k < names.size(); ++k) {
    RejectionCriterion c = parse_rejection_criterion(names[k]);
    c.lower = bounds[k].first;
    c.upper = bounds[k].second;
    crit.push_back(c);
  }
  const int64_t M = static_cast<int64_t>(rejection_metric_names(names).size());
  std::vector<uint8_t> k_cpu(B * T, 7), k_emu(B * T, 7);
  std::vector<double> m_cpu(M, -7.0), m_emu(M, -7.0);
  std::vector<double> ws(cuda::rejection_workspace_size(B, static_cast<int64_t>(crit.size())), NAN);
  const TensorView a = make_view(lp.trn.data(), dt, {B, T}), b = make_view(lp.smp.data(), dt, {B, T});
  const TensorView m = make_view(lp.mask.data(), DType::Bool, {B, T});
  ++g_runs;
  rejection_mask_cpu(a, b, m, crit, make_view(k_cpu.data(), DType::Bool, {B, T}),
                     make_view(m_cpu.data(), DType::Float64, {M}));
  cuda::rejection_mask(a, b, m, crit, make_view(k_emu.data(), DType::Bool, {B, T}),
                       make_view(m_emu.data(), DType::Float64, {M}),
                       make_view(ws.data(), DType::Float64, {static_cast<int64_t>(ws.size())}), 0);
  std::string tag;
  for (const auto& n : names) tag += n + "+";
  tag +=
      (sizeof(R) == 4 ? " f32" : " f64") + std::string(" B=") + std::to_string(B) + " T=" + std::to_string(T);
  bool ok = compare(tag + " keep", k_cpu, k_emu, 0.0, 0.0);
  const auto mn = rejection_metric_names(names);
  for (int64_t k = 0; k < M; ++k)
    ok = compare(tag + " " + mn[k], std::vector<double>{m_cpu[k]}, std::vector<double>{m_emu[k]}, rtol,
                 1e-14) &&
         ok;
  if (!ok) ++g_bad_runs;
  int rejected = 0;
  for (int64_t k = 0; k < B * T; ++k) rejected += lp.mask[k] && !k_cpu[k];
  if (rejected == 0 && B * T > 40) std::printf("  note: %s rejects nothing\n", tag.c_str());
}

template <class R>
void run_variance_proxy(int64_t B, int64_t T, bool with_is, double gradient_norm) {
  const DType dt = dtype_of<R>();
  std::mt19937 g(static_cast<unsigned>(B * 5 + T));
  std::normal_distribution<double> n01(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.05, 0.95);
  std::vector<uint8_t> mask = make_mask(B, T, g);
  std::vector<R> lp, spp, adv, rho;
  for (int64_t k = 0; k < B * T; ++k) {
    const double p = u(g);
    lp.push_back(R(std::log(p)));
    spp.push_back(R(p * p + 0.3 * u(g)));
    adv.push_back(R(n01(g)));
    rho.push_back(R(k % 7 == 3 ? 0.0 : std::exp(0.3 * n01(g))));  // a zero weight: verl's 1e-10 floor
  }
  const auto view = [&](std::vector<R>& v) { return make_view(v.data(), dt, {B, T}); };
  VarianceProxyInputs in{view(lp), view(spp), view(adv), make_view(mask.data(), DType::Bool, {B, T}),
                         with_is ? view(rho) : TensorView{}};
  const int64_t M = static_cast<int64_t>(variance_proxy_metric_names().size());
  std::vector<double> m_cpu(M, -7.0), m_emu(M, -7.0), ws(cuda::variance_proxy_workspace_size(B), NAN);
  ++g_runs;
  variance_proxy_cpu(in, gradient_norm, make_view(m_cpu.data(), DType::Float64, {M}));
  cuda::variance_proxy(in, gradient_norm, make_view(m_emu.data(), DType::Float64, {M}),
                       make_view(ws.data(), DType::Float64, {static_cast<int64_t>(ws.size())}), 0);
  const std::string tag = std::string("variance_proxy") + (with_is ? " is" : "") +
                          (sizeof(R) == 4 ? " f32" : " f64") + " B=" + std::to_string(B) +
                          " T=" + std::to_string(T);
  if (!compare(tag, m_cpu, m_emu, 1e-12, 1e-14)) ++g_bad_runs;
}

}  // namespace

int main() {
  const std::vector<Shape> shapes = {{6, 5, 3}, {12, 33, 4}, {10, 1, 2}, {9, 7, 0}, {70, 9, 0}};
  for (const EstCase& c : estimator_cases()) {
    const int before = g_bad_runs;
    for (const Shape& sh : shapes) {
      run_estimator<double>(c, sh, false, 1e-11, 1e-13);
      run_estimator<float>(c, sh, false, 2e-6, 1e-6);
    }
    run_estimator<double>(c, {12, 6, 4}, true, 1e-11, 1e-13);
    std::printf("%-24s %s\n", c.name.c_str(), g_bad_runs == before ? "ok" : "DIFFERS");
    std::fflush(stdout);
  }
  const double inf = INFINITY;
  struct Bounds {
    double lo, hi, clamp;
  };
  const Bounds bounds[] = {
      {-inf, 3.0, inf}, {0.5, 5.0, 20.0}, {-inf, 2.0, 20.0}, {-inf, inf, inf}, {0.8, 1.2, 0.1}};
  int before = g_bad_runs;
  const char* level_names[] = {"token", "sequence", "geometric", "segment"};
  const char* mode_names[] = {"truncate", "mask", "geo_mask"};
  for (IsLevel level : {IsLevel::Token, IsLevel::Sequence, IsLevel::Geometric, IsLevel::Segment})
    for (IsMode mode : {IsMode::Truncate, IsMode::Mask, IsMode::GeoMask})
      for (const Bounds& bd : bounds)
        for (bool bn : {false, true}) {
          if (bn && (mode == IsMode::GeoMask || level == IsLevel::Geometric)) continue;  // fewer runs
          ImportanceOptions o;
          o.level = level, o.mode = mode, o.clip_min = bd.lo, o.clip_max = bd.hi, o.log_clamp = bd.clamp;
          o.batch_normalize = bn;
          o.geo_eps = mode == IsMode::GeoMask && bd.lo > 0.6 ? 0.0 : 1e-8;  // OpenRLHF's and ROLL's ε
          char name[160];
          std::snprintf(name, sizeof name, "importance %s %s [%g, %g] clamp %g%s",
                        level_names[static_cast<int>(level)], mode_names[static_cast<int>(mode)], bd.lo,
                        bd.hi, bd.clamp, bn ? " batch_norm" : "");
          for (auto [B, T] : {std::pair<int64_t, int64_t>{6, 5}, {12, 33}, {10, 1}, {70, 9}}) {
            run_importance<double>(B, T, o, name, 1e-11, 1e-13);
            run_importance<float>(B, T, o, name, 2.5e-7, 1e-12);  // double arithmetic, float weights
            if (level == IsLevel::Segment)
              run_importance<double>(B, T, o, std::string(name) + " segment_ids", 1e-11, 1e-13, true);
          }
        }
  std::printf("%-24s %s\n", "importance_weights", g_bad_runs == before ? "ok" : "DIFFERS");
  before = g_bad_runs;
  const std::vector<std::pair<std::string, std::pair<double, double>>> single = {
      {"token_k1", {0.8, 1.25}},         {"token_k2", {0.0, 0.01}},         {"token_k3", {0.0, 0.01}},
      {"seq_sum_k1", {0.5, 2.0}},        {"seq_sum_k2", {0.0, 0.05}},       {"seq_sum_k3", {0.0, 0.05}},
      {"seq_mean_k1", {0.95, 1.05}},     {"seq_mean_k2", {0.0, 0.01}},      {"seq_mean_k3", {0.0, 0.01}},
      {"seq_max_k2", {0.0, 0.03}},       {"seq_max_k3", {0.0, 0.03}},       {"token_ratio", {0.85, 1.15}},
      {"geometric_ratio", {0.97, 1.03}}, {"sequence_ratio", {0.8, 1.25}},   {"segment_ratio", {0.9, 1.1}},
      {"token_diff", {-0.03, 0.03}},     {"geometric_diff", {-0.01, 0.01}}, {"sequence_diff", {-0.05, 0.05}},
      {"segment_diff", {-0.02, 0.02}}};
  for (auto [B, T] : {std::pair<int64_t, int64_t>{6, 5}, {12, 33}, {10, 1}, {70, 9}}) {
    for (const auto& [name, bd] : single) {
      run_rejection<double>(B, T, {name}, {bd}, 1e-11);
      run_rejection<float>(B, T, {name}, {bd}, 1e-9);
    }
    run_rejection<double>(B, T, {"token_k1", "seq_mean_k3", "seq_max_k2"},
                          {{0.8, 1.25}, {0.0, 0.01}, {0.0, 0.03}}, 1e-11);
    run_rejection<double>(B, T, {"segment_ratio", "token_k2", "segment_diff"},
                          {{0.9, 1.1}, {0.0, 0.01}, {-0.02, 0.02}}, 1e-11);
  }
  std::printf("%-24s %s\n", "rejection_mask", g_bad_runs == before ? "ok" : "DIFFERS");
  before = g_bad_runs;
  for (auto [B, T] : {std::pair<int64_t, int64_t>{6, 5}, {12, 33}, {1, 4}, {300, 9}})
    for (bool with_is : {false, true})
      for (double gn : {static_cast<double>(NAN), 0.3}) {
        run_variance_proxy<double>(B, T, with_is, gn);
        run_variance_proxy<float>(B, T, with_is, gn);
      }
  std::printf("%-24s %s\n", "variance_proxy", g_bad_runs == before ? "ok" : "DIFFERS");
  std::printf("%d of %d runs differ, %d launches the device would refuse\n", g_bad_runs, g_runs,
              g_emulate_launch_errors);
  return g_bad_runs != 0 || g_emulate_launch_errors != 0;
}
