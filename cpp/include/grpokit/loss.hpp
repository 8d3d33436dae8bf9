// The unified GRPO surrogate loss: forward value and exact gradient of any GRPO-style method.
//
// A method is a LossSpec: ratio rule × surrogate (clip) rule × weight rule × regulariser ×
// aggregation, plus hyper-parameters. Presets (paper.*, trl.*, verl.*) are rows of this record,
// defined in the Python package (grpokit/_presets.py); the math lives in grpokit/math/loss.hpp.
//
// Conventions: loss = −J (to minimise); grad_logp = ∂loss/∂logp; σ lives in the
// advantages; the weight rule holds layout-independent factors (masks, keep flags, token weights,
// IS weights) and the aggregation every normaliser; counts that span micro-batches or ranks come
// from the caller (num_items_in_batch, num_sequences, dp_size).
//
// Layouts: padded (B, T) arrays with a (B, T) mask, or packed (N,) arrays with cu_seqlens (B+1,)
// (and an optional (N,) mask). Advantages are (B,) or per token (the layout of logp).
#pragma once

#include <cmath>
#include <cstdint>
#include <limits>
#include <string>
#include <vector>

#include "grpokit/loss_spec.hpp"
#include "grpokit/math/loss.hpp"
#include "grpokit/tensor.hpp"

namespace grpokit {

struct LossInputs {
  TensorView logp;           // (B, T) or (N,), float32/float64
  TensorView old_logp;       // same layout; undefined = on-policy (old = sg(logp))
  TensorView advantages;     // (B,) or the layout of logp; dtype of logp
  TensorView mask;  // same layout as logp (bool/int/float, nonzero = valid); undefined = all valid
  TensorView ref_logp;  // needed when beta != 0 and kl != None
  TensorView entropies;  // needed by entropy_coef, top_entropy_quantile, gtpo_entropy
  TensorView sampling_logp;  // sampler (vLLM) log-probs: OPSM and the sampler IS weight; NaN = unscored
  TensorView cu_seqlens;  // (B+1,) int32/int64 for packed inputs; undefined for padded
  TensorView keep;  // (B,) completion keep flags δ_i (GTPO); undefined = all kept
  TensorView token_weights;  // layout of logp: per-token weights λ (GTPO); undefined = 1
  TensorView selection;  // layout of logp (flags): the tokens Clip-Cov / KL-Cov act on
};

struct LossOutputs {
  TensorView loss;  // 1 element, dtype of logp
  TensorView grad_logp;  // layout of logp
  TensorView grad_entropy;  // layout of logp, or undefined (only when entropies enter the loss)
  TensorView per_token;  // layout of logp, or undefined: φ_{i,t} (0 at padding)
  TensorView weights;  // layout of logp, or undefined: ω_{i,t} (Prop. 1's effective α·s)
  TensorView metrics;  // (M,) float64, M = loss_metric_names(...).size()
  // CUDA only (the CPU engine ignores them): caller-allocated scratch, so kernels never allocate.
  TensorView workspace;  // float64, >= cuda::loss_workspace_size(B) elements
  TensorView status;  // int64 (4,) device-side value checks, or undefined (no checks)
};

// Whether the entropies receive a gradient under this spec (grad_entropy is then required).
bool loss_has_entropy_grad(const LossSpec& spec, bool has_entropies);

// Ids (grpokit/loss_metrics.hpp) of the metrics the engine writes, in order, for this spec and inputs.
std::vector<int> loss_metric_ids(const LossSpec& spec, const LossInputs& in);

// Names of the metrics the engine writes, in order, for this spec and these optional inputs.
std::vector<std::string> loss_metric_names(const LossSpec& spec, const LossInputs& in);

// Validates every argument (shapes, dtypes, devices, required inputs for the spec).
void check_loss_args(const LossSpec& spec, const LossInputs& in, const LossOutputs& out);

// The same with the GPU engine's dtypes: bfloat16/float16 logp too, every float array in logp's dtype.
void check_loss_args_any_float(const LossSpec& spec, const LossInputs& in, const LossOutputs& out);

// CPU engine. Rows are processed in parallel (OpenMP when available, `num_threads` <= 0: the
// runtime's default); every reduction runs in row order, so results are bitwise identical for any
// thread count. Value checks: NaN/inf at valid positions are errors (sampling_logp: NaN = unscored).
void policy_loss_cpu(const LossSpec& spec, const LossInputs& in, const LossOutputs& out, int num_threads = 0);

}  // namespace grpokit
