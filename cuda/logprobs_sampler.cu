// Token log-probabilities under the sampler's truncation (temperature, then min-p, top-k, top-p; the
// vLLM and SGLang conventions) on the GPU, with the rules of grpokit/math/sampler.hpp: the CPU
// engine's computation (cpp/src/logprobs_sampler.cpp) with one block per row.
//
// Forward, per row: the full row state (as token_logprobs: one read), then the selections the row's
// filters need, each a most-significant-digit radix select in shared memory (2048 bins, 3 passes
// over the row for float32 keys; only entries matching the digits chosen so far are binned after the
// first), then one pass for the kept set's mass, Σ e·d and smallest logit. No sort and no (N × V)
// buffer. Backward: one read and one write per element from the saved lse, kept_logmass and
// keep_min (the kept set is {x ≥ keep_min}, held fixed). As in cuda/logprobs.cu, value problems
// cannot raise without synchronising: an out-of-range token id gives NaN outputs for its row, NaN or
// +inf logits NaN, a row with no finite logit −inf lse (check_finite=True in Python looks for them).
#include <cuda_runtime.h>

#include <cstdint>

#include "common.cuh"
#include "grpokit/logprobs.hpp"
#include "grpokit/math/logprobs.hpp"
#include "grpokit/math/sampler.hpp"
#include "grpokit_cuda.hpp"
#include "logprobs_rows.cuh"

namespace grpokit {
namespace cuda {
namespace {

using namespace rows;
using Keys = math::RadixKeys<float>;
using Key = Keys::K;

// The per-row sampler parameters as the kernels read them (undefined: off).
struct Params {
  PerRow top_k, top_p, min_p;
  __device__ math::SamplerRow row(int64_t r, int64_t inner) const {
    math::SamplerRow q;
    if (top_k.data) q.k = top_k.id(r, inner);
    if (top_p.data) q.p = top_p.real64(r, inner);
    if (min_p.data) q.min_p = min_p.real64(r, inner);
    return q;
  }
};

// The state of one row shared by every thread of the block.
struct RowInfo {
  float max;  // raw
  float sum, dot;
};

template <class T>
__device__ RowInfo block_row_info(const T* row, int64_t n, float inv_t) {
  __shared__ RowInfo info;
  const math::RowState<float> st = block_row_state<false>(row, n, inv_t);
  if (threadIdx.x == 0) info = {st.max, st.sum, st.dot};
  __syncthreads();
  const RowInfo r = info;
  __syncthreads();
  return r;
}

// Thread 0's choice of a digit, handed to every thread.
__device__ int share_digit(int digit) {
  __shared__ int chosen;
  if (threadIdx.x == 0) chosen = digit;
  __syncthreads();
  const int d = chosen;
  __syncthreads();
  return d;
}

// The k-th largest value of the row (1 ≤ k ≤ n), counting ties (math::kth_largest_bin).
template <class T>
__device__ float block_kth_largest(const T* row, int64_t n, int64_t k) {
  __shared__ unsigned count[math::kSelectBins];
  math::RadixWalk<Key> w;
  while (!w.done()) {
    for (int b = threadIdx.x; b < w.bins(); b += blockDim.x) count[b] = 0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const Key u = Keys::of(to_float(row[i]));
      if (w.matches(u)) atomicAdd(&count[w.bin(u)], 1u);
    }
    __syncthreads();
    w.choose(share_digit(threadIdx.x == 0 ? math::kth_largest_bin(count, w.bins(), k) : 0));
  }
  return Keys::value(w.prefix);
}

// The candidates of the nucleus: every entry (SGLang), or the survivors of top-k and min-p (vLLM).
struct Candidates {
  float t_k, log_min_p;
  bool all;
  __device__ bool operator()(float x, float d_raw) const {
    return all || math::kept(x, d_raw, t_k, log_min_p);
  }
};

// The nucleus boundary among the candidates (math::nucleus_bin), masses e = exp((x − m)/τ).
template <class T>
__device__ float block_nucleus(const T* row, int64_t n, float m, float inv_t, double p, bool strictly,
                               const Candidates& cand) {
  __shared__ double mass[math::kSelectBins];
  math::RadixWalk<Key> w;
  math::NucleusScan scan;  // thread 0's
  while (!w.done()) {
    for (int b = threadIdx.x; b < w.bins(); b += blockDim.x) mass[b] = 0.0;
    __syncthreads();
    for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
      const float x = to_float(row[i]);
      const Key u = Keys::of(x);
      const float d_raw = math::scaled_gap(x, m, inv_t);
      if (!w.matches(u) || !cand(x, d_raw)) continue;
      float d = math::clamp_exp_arg(d_raw);
      d = d > 0.0f ? 0.0f : d;
      atomicAdd(&mass[w.bin(u)], static_cast<double>(exp_or_zero(d)));
    }
    __syncthreads();
    w.choose(share_digit(threadIdx.x == 0 ? math::nucleus_bin(mass, w.bins(), p, strictly, scan) : 0));
  }
  return Keys::value(w.prefix);
}

// Σ e over the row and over the kept set, Σ e·d over the kept set, the smallest kept logit.
struct KeptSums {
  double all, kept, dot;
  float lo;
};

// The block's sums in a fixed order (shuffles within warps, then warp by warp in thread 0); in
// every thread.
__device__ KeptSums block_sum(KeptSums v) {
#pragma unroll
  for (int off = 16; off > 0; off /= 2) {
    v.all += __shfl_xor_sync(0xffffffffu, v.all, off);
    v.kept += __shfl_xor_sync(0xffffffffu, v.kept, off);
    v.dot += __shfl_xor_sync(0xffffffffu, v.dot, off);
    v.lo = fminf(v.lo, __shfl_xor_sync(0xffffffffu, v.lo, off));
  }
  __shared__ KeptSums warps[kThreads / 32];
  __shared__ KeptSums total;
  if (threadIdx.x % 32 == 0) warps[threadIdx.x / 32] = v;
  __syncthreads();
  if (threadIdx.x == 0) {
    KeptSums t = warps[0];
    for (unsigned w = 1; w < blockDim.x / 32; ++w) {
      t.all += warps[w].all, t.kept += warps[w].kept, t.dot += warps[w].dot;
      t.lo = fminf(t.lo, warps[w].lo);
    }
    total = t;
  }
  __syncthreads();
  const KeptSums r = total;
  __syncthreads();
  return r;
}

template <class T>
__device__ KeptSums block_kept_sums(const T* row, int64_t n, float m, float inv_t, float t, float log_min_p) {
  float all = 0.0f, kept = 0.0f, dot = 0.0f, lo = INFINITY;
  for (int64_t i = threadIdx.x; i < n; i += blockDim.x) {
    const float x = to_float(row[i]), d_raw = math::scaled_gap(x, m, inv_t);
    float d = math::clamp_exp_arg(d_raw);
    d = d > 0.0f ? 0.0f : d;
    const float e = exp_or_zero(d);
    all += e;
    if (math::kept(x, d_raw, t, log_min_p)) kept += e, dot += e * d, lo = fminf(lo, x);
  }
  return block_sum({all, kept, dot, lo});
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    sampler_forward_kernel(const T* x, Rows L, PerRow ids, float inv_t, Params params, bool sglang,
                           bool over_kept, PerRow logp, PerRow entropy, PerRow lse, PerRow kept_logmass,
                           PerRow keep_min) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  const RowInfo st = block_row_info(row, L.vocab, inv_t);
  const bool first = threadIdx.x == 0;
  math::RowState<float> full;
  full.max = st.max, full.sum = st.sum, full.dot = st.dot;
  const int64_t id = ids.id(r, L.inner);
  if (id < 0 || id >= L.vocab || !(st.sum > 0.0f)) {  // a bad id; NaN/+inf or no finite logit
    if (!first) return;
    const bool bad_id = id < 0 || id >= L.vocab;
    lse.write(r, L.inner, bad_id ? NAN : static_cast<float>(full.lse(static_cast<double>(inv_t))));
    logp.write(r, L.inner, NAN);
    entropy.write(r, L.inner, NAN);
    kept_logmass.write(r, L.inner, NAN);
    keep_min.write(r, L.inner, NAN);
    return;
  }
  const math::SamplerRow q = params.row(r, L.inner);
  math::KeptTerms k;
  float keep_min_v = -INFINITY;
  if (q.on(L.vocab)) {  // the same in every thread: the branch is uniform
    const float lmp = q.log_min_p<float>();
    const float t_k = q.top_k_on(L.vocab) ? block_kth_largest(row, L.vocab, q.k) : -INFINITY;
    float t_p = -INFINITY;
    if (q.p < 1.0)
      t_p = block_nucleus(row, L.vocab, st.max, inv_t, q.p, sglang, Candidates{t_k, lmp, sglang});
    const KeptSums s = block_kept_sums(row, L.vocab, st.max, inv_t, t_p > t_k ? t_p : t_k, lmp);
    k = math::kept_terms(s.all, s.kept, s.dot);
    keep_min_v = s.lo;
  } else {
    k.log_s = log(static_cast<double>(st.sum));
    k.entropy = full.entropy();
  }
  if (!first) return;
  const double x_y = to_float(row[id]);
  const double gap = math::scaled_gap(x_y, static_cast<double>(st.max), static_cast<double>(inv_t));
  logp.write(r, L.inner, x_y >= keep_min_v ? static_cast<float>(math::token_logp(gap, k.log_s)) : -INFINITY);
  lse.write(r, L.inner, static_cast<float>(full.lse(static_cast<double>(inv_t))));
  kept_logmass.write(r, L.inner, static_cast<float>(k.log_mass));
  keep_min.write(r, L.inner, keep_min_v);
  entropy.write(r, L.inner, over_kept ? static_cast<float>(k.entropy) : full.entropy());
}

template <class T>
__global__ void __launch_bounds__(kThreads)
    sampler_backward_kernel(const T* x, T* g, Rows G, Rows L, PerRow ids, float inv_t, bool over_kept,
                            PerRow lse, PerRow kept_logmass, PerRow keep_min, PerRow entropy,
                            PerRow grad_logp, PerRow grad_entropy) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  T* grow = g + G.offset(r);
  const int64_t id = ids.id(r, L.inner);
  if (id < 0 || id >= L.vocab) {
    for (int64_t i = threadIdx.x; i < L.vocab; i += blockDim.x) grow[i] = from_float<T>(NAN);
    return;
  }
  const GradShift gs = block_grad_shift(row, L.vocab, inv_t, lse.real(r, L.inner));
  const float kmin = keep_min.real(r, L.inner), log_mass = kept_logmass.real(r, L.inner);
  const float x_y = to_float(row[id]);  // read by every thread before any write (in-place gradients)
  __syncthreads();
  const bool y_kept = x_y >= kmin;
  const float a = y_kept ? grad_logp.real(r, L.inner) : 0.0f;  // logp = −inf there: no gradient
  const float b = grad_entropy.real(r, L.inner), h = grad_entropy.data ? entropy.real(r, L.inner) : 0.0f;
  const math::SamplerGrad<float> c{a * inv_t, b * inv_t, expf(-log_mass), log_mass, h, over_kept};
  for (int64_t i = threadIdx.x; i < L.vocab; i += blockDim.x) {
    const float v = to_float(row[i]), d = grad_gap(v, gs, inv_t);
    float gv = c.element(exp_or_zero(d), d, v >= kmin);
    if (i == id && y_kept) gv += c.ca;
    grow[i] = from_float<T>(gv);
  }
}

// ---- exact replay: the kept set as the sampler exported it (CSR, ascending ids per row) -----------

// Row r's kept ids: [begin, end) of ids; an empty range keeps the whole vocabulary.
struct Csr {
  PerRow ids, offsets;
  int64_t len;  // of ids
  __device__ int64_t at(int64_t i) const { return ids.id(i, 1); }
  __device__ void span(int64_t r, int64_t& begin, int64_t& end) const {
    begin = offsets.id(r, 1), end = offsets.id(r + 1, 1);
  }
  // Whether ids[i] is outside [0, V), repeats or falls below its predecessor, or the span is bad.
  __device__ bool bad(int64_t i, int64_t begin, int64_t vocab) const {
    const int64_t v = at(i);
    return v < 0 || v >= vocab || (i > begin && at(i - 1) >= v);
  }
  __device__ int64_t operator()(int64_t i) const { return at(i); }
  __device__ bool holds(int64_t begin, int64_t end, int64_t v) const {
    return math::ascending_holds(*this, begin, end, v);
  }
};

// Forward, per row: the full row state, then the kept entries' Σ e and Σ e·d by id (KeptSums' `all`
// counts bad ids, `lo` is −1 where the token is among them). A bad span, id or order: NaN outputs.
template <class T>
__global__ void __launch_bounds__(kThreads)
    keep_forward_kernel(const T* x, Rows L, PerRow ids, float inv_t, Csr keep, bool over_kept, PerRow logp,
                        PerRow entropy, PerRow lse, PerRow kept_logmass) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  const RowInfo st = block_row_info(row, L.vocab, inv_t);
  math::RowState<float> full;
  full.max = st.max, full.sum = st.sum, full.dot = st.dot;
  const int64_t id = ids.id(r, L.inner);
  int64_t begin, end;
  keep.span(r, begin, end);
  const bool bad_row = id < 0 || id >= L.vocab || begin < 0 || end < begin || end > keep.len;
  if (bad_row || !(st.sum > 0.0f)) {  // a bad id or span; NaN/+inf or no finite logit
    if (threadIdx.x != 0) return;
    lse.write(r, L.inner, bad_row ? NAN : static_cast<float>(full.lse(static_cast<double>(inv_t))));
    logp.write(r, L.inner, NAN);
    entropy.write(r, L.inner, NAN);
    kept_logmass.write(r, L.inner, NAN);
    return;
  }
  KeptSums part{0.0, 0.0, 0.0, 0.0f};
  for (int64_t i = begin + threadIdx.x; i < end; i += blockDim.x) {
    if (keep.bad(i, begin, L.vocab)) {
      part.all += 1.0;
      continue;
    }
    // in float64: a set without the row's maximum may hold only entries below float32's exp range
    const int64_t v = keep.at(i);
    double d = math::scaled_gap(to_float(row[v]), st.max, inv_t);
    d = d > 0.0 ? 0.0 : d;
    const double e = exp(d);
    part.kept += e, part.dot += e > 0.0 ? e * d : 0.0;
    if (v == id) part.lo = -1.0f;
  }
  const KeptSums k = block_sum(part);
  if (threadIdx.x != 0) return;
  math::KeptTerms t{log(static_cast<double>(st.sum)), 0.0, full.entropy()};
  const bool all = begin == end, y_kept = all || k.lo < 0.0f;
  if (!all) t = math::kept_terms(st.sum, k.kept, k.dot);
  const bool bad = k.all > 0.0 || !(all || k.kept > 0.0);  // bad ids, or no finite logit kept
  const double x_y = to_float(row[id]);
  const double gap = math::scaled_gap(x_y, static_cast<double>(st.max), static_cast<double>(inv_t));
  const float lp = y_kept ? static_cast<float>(math::token_logp(gap, t.log_s)) : -INFINITY;
  logp.write(r, L.inner, bad ? NAN : lp);
  lse.write(r, L.inner, bad ? NAN : static_cast<float>(full.lse(static_cast<double>(inv_t))));
  kept_logmass.write(r, L.inner, bad ? NAN : static_cast<float>(t.log_mass));
  entropy.write(r, L.inner, bad ? NAN : over_kept ? static_cast<float>(t.entropy) : full.entropy());
}

// Backward: one read and one write per element; membership by binary search in the row's ids.
template <class T>
__global__ void __launch_bounds__(kThreads)
    keep_backward_kernel(const T* x, T* g, Rows G, Rows L, PerRow ids, float inv_t, Csr keep, bool over_kept,
                         PerRow lse, PerRow kept_logmass, PerRow entropy, PerRow grad_logp,
                         PerRow grad_entropy) {
  const int64_t r = blockIdx.x;
  const T* row = x + L.offset(r);
  T* grow = g + G.offset(r);
  const int64_t id = ids.id(r, L.inner);
  int64_t begin, end;
  keep.span(r, begin, end);
  if (id < 0 || id >= L.vocab || begin < 0 || end < begin || end > keep.len) {
    for (int64_t i = threadIdx.x; i < L.vocab; i += blockDim.x) grow[i] = from_float<T>(NAN);
    return;
  }
  const GradShift gs = block_grad_shift(row, L.vocab, inv_t, lse.real(r, L.inner));
  const float log_mass = kept_logmass.real(r, L.inner);
  const float x_y = to_float(row[id]);  // read by every thread before any write (in-place gradients)
  __syncthreads();
  const bool all = begin == end, y_kept = (all || keep.holds(begin, end, id)) && x_y > -INFINITY;
  const float a = y_kept ? grad_logp.real(r, L.inner) : 0.0f;  // logp = −inf there: no gradient
  const float b = grad_entropy.real(r, L.inner), h = grad_entropy.data ? entropy.real(r, L.inner) : 0.0f;
  const math::SamplerGrad<float> c{a * inv_t, b * inv_t, expf(-log_mass), log_mass, h, over_kept};
  for (int64_t i = threadIdx.x; i < L.vocab; i += blockDim.x) {
    const float x_i = to_float(row[i]), d = grad_gap(x_i, gs, inv_t);
    const bool in_kept = all || keep.holds(begin, end, i);
    float lq =
        math::clamp_exp_arg(math::scaled_gap(x_i, gs.shift, inv_t) - gs.c0 - log_mass);  // log q ≫ log p
    lq = lq > 0.0f ? 0.0f : lq;
    float gv = c.element_q(exp_or_zero(d), d, in_kept ? exp_or_zero(lq) : 0.0f, lq, in_kept);
    if (i == id && y_kept) gv += c.ca;
    grow[i] = from_float<T>(gv);
  }
}

Csr csr_of(const KeepArgs& k) { return {PerRow::of(k.ids), PerRow::of(k.offsets), k.ids.shape[0]}; }

Params params_of(const SamplerArgs& s) {
  return {PerRow::of(s.top_k), PerRow::of(s.top_p), PerRow::of(s.min_p)};
}

}  // namespace

void token_logprobs_sampler(const TokenLogprobArgs& in, const SamplerArgs& s, const TensorView& logp,
                            const TensorView& entropy, const TensorView& lse, const TensorView& kept_logmass,
                            const TensorView& keep_min, std::intptr_t stream) {
  check_token_logprobs_sampler_args(in, s, logp, entropy, lse, kept_logmass, keep_min);
  const RowLaunch go(in, stream);
  if (go.L.rows == 0) return;
  DeviceGuard guard(in.logits.device.index);
  const PerRow ids = PerRow::of(in.token_ids);
  const bool sglang = s.convention == SamplerConvention::SGLang;
  dispatch_float(in.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = sampler_forward_kernel<T>;
    GRPOKIT_LAUNCH(kernel, go.grid, go.threads, go.stream, in.logits.ptr<const T>(), go.L, ids, go.inv_t,
                   params_of(s), sglang, s.entropy_over_kept, PerRow::of(logp), PerRow::of(entropy),
                   PerRow::of(lse), PerRow::of(kept_logmass), PerRow::of(keep_min));
  });
  check_launch("token_logprobs (top_k/top_p/min_p)");
}

void token_logprobs_sampler_backward(const TokenLogprobArgs& in, bool entropy_over_kept,
                                     const TensorView& lse, const TensorView& kept_logmass,
                                     const TensorView& keep_min, const TensorView& entropy,
                                     const TensorView& grad_logp, const TensorView& grad_entropy,
                                     const TensorView& grad_logits, std::intptr_t stream) {
  check_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
  check_token_logprobs_backward_args(in, kept_logmass, TensorView{}, TensorView{}, TensorView{}, grad_logits);
  check_token_logprobs_backward_args(in, keep_min, TensorView{}, TensorView{}, TensorView{}, grad_logits);
  const RowLaunch go(in, stream);
  if (go.L.rows == 0) return;
  DeviceGuard guard(in.logits.device.index);
  const Rows G = Rows::of(grad_logits);
  dispatch_float(in.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = sampler_backward_kernel<T>;
    GRPOKIT_LAUNCH(kernel, go.grid, go.threads, go.stream, in.logits.ptr<const T>(), grad_logits.ptr<T>(), G,
                   go.L, PerRow::of(in.token_ids), go.inv_t, entropy_over_kept, PerRow::of(lse),
                   PerRow::of(kept_logmass), PerRow::of(keep_min), PerRow::of(entropy), PerRow::of(grad_logp),
                   PerRow::of(grad_entropy));
  });
  check_launch("token_logprobs_backward (top_k/top_p/min_p)");
}

}  // namespace cuda
}  // namespace grpokit

namespace grpokit {
namespace cuda {

void token_logprobs_keep(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                         const TensorView& entropy, const TensorView& lse, const TensorView& kept_logmass,
                         std::intptr_t stream) {
  check_token_logprobs_keep_args(in, k, logp, entropy, lse, kept_logmass);
  const RowLaunch go(in, stream);
  if (go.L.rows == 0) return;
  DeviceGuard guard(in.logits.device.index);
  dispatch_float(in.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = keep_forward_kernel<T>;
    GRPOKIT_LAUNCH(kernel, go.grid, go.threads, go.stream, in.logits.ptr<const T>(), go.L,
                   PerRow::of(in.token_ids), go.inv_t, csr_of(k), k.entropy_over_kept, PerRow::of(logp),
                   PerRow::of(entropy), PerRow::of(lse), PerRow::of(kept_logmass));
  });
  check_launch("token_logprobs (keep)");
}

void token_logprobs_keep_backward(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& lse,
                                  const TensorView& kept_logmass, const TensorView& entropy,
                                  const TensorView& grad_logp, const TensorView& grad_entropy,
                                  const TensorView& grad_logits, std::intptr_t stream) {
  check_token_logprobs_keep_backward_args(in, k, lse, kept_logmass, entropy, grad_logp, grad_entropy,
                                          grad_logits);
  const RowLaunch go(in, stream);
  if (go.L.rows == 0) return;
  DeviceGuard guard(in.logits.device.index);
  const Rows G = Rows::of(grad_logits);
  dispatch_float(in.logits.dtype, [&](auto tag) {
    using T = decltype(tag);
    const auto kernel = keep_backward_kernel<T>;
    GRPOKIT_LAUNCH(kernel, go.grid, go.threads, go.stream, in.logits.ptr<const T>(), grad_logits.ptr<T>(), G,
                   go.L, PerRow::of(in.token_ids), go.inv_t, csr_of(k), k.entropy_over_kept, PerRow::of(lse),
                   PerRow::of(kept_logmass), PerRow::of(entropy), PerRow::of(grad_logp),
                   PerRow::of(grad_entropy));
  });
  check_launch("token_logprobs_backward (keep)");
}

}  // namespace cuda
}  // namespace grpokit
