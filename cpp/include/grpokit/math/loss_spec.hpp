// The LossSpec row, declared once in the table grpokit/math/loss_spec.def: every rule enum with its
// names, every field with its default and, for a field that can be unset, its "unset" value.
//
// Everything else is generated from that table: the enums and the struct here; the name maps, enum
// tables and field descriptions of cpp/src/loss_spec.cpp; the binding's _core.loss_spec_fields(); and
// the Python record grpokit.LossSpec (python/grpokit/_presets.py), whose `None` is the unset value.
//
// Plain data, usable on the device (kernels receive a LossSpec by value).
#pragma once

#include <cmath>
#include <cstdint>

#include "grpokit/math/loss_spec.def"

namespace grpokit {
namespace math {

// ---- the rule enums ----------------------------------------------------------------------------------

#define GRPOKIT_ENUMERATOR_(E, name, doc) E,
#define GRPOKIT_DECLARE_RULE_ENUM_(Type, VALUES) enum class Type : uint8_t { VALUES(GRPOKIT_ENUMERATOR_) };
GRPOKIT_LOSS_RULE_ENUMS(GRPOKIT_DECLARE_RULE_ENUM_)
#undef GRPOKIT_DECLARE_RULE_ENUM_
#undef GRPOKIT_ENUMERATOR_

// ---- the struct --------------------------------------------------------------------------------------

#define GRPOKIT_RULE_MEMBER_(Type, name, value) Type name = Type::value;
#define GRPOKIT_REAL_MEMBER_(name, value) double name = value;
#define GRPOKIT_FLAG_MEMBER_(name, value) bool name = value;
#define GRPOKIT_UNSETTABLE_MEMBER_(name, value, unset) double name = value;
#define GRPOKIT_COUNT_MEMBER_(name) double name = GRPOKIT_COUNT_UNSET;
// One method: plain data (copied by value into kernels).
struct LossSpec {
  GRPOKIT_LOSS_SPEC_FIELDS(GRPOKIT_RULE_MEMBER_, GRPOKIT_REAL_MEMBER_, GRPOKIT_FLAG_MEMBER_,
                           GRPOKIT_UNSETTABLE_MEMBER_, GRPOKIT_COUNT_MEMBER_)
};
#undef GRPOKIT_RULE_MEMBER_
#undef GRPOKIT_REAL_MEMBER_
#undef GRPOKIT_FLAG_MEMBER_
#undef GRPOKIT_UNSETTABLE_MEMBER_
#undef GRPOKIT_COUNT_MEMBER_

}  // namespace math
}  // namespace grpokit
