// What estimators.cpp (the CPU estimators) and estimators_checks.cpp (names and argument checks) share.
#pragma once

#include "grpokit/estimators.hpp"

namespace grpokit {
namespace detail {

// Every estimator but the token-level REINFORCE++ and ReMax, and the batch mean without a group σ.
bool needs_groups(const EstimatorOptions& opt);
// check_estimator_args on `dev`: the CPU engine passes Device{} (CPU: values are checked too)
void check_estimator_inputs(const EstimatorInputs& in, const EstimatorOptions& opt, const TensorView& out,
                            const TensorView& returns, const Device& dev);

}  // namespace detail
}  // namespace grpokit
