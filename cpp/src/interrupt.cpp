#include "grpokit/interrupt.hpp"

namespace grpokit {
namespace {
std::atomic<InterruptHook> installed{nullptr};
}  // namespace

void set_interrupt_hook(InterruptHook hook) noexcept { installed.store(hook); }
InterruptHook interrupt_hook() noexcept { return installed.load(std::memory_order_relaxed); }

}  // namespace grpokit
