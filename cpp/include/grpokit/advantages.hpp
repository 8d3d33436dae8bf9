// Group advantages: the first op of the engine.
//
// rewards (B,) float32/float64, groups either contiguous blocks of `group_size` rows or explicit
// integer `group_ids` (B,). The result is written to `out` (B,), same dtype as `rewards`.
#pragma once

#include <cstdint>
#include <string>

#include "grpokit/tensor.hpp"

namespace grpokit {

enum class Baseline : uint8_t { Mean, LeaveOneOut };
enum class StdDivisor : uint8_t { None, Population, Sample };  // divide by no std, σ with n, σ with n−1
enum class StdScope : uint8_t { Group, Batch };

struct AdvantageOptions {
  int64_t group_size = 0;  // > 0 for contiguous groups; ignored when group_ids is defined
  Baseline baseline = Baseline::Mean;
  StdDivisor std = StdDivisor::None;
  StdScope std_scope = StdScope::Group;
  double epsilon = 0.0;  // added to the std before dividing (TRL 1e-4, verl 1e-6, paper 0)
};

// Option names as the Python API spells them ("mean" | "leave_one_out", "none" | "population" |
// "sample", "group" | "batch"); unknown names throw an error listing the valid ones.
Baseline parse_baseline(const std::string& name);
StdDivisor parse_std_divisor(const std::string& name);
StdScope parse_std_scope(const std::string& name);

// Validates the arguments (dtype, shape, device, group layout, finite values) and throws
// grpokit::Error with a message naming the argument. `out` must not alias `rewards`.
void check_advantage_args(const TensorView& rewards, const TensorView& group_ids, const AdvantageOptions& opt,
                          const TensorView& out);

// CPU engine. Deterministic (fixed summation order), float64 accumulation.
void advantages_cpu(const TensorView& rewards, const TensorView& group_ids, const AdvantageOptions& opt,
                    const TensorView& out);

}  // namespace grpokit
