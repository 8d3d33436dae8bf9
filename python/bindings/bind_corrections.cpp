// Train–inference corrections (both backends): importance weights and rejection masks.
#include <pybind11/stl.h>

#include <string>
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

// The enumerator named `got`, one of two (the error names the argument and both choices).
template <class E>
E one_of(const char* arg, const std::string& got, const char* a, E ea, const char* b, E eb) {
  if (got == a) return ea;
  if (got != b) value_error(arg, ": expected one of '", a, "', '", b, "', got '", got, "'");
  return eb;
}

}  // namespace

void bind_corrections(py::module_& m, const Backend& backend) {
  m.def("importance_metric_names", &importance_metric_names,
        "Names of the metric slots written by importance_weights, in order.");
  m.def(
      "importance_weights",
      [backend](py::object trainer_logp, py::object sampler_logp, py::object mask, py::object weights,
                py::object metrics, const std::string& level, const std::string& mode, double clip_min,
                double clip_max, double log_clamp, bool batch_normalize, py::object workspace,
                std::intptr_t stream) {
        ImportanceOptions opt;
        opt.level = one_of("level", level, "token", IsLevel::Token, "sequence", IsLevel::Sequence);
        opt.mode = one_of("mode", mode, "truncate", IsMode::Truncate, "mask", IsMode::Mask);
        opt.clip_min = clip_min;
        opt.clip_max = clip_max;
        opt.log_clamp = log_clamp;
        opt.batch_normalize = batch_normalize;
        const CorrectionArrays x = import_correction_arrays(trainer_logp, sampler_logp, mask, weights,
                                                            "weights", metrics, workspace, stream);
        py::gil_scoped_release nogil;
        backend.importance_weights(x.trainer.view(), x.sampler.view(), x.mask.view(), opt, x.out.view(),
                                   x.metrics.view(), x.workspace.view(), stream);
      },
      py::arg("trainer_logp"), py::arg("sampler_logp"), py::arg("mask"), py::arg("weights"),
      py::arg("metrics"), py::arg("level"), py::arg("mode"), py::arg("clip_min"), py::arg("clip_max"),
      py::arg("log_clamp"), py::arg("batch_normalize"), py::arg("workspace") = py::none(),
      py::arg("stream") = 0, "Importance weights and their metrics. See grpokit.importance_weights.");
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
  m.def("importance_workspace_size", backend.importance_workspace_size, py::arg("num_rows"),
        "float64 elements of scratch importance_weights needs (0: none).");
  m.def("rejection_workspace_size", backend.rejection_workspace_size, py::arg("num_rows"),
        py::arg("num_criteria"), "float64 elements of scratch rejection_mask needs (0: none).");
}

}  // namespace bindings
}  // namespace grpokit
