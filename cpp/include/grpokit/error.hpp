// grpokit::Error — the one exception type the engine throws. The bindings translate `kind` to the
// matching Python exception, so no C++ exception ever escapes as a crash.
#pragma once

#include <sstream>
#include <stdexcept>
#include <string>
#include <utility>

namespace grpokit {

enum class ErrorKind {
  Value,           // -> ValueError: bad shape, bad value, bad hyper-parameter
  Type,            // -> TypeError: unsupported dtype or object kind
  Device,          // -> ValueError: wrong or mixed devices
  NotImplemented,  // -> NotImplementedError: valid request this build cannot serve
  Runtime,         // -> RuntimeError: a failure not caused by the arguments (CUDA launch, ...)
};

class Error : public std::runtime_error {
 public:
  Error(ErrorKind kind, std::string message) : std::runtime_error(std::move(message)), kind_(kind) {}
  ErrorKind kind() const noexcept { return kind_; }

 private:
  ErrorKind kind_;
};

namespace detail {
template <class... Args>
std::string concat(Args&&... args) {
  std::ostringstream os;
  (os << ... << std::forward<Args>(args));
  return os.str();
}
}  // namespace detail

// Throw helpers, one per kind: value_error("epsilon: expected a value >= 0, got ", eps) and so on. The
// message names the argument, what it got and what was expected.
template <ErrorKind Kind>
struct Thrower {
  template <class... Args>
  [[noreturn]] void operator()(Args&&... args) const {
    throw Error(Kind, detail::concat(std::forward<Args>(args)...));
  }
};
inline constexpr Thrower<ErrorKind::Value> value_error{};
inline constexpr Thrower<ErrorKind::Type> type_error{};
inline constexpr Thrower<ErrorKind::Device> device_error{};
inline constexpr Thrower<ErrorKind::NotImplemented> not_implemented{};
inline constexpr Thrower<ErrorKind::Runtime> runtime_error{};

}  // namespace grpokit
