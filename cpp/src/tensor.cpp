#include "grpokit/tensor.hpp"

#include <sstream>
#include <string>

namespace grpokit {

const char* dtype_name(DType dt) {
  switch (dt) {
    case DType::Bool:
      return "bool";
    case DType::Int8:
      return "int8";
    case DType::UInt8:
      return "uint8";
    case DType::Int32:
      return "int32";
    case DType::Int64:
      return "int64";
    case DType::Float16:
      return "float16";
    case DType::BFloat16:
      return "bfloat16";
    case DType::Float32:
      return "float32";
    case DType::Float64:
      return "float64";
  }
  return "unknown";
}

int dtype_size(DType dt) {
  switch (dt) {
    case DType::Bool:
    case DType::Int8:
    case DType::UInt8:
      return 1;
    case DType::Float16:
    case DType::BFloat16:
      return 2;
    case DType::Int32:
    case DType::Float32:
      return 4;
    case DType::Int64:
    case DType::Float64:
      return 8;
  }
  return 0;
}

std::string device_name(const Device& d) {
  return d.type == DeviceType::CPU ? std::string("cpu") : "cuda:" + std::to_string(d.index);
}

bool TensorView::is_contiguous() const {
  int64_t expected = 1;
  for (int i = ndim - 1; i >= 0; --i) {
    if (shape[i] != 1 && strides[i] != expected) return false;
    expected *= shape[i];
  }
  return true;
}

std::string TensorView::shape_str() const {
  std::ostringstream os;
  os << "(";
  for (int i = 0; i < ndim; ++i) os << (i ? ", " : "") << shape[i];
  if (ndim == 1) os << ",";
  os << ")";
  return os.str();
}

TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device) {
  TensorView t;
  t.data = data;
  t.dtype = dtype;
  t.device = device;
  if (shape.size() > static_cast<size_t>(TensorView::kMaxDims))
    value_error("make_view: at most ", TensorView::kMaxDims, " dimensions are supported");
  t.ndim = static_cast<int>(shape.size());
  int i = 0;
  for (int64_t s : shape) t.shape[i++] = s;
  int64_t stride = 1;
  for (int d = t.ndim - 1; d >= 0; --d) {
    t.strides[d] = stride;
    stride *= t.shape[d];
  }
  return t;
}

namespace {

// The allowed values of an error message, each written by put(os, value), separated by sep.
template <class T, class Put>
std::string joined(std::initializer_list<T> allowed, const char* sep, Put&& put) {
  std::ostringstream os;
  const char* s = "";
  for (const T& v : allowed) {
    os << s;
    put(os, v);
    s = sep;
  }
  return os.str();
}

}  // namespace

void check_dtype(const TensorView& t, const char* name, std::initializer_list<DType> allowed) {
  for (DType d : allowed)
    if (t.dtype == d) return;
  const std::string want = joined(allowed, ", ", [](std::ostream& os, DType d) { os << dtype_name(d); });
  type_error(name, ": expected dtype ", want, ", got ", dtype_name(t.dtype));
}

void check_ndim(const TensorView& t, const char* name, std::initializer_list<int> allowed) {
  for (int d : allowed)
    if (t.ndim == d) return;
  const std::string want = joined(allowed, " or ", [](std::ostream& os, int d) { os << d << "-D"; });
  value_error(name, ": expected a ", want, " array, got shape ", t.shape_str());
}

void check_shape_equal(const TensorView& t, const char* name, const TensorView& ref, const char* ref_name) {
  bool same = t.ndim == ref.ndim;
  for (int i = 0; same && i < t.ndim; ++i) same = t.shape[i] == ref.shape[i];
  if (!same)
    value_error(name, ": expected shape ", ref.shape_str(), " (the shape of ", ref_name, "), got ",
                t.shape_str());
}

void check_same_device(const TensorView& t, const char* name, const TensorView& ref, const char* ref_name) {
  if (t.device != ref.device)
    device_error(name, " is on ", device_name(t.device), " but ", ref_name, " is on ",
                 device_name(ref.device), "; all arrays of one call must be on the same device");
}

void check_writable(const TensorView& t, const char* name) {
  if (t.read_only) value_error(name, ": the output buffer is read-only");
}

void check_cpu(const TensorView& t, const char* name) {
  if (t.device.type != DeviceType::CPU)
    device_error(name, ": expected a CPU array, got one on ", device_name(t.device));
}

}  // namespace grpokit
