// Token log-probabilities and entropies from hidden states and the output projection, without ever
// holding more than one tile of logits (chunked GEMM + online log-sum-exp), and their gradients
// with respect to the hidden states and the weight.
//
// logits = hidden · weightᵀ, then exactly grpokit/logprobs.hpp's formulas per row (sum_sq_probs,
// optional: Σ_v p_v² per row, forward only, as there).
// Shapes: hidden (N, H), weight (V, H), both with unit stride along H; token_ids (N,) int32/int64;
// logp, entropy, lse, sum_sq_probs (N,); grad_hidden (N, H) and grad_weight (V, H) contiguous, the dtype of
// their input. Memory beyond inputs and outputs: one (rows × chunk) tile of logits (and on the GPU its
// low-precision copy and a float32 (N, H) accumulator when hidden is not float32).
// Dtypes: CPU float32 (float32 GEMM and math) and float64; CUDA float32, bfloat16, float16 with
// float32 accumulation (cuBLAS).
#pragma once

#include <cstdint>

#include "grpokit/logprobs.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {

struct LinearLogprobArgs {
  TensorView hidden;
  TensorView weight;
  TensorView token_ids;
  double temperature = 1.0;
  int64_t chunk_size = 0;  // vocabulary entries per logits tile; 0 picks the engine's default
};

void check_linear_token_logprobs_args(const LinearLogprobArgs& in, const TensorView& logp,
                                      const TensorView& entropy, const TensorView& lse,
                                      const TensorView& sum_sq_probs = TensorView{});
// grad_hidden and grad_weight may each be undefined (not wanted).
void check_linear_token_logprobs_backward_args(const LinearLogprobArgs& in, const TensorView& lse,
                                               const TensorView& entropy, const TensorView& grad_logp,
                                               const TensorView& grad_entropy, const TensorView& grad_hidden,
                                               const TensorView& grad_weight);

// CPU engine (Eigen GEMM, OpenMP over rows). Token ids outside [0, V) and rows whose logits hold
// NaN/+inf throw grpokit::Error naming the row.
void linear_token_logprobs_cpu(const LinearLogprobArgs& in, const TensorView& logp, const TensorView& entropy,
                               const TensorView& lse, const TensorView& sum_sq_probs = TensorView{});
void linear_token_logprobs_backward_cpu(const LinearLogprobArgs& in, const TensorView& lse,
                                        const TensorView& entropy, const TensorView& grad_logp,
                                        const TensorView& grad_entropy, const TensorView& grad_hidden,
                                        const TensorView& grad_weight);

// Under the sampler's truncation (the outputs and semantics of token_logprobs_sampler_cpu). The
// selections need whole rows: tiles hold complete rows, in blocks of max(1, 2^24 / V) rows, so the
// weight is read once per block (more often than the untruncated op's 1024-row blocks when V > 16k).
void linear_token_logprobs_sampler_cpu(const LinearLogprobArgs& in, const SamplerArgs& s,
                                       const TensorView& logp, const TensorView& entropy,
                                       const TensorView& lse, const TensorView& kept_logmass,
                                       const TensorView& keep_min);
void linear_token_logprobs_sampler_backward_cpu(const LinearLogprobArgs& in, bool entropy_over_kept,
                                                const TensorView& lse, const TensorView& kept_logmass,
                                                const TensorView& keep_min, const TensorView& entropy,
                                                const TensorView& grad_logp, const TensorView& grad_entropy,
                                                const TensorView& grad_hidden, const TensorView& grad_weight);

// Replaying the kept set the sampler exported (the outputs and semantics of token_logprobs_keep_cpu;
// keep_offsets has N + 1 entries over hidden's rows). Tiles of whole rows as under truncation; the
// kept set's arrays are checked whole before the first tile.
void linear_token_logprobs_keep_cpu(const LinearLogprobArgs& in, const KeepArgs& k, const TensorView& logp,
                                    const TensorView& entropy, const TensorView& lse,
                                    const TensorView& kept_logmass);
void linear_token_logprobs_keep_backward_cpu(const LinearLogprobArgs& in, const KeepArgs& k,
                                             const TensorView& lse, const TensorView& kept_logmass,
                                             const TensorView& entropy, const TensorView& grad_logp,
                                             const TensorView& grad_entropy, const TensorView& grad_hidden,
                                             const TensorView& grad_weight);

}  // namespace grpokit
