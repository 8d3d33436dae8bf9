#include "ops.hpp"
#include "tensor_import.hpp"

namespace grpokit {
namespace bindings {

void bind_logprobs(py::module_& m, const Backend& backend) {
  m.def(
      "token_logprobs",
      [backend](py::object logits, py::object token_ids, py::object logp, py::object entropy,
                py::object lse, double temperature, std::intptr_t stream) {
        Imported x = import_array(logits, "logits", stream, false);
        Imported ids = import_array(token_ids, "token_ids", stream, false);
        Imported lp = import_array(logp, "logp", stream, true);
        Imported h = import_array(entropy, "entropy", stream, true);
        Imported l = import_array(lse, "lse", stream, true);
        const TokenLogprobArgs in{x.view(), ids.view(), temperature};
        py::gil_scoped_release nogil;
        backend.token_logprobs(in, lp.view(), h.view(), l.view(), stream);
      },
      py::arg("logits"), py::arg("token_ids"), py::arg("logp"), py::arg("entropy"), py::arg("lse"),
      py::arg("temperature"), py::arg("stream") = 0,
      "Per-row log-probability, entropy (optional) and log-sum-exp into logp/entropy/lse. See "
      "grpokit.token_logprobs.");
  m.def(
      "token_logprobs_backward",
      [backend](py::object logits, py::object token_ids, py::object lse, py::object entropy,
                py::object grad_logp, py::object grad_entropy, py::object grad_logits,
                double temperature, std::intptr_t stream) {
        Imported x = import_array(logits, "logits", stream, false);
        Imported ids = import_array(token_ids, "token_ids", stream, false);
        Imported l = import_array(lse, "lse", stream, false);
        Imported h = import_array(entropy, "entropy", stream, false);
        Imported ga = import_array(grad_logp, "grad_logp", stream, false);
        Imported gb = import_array(grad_entropy, "grad_entropy", stream, false);
        Imported g = import_array(grad_logits, "grad_logits", stream, true);
        const TokenLogprobArgs in{x.view(), ids.view(), temperature};
        py::gil_scoped_release nogil;
        backend.token_logprobs_backward(in, l.view(), h.view(), ga.view(), gb.view(), g.view(),
                                        stream);
      },
      py::arg("logits"), py::arg("token_ids"), py::arg("lse"), py::arg("entropy"),
      py::arg("grad_logp"), py::arg("grad_entropy"), py::arg("grad_logits"),
      py::arg("temperature"), py::arg("stream") = 0,
      "Logits gradient from upstream gradients of logp and entropy into grad_logits (may be the "
      "logits themselves). See grpokit.token_logprobs_backward.");
}

}  // namespace bindings
}  // namespace grpokit
