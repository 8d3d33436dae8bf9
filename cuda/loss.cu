// The unified surrogate loss on the GPU: the CPU engine's passes, one kernel each.
//
//   1. stats   (grid = B rows, one block per row): row statistics (L_i, u_i, ⟨H⟩_i, OPSM divergence,
//              sampler IS log-weight, VESPO's W_i) from math::row_sums_add, fixed-order block tree.
//   2. counts  (one block): token / row counts, every row's aggregation coefficient c_i
//              (math::agg_counts, math::agg_coefficient); optional device-side input checks.
//   3. tokens  (grid = B rows): math::weight_rule + math::token_term per token, writes the gradients
//              and per-token outputs, reduces the row's loss and metric sums, then (sequence-level
//              rules only) distributes ∂/∂u_i and ∂/∂⟨H⟩_i over the row in a second sweep.
//   4. finish  (one block): loss and metrics from the per-row results, fixed order.
//
// With top_entropy_quantile < 1 (TRL's top-entropy masking), between 2 and 3 the threshold is found on
// the device, with no host sync: a radix select over order-preserving unsigned keys of the valid
// tokens' entropies (8 bits per pass: a histogram kernel with integer atomics, then a one-block kernel
// that picks the bucket of the lo-th and (lo+1)-th smallest) gives those two values exactly, and the
// threshold is the CPU engine's linear interpolation of them in double, so it is the same bits; a last
// pass counts the tokens kept (H ≥ threshold), the normaliser of TRL's entropy bonus.
//
// Rows are blocks and tokens are a block-stride loop, so no grid dimension grows with T (T = 65,536
// and beyond work; B is limited only by gridDim.x ≤ 2^31 − 1). Every reduction has a fixed order
// (thread-strided partial sums, then a fixed shuffle/shared-memory tree; rows reduced by one block),
// so results are bitwise reproducible run to run. Per-token math runs in float for float32/bfloat16/
// float16 inputs (double for float64); per-row and global values are kept in double. Nothing is
// allocated: the caller passes a float64 workspace (loss_workspace_size) and, for value checks, an
// int64 (4,) status buffer. Nothing synchronises the host.
#if !defined(GRPOKIT_CUDA_EMULATE)  // tests/cuda_emulation/emulate_loss.cpp runs the kernels on host threads
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#endif

#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#if !defined(GRPOKIT_CUDA_EMULATE)
#include "common.cuh"
#endif
#include "grpokit/loss.hpp"
#include "grpokit/math/strided.hpp"
#include "grpokit/math/loss_passes.hpp"
#include "grpokit/math/metric_sums.hpp"
#include "grpokit/loss_metrics.hpp"
#include "grpokit_cuda.hpp"
#include "launch.cuh"
#include "loss_args.cuh"
#include "loss_select.cuh"
#include "reduce.cuh"

namespace grpokit {
namespace cuda {
namespace {

// ---- 1. row statistics -----------------------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(kRowThreads) stats_kernel(const Args a) {
  using C = typename Compute<T>::type;
  __shared__ double smem_raw[8 * 32];
  C* smem = reinterpret_cast<C*>(smem_raw);
  const int64_t i = blockIdx.x;
  const RowRange rr = row_range(a, i);
  const RowAddr am = addr(a, a.mask.s0, a.mask.s1, i, rr);
  const RowAddr al = addr(a, a.lp.s0, a.lp.s1, i, rr), ao = addr(a, a.old.s0, a.old.s1, i, rr);
  const RowAddr aa = a.adv_row ? RowAddr{i * a.adv.s0, 0} : addr(a, a.adv.s0, a.adv.s1, i, rr);
  const RowAddr ae = addr(a, a.ent.s0, a.ent.s1, i, rr), as = addr(a, a.smp.s0, a.smp.s1, i, rr);
  // Read only what a statistic in use needs (token-level rules read the mask alone): the row mean of
  // A feeds GMPO only, ⟨H⟩_i GTPO only; what is not read enters the sums as 0 and is never used.
  const math::PassFlags& f = a.f;
  const bool need_lo = f.need_u || f.use_is || f.opsm, need_l = f.need_u || f.opsm;
  const bool need_adv = f.need_u || f.gmpo, need_h = f.gtpo_h, need_smp = f.has_smp && (f.use_is || f.opsm);
  const bool need_sel = a.s.selection == math::Selection::PositiveNll && a.sel.p != nullptr;
  const RowAddr asel = addr(a, a.sel.s0, a.sel.s1, i, rr);
  math::RowSums<C> s{};
  C n_sel = C(0);  // valid selected tokens (VAPO's NLL)
  int64_t first = rr.len;
  for (int64_t t = threadIdx.x; t < rr.len; t += blockDim.x) {
    if (a.mask.p && !flag_at(a.mask.p, a.mask_dt, am.base + t * am.step)) continue;
    if (first == rr.len) first = t;
    const C l = need_l ? C(ld<T>(a.lp, al, t)) : C(0);
    const C lo = need_lo ? (f.has_old ? C(ld<T>(a.old, ao, t)) : C(ld<T>(a.lp, al, t))) : l;
    const C adv = need_adv ? C(ld<T>(a.adv, aa, t)) : C(0);
    const C h = need_h ? C(ld<T>(a.ent, ae, t)) : C(0);
    const C smp = need_smp ? C(ld<T>(a.smp, as, t)) : C(0);
    math::row_sums_add<C, C>(a.s, f, s, l, lo, adv, h, smp);
    if (need_sel && flag_at(a.sel.p, a.sel_dt, asel.base + t * asel.step)) n_sel += C(1);
  }
  C v[8] = {s.n, s.su, s.svw, s.sh, s.sa, s.sis, s.sop, n_sel};
  block_reduce(v, smem, Sum{}, C(0));
  long long fv[1] = {static_cast<long long>(first)};
  __shared__ long long smem_first[32];
  block_reduce(fv, smem_first, Min{}, static_cast<long long>(rr.len));
  if (threadIdx.x == 0) {
    const math::RowSums<C> tot{v[0], v[1], v[2], v[3], v[4], v[5], v[6]};
    const math::RowStats r = math::row_stats_finish<C>(a.s, tot);
    double* o = a.st + i * kNumStat;
    o[kL] = r.L;
    o[kU] = r.u;
    o[kHbar] = r.hbar;
    o[kAbar] = r.abar;
    o[kSumIsLog] = r.sum_is_log;
    o[kOpsmDiv] = r.opsm_div;
    o[kVespoLogw] = r.vespo_logw;
    o[kFirst] = static_cast<double>(fv[0]);
    o[kNSel] = static_cast<double>(v[7]);
  }
}

// ---- 2. counts and aggregation coefficients ----------------------------------------------------------

struct RowTokens {  // row j's valid-token count, for math::group_tokens
  const double* st;
  __device__ double operator()(int64_t j) const { return st[j * kNumStat + kL]; }
};

__global__ void __launch_bounds__(kReduceThreads) counts_kernel(const Args a) {
  __shared__ double smem[3 * 32];
  __shared__ double shared_counts[2];
  double v[3] = {0.0, 0.0, 0.0};
  for (int64_t i = threadIdx.x; i < a.B; i += blockDim.x) {
    const double L = a.st[i * kNumStat + kL];
    v[0] += L;
    v[1] += L > 0.0 ? 1.0 : 0.0;
    v[2] += a.st[i * kNumStat + kNSel];
  }
  block_reduce(v, smem, Sum{}, 0.0);
  if (threadIdx.x == 0) {
    shared_counts[0] = v[0];
    shared_counts[1] = v[1];
    a.glob[gNTok] = v[0];
    a.glob[gNNonEmpty] = v[1];
    a.glob[gEntC] = math::entropy_local_coefficient(a.s, v[0]);
    if (a.status) {
      a.status[0] = kNoError;
      a.status[1] = static_cast<unsigned long long>(v[0]);
      a.status[2] = kNoError;
    }
  }
  __syncthreads();
  const math::AggCounts k =
      math::agg_counts(a.s, shared_counts[0], shared_counts[1], static_cast<double>(a.B));
  if (threadIdx.x == 0) a.glob[gNllC] = math::nll_coefficient(a.s, k, v[2]);
  const RowTokens row_tokens{a.st};
  for (int64_t i = threadIdx.x; i < a.B; i += blockDim.x)
    a.st[i * kNumStat + kC] = math::agg_coefficient(a.s, k, a.st[i * kNumStat + kL], static_cast<double>(a.T),
                                                    math::group_tokens(a.s, row_tokens, i));
  if (a.status && a.packed) {  // cu_seqlens: starts at 0, non-decreasing, ends at N (key: k·4 + code)
    __syncthreads();  // status[2] initialised above
    for (int64_t j = threadIdx.x; j <= a.B; j += blockDim.x) {
      const int64_t cj = cu_at(a, j);
      unsigned long long code = 0;
      if (j == 0 && cj != 0)
        code = 1;
      else if (j > 0 && cj < cu_at(a, j - 1))
        code = 2;
      else if (j == a.B && cj != a.N)
        code = 3;
      if (code) atomicMin(&a.status[2], static_cast<unsigned long long>(j) * 4ull + code);
    }
  }
}

// ---- 3. per-token terms ------------------------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(kRowThreads) tokens_kernel(const Args a) {
  using C = typename Compute<T>::type;
  using Sums = math::MetricSums<C>;
  __shared__ double smem_raw[Sums::kNumSums * 32];
  __shared__ C bcast[3];
  C* smem = reinterpret_cast<C*>(smem_raw);
  const LossSpec& s = a.s;
  const math::PassFlags& f = a.f;
  const int64_t i = blockIdx.x;
  const double* st = a.st + i * kNumStat;
  const RowRange rr = row_range(a, i);
  const RowAddr am = addr(a, a.mask.s0, a.mask.s1, i, rr);
  const RowAddr al = addr(a, a.lp.s0, a.lp.s1, i, rr), ao = addr(a, a.old.s0, a.old.s1, i, rr);
  const RowAddr aa = a.adv_row ? RowAddr{i * a.adv.s0, 0} : addr(a, a.adv.s0, a.adv.s1, i, rr);
  const RowAddr ar = addr(a, a.ref.s0, a.ref.s1, i, rr), ae = addr(a, a.ent.s0, a.ent.s1, i, rr);
  const RowAddr as = addr(a, a.smp.s0, a.smp.s1, i, rr), aw = addr(a, a.tw.s0, a.tw.s1, i, rr);
  const RowAddr ag = addr(a, a.g.s0, a.g.s1, i, rr), agh = addr(a, a.gh.s0, a.gh.s1, i, rr);
  const RowAddr apt = addr(a, a.pt.s0, a.pt.s1, i, rr), aom = addr(a, a.om.s0, a.om.s1, i, rr);
  const RowAddr asel = addr(a, a.sel.s0, a.sel.s1, i, rr);
  T* g = static_cast<T*>(a.g.p);
  T* gh = static_cast<T*>(a.gh.p);
  T* pt = static_cast<T*>(a.pt.p);
  T* om = static_cast<T*>(a.om.p);

  const bool keep = a.keep.p ? flag_at(a.keep.p, a.keep_dt, i * a.keep.s0) : true;
  const C c = static_cast<C>(st[kC]);
  // TRL's local coefficient counts the kept tokens under top-entropy masking (the CPU engine's rule)
  const double cH_d = s.entropy_aggregation == math::EntropyAggregation::Policy ? st[kC]
                      : a.esel ? math::entropy_local_coefficient(s, static_cast<double>(a.esel->n_kept))
                               : a.glob[gEntC];
  const C cH = static_cast<C>(cH_d);
  const bool opsm_high = math::opsm_row_masked(s, f, st[kOpsmDiv]);
  const C seq_w_is = math::row_sampler_weight<C>(s, f, st[kSumIsLog]);
  const int64_t first = static_cast<int64_t>(st[kFirst]);
  const double L = st[kL];

  math::TokenIn<C> ti{};
  ti.u = static_cast<C>(st[kU]);
  ti.hbar = static_cast<C>(st[kHbar]);
  ti.keep = keep ? C(1) : C(0);
  const C abar = static_cast<C>(st[kAbar]);

  // sums: φ, ∂/∂u, ω_u, ∂/∂⟨H⟩, H of the tokens the entropy rule keeps, VAPO's NLL; and the metric sums
  C v[6] = {};
  const C nll_c = static_cast<C>(a.glob[gNllC]);
  Sums ms = Sums::zero();
  unsigned long long bad = kNoError;
  for (int64_t t = threadIdx.x; t < rr.len; t += blockDim.x) {
    if (a.mask.p && !flag_at(a.mask.p, a.mask_dt, am.base + t * am.step)) {
      if (g) g[ag.base + t * ag.step] = from_compute<T>(C(0));
      if (gh) gh[agh.base + t * agh.step] = from_compute<T>(C(0));
      if (pt) pt[apt.base + t * apt.step] = from_compute<T>(C(0));
      if (om) om[aom.base + t * aom.step] = from_compute<T>(C(0));
      continue;
    }
    ti.logp = ld<T>(a.lp, al, t);
    ti.old_logp = f.has_old ? C(ld<T>(a.old, ao, t)) : ti.logp;
    const C adv_raw = ld<T>(a.adv, aa, t);
    ti.adv = f.gmpo ? abar : adv_raw;
    if (f.vespo)  // the sign of A picks (k, λ): per token, as the CPU engine
      ti.row_w_is = math::vespo_weight<C>(C(st[kVespoLogw]), ti.adv, C(s.vespo_k_pos), C(s.vespo_lambda_pos),
                                          C(s.vespo_k_neg), C(s.vespo_lambda_neg));
    ti.ref_logp = f.has_ref ? C(ld<T>(a.ref, ar, t)) : C(0);
    ti.token_weight = f.has_tw ? C(ld<T>(a.tw, aw, t)) : C(1);
    ti.selected = a.sel.p != nullptr && flag_at(a.sel.p, a.sel_dt, asel.base + t * asel.step);
    const C h = f.has_ent ? C(ld<T>(a.ent, ae, t)) : C(0);
    const C smp = f.has_smp ? C(ld<T>(a.smp, as, t)) : C(0);
    if (a.status && bad == kNoError) {  // first bad input at this thread's first bad token
      int code = -1;
      if (!math::is_finite_v(ti.logp))
        code = bLogp;
      else if (!math::is_finite_v(ti.old_logp))
        code = bOld;
      else if (!math::is_finite_v(adv_raw))
        code = bAdv;
      else if (f.has_ref && !math::is_finite_v(ti.ref_logp))
        code = bRef;
      else if (!math::is_finite_v(ti.token_weight))
        code = bTw;
      else if (f.has_ent && !math::is_finite_v(h))
        code = bEnt;
      else if (f.has_smp && (smp == C(INFINITY) || smp == C(-INFINITY)))
        code = bSmp;
      if (code >= 0)
        bad = ((static_cast<unsigned long long>(i) << 32) + static_cast<unsigned long long>(t)) * kNumBad +
              code;
    }

    C wis;
    const bool hk = !f.has_ent || entropy_kept(a, static_cast<double>(h));
    ti.w = math::weight_rule<C>(s, f, ti.keep, ti.token_weight, adv_raw, opsm_high, hk, seq_w_is, ti.old_logp,
                                smp, &wis);
    const math::TokenOut<C> o = math::token_term<C>(s, ti);
    v[0] += o.phi;
    v[1] += c * o.d_u;
    v[2] += c * o.omega_u;
    v[3] += c * o.d_hbar;
    C d_logp = c * o.d_logp;
    if (ti.selected && nll_c != C(0)) {  // VAPO's NLL, outside φ and c_i (the CPU engine's order)
      const math::ValueGrad<C> nll = math::positive_nll<C>(ti.logp, nll_c);
      v[5] += nll.v;
      d_logp += nll.d;
    }
    if (g) g[ag.base + t * ag.step] = from_compute<T>(d_logp);
    if (om) om[aom.base + t * aom.step] = from_compute<T>(c * o.omega_direct);
    if (pt) pt[apt.base + t * apt.step] = from_compute<T>(o.phi);
    if (gh)
      gh[agh.base + t * agh.step] =
          from_compute<T>(s.entropy_coef != 0.0 && hk ? -C(s.entropy_coef) * cH : C(0));
    if (hk) v[4] += h;
    if (f.use_is && !f.vespo) ms.add_is_weight(wis);
    ms.add_token(o, !a.per_row_ratio || t == first, ti.logp, ti.old_logp, h);
    if (f.vespo && t == first) ms.add_row_weight(ti.row_w_is);
  }
  if (a.status && bad != kNoError) atomicMin(&a.status[0], bad);
  block_reduce(v, smem, Sum{}, C(0));
  block_reduce(ms.sum, smem, Sum{}, C(0));
  block_reduce(ms.min, smem, Min{}, C(INFINITY));
  block_reduce(ms.max, smem, Max{}, C(-INFINITY));
  if (threadIdx.x == 0) {
    RowResult& o = a.acc[i];
    // the row's loss, entropy bonus included (cH: the policy coefficient or TRL's local one)
    o.loss = st[kC] * static_cast<double>(v[0]) + static_cast<double>(v[5]) -
             (s.entropy_coef != 0.0 ? s.entropy_coef * cH_d * static_cast<double>(v[4]) : 0.0);
    o.m = Metrics::zero();
    o.m.merge(ms);
    o.m.row_done(a.per_row_ratio);
    bcast[0] = v[1];
    bcast[1] = v[2];
    bcast[2] = v[3];
  }
  // distribute ∂/∂u_i and ∂/∂⟨H⟩_i over the row (the CPU engine's order: direct part, then this)
  if (!((f.u_grad || f.gtpo_h) && L > 0.0)) return;
  __syncthreads();
  const C Gu = bcast[0], Wu = bcast[1], Gh = bcast[2] / C(L);
  const C scale_u = math::row_log_ratio_scale<C>(s, static_cast<int64_t>(L));
  for (int64_t t = threadIdx.x; t < rr.len; t += blockDim.x) {
    if (a.mask.p && !flag_at(a.mask.p, a.mask_dt, am.base + t * am.step)) continue;
    if (f.u_grad) {
      const C l = ld<T>(a.lp, al, t);
      const C lo = f.has_old ? C(ld<T>(a.old, ao, t)) : l;
      const C adv = ld<T>(a.adv, aa, t);  // raw A_{i,t}, as pass A and the CPU engine
      const C du = math::row_log_ratio_term<C>(s, l, lo, adv).d * scale_u;
      if (g) {
        T& x = g[ag.base + t * ag.step];
        x = from_compute<T>(to_compute(x) + Gu * du);
      }
      if (om) {
        T& x = om[aom.base + t * aom.step];
        x = from_compute<T>(to_compute(x) + Wu * du);
      }
    }
    if (f.gtpo_h && gh) {
      T& x = gh[agh.base + t * agh.step];
      x = from_compute<T>(to_compute(x) + Gh);
    }
  }
}

// ---- 4. loss and metrics ------------------------------------------------------------------------------

template <class T>
__global__ void __launch_bounds__(kReduceThreads) finish_kernel(const Args a) {
  __shared__ double smem[Metrics::kNumSums * 32];
  double loss[1] = {0.0};
  Metrics tot = Metrics::zero();
  for (int64_t i = threadIdx.x; i < a.B; i += blockDim.x) {
    loss[0] += a.acc[i].loss;
    tot.merge(a.acc[i].m);
  }
  block_reduce(loss, smem, Sum{}, 0.0);
  block_reduce(tot.sum, smem, Sum{}, 0.0);
  block_reduce(tot.min, smem, Min{}, static_cast<double>(INFINITY));
  block_reduce(tot.max, smem, Max{}, static_cast<double>(-INFINITY));
  if (threadIdx.x != 0) return;
  *static_cast<T*>(a.loss) = from_compute<T>(static_cast<typename Compute<T>::type>(loss[0]));
  if (!a.metrics) return;
  double vals[kNumMetrics];
  tot.finish(a.per_row_ratio, a.B, vals);
  for (int k = 0; k < a.n_metrics; ++k) a.metrics[k * a.metrics_s] = vals[a.metric_ids[k]];
}

// ---- host side -------------------------------------------------------------------------------------

template <class A>  // Arr (inputs) or OutArr (outputs): data and the two leading strides
A strided(const TensorView& v) {
  A x;
  if (!v.defined()) return x;
  x.p = v.data;
  x.s0 = v.strides[0];
  x.s1 = v.ndim > 1 ? v.strides[1] : 0;
  return x;
}
Arr arr(const TensorView& v) { return strided<Arr>(v); }
OutArr out_arr(const TensorView& v) { return strided<OutArr>(v); }

template <class T>
void launch(const Args& a, cudaStream_t stream) {
  const unsigned rows = static_cast<unsigned>(a.B);
  GRPOKIT_LAUNCH(stats_kernel<T>, rows, kRowThreads, stream, a);
  GRPOKIT_LAUNCH(counts_kernel, 1, kReduceThreads, stream, a);
  if (a.esel) {
    GRPOKIT_LAUNCH(select_init_kernel, 1, kReduceThreads, stream, a);
    for (int pass = 0; pass < RadixKey<typename Compute<T>::type>::kBits / kRadixBits; ++pass) {
      GRPOKIT_LAUNCH(select_hist_kernel<T>, rows, kRowThreads, stream, a, pass);
      GRPOKIT_LAUNCH(select_pick_kernel<T>, 1, kReduceThreads, stream, a, pass);
    }
    GRPOKIT_LAUNCH(select_count_kernel<T>, rows, kRowThreads, stream, a);
  }
  GRPOKIT_LAUNCH(tokens_kernel<T>, rows, kRowThreads, stream, a);
  GRPOKIT_LAUNCH(finish_kernel<T>, 1, kReduceThreads, stream, a);
}

}  // namespace

int64_t loss_workspace_size(int64_t num_rows) {
  return num_rows * (int64_t(kNumStat) + int64_t(kNumAcc)) + int64_t(kNumGlobal) + kSelectDoubles;
}

void policy_loss(const LossSpec& spec, const LossInputs& in, const LossOutputs& out, int /*num_threads*/,
                 std::intptr_t stream) {
  check_loss_args_any_float(spec, in, out);
  if (!std::isnan(spec.m2_threshold))  // its batch-level selection is written for the CPU engine only
    value_error("m2_threshold: M2PO runs on the CPU engine only for now; pass CPU arrays (got CUDA ones)");
#if !defined(GRPOKIT_CUDA_EMULATE)
  check_cuda_device(in.logp, "logp");
#endif
  Args a;
  a.s = spec;
  a.packed = in.cu_seqlens.defined();
  if (a.packed) {
    a.B = in.cu_seqlens.shape[0] - 1;
    a.N = in.logp.shape[0];
    a.cu = in.cu_seqlens.data;
    a.cu64 = in.cu_seqlens.dtype == DType::Int64;
    a.cu_s = in.cu_seqlens.strides[0];
  } else {
    a.B = in.logp.shape[0];
    a.T = in.logp.shape[1];
  }
  if (a.B > 0x7FFFFFFF) value_error("logp: at most 2^31 − 1 completions per call on the GPU, got ", a.B);
  // workspace and status
  const TensorView& ws = out.workspace;
  if (!ws.defined()) value_error("workspace: required on the GPU (float64, loss_workspace_size(B) elements)");
  check_dtype(ws, "workspace", {DType::Float64});
  check_ndim(ws, "workspace", {1});
  check_same_device(ws, "workspace", in.logp, "logp");
  check_writable(ws, "workspace");
  if (ws.strides[0] != 1 || ws.shape[0] < loss_workspace_size(a.B))
    value_error("workspace: expected a contiguous float64 array of at least ", loss_workspace_size(a.B),
                " elements, got shape ", ws.shape_str());
  if (out.status.defined()) {
    check_dtype(out.status, "status", {DType::Int64});
    check_same_device(out.status, "status", in.logp, "logp");
    check_writable(out.status, "status");
    if (out.status.numel() < 4 || out.status.strides[0] != 1)
      value_error("status: expected a contiguous int64 array of 4 elements, got shape ",
                  out.status.shape_str());
    if (a.B >= (int64_t(1) << 27))
      value_error("check_finite: supports at most 2^27 completions per call, got ", a.B);
    a.status = static_cast<unsigned long long*>(out.status.data);
  }
  a.f = math::pass_flags(spec, in.old_logp.defined(), in.entropies.defined(), in.sampling_logp.defined(),
                         in.ref_logp.defined(), in.token_weights.defined());
  a.lp = arr(in.logp);
  a.old = arr(in.old_logp);
  a.adv = arr(in.advantages);
  a.adv_row = in.advantages.ndim == 1 && (!a.packed || in.advantages.shape[0] != in.logp.shape[0]);
  a.ref = arr(in.ref_logp);
  a.ent = arr(in.entropies);
  a.smp = arr(in.sampling_logp);
  a.tw = arr(in.token_weights);
  a.mask = arr(in.mask);
  a.mask_dt = in.mask.dtype;
  a.keep = arr(in.keep);
  a.keep_dt = in.keep.dtype;
  a.sel = arr(in.selection);
  a.sel_dt = in.selection.dtype;
  a.g = out_arr(out.grad_logp);
  a.gh = out_arr(out.grad_entropy);
  a.pt = out_arr(out.per_token);
  a.om = out_arr(out.weights);
  a.loss = out.loss.data;
  a.per_row_ratio = math::ratio_metrics_per_row(spec);
  if (out.metrics.defined()) {
    a.metrics = out.metrics.ptr<double>();
    a.metrics_s = out.metrics.strides[0];
    const std::vector<int> ids = loss_metric_ids(spec, in);  // the CPU engine's own choice of metrics
    a.n_metrics = static_cast<int>(ids.size());
    for (size_t k = 0; k < ids.size(); ++k) {
      a.metric_ids[k] = ids[k];
    }
  }
  double* w = ws.ptr<double>();
  a.st = w;
  a.acc = reinterpret_cast<RowResult*>(w + a.B * kNumStat);
  a.glob = w + a.B * (kNumStat + kNumAcc);
  if (spec.top_entropy_quantile < 1.0)  // check_loss_args made entropies required
    a.esel = reinterpret_cast<SelectState*>(a.glob + kNumGlobal);

  GRPOKIT_DEVICE_GUARD(in.logp);
  const Stream s = stream_of(stream);
  switch (in.logp.dtype) {
    case DType::Float32:
      launch<float>(a, s);
      break;
    case DType::Float64:
      launch<double>(a, s);
      break;
    case DType::BFloat16:
      launch<__nv_bfloat16>(a, s);
      break;
    case DType::Float16:
      launch<__half>(a, s);
      break;
    default:
      type_error("logp: unsupported dtype ", dtype_name(in.logp.dtype));
  }
  GRPOKIT_CHECK_LAUNCH("policy_loss");
}

}  // namespace cuda
}  // namespace grpokit
