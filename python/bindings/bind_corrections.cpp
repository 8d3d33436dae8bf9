// Train–inference corrections (both backends): importance weights and rejection masks.
#include <pybind11/stl.h>

#include <initializer_list>
#include <string>
#include <utility>
#include <vector>

#include "grpokit/corrections.hpp"
#include "ops.hpp"
#include "tensor_import.hpp"

namespace grpokit {
namespace bindings {
namespace {

// The arrays both corrections take, imported in argument order (a braced list evaluates left to right).
struct CorrectionArrays {
  Imported trainer, sampler, mask, out, metrics, workspace;
};

CorrectionArrays import_correction_arrays(py::object trainer_logp, py::object sampler_logp, py::object mask,
                                          py::object out, const char* out_name, py::object metrics,
                                          py::object workspace, std::intptr_t stream) {
  return {import_array(trainer_logp, "trainer_logp", stream, false),
          import_array(sampler_logp, "sampler_logp", stream, false),
          import_array(mask, "mask", stream, false),
          import_array(out, out_name, stream, true),
          import_array(metrics, "metrics", stream, true),
          import_array(workspace, "workspace", stream, true)};
}

// The enumerator named `got` (the error names the argument and every choice).
template <class E>
E one_of(const char* arg, const std::string& got, std::initializer_list<std::pair<const char*, E>> choices) {
  std::string names;
  for (const auto& [name, value] : choices) {
    if (got == name) return value;
    names += std::string(names.empty() ? "'" : ", '") + name + "'";
  }
  value_error(arg, ": expected one of ", names, ", got '", got, "'");
  return choices.begin()->second;  // not reached: value_error throws
}

}  // namespace

void bind_corrections(py::module_& m, const Backend& backend) {
  m.def("importance_metric_names", &importance_metric_names,
        "Names of the metric slots written by importance_weights, in order.");
  m.def(
      "importance_weights",
      [backend](py::object trainer_logp, py::object sampler_logp, py::object mask, py::object weights,
                py::object metrics, const std::string& level, const std::string& mode, double clip_min,
                double clip_max, double log_clamp, bool batch_normalize, double geo_eps,
                py::object segment_ids, py::object workspace, std::intptr_t stream) {
        ImportanceOptions opt;
        opt.level = one_of<IsLevel>("level", level,
                                    {{"token", IsLevel::Token},
                                     {"sequence", IsLevel::Sequence},
                                     {"geometric", IsLevel::Geometric},
                                     {"segment", IsLevel::Segment}});
        opt.mode = one_of<IsMode>(
            "mode", mode,
            {{"truncate", IsMode::Truncate}, {"mask", IsMode::Mask}, {"geo_mask", IsMode::GeoMask}});
        opt.geo_eps = geo_eps;
        opt.clip_min = clip_min;
        opt.clip_max = clip_max;
        opt.log_clamp = log_clamp;
        opt.batch_normalize = batch_normalize;
        const CorrectionArrays x = import_correction_arrays(trainer_logp, sampler_logp, mask, weights,
                                                            "weights", metrics, workspace, stream);
        const Imported ids = import_array(segment_ids, "segment_ids", stream, false);
        opt.segment_ids = ids.view();
        py::gil_scoped_release nogil;
        backend.importance_weights(x.trainer.view(), x.sampler.view(), x.mask.view(), opt, x.out.view(),
                                   x.metrics.view(), x.workspace.view(), stream);
      },
      py::arg("trainer_logp"), py::arg("sampler_logp"), py::arg("mask"), py::arg("weights"),
      py::arg("metrics"), py::arg("level"), py::arg("mode"), py::arg("clip_min"), py::arg("clip_max"),
      py::arg("log_clamp"), py::arg("batch_normalize"), py::arg("geo_eps"),
      py::arg("segment_ids") = py::none(), py::arg("workspace") = py::none(), py::arg("stream") = 0,
      "Importance weights and their metrics. See grpokit.importance_weights.");
  m.def("rejection_metric_names", &rejection_metric_names, py::arg("criteria"),
        "Names of the metric slots written by rejection_mask for these criteria, in order.");
  m.def(
      "rejection_mask",
      [backend](py::object trainer_logp, py::object sampler_logp, py::object mask, py::object keep,
                py::object metrics, const std::vector<std::string>& criteria,
                const std::vector<double>& lower, const std::vector<double>& upper, py::object workspace,
                std::intptr_t stream) {
        if (lower.size() != criteria.size() || upper.size() != criteria.size())
          value_error("thresholds: expected one (lower, upper) pair per criterion");
        std::vector<RejectionCriterion> parsed;
        for (size_t i = 0; i < criteria.size(); ++i) {
          RejectionCriterion c = parse_rejection_criterion(criteria[i]);
          c.lower = lower[i];
          c.upper = upper[i];
          parsed.push_back(c);
        }
        const CorrectionArrays x = import_correction_arrays(trainer_logp, sampler_logp, mask, keep, "keep",
                                                            metrics, workspace, stream);
        py::gil_scoped_release nogil;
        backend.rejection_mask(x.trainer.view(), x.sampler.view(), x.mask.view(), parsed, x.out.view(),
                               x.metrics.view(), x.workspace.view(), stream);
      },
      py::arg("trainer_logp"), py::arg("sampler_logp"), py::arg("mask"), py::arg("keep"), py::arg("metrics"),
      py::arg("criteria"), py::arg("lower"), py::arg("upper"), py::arg("workspace") = py::none(),
      py::arg("stream") = 0, "Rejection-sampling keep mask and metrics. See grpokit.rejection_mask.");
  m.def("variance_proxy_metric_names", &variance_proxy_metric_names,
        "Names of the metric slots written by variance_proxy, in order.");
  m.def(
      "variance_proxy",
      [backend](py::object logp, py::object sum_pi_squared, py::object advantages, py::object mask,
                py::object is_weights, py::object metrics, double gradient_norm, py::object workspace,
                std::intptr_t stream) {
        const Imported lp = import_array(logp, "logp", stream, false);
        const Imported spp = import_array(sum_pi_squared, "sum_pi_squared", stream, false);
        const Imported adv = import_array(advantages, "advantages", stream, false);
        const Imported msk = import_array(mask, "mask", stream, false);
        const Imported rho = import_array(is_weights, "is_weights", stream, false);
        const Imported out = import_array(metrics, "metrics", stream, true);
        const Imported ws = import_array(workspace, "workspace", stream, true);
        const VarianceProxyInputs in{lp.view(), spp.view(), adv.view(), msk.view(), rho.view()};
        py::gil_scoped_release nogil;
        backend.variance_proxy(in, gradient_norm, out.view(), ws.view(), stream);
      },
      py::arg("logp"), py::arg("sum_pi_squared"), py::arg("advantages"), py::arg("mask"),
      py::arg("is_weights"), py::arg("metrics"), py::arg("gradient_norm"), py::arg("workspace") = py::none(),
      py::arg("stream") = 0, "verl's variance-proxy metrics. See grpokit.variance_proxy.");
  m.def("variance_proxy_workspace_size", backend.variance_proxy_workspace_size, py::arg("num_rows"),
        "float64 elements of scratch variance_proxy needs (0: none).");
  m.def("importance_workspace_size", backend.importance_workspace_size, py::arg("num_rows"),
        "float64 elements of scratch importance_weights needs (0: none).");
  m.def("rejection_workspace_size", backend.rejection_workspace_size, py::arg("num_rows"),
        py::arg("num_criteria"), "float64 elements of scratch rejection_mask needs (0: none).");
}

}  // namespace bindings
}  // namespace grpokit
