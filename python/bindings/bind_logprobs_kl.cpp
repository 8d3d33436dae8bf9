// token_logprobs_kl[_backward]: the full-vocabulary KL against a reference, fused with the token
// log-probabilities (grpokit/logprobs_kl.hpp). Conversion and dispatch only.
#include "ops.hpp"
#include "tensor_import.hpp"

namespace grpokit {
namespace bindings {

namespace {

// Both rows of logits and the token ids, imported; the engine's arguments view them.
struct KlInputs {
  Imported x, y, ids;
  TokenLogprobArgs args(double temperature) const { return {x.view(), ids.view(), temperature}; }
};

KlInputs import_kl(py::object logits, py::object ref_logits, py::object token_ids, std::intptr_t stream) {
  return {import_array(logits, "logits", stream, false),
          import_array(ref_logits, "ref_logits", stream, false),
          import_array(token_ids, "token_ids", stream, false)};
}

}  // namespace

void bind_logprobs_kl(py::module_& m, const Backend& backend) {
  auto require = [backend](bool available) {
    if (!available)
      not_implemented("ref_logits: the full KL is not implemented on ", backend.name,
                      " yet; pass CPU arrays");
  };
  m.def(
      "token_logprobs_kl",
      [backend, require](py::object logits, py::object ref_logits, py::object token_ids, py::object logp,
                         py::object entropy, py::object kl, py::object lse, py::object ref_lse,
                         double temperature, std::intptr_t stream) {
        require(backend.token_logprobs_kl);
        const KlInputs in = import_kl(logits, ref_logits, token_ids, stream);
        const Imported lp = import_array(logp, "logp", stream, true),
                       h = import_array(entropy, "entropy", stream, true),
                       k = import_array(kl, "kl", stream, true), l = import_array(lse, "lse", stream, true),
                       lr = import_array(ref_lse, "ref_lse", stream, true);
        py::gil_scoped_release nogil;
        backend.token_logprobs_kl(in.args(temperature), in.y.view(), lp.view(), h.view(), k.view(), l.view(),
                                  lr.view(), stream);
      },
      py::arg("logits"), py::arg("ref_logits"), py::arg("token_ids"), py::arg("logp"), py::arg("entropy"),
      py::arg("kl"), py::arg("lse"), py::arg("ref_lse"), py::arg("temperature"), py::arg("stream") = 0,
      "Per-row log-probability, entropy, KL(policy || reference) over the vocabulary and both "
      "log-sum-exps into logp/entropy/kl/lse/ref_lse. See grpokit.token_logprobs_kl.");
  m.def(
      "token_logprobs_kl_backward",
      [backend, require](py::object logits, py::object ref_logits, py::object token_ids, py::object lse,
                         py::object ref_lse, py::object entropy, py::object kl, py::object grad_logp,
                         py::object grad_entropy, py::object grad_kl, py::object grad_logits,
                         double temperature, std::intptr_t stream) {
        require(backend.token_logprobs_kl_backward);
        const KlInputs in = import_kl(logits, ref_logits, token_ids, stream);
        const Imported l = import_array(lse, "lse", stream, false),
                       lr = import_array(ref_lse, "ref_lse", stream, false),
                       h = import_array(entropy, "entropy", stream, false),
                       k = import_array(kl, "kl", stream, false);
        const Imported ga = import_array(grad_logp, "grad_logp", stream, false),
                       gb = import_array(grad_entropy, "grad_entropy", stream, false),
                       gk = import_array(grad_kl, "grad_kl", stream, false);
        Imported g = import_array(grad_logits, "grad_logits", stream, true);
        py::gil_scoped_release nogil;
        backend.token_logprobs_kl_backward(in.args(temperature), in.y.view(), l.view(), lr.view(), h.view(),
                                           k.view(), ga.view(), gb.view(), gk.view(), g.view(), stream);
      },
      py::arg("logits"), py::arg("ref_logits"), py::arg("token_ids"), py::arg("lse"), py::arg("ref_lse"),
      py::arg("entropy"), py::arg("kl"), py::arg("grad_logp"), py::arg("grad_entropy"), py::arg("grad_kl"),
      py::arg("grad_logits"), py::arg("temperature"), py::arg("stream") = 0,
      "Policy logits gradient from upstream gradients of logp, entropy and kl into grad_logits (may be the "
      "logits themselves). See grpokit.token_logprobs_kl_backward.");
}

}  // namespace bindings
}  // namespace grpokit
