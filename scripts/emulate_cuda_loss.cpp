// Runs cuda/loss.cu's kernels on host threads and compares them with the CPU engine: a check of the
// kernels' indexing, pass structure, reductions and barriers on machines without a GPU (it does not
// exercise the device compiler or half precision). One std::thread per CUDA thread; __syncthreads and
// warp shuffles are std::barrier rendezvous, so a missing or divergent barrier deadlocks (the script
// runs under a timeout) and shared-memory reuse follows the same order as on the device.
//
//   scripts/emulate_cuda_loss.sh   (builds against build/<tag>/libgrpokit_core.a, reads the presets)
#include <barrier>
#include <cmath>
#include <cstdio>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "cuda_emulator.hpp"

#include "../cuda/loss.cu"

using namespace grpokit;

struct Case {
  std::string name;
  LossSpec spec;
};

// One line per spec: "name field=value field=value ..." (grpokit.LossSpec.engine_fields()).
std::vector<Case> read_cases(std::istream& is) {
  std::vector<Case> out;
  std::string line;
  while (std::getline(is, line)) {
    std::istringstream ls(line);
    Case c;
    ls >> c.name;
    std::string kv;
    while (ls >> kv) {
      const auto eq = kv.find('=');
      const std::string k = kv.substr(0, eq), v = kv.substr(eq + 1);
      char* end = nullptr;
      const double d = std::strtod(v.c_str(), &end);
      if (v == "True" || v == "False") set_spec_field(c.spec, k, v == "True" ? 1.0 : 0.0);
      else if (end && *end == '\0') set_spec_field(c.spec, k, d);
      else set_spec_field(c.spec, k, v);
    }
    out.push_back(c);
  }
  return out;
}

template <class T>
struct Batch {
  int64_t B, T_;
  bool packed;
  std::vector<T> lp, old, adv, ref, ent, smp, tw;
  std::vector<uint8_t> mask, keep;
  std::vector<int64_t> cu;
};

template <class T>
Batch<T> make_batch(int64_t B, int64_t L, bool packed, bool token_adv, unsigned seed) {
  std::mt19937 g(seed);
  std::uniform_real_distribution<double> u(0.05, 0.95), h(0.1, 2.0);
  std::normal_distribution<double> n(0.0, 1.0);
  Batch<T> b;
  b.B = B;
  b.T_ = L;
  b.packed = packed;
  std::vector<int64_t> len(B);
  for (int64_t i = 0; i < B; ++i) len[i] = i == 0 ? L : static_cast<int64_t>(g() % (L + 1));
  if (B > 2) len[2] = 0;  // an all-masked row
  const int64_t N = packed ? [&] { int64_t s = 0; for (auto l : len) s += l; return s; }() : B * L;
  b.cu.push_back(0);
  for (int64_t i = 0; i < B; ++i) b.cu.push_back(b.cu.back() + len[i]);
  for (int64_t k = 0; k < N; ++k) {
    const double l = std::log(u(g));
    b.lp.push_back(T(l));
    b.old.push_back(T(l + 0.2 * n(g)));
    b.ref.push_back(T(l + 0.2 * n(g)));
    b.smp.push_back(T(double(b.old.back()) + 0.05 * n(g)));
    b.ent.push_back(T(h(g)));
    b.tw.push_back(T(u(g)));
    if (token_adv) b.adv.push_back(T(n(g)));
  }
  if (!token_adv)
    for (int64_t i = 0; i < B; ++i) b.adv.push_back(T(n(g)));
  for (int64_t i = 0; i < B; ++i) b.keep.push_back(i % 3 != 1);
  if (packed) {
    b.mask.assign(N, 1);
    for (int64_t k = 3; k < N; k += 7) b.mask[k] = 0;  // packed inputs may be masked too
  } else {
    for (int64_t i = 0; i < B; ++i)
      for (int64_t t = 0; t < L; ++t) {
        const bool valid = t < len[i];
        b.mask.push_back(valid);
        if (!valid) b.lp[i * L + t] = b.old[i * L + t] = T(NAN);  // padding is never read
      }
  }
  return b;
}

template <class T>
int run_case(const Case& c, int64_t B, int64_t T_, bool packed, bool token_adv, double rtol, double afrac) {
  const DType dt = sizeof(T) == 4 ? DType::Float32 : DType::Float64;
  Batch<T> b = make_batch<T>(B, T_, packed, token_adv, static_cast<unsigned>(B * 131 + T_));
  const int64_t N = static_cast<int64_t>(b.lp.size());
  auto view = [&](std::vector<T>& v) {
    return packed ? make_view(v.data(), dt, {N}) : make_view(v.data(), dt, {B, T_});
  };
  LossInputs in;
  in.logp = view(b.lp);
  in.old_logp = view(b.old);
  in.advantages = token_adv ? view(b.adv) : make_view(b.adv.data(), dt, {B});
  in.mask = packed ? make_view(b.mask.data(), DType::Bool, {N}) : make_view(b.mask.data(), DType::Bool, {B, T_});
  const LossSpec& s = c.spec;
  if (s.kl != KlEstimator::None && s.beta != 0.0) in.ref_logp = view(b.ref);
  if (s.gtpo_entropy || s.entropy_coef != 0.0 || s.top_entropy_quantile < 1.0) in.entropies = view(b.ent);
  in.sampling_logp = view(b.smp);
  if (s.gtpo_entropy) {
    in.keep = make_view(b.keep.data(), DType::Bool, {B});
    in.token_weights = view(b.tw);
  }
  if (packed) in.cu_seqlens = make_view(b.cu.data(), DType::Int64, {B + 1});
  std::vector<uint8_t> sel(static_cast<size_t>(N));  // verl's clip_cov / kl_cov: every third token
  for (int64_t k = 0; k < N; ++k) sel[k] = k % 3 == 0;
  if (s.selection != math::Selection::None)
    in.selection = packed ? make_view(sel.data(), DType::Bool, {N}) : make_view(sel.data(), DType::Bool, {B, T_});
  const size_t M = loss_metric_names(s, in).size();
  struct Out {
    std::vector<T> loss, g, gh, pt, om;
    std::vector<double> metrics, ws;
    std::vector<long long> status;
  } o[2];
  const bool has_gh = loss_has_entropy_grad(s, in.entropies.defined());
  LossOutputs out[2];
  for (int k = 0; k < 2; ++k) {
    o[k].loss.assign(1, T(0));
    o[k].g.assign(N, T(-7));
    o[k].gh.assign(N, T(-7));
    o[k].pt.assign(N, T(-7));
    o[k].om.assign(N, T(-7));
    o[k].metrics.assign(M, -7.0);
    o[k].ws.assign(cuda::loss_workspace_size(B), NAN);
    o[k].status.assign(4, -1);
    out[k].loss = make_view(o[k].loss.data(), dt, {1});
    out[k].grad_logp = view(o[k].g);
    if (has_gh) out[k].grad_entropy = view(o[k].gh);
    out[k].per_token = view(o[k].pt);
    out[k].weights = view(o[k].om);
    out[k].metrics = make_view(o[k].metrics.data(), DType::Float64, {static_cast<int64_t>(M)});
  }
  out[1].workspace = make_view(o[1].ws.data(), DType::Float64, {static_cast<int64_t>(o[1].ws.size())});
  out[1].status = make_view(o[1].status.data(), DType::Int64, {4});
  policy_loss_cpu(s, in, out[0], 1);
  cuda::policy_loss(s, in, out[1], 0, 0);
  int bad = 0;
  auto cmp = [&](const char* what, const auto& want, const auto& got) {
    double scale = 1e-30;
    for (auto w : want) scale = std::max(scale, std::fabs(double(w)));
    for (size_t k = 0; k < want.size(); ++k) {
      const double w = double(want[k]), g = double(got[k]);
      const bool both_nan = std::isnan(w) && std::isnan(g);
      const bool same_inf = std::isinf(w) && w == g;
      if (!both_nan && !same_inf && !(std::fabs(w - g) <= rtol * std::fabs(w) + afrac * scale)) {
        if (bad < 5)
          std::printf("  MISMATCH %s %s B=%lld T=%lld packed=%d tokA=%d [%zu]: cpu %.10g emu %.10g\n", c.name.c_str(),
                      what, (long long)B, (long long)T_, packed, token_adv, k, w, g);
        ++bad;
      }
    }
  };
  cmp("loss", o[0].loss, o[1].loss);
  cmp("grad_logp", o[0].g, o[1].g);
  if (has_gh) cmp("grad_entropy", o[0].gh, o[1].gh);
  cmp("per_token", o[0].pt, o[1].pt);
  cmp("weights", o[0].om, o[1].om);
  std::vector<double> mw(o[0].metrics), mg(o[1].metrics);
  cmp("metrics", mw, mg);
  if (o[1].status[0] != 0x7FFFFFFFFFFFFFFFll || o[1].status[2] != 0x7FFFFFFFFFFFFFFFll) {
    std::printf("  STATUS %s: %lld %lld %lld\n", c.name.c_str(), o[1].status[0], o[1].status[1], o[1].status[2]);
    ++bad;
  }
  return bad;
}

// The device-side checks: first non-finite (row, token, input), valid-token count, cu_seqlens errors.
int check_status() {
  int bad = 0;
  const int64_t B = 3, L = 5;
  std::vector<float> lp(B * L, -1.0f), old(B * L, -1.1f), adv{1.0f, -1.0f, 0.5f}, g(B * L), loss(1);
  std::vector<uint8_t> mask(B * L, 1);
  std::vector<double> ws(cuda::loss_workspace_size(B));
  std::vector<long long> st(4);
  LossSpec s;
  auto run = [&](const TensorView& cu, const TensorView& m) {
    LossInputs in;
    const bool packed = cu.defined();
    in.logp = packed ? make_view(lp.data(), DType::Float32, {B * L}) : make_view(lp.data(), DType::Float32, {B, L});
    in.old_logp = packed ? make_view(old.data(), DType::Float32, {B * L}) : make_view(old.data(), DType::Float32, {B, L});
    in.advantages = make_view(adv.data(), DType::Float32, {packed ? cu.shape[0] - 1 : B});
    in.mask = m;
    in.cu_seqlens = cu;
    LossOutputs out;
    out.loss = make_view(loss.data(), DType::Float32, {1});
    out.grad_logp = packed ? make_view(g.data(), DType::Float32, {B * L}) : make_view(g.data(), DType::Float32, {B, L});
    out.workspace = make_view(ws.data(), DType::Float64, {static_cast<int64_t>(ws.size())});
    out.status = make_view(st.data(), DType::Int64, {4});
    cuda::policy_loss(s, in, out, 0, 0);
  };
  old[1 * L + 3] = NAN;  // row 1, token 3 (valid), and an earlier inf in logp that is masked
  lp[1 * L + 1] = INFINITY;
  mask[1 * L + 1] = 0;
  run(TensorView{}, make_view(mask.data(), DType::Bool, {B, L}));
  if (st[0] != ((1ll << 32) + 3) * 7 + 1 || st[1] != 14) {
    std::printf("  STATUS nan: %lld %lld\n", st[0], st[1]);
    ++bad;
  }
  std::vector<uint8_t> none(B * L, 0);
  run(TensorView{}, make_view(none.data(), DType::Bool, {B, L}));
  if (st[1] != 0 || st[0] != 0x7FFFFFFFFFFFFFFFll) {
    std::printf("  STATUS empty: %lld %lld\n", st[0], st[1]);
    ++bad;
  }
  old[1 * L + 3] = -1.1f;
  lp[1 * L + 1] = -1.0f;
  std::vector<int64_t> cu{0, 6, 4, 9};  // decreasing at entry 2, last != 15
  run(make_view(cu.data(), DType::Int64, {4}), TensorView{});
  if (st[2] != 2 * 4 + 2) {
    std::printf("  STATUS cu: %lld\n", st[2]);
    ++bad;
  }
  std::printf("status checks: %s\n", bad ? "FAIL" : "ok");
  return bad;
}

int main() {
  const std::vector<Case> cases = read_cases(std::cin);
  int failures = check_status(), runs = 0;
  for (const Case& c : cases) {
    for (auto [B, T] : {std::pair<int64_t, int64_t>{5, 37}, {3, 1}, {1, 1}, {2, 150}}) {
      for (bool packed : {false, true}) {
        for (bool tok : {false, true}) {
          failures += run_case<double>(c, B, T, packed, tok, 1e-9, 1e-12) != 0;
          failures += run_case<float>(c, B, T, packed, tok, 2e-5, 1e-6) != 0;
          runs += 2;
        }
      }
    }
    std::printf("%s done (%d differing runs so far)\n", c.name.c_str(), failures);
    std::fflush(stdout);
  }
  std::printf("%d of %d runs differ\n", failures, runs);
  return failures != 0;
}
