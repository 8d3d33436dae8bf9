// The train–inference corrections of cpp/src/corrections.cpp on the GPU (importance weights with their
// metrics, verl's rejection sampling and ROLL's filters), from the same per-element formulas
// (grpokit/math/corrections.hpp). Segments (ROLL's multi-turn level) are scanned by the row's thread.
//
//   1. rows    (thread per row): the row's log-ratios in token order (the CPU's order), its Σ lr, and
//              every metric's partial sum / min / max over the row.
//   2. finish  (one block): the partials reduced in a fixed order, the metrics (written as float64 on
//              the device) and the batch renormalisation factor.
//   3. write   importance weights (a thread per token at token level, per row otherwise) divided by
//              the factor.
// Rejection sampling needs no third kernel: the keep mask is written by the rows kernel.
//
// Deterministic (fixed-order reductions), no allocation (a float64 workspace from the caller), no host
// synchronisation. An entirely masked batch (the CPU engine raises) gives weights 0 and metrics from
// empty sums (see docs/gpu.md).
// tests/cuda_emulation/emulate_estimators.cpp runs the kernels on host threads (launch.cuh).
#include <cmath>
#include <cstdint>
#include <vector>

#include "grpokit/corrections.hpp"
#include "grpokit/math/corrections.hpp"
#include "grpokit/math/estimators.hpp"
#include "grpokit_cuda.hpp"
#include "launch.cuh"
#include "strided.cuh"

namespace grpokit {
namespace cuda {
namespace {

using namespace strided;  // NOLINT(build/namespaces): the kernels' array accessors

constexpr int kCorrRowThreads = 128;
constexpr int kCorrReduceThreads = 128;  // a power of two
constexpr int kMaxCriteria = 16;

// ---- importance weights -----------------------------------------------------------------------------

// Per-row partials, reduced by the finish kernel with the op in GRPOKIT_IMPORTANCE_OPS.
enum ImpField {
  pSumW,
  pMinW,
  pMaxW,
  pTokenSum,
  pHigh,
  pLow,
  pZeroed,
  pRowZeroed,
  pRowValid,
  pCSum,
  pCSq,
  pKl,
  pK3,
  pChi2,
  pDSum,
  pDMax,
  pNScored,
  pChi2Seq,
  pBnSeq,
  pNSel,
  pHighTok,
  kNumImp
};
#define GRPOKIT_IMPORTANCE_OPS "smMssssssssssssMsssss"  // a literal: device code reads it
static_assert(sizeof(GRPOKIT_IMPORTANCE_OPS) == kNumImp + 1, "one reduction op per partial");

// What both corrections read (the (B, T) log-probs and mask) and where they write their metrics.
struct CorrBatch {
  int64_t B = 0, T = 0;
  In trn, smp, mask;
  double* metrics = nullptr;
  int64_t metrics_s = 0;
};

void set_batch(CorrBatch& a, const TensorView& trainer_logp, const TensorView& sampler_logp,
               const TensorView& mask, const TensorView& metrics) {
  a.B = trainer_logp.shape[0];
  a.T = trainer_logp.shape[1];
  a.trn = in_of(trainer_logp);
  a.smp = in_of(sampler_logp);
  a.mask = in_of(mask);
  a.metrics = metrics.ptr<double>();
  a.metrics_s = metrics.strides[0];
}

struct ImpArgs : CorrBatch {
  ImportanceOptions opt;
  In segment_ids;  // opt.segment_ids (null: segments are runs of the mask)
  Out weights;
  double* part = nullptr;     // B × kNumImp
  double* seq_sum = nullptr;  // B: Σ lr per row
  double* geo = nullptr;      // B: the row's mean log-ratio (geometric-mean ratio = e^geo)
  double* factor = nullptr;   // 1
};

__device__ double raw_weight(double lr, double log_clamp) {
  return exp(math::clamp_log_ratio(lr, log_clamp));
}

__device__ double log_ratio_at(const CorrBatch& a, int64_t i, int64_t t) {
  return math::sampler_log_ratio(real_at(a.trn, i, t), real_at(a.smp, i, t));
}

// Row i's Σ lr and selected-token count.
__device__ void row_log_ratio(const CorrBatch& a, int64_t i, double& sum, double& len) {
  sum = 0.0, len = 0.0;
  for (int64_t t = 0; t < a.T; ++t)
    if (flag_at(a.mask, i, t)) sum += log_ratio_at(a, i, t), len += 1.0;
}

// The mean of value(t) over the selected tokens of the segment of row i that starts at t0 (a maximal
// run of selected tokens, or the selected tokens sharing t0's id in `ids`; Σ / (n + eps)); *end
// receives where it stops.
template <class Value>
__device__ double segment_mean(const CorrBatch& a, const In& ids, int64_t i, int64_t t0, double eps,
                               const Value& value, int64_t* end) {
  const auto selected = [&](int64_t t) { return flag_at(a.mask, i, t); };
  if (ids.defined()) {
    const int64_t id = ids.integer(i, t0);
    *end = math::segment_end_by_id(selected, [&](int64_t t) { return ids.integer(i, t) == id; }, t0, a.T);
  } else {
    *end = math::segment_end(selected, t0, a.T);
  }
  double sum = 0.0, n = 0.0;
  for (int64_t t = t0; t < *end; ++t)
    if (selected(t)) sum += value(t), n += 1.0;
  return math::mean_log_ratio(sum, n, eps);
}

// The applied token weights of row i at token or segment level, calling f(t, lr, raw, w) per
// selected token in order (the write kernel and the rows kernel share it).
template <class F>
__device__ void token_weights(const ImpArgs& a, int64_t i, double geo_ratio, const F& f) {
  const ImportanceOptions& o = a.opt;
  const int mode = static_cast<int>(o.mode);
  const auto lr_at = [&](int64_t t) { return log_ratio_at(a, i, t); };
  int64_t seg_end = 0;
  double seg = 0.0;
  for (int64_t t = 0; t < a.T; ++t) {
    if (!flag_at(a.mask, i, t)) continue;
    const double lr = lr_at(t);
    if (o.level == IsLevel::Segment && t >= seg_end)
      seg = segment_mean(a, a.segment_ids, i, t, o.geo_eps, lr_at, &seg_end);
    const double raw = raw_weight(o.level == IsLevel::Segment ? seg : lr, o.log_clamp);
    f(t, lr, raw, math::apply_is_weight(raw, mode, o.clip_min, o.clip_max, geo_ratio));
  }
}

__global__ void importance_rows_kernel(const ImpArgs a) {
  const ImportanceOptions& o = a.opt;
  const bool seq = weight_per_row(o.level);
  const int mode = static_cast<int>(o.mode);
  const double upper = o.clip_max, lower = math::is_lower_bound(o.clip_min, upper);
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    double ssum, len;
    row_log_ratio(a, i, ssum, len);
    const double geo = math::mean_log_ratio(ssum, len, o.geo_eps);
    const double geo_ratio = exp(geo);
    const double row_lr = o.level == IsLevel::Geometric ? geo : ssum;
    const double raw_row = raw_weight(row_lr, o.log_clamp);
    const double w_row = math::apply_is_weight(raw_row, mode, o.clip_min, o.clip_max, geo_ratio);
    double p[kNumImp] = {};
    p[pMinW] = INFINITY;
    p[pMaxW] = -INFINITY;
    bool any_zeroed = false;
    token_weights(a, i, geo_ratio, [&](int64_t t, double lr, double raw_tok, double w_tok) {
      const double raw = seq ? raw_row : raw_tok;
      const double w = seq ? w_row : w_tok;
      if (!seq) {
        p[pSumW] += w;
        p[pMinW] = w < p[pMinW] ? w : p[pMinW];
        p[pMaxW] = w > p[pMaxW] ? w : p[pMaxW];
        p[pHigh] += raw > upper ? 1.0 : 0.0;
        p[pLow] += raw < lower ? 1.0 : 0.0;
      }
      p[pHighTok] += raw > upper ? 1.0 : 0.0;
      p[pTokenSum] += w;
      const bool zeroed = mode != math::kIsTruncate && w == 0.0 && raw != 0.0;
      p[pZeroed] += zeroed ? 1.0 : 0.0;
      any_zeroed = any_zeroed || zeroed;
      const double c = math::truncate_weight(w, 0.0, upper);  // verl's ESS and std clamp to [0, upper]
      p[pCSum] += c;
      p[pCSq] += c * c;
      if (!math::is_nan(real_at(a.smp, i, t))) {  // mismatch metrics over the tokens the sampler scored
        p[pKl] += -lr;
        p[pK3] += math::mismatch_k3(lr);
        const double rho = exp(math::clamp_log_ratio(lr, math::kVerlLogRatioBound));
        p[pChi2] += rho * rho;
        const double d = fabs(lr);
        p[pDSum] += d;
        p[pDMax] = d > p[pDMax] ? d : p[pDMax];
        p[pNScored] += 1.0;
      }
    });
    if (seq) {  // every row counts (an empty row has ratio exp(0) = 1), as TRL's (B, 1) ratio
      p[pSumW] = w_row;
      p[pMinW] = w_row;
      p[pMaxW] = w_row;
      // verl compares the unclamped log-ratio sums with log(bounds), over all rows
      p[pHigh] = row_lr > log(upper) ? 1.0 : 0.0;
      p[pLow] = row_lr < log(lower) ? 1.0 : 0.0;
    }
    if (len > 0.0) {
      p[pRowValid] = 1.0;
      p[pRowZeroed] = any_zeroed ? 1.0 : 0.0;
      p[pBnSeq] = math::verl_masked_mean(w_row * len, len);
    }
    p[pChi2Seq] = exp(2.0 * math::clamp_log_ratio(ssum, math::kVerlLogRatioBound));
    p[pNSel] = len;
    for (int k = 0; k < kNumImp; ++k) a.part[i * kNumImp + k] = p[k];
    a.seq_sum[i] = ssum;
    a.geo[i] = geo;
  }
}

__global__ void importance_finish_kernel(const ImpArgs a) {
  __shared__ double smem[kNumImp * kCorrReduceThreads];
  const char* ops = GRPOKIT_IMPORTANCE_OPS;
  double v[kNumImp];
  for (int k = 0; k < kNumImp; ++k) v[k] = ops[k] == 'm' ? INFINITY : (ops[k] == 'M' ? -INFINITY : 0.0);
  v[pDMax] = 0.0;  // |lr| ≥ 0: the CPU's max starts at 0
  for (int64_t i = threadIdx.x; i < a.B; i += blockDim.x)
    for (int k = 0; k < kNumImp; ++k) {
      const double x = a.part[i * kNumImp + k];
      const char op = ops[k];
      v[k] = op == 's' ? v[k] + x : op == 'm' ? (x < v[k] ? x : v[k]) : (x > v[k] ? x : v[k]);
    }
  strided::block_reduce<kNumImp>(v, smem, ops);
  if (threadIdx.x != 0) return;
  const ImportanceOptions& o = a.opt;
  const bool seq = weight_per_row(o.level);
  const double B = static_cast<double>(a.B), n = v[pNSel], n_scored = v[pNScored];
  const double c_mean = math::verl_masked_mean(v[pCSum], n);
  const double ess_sq = v[pCSq] / ((c_mean + 1e-8) * (c_mean + 1e-8));  // Σ (c / (mean + 1e-8))²
  double factor = 1.0;
  if (o.batch_normalize) {
    const double rows = v[pRowValid] > 1e-8 ? v[pRowValid] : 1e-8;
    const double mean = seq ? v[pBnSeq] / rows : math::verl_masked_mean(v[pTokenSum], n);
    if (mean > 1e-8) factor = mean;
  }
  const double m[] = {
      v[pSumW] / (seq ? B : n),
      v[pMinW],
      v[pMaxW],
      math::verl_masked_mean(v[pTokenSum], n),
      seq ? v[pHigh] / B : math::verl_masked_mean(v[pHigh], n),
      seq ? v[pLow] / B : math::verl_masked_mean(v[pLow], n),
      math::verl_masked_mean(v[pZeroed], n),
      v[pRowValid] > 0.0 ? v[pRowZeroed] / v[pRowValid] : 0.0,
      1.0 / math::verl_masked_mean(ess_sq, n),
      math::is_weight_std(v[pCSq], c_mean, n),
      factor,
      math::verl_masked_mean(v[pKl], n_scored),
      math::verl_masked_mean(v[pK3], n_scored),
      math::verl_masked_mean(v[pChi2], n_scored) - 1.0,
      v[pChi2Seq] / B - 1.0,
      n_scored > 0.0 ? v[pDSum] / n_scored : 0.0,
      v[pDMax],
      math::verl_masked_mean(v[pHighTok], n),
  };
  for (int k = 0; k < static_cast<int>(sizeof(m) / sizeof(m[0])); ++k) a.metrics[k * a.metrics_s] = m[k];
  *a.factor = factor;
}

__global__ void importance_write_kernel(const ImpArgs a) {
  const ImportanceOptions& o = a.opt;
  const int mode = static_cast<int>(o.mode);
  const double factor = *a.factor;
  if (o.level == IsLevel::Token) {  // a thread per element
    const int64_t n = a.B * a.T;
    for (int64_t e = first_index(); e < n; e += grid_stride()) {
      const int64_t i = e / a.T, t = e % a.T;
      double w = 0.0;
      if (flag_at(a.mask, i, t)) {
        const double raw = raw_weight(log_ratio_at(a, i, t), o.log_clamp);
        w = math::apply_is_weight(raw, mode, o.clip_min, o.clip_max, exp(a.geo[i]));
      }
      store(a.weights, i, t, w / factor);
    }
    return;
  }
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {  // a thread per row
    const double geo_ratio = exp(a.geo[i]);
    if (o.level == IsLevel::Segment) {
      for (int64_t t = 0; t < a.T; ++t) store(a.weights, i, t, 0.0);
      token_weights(a, i, geo_ratio,
                    [&](int64_t t, double, double, double w) { store(a.weights, i, t, w / factor); });
      continue;
    }
    const double row_lr = o.level == IsLevel::Geometric ? a.geo[i] : a.seq_sum[i];
    const double raw = raw_weight(row_lr, o.log_clamp);
    store(a.weights, i, 0, math::apply_is_weight(raw, mode, o.clip_min, o.clip_max, geo_ratio) / factor);
  }
}

// ---- rejection sampling ----------------------------------------------------------------------------

struct Criterion {
  int agg = 0;  // RsAggregation (math::rs_row_statistic's codes, then Segment)
  int k = 1;
  double lower = 0.0, upper = 0.0;
};

// Per row: for each criterion Σ statistic, min, max, rejected tokens, row rejected; then overall.
enum RejField { rSum, rMin, rMax, rRejected, rRowRejected, kPerCriterion };
enum RejOverall { oRowValid, oRejected, oRowAny, oNSel, kOverall };

struct RejArgs : CorrBatch {
  int C = 0;
  Criterion crit[kMaxCriteria];
  Out keep;
  double* part = nullptr;  // B × (kPerCriterion · C + kOverall)
};

// Criterion c's per-token value at (i, t) (math::rs_token_value).
__device__ double rs_value(const RejArgs& a, int c, int64_t i, int64_t t) {
  const double trn = real_at(a.trn, i, t), smp = real_at(a.smp, i, t);
  const int k = a.crit[c].k;
  const double diff = k == math::kRsDiff ? math::prob_difference(trn, smp) : 0.0;
  return math::rs_token_value(k, math::sampler_log_ratio(trn, smp), diff);
}

__global__ void rejection_rows_kernel(const RejArgs a) {
  const int width = kPerCriterion * a.C + kOverall;
  const int kToken = static_cast<int>(RsAggregation::Token),
            kSegment = static_cast<int>(RsAggregation::Segment);
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    double rsum[kMaxCriteria], rmax[kMaxCriteria], rv[kMaxCriteria], seg[kMaxCriteria];
    int64_t seg_end[kMaxCriteria];
    for (int c = 0; c < a.C; ++c) rsum[c] = 0.0, rmax[c] = -INFINITY, seg[c] = 0.0, seg_end[c] = 0;
    double len = 0.0;
    for (int64_t t = 0; t < a.T; ++t) {
      if (!flag_at(a.mask, i, t)) continue;
      len += 1.0;
      for (int c = 0; c < a.C; ++c) {
        if (a.crit[c].agg == kToken || a.crit[c].agg == kSegment) continue;
        const double s = rs_value(a, c, i, t);
        rsum[c] += s;
        rmax[c] = s > rmax[c] ? s : rmax[c];
      }
    }
    double* p = a.part + i * width;
    for (int c = 0; c < a.C; ++c) {
      const bool per_row = a.crit[c].agg != kToken && a.crit[c].agg != kSegment;
      rv[c] = per_row
                  ? math::rs_finish(a.crit[c].k, math::rs_row_statistic(a.crit[c].agg, rsum[c], rmax[c], len))
                  : 0.0;
      double* q = p + kPerCriterion * c;
      q[rSum] = 0.0;
      q[rMin] = INFINITY;
      q[rMax] = -INFINITY;
      q[rRejected] = 0.0;
      q[rRowRejected] = 0.0;
      if (per_row && len > 0.0) q[rMin] = q[rMax] = rv[c];
    }
    double rejected = 0.0;
    for (int64_t t = 0; t < a.T; ++t) {
      const bool sel = flag_at(a.mask, i, t);
      bool kept = sel;
      if (sel) {
        for (int c = 0; c < a.C; ++c) {
          double* q = p + kPerCriterion * c;
          const int agg = a.crit[c].agg;
          if (agg == kSegment && t >= seg_end[c])
            seg[c] = segment_mean(
                a, In{}, i, t, 0.0, [&](int64_t u) { return rs_value(a, c, i, u); }, &seg_end[c]);
          const bool per_token = agg == kToken || agg == kSegment;
          const double s =
              per_token ? math::rs_finish(a.crit[c].k, agg == kToken ? rs_value(a, c, i, t) : seg[c]) : rv[c];
          if (per_token) q[rMin] = s < q[rMin] ? s : q[rMin], q[rMax] = s > q[rMax] ? s : q[rMax];
          q[rSum] += s;
          if (!math::rs_passes(a.crit[c].k, s, a.crit[c].lower, a.crit[c].upper)) {
            q[rRejected] += 1.0;
            q[rRowRejected] = 1.0;
            kept = false;
          }
        }
        rejected += kept ? 0.0 : 1.0;
      }
      store(a.keep, i, t, kept ? 1.0 : 0.0);
    }
    double* q = p + kPerCriterion * a.C;
    q[oRowValid] = len > 0.0 ? 1.0 : 0.0;
    q[oRejected] = rejected;
    q[oRowAny] = rejected > 0.0 ? 1.0 : 0.0;
    q[oNSel] = len;
  }
}

__global__ void rejection_finish_kernel(const RejArgs a) {
  __shared__ double smem[kPerCriterion * kCorrReduceThreads];
  const int width = kPerCriterion * a.C + kOverall;
  double o[kOverall] = {0.0, 0.0, 0.0, 0.0};
  for (int64_t i = threadIdx.x; i < a.B; i += blockDim.x)
    for (int k = 0; k < kOverall; ++k) o[k] += a.part[i * width + kPerCriterion * a.C + k];
  strided::block_reduce<kOverall>(o, smem, "ssss");
  const double n = o[oNSel], rows_valid = o[oRowValid];
  int64_t m = 0;
  for (int c = 0; c < a.C; ++c) {
    double v[kPerCriterion] = {0.0, INFINITY, -INFINITY, 0.0, 0.0};
    for (int64_t i = threadIdx.x; i < a.B; i += blockDim.x) {
      const double* q = a.part + i * width + kPerCriterion * c;
      v[rSum] += q[rSum];
      v[rMin] = q[rMin] < v[rMin] ? q[rMin] : v[rMin];
      v[rMax] = q[rMax] > v[rMax] ? q[rMax] : v[rMax];
      v[rRejected] += q[rRejected];
      v[rRowRejected] += q[rRowRejected];
    }
    strided::block_reduce<kPerCriterion>(v, smem, "smMss");
    if (threadIdx.x == 0) {
      a.metrics[(m++) * a.metrics_s] = math::verl_masked_mean(v[rSum], n);
      a.metrics[(m++) * a.metrics_s] = v[rMax];
      a.metrics[(m++) * a.metrics_s] = v[rMin];
      a.metrics[(m++) * a.metrics_s] = math::verl_masked_mean(v[rRejected], n);
      a.metrics[(m++) * a.metrics_s] = rows_valid > 0.0 ? v[rRowRejected] / rows_valid : 0.0;
    }
  }
  if (threadIdx.x == 0) {
    a.metrics[(m++) * a.metrics_s] = math::verl_masked_mean(o[oRejected], n);
    a.metrics[(m++) * a.metrics_s] = o[oRowAny] / static_cast<double>(a.B);  // verl: over every row
  }
}

// ---- variance proxy (verl compute_variance_proxy_metrics) -------------------------------------------

enum VpField { vPower, vA2, vW, kNumVp };

struct VpArgs {
  int64_t B = 0, T = 0;
  In logp, spp, adv, mask, rho;
  bool has_is = false;
  double gradient_norm = 0.0;
  double* part = nullptr;  // B × kNumVp
  double* metrics = nullptr;
  int64_t metrics_s = 0;
};

__global__ void variance_proxy_rows_kernel(const VpArgs a) {
  for (int64_t i = first_index(); i < a.B; i += grid_stride()) {
    double sa = 0.0, sw = 0.0, swo = 0.0, sr = 0.0, len = 0.0;
    for (int64_t t = 0; t < a.T; ++t) {
      if (!flag_at(a.mask, i, t)) continue;
      const double rho = a.has_is ? real_at(a.rho, i, t) : 1.0;
      const double wt = math::otb_token_weight(real_at(a.logp, i, t), real_at(a.spp, i, t), rho);
      sa += real_at(a.adv, i, t), sw += wt, swo += math::variance_proxy_unweighted(wt, rho), sr += rho,
          len += 1.0;
    }
    const math::VarianceProxyRow r = math::variance_proxy_row(sa, sw, swo, sr, len, a.has_is);
    a.part[i * kNumVp + vPower] = r.power;
    a.part[i * kNumVp + vA2] = r.a2;
    a.part[i * kNumVp + vW] = r.w;
  }
}

__global__ void variance_proxy_finish_kernel(const VpArgs a) {
  __shared__ double smem[kNumVp * kCorrReduceThreads];
  double v[kNumVp] = {0.0, 0.0, 0.0};
  for (int64_t i = threadIdx.x; i < a.B; i += blockDim.x)
    for (int k = 0; k < kNumVp; ++k) v[k] += a.part[i * kNumVp + k];
  strided::block_reduce<kNumVp>(v, smem, "sss");
  if (threadIdx.x != 0) return;
  double out[5];
  math::variance_proxy_metrics(v[vPower], v[vA2], v[vW], static_cast<double>(a.B), a.gradient_norm, out);
  for (int k = 0; k < 5; ++k) a.metrics[k * a.metrics_s] = out[k];
}

// ---- workspace and arguments ---------------------------------------------------------------------------

}  // namespace

int64_t variance_proxy_workspace_size(int64_t num_rows) { return num_rows * kNumVp; }

void variance_proxy(const VarianceProxyInputs& in, double gradient_norm, const TensorView& metrics,
                    const TensorView& workspace, std::intptr_t stream) {
  check_variance_proxy_args(in, gradient_norm, metrics);
  GRPOKIT_CHECK_CUDA_DEVICE(in.logp, "logp");
  VpArgs a;
  a.B = in.logp.shape[0];
  a.T = in.logp.shape[1];
  if (a.B == 0) value_error("logp: expected at least one row, got shape ", in.logp.shape_str());
  a.logp = in_of(in.logp);
  a.spp = in_of(in.sum_pi_squared);
  a.adv = in_of(in.advantages);
  a.mask = in_of(in.mask);
  a.has_is = in.is_weights.data != nullptr;
  if (a.has_is) a.rho = in_of(in.is_weights);
  a.gradient_norm = gradient_norm;
  a.metrics = metrics.ptr<double>();
  a.metrics_s = metrics.strides[0];
  a.part = device_workspace(workspace, variance_proxy_workspace_size(a.B), "variance_proxy_workspace_size(B)",
                            in.logp, "logp");
  GRPOKIT_DEVICE_GUARD(in.logp);
  const Stream s = stream_of(stream);
  GRPOKIT_LAUNCH(variance_proxy_rows_kernel, strided::grid_for(a.B, kCorrRowThreads), kCorrRowThreads, s, a);
  GRPOKIT_LAUNCH(variance_proxy_finish_kernel, 1, kCorrReduceThreads, s, a);
  GRPOKIT_CHECK_LAUNCH("variance_proxy");
}

int64_t importance_workspace_size(int64_t num_rows) { return num_rows * (kNumImp + 2) + 1; }

int64_t rejection_workspace_size(int64_t num_rows, int64_t num_criteria) {
  return num_rows * (kPerCriterion * num_criteria + kOverall);
}

void importance_weights(const TensorView& trainer_logp, const TensorView& sampler_logp,
                        const TensorView& mask, const ImportanceOptions& opt, const TensorView& weights,
                        const TensorView& metrics, const TensorView& workspace, std::intptr_t stream) {
  check_importance_args(trainer_logp, sampler_logp, mask, opt, weights, metrics);
  GRPOKIT_CHECK_CUDA_DEVICE(trainer_logp, "trainer_logp");
  ImpArgs a;
  set_batch(a, trainer_logp, sampler_logp, mask, metrics);
  a.opt = opt;
  a.segment_ids = in_of(opt.segment_ids);
  a.weights = strided::out_of(weights);
  double* ws = device_workspace(workspace, importance_workspace_size(a.B), "importance_workspace_size(B)",
                                trainer_logp, "trainer_logp");
  a.part = ws;
  a.seq_sum = ws + a.B * kNumImp;
  a.geo = a.seq_sum + a.B;
  a.factor = a.geo + a.B;
  const unsigned rows = strided::grid_for(a.B, kCorrRowThreads);
  const unsigned elems = opt.level == IsLevel::Token ? strided::grid_for(a.B * a.T, kCorrRowThreads) : rows;
  GRPOKIT_DEVICE_GUARD(trainer_logp);
  const Stream s = stream_of(stream);
  GRPOKIT_LAUNCH(importance_rows_kernel, rows, kCorrRowThreads, s, a);
  GRPOKIT_LAUNCH(importance_finish_kernel, 1, kCorrReduceThreads, s, a);
  GRPOKIT_LAUNCH(importance_write_kernel, elems, kCorrRowThreads, s, a);
  GRPOKIT_CHECK_LAUNCH("importance_weights");
}

void rejection_mask(const TensorView& trainer_logp, const TensorView& sampler_logp, const TensorView& mask,
                    const std::vector<RejectionCriterion>& criteria, const TensorView& keep,
                    const TensorView& metrics, const TensorView& workspace, std::intptr_t stream) {
  check_rejection_args(trainer_logp, sampler_logp, mask, criteria, keep, metrics);
  GRPOKIT_CHECK_CUDA_DEVICE(trainer_logp, "trainer_logp");
  if (criteria.size() > static_cast<size_t>(kMaxCriteria))
    value_error("criteria: the GPU kernel takes at most ", kMaxCriteria, " criteria, got ", criteria.size());
  RejArgs a;
  set_batch(a, trainer_logp, sampler_logp, mask, metrics);
  a.C = static_cast<int>(criteria.size());
  for (int c = 0; c < a.C; ++c)
    a.crit[c] =
        Criterion{static_cast<int>(criteria[c].agg), criteria[c].k, criteria[c].lower, criteria[c].upper};
  a.keep = strided::out_of(keep);
  a.part = device_workspace(workspace, rejection_workspace_size(a.B, a.C),
                            "rejection_workspace_size(B, number of criteria)", trainer_logp, "trainer_logp");
  GRPOKIT_DEVICE_GUARD(trainer_logp);
  const Stream s = stream_of(stream);
  GRPOKIT_LAUNCH(rejection_rows_kernel, strided::grid_for(a.B, kCorrRowThreads), kCorrRowThreads, s, a);
  GRPOKIT_LAUNCH(rejection_finish_kernel, 1, kCorrReduceThreads, s, a);
  GRPOKIT_CHECK_LAUNCH("rejection_mask");
}

}  // namespace cuda
}  // namespace grpokit
