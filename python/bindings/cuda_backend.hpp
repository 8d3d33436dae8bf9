// The Backend table of the CUDA kernels, filled once for every module that calls them (_cuda and the
// XLA FFI module _jax_ffi_cuda).
#pragma once

#include "grpokit_cuda.hpp"
#include "ops.hpp"

namespace grpokit::bindings {

inline const Backend& cuda_backend() {
  static const Backend gpu = [] {
    Backend b{};  // filled by name: adding an entry never reorders the others
    b.name = "cuda";
    b.advantages = &cuda::advantages;
    b.loss = &cuda::policy_loss;
    b.token_logprobs = &cuda::token_logprobs;
    b.token_logprobs_backward = &cuda::token_logprobs_backward;
    b.token_logprobs_kl = &cuda::token_logprobs_kl;
    b.token_logprobs_kl_backward = &cuda::token_logprobs_kl_backward;
    b.token_logprobs_sampler = &cuda::token_logprobs_sampler;
    b.token_logprobs_sampler_backward = &cuda::token_logprobs_sampler_backward;
    b.token_logprobs_keep = &cuda::token_logprobs_keep;
    b.token_logprobs_keep_backward = &cuda::token_logprobs_keep_backward;
    b.linear_workspace_bytes = &cuda::linear_workspace_bytes;
    b.linear_token_logprobs = &cuda::linear_token_logprobs;
    b.linear_token_logprobs_backward = &cuda::linear_token_logprobs_backward;
    b.adam_workspace_size = &cuda::adam_workspace_size;
    b.adam_state_stats = &cuda::adam_state_stats;
    b.adam_update = &cuda::adam_update;
    b.adam_rho = &cuda::adam_rho;
    b.adam_step_split = &cuda::adam_step_split;
    b.estimator_workspace_size = &cuda::estimator_workspace_size;
    b.estimator_advantages = &cuda::estimator_advantages;
    b.importance_workspace_size = &cuda::importance_workspace_size;
    b.rejection_workspace_size = &cuda::rejection_workspace_size;
    b.importance_weights = &cuda::importance_weights;
    b.rejection_mask = &cuda::rejection_mask;
    b.variance_proxy_workspace_size = &cuda::variance_proxy_workspace_size;
    b.variance_proxy = &cuda::variance_proxy;
    return b;
  }();
  return gpu;
}

}  // namespace grpokit::bindings
