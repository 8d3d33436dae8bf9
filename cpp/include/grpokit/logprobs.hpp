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

// Row addressing shared by the engines: row r of a (N,) or (B, T) leading shape.
struct RowLayout {
  int64_t rows = 0;    // N or B·T
  int64_t inner = 1;   // T (1 for 2-D logits)
  int64_t vocab = 0;   // V
  static RowLayout of(const TensorView& logits);
};

}  // namespace grpokit
