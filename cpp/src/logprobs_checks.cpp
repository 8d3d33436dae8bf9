// Argument checks of the token log-probability ops, shared by the CPU engine and the CUDA launchers.
#include <cmath>
#include <cstdint>

#include "grpokit/logprobs.hpp"
#include "grpokit/logprobs_kl.hpp"

namespace grpokit {
namespace {

DType result_dtype(DType logits) { return logits == DType::Float64 ? DType::Float64 : DType::Float32; }

// The leading shape of the logits as a view with no data, for check_shape_equal's message.
TensorView leading(const TensorView& logits) {
  TensorView t;
  t.ndim = logits.ndim - 1;
  for (int i = 0; i < t.ndim; ++i) t.shape[i] = logits.shape[i];
  return t;
}

void check_per_row(const TensorView& t, const char* name, const TensorView& logits,
                   std::initializer_list<DType> dtypes, bool writable) {
  check_shape_equal(t, name, leading(logits), "logits without its last dimension");
  check_dtype(t, name, dtypes);
  check_same_device(t, name, logits, "logits");
  if (writable) check_writable(t, name);
}

void check_vocab_contiguous(const TensorView& t, const char* name) {
  if (t.shape[t.ndim - 1] > 1 && t.stride(-1) != 1)
    value_error(name, ": the vocabulary (last) dimension must have stride 1, got stride ", t.stride(-1),
                "; pass a view with contiguous rows (e.g. .contiguous())");
}

// Byte range [lo, hi) that a view can touch.
void extent(const TensorView& t, intptr_t& lo, intptr_t& hi) {
  intptr_t a = reinterpret_cast<intptr_t>(t.data), b = a;
  const intptr_t es = dtype_size(t.dtype);
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] == 0) {
      lo = hi = a;
      return;
    }
    const intptr_t span = static_cast<intptr_t>((t.shape[i] - 1) * t.strides[i]) * es;
    (span < 0 ? a : b) += span;
  }
  lo = a;
  hi = b + es;
}

bool overlaps(const TensorView& a, const TensorView& b) {
  intptr_t a0, a1, b0, b1;
  extent(a, a0, a1);
  extent(b, b0, b1);
  return a0 < b1 && b0 < a1;
}

bool same_view(const TensorView& a, const TensorView& b) {
  if (a.data != b.data || a.ndim != b.ndim || a.dtype != b.dtype) return false;
  for (int i = 0; i < a.ndim; ++i)
    if (a.shape[i] != b.shape[i] || (a.shape[i] > 1 && a.strides[i] != b.strides[i])) return false;
  return true;
}

// The logits, temperature and token ids: common to the forward and the backward.
void check_inputs(const TokenLogprobArgs& in) {
  const TensorView& x = in.logits;
  check_ndim(x, "logits", {2, 3});
  check_dtype(x, "logits", {DType::Float32, DType::BFloat16, DType::Float16, DType::Float64});
  if (x.shape[x.ndim - 1] == 0) value_error("logits: the vocabulary dimension is empty");
  check_vocab_contiguous(x, "logits");
  if (!(in.temperature > 0.0) || std::isinf(in.temperature))
    value_error("temperature: expected a finite value > 0, got ", in.temperature);
  check_per_row(in.token_ids, "token_ids", x, {DType::Int32, DType::Int64}, false);
}

}  // namespace

RowLayout RowLayout::of(const TensorView& logits) {
  RowLayout r;
  r.vocab = logits.shape[logits.ndim - 1];
  r.inner = logits.ndim == 3 ? logits.shape[1] : 1;
  r.rows = logits.ndim == 3 ? logits.shape[0] * logits.shape[1] : logits.shape[0];
  return r;
}

void check_token_logprobs_args(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                               const TensorView& lse, const TensorView& sum_sq_probs) {
  const TensorView& x = in.logits;
  check_inputs(in);
  const DType rd = result_dtype(x.dtype);
  check_per_row(logp, "logp", x, {rd}, true);
  check_per_row(lse, "lse", x, {rd}, true);
  if (entropy.defined()) check_per_row(entropy, "entropy", x, {rd}, true);
  if (sum_sq_probs.defined()) check_per_row(sum_sq_probs, "sum_sq_probs", x, {rd}, true);
}

void check_token_logprobs_backward_args(const TokenLogprobArgs& in, const TensorView& lse,
                                        const TensorView& entropy, const TensorView& grad_logp,
                                        const TensorView& grad_entropy, const TensorView& grad_logits) {
  const TensorView& x = in.logits;
  check_inputs(in);
  const DType rd = result_dtype(x.dtype);
  check_per_row(lse, "lse", x, {rd}, false);
  if (grad_logp.defined()) check_per_row(grad_logp, "grad_logp", x, {DType::Float32, DType::Float64}, false);
  if (grad_entropy.defined()) {
    check_per_row(grad_entropy, "grad_entropy", x, {DType::Float32, DType::Float64}, false);
    if (!entropy.defined())
      value_error(
          "entropy: the forward's entropy is needed for a gradient through the entropy; "
          "run the forward with entropy=True");
  }
  if (entropy.defined()) check_per_row(entropy, "entropy", x, {rd}, false);

  check_shape_equal(grad_logits, "grad_logits", x, "logits");
  check_dtype(grad_logits, "grad_logits", {x.dtype});
  check_same_device(grad_logits, "grad_logits", x, "logits");
  check_writable(grad_logits, "grad_logits");
  check_vocab_contiguous(grad_logits, "grad_logits");
  if (!same_view(grad_logits, x) && overlaps(grad_logits, x))
    value_error(
        "grad_logits: overlaps logits without being the same view; pass the logits "
        "view itself (in-place) or a separate buffer");
}

// ---- the full KL against a reference (grpokit/logprobs_kl.hpp) ----------------------------------

namespace {

// ref_logits: the logits' shape, dtype, device and layout rule; never written.
void check_ref(const TokenLogprobArgs& in, const TensorView& ref) {
  check_shape_equal(ref, "ref_logits", in.logits, "logits");
  check_dtype(ref, "ref_logits", {in.logits.dtype});
  check_same_device(ref, "ref_logits", in.logits, "logits");
  check_vocab_contiguous(ref, "ref_logits");
}

}  // namespace

void check_token_logprobs_kl_args(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                  const TensorView& logp, const TensorView& entropy, const TensorView& kl,
                                  const TensorView& lse, const TensorView& ref_lse) {
  check_token_logprobs_args(in, logp, entropy, lse);
  check_ref(in, ref_logits);
  const DType rd = result_dtype(in.logits.dtype);
  if (!entropy.defined()) value_error("entropy: required (the same pass computes it)");
  check_per_row(kl, "kl", in.logits, {rd}, true);
  check_per_row(ref_lse, "ref_lse", in.logits, {rd}, true);
}

void check_token_logprobs_kl_backward_args(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                           const TensorView& lse, const TensorView& ref_lse,
                                           const TensorView& entropy, const TensorView& kl,
                                           const TensorView& grad_logp, const TensorView& grad_entropy,
                                           const TensorView& grad_kl, const TensorView& grad_logits) {
  check_token_logprobs_backward_args(in, lse, entropy, grad_logp, grad_entropy, grad_logits);
  check_ref(in, ref_logits);
  const DType rd = result_dtype(in.logits.dtype);
  check_per_row(ref_lse, "ref_lse", in.logits, {rd}, false);
  check_per_row(kl, "kl", in.logits, {rd}, false);
  if (grad_kl.defined())
    check_per_row(grad_kl, "grad_kl", in.logits, {DType::Float32, DType::Float64}, false);
  if (overlaps(grad_logits, ref_logits))
    value_error(
        "grad_logits: overlaps ref_logits; pass the logits view itself (in-place) or a separate buffer");
}

}  // namespace grpokit
