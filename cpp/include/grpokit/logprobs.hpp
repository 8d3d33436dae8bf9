// Token log-probabilities and entropies from logits, and the logits gradient, without materialising
// the softmax (formulas in grpokit/math/logprobs.hpp).
//
// Layout: logits (N, V) or (B, T, V) with unit stride along V and any strides along the leading
// dimensions (row-strided views such as logits[:, :-1] are read in place). Row t scores token t;
// nothing is shifted. Per-row arrays (token_ids, logp, entropy, lse, grad_logp, grad_entropy) have
// the leading shape (N,) or (B, T), any strides.
//
// Dtypes: logits float32/bfloat16/float16 (float32 math; CPU and CUDA) or float64 (float64 math;
// CPU only). logp, entropy, lse and sum_sq_probs are float32, or float64 for float64 logits.
// token_ids int32/int64. grad_logp/grad_entropy float32 or float64. grad_logits has the dtype of
// logits.
//
// sum_sq_probs (optional output of the forward): Σ_v p_v² of each row's temperature-scaled softmax,
// from a third accumulator of the same pass (kernels instantiated separately, so the default path
// is unchanged). A forward-only diagnostic: no backward takes a gradient through it.
#pragma once

#include <cstdint>

#include "grpokit/tensor.hpp"

namespace grpokit {

struct TokenLogprobArgs {
  TensorView logits;
  TensorView token_ids;
  double temperature = 1.0;
};

// Forward: logp and lse always, entropy and sum_sq_probs when defined. Validates shapes, dtypes,
// devices, strides.
void check_token_logprobs_args(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                               const TensorView& lse, const TensorView& sum_sq_probs = TensorView{});

// Backward: grad_logits = ∂L/∂logits from grad_logp and grad_entropy (either may be undefined,
// meaning zero). `entropy` (the forward's) is required when grad_entropy is defined. grad_logits
// may be the logits view itself (in-place), but must not otherwise overlap it.
void check_token_logprobs_backward_args(const TokenLogprobArgs& in, const TensorView& lse,
                                        const TensorView& entropy, const TensorView& grad_logp,
                                        const TensorView& grad_entropy, const TensorView& grad_logits);

// CPU engine: multithreaded over rows (OpenMP), chunked and vectorised along V, deterministic for
// any thread count. Value checks: a token id outside [0, V) and a row whose logits hold NaN or +inf
// or no finite value throw grpokit::Error naming the row.
void token_logprobs_cpu(const TokenLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                        const TensorView& lse, const TensorView& sum_sq_probs = TensorView{});
void token_logprobs_backward_cpu(const TokenLogprobArgs& in, const TensorView& lse, const TensorView& entropy,
                                 const TensorView& grad_logp, const TensorView& grad_entropy,
                                 const TensorView& grad_logits);

// ---- the sampler's distribution: temperature, then min-p, top-k, top-p (docs/logprobs.md) ------
//
// Per-row parameters are arrays of the leading shape (any strides; stride 0 gives one value to every
// row); an undefined view turns that filter off. top_k int32/int64: ≤ 0 or ≥ V is off. top_p
// float32/float64 in (0, 1]: 1 is off. min_p float32/float64 in [0, 1]: 0 is off.
enum class SamplerConvention {
  VLLM,    // min-p, then top-k, then top-p over the renormalised survivors; keep while mass above < p
  SGLang,  // all three on the full distribution; keep while the mass above ≤ p
};

struct SamplerArgs {
  TensorView top_k, top_p, min_p;
  SamplerConvention convention = SamplerConvention::VLLM;
  bool entropy_over_kept = false;  // entropy of the sampler's distribution instead of the full one
};

// Outputs (result dtype, leading shape): logp = log-probability under the sampler's distribution
// (−inf for a token outside the kept set), entropy (optional; full or kept), lse = log Σ exp(x/τ) over
// the whole row, kept_logmass = log Σ_{kept} p_v (≤ 0) and keep_min = the smallest kept logit (raw):
// the kept set is {v : x_v ≥ keep_min}. No sort of the row, no (N × V) buffer: thresholds come from
// selections over the entries above a bound from the row's group maxima (cpp/src/logprobs_select.hpp).
void check_token_logprobs_sampler_args(const TokenLogprobArgs& in, const SamplerArgs& s,
                                       const TensorView& logp, const TensorView& entropy,
                                       const TensorView& lse, const TensorView& kept_logmass,
                                       const TensorView& keep_min);
void token_logprobs_sampler_cpu(const TokenLogprobArgs& in, const SamplerArgs& s, const TensorView& logp,
                                const TensorView& entropy, const TensorView& lse,
                                const TensorView& kept_logmass, const TensorView& keep_min);
// The logits gradient of the above with the kept set held fixed (it is piecewise constant in the
// logits). A row whose token is outside the kept set gets no gradient through logp.
void token_logprobs_sampler_backward_cpu(const TokenLogprobArgs& in, bool entropy_over_kept,
                                         const TensorView& lse, const TensorView& kept_logmass,
                                         const TensorView& keep_min, const TensorView& entropy,
                                         const TensorView& grad_logp, const TensorView& grad_entropy,
                                         const TensorView& grad_logits);

// ---- exact replay: the kept set as the sampler exported it (docs/logprobs.md) -------------------
//
// Row r (of the flattened leading shape) keeps ids[offsets[r] : offsets[r + 1]], ascending without
// repeats (vLLM's SamplingMask and SGLang's output_token_sampling_mask, CSR); an empty row keeps the
// whole vocabulary (no replay at that position). ids and offsets: 1-D int32/int64, any stride;
// offsets has N + 1 entries from 0 to len(ids).
struct KeepArgs {
  TensorView ids, offsets;
  bool entropy_over_kept = false;  // entropy of the kept distribution instead of the full one
};

// Outputs as token_logprobs_sampler's less keep_min: logp under the softmax restricted to the kept
// set and renormalised (−inf for a token outside it), entropy (optional; full or kept), lse over the
// whole row and kept_logmass = log Σ_{kept} p_v. One read of the row plus the kept entries.
void check_token_logprobs_keep_args(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                                    const TensorView& entropy, const TensorView& lse,
                                    const TensorView& kept_logmass);
// The arrays' shapes, dtypes and devices for `rows` rows, on the device of `like` (the logits or the
// hidden states, named like_name). The CPU engine also checks their values (check_keep_values: offsets
// from 0 to len(ids), non-decreasing; each row's ids in [0, vocab) and strictly increasing; on the
// CPU); the GPU marks a row whose ids are out of range or not ascending with NaN outputs.
void check_keep_shapes(const KeepArgs& k, int64_t rows, const TensorView& like, const char* like_name);
void check_keep_values(const KeepArgs& k, int64_t rows, int64_t vocab);
void check_token_logprobs_keep_backward_args(const TokenLogprobArgs& in, const KeepArgs& k,
                                             const TensorView& lse, const TensorView& kept_logmass,
                                             const TensorView& entropy, const TensorView& grad_logp,
                                             const TensorView& grad_entropy, const TensorView& grad_logits);
void token_logprobs_keep_cpu(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                             const TensorView& entropy, const TensorView& lse,
                             const TensorView& kept_logmass);
// The logits gradient with the kept set held fixed: one pass over the row, a cursor into its ids.
void token_logprobs_keep_backward_cpu(const TokenLogprobArgs& in, const KeepArgs& k, const TensorView& lse,
                                      const TensorView& kept_logmass, const TensorView& entropy,
                                      const TensorView& grad_logp, const TensorView& grad_entropy,
                                      const TensorView& grad_logits);

// Row addressing shared by the engines: row r of a (N,) or (B, T) leading shape.
struct RowLayout {
  int64_t rows = 0;    // N or B·T
  int64_t inner = 1;   // T (1 for 2-D logits)
  int64_t vocab = 0;   // V
  static RowLayout of(const TensorView& logits);
};

}  // namespace grpokit
