// LossSpec by name: the field table, the rule-name tables and the hyper-parameter checks, all generated
// from the table grpokit/math/loss_spec.def.
#include "grpokit/loss_spec.hpp"

#include <cmath>
#include <cstring>
#include <sstream>
#include <unordered_map>

#include "grpokit/error.hpp"

namespace grpokit {
namespace {

// ---- rule names: an enum's names in enumerator order ---------------------------------------------

struct RuleValues {
  std::vector<std::string> names, docs;
};

template <class E>
const RuleValues& rule_values();

#define GRPOKIT_RULE_NAME_(E, name, doc) #name,
#define GRPOKIT_RULE_DOC_(E, name, doc) doc,
#define GRPOKIT_RULE_VALUES_(Type, VALUES)                                                \
  template <>                                                                             \
  const RuleValues& rule_values<Type>() {                                                 \
    static const RuleValues v{{VALUES(GRPOKIT_RULE_NAME_)}, {VALUES(GRPOKIT_RULE_DOC_)}}; \
    return v;                                                                             \
  }
GRPOKIT_LOSS_RULE_ENUMS(GRPOKIT_RULE_VALUES_)
#undef GRPOKIT_RULE_VALUES_
#undef GRPOKIT_RULE_DOC_
#undef GRPOKIT_RULE_NAME_

template <class E>
E parse_rule(const char* field, const std::string& v) {
  const auto& names = rule_values<E>().names;
  for (size_t i = 0; i < names.size(); ++i)
    if (v == names[i]) return static_cast<E>(i);
  std::ostringstream os;
  for (size_t i = 0; i < names.size(); ++i) os << (i ? ", " : "") << "'" << names[i] << "'";
  value_error(field, ": expected one of ", os.str(), ", got '", v, "'");
}

// ---- the field table -----------------------------------------------------------------------------

// A field's description and how to write it.
struct FieldSlot {
  SpecField info;
  double LossSpec::* number = nullptr;                         // Real, Unsettable, Count
  bool LossSpec::* flag = nullptr;                             // Flag
  void (*set_rule)(LossSpec&, const std::string&) = nullptr;  // Rule
};

std::vector<FieldSlot> make_slots() {
  const LossSpec d{};
  std::vector<FieldSlot> slots;
#define GRPOKIT_RULE_SLOT_(Type, n, value)                                                             \
  slots.push_back({{#n, SpecFieldKind::Rule, static_cast<double>(d.n), NAN, rule_values<Type>().names, \
                    rule_values<Type>().docs},                                                         \
                   nullptr,                                                                            \
                   nullptr,                                                                            \
                   [](LossSpec& s, const std::string& v) { s.n = parse_rule<Type>(#n, v); }});
#define GRPOKIT_REAL_SLOT_(n, value) \
  slots.push_back({{#n, SpecFieldKind::Real, d.n, NAN, {}, {}}, &LossSpec::n});
#define GRPOKIT_FLAG_SLOT_(n, value) \
  slots.push_back({{#n, SpecFieldKind::Flag, d.n ? 1.0 : 0.0, NAN, {}, {}}, nullptr, &LossSpec::n});
#define GRPOKIT_UNSETTABLE_SLOT_(n, value, unset) \
  slots.push_back({{#n, SpecFieldKind::Unsettable, d.n, unset, {}, {}}, &LossSpec::n});
#define GRPOKIT_COUNT_SLOT_(n) \
  slots.push_back({{#n, SpecFieldKind::Count, d.n, GRPOKIT_COUNT_UNSET, {}, {}}, &LossSpec::n});
  GRPOKIT_LOSS_SPEC_FIELDS(GRPOKIT_RULE_SLOT_, GRPOKIT_REAL_SLOT_, GRPOKIT_FLAG_SLOT_,
                           GRPOKIT_UNSETTABLE_SLOT_, GRPOKIT_COUNT_SLOT_)
#undef GRPOKIT_RULE_SLOT_
#undef GRPOKIT_REAL_SLOT_
#undef GRPOKIT_FLAG_SLOT_
#undef GRPOKIT_UNSETTABLE_SLOT_
#undef GRPOKIT_COUNT_SLOT_
  return slots;
}

const std::vector<FieldSlot>& slots() {
  static const std::vector<FieldSlot> s = make_slots();
  return s;
}

const FieldSlot* find_slot(const std::string& name) {
  static const std::unordered_map<std::string, size_t> index = [] {
    std::unordered_map<std::string, size_t> m;
    for (size_t i = 0; i < slots().size(); ++i) m.emplace(slots()[i].info.name, i);
    return m;
  }();
  const auto it = index.find(name);
  return it == index.end() ? nullptr : &slots()[it->second];
}

}  // namespace

// ---- public API ----------------------------------------------------------------------------------

const std::vector<SpecField>& loss_spec_fields() {
  static const std::vector<SpecField> fields = [] {
    std::vector<SpecField> out;
    for (const auto& s : slots()) out.push_back(s.info);
    return out;
  }();
  return fields;
}

void set_spec_field(LossSpec& spec, const std::string& name, double value) {
  const FieldSlot* f = find_slot(name);
  if (f != nullptr && f->number != nullptr) {
    if (std::isnan(value) && !std::isnan(f->info.unset)) value_error(name, ": expected a number, got NaN");
    spec.*(f->number) = value;
    return;
  }
  if (f != nullptr && f->flag != nullptr) {
    spec.*(f->flag) = value != 0.0;
    return;
  }
  value_error("LossSpec has no numeric field '", name, "'");
}

void set_spec_field(LossSpec& spec, const std::string& name, const std::string& value) {
  const FieldSlot* f = find_slot(name);
  if (f != nullptr && f->set_rule == nullptr)  // a text for a number or flag, e.g. epsilon="abc"
    type_error(name, ": expected a number, got the text '", value, "'");
  if (f == nullptr) value_error("LossSpec has no rule field '", name, "'");
  f->set_rule(spec, value);
}

std::vector<std::string> spec_enum_values(const std::string& name) {
  const FieldSlot* f = find_slot(name);
  if (f == nullptr || f->set_rule == nullptr) value_error("LossSpec has no rule field '", name, "'");
  return f->info.values;
}

void validate_spec(const LossSpec& s) {
  auto nonneg = [](double v, const char* n) {
    if (!(v >= 0.0)) value_error(n, ": expected a value >= 0, got ", v);
  };
  auto positive = [](double v, const char* n) {
    if (!(v > 0.0)) value_error(n, ": expected a value > 0, got ", v);
  };
  nonneg(s.epsilon_low, "epsilon");
  nonneg(s.epsilon_high, "epsilon_high");
  positive(s.delta, "delta");
  positive(s.clip_ratio_c, "clip_ratio_c");
  if (s.surrogate == Surrogate::Clip && std::isfinite(s.clip_ratio_c) && !(s.clip_ratio_c > 1.0))
    value_error("clip_ratio_c: the dual-clip bound must be > 1, got ", s.clip_ratio_c);
  if (s.surrogate == Surrogate::Clip && s.epsilon_low > 1.0)
    value_error("epsilon: the lower clip bound 1 − epsilon must be >= 0; got epsilon = ", s.epsilon_low);
  if (!(s.log_ratio_min <= s.log_ratio_max))
    value_error("log_ratio_min: must be <= log_ratio_max, got ", s.log_ratio_min, " > ", s.log_ratio_max);
  if (!std::isfinite(s.beta)) value_error("beta: expected a finite value, got ", s.beta);
  if (!std::isfinite(s.entropy_coef))
    value_error("entropy_coef: expected a finite value, got ", s.entropy_coef);
  nonneg(s.dro_beta, "dro_beta");
  if (!(s.positive_example_nll_weight >= 0.0 && std::isfinite(s.positive_example_nll_weight)))
    value_error("positive_example_nll_weight: expected a finite value >= 0, got ",
                s.positive_example_nll_weight);
  positive(s.kl_log_clamp, "kl_log_clamp");
  positive(s.kl_value_clamp, "kl_value_clamp");
  if (!(s.top_entropy_quantile > 0.0 && s.top_entropy_quantile <= 1.0))
    value_error("top_entropy_quantile: expected a value in (0, 1], got ", s.top_entropy_quantile);
  if (!std::isnan(s.off_policy_mask_threshold) && !(s.off_policy_mask_threshold >= 0.0))
    value_error("off_policy_mask_threshold: expected a value >= 0 (or None), got ",
                s.off_policy_mask_threshold);
  if (!std::isnan(s.m2_threshold) && !(s.m2_threshold >= 0.0))
    value_error("m2_threshold: expected a value >= 0 (or None), got ", s.m2_threshold);
  if (!(s.is_min < s.is_max))
    value_error("vllm_importance_sampling_clip_min: must be less than the max, got ", s.is_min,
                " >= ", s.is_max);
  positive(s.sapo_temperature_pos, "sapo_temperature_pos");
  positive(s.sapo_temperature_neg, "sapo_temperature_neg");
  positive(s.dp_size, "dp_size");
  positive(s.gradient_accumulation_steps, "gradient_accumulation_steps");
  // A count is >= 1 (TRL's num_items_in_batch may be a fractional estimate), or unset (−1): any other
  // negative would silently read as unset; beyond 2⁵³ the normalisers under- or overflow in float32.
  for (const auto& f : slots())
    if (f.info.kind == SpecFieldKind::Count) {
      const double v = s.*(f.number);
      if (v == GRPOKIT_COUNT_UNSET) continue;
      if (!(v >= 1.0)) value_error(f.info.name, ": expected a positive count (or None: unset), got ", v);
      if (!(v <= 9007199254740992.0))
        value_error(f.info.name, ": expected a count of at most 2**53 (or None: unset), got ", v);
    }
  if (s.group_size != GRPOKIT_COUNT_UNSET && s.group_size != std::floor(s.group_size))
    value_error("group_size: expected a whole number of rows >= 1, got ", s.group_size);
}

}  // namespace grpokit
