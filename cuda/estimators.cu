// The advantage estimators of cpp/src/estimators.cpp on the GPU, from the same per-element formulas
// (grpokit/math/estimators.hpp, grpokit/math/advantages.hpp).
//
// Outcome estimators (advantages (B,)):
//   1. rows    (thread per row): combined reward R_i (weighted nansum of K columns; RLOO's clip and
//              KL-in-reward), row length L_i (mask, lengths or 1).
//   2. batch   (one block, GRPO with a batch std only): the batch std of R.
//   3. groups  (thread per row): the estimator's value from its group, visited in row order (the CPU
//              engine's order, so group statistics are the CPU's to the bit); NaN = no signal.
//   4. finish  (one block): GPG's α, the batch normalisation (TRL standardising, verl masked
//              whitening), NaN → 0, written in the rewards' dtype.
// Token estimators (advantages (B, T)), one thread per row scanning its tokens in the CPU's order:
//   reinforce_pp: return-to-go → batch mean (one block) → Σ(G − mean)² (one block) → whitened;
//   remax: return-to-go − the greedy reward, one kernel;
//   (tir_)optimal_token_baseline: per row the cumulative weights W and returns G by slot; per row its
//   group's leader, next member and zero tail; per (group, slot) Σ G·W and Σ W over the members in row
//   order; per row the advantages.
//
// Every reduction has a fixed order (thread-strided partial sums, then a fixed tree), so repeated
// calls give identical bits. Nothing is allocated (the caller passes a float64 workspace of
// estimator_workspace_size elements) and nothing synchronises the host. Value checks the CPU engine
// makes (finite inputs, groups of one, a whitening over ≤ 1 token, an OPO group of total length 0)
// would need the data on the host: here such inputs give the formulas' values (see docs/gpu.md).
// tests/cuda_emulation/emulate_estimators.cpp runs the kernels on host threads (launch.cuh).
#include <cmath>
#include <cstdint>
#include <string>

#include "grpokit/estimators.hpp"
#include "grpokit/math/advantages.hpp"
#include "grpokit/math/estimators.hpp"
#include "grpokit_cuda.hpp"
#include "launch.cuh"
#include "strided.cuh"

namespace grpokit {
namespace cuda {
namespace {

using namespace strided;  // NOLINT(build/namespaces): the kernels' array accessors

constexpr int kRowThreads = 128;     // thread-per-row and per-element kernels
constexpr int kReduceThreads = 128;  // single-block kernels (a power of two)
constexpr int kMaxRewardColumns = 64;
constexpr double kNaN = NAN;

struct Args {
  EstimatorOptions opt;
  int64_t B = 0, T = 0, K = 1;  // T: columns of the mask (0 without one); K: reward columns
  In r;
  bool r2d = false;
  bool has_w = false;
  double w[kMaxRewardColumns] = {};  // reward weights, passed by value (a handful of host numbers)
  In ids, mask, len, base, logp, ref, spp, isw;
  Out out, ret;
  double* ws = nullptr;
};

// ---- workspace layout (float64) -----------------------------------------------------------------------
// Outcome: R, L, A (B each), globals (4). reinforce_pp: row partials (2B), globals (4). Optimal token
// baseline: G, W, Σ G·W, Σ W by (row, slot) (4·B·T), then L, leader, next, zero-tail slot, lone flag (5·B).
constexpr int kGlobals = 4;

// ---- groups ------------------------------------------------------------------------------------------

// Visits the members of row i's group in row order (contiguous blocks, or equal group ids: O(B) per
// row, fine for RL batch sizes, and what cuda/advantages.cu does).
template <class F>
__device__ void for_group(const Args& a, int64_t i, F&& f) {
  if (!a.ids.defined()) {
    const int64_t start = (i / a.opt.group_size) * a.opt.group_size;
    for (int64_t j = start; j < start + a.opt.group_size; ++j) f(j);
  } else {
    const int64_t mine = int_at(a.ids, i);
    for (int64_t j = 0; j < a.B; ++j)
      if (int_at(a.ids, j) == mine) f(j);
  }
}

// ---- outcome estimators ----------------------------------------------------------------------------------

__global__ void outcome_rows_kernel(const Args a) {
  double* R = a.ws;
  double* L = a.ws + a.B;
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    // TRL's weighted nansum over the reward functions; NaN when none scored the completion.
    double sum = 0.0;
    bool any = false;
    for (int64_t k = 0; k < a.K; ++k) {
      const double v = real_at(a.r, i, k);
      if (math::is_nan(v)) continue;
      sum += (a.has_w ? a.w[k] : 1.0) * v;
      any = true;
    }
    double Ri = any ? sum : kNaN;
    if (a.opt.estimator == Estimator::Rloo) {
      double kl = 0.0;
      if (a.opt.kl_beta != 0.0)
        for (int64_t t = 0; t < a.T; ++t)
          if (flag_at(a.mask, i, t)) kl += real_at(a.logp, i, t) - real_at(a.ref, i, t);
      Ri = math::rloo_shaped_reward(Ri, a.opt.reward_clip_min, a.opt.reward_clip_max, a.opt.kl_beta, kl);
    }
    double Li = 1.0;
    if (a.mask.defined()) {
      Li = 0.0;
      for (int64_t t = 0; t < a.T; ++t) Li += flag_at(a.mask, i, t) ? 1.0 : 0.0;
    } else if (a.len.defined()) {
      Li = real_at(a.len, i);
    }
    R[i] = Ri;
    L[i] = Li;
  }
}

// Every thread's squared deviations (scale-aware sums, math::SquaredDeviations) merged in a fixed tree
// order over the block (blockDim.x a power of two; smem holds 2·blockDim.x doubles). All threads get
// the total.
__device__ math::SquaredDeviations block_merge_sq_dev(const math::SquaredDeviations& mine, double* smem) {
  const int t = threadIdx.x, n = blockDim.x;
  smem[t] = mine.scale;
  smem[n + t] = mine.ssq;
  __syncthreads();
  for (int w = n / 2; w > 0; w /= 2) {
    if (t < w) {
      math::SquaredDeviations x, y;
      x.scale = smem[t];
      x.ssq = smem[n + t];
      y.scale = smem[t + w];
      y.ssq = smem[n + t + w];
      x.merge(y);
      smem[t] = x.scale;
      smem[n + t] = x.ssq;
    }
    __syncthreads();
  }
  math::SquaredDeviations total;
  total.scale = smem[0];
  total.ssq = smem[n];
  __syncthreads();  // smem is reused by the caller
  return total;
}

// The batch std of R for GRPO with std_scope="batch" (as advantages_cpu: mean around the first valid
// reward, then the scaled sum of squared deviations), into globals[0].
__global__ void batch_std_kernel(const Args a) {
  __shared__ double smem[2 * kReduceThreads];
  __shared__ double shift;
  const double* R = a.ws;
  double* glob = a.ws + 3 * a.B;
  const int t = threadIdx.x, n = blockDim.x;
  if (t == 0) {
    shift = 0.0;
    for (int64_t i = 0; i < a.B; ++i)
      if (!math::is_nan(R[i])) {
        shift = R[i];
        break;
      }
  }
  __syncthreads();
  double v[2] = {0.0, 0.0};
  for (int64_t i = t; i < a.B; i += n)
    if (!math::is_nan(R[i])) v[0] += R[i] - shift, v[1] += 1.0;
  strided::block_reduce<2>(v, smem, "ss");
  math::MomentSums s;
  s.shift = shift;
  s.sum = v[0];
  s.n = v[1];
  const double mean = s.mean();
  math::SquaredDeviations m2;
  for (int64_t i = t; i < a.B; i += n) math::add_sq_dev(m2, R[i], mean);
  const math::SquaredDeviations total = block_merge_sq_dev(m2, smem);
  if (t == 0) {
    glob[0] = math::std_from_m2(total, s.n, a.opt.std == StdDivisor::Sample);
  }
}

// Group std of column values x(j) over the valid members (the CPU's group_std; -1: no divisor).
template <class X>
__device__ double group_std(const Args& a, int64_t i, double mean, X&& x) {
  if (a.opt.std == StdDivisor::None) return -1.0;
  math::SquaredDeviations m2;
  double count = 0.0;
  for_group(a, i, [&](int64_t j) {
    const double v = x(j);
    if (math::is_nan(v)) return;
    math::add_sq_dev(m2, v, mean);
    count += 1.0;
  });
  return math::std_from_m2(m2, count, a.opt.std == StdDivisor::Sample);
}

__global__ void outcome_groups_kernel(const Args a) {
  const double* R = a.ws;
  const double* L = a.ws + a.B;
  double* A = a.ws + 2 * a.B;
  const double* glob = a.ws + 3 * a.B;
  const EstimatorOptions& o = a.opt;
  auto rew = [&](int64_t j) { return R[j]; };
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    const double Ri = R[i];
    math::MomentSums s;
    for_group(a, i, [&](int64_t j) { s.add(R[j]); });
    double Ai = kNaN;
    switch (o.estimator) {
      case Estimator::Grpo: {  // the foundation's advantages on the combined rewards
        const bool loo = o.baseline == Baseline::LeaveOneOut;
        const StdDivisor sd = loo ? StdDivisor::None : o.std;
        double scale = -1.0;
        if (sd != StdDivisor::None) {
          if (o.std_scope == StdScope::Batch) {
            scale = glob[0];
          } else {
            math::SquaredDeviations m2;
            const double mean = s.mean();
            for_group(a, i, [&](int64_t j) { math::add_sq_dev(m2, R[j], mean); });
            scale = math::std_from_m2(m2, s.n, sd == StdDivisor::Sample);
          }
        }
        const double base = loo ? math::loo_baseline(Ri, s) : s.mean();
        Ai = math::advantage_value(Ri, base, scale, o.epsilon);
        break;
      }
      case Estimator::Rloo:
        // A lone scorable completion has no leave-one-out baseline (TRL: 0/0 = NaN, then 0).
        if (s.n >= 2.0 && !math::is_nan(Ri))
          Ai = math::advantage_value(Ri, math::loo_baseline(Ri, s), -1.0, o.epsilon);
        break;
      case Estimator::ReinforcePPBaseline:
      case Estimator::Gpg:  // GPG's α is applied by the finish kernel (it needs the whole batch)
        if (!math::is_nan(Ri)) Ai = Ri - s.mean();
        break;
      case Estimator::Opo: {
        double num = 0.0, den = 0.0;
        for_group(a, i, [&](int64_t j) {
          if (!math::is_nan(R[j])) num += L[j] * R[j], den += L[j];
        });
        if (den != 0.0 && !math::is_nan(Ri)) Ai = Ri - math::opo_baseline(num, den);
        break;
      }
      case Estimator::GrpoPassk: {
        if (math::is_nan(Ri)) break;
        int64_t best = -1;
        for_group(a, i, [&](int64_t j) {
          if (!math::is_nan(R[j]) && (best < 0 || R[j] > R[best])) best = j;
        });
        Ai = 0.0;
        if (s.n < 2.0 || i != best) break;
        double second = -INFINITY;
        for_group(a, i, [&](int64_t j) {
          if (j != best && !math::is_nan(R[j]) && R[j] > second) second = R[j];
        });
        const double mean = s.mean();
        Ai = math::passk_advantage(Ri - second, group_std(a, i, mean, rew), o.epsilon);
        break;
      }
      case Estimator::NormalizeThenSum: {
        double S = 0.0;
        for (int64_t k = 0; k < a.K; ++k) {
          auto col = [&](int64_t j) { return real_at(a.r, j, k); };
          math::MomentSums c;
          for_group(a, i, [&](int64_t j) { c.add(col(j)); });
          const double mean = c.mean();
          const double sd = group_std(a, i, mean, col);
          S += (a.has_w ? a.w[k] : 1.0) * math::advantage_value(col(i), mean, sd, o.epsilon);
        }
        if (!math::is_nan(Ri)) Ai = S;
        break;
      }
      default:
        break;
    }
    A[i] = Ai;
  }
}

// GPG's α, then the batch normalisation over the rows with a signal, then the output.
__global__ void outcome_finish_kernel(const Args a) {
  __shared__ double smem[2 * kReduceThreads];
  const double* R = a.ws;
  const double* L = a.ws + a.B;
  double* A = a.ws + 2 * a.B;
  const EstimatorOptions& o = a.opt;
  const int t = threadIdx.x, n = blockDim.x;
  if (o.estimator == Estimator::Grpo) {  // no batch normalisation (as the CPU engine)
    for (int64_t i = t; i < a.B; i += n) store(a.out, i, 0, A[i]);
    return;
  }
  if (o.estimator == Estimator::Gpg) {
    double v[2] = {0.0, 0.0};  // scorable rows, non-zero rewards
    for (int64_t i = t; i < a.B; i += n)
      if (!math::is_nan(R[i])) v[0] += 1.0, v[1] += R[i] != 0.0 ? 1.0 : 0.0;
    strided::block_reduce<2>(v, smem, "ss");
    const double alpha = math::gpg_alpha(v[0], v[1]) / o.f_norm;
    for (int64_t i = t; i < a.B; i += n) A[i] = alpha * A[i];
    __syncthreads();
  }
  if (o.batch_norm == BatchNorm::Standardise) {
    double v[2] = {0.0, 0.0};
    for (int64_t i = t; i < a.B; i += n)
      if (!math::is_nan(A[i])) v[0] += A[i], v[1] += 1.0;
    strided::block_reduce<2>(v, smem, "ss");
    const double cnt = v[1], mean = cnt > 0.0 ? v[0] / cnt : 0.0;
    math::SquaredDeviations m2;
    for (int64_t i = t; i < a.B; i += n) math::add_sq_dev(m2, A[i], mean);
    const math::SquaredDeviations total = block_merge_sq_dev(m2, smem);
    const double sd = math::std_from_m2(total, cnt, true);
    for (int64_t i = t; i < a.B; i += n)
      store(a.out, i, 0, math::batch_standardised(A[i], mean, sd, cnt, o.final_epsilon));
  } else if (o.batch_norm == BatchNorm::MaskedWhiten) {
    // verl_F.masked_whiten of the (B, T) broadcast A_i·m_it: rows weigh by their length L_i.
    double v[2] = {0.0, 0.0};
    for (int64_t i = t; i < a.B; i += n)
      if (!math::is_nan(A[i])) v[0] += L[i] * A[i], v[1] += L[i];
    strided::block_reduce<2>(v, smem, "ss");
    const double cnt = v[1], mean = math::verl_masked_mean(v[0], cnt);
    double ss[1] = {0.0};
    for (int64_t i = t; i < a.B; i += n)
      if (!math::is_nan(A[i])) ss[0] += L[i] * (A[i] - mean) * (A[i] - mean);
    strided::block_reduce<1>(ss, smem, "s");
    const double var = math::verl_masked_var(ss[0], cnt);
    // ≤ 1 selected token has no variance (the CPU engine raises): every advantage is 0.
    for (int64_t i = t; i < a.B; i += n)
      store(a.out, i, 0, (math::is_nan(A[i]) || cnt <= 1.0) ? 0.0 : math::verl_whiten(A[i], mean, var));
  } else {
    for (int64_t i = t; i < a.B; i += n) store(a.out, i, 0, math::is_nan(A[i]) ? 0.0 : A[i]);
  }
}

// ---- token estimators ------------------------------------------------------------------------------------

// Row i's last selected token (where (B,) outcome rewards are placed), -1 for an empty row.
__device__ int64_t last_selected(const Args& a, int64_t i) {
  for (int64_t t = a.T - 1; t >= 0; --t)
    if (flag_at(a.mask, i, t)) return t;
  return -1;
}

// The reward at a selected token: the (B, T) value, or the (B,) outcome reward at the last token.
__device__ double token_reward(const Args& a, int64_t i, int64_t t, int64_t last) {
  if (a.r2d) return real_at(a.r, i, t);
  return t == last ? real_at(a.r, i) : 0.0;
}

// REINFORCE++: phase 0 sums the discounted returns per row, phase 1 their squared deviations from the
// batch mean, phase 2 writes the whitened advantages (and the returns). The scan runs again in each
// phase instead of storing B·T returns.
__global__ void rpp_rows_kernel(const Args a, int phase) {
  double* part = a.ws;
  const double* glob = a.ws + 2 * a.B;
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    const int64_t last = a.r2d ? -1 : last_selected(a, i);
    double run = 0.0, sum = 0.0, cnt = 0.0;
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const bool sel = flag_at(a.mask, i, t);
      double g = 0.0;
      run = math::return_to_go_step(sel ? token_reward(a, i, t, last) : 0.0, run, a.opt.gamma, sel, &g);
      if (phase == 0) {
        if (sel) sum += g, cnt += 1.0;
      } else if (phase == 1) {
        if (sel) sum += (g - glob[0]) * (g - glob[0]);
      } else {
        // ≤ 1 selected token in the batch has no variance (the CPU engine raises): advantages 0.
        store(a.out, i, t, sel && glob[1] > 1.0 ? math::verl_whiten(g, glob[0], glob[2]) : 0.0);
        if (a.ret.defined()) store(a.ret, i, t, g);
      }
    }
    if (phase == 0) part[2 * i] = sum, part[2 * i + 1] = cnt;
    if (phase == 1) part[2 * i] = sum;
  }
}

// Batch totals of the row partials: phase 0 → mean (glob 0) and count (glob 1); phase 1 → var (glob 2).
__global__ void rpp_reduce_kernel(const Args a, int phase) {
  __shared__ double smem[2 * kReduceThreads];
  const double* part = a.ws;
  double* glob = a.ws + 2 * a.B;
  double v[2] = {0.0, 0.0};
  for (int64_t i = threadIdx.x; i < a.B; i += blockDim.x) v[0] += part[2 * i], v[1] += part[2 * i + 1];
  strided::block_reduce<2>(v, smem, "ss");
  if (threadIdx.x != 0) return;
  if (phase == 0) {
    glob[0] = math::verl_masked_mean(v[0], v[1]);
    glob[1] = v[1];
  } else {
    glob[2] = math::verl_masked_var(v[0], glob[1]);
  }
}

// ReMax: undiscounted return-to-go minus the greedy completion's reward.
__global__ void remax_kernel(const Args a) {
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    const int64_t last = a.r2d ? -1 : last_selected(a, i);
    const double b = real_at(a.base, i);
    double run = 0.0;
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const bool sel = flag_at(a.mask, i, t);
      if (sel) run += token_reward(a, i, t, last);
      store(a.out, i, t, sel ? run - b : 0.0);
      if (a.ret.defined()) store(a.ret, i, t, run);
    }
  }
}

struct OtbSpace {
  double *G, *W, *num, *den, *L, *leader, *next, *tail, *alone;
};

__device__ OtbSpace otb_space(const Args& a) {
  const int64_t BT = a.B * a.T;
  double* w = a.ws;
  return {w,
          w + BT,
          w + 2 * BT,
          w + 3 * BT,
          w + 4 * BT,
          w + 4 * BT + a.B,
          w + 4 * BT + 2 * a.B,
          w + 4 * BT + 3 * a.B,
          w + 4 * BT + 4 * a.B};
}

// Per row: cumulative path-variance proxy W and return-to-go G at each selected token, stored by slot
// (the position t, or the token's rank among the row's selected tokens for the multi-turn variant).
__global__ void otb_rows_kernel(const Args a) {
  const OtbSpace s = otb_space(a);
  const bool compact = a.opt.estimator == Estimator::TirOptimalTokenBaseline;
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    double cum = 0.0, n = 0.0;
    for (int64_t t = 0; t < a.T; ++t) {
      if (!flag_at(a.mask, i, t)) continue;
      const double rho = a.isw.defined() ? real_at(a.isw, i, t) : 1.0;
      cum += math::otb_token_weight(real_at(a.logp, i, t), real_at(a.spp, i, t), rho);
      s.W[i * a.T + (compact ? static_cast<int64_t>(n) : t)] = cum;
      n += 1.0;
    }
    s.L[i] = n;
    const int64_t last = a.r2d ? -1 : last_selected(a, i);
    double run = 0.0;
    int64_t rank = static_cast<int64_t>(n);
    for (int64_t t = a.T - 1; t >= 0; --t) {
      if (!flag_at(a.mask, i, t)) continue;
      run += token_reward(a, i, t, last);
      --rank;
      s.G[i * a.T + (compact ? rank : t)] = run;
    }
  }
}

// Per row: its group's first row (leader), the next member in row order (-1: none), its zero-tail
// slot (-1: none) and whether it is its group's only row (rows without tokens do not count for the
// multi-turn variant), as the CPU engine decides them.
__global__ void otb_groups_kernel(const Args a) {
  const OtbSpace s = otb_space(a);
  const bool compact = a.opt.estimator == Estimator::TirOptimalTokenBaseline;
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    int64_t leader = -1, next = -1, longest = -1;
    double rows = 0.0, count_max = 0.0, lmax = -1.0, lsecond = -1.0;
    for_group(a, i, [&](int64_t j) {
      if (leader < 0) leader = j;
      if (j > i && next < 0) next = j;
      const double Lj = s.L[j];
      if (compact && !(Lj > 0.0)) return;
      rows += 1.0;
      if (Lj > lmax)
        lsecond = lmax, lmax = Lj, longest = j, count_max = 1.0;
      else if (Lj == lmax)
        count_max += 1.0, lsecond = Lj;
      else if (Lj > lsecond)
        lsecond = Lj;
    });
    const bool alone = rows == 1.0;
    const bool tail =
        math::otb_has_zero_tail(a.opt.handle_zero_tail, alone, i == longest, count_max, lmax, lsecond);
    s.leader[i] = static_cast<double>(leader);
    s.next[i] = static_cast<double>(next);
    s.tail[i] = tail ? static_cast<double>(static_cast<int64_t>(lsecond)) : -1.0;
    s.alone[i] = alone ? 1.0 : 0.0;
  }
}

// Per (group leader, slot): Σ G·W and Σ W over the group's members in row order.
__global__ void otb_sums_kernel(const Args a) {
  const OtbSpace s = otb_space(a);
  const bool compact = a.opt.estimator == Estimator::TirOptimalTokenBaseline;
  const int64_t n = a.B * a.T;
  for (int64_t e = first_index(); e < n; e += grid_stride()) {
    const int64_t l = e / a.T, slot = e % a.T;
    if (static_cast<int64_t>(s.leader[l]) != l) continue;
    double num = 0.0, den = 0.0;
    for (int64_t j = l; j >= 0; j = static_cast<int64_t>(s.next[j])) {
      const bool on = compact ? static_cast<double>(slot) < s.L[j] : flag_at(a.mask, j, slot);
      if (!on) continue;
      const int64_t k = j * a.T + slot;
      num += s.G[k] * s.W[k];
      den += s.W[k];
    }
    s.num[e] = num;
    s.den[e] = den;
  }
}

__global__ void otb_write_kernel(const Args a) {
  const OtbSpace s = otb_space(a);
  const bool compact = a.opt.estimator == Estimator::TirOptimalTokenBaseline;
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    const int64_t last = a.r2d ? -1 : last_selected(a, i);
    const int64_t base = static_cast<int64_t>(s.leader[i]) * a.T;
    const bool alone = s.alone[i] != 0.0;
    const double tail = s.tail[i];
    double run = 0.0;
    int64_t rank = static_cast<int64_t>(s.L[i]);
    for (int64_t t = a.T - 1; t >= 0; --t) {
      const bool sel = flag_at(a.mask, i, t);
      double adv = 0.0;
      if (sel) {
        run += token_reward(a, i, t, last);
        --rank;
        const int64_t slot = compact ? rank : t;
        const bool zero = alone || (tail >= 0.0 && static_cast<double>(slot) >= tail);
        adv = run - math::otb_baseline(s.num[base + slot], s.den[base + slot], a.opt.otb_epsilon, zero);
      }
      store(a.out, i, t, adv);
      if (a.ret.defined()) store(a.ret, i, t, run);
    }
  }
}

void run(const Args& a, Stream stream) {
  (void)stream;  // unused when emulated on the host
  const unsigned rows = strided::grid_for(a.B, kRowThreads);
  const Estimator e = a.opt.estimator;
  if (e == Estimator::ReinforcePP) {
    for (int phase = 0; phase < 3; ++phase) {
      GRPOKIT_LAUNCH(rpp_rows_kernel, rows, kRowThreads, stream, a, phase);
      if (phase < 2) GRPOKIT_LAUNCH(rpp_reduce_kernel, 1, kReduceThreads, stream, a, phase);
    }
  } else if (e == Estimator::Remax) {
    GRPOKIT_LAUNCH(remax_kernel, rows, kRowThreads, stream, a);
  } else if (is_optimal_token_baseline(e)) {
    GRPOKIT_LAUNCH(otb_rows_kernel, rows, kRowThreads, stream, a);
    GRPOKIT_LAUNCH(otb_groups_kernel, rows, kRowThreads, stream, a);
    GRPOKIT_LAUNCH(otb_sums_kernel, strided::grid_for(a.B * a.T, kRowThreads), kRowThreads, stream, a);
    GRPOKIT_LAUNCH(otb_write_kernel, rows, kRowThreads, stream, a);
  } else {
    GRPOKIT_LAUNCH(outcome_rows_kernel, rows, kRowThreads, stream, a);
    if (e == Estimator::Grpo && a.opt.baseline != Baseline::LeaveOneOut && a.opt.std != StdDivisor::None &&
        a.opt.std_scope == StdScope::Batch)
      GRPOKIT_LAUNCH(batch_std_kernel, 1, kReduceThreads, stream, a);
    GRPOKIT_LAUNCH(outcome_groups_kernel, rows, kRowThreads, stream, a);
    GRPOKIT_LAUNCH(outcome_finish_kernel, 1, kReduceThreads, stream, a);
  }
}

}  // namespace

int64_t estimator_workspace_size(Estimator e, int64_t B, int64_t T) {
  if (is_optimal_token_baseline(e)) return 4 * B * T + 5 * B;
  if (e == Estimator::ReinforcePP) return 2 * B + kGlobals;
  if (e == Estimator::Remax) return 0;
  return 3 * B + kGlobals;
}

void estimator_advantages(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                          const TensorView& returns, const TensorView& workspace, std::intptr_t stream) {
  check_estimator_args(in, opt, out, returns);
  GRPOKIT_CHECK_CUDA_DEVICE(in.rewards, "rewards");
  Args a;
  a.opt = opt;
  a.B = in.rewards.shape[0];
  a.T = in.mask.defined() ? in.mask.shape[1] : 0;
  a.r = strided::in_of(in.rewards);
  a.r2d = in.rewards.ndim == 2;
  a.K = (a.r2d && !is_token_estimator(opt.estimator)) ? in.rewards.shape[1] : 1;
  if (a.K > kMaxRewardColumns)
    value_error("rewards: the GPU estimators take at most ", kMaxRewardColumns, " reward columns, got ", a.K);
  if (in.reward_weights.defined()) {
    a.has_w = true;
    for (int64_t k = 0; k < a.K; ++k)
      a.w[k] = in.reward_weights.ptr<const double>()[k * in.reward_weights.strides[0]];
  }
  a.ids = strided::in_of(in.group_ids);
  a.mask = strided::in_of(in.mask);
  a.len = strided::in_of(in.lengths);
  a.base = strided::in_of(in.baseline_rewards);
  a.logp = strided::in_of(in.logp);
  a.ref = strided::in_of(in.ref_logp);
  a.spp = strided::in_of(in.sum_pi_squared);
  a.isw = strided::in_of(in.is_weights);
  a.out = strided::out_of(out);
  a.ret = strided::out_of(returns);
  const int64_t need = estimator_workspace_size(opt.estimator, a.B, a.T);
  if (need > 0)
    a.ws = device_workspace(workspace, need, "estimator_workspace_size(...)", in.rewards, "rewards");
  GRPOKIT_DEVICE_GUARD(in.rewards);
  run(a, stream_of(stream));
  GRPOKIT_CHECK_LAUNCH("estimator_advantages");
}

}  // namespace cuda
}  // namespace grpokit
