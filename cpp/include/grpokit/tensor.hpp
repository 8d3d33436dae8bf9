// TensorView: a non-owning view of a strided array on one device. The engine's only array type; it
// knows nothing of NumPy, DLPack or any framework (the bindings build it).
#pragma once

#include <cstdint>
#include <initializer_list>
#include <string>

#include "grpokit/error.hpp"

namespace grpokit {

enum class DType : uint8_t { Bool, Int8, UInt8, Int32, Int64, Float16, BFloat16, Float32, Float64 };
enum class DeviceType : uint8_t { CPU, CUDA };

struct Device {
  DeviceType type = DeviceType::CPU;
  int index = 0;
  bool operator==(const Device& o) const { return type == o.type && index == o.index; }
  bool operator!=(const Device& o) const { return !(*this == o); }
};

const char* dtype_name(DType dt);
int dtype_size(DType dt);
std::string device_name(const Device& d);

struct TensorView {
  static constexpr int kMaxDims = 4;

  void* data = nullptr;
  DType dtype = DType::Float32;
  Device device{};
  int ndim = 0;
  int64_t shape[kMaxDims] = {0, 0, 0, 0};
  int64_t strides[kMaxDims] = {0, 0, 0, 0};  // in elements, as DLPack
  bool read_only = false;

  int64_t numel() const {
    int64_t n = 1;
    for (int i = 0; i < ndim; ++i) n *= shape[i];
    return n;
  }
  int64_t size(int dim) const { return shape[dim < 0 ? dim + ndim : dim]; }
  int64_t stride(int dim) const { return strides[dim < 0 ? dim + ndim : dim]; }
  bool defined() const { return ndim > 0 || data != nullptr; }
  bool is_contiguous() const;
  std::string shape_str() const;

  template <class T>
  T* ptr() const {
    return static_cast<T*>(data);
  }
};

// A view with no data: how optional arguments are passed to the engine.
inline TensorView undefined_tensor() { return TensorView{}; }

// Build a contiguous view (used by the C++ tests and by engine-internal buffers).
TensorView make_view(void* data, DType dtype, std::initializer_list<int64_t> shape, Device device = Device{});

// Boundary checks. Each names the argument in its message.
void check_dtype(const TensorView& t, const char* name, std::initializer_list<DType> allowed);
void check_ndim(const TensorView& t, const char* name, std::initializer_list<int> allowed);
void check_shape_equal(const TensorView& t, const char* name, const TensorView& ref, const char* ref_name);
void check_same_device(const TensorView& t, const char* name, const TensorView& ref, const char* ref_name);
void check_writable(const TensorView& t, const char* name);
void check_cpu(const TensorView& t, const char* name);

}  // namespace grpokit
