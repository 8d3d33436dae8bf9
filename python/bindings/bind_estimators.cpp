// Advantage estimators (both backends). Thin: import arrays, parse option names, release the GIL.
#include <string>

#include "grpokit/estimators.hpp"
#include "grpokit/math/advantages.hpp"
#include "ops.hpp"
#include "tensor_import.hpp"

namespace grpokit {
namespace bindings {

void bind_estimators(py::module_& m, const Backend& backend) {
  m.def(
      "estimator_advantages",
      [backend](py::object rewards, py::object group_ids, py::object reward_weights, py::object mask,
                py::object lengths, py::object baseline_rewards, py::object logp, py::object ref_logp,
                py::object sum_pi_squared, py::object is_weights, py::object out, py::object returns,
                const std::string& estimator, int64_t group_size, const std::string& baseline,
                const std::string& std, const std::string& std_scope, double epsilon,
                const std::string& batch_norm, double final_epsilon, double gamma, double f_norm,
                bool handle_zero_tail, double otb_epsilon, double reward_clip_min, double reward_clip_max,
                double beta, double running_count, double running_mean, double running_std,
                bool running_update, py::object workspace, std::intptr_t stream) {
        EstimatorOptions opt;
        opt.estimator = parse_estimator(estimator);
        opt.group_size = group_size;
        opt.baseline = parse_baseline(baseline);
        opt.std = parse_std_divisor(std);
        opt.std_scope = parse_std_scope(std_scope);
        opt.epsilon = epsilon;
        opt.batch_norm = parse_batch_norm(batch_norm);
        opt.final_epsilon = final_epsilon;
        opt.gamma = gamma;
        opt.f_norm = f_norm;
        opt.handle_zero_tail = handle_zero_tail;
        opt.otb_epsilon = otb_epsilon;
        opt.reward_clip_min = reward_clip_min;
        opt.reward_clip_max = reward_clip_max;
        opt.kl_beta = beta;
        opt.running_count = running_count;
        opt.running_mean = running_mean;
        opt.running_std = running_std;
        opt.running_update = running_update;
        Imported r = import_array(rewards, "rewards", stream, false);
        Imported ids = import_array(group_ids, "group_ids", stream, false);
        Imported w = import_array(reward_weights, "reward_weights", stream, false);
        Imported mk = import_array(mask, "mask", stream, false);
        Imported len = import_array(lengths, "lengths", stream, false);
        Imported b = import_array(baseline_rewards, "baseline_rewards", stream, false);
        Imported lp = import_array(logp, "logp", stream, false);
        Imported rl = import_array(ref_logp, "ref_logp", stream, false);
        Imported sp = import_array(sum_pi_squared, "sum_pi_squared", stream, false);
        Imported iw = import_array(is_weights, "is_weights", stream, false);
        Imported o = import_array(out, "out", stream, true);
        Imported ret = import_array(returns, "returns", stream, true);
        EstimatorInputs in;
        in.rewards = r.view();
        in.group_ids = ids.view();
        in.reward_weights = w.view();
        in.mask = mk.view();
        in.lengths = len.view();
        in.baseline_rewards = b.view();
        in.logp = lp.view();
        in.ref_logp = rl.view();
        in.sum_pi_squared = sp.view();
        in.is_weights = iw.view();
        Imported ws = import_array(workspace, "workspace", stream, true);
        py::gil_scoped_release nogil;
        backend.estimator_advantages(in, opt, o.view(), ret.view(), ws.view(), stream);
      },
      py::arg("rewards"), py::arg("group_ids"), py::arg("reward_weights"), py::arg("mask"),
      py::arg("lengths"), py::arg("baseline_rewards"), py::arg("logp"), py::arg("ref_logp"),
      py::arg("sum_pi_squared"), py::arg("is_weights"), py::arg("out"), py::arg("returns"),
      py::arg("estimator"), py::arg("group_size"), py::arg("baseline"), py::arg("std"), py::arg("std_scope"),
      py::arg("epsilon"), py::arg("batch_norm"), py::arg("final_epsilon"), py::arg("gamma"),
      py::arg("f_norm"), py::arg("handle_zero_tail"), py::arg("otb_epsilon"), py::arg("reward_clip_min"),
      py::arg("reward_clip_max"), py::arg("beta"), py::arg("running_count") = 0.0,
      py::arg("running_mean") = 0.0, py::arg("running_std") = 0.0, py::arg("running_update") = true,
      py::arg("workspace") = py::none(), py::arg("stream") = 0,
      "Advantages of any estimator into out. See grpokit.advantages.");
  m.def(
      "running_moments_merge",
      [](double count_a, double mean_a, double std_a, double count_b, double mean_b, double std_b) {
        math::RunningMoments a{count_a, mean_a, std_a};
        a.merge(math::RunningMoments{count_b, mean_b, std_b});
        return py::make_tuple(a.count, a.mean, a.std);
      },
      py::arg("count_a"), py::arg("mean_a"), py::arg("std_a"), py::arg("count_b"), py::arg("mean_b"),
      py::arg("std_b"), "Chan's merge of two running-moment states (count, mean, population std).");
  m.def(
      "estimator_workspace_size",
      [backend](const std::string& estimator, int64_t num_rows, int64_t num_tokens) {
        return backend.estimator_workspace_size(parse_estimator(estimator), num_rows, num_tokens);
      },
      py::arg("estimator"), py::arg("num_rows"), py::arg("num_tokens"),
      "float64 elements of scratch estimator_advantages needs (0: none); num_tokens = mask columns.");
}

}  // namespace bindings
}  // namespace grpokit
