// Ctrl-C inside long engine calls. The engine never touches Python: the bindings install a hook that
// runs Python's signal handlers (with the GIL briefly re-taken); long loops poll an `Interrupt` at safe
// points, and once the hook says "stop" the call unwinds with `Interrupted`, which the bindings turn back
// into the pending Python exception (KeyboardInterrupt). Outputs are allocated by the Python layer and
// dropped on the way out, so a stopped call leaves no partial result visible.
#pragma once

#include <atomic>
#include <chrono>
#include <cstdint>
#include <exception>
#include <thread>

namespace grpokit {

// Thrown once the hook asked to stop; deliberately not a grpokit::Error (it is not a bad argument).
struct Interrupted : std::exception {
  const char* what() const noexcept override { return "interrupted"; }
};

// Returns true when the call should stop (the hook leaves the exception to raise pending). Null (the
// default, e.g. in the C++ tests): never interrupted.
using InterruptHook = bool (*)();
void set_interrupt_hook(InterruptHook hook) noexcept;
InterruptHook interrupt_hook() noexcept;

// One per long call, made on the calling thread. `requested()` is safe in OpenMP loops: the calling
// thread (the team's master) runs the hook at most every kPeriod, the others read the shared flag; a
// thread cannot throw out of a parallel region, so loops `continue` and `raise()` after the region.
class Interrupt {
 public:
  static constexpr std::chrono::milliseconds kPeriod{50};

  // `every`: look at the clock on every every-th request only (for loops of very short steps).
  explicit Interrupt(int every = 1) : every_(every) {}

  bool requested() {
    if (std::this_thread::get_id() == owner_ && --countdown() <= 0) {
      countdown() = every_;
      const auto now = std::chrono::steady_clock::now();
      if (now >= next_check()) {
        next_check() = now + kPeriod;
        const InterruptHook hook = interrupt_hook();
        if (hook && hook()) stop_.store(true, std::memory_order_relaxed);
      }
    }
    return stop_.load(std::memory_order_relaxed);
  }
  // After a parallel loop: throws Interrupted if asked to stop.
  void raise() const {
    if (stop_.load(std::memory_order_relaxed)) throw Interrupted{};
  }
  // Between steps of a serial loop.
  void poll() {
    if (requested()) throw Interrupted{};
  }

 private:
  // Per thread, not per Interrupt: a solver makes one per evaluation, each shorter than kPeriod.
  static int& countdown() {
    thread_local int left = 1;
    return left;
  }
  static std::chrono::steady_clock::time_point& next_check() {
    thread_local std::chrono::steady_clock::time_point t{};
    return t;
  }

  const int every_;
  std::atomic<bool> stop_{false};
  const std::thread::id owner_ = std::this_thread::get_id();
};

}  // namespace grpokit
