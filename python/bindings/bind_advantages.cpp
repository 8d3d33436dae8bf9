#include <string>

#include "ops.hpp"
#include "tensor_import.hpp"

namespace grpokit {
namespace bindings {

void bind_advantages(py::module_& m, const Backend& backend) {
  m.def(
      "advantages",
      [backend](py::object rewards, py::object group_ids, py::object out, int64_t group_size,
                const std::string& baseline, const std::string& std, const std::string& std_scope,
                double epsilon, std::intptr_t stream) {
        AdvantageOptions opt;
        opt.group_size = group_size;
        opt.baseline = parse_baseline(baseline);
        opt.std = parse_std_divisor(std);
        opt.std_scope = parse_std_scope(std_scope);
        opt.epsilon = epsilon;
        Imported r = import_array(rewards, "rewards", stream, false);
        Imported ids = import_array(group_ids, "group_ids", stream, false);
        Imported o = import_array(out, "out", stream, true);
        py::gil_scoped_release nogil;
        backend.advantages(r.view(), ids.view(), opt, o.view(), stream);
      },
      py::arg("rewards"), py::arg("group_ids"), py::arg("out"), py::arg("group_size"), py::arg("baseline"),
      py::arg("std"), py::arg("std_scope"), py::arg("epsilon"), py::arg("stream") = 0,
      "Group advantages of rewards (B,) into out (B,). See grpokit.advantages.");
}

}  // namespace bindings
}  // namespace grpokit
