// Runs cuda/loss.cu's kernels on host threads and compares them with the CPU engine: a check of the
// kernels' indexing, pass structure, reductions and barriers on machines without a GPU (it does not
// exercise the device compiler). One std::thread per CUDA thread; __syncthreads and warp shuffles are
// std::barrier rendezvous, so a missing or divergent barrier deadlocks (ctest runs under a
// timeout) and shared-memory reuse follows the same order as on the device.
//
// bfloat16/float16: inputs rounded to the half type run through the kernels' half path (host structs
// with the device's conversions) and are compared with the CPU engine on the same values in float32:
// metrics to float32 accuracy (the kernels compute in float), outputs to the half type's rounding.
// With EMULATE_MAX_BLOCK=1024 blocks run at their real launch size (256 / 1024 threads) on longer rows.
//
#include <barrier>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <functional>
#include <iostream>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <type_traits>
#include <vector>

#define GRPOKIT_EMULATE_HALF 1
#include "cuda_emulator.hpp"

#include "loss.cu"

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
      if (v == "True" || v == "False")
        set_spec_field(c.spec, k, v == "True" ? 1.0 : 0.0);
      else if (end && *end == '\0')
        set_spec_field(c.spec, k, d);
      else
        set_spec_field(c.spec, k, v);
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
  const int64_t N = packed ? [&] {
    int64_t s = 0;
    for (auto l : len) s += l;
    return s;
  }()
                           : B * L;
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

// The CPU engine runs on T; the kernels on S (= T, or bfloat16/float16 with T = float: the inputs are
// rounded to S first, so both see the same values). rtol/afrac apply to metrics (computed in T by the
// kernels), out_rtol/out_afrac to the outputs stored in S.
template <class T, class S = T>
int run_case(const Case& c, int64_t B, int64_t T_, bool packed, bool token_adv, double rtol, double afrac,
             double out_rtol = -1.0, double out_afrac = -1.0) {
  if (out_rtol < 0.0) out_rtol = rtol;
  if (out_afrac < 0.0) out_afrac = afrac;
  const DType dt = dtype_of<T>(), ds = dtype_of<S>();
  Batch<T> b = make_batch<T>(B, T_, packed, token_adv, static_cast<unsigned>(B * 131 + T_));
  const int64_t N = static_cast<int64_t>(b.lp.size());
  std::vector<T>* fields[] = {&b.lp, &b.old, &b.adv, &b.ref, &b.ent, &b.smp, &b.tw};
  std::vector<S> sf[7];
  for (int k = 0; k < 7; ++k) {
    for (T& x : *fields[k]) {
      sf[k].push_back(from_d<S>(x));
      x = static_cast<T>(to_d(sf[k].back()));
    }
  }
  std::vector<uint8_t> sel(static_cast<size_t>(N));  // verl's clip_cov / kl_cov: every third token
  for (int64_t k = 0; k < N; ++k) sel[k] = k % 3 == 0;
  const LossSpec& s = c.spec;
  auto inputs = [&](void* const* f, DType d) {  // f: lp, old, adv, ref, ent, smp, tw
    auto view = [&](void* p) { return packed ? make_view(p, d, {N}) : make_view(p, d, {B, T_}); };
    LossInputs in;
    in.logp = view(f[0]);
    in.old_logp = view(f[1]);
    in.advantages = token_adv ? view(f[2]) : make_view(f[2], d, {B});
    in.mask =
        packed ? make_view(b.mask.data(), DType::Bool, {N}) : make_view(b.mask.data(), DType::Bool, {B, T_});
    if (s.kl != KlEstimator::None && s.beta != 0.0) in.ref_logp = view(f[3]);
    if (s.gtpo_entropy || s.entropy_coef != 0.0 || s.top_entropy_quantile < 1.0) in.entropies = view(f[4]);
    in.sampling_logp = view(f[5]);
    if (s.gtpo_entropy) {
      in.keep = make_view(b.keep.data(), DType::Bool, {B});
      in.token_weights = view(f[6]);
    }
    if (packed) in.cu_seqlens = make_view(b.cu.data(), DType::Int64, {B + 1});
    if (s.selection != math::Selection::None)
      in.selection =
          packed ? make_view(sel.data(), DType::Bool, {N}) : make_view(sel.data(), DType::Bool, {B, T_});
    return in;
  };
  void* pt[7];
  void* ps[7];
  for (int k = 0; k < 7; ++k) {
    pt[k] = fields[k]->data();
    ps[k] = sf[k].data();
  }
  const LossInputs in = inputs(pt, dt), ins = inputs(ps, ds);
  const size_t M = loss_metric_names(s, in).size();
  struct OutT {
    std::vector<T> loss, g, gh, pt, om;
  } o0;
  struct OutS {
    std::vector<S> loss, g, gh, pt, om;
  } o1;
  std::vector<double> metrics[2], ws;
  std::vector<long long> status(4, -1);
  const bool has_gh = loss_has_entropy_grad(s, in.entropies.defined());
  LossOutputs out[2];
  auto fill = [&](auto& o, DType d, LossOutputs& lo, std::vector<double>& m) {
    using V = typename std::decay_t<decltype(o.g)>::value_type;
    const V junk = from_d<V>(-7.0);
    o.loss.assign(1, junk);
    o.g.assign(N, junk);
    o.gh.assign(N, junk);
    o.pt.assign(N, junk);
    o.om.assign(N, junk);
    m.assign(M, -7.0);
    auto view = [&](std::vector<V>& v) {
      return packed ? make_view(v.data(), d, {N}) : make_view(v.data(), d, {B, T_});
    };
    lo.loss = make_view(o.loss.data(), d, {1});
    lo.grad_logp = view(o.g);
    if (has_gh) lo.grad_entropy = view(o.gh);
    lo.per_token = view(o.pt);
    lo.weights = view(o.om);
    lo.metrics = make_view(m.data(), DType::Float64, {static_cast<int64_t>(M)});
  };
  fill(o0, dt, out[0], metrics[0]);
  fill(o1, ds, out[1], metrics[1]);
  ws.assign(cuda::loss_workspace_size(B), NAN);  // never read before written
  out[1].workspace = make_view(ws.data(), DType::Float64, {static_cast<int64_t>(ws.size())});
  out[1].status = make_view(status.data(), DType::Int64, {4});
  policy_loss_cpu(s, in, out[0], 1);
  const int launch_errors = g_emulate_launch_errors;
  cuda::policy_loss(s, ins, out[1], 0, 0);
  int bad = 0;
  const char* tname = std::is_same_v<S, T> ? (sizeof(T) == 8 ? "f64" : "f32") : dtype_name(ds);
  auto cmp = [&](const char* what, const auto& want, const auto& got, double rt, double af) {
    double scale = 1e-30;
    for (auto w : want) scale = std::max(scale, std::fabs(to_d(w)));
    for (size_t k = 0; k < want.size(); ++k) {
      const double w = to_d(want[k]), g = to_d(got[k]);
      const bool both_nan = std::isnan(w) && std::isnan(g);
      const bool same_inf = std::isinf(w) && w == g;
      if (!both_nan && !same_inf && !(std::fabs(w - g) <= rt * std::fabs(w) + af * scale)) {
        if (bad < 5)
          std::printf("  MISMATCH %s %s %s B=%lld T=%lld packed=%d tokA=%d [%zu]: cpu %.10g emu %.10g\n",
                      c.name.c_str(), tname, what, (long long)B, (long long)T_, packed, token_adv, k, w, g);
        ++bad;
      }
    }
  };
  cmp("loss", o0.loss, o1.loss, out_rtol, out_afrac);
  cmp("grad_logp", o0.g, o1.g, out_rtol, out_afrac);
  if (has_gh) cmp("grad_entropy", o0.gh, o1.gh, out_rtol, out_afrac);
  cmp("per_token", o0.pt, o1.pt, out_rtol, out_afrac);
  cmp("weights", o0.om, o1.om, out_rtol, out_afrac);
  cmp("metrics", metrics[0], metrics[1], rtol, afrac);
  if (status[0] != 0x7FFFFFFFFFFFFFFFll || status[2] != 0x7FFFFFFFFFFFFFFFll) {
    std::printf("  STATUS %s: %lld %lld %lld\n", c.name.c_str(), status[0], status[1], status[2]);
    ++bad;
  }
  if (g_emulate_launch_errors != launch_errors) {
    std::printf("  LAUNCH %s: a launch the device would refuse\n", c.name.c_str());
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
    in.logp =
        packed ? make_view(lp.data(), DType::Float32, {B * L}) : make_view(lp.data(), DType::Float32, {B, L});
    in.old_logp = packed ? make_view(old.data(), DType::Float32, {B * L})
                         : make_view(old.data(), DType::Float32, {B, L});
    in.advantages = make_view(adv.data(), DType::Float32, {packed ? cu.shape[0] - 1 : B});
    in.mask = m;
    in.cu_seqlens = cu;
    LossOutputs out;
    out.loss = make_view(loss.data(), DType::Float32, {1});
    out.grad_logp =
        packed ? make_view(g.data(), DType::Float32, {B * L}) : make_view(g.data(), DType::Float32, {B, L});
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

// emulate_loss CASES: the case list that loss_cases.py writes.
int main(int argc, char** argv) {
  std::ifstream file(argc > 1 ? argv[1] : "");
  if (!file) {
    std::printf("usage: emulate_loss CASES (written by tests/cuda_emulation/loss_cases.py)\n");
    return 2;
  }
  const std::vector<Case> cases = read_cases(file);
  if (cases.empty()) {
    std::printf("no cases read\n");
    return 2;
  }
  int failures = check_status(), runs = 0;
  // Real launch sizes (EMULATE_MAX_BLOCK > 64): rows longer than 256 threads so every thread and warp
  // of a row block is busy and the block-stride loop wraps; few shapes (each block is 256 / 1024 threads).
  const bool full = emulate_max_block() > 64;
  const std::vector<std::pair<int64_t, int64_t>> shapes =
      full ? std::vector<std::pair<int64_t, int64_t>>{{3, 700}, {2, 33}}
           : std::vector<std::pair<int64_t, int64_t>>{{5, 37}, {3, 1}, {1, 1}, {2, 150}};
  for (const Case& c : cases) {
    for (auto [B, T] : shapes) {
      for (bool packed : {false, true}) {
        for (bool tok : {false, true}) {
          failures += run_case<double>(c, B, T, packed, tok, 1e-9, 1e-12) != 0;
          failures += run_case<float>(c, B, T, packed, tok, 2e-5, 1e-6) != 0;
          runs += 2;
        }
      }
    }
    // bfloat16 / float16 storage (float math): one shape, both layouts. Outputs are rounded once to the
    // half type, or twice where a sequence-level gradient is added to the stored direct part.
    for (bool packed : {false, true}) {
      const bool tok = packed;
      failures +=
          run_case<float, __nv_bfloat16>(c, 5, full ? 300 : 37, packed, tok, 2e-5, 1e-6, 8e-3, 1e-3) != 0;
      failures += run_case<float, __half>(c, 5, full ? 300 : 37, packed, tok, 2e-5, 1e-6, 1e-3, 1e-4) != 0;
      runs += 2;
    }
    std::printf("%s done (%d differing runs so far)\n", c.name.c_str(), failures);
    std::fflush(stdout);
  }
  std::printf("%d of %d runs differ (blocks of at most %u threads)\n", failures, runs, emulate_max_block());
  return failures != 0;
}
