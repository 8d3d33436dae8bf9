#include <string>
#include <vector>

#include <pybind11/stl.h>

#include "grpokit/loss.hpp"
#include "ops.hpp"
#include "tensor_import.hpp"

namespace grpokit {
namespace bindings {
namespace {

// A LossSpec from the Python record's fields (grpokit.LossSpec.engine_fields()).
LossSpec spec_from_dict(const py::dict& fields) {
  LossSpec spec;
  for (auto item : fields) {
    const std::string name = py::cast<std::string>(item.first);
    py::handle v = item.second;
    if (py::isinstance<py::str>(v))
      set_spec_field(spec, name, py::cast<std::string>(v));
    else if (py::isinstance<py::bool_>(v) || py::isinstance<py::int_>(v) || py::isinstance<py::float_>(v))
      set_spec_field(spec, name, py::cast<double>(v));
    else
      type_error(name, ": expected a number or a name, got ", std::string(py::str(py::type::of(v))));
  }
  return spec;
}

}  // namespace

void bind_loss(py::module_& m, const Backend& backend) {
  m.def(
      "policy_loss",
      [backend](const py::dict& spec_fields, py::object logp, py::object old_logp, py::object advantages,
                py::object mask, py::object ref_logp, py::object entropies, py::object sampling_logp,
                py::object cu_seqlens, py::object keep, py::object token_weights, py::object selection,
                py::object loss, py::object grad_logp, py::object grad_entropy, py::object per_token,
                py::object weights, py::object metrics, int num_threads, std::intptr_t stream,
                py::object workspace, py::object status) {
        if (backend.loss == nullptr)
          not_implemented("policy_loss: the ", backend.name, " backend has no loss kernels yet");
        const LossSpec spec = spec_from_dict(spec_fields);
        Imported a_lp = import_array(logp, "logp", stream, false);
        Imported a_old = import_array(old_logp, "old_logp", stream, false);
        Imported a_adv = import_array(advantages, "advantages", stream, false);
        Imported a_mask = import_array(mask, "mask", stream, false);
        Imported a_ref = import_array(ref_logp, "ref_logp", stream, false);
        Imported a_ent = import_array(entropies, "entropies", stream, false);
        Imported a_smp = import_array(sampling_logp, "sampling_logp", stream, false);
        Imported a_cu = import_array(cu_seqlens, "cu_seqlens", stream, false);
        Imported a_keep = import_array(keep, "keep", stream, false);
        Imported a_tw = import_array(token_weights, "token_weights", stream, false);
        Imported a_sel = import_array(selection, "selection", stream, false);
        Imported o_loss = import_array(loss, "loss", stream, true);
        Imported o_g = import_array(grad_logp, "grad_logp", stream, true);
        Imported o_gh = import_array(grad_entropy, "grad_entropy", stream, true);
        Imported o_pt = import_array(per_token, "per_token", stream, true);
        Imported o_w = import_array(weights, "weights", stream, true);
        Imported o_m = import_array(metrics, "metrics", stream, true);
        Imported o_ws = import_array(workspace, "workspace", stream, true);
        Imported o_st = import_array(status, "status", stream, true);
        LossInputs in{a_lp.view(),  a_old.view(), a_adv.view(),  a_mask.view(), a_ref.view(), a_ent.view(),
                      a_smp.view(), a_cu.view(),  a_keep.view(), a_tw.view(),   a_sel.view()};
        LossOutputs out{o_loss.view(), o_g.view(), o_gh.view(), o_pt.view(),
                        o_w.view(),    o_m.view(), o_ws.view(), o_st.view()};
        py::gil_scoped_release nogil;
        backend.loss(spec, in, out, num_threads, stream);
      },
      py::arg("spec"), py::arg("logp"), py::arg("old_logp"), py::arg("advantages"), py::arg("mask"),
      py::arg("ref_logp"), py::arg("entropies"), py::arg("sampling_logp"), py::arg("cu_seqlens"),
      py::arg("keep"), py::arg("token_weights"), py::arg("selection"), py::arg("loss"), py::arg("grad_logp"),
      py::arg("grad_entropy"), py::arg("per_token"), py::arg("weights"), py::arg("metrics"),
      py::arg("num_threads") = 0, py::arg("stream") = 0, py::arg("workspace") = py::none(),
      py::arg("status") = py::none(),
      "The unified surrogate loss and its gradient into caller-allocated outputs. See grpokit.policy_loss.");

  m.def(
      "loss_metric_names",
      [](const py::dict& spec_fields, bool has_entropies, bool has_sampling_logp) {
        LossInputs in;
        float dummy = 0.0f;
        if (has_entropies) in.entropies = make_view(&dummy, DType::Float32, {1});
        if (has_sampling_logp) in.sampling_logp = make_view(&dummy, DType::Float32, {1});
        return loss_metric_names(spec_from_dict(spec_fields), in);
      },
      py::arg("spec"), py::arg("has_entropies"), py::arg("has_sampling_logp"),
      "Names of the metrics policy_loss writes, in order.");
  m.def(
      "loss_has_entropy_grad",
      [](const py::dict& spec_fields, bool has_entropies) {
        return loss_has_entropy_grad(spec_from_dict(spec_fields), has_entropies);
      },
      py::arg("spec"), py::arg("has_entropies"));
  m.def(
      "validate_loss_spec", [](const py::dict& spec_fields) { validate_spec(spec_from_dict(spec_fields)); },
      py::arg("spec"), "Raises ValueError for invalid hyper-parameters.");
  m.def("loss_spec_enum_values", &spec_enum_values, py::arg("name"),
        "The accepted names of one rule field of LossSpec.");
  m.def(
      "loss_spec_fields",
      [] {
        static const char* const kinds[] = {"rule", "real", "flag", "unsettable", "count"};
        py::list out;
        for (const SpecField& f : loss_spec_fields()) {
          py::dict d;
          d["name"] = f.name;
          d["kind"] = kinds[static_cast<int>(f.kind)];
          if (f.kind == SpecFieldKind::Rule) {
            d["default"] = f.values[static_cast<size_t>(f.default_value)];
            d["values"] = f.values;
            d["docs"] = f.docs;
          } else if (f.kind == SpecFieldKind::Flag) {
            d["default"] = f.default_value != 0.0;
          } else {
            d["default"] = f.default_value;
          }
          if (f.kind == SpecFieldKind::Unsettable || f.kind == SpecFieldKind::Count) d["unset"] = f.unset;
          out.append(d);
        }
        return out;
      },
      "The fields of LossSpec in record order (grpokit/math/loss_spec.def): name, kind (rule | real | flag | "
      "unsettable | count), default, and the value read as unset (unsettable, count) or the accepted names "
      "and what each does (rule).");
}

}  // namespace bindings
}  // namespace grpokit
