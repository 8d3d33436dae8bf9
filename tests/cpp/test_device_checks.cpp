// The host-side argument checks the CUDA estimator and correction launchers run before any launch
// (check_estimator_args, check_importance_args, check_rejection_args): one device for every array,
// half precision accepted on the GPU only, and no array value read (the data is on the device).
// Arrays here are labelled cuda:0 but hold host memory with ±inf, which a value check would reject.
#include <cmath>
#include <vector>

#include "catch.hpp"
#include "grpokit/corrections.hpp"
#include "grpokit/estimators.hpp"

using namespace grpokit;

namespace {
const Device kGpu{DeviceType::CUDA, 0};

TensorView on(TensorView v, const Device& d) {
  v.device = d;
  return v;
}
}  // namespace

TEST_CASE("estimator checks on a CUDA device: one device, half precision, no value reads") {
  std::vector<uint16_t> r(4, 0x7F80), out(4), tok(8, 0x7F80), tout(8);  // bfloat16 +inf rewards
  std::vector<uint8_t> mask(8, 1);
  EstimatorInputs in;
  in.rewards = on(make_view(r.data(), DType::BFloat16, {4}), kGpu);
  EstimatorOptions opt;
  opt.estimator = Estimator::Rloo;
  opt.group_size = 2;
  const TensorView o = on(make_view(out.data(), DType::BFloat16, {4}), kGpu);
  CHECK_NOTHROW(check_estimator_args(in, opt, o, undefined_tensor()));

  in.mask = make_view(mask.data(), DType::Bool, {4, 2});  // on the CPU
  opt.estimator = Estimator::Opo;
  CHECK_THROWS_WITH(check_estimator_args(in, opt, o, undefined_tensor()), Catch::Contains("same device"));
  in.mask = on(in.mask, kGpu);
  CHECK_NOTHROW(check_estimator_args(in, opt, o, undefined_tensor()));

  opt.group_size = 3;  // the layout of contiguous groups is checked on the host
  CHECK_THROWS_WITH(check_estimator_args(in, opt, o, undefined_tensor()), Catch::Contains("group_size"));

  // Token estimator: remax's baseline rewards (+inf here) are not read on the device.
  EstimatorInputs tin;
  tin.rewards = on(make_view(tok.data(), DType::BFloat16, {4, 2}), kGpu);
  tin.mask = on(make_view(mask.data(), DType::Bool, {4, 2}), kGpu);
  tin.baseline_rewards = on(make_view(r.data(), DType::BFloat16, {4}), kGpu);
  EstimatorOptions topt;
  topt.estimator = Estimator::Remax;
  CHECK_NOTHROW(check_estimator_args(tin, topt, on(make_view(tout.data(), DType::BFloat16, {4, 2}), kGpu),
                                     undefined_tensor()));

  // On the CPU, bfloat16 rewards are refused by the engine.
  EstimatorInputs cpu_in;
  cpu_in.rewards = make_view(r.data(), DType::BFloat16, {4});
  opt.group_size = 2;
  CHECK_THROWS_WITH(
      estimator_advantages_cpu(cpu_in, opt, make_view(out.data(), DType::BFloat16, {4}), undefined_tensor()),
      Catch::Contains("rewards"));
}

TEST_CASE("correction checks on a CUDA device: one device, half precision, no value reads") {
  std::vector<uint16_t> a(6, 0x7C00), b(6, 0x7C00), w(6);  // float16 +inf log-probs
  std::vector<uint8_t> mask(6, 1), keep(6);
  std::vector<double> metrics(importance_metric_names().size()), rs_metrics(7);
  const TensorView ta = on(make_view(a.data(), DType::Float16, {2, 3}), kGpu);
  const TensorView tb = on(make_view(b.data(), DType::Float16, {2, 3}), kGpu);
  const TensorView tm = on(make_view(mask.data(), DType::Bool, {2, 3}), kGpu);
  ImportanceOptions opt;
  opt.clip_max = 3.0;
  const TensorView tw = on(make_view(w.data(), DType::Float16, {2, 3}), kGpu);
  const TensorView tmet =
      on(make_view(metrics.data(), DType::Float64, {static_cast<int64_t>(metrics.size())}), kGpu);
  CHECK_NOTHROW(check_importance_args(ta, tb, tm, opt, tw, tmet));
  CHECK_THROWS_WITH(check_importance_args(
                        ta, tb, tm, opt, tw,
                        make_view(metrics.data(), DType::Float64, {static_cast<int64_t>(metrics.size())})),
                    Catch::Contains("same device"));
  opt.clip_max = -1.0;
  CHECK_THROWS_WITH(check_importance_args(ta, tb, tm, opt, tw, tmet), Catch::Contains("clip_max"));

  RejectionCriterion c = parse_rejection_criterion("token_k1");
  c.lower = 0.5;
  c.upper = 2.0;
  const TensorView tk = on(make_view(keep.data(), DType::Bool, {2, 3}), kGpu);
  const TensorView trs = on(make_view(rs_metrics.data(), DType::Float64, {7}), kGpu);
  CHECK_NOTHROW(check_rejection_args(ta, tb, tm, {c}, tk, trs));
  CHECK_THROWS_WITH(check_rejection_args(ta, tb, make_view(mask.data(), DType::Bool, {2, 3}), {c}, tk, trs),
                    Catch::Contains("same device"));
}
