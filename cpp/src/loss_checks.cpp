// Argument checks of the policy loss and the choice of metrics it writes (both engines call them).
#include <cmath>
#include <utility>
#include <vector>

#include "grpokit/loss.hpp"
#include "grpokit/loss_metrics.hpp"
#include "grpokit/math/strided.hpp"

namespace grpokit {
namespace {

using namespace loss_metrics;

// The metrics a call writes: the clip family of its surrogate, the ratio, and what its inputs allow.
std::vector<int> metric_ids(const LossSpec& s, const LossInputs& in) {
  std::vector<int> ids;
  if (s.surrogate == Surrogate::Clip) {
    for (int k : {kClipLowMean, kClipHighMean, kClipRegionMean, kClipLowMin, kClipHighMax, kPgClipfrac})
      ids.push_back(k);
    if (std::isfinite(s.clip_ratio_c)) ids.push_back(kPgClipfracLower);
  }
  if (s.surrogate == Surrogate::Logp) {
    if (s.logp_weight == LogpWeight::Cap) ids.push_back(kCispoClipRatio);
    if (s.logp_weight == LogpWeight::Vespo) ids.push_back(kVespoPhi);
  }
  // verl's pg_clipfrac of CISPO (r ≠ clip r) and DPPO (invalid); TOPR's clamped negatives; tokens
  // outside the trust region (not beside the PPO clip's own pg_clipfrac)
  const bool weight_clips = s.surrogate == Surrogate::Logp &&
                            (s.logp_weight == LogpWeight::Clip || s.logp_weight == LogpWeight::DppoTv ||
                             s.logp_weight == LogpWeight::DppoKl || s.logp_weight == LogpWeight::Topr);
  if (weight_clips || (s.trust_region != TrustRegion::None && s.surrogate != Surrogate::Clip))
    ids.push_back(kWeightClipfrac);
  for (int k : {kRatioMin, kRatioMean, kRatioMax, kPpoKl}) ids.push_back(k);
  if (s.kl != KlEstimator::None && s.beta != 0.0) ids.push_back(kKl);
  if (in.entropies.defined()) ids.push_back(kEntropy);
  if (s.sampler_is != SamplerIs::None && in.sampling_logp.defined())
    for (int k : {kIsMin, kIsMean, kIsMax}) ids.push_back(k);
  if (!std::isnan(s.m2_threshold)) ids.push_back(kM2poMaskedFraction);
  return ids;
}

void check_flags(const TensorView& v, const char* name) { check_dtype(v, name, math::kFlagDTypes); }

}  // namespace

bool loss_has_entropy_grad(const LossSpec& s, bool has_entropies) {
  return has_entropies && (s.entropy_coef != 0.0 || (s.gtpo_entropy && s.beta != 0.0));
}

std::vector<int> loss_metric_ids(const LossSpec& spec, const LossInputs& in) { return metric_ids(spec, in); }

std::vector<std::string> loss_metric_names(const LossSpec& spec, const LossInputs& in) {
  std::vector<std::string> names;
  for (int k : metric_ids(spec, in)) names.emplace_back(kMetricNames[k]);
  return names;
}

void check_loss_args(const LossSpec& s, const LossInputs& in, const LossOutputs& out) {
  validate_spec(s);
  const TensorView& lp = in.logp;
  check_ndim(lp, "logp", {1, 2});
  if (lp.dtype == DType::BFloat16 || lp.dtype == DType::Float16)  // check_loss_args_any_float takes them
    type_error("logp: expected dtype float32, float64, got ", dtype_name(lp.dtype),
               " (bfloat16/float16 are GPU-only)");
  check_dtype(lp, "logp", {DType::Float32, DType::Float64});
  const bool packed = in.cu_seqlens.defined();
  if (packed && lp.ndim != 1)
    value_error("logp: packed inputs (cu_seqlens given) must be 1-D (N,), got shape ", lp.shape_str());
  if (!packed && lp.ndim != 2)
    value_error("logp: expected a padded (B, T) array, or a packed (N,) array with cu_seqlens; got shape ",
                lp.shape_str());
  int64_t B = packed ? 0 : lp.shape[0];
  if (packed) {
    check_ndim(in.cu_seqlens, "cu_seqlens", {1});
    check_dtype(in.cu_seqlens, "cu_seqlens", {DType::Int32, DType::Int64});
    check_same_device(in.cu_seqlens, "cu_seqlens", lp, "logp");
    if (in.cu_seqlens.shape[0] < 2)
      value_error("cu_seqlens: expected (B+1,) offsets with B >= 1, got shape ", in.cu_seqlens.shape_str());
    B = in.cu_seqlens.shape[0] - 1;
  }
  if (B == 0) value_error("logp: expected at least one completion, got shape ", lp.shape_str());
  auto same_layout = [&](const TensorView& v, const char* name) {
    if (!v.defined()) return;
    check_shape_equal(v, name, lp, "logp");
    check_same_device(v, name, lp, "logp");
  };
  auto same_float = [&](const TensorView& v, const char* name) {
    if (!v.defined()) return;
    if (v.dtype != lp.dtype)
      type_error(name, ": expected dtype ", dtype_name(lp.dtype), " (the dtype of logp), got ",
                 dtype_name(v.dtype));
  };
  for (auto [v, n] : {std::pair<const TensorView*, const char*>{&in.old_logp, "old_logp"},
                      {&in.ref_logp, "ref_logp"},
                      {&in.entropies, "entropies"},
                      {&in.sampling_logp, "sampling_logp"},
                      {&in.token_weights, "token_weights"}}) {
    same_layout(*v, n);
    same_float(*v, n);
  }
  if (in.mask.defined()) {
    same_layout(in.mask, "mask");
    check_flags(in.mask, "mask");
  }
  // advantages: (B,) or the layout of logp
  const TensorView& A = in.advantages;
  if (!A.defined()) value_error("advantages: required");
  same_float(A, "advantages");
  check_same_device(A, "advantages", lp, "logp");
  const bool per_row = A.ndim == 1 && A.shape[0] == B;
  const bool per_token =
      A.ndim == lp.ndim &&
      (A.ndim == 2 ? (A.shape[0] == lp.shape[0] && A.shape[1] == lp.shape[1]) : A.shape[0] == lp.shape[0]);
  if (!per_row && !per_token)
    value_error("advantages: expected shape (", B, ",) or ", lp.shape_str(), " (the shape of logp), got ",
                A.shape_str());
  if (in.keep.defined()) {
    check_ndim(in.keep, "keep", {1});
    check_flags(in.keep, "keep");
    check_same_device(in.keep, "keep", lp, "logp");
    if (in.keep.shape[0] != B) value_error("keep: expected shape (", B, ",), got ", in.keep.shape_str());
  }
  // what the spec needs
  if (s.kl != KlEstimator::None && s.beta != 0.0 && !in.ref_logp.defined())
    value_error("ref_logp: required when beta != 0 (beta = ", s.beta, "); pass beta=0 to drop the KL term");
  if (s.top_entropy_quantile < 1.0 && !in.entropies.defined())
    value_error("entropies: required when top_entropy_quantile < 1 (got ", s.top_entropy_quantile, ")");
  if (s.entropy_coef != 0.0 && !in.entropies.defined())
    value_error("entropies: required when entropy_coef != 0 (got ", s.entropy_coef, ")");
  if (s.aggregation == Aggregation::SeqMeanTokenSumNorm && !(s.max_completion_length > 0.0) && packed)
    value_error(
        "max_completion_length: packed inputs have no padded length; pass the constant normaliser C "
        "(max_completion_length / loss_scale_factor)");
  if (s.aggregation == Aggregation::PromptMean && s.group_size == -1.0)
    value_error("group_size: required by aggregation='prompt_mean' (the completions per prompt, G)");
  if (s.aggregation == Aggregation::PromptMean && B % static_cast<int64_t>(s.group_size) != 0)
    value_error("group_size: aggregation='prompt_mean' needs whole prompt groups in a call; ", B,
                " completions are not a multiple of group_size = ", static_cast<int64_t>(s.group_size));
  if (s.selection != Selection::None && !in.selection.defined())
    value_error(
        "selection: required by the clip_cov / kl_cov rules and by positive_nll (the tokens they act on)");
  if (in.selection.defined()) {
    same_layout(in.selection, "selection");
    check_flags(in.selection, "selection");
  }
  if (s.surrogate == Surrogate::Logp &&
      (s.logp_weight == LogpWeight::DppoTv || s.logp_weight == LogpWeight::DppoKl) && !in.old_logp.defined())
    value_error("old_logp: required by the DPPO trust-region tests");
  // outputs
  auto out_like = [&](const TensorView& v, const char* name, bool required) {
    if (!v.defined()) {
      if (required) value_error(name, ": output buffer required");
      return;
    }
    check_shape_equal(v, name, lp, "logp");
    check_dtype(v, name, {lp.dtype});
    check_same_device(v, name, lp, "logp");
    check_writable(v, name);
  };
  out_like(out.grad_logp, "grad_logp", true);
  out_like(out.per_token, "per_token", false);
  out_like(out.weights, "weights", false);
  out_like(out.grad_entropy, "grad_entropy", loss_has_entropy_grad(s, in.entropies.defined()));
  if (!out.loss.defined() || out.loss.numel() != 1) value_error("loss: expected a 1-element output buffer");
  check_dtype(out.loss, "loss", {lp.dtype});
  check_writable(out.loss, "loss");
  if (out.metrics.defined()) {
    check_ndim(out.metrics, "metrics", {1});
    check_dtype(out.metrics, "metrics", {DType::Float64});
    check_writable(out.metrics, "metrics");
    if (out.metrics.shape[0] != static_cast<int64_t>(metric_ids(s, in).size()))
      value_error("metrics: expected ", metric_ids(s, in).size(), " entries, got ", out.metrics.shape[0]);
  }
  if (out.grad_logp.data == lp.data) value_error("grad_logp: must not alias logp");
}

// The GPU engine's rule (cuda/loss.cu, grpokit.jax's trace-time check): bfloat16/float16 logp too, with
// every float array in logp's dtype; such a call is then checked as float32 (check_loss_args' rules
// compare dtypes only with logp's).
void check_loss_args_any_float(const LossSpec& spec, const LossInputs& in, const LossOutputs& out) {
  const TensorView& lp = in.logp;
  check_dtype(lp, "logp", {DType::Float32, DType::Float64, DType::BFloat16, DType::Float16});
  if (lp.dtype != DType::BFloat16 && lp.dtype != DType::Float16) return check_loss_args(spec, in, out);
  LossInputs in2 = in;
  LossOutputs out2 = out;
  auto relabel = [&lp](TensorView& v, const char* name) {
    if (!v.defined()) return;
    if (v.dtype != lp.dtype)
      type_error(name, ": expected dtype ", dtype_name(lp.dtype), " (the dtype of logp), got ",
                 dtype_name(v.dtype));
    v.dtype = DType::Float32;
  };
  relabel(in2.old_logp, "old_logp");
  relabel(in2.advantages, "advantages");
  relabel(in2.ref_logp, "ref_logp");
  relabel(in2.entropies, "entropies");
  relabel(in2.sampling_logp, "sampling_logp");
  relabel(in2.token_weights, "token_weights");
  relabel(out2.loss, "loss");
  relabel(out2.grad_logp, "grad_logp");
  relabel(out2.grad_entropy, "grad_entropy");
  relabel(out2.per_token, "per_token");
  relabel(out2.weights, "weights");
  in2.logp.dtype = DType::Float32;
  check_loss_args(spec, in2, out2);
}

}  // namespace grpokit
