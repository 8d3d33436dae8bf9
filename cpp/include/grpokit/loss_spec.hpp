// The LossSpec record by name: what the bindings and the Python record (grpokit.LossSpec) read.
// The fields and rule names themselves are declared once, in the table grpokit/math/loss_spec.def.
#pragma once

#include <string>
#include <vector>

#include "grpokit/math/loss_spec.hpp"

namespace grpokit {

using math::Aggregation;
using math::EntropyAggregation;
using math::KlEstimator;
using math::LogpWeight;
using math::LossSpec;  // the rule row; plain data for kernels
using math::RatioLevel;
using math::SamplerIs;
using math::Selection;
using math::Surrogate;
using math::TrustRegion;

enum class SpecFieldKind { Rule, Real, Flag, Unsettable, Count };

// One field of LossSpec as math/loss_spec.def declares it.
struct SpecField {
  std::string name;
  SpecFieldKind kind;
  double default_value;                   // Real, Flag (0/1), Unsettable, Count; Rule: the enumerator
  double unset;                           // Unsettable, Count: the value read as "unset"
  std::vector<std::string> values, docs;  // Rule: accepted names (in enumerator order), what each does
};
const std::vector<SpecField>& loss_spec_fields();

// Field-by-name access for the bindings; rule fields take their names as strings. Unknown names and
// values throw grpokit::Error. NaN is accepted only where it is the field's unset value.
void set_spec_field(LossSpec& spec, const std::string& name, double value);
void set_spec_field(LossSpec& spec, const std::string& name, const std::string& value);
std::vector<std::string> spec_enum_values(const std::string& name);

// Checks hyper-parameters (negative ε, τ ≤ 0, quantile outside (0, 1], negative counts, ...).
void validate_spec(const LossSpec& spec);

}  // namespace grpokit
