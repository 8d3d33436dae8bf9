#include "tensor_import.hpp"

#include <pybind11/numpy.h>

#include <cstring>
#include <string>

#include "dlpack.h"
#include "grpokit/error.hpp"
#include "grpokit/interrupt.hpp"

namespace grpokit {
namespace bindings {
namespace {

constexpr const char* kLegacyName = "dltensor";
constexpr const char* kLegacyUsed = "used_dltensor";
constexpr const char* kVersionedName = "dltensor_versioned";
constexpr const char* kVersionedUsed = "used_dltensor_versioned";

// Every element type the bindings import, with its DLPack type code and NumPy's kind character (0: NumPy
// has none); the bits are the type's size in both.
struct ImportedType {
  DType dtype;
  uint8_t dlpack_code;
  char numpy_kind;
};
constexpr ImportedType kImportedTypes[] = {
    {DType::Float16, kDLFloat, 'f'}, {DType::BFloat16, kDLBfloat, 0}, {DType::Float32, kDLFloat, 'f'},
    {DType::Float64, kDLFloat, 'f'}, {DType::Int8, kDLInt, 'i'},      {DType::Int32, kDLInt, 'i'},
    {DType::Int64, kDLInt, 'i'},     {DType::UInt8, kDLUInt, 'u'},    {DType::Bool, kDLBool, 'b'},
};

DType to_dtype(const DLDataType& t, const char* name) {
  if (t.lanes != 1) type_error(name, ": vector dtypes (lanes=", t.lanes, ") are not supported");
  for (const ImportedType& k : kImportedTypes)
    if (t.code == k.dlpack_code && t.bits == 8 * dtype_size(k.dtype)) return k.dtype;
  type_error(name, ": unsupported dtype (DLPack code ", int(t.code), ", ", int(t.bits),
             " bits); grpokit takes float16/bfloat16/float32/float64, int32/int64, bool/uint8");
}

Device to_device(const DLDevice& d, const char* name) {
  switch (d.device_type) {
    case kDLCPU:
    case kDLCUDAHost:
      return Device{DeviceType::CPU, 0};
    case kDLCUDA:
    case kDLCUDAManaged:
      return Device{DeviceType::CUDA, d.device_id};
    default:
      device_error(name, ": arrays on DLPack device type ", int(d.device_type),
                   " are not supported (CPU and CUDA are)");
  }
}

TensorView to_view(const DLTensor& t, const char* name, bool read_only) {
  if (t.ndim < 0 || t.ndim > TensorView::kMaxDims)
    value_error(name, ": expected at most ", TensorView::kMaxDims, " dimensions, got ", t.ndim);
  if (t.ndim > 0 && t.shape == nullptr) value_error(name, ": DLPack tensor has no shape");
  TensorView v;
  v.dtype = to_dtype(t.dtype, name);
  v.device = to_device(t.device, name);
  v.ndim = t.ndim;
  v.read_only = read_only;
  int64_t numel = 1;
  for (int i = 0; i < t.ndim; ++i) {
    if (t.shape[i] < 0) value_error(name, ": DLPack tensor has a negative extent ", t.shape[i]);
    v.shape[i] = t.shape[i];
    numel *= t.shape[i];
  }
  int64_t expected = 1;
  for (int i = t.ndim - 1; i >= 0; --i) {
    v.strides[i] = t.strides ? t.strides[i] : expected;
    expected *= v.shape[i];
  }
  if (t.data == nullptr && numel > 0) value_error(name, ": DLPack tensor has a null data pointer");
  v.data = t.data ? static_cast<void*>(static_cast<char*>(t.data) + t.byte_offset) : nullptr;
  return v;
}

std::string type_name(py::handle obj) {
  return py::str(py::type::handle_of(obj).attr("__qualname__")).cast<std::string>();
}

// NumPy arrays are read directly (no capsule round trip: ~1.5 µs per array, which is most of a small
// call's cost). Only what the DLPack path would accept unchanged takes this path: native byte order,
// a dtype grpokit knows, strides in whole elements, at most kMaxDims dimensions; anything else goes
// through NumPy's __dlpack__ and gets its errors from there.
bool numpy_view(py::handle obj, TensorView& v) {
  if (!py::isinstance<py::array>(obj)) return false;
  const auto a = py::reinterpret_borrow<py::array>(obj);
  const py::dtype dt = a.dtype();
  const char order = dt.byteorder();
  if (order == '>' || a.ndim() > TensorView::kMaxDims) return false;
  const auto size = static_cast<int64_t>(dt.itemsize());
  const ImportedType* known = nullptr;
  for (const ImportedType& k : kImportedTypes)
    if (dt.kind() == k.numpy_kind && dtype_size(k.dtype) == size) known = &k;
  if (known == nullptr) return false;  // float128, int16, uint32, ...
  v.dtype = known->dtype;
  v.ndim = static_cast<int>(a.ndim());
  for (int i = 0; i < v.ndim; ++i) {
    if (a.strides(i) % size != 0) return false;
    v.shape[i] = a.shape(i);
    v.strides[i] = a.strides(i) / size;
  }
  v.data = const_cast<void*>(a.data());
  v.device = Device{};
  v.read_only = !a.writeable();
  return true;
}

// An output must not have two elements at one address (a stride-0 or expanded view): the engine would
// write each location several times and the caller would read one of the values. As PyTorch refuses
// in-place ops on such tensors. Sufficient test: with the dimensions sorted by |stride|, each stride
// steps over everything the smaller ones span.
void check_no_internal_overlap(const TensorView& v, const char* name) {
  int64_t strides[TensorView::kMaxDims];
  int64_t extents[TensorView::kMaxDims];
  int n = 0;
  for (int i = 0; i < v.ndim; ++i) {
    if (v.shape[i] == 0) return;  // no element at all
    if (v.shape[i] == 1) continue;
    strides[n] = v.strides[i] < 0 ? -v.strides[i] : v.strides[i];
    extents[n++] = v.shape[i];
  }
  for (int i = 1; i < n; ++i)  // insertion sort by |stride|: at most kMaxDims entries
    for (int j = i; j > 0 && strides[j] < strides[j - 1]; --j) {
      std::swap(strides[j], strides[j - 1]);
      std::swap(extents[j], extents[j - 1]);
    }
  int64_t span = 0;  // the largest offset the smaller dimensions reach
  for (int i = 0; i < n; ++i) {
    if (strides[i] <= span)
      value_error(name,
                  ": the output has overlapping elements (a stride-0 or expanded view); grpokit must "
                  "write each element once: pass a contiguous array (e.g. .contiguous() / .copy())");
    span += (extents[i] - 1) * strides[i];
  }
}

}  // namespace

Imported& Imported::operator=(Imported&& other) noexcept {
  if (this != &other) {
    release();
    view_ = other.view_;
    managed_ = other.managed_;
    versioned_ = other.versioned_;
    other.managed_ = nullptr;
  }
  return *this;
}

void Imported::release() noexcept {
  if (!managed_) return;
  if (versioned_) {
    auto* m = static_cast<DLManagedTensorVersioned*>(managed_);
    if (m->deleter) m->deleter(m);
  } else {
    auto* m = static_cast<DLManagedTensor*>(managed_);
    if (m->deleter) m->deleter(m);
  }
  managed_ = nullptr;
}

Imported import_array(py::handle obj, const char* name, std::intptr_t stream, bool writable) {
  Imported out;
  if (obj.is_none()) return out;
  if (numpy_view(obj, out.view_)) {
    if (writable && out.view_.read_only)
      value_error(name, ": the array is read-only, but grpokit must write into it");
    if (writable) check_no_internal_overlap(out.view_, name);
    return out;
  }
  if (!py::hasattr(obj, "__dlpack__") || !py::hasattr(obj, "__dlpack_device__"))
    type_error(name, ": expected a NumPy array or an object implementing __dlpack__, got ", type_name(obj));

  py::tuple dev = obj.attr("__dlpack_device__")();
  const bool on_device = dev.size() >= 1 && dev[0].cast<int>() != kDLCPU && dev[0].cast<int>() != kDLCUDAHost;
  py::object capsule;
  try {
    py::dict kwargs;
    if (on_device) kwargs["stream"] = py::int_(stream);
    kwargs["max_version"] = py::make_tuple(GRPOKIT_DLPACK_MAJOR_VERSION, 0);
    try {
      capsule = obj.attr("__dlpack__")(**kwargs);
    } catch (py::error_already_set& e) {
      if (!e.matches(PyExc_TypeError)) throw;
      kwargs.attr("pop")("max_version");  // a producer that predates versioned capsules
      capsule = obj.attr("__dlpack__")(**kwargs);
    }
  } catch (py::error_already_set& e) {
    if (e.matches(PyExc_BufferError) || e.matches(PyExc_TypeError) || e.matches(PyExc_ValueError) ||
        e.matches(PyExc_RuntimeError))
      value_error(name, ": the ", type_name(obj), " could not be exported through DLPack (", e.what(), ")");
    throw;
  }

  PyObject* cap = capsule.ptr();
  if (PyCapsule_IsValid(cap, kVersionedName)) {
    auto* m = static_cast<DLManagedTensorVersioned*>(PyCapsule_GetPointer(cap, kVersionedName));
    if (m == nullptr) value_error(name, ": DLPack capsule holds a null tensor");
    if (m->version.major > GRPOKIT_DLPACK_MAJOR_VERSION) {
      // The spec: a consumer must not read a capsule of a newer major version; it is not ours to
      // free either, so the producer's capsule destructor keeps ownership.
      value_error(name, ": DLPack major version ", m->version.major, " is newer than supported (",
                  GRPOKIT_DLPACK_MAJOR_VERSION, ")");
    }
    if (PyCapsule_SetName(cap, kVersionedUsed) != 0) throw py::error_already_set();
    out.managed_ = m;
    out.versioned_ = true;
    const bool ro = (m->flags & GRPOKIT_DLPACK_FLAG_BITMASK_READ_ONLY) != 0;
    out.view_ = to_view(m->dl_tensor, name, ro);
  } else if (PyCapsule_IsValid(cap, kLegacyName)) {
    auto* m = static_cast<DLManagedTensor*>(PyCapsule_GetPointer(cap, kLegacyName));
    if (m == nullptr) value_error(name, ": DLPack capsule holds a null tensor");
    if (PyCapsule_SetName(cap, kLegacyUsed) != 0) throw py::error_already_set();
    out.managed_ = m;
    out.versioned_ = false;
    out.view_ = to_view(m->dl_tensor, name, false);
  } else {
    value_error(name, ": __dlpack__ of ", type_name(obj), " did not return an unused DLPack capsule");
  }
  if (writable && out.view_.read_only)
    value_error(name, ": the array is read-only, but grpokit must write into it");
  if (writable) check_no_internal_overlap(out.view_, name);
  return out;
}

namespace {

// The exception Python's signal handlers raised inside an engine call (the hook runs on the calling
// thread, so the translator below finds it on the same thread). Kept out of the thread state while the
// call unwinds, so no Python code (a DLPack deleter) runs with an exception pending.
thread_local PyObject* pending_type = nullptr;
thread_local PyObject* pending_value = nullptr;
thread_local PyObject* pending_traceback = nullptr;

// The engine's interrupt hook: runs Python's signal handlers (only the main thread receives signals;
// elsewhere this is a no-op). Safe with or without the GIL held by this thread.
bool python_signal_raised() {
  const PyGILState_STATE gil = PyGILState_Ensure();
  const bool raised = PyErr_CheckSignals() != 0;
  if (raised) {
    Py_XDECREF(pending_type);
    Py_XDECREF(pending_value);
    Py_XDECREF(pending_traceback);
    PyErr_Fetch(&pending_type, &pending_value, &pending_traceback);
  }
  PyGILState_Release(gil);
  return raised;
}

}  // namespace

void register_error_translator() {
  set_interrupt_hook(&python_signal_raised);
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const Interrupted&) {
      if (pending_type == nullptr) {
        PyErr_SetNone(PyExc_KeyboardInterrupt);
        return;
      }
      PyErr_Restore(pending_type, pending_value, pending_traceback);
      pending_type = pending_value = pending_traceback = nullptr;
    } catch (const Error& e) {
      switch (e.kind()) {
        case ErrorKind::Type:
          PyErr_SetString(PyExc_TypeError, e.what());
          return;
        case ErrorKind::NotImplemented:
          PyErr_SetString(PyExc_NotImplementedError, e.what());
          return;
        case ErrorKind::Runtime:
          PyErr_SetString(PyExc_RuntimeError, e.what());
          return;
        case ErrorKind::Value:
        case ErrorKind::Device:
          PyErr_SetString(PyExc_ValueError, e.what());
          return;
      }
    }
  });
}

}  // namespace bindings
}  // namespace grpokit
