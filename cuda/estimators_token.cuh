// The token estimators on the GPU (advantages (B, T)): REINFORCE++, ReMax and the optimal token
// baseline; the pass structure is described in cuda/estimators.cu. Included by estimators.cu only.
#pragma once

#include "estimators_args.cuh"

namespace grpokit {
namespace cuda {
namespace {

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
// Launches a token estimator's passes (REINFORCE++, ReMax, the optimal token baseline).
void run_token(const Args& a, Stream stream) {
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
  } else {
    GRPOKIT_LAUNCH(otb_rows_kernel, rows, kRowThreads, stream, a);
    GRPOKIT_LAUNCH(otb_groups_kernel, rows, kRowThreads, stream, a);
    GRPOKIT_LAUNCH(otb_sums_kernel, strided::grid_for(a.B * a.T, kRowThreads), kRowThreads, stream, a);
    GRPOKIT_LAUNCH(otb_write_kernel, rows, kRowThreads, stream, a);
  }
}

}  // namespace
}  // namespace cuda
}  // namespace grpokit
