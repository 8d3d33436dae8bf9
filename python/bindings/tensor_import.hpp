// Python objects -> TensorView: NumPy arrays directly, everything else through the DLPack protocol
// (pybind11 has no DLPack support).
//
// A consumed capsule is renamed "used_dltensor[_versioned]" and its deleter is called exactly once,
// when the Imported that owns it is destroyed (with the GIL held). Read-only arrays are refused
// where the engine writes.
#pragma once

#include <pybind11/pybind11.h>

#include <cstdint>

#include "grpokit/tensor.hpp"

namespace grpokit {
namespace bindings {

namespace py = pybind11;

class Imported {
 public:
  Imported() = default;
  Imported(const Imported&) = delete;
  Imported& operator=(const Imported&) = delete;
  Imported(Imported&& other) noexcept { *this = std::move(other); }
  Imported& operator=(Imported&& other) noexcept;
  ~Imported() { release(); }

  const TensorView& view() const { return view_; }

 private:
  friend Imported import_array(py::handle, const char*, std::intptr_t, bool);
  void release() noexcept;

  TensorView view_{};
  void* managed_ = nullptr;
  bool versioned_ = false;
};

// Imports `obj` (None gives an undefined view). `stream` is the CUDA stream the engine will use
// (passed to the producer's __dlpack__ for device arrays; ignored for host arrays). With `writable`
// the array is an output and must not be read-only.
Imported import_array(py::handle obj, const char* name, std::intptr_t stream, bool writable);

// Maps grpokit::Error to Python exceptions and lets long engine calls run Python's signal handlers
// (Ctrl-C raises KeyboardInterrupt, grpokit/interrupt.hpp). Call once per module.
void register_error_translator();

}  // namespace bindings
}  // namespace grpokit
