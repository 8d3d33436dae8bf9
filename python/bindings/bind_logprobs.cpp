#include "ops.hpp"
#include "tensor_import.hpp"

namespace grpokit {
namespace bindings {
namespace {

// The inputs of token_logprobs[_backward], imported; the engine's arguments view them.
struct TokenInputs {
  Imported logits, ids;
  TokenLogprobArgs args(double temperature) const { return {logits.view(), ids.view(), temperature}; }
};

TokenInputs import_token(py::object logits, py::object token_ids, std::intptr_t stream) {
  return {import_array(logits, "logits", stream, false), import_array(token_ids, "token_ids", stream, false)};
}

// The inputs of the linear_* functions, imported; the engine's arguments view them.
struct LinearInputs {
  Imported hidden, weight, ids;
  LinearLogprobArgs args(double temperature, int64_t chunk_size) const {
    LinearLogprobArgs in;
    in.hidden = hidden.view();
    in.weight = weight.view();
    in.token_ids = ids.view();
    in.temperature = temperature;
    in.chunk_size = chunk_size;
    return in;
  }
};

SamplerConvention sampler_convention(const std::string& name) {
  if (name == "vllm") return SamplerConvention::VLLM;
  if (name == "sglang") return SamplerConvention::SGLang;
  value_error("sampler: expected \"vllm\" or \"sglang\", got \"", name, "\"");
}

// The sampler's saved per-row arrays and parameters, imported; the engine's SamplerArgs view them.
struct SamplerInputs {
  Imported kept_logmass, keep_min, top_k, top_p, min_p;
  SamplerArgs args(const std::string& convention, bool entropy_over_kept) const {
    return {top_k.view(), top_p.view(), min_p.view(), sampler_convention(convention), entropy_over_kept};
  }
};

SamplerInputs import_sampler(py::object kept_logmass, py::object keep_min, py::object top_k, py::object top_p,
                             py::object min_p, bool outputs, std::intptr_t stream) {
  return {import_array(kept_logmass, "kept_logmass", stream, outputs),
          import_array(keep_min, "keep_min", stream, outputs), import_array(top_k, "top_k", stream, false),
          import_array(top_p, "top_p", stream, false), import_array(min_p, "min_p", stream, false)};
}

LinearInputs import_linear(py::object hidden, py::object weight, py::object token_ids, std::intptr_t stream) {
  return {import_array(hidden, "hidden", stream, false), import_array(weight, "weight", stream, false),
          import_array(token_ids, "token_ids", stream, false)};
}

// The forward functions' per-row results, imported as outputs.
struct RowOutputs {
  Imported logp, entropy, lse;
};

RowOutputs import_rows(py::object logp, py::object entropy, py::object lse, std::intptr_t stream) {
  return {import_array(logp, "logp", stream, true), import_array(entropy, "entropy", stream, true),
          import_array(lse, "lse", stream, true)};
}

// What every backward function reads besides its inputs: the forward's lse and entropy, the upstream
// gradients.
struct Upstream {
  Imported lse, entropy, grad_logp, grad_entropy;
};

Upstream import_upstream(py::object lse, py::object entropy, py::object grad_logp, py::object grad_entropy,
                         std::intptr_t stream) {
  return {import_array(lse, "lse", stream, false), import_array(entropy, "entropy", stream, false),
          import_array(grad_logp, "grad_logp", stream, false),
          import_array(grad_entropy, "grad_entropy", stream, false)};
}

// The sampler's kept set as the backward functions read it (the forward's kept_logmass and keep_min).
SamplerInputs import_kept(py::object kept_logmass, py::object keep_min, std::intptr_t stream) {
  return import_sampler(kept_logmass, keep_min, py::none(), py::none(), py::none(), false, stream);
}

void require_sampler(bool available, const Backend& backend) {
  if (!available)
    not_implemented("top_k/top_p/min_p: not implemented on ", backend.name, " yet; pass CPU arrays");
}

// The kept set the sampler exported (CSR), imported; the engine's KeepArgs view it.
struct KeepInputs {
  Imported ids, offsets;
  KeepArgs args(bool entropy_over_kept) const { return {ids.view(), offsets.view(), entropy_over_kept}; }
};

KeepInputs import_keep(py::object keep_ids, py::object keep_offsets, std::intptr_t stream) {
  return {import_array(keep_ids, "keep_ids", stream, false),
          import_array(keep_offsets, "keep_offsets", stream, false)};
}

void require_keep(bool available, const Backend& backend) {
  if (!available)
    not_implemented("keep: replay is not implemented on ", backend.name, " yet; pass CPU arrays");
}

}  // namespace

void bind_logprobs(py::module_& m, const Backend& backend) {
  m.def(
      "token_logprobs",
      [backend](py::object logits, py::object token_ids, py::object logp, py::object entropy, py::object lse,
                double temperature, py::object sum_sq_probs, std::intptr_t stream) {
        const TokenInputs x = import_token(logits, token_ids, stream);
        const RowOutputs o = import_rows(logp, entropy, lse, stream);
        Imported sq = import_array(sum_sq_probs, "sum_sq_probs", stream, true);
        py::gil_scoped_release nogil;
        backend.token_logprobs(x.args(temperature), o.logp.view(), o.entropy.view(), o.lse.view(), sq.view(),
                               stream);
      },
      py::arg("logits"), py::arg("token_ids"), py::arg("logp"), py::arg("entropy"), py::arg("lse"),
      py::arg("temperature"), py::arg("sum_sq_probs") = py::none(), py::arg("stream") = 0,
      "Per-row log-probability, entropy (optional), log-sum-exp and Σπ² (optional) into "
      "logp/entropy/lse/sum_sq_probs. See grpokit.token_logprobs.");
  m.def(
      "token_logprobs_backward",
      [backend](py::object logits, py::object token_ids, py::object lse, py::object entropy,
                py::object grad_logp, py::object grad_entropy, py::object grad_logits, double temperature,
                std::intptr_t stream) {
        const TokenInputs x = import_token(logits, token_ids, stream);
        const Upstream u = import_upstream(lse, entropy, grad_logp, grad_entropy, stream);
        Imported g = import_array(grad_logits, "grad_logits", stream, true);
        py::gil_scoped_release nogil;
        backend.token_logprobs_backward(x.args(temperature), u.lse.view(), u.entropy.view(),
                                        u.grad_logp.view(), u.grad_entropy.view(), g.view(), stream);
      },
      py::arg("logits"), py::arg("token_ids"), py::arg("lse"), py::arg("entropy"), py::arg("grad_logp"),
      py::arg("grad_entropy"), py::arg("grad_logits"), py::arg("temperature"), py::arg("stream") = 0,
      "Logits gradient from upstream gradients of logp and entropy into grad_logits (may be the "
      "logits themselves). See grpokit.token_logprobs_backward.");

  m.def(
      "token_logprobs_sampler",
      [backend](py::object logits, py::object token_ids, py::object logp, py::object entropy, py::object lse,
                py::object kept_logmass, py::object keep_min, double temperature, py::object top_k,
                py::object top_p, py::object min_p, const std::string& convention, bool entropy_over_kept,
                std::intptr_t stream) {
        require_sampler(backend.token_logprobs_sampler, backend);
        const TokenInputs x = import_token(logits, token_ids, stream);
        const RowOutputs o = import_rows(logp, entropy, lse, stream);
        const SamplerInputs si = import_sampler(kept_logmass, keep_min, top_k, top_p, min_p, true, stream);
        const SamplerArgs s = si.args(convention, entropy_over_kept);
        py::gil_scoped_release nogil;
        backend.token_logprobs_sampler(x.args(temperature), s, o.logp.view(), o.entropy.view(), o.lse.view(),
                                       si.kept_logmass.view(), si.keep_min.view(), stream);
      },
      py::arg("logits"), py::arg("token_ids"), py::arg("logp"), py::arg("entropy"), py::arg("lse"),
      py::arg("kept_logmass"), py::arg("keep_min"), py::arg("temperature"), py::arg("top_k"),
      py::arg("top_p"), py::arg("min_p"), py::arg("convention"), py::arg("entropy_over_kept"),
      py::arg("stream") = 0,
      "Per-row log-probability under the sampler's truncated distribution, entropy (optional), lse, "
      "log kept mass and smallest kept logit. See grpokit.token_logprobs.");
  m.def(
      "token_logprobs_sampler_backward",
      [backend](py::object logits, py::object token_ids, py::object lse, py::object kept_logmass,
                py::object keep_min, py::object entropy, py::object grad_logp, py::object grad_entropy,
                py::object grad_logits, double temperature, bool entropy_over_kept, std::intptr_t stream) {
        require_sampler(backend.token_logprobs_sampler_backward, backend);
        const TokenInputs x = import_token(logits, token_ids, stream);
        const Upstream u = import_upstream(lse, entropy, grad_logp, grad_entropy, stream);
        const SamplerInputs si = import_kept(kept_logmass, keep_min, stream);
        Imported g = import_array(grad_logits, "grad_logits", stream, true);
        py::gil_scoped_release nogil;
        backend.token_logprobs_sampler_backward(x.args(temperature), entropy_over_kept, u.lse.view(),
                                                si.kept_logmass.view(), si.keep_min.view(), u.entropy.view(),
                                                u.grad_logp.view(), u.grad_entropy.view(), g.view(), stream);
      },
      py::arg("logits"), py::arg("token_ids"), py::arg("lse"), py::arg("kept_logmass"), py::arg("keep_min"),
      py::arg("entropy"), py::arg("grad_logp"), py::arg("grad_entropy"), py::arg("grad_logits"),
      py::arg("temperature"), py::arg("entropy_over_kept"), py::arg("stream") = 0,
      "Logits gradient of token_logprobs_sampler with the kept set held fixed. See "
      "grpokit.token_logprobs_backward.");

  m.def(
      "token_logprobs_keep",
      [backend](py::object logits, py::object token_ids, py::object logp, py::object entropy, py::object lse,
                py::object kept_logmass, double temperature, py::object keep_ids, py::object keep_offsets,
                bool entropy_over_kept, std::intptr_t stream) {
        require_keep(backend.token_logprobs_keep, backend);
        const TokenInputs x = import_token(logits, token_ids, stream);
        const RowOutputs o = import_rows(logp, entropy, lse, stream);
        Imported km = import_array(kept_logmass, "kept_logmass", stream, true);
        const KeepInputs k = import_keep(keep_ids, keep_offsets, stream);
        py::gil_scoped_release nogil;
        backend.token_logprobs_keep(x.args(temperature), k.args(entropy_over_kept), o.logp.view(),
                                    o.entropy.view(), o.lse.view(), km.view(), stream);
      },
      py::arg("logits"), py::arg("token_ids"), py::arg("logp"), py::arg("entropy"), py::arg("lse"),
      py::arg("kept_logmass"), py::arg("temperature"), py::arg("keep_ids"), py::arg("keep_offsets"),
      py::arg("entropy_over_kept"), py::arg("stream") = 0,
      "Per-row log-probability under the kept set the sampler exported (CSR keep_ids/keep_offsets), entropy "
      "(optional), lse and log kept mass. See grpokit.token_logprobs.");
  m.def(
      "token_logprobs_keep_backward",
      [backend](py::object logits, py::object token_ids, py::object lse, py::object kept_logmass,
                py::object entropy, py::object grad_logp, py::object grad_entropy, py::object grad_logits,
                double temperature, py::object keep_ids, py::object keep_offsets, bool entropy_over_kept,
                std::intptr_t stream) {
        require_keep(backend.token_logprobs_keep_backward, backend);
        const TokenInputs x = import_token(logits, token_ids, stream);
        const Upstream u = import_upstream(lse, entropy, grad_logp, grad_entropy, stream);
        Imported km = import_array(kept_logmass, "kept_logmass", stream, false);
        const KeepInputs k = import_keep(keep_ids, keep_offsets, stream);
        Imported g = import_array(grad_logits, "grad_logits", stream, true);
        py::gil_scoped_release nogil;
        backend.token_logprobs_keep_backward(x.args(temperature), k.args(entropy_over_kept), u.lse.view(),
                                             km.view(), u.entropy.view(), u.grad_logp.view(),
                                             u.grad_entropy.view(), g.view(), stream);
      },
      py::arg("logits"), py::arg("token_ids"), py::arg("lse"), py::arg("kept_logmass"), py::arg("entropy"),
      py::arg("grad_logp"), py::arg("grad_entropy"), py::arg("grad_logits"), py::arg("temperature"),
      py::arg("keep_ids"), py::arg("keep_offsets"), py::arg("entropy_over_kept"), py::arg("stream") = 0,
      "Logits gradient of token_logprobs_keep with the kept set held fixed. See "
      "grpokit.token_logprobs_backward.");

  m.def(
      "linear_token_logprobs_sampler",
      [backend](py::object hidden, py::object weight, py::object token_ids, py::object logp,
                py::object entropy, py::object lse, py::object kept_logmass, py::object keep_min,
                double temperature, py::object top_k, py::object top_p, py::object min_p,
                const std::string& convention, bool entropy_over_kept, std::intptr_t stream) {
        require_sampler(backend.linear_token_logprobs_sampler, backend);
        const LinearInputs x = import_linear(hidden, weight, token_ids, stream);
        const RowOutputs o = import_rows(logp, entropy, lse, stream);
        const SamplerInputs si = import_sampler(kept_logmass, keep_min, top_k, top_p, min_p, true, stream);
        const SamplerArgs s = si.args(convention, entropy_over_kept);
        const LinearLogprobArgs in = x.args(temperature, 0);
        py::gil_scoped_release nogil;
        backend.linear_token_logprobs_sampler(in, s, o.logp.view(), o.entropy.view(), o.lse.view(),
                                              si.kept_logmass.view(), si.keep_min.view(), stream);
      },
      py::arg("hidden"), py::arg("weight"), py::arg("token_ids"), py::arg("logp"), py::arg("entropy"),
      py::arg("lse"), py::arg("kept_logmass"), py::arg("keep_min"), py::arg("temperature"), py::arg("top_k"),
      py::arg("top_p"), py::arg("min_p"), py::arg("convention"), py::arg("entropy_over_kept"),
      py::arg("stream") = 0,
      "token_logprobs_sampler of hidden · weightᵀ. See grpokit.linear_token_logprobs.");
  m.def(
      "linear_token_logprobs_sampler_backward",
      [backend](py::object hidden, py::object weight, py::object token_ids, py::object lse,
                py::object kept_logmass, py::object keep_min, py::object entropy, py::object grad_logp,
                py::object grad_entropy, py::object grad_hidden, py::object grad_weight, double temperature,
                bool entropy_over_kept, std::intptr_t stream) {
        require_sampler(backend.linear_token_logprobs_sampler_backward, backend);
        const LinearInputs x = import_linear(hidden, weight, token_ids, stream);
        const Upstream u = import_upstream(lse, entropy, grad_logp, grad_entropy, stream);
        const SamplerInputs si = import_kept(kept_logmass, keep_min, stream);
        Imported gh = import_array(grad_hidden, "grad_hidden", stream, true);
        Imported gw = import_array(grad_weight, "grad_weight", stream, true);
        const LinearLogprobArgs in = x.args(temperature, 0);
        py::gil_scoped_release nogil;
        backend.linear_token_logprobs_sampler_backward(
            in, entropy_over_kept, u.lse.view(), si.kept_logmass.view(), si.keep_min.view(), u.entropy.view(),
            u.grad_logp.view(), u.grad_entropy.view(), gh.view(), gw.view(), stream);
      },
      py::arg("hidden"), py::arg("weight"), py::arg("token_ids"), py::arg("lse"), py::arg("kept_logmass"),
      py::arg("keep_min"), py::arg("entropy"), py::arg("grad_logp"), py::arg("grad_entropy"),
      py::arg("grad_hidden"), py::arg("grad_weight"), py::arg("temperature"), py::arg("entropy_over_kept"),
      py::arg("stream") = 0,
      "Gradients of linear_token_logprobs_sampler. See grpokit.linear_token_logprobs_backward.");

  m.def(
      "linear_token_logprobs_keep",
      [backend](py::object hidden, py::object weight, py::object token_ids, py::object logp,
                py::object entropy, py::object lse, py::object kept_logmass, double temperature,
                py::object keep_ids, py::object keep_offsets, bool entropy_over_kept, std::intptr_t stream) {
        require_keep(backend.linear_token_logprobs_keep, backend);
        const LinearInputs x = import_linear(hidden, weight, token_ids, stream);
        const RowOutputs o = import_rows(logp, entropy, lse, stream);
        Imported km = import_array(kept_logmass, "kept_logmass", stream, true);
        const KeepInputs k = import_keep(keep_ids, keep_offsets, stream);
        const LinearLogprobArgs in = x.args(temperature, 0);
        py::gil_scoped_release nogil;
        backend.linear_token_logprobs_keep(in, k.args(entropy_over_kept), o.logp.view(), o.entropy.view(),
                                           o.lse.view(), km.view(), stream);
      },
      py::arg("hidden"), py::arg("weight"), py::arg("token_ids"), py::arg("logp"), py::arg("entropy"),
      py::arg("lse"), py::arg("kept_logmass"), py::arg("temperature"), py::arg("keep_ids"),
      py::arg("keep_offsets"), py::arg("entropy_over_kept"), py::arg("stream") = 0,
      "token_logprobs_keep of hidden · weightᵀ. See grpokit.linear_token_logprobs.");
  m.def(
      "linear_token_logprobs_keep_backward",
      [backend](py::object hidden, py::object weight, py::object token_ids, py::object lse,
                py::object kept_logmass, py::object entropy, py::object grad_logp, py::object grad_entropy,
                py::object grad_hidden, py::object grad_weight, double temperature, py::object keep_ids,
                py::object keep_offsets, bool entropy_over_kept, std::intptr_t stream) {
        require_keep(backend.linear_token_logprobs_keep_backward, backend);
        const LinearInputs x = import_linear(hidden, weight, token_ids, stream);
        const Upstream u = import_upstream(lse, entropy, grad_logp, grad_entropy, stream);
        Imported km = import_array(kept_logmass, "kept_logmass", stream, false);
        const KeepInputs k = import_keep(keep_ids, keep_offsets, stream);
        Imported gh = import_array(grad_hidden, "grad_hidden", stream, true);
        Imported gw = import_array(grad_weight, "grad_weight", stream, true);
        const LinearLogprobArgs in = x.args(temperature, 0);
        py::gil_scoped_release nogil;
        backend.linear_token_logprobs_keep_backward(in, k.args(entropy_over_kept), u.lse.view(), km.view(),
                                                    u.entropy.view(), u.grad_logp.view(),
                                                    u.grad_entropy.view(), gh.view(), gw.view(), stream);
      },
      py::arg("hidden"), py::arg("weight"), py::arg("token_ids"), py::arg("lse"), py::arg("kept_logmass"),
      py::arg("entropy"), py::arg("grad_logp"), py::arg("grad_entropy"), py::arg("grad_hidden"),
      py::arg("grad_weight"), py::arg("temperature"), py::arg("keep_ids"), py::arg("keep_offsets"),
      py::arg("entropy_over_kept"), py::arg("stream") = 0,
      "Gradients of linear_token_logprobs_keep with the kept set held fixed. See "
      "grpokit.linear_token_logprobs_backward.");

  m.def(
      "linear_workspace_bytes",
      [backend](py::object hidden, py::object weight, py::object token_ids, int64_t chunk_size, bool backward,
                std::intptr_t stream) {
        const LinearInputs x = import_linear(hidden, weight, token_ids, stream);
        return backend.linear_workspace_bytes(x.args(1.0, chunk_size), backward);
      },
      py::arg("hidden"), py::arg("weight"), py::arg("token_ids"), py::arg("chunk_size"), py::arg("backward"),
      py::arg("stream") = 0, "Bytes of device scratch linear_token_logprobs[_backward] needs.");
  m.def(
      "linear_token_logprobs",
      [backend](py::object hidden, py::object weight, py::object token_ids, py::object logp,
                py::object entropy, py::object lse, py::object workspace, double temperature,
                int64_t chunk_size, py::object sum_sq_probs, std::intptr_t stream) {
        const LinearInputs x = import_linear(hidden, weight, token_ids, stream);
        const RowOutputs o = import_rows(logp, entropy, lse, stream);
        Imported ws = import_array(workspace, "workspace", stream, true);
        Imported sq = import_array(sum_sq_probs, "sum_sq_probs", stream, true);
        const LinearLogprobArgs in = x.args(temperature, chunk_size);
        py::gil_scoped_release nogil;
        backend.linear_token_logprobs(in, o.logp.view(), o.entropy.view(), o.lse.view(), sq.view(), ws.view(),
                                      stream);
      },
      py::arg("hidden"), py::arg("weight"), py::arg("token_ids"), py::arg("logp"), py::arg("entropy"),
      py::arg("lse"), py::arg("workspace"), py::arg("temperature"), py::arg("chunk_size"),
      py::arg("sum_sq_probs") = py::none(), py::arg("stream") = 0,
      "Per-token logp/entropy/lse (and Σπ², optional) of hidden · weightᵀ. See "
      "grpokit.linear_token_logprobs.");
  m.def(
      "linear_token_logprobs_backward",
      [backend](py::object hidden, py::object weight, py::object token_ids, py::object lse,
                py::object entropy, py::object grad_logp, py::object grad_entropy, py::object grad_hidden,
                py::object grad_weight, py::object workspace, double temperature, int64_t chunk_size,
                std::intptr_t stream) {
        const LinearInputs x = import_linear(hidden, weight, token_ids, stream);
        const Upstream u = import_upstream(lse, entropy, grad_logp, grad_entropy, stream);
        Imported gh = import_array(grad_hidden, "grad_hidden", stream, true);
        Imported gw = import_array(grad_weight, "grad_weight", stream, true);
        Imported ws = import_array(workspace, "workspace", stream, true);
        const LinearLogprobArgs in = x.args(temperature, chunk_size);
        py::gil_scoped_release nogil;
        backend.linear_token_logprobs_backward(in, u.lse.view(), u.entropy.view(), u.grad_logp.view(),
                                               u.grad_entropy.view(), gh.view(), gw.view(), ws.view(),
                                               stream);
      },
      py::arg("hidden"), py::arg("weight"), py::arg("token_ids"), py::arg("lse"), py::arg("entropy"),
      py::arg("grad_logp"), py::arg("grad_entropy"), py::arg("grad_hidden"), py::arg("grad_weight"),
      py::arg("workspace"), py::arg("temperature"), py::arg("chunk_size"), py::arg("stream") = 0,
      "Gradients of hidden and weight. See grpokit.linear_token_logprobs_backward.");
}

}  // namespace bindings
}  // namespace grpokit
