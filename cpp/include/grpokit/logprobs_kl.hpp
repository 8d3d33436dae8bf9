// Token log-probabilities and entropies of the policy and its KL from the reference over the whole
// vocabulary, KL(π_θ ‖ π_ref) per row (formulas in grpokit/math/logprobs_kl.hpp), in one pass over
// both rows of logits, and the policy logits' gradient; no (N × V) buffer.
//
// Layout and dtypes as in grpokit/logprobs.hpp; ref_logits has the shape and dtype of logits (unit
// stride along V, any leading strides) and the same temperature divides both. kl and ref_lse are
// per-row results like lse (float32; float64 for float64 logits).
#pragma once

#include "grpokit/logprobs.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {

// Forward: logp, entropy, kl, lse (the policy's) and ref_lse (the reference's) are all written.
void check_token_logprobs_kl_args(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                  const TensorView& logp, const TensorView& entropy, const TensorView& kl,
                                  const TensorView& lse, const TensorView& ref_lse);

// Backward: grad_logits = ∂L/∂logits from grad_logp, grad_entropy and grad_kl (each may be undefined,
// meaning zero) and the forward's lse, ref_lse, entropy and kl. grad_logits may be the logits view
// itself (in-place) but must not overlap ref_logits.
void check_token_logprobs_kl_backward_args(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                           const TensorView& lse, const TensorView& ref_lse,
                                           const TensorView& entropy, const TensorView& kl,
                                           const TensorView& grad_logp, const TensorView& grad_entropy,
                                           const TensorView& grad_kl, const TensorView& grad_logits);

// CPU engine: rows in parallel (OpenMP), deterministic for any thread count. A token id outside
// [0, V), NaN or +inf in either row, or a row with no finite logit throws grpokit::Error naming the
// argument and the row.
void token_logprobs_kl_cpu(const TokenLogprobArgs& in, const TensorView& ref_logits, const TensorView& logp,
                           const TensorView& entropy, const TensorView& kl, const TensorView& lse,
                           const TensorView& ref_lse);
void token_logprobs_kl_backward_cpu(const TokenLogprobArgs& in, const TensorView& ref_logits,
                                    const TensorView& lse, const TensorView& ref_lse,
                                    const TensorView& entropy, const TensorView& kl,
                                    const TensorView& grad_logp, const TensorView& grad_entropy,
                                    const TensorView& grad_kl, const TensorView& grad_logits);

}  // namespace grpokit
