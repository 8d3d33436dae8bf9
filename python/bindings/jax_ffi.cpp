// grpokit._jax_ffi: the CPU engine as one XLA FFI custom call (grpokit.jax), built only when jaxlib's
// headers were found at build time (CMakeLists.txt).
//
// One handler, "grpokit_cpu", serves every op: the attribute `op` names the engine function, `params`
// holds its options ("name=value;..."), and the bit masks `inputs` / `outputs` say which of the op's
// optional arrays are present (XLA passes only those, in the op's order). `check` runs the same
// argument checks on shapes and dtypes alone, so that grpokit.jax raises at trace time with the
// engine's messages.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <cstdint>
#include <cstdlib>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "grpokit/advantages.hpp"
#include "grpokit/linear_logprobs.hpp"
#include "grpokit/logprobs.hpp"
#include "grpokit/loss.hpp"
#include "tensor_import.hpp"
#include "xla/ffi/api/ffi.h"

namespace ffi = xla::ffi;
namespace py = pybind11;
using namespace grpokit;

namespace {

using Params = std::map<std::string, std::string>;

Params parse_params(std::string_view text) {
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

std::optional<double> as_number(const std::string& s) {
  char* end = nullptr;
  const double v = std::strtod(s.c_str(), &end);
  if (s.empty() || end != s.c_str() + s.size()) return std::nullopt;
  return v;
}

double number(const Params& p, const char* name, double fallback) {
  auto it = p.find(name);
  if (it == p.end()) return fallback;
  auto v = as_number(it->second);
  if (!v) value_error(name, ": expected a number, got '", it->second, "'");
  return *v;
}

std::string name_of(const Params& p, const char* name, const char* fallback) {
  auto it = p.find(name);
  return it == p.end() ? fallback : it->second;
}

LossSpec spec_of(const Params& p) {
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

// The op's arrays in its fixed order; an absent optional one is an undefined view.
struct Arrays {
  std::vector<TensorView> in, out;
};

// Runs (or, with `check_only`, only validates) one op. The views of `a` are contiguous row-major.
void run_op(const std::string& op, const Params& p, const Arrays& a, bool check_only) {
  const auto& in = a.in;
  const auto& out = a.out;
  if (op ==
      "policy_loss") {  // in: LossInputs' order; out: loss, grad, grad_entropy, metrics, per_token, weights
    const LossSpec spec = spec_of(p);
    const LossInputs li{in[0], in[1], in[2], in[3], in[4], in[5], in[6], in[7], in[8], in[9], in[10]};
    // Without jax_enable_x64 the metrics come back as float32: the engine writes float64 scratch.
    TensorView metrics = out[3];
    std::vector<double> scratch;
    if (metrics.dtype == DType::Float32) {
      scratch.resize(static_cast<size_t>(metrics.numel()));
      metrics = make_view(scratch.data(), DType::Float64, {metrics.numel()});
      if (check_only) metrics.data = out[3].data;
    }
    const LossOutputs lo{out[0], out[1], out[2], out[4], out[5], metrics, TensorView{}, TensorView{}};
    if (check_only) return check_loss_args(spec, li, lo);
    policy_loss_cpu(spec, li, lo, static_cast<int>(number(p, "num_threads", 0)));
    for (size_t k = 0; k < scratch.size(); ++k) out[3].ptr<float>()[k] = static_cast<float>(scratch[k]);
  } else if (op == "token_logprobs") {  // in: logits, ids; out: logp, entropy, lse, sum_sq_probs
    const TokenLogprobArgs args{in[0], in[1], number(p, "temperature", 1.0)};
    if (check_only) return check_token_logprobs_args(args, out[0], out[1], out[2], out[3]);
    token_logprobs_cpu(args, out[0], out[1], out[2], out[3]);
  } else if (op == "token_logprobs_backward") {  // in: logits, ids, lse, entropy, grad_logp, grad_entropy
    const TokenLogprobArgs args{in[0], in[1], number(p, "temperature", 1.0)};
    if (check_only) return check_token_logprobs_backward_args(args, in[2], in[3], in[4], in[5], out[0]);
    token_logprobs_backward_cpu(args, in[2], in[3], in[4], in[5], out[0]);
  } else if (op == "linear_token_logprobs") {  // in: hidden, weight, ids; out: as token_logprobs
    const LinearLogprobArgs args{in[0], in[1], in[2], number(p, "temperature", 1.0),
                                 static_cast<int64_t>(number(p, "chunk_size", 0))};
    if (check_only) return check_linear_token_logprobs_args(args, out[0], out[1], out[2], out[3]);
    linear_token_logprobs_cpu(args, out[0], out[1], out[2], out[3]);
  } else if (op == "linear_token_logprobs_backward") {  // in: hidden, weight, ids, lse, entropy, grads
    const LinearLogprobArgs args{in[0], in[1], in[2], number(p, "temperature", 1.0),
                                 static_cast<int64_t>(number(p, "chunk_size", 0))};
    if (check_only)
      return check_linear_token_logprobs_backward_args(args, in[3], in[4], in[5], in[6], out[0], out[1]);
    linear_token_logprobs_backward_cpu(args, in[3], in[4], in[5], in[6], out[0], out[1]);
  } else if (op == "advantages") {  // in: rewards, group_ids; out: advantages
    AdvantageOptions opt;
    opt.group_size = static_cast<int64_t>(number(p, "group_size", 0));
    opt.baseline = parse_baseline(name_of(p, "baseline", "mean"));
    opt.std = parse_std_divisor(name_of(p, "std", "none"));
    opt.std_scope = parse_std_scope(name_of(p, "std_scope", "group"));
    opt.epsilon = number(p, "epsilon", 0.0);
    if (check_only) return check_advantage_args(in[0], in[1], opt, out[0]);
    advantages_cpu(in[0], in[1], opt, out[0]);
  } else {
    value_error("op: unknown grpokit op '", op, "'");
  }
}

DType dtype_of(ffi::DataType t) {
  switch (t) {
    case ffi::DataType::PRED:
      return DType::Bool;
    case ffi::DataType::S8:
      return DType::Int8;
    case ffi::DataType::U8:
      return DType::UInt8;
    case ffi::DataType::S32:
      return DType::Int32;
    case ffi::DataType::S64:
      return DType::Int64;
    case ffi::DataType::F16:
      return DType::Float16;
    case ffi::DataType::BF16:
      return DType::BFloat16;
    case ffi::DataType::F32:
      return DType::Float32;
    case ffi::DataType::F64:
      return DType::Float64;
    default:
      type_error("grpokit.jax: unsupported XLA element type ", static_cast<int>(t));
  }
}

DType dtype_named(const std::string& name) {
  static const std::map<std::string, DType> names = {
      {"bool", DType::Bool},         {"int8", DType::Int8},       {"uint8", DType::UInt8},
      {"int32", DType::Int32},       {"int64", DType::Int64},     {"float16", DType::Float16},
      {"bfloat16", DType::BFloat16}, {"float32", DType::Float32}, {"float64", DType::Float64}};
  auto it = names.find(name);
  if (it == names.end()) type_error("grpokit.jax: unsupported dtype ", name);
  return it->second;
}

// A contiguous row-major view (XLA's default layout, which jax.ffi.ffi_call asks for).
TensorView contiguous(void* data, DType dtype, const std::vector<int64_t>& shape, bool read_only) {
  TensorView v;
  if (shape.size() > TensorView::kMaxDims)
    value_error("grpokit.jax: arrays of rank > ", TensorView::kMaxDims, " are not supported");
  v.data = data;
  v.dtype = dtype;
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

TensorView view_of(const ffi::AnyBuffer& b, bool read_only) {
  const auto dims = b.dimensions();
  return contiguous(b.untyped_data(), dtype_of(b.element_type()),
                    std::vector<int64_t>(dims.begin(), dims.end()), read_only);
}

ffi::Error grpokit_cpu_impl(ffi::RemainingArgs args, ffi::RemainingRets rets, std::string_view op,
                            std::string_view params, int64_t inputs, int64_t outputs, int64_t num_inputs,
                            int64_t num_outputs) {
  try {
    Arrays a;
    size_t k = 0;
    for (int64_t i = 0; i < num_inputs; ++i) {
      if (!((inputs >> i) & 1)) {
        a.in.emplace_back();
        continue;
      }
      auto b = args.get<ffi::AnyBuffer>(k++);
      if (b.has_error()) return b.error();
      a.in.push_back(view_of(b.value(), true));
    }
    k = 0;
    for (int64_t i = 0; i < num_outputs; ++i) {
      if (!((outputs >> i) & 1)) {
        a.out.emplace_back();
        continue;
      }
      auto r = rets.get<ffi::AnyBuffer>(k++);
      if (r.has_error()) return r.error();
      a.out.push_back(view_of(*r.value(), false));
    }
    run_op(std::string(op), parse_params(params), a, false);
    return ffi::Error::Success();
  } catch (const std::exception& e) {
    return ffi::Error::InvalidArgument(e.what());
  }
}

// The trace-time check: (dtype name, shape) or None per array; the views get distinct dummy addresses
// (the checks compare and order addresses, never read them).
void check(const std::string& op, const std::string& params,
           const std::vector<std::optional<std::pair<std::string, std::vector<int64_t>>>>& inputs,
           const std::vector<std::optional<std::pair<std::string, std::vector<int64_t>>>>& outputs) {
  uintptr_t next = uintptr_t{1} << 40;
  auto views = [&next](const auto& list, bool read_only) {
    std::vector<TensorView> out;
    for (const auto& d : list) {
      if (!d) {
        out.emplace_back();
        continue;
      }
      out.push_back(contiguous(reinterpret_cast<void*>(next), dtype_named(d->first), d->second, read_only));
      next += uintptr_t{1} << 40;
    }
    return out;
  };
  run_op(op, parse_params(params), Arrays{views(inputs, true), views(outputs, false)}, true);
}

}  // namespace

XLA_FFI_DEFINE_HANDLER_SYMBOL(grpokit_cpu, grpokit_cpu_impl,
                              ffi::Ffi::Bind()
                                  .RemainingArgs()
                                  .RemainingRets()
                                  .Attr<std::string_view>("op")
                                  .Attr<std::string_view>("params")
                                  .Attr<int64_t>("inputs")
                                  .Attr<int64_t>("outputs")
                                  .Attr<int64_t>("num_inputs")
                                  .Attr<int64_t>("num_outputs"));

PYBIND11_MODULE(_jax_ffi, m) {
  m.doc() = "grpokit's XLA FFI handlers (private; use grpokit.jax)";
  bindings::register_error_translator();
  m.def(
      "handlers",
      [] { return py::dict(py::arg("cpu") = py::capsule(reinterpret_cast<void*>(&grpokit_cpu))); },
      "{platform: PyCapsule of the XLA FFI handler}, for jax.ffi.register_ffi_target.");
  m.def("check", &check, py::arg("op"), py::arg("params"), py::arg("inputs"), py::arg("outputs"),
        "Validates an op's arguments from (dtype, shape) descriptors; raises the engine's errors.");
}
