// The XLA FFI binding of grpokit.jax, shared by its CPU module (jax_ffi.cpp → grpokit._jax_ffi) and
// its CUDA module (jax_ffi_cuda.cpp → grpokit._jax_ffi_cuda).
//
// One handler per platform serves every op: the attribute `op` names the engine function, `params`
// holds its options ("name=value;..."), and the bit masks `inputs` / `outputs` say which of the op's
// arrays are present (XLA passes only those, in the op's order). The engine functions come from the
// Backend table of ops.hpp, as for the other bindings. `check` runs the engine's argument checks on
// shapes and dtypes alone, so that grpokit.jax raises at trace time with the engine's messages.
#pragma once

#include <cstdint>
#include <cstdlib>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include <pybind11/pybind11.h>

#include "ops.hpp"
#include "tensor_import.hpp"
#include "xla/ffi/api/ffi.h"

namespace grpokit {
namespace jax_ffi {

namespace ffi = xla::ffi;
using Params = std::map<std::string, std::string>;

inline Params parse_params(std::string_view text) {
  Params out;
  while (!text.empty()) {
    const size_t end = text.find(';');
    const std::string_view item = text.substr(0, end);
    const size_t eq = item.find('=');
    if (eq != std::string_view::npos) out[std::string(item.substr(0, eq))] = std::string(item.substr(eq + 1));
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
  }
  return out;
}

inline std::optional<double> as_number(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

inline double number(const Params& p, const char* name, double fallback) {
  auto it = p.find(name);
  if (it == p.end()) return fallback;
  auto v = as_number(it->second);
  if (!v) value_error(name, ": expected a number, got '", it->second, "'");
  return *v;
}

inline std::string name_of(const Params& p, const char* name, const char* fallback) {
  auto it = p.find(name);
  return it == p.end() ? fallback : it->second;
}

// A comma-separated list of numbers ("" → empty).
inline std::vector<double> numbers(const Params& p, const char* name) {
  std::vector<double> out;
  const std::string all = name_of(p, name, "");
  std::string_view text = all;
  while (!text.empty()) {
    const size_t end = text.find(',');
    const std::string item(text.substr(0, end));
    auto v = as_number(item);
    if (!v) value_error(name, ": expected numbers, got '", item, "'");
    out.push_back(*v);
    text = end == std::string_view::npos ? std::string_view{} : text.substr(end + 1);
  }
  return out;
}

// The estimator options by the names of _core.estimator_advantages' keywords
// (grpokit._estimators.engine_options).
inline EstimatorOptions estimator_options_of(const Params& p) {
  EstimatorOptions opt;
  opt.estimator = parse_estimator(name_of(p, "estimator", "grpo"));
  opt.group_size = static_cast<int64_t>(number(p, "group_size", 0));
  opt.baseline = parse_baseline(name_of(p, "baseline", "mean"));
  opt.std = parse_std_divisor(name_of(p, "std", "none"));
  opt.std_scope = parse_std_scope(name_of(p, "std_scope", "group"));
  opt.epsilon = number(p, "epsilon", opt.epsilon);
  opt.batch_norm = parse_batch_norm(name_of(p, "batch_norm", "none"));
  opt.final_epsilon = number(p, "final_epsilon", opt.final_epsilon);
  opt.gamma = number(p, "gamma", opt.gamma);
  opt.f_norm = number(p, "f_norm", opt.f_norm);
  opt.handle_zero_tail = number(p, "handle_zero_tail", 1.0) != 0.0;
  opt.otb_epsilon = number(p, "otb_epsilon", opt.otb_epsilon);
  opt.reward_clip_min = number(p, "reward_clip_min", opt.reward_clip_min);
  opt.reward_clip_max = number(p, "reward_clip_max", opt.reward_clip_max);
  opt.kl_beta = number(p, "beta", opt.kl_beta);
  opt.running_count = number(p, "running_count", opt.running_count);
  opt.running_mean = number(p, "running_mean", opt.running_mean);
  opt.running_std = number(p, "running_std", opt.running_std);
  opt.running_update = number(p, "running_update", 1.0) != 0.0;
  return opt;
}

inline LossSpec spec_of(const Params& p) {
  LossSpec spec;
  for (const auto& [name, value] : p) {
    if (name == "num_threads") continue;  // the call's, not the spec's
    if (auto v = as_number(value))
      set_spec_field(spec, name, *v);
    else
      set_spec_field(spec, name, value);
  }
  return spec;
}

// Where an op runs: the engine's entry points, the device and stream, and device scratch for the
// kernels' workspaces (the CPU needs none).
struct Place {
  const bindings::Backend* backend = nullptr;
  std::intptr_t stream = 0;
  std::function<void*(size_t bytes)> scratch;   // null on the CPU
  int64_t (*loss_workspace_size)(int64_t rows) = nullptr;  // float64 elements; null on the CPU
};

inline TensorView scratch_view(const Place& at, const TensorView& like, DType dtype, int64_t elements) {
  if (!at.scratch || elements <= 0) return TensorView{};
  TensorView v = make_view(at.scratch(static_cast<size_t>(elements * dtype_size(dtype))), dtype, {elements},
                           like.device);
  return v;
}

// The metrics result is raw bytes (8 per metric): float64 as the engine writes them, whatever JAX's
// float64 setting (grpokit.jax decodes them).
inline TensorView metrics_view(const TensorView& bytes) {
  TensorView v = make_view(bytes.data, DType::Float64, {bytes.numel() / 8}, bytes.device);
  return v;
}

// Runs (or, with `check_only`, only validates) one op on views in its fixed order; an absent optional
// array is an undefined view.
inline void run_op(const Place& at, const std::string& op, const Params& p, const std::vector<TensorView>& in,
                   const std::vector<TensorView>& out, bool check_only) {
  const bindings::Backend& be = *at.backend;
  if (op ==
      "policy_loss") {  // in: LossInputs' order; out: loss, grad, grad_entropy, metrics, per_token, weights
    const LossSpec spec = spec_of(p);
    const LossInputs li{in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], in[9], in[10]};
    LossOutputs lo{out[0], out[1], out[2], out[4], out[5], metrics_view(out[3]), TensorView{}, TensorView{}};
    if (check_only)
      return check_loss_args_any_float(spec, li, lo);  // 16-bit: the GPU's; the CPU refuses at run time
    if (at.loss_workspace_size) {
      const int64_t rows = li.cu_seqlens.defined() ? li.cu_seqlens.shape[0] - 1 : li.logp.shape[0];
      lo.workspace = scratch_view(at, li.logp, DType::Float64, at.loss_workspace_size(rows));
    }
    be.loss(spec, li, lo, static_cast<int>(number(p, "num_threads", 0)), at.stream);
  } else if (op == "token_logprobs") {  // in: logits, ids; out: logp, entropy, lse, sum_sq_probs
    const TokenLogprobArgs args{in[0], in[1], number(p, "temperature", 1.0)};
    if (check_only) return check_token_logprobs_args(args, out[0], out[1], out[2], out[3]);
    be.token_logprobs(args, out[0], out[1], out[2], out[3], at.stream);
  } else if (op == "token_logprobs_backward") {  // in: logits, ids, lse, entropy, grad_logp, grad_entropy
    const TokenLogprobArgs args{in[0], in[1], number(p, "temperature", 1.0)};
    if (check_only) return check_token_logprobs_backward_args(args, in[2], in[3], in[4], in[5], out[0]);
    be.token_logprobs_backward(args, in[2], in[3], in[4], in[5], out[0], at.stream);
  } else if (op == "linear_token_logprobs" || op == "linear_token_logprobs_backward") {
    // in: hidden, weight, ids (+ lse, entropy, grad_logp, grad_entropy); out: as token_logprobs (or
    // grad_hidden, grad_weight)
    const bool backward = op != "linear_token_logprobs";
    const LinearLogprobArgs args{in[0], in[1], in[2], number(p, "temperature", 1.0),
                                 static_cast<int64_t>(number(p, "chunk_size", 0))};
    if (check_only && backward)
      return check_linear_token_logprobs_backward_args(args, in[3], in[4], in[5], in[6], out[0], out[1]);
    if (check_only) return check_linear_token_logprobs_args(args, out[0], out[1], out[2], out[3]);
    const TensorView ws = scratch_view(at, in[0], DType::UInt8, be.linear_workspace_bytes(args, backward));
    if (backward)
      be.linear_token_logprobs_backward(args, in[3], in[4], in[5], in[6], out[0], out[1], ws, at.stream);
    else
      be.linear_token_logprobs(args, out[0], out[1], out[2], out[3], ws, at.stream);
  } else if (op == "advantages") {  // in: rewards, group_ids; out: advantages
    AdvantageOptions opt;
    opt.group_size = static_cast<int64_t>(number(p, "group_size", 0));
    opt.baseline = parse_baseline(name_of(p, "baseline", "mean"));
    opt.std = parse_std_divisor(name_of(p, "std", "none"));
    opt.std_scope = parse_std_scope(name_of(p, "std_scope", "group"));
    opt.epsilon = number(p, "epsilon", 0.0);
    if (check_only) return check_advantage_args(in[0], in[1], opt, out[0]);
    be.advantages(in[0], in[1], opt, out[0], at.stream);
  } else if (op == "estimator_advantages") {
    // in: rewards, group_ids, mask, lengths, baseline_rewards, logp, ref_logp, sum_pi_squared, is_weights;
    // out: advantages, returns. reward_weights is a static list (the engine reads it on the host).
    const EstimatorOptions opt = estimator_options_of(p);
    std::vector<double> weights = numbers(p, "reward_weights");
    EstimatorInputs ei;
    ei.rewards = in[0];
    ei.group_ids = in[1];
    if (!weights.empty())
      ei.reward_weights = make_view(weights.data(), DType::Float64, {static_cast<int64_t>(weights.size())});
    ei.mask = in[2];
    ei.lengths = in[3];
    ei.baseline_rewards = in[4];
    ei.logp = in[5];
    ei.ref_logp = in[6];
    ei.sum_pi_squared = in[7];
    ei.is_weights = in[8];
    if (check_only) {  // the value-free checks of the GPU launchers: the CPU's read values a trace lacks
      EstimatorInputs c = ei;
      TensorView o = out[0], ret = out[1];
      for (TensorView* v : {&c.rewards, &c.group_ids, &c.mask, &c.lengths, &c.baseline_rewards, &c.logp,
                            &c.ref_logp, &c.sum_pi_squared, &c.is_weights, &o, &ret})
        v->device = Device{DeviceType::CUDA, 0};
      return check_estimator_args(c, opt, o, ret);
    }
    const int64_t rows = in[0].ndim > 0 ? in[0].shape[0] : 0, tokens = in[2].ndim == 2 ? in[2].shape[1] : 0;
    const TensorView ws =
        scratch_view(at, in[0], DType::Float64, be.estimator_workspace_size(opt.estimator, rows, tokens));
    be.estimator_advantages(ei, opt, out[0], out[1], ws, at.stream);
  } else {
    value_error("op: unknown grpokit op '", op, "'");
  }
}

inline DType dtype_of(ffi::DataType t) {
  using X = ffi::DataType;
  static constexpr std::pair<X, DType> kTypes[] = {
      {X::PRED, DType::Bool},     {X::S8, DType::Int8},     {X::U8, DType::UInt8},
      {X::S32, DType::Int32},     {X::S64, DType::Int64},   {X::F16, DType::Float16},
      {X::BF16, DType::BFloat16}, {X::F32, DType::Float32}, {X::F64, DType::Float64},
  };
  for (const auto& [xla, dtype] : kTypes)
    if (xla == t) return dtype;
  type_error("grpokit.jax: unsupported XLA element type ", static_cast<int>(t));
}

// A contiguous row-major view (XLA's default layout, which jax.ffi.ffi_call asks for).
inline TensorView contiguous(void* data, DType dtype, const std::vector<int64_t>& shape, Device device,
                             bool read_only) {
  if (shape.size() > TensorView::kMaxDims)
    value_error("grpokit.jax: arrays of rank > ", TensorView::kMaxDims, " are not supported");
  TensorView v;
  v.data = data;
  v.dtype = dtype;
  v.device = device;
  v.ndim = static_cast<int>(shape.size());
  int64_t stride = 1;
  for (int d = v.ndim - 1; d >= 0; --d) {
    v.shape[d] = shape[static_cast<size_t>(d)];
    v.strides[d] = stride;
    stride *= shape[static_cast<size_t>(d)];
  }
  v.read_only = read_only;
  return v;
}

inline TensorView view_of(const ffi::AnyBuffer& b, Device device, bool read_only) {
  const auto dims = b.dimensions();
  return contiguous(b.untyped_data(), dtype_of(b.element_type()),
                    std::vector<int64_t>(dims.begin(), dims.end()), device, read_only);
}

// An argument is the buffer, a result wraps it (both are handles: copies are cheap).
inline ffi::AnyBuffer buffer_of(ffi::AnyBuffer arg) { return arg; }
inline ffi::AnyBuffer buffer_of(ffi::Result<ffi::AnyBuffer> ret) { return *ret; }

// The op's `count` arrays: a view of each present one (bit i of `present`; XLA passes those alone, in
// order), an undefined view for each absent one.
template <class Buffers>
std::optional<ffi::Error> present_views(const Buffers& buffers, int64_t present, int64_t count, Device device,
                                        bool read_only, std::vector<TensorView>& views) {
  size_t k = 0;
  for (int64_t i = 0; i < count; ++i) {
    if (!((present >> i) & 1)) {
      views.emplace_back();
      continue;
    }
    auto b = buffers.template get<ffi::AnyBuffer>(k++);
    if (b.has_error()) return b.error();
    views.push_back(view_of(buffer_of(b.value()), device, read_only));
  }
  return std::nullopt;
}

// The body of a platform's handler: XLA's buffers → views → run_op; every error → an FFI error.
inline ffi::Error handle(const Place& at, Device device, ffi::RemainingArgs args, ffi::RemainingRets rets,
                         std::string_view op, std::string_view params, int64_t inputs, int64_t outputs,
                         int64_t num_inputs, int64_t num_outputs) {
  try {
    std::vector<TensorView> in, out;
    if (auto e = present_views(args, inputs, num_inputs, device, true, in)) return *e;
    if (auto e = present_views(rets, outputs, num_outputs, device, false, out)) return *e;
    run_op(at, std::string(op), parse_params(params), in, out, false);
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(e.what());
  }
}

// The handler's binding: the same attributes on every platform, plus the platform's context.
inline auto bind() {
  return ffi::Ffi::Bind()
      .RemainingArgs()
      .RemainingRets()
      .Attr<std::string_view>("op")
      .Attr<std::string_view>("params")
      .Attr<int64_t>("inputs")
      .Attr<int64_t>("outputs")
      .Attr<int64_t>("num_inputs")
      .Attr<int64_t>("num_outputs");
}

// What each module exports: handlers() -> {platform: PyCapsule of its handler}, and the engine's errors
// translated as in the other bindings.
inline void def_handlers(pybind11::module_& m, const char* platform, void* handler) {
  bindings::register_error_translator();
  m.def(
      "handlers",
      [platform, handler] {
        pybind11::dict out;
        out[platform] = pybind11::capsule(handler);
        return out;
      },
      "{platform: PyCapsule of the XLA FFI handler}, for jax.ffi.register_ffi_target.");
}

}  // namespace jax_ffi
}  // namespace grpokit
