// The advantage estimators of cpp/src/estimators.cpp on the GPU, from the same per-element formulas
// (grpokit/math/estimators.hpp, grpokit/math/advantages.hpp).
//
// Outcome estimators (advantages (B,)):
//   1. rows    (thread per row): combined reward R_i (weighted nansum of K columns; RLOO's clip and
//              KL-in-reward), row length L_i (mask, lengths or 1).
//   2. batch   (one block, GRPO with a batch std, the batch mean, the running estimator): the batch
//              sums and σ of R; the running moments merged with them (the new state written there).
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
#include "estimators_token.cuh"

namespace grpokit {
namespace cuda {
namespace {

using namespace strided;  // NOLINT(build/namespaces): the kernels' array accessors

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

// The batch statistics of R, in the scaled domain of the largest |R| (as the CPU engine): the sums
// (math::MomentSums: shift, sum, n, scale into globals[2..5]) and, with a batch σ, that σ in units of
// the scale into globals[0] — GRPO's around the batch mean, or AReaL's around the batch mean (or the
// leave-one-out means) for the batch-mean estimator.
__device__ math::MomentSums batch_sums(const double* glob) {
  math::MomentSums s;
  s.shift = glob[2], s.sum = glob[3], s.n = glob[4], s.scale = glob[5];
  return s;
}

// Row i's centred R in units of the batch scale (the batch-mean estimator; NaN for NaN R).
__device__ double batch_centred(const Args& a, const math::MomentSums& b, double r) {
  if (math::is_nan(r) || a.opt.baseline != Baseline::LeaveOneOut) return b.centred(r);
  return b.n > 1.0 ? b.loo_centred(r) : r / b.scale;  // AReaL: a lone value's leave-one-out mean is 0
}

__global__ void batch_kernel(const Args a) {
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
  double mx[1] = {0.0};
  for (int64_t i = t; i < a.B; i += n) mx[0] = fmax(mx[0], fabs(R[i]));  // fmax drops NaN
  strided::block_reduce<1>(mx, smem, "x");
  math::MomentSums s;
  s.scale = math::pow2_scale(mx[0]);
  s.shift = shift;
  double v[2] = {0.0, 0.0};
  for (int64_t i = t; i < a.B; i += n)
    if (!math::is_nan(R[i])) v[0] += s.diff(R[i]), v[1] += 1.0;
  strided::block_reduce<2>(v, smem, "ss");
  s.sum = v[0];
  s.n = v[1];
  const bool areal = a.opt.estimator == Estimator::BatchMean, sample = a.opt.std == StdDivisor::Sample;
  math::SquaredDeviations m2;
  for (int64_t i = t; i < a.B; i += n)
    if (!math::is_nan(R[i])) m2.add(areal ? batch_centred(a, s, R[i]) : s.centred(R[i]));
  const math::SquaredDeviations total = block_merge_sq_dev(m2, smem);
  if (t == 0) {
    glob[0] = areal ? math::areal_std(total, s.n, sample, s.scale) : math::std_from_m2(total, s.n, sample);
    glob[1] = s.scale;
    glob[2] = s.shift, glob[3] = s.sum, glob[4] = s.n, glob[5] = s.scale;
    if (a.opt.estimator == Estimator::Running) {  // ROLL: the caller's state updated with the batch
      math::RunningMoments m{a.opt.running_count, a.opt.running_mean, a.opt.running_std};
      if (a.opt.running_update) m.merge(math::batch_moments(s, total));
      glob[6] = m.mean;
      glob[7] = a.opt.std == StdDivisor::None ? -1.0 : m.divisor_std(sample);
      if (a.ret.p != nullptr)
        store(a.ret, 0, 0, m.count), store(a.ret, 1, 0, m.mean), store(a.ret, 2, 0, m.std);
    }
  }
}

// Group std in units of s.scale of column values x(j) over the valid members (the CPU's group_std;
// -1: no divisor).
template <class X>
__device__ double group_std(const Args& a, int64_t i, const math::MomentSums& s, X&& x) {
  if (a.opt.std == StdDivisor::None) return -1.0;
  math::SquaredDeviations m2;
  for_group(a, i, [&](int64_t j) { math::add_sq_dev(m2, x(j), s); });
  return math::std_from_m2(m2, s.n, a.opt.std == StdDivisor::Sample);
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
        double scale = -1.0, in_units = s.scale;
        if (sd != StdDivisor::None && o.std_scope == StdScope::Batch) {
          scale = glob[0], in_units = glob[1];
        } else if (sd != StdDivisor::None) {
          math::SquaredDeviations m2;
          for_group(a, i, [&](int64_t j) { math::add_sq_dev(m2, R[j], s); });
          scale = math::std_from_m2(m2, s.n, sd == StdDivisor::Sample);
        }
        Ai = math::group_advantage(Ri, s, loo, scale, in_units, o.epsilon);
        break;
      }
      case Estimator::Rloo:
        // A lone scorable completion has no leave-one-out baseline (TRL: 0/0 = NaN, then 0).
        if (s.n >= 2.0 && !math::is_nan(Ri)) Ai = math::group_advantage(Ri, s, true, -1.0, 1.0, 0.0);
        break;
      case Estimator::ReinforcePPBaseline:
      case Estimator::Gpg:  // GPG's α is applied by the finish kernel (it needs the whole batch)
        if (!math::is_nan(Ri)) Ai = math::unscale(s.centred(Ri), s.scale);
        break;
      case Estimator::Opo: {
        double num = 0.0, den = 0.0;  // Σ L R in units of the group's scale: finite
        for_group(a, i, [&](int64_t j) {
          if (!math::is_nan(R[j])) num += L[j] * (R[j] / s.scale), den += L[j];
        });
        if (den != 0.0 && !math::is_nan(Ri))
          Ai = math::unscale(Ri / s.scale - math::opo_baseline(num, den), s.scale);
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
        const double gap = Ri / s.scale - second / s.scale;
        Ai = math::scaled_advantage(gap, s.scale, group_std(a, i, s, rew), s.scale, o.epsilon);
        break;
      }
      case Estimator::MaxRl:  // SkyRL: a lone completion's μ is 0
        if (!math::is_nan(Ri))
          Ai = s.n <= 1.0 ? Ri : math::maxrl_advantage(s.centred(Ri), s.mean_scaled(), s.scale, o.epsilon);
        break;
      case Estimator::BatchMean: {
        const math::MomentSums b = batch_sums(glob);
        double sd = o.std == StdDivisor::None ? -1.0 : glob[0];
        if (o.std != StdDivisor::None && o.std_scope == StdScope::Group) {
          math::SquaredDeviations m2;
          double cnt = 0.0;
          for_group(a, i, [&](int64_t j) {
            if (!math::is_nan(R[j])) m2.add(batch_centred(a, b, R[j])), cnt += 1.0;
          });
          sd = math::areal_std(m2, cnt, o.std == StdDivisor::Sample, b.scale);
        }
        if (!math::is_nan(Ri))
          Ai = math::scaled_advantage(batch_centred(a, b, Ri), b.scale, sd, b.scale, o.epsilon);
        break;
      }
      case Estimator::Running:  // the running mean and σ from the batch kernel
        if (!math::is_nan(Ri)) Ai = math::running_advantage(Ri, glob[6], glob[7], o.epsilon);
        break;
      case Estimator::NormalizeThenSum: {
        double S = 0.0;
        for (int64_t k = 0; k < a.K; ++k) {
          auto col = [&](int64_t j) { return real_at(a.r, j, k); };
          math::MomentSums c;
          for_group(a, i, [&](int64_t j) { c.add(col(j)); });
          const double sd = group_std(a, i, c, col);
          S += (a.has_w ? a.w[k] : 1.0) * math::group_advantage(col(i), c, false, sd, c.scale, o.epsilon);
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
  // The statistics in the scaled domain of the largest |A| (as the CPU's batch_normalise).
  double mx[1] = {0.0};
  for (int64_t i = t; i < a.B; i += n) mx[0] = fmax(mx[0], fabs(A[i]));  // fmax drops NaN
  strided::block_reduce<1>(mx, smem, "x");
  const double sc = math::pow2_scale(mx[0]);
  if (o.batch_norm == BatchNorm::Standardise) {
    double v[2] = {0.0, 0.0};
    for (int64_t i = t; i < a.B; i += n)
      if (!math::is_nan(A[i])) v[0] += A[i] / sc, v[1] += 1.0;
    strided::block_reduce<2>(v, smem, "ss");
    const double cnt = v[1], mean = cnt > 0.0 ? v[0] / cnt : 0.0;
    math::SquaredDeviations m2;
    for (int64_t i = t; i < a.B; i += n)
      if (!math::is_nan(A[i])) m2.add(A[i] / sc - mean);
    const math::SquaredDeviations total = block_merge_sq_dev(m2, smem);
    const double sd = math::std_from_m2(total, cnt, true);
    for (int64_t i = t; i < a.B; i += n)
      store(a.out, i, 0, math::batch_standardised(A[i] / sc, mean, sd, cnt, o.final_epsilon / sc));
  } else if (o.batch_norm == BatchNorm::MaskedWhiten) {
    // verl_F.masked_whiten of the (B, T) broadcast A_i·m_it: rows weigh by their length L_i.
    double v[2] = {0.0, 0.0};
    for (int64_t i = t; i < a.B; i += n)
      if (!math::is_nan(A[i])) v[0] += L[i] * (A[i] / sc), v[1] += L[i];
    strided::block_reduce<2>(v, smem, "ss");
    const double cnt = v[1], mean = math::verl_masked_mean(v[0], cnt);
    double ss[1] = {0.0};
    for (int64_t i = t; i < a.B; i += n)
      if (!math::is_nan(A[i])) ss[0] += L[i] * (A[i] / sc - mean) * (A[i] / sc - mean);
    strided::block_reduce<1>(ss, smem, "s");
    const double var = math::verl_masked_var(ss[0], cnt);
    // ≤ 1 selected token has no variance (the CPU engine raises): every advantage is 0.
    for (int64_t i = t; i < a.B; i += n)
      store(a.out, i, 0,
            (math::is_nan(A[i]) || cnt <= 1.0) ? 0.0 : math::verl_whiten(A[i] / sc, mean, var, sc));
  } else {
    for (int64_t i = t; i < a.B; i += n) store(a.out, i, 0, math::is_nan(A[i]) ? 0.0 : A[i]);
  }
}

void run(const Args& a, Stream stream) {
  (void)stream;  // unused when emulated on the host
  if (is_token_estimator(a.opt.estimator)) return run_token(a, stream);
  const unsigned rows = strided::grid_for(a.B, kRowThreads);
  const Estimator e = a.opt.estimator;
  GRPOKIT_LAUNCH(outcome_rows_kernel, rows, kRowThreads, stream, a);
  if ((e == Estimator::Grpo && a.opt.baseline != Baseline::LeaveOneOut && a.opt.std != StdDivisor::None &&
       a.opt.std_scope == StdScope::Batch) ||
      e == Estimator::BatchMean || e == Estimator::Running)
    GRPOKIT_LAUNCH(batch_kernel, 1, kReduceThreads, stream, a);
  GRPOKIT_LAUNCH(outcome_groups_kernel, rows, kRowThreads, stream, a);
  GRPOKIT_LAUNCH(outcome_finish_kernel, 1, kReduceThreads, stream, a);
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
