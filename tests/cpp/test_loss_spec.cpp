// The LossSpec field table and rule-name tables generated from grpokit/math/loss_spec.def.
#include <cmath>
#include <string>

#include "catch.hpp"
#include "grpokit/error.hpp"
#include "grpokit/loss_spec.hpp"

using namespace grpokit;

namespace {

const SpecField& field(const std::string& name) {
  for (const auto& f : loss_spec_fields())
    if (f.name == name) return f;
  FAIL("no field " << name);
  return loss_spec_fields().front();
}

}  // namespace

TEST_CASE("the field table lists every LossSpec member in order with the struct's defaults", "[loss_spec]") {
  const auto& fields = loss_spec_fields();
#define GRPOKIT_ONE_(...) +1
  constexpr size_t kDeclared =
      0 GRPOKIT_LOSS_SPEC_FIELDS(GRPOKIT_ONE_, GRPOKIT_ONE_, GRPOKIT_ONE_, GRPOKIT_ONE_, GRPOKIT_ONE_);
#undef GRPOKIT_ONE_
  REQUIRE(fields.size() == kDeclared);  // one entry per line of math/loss_spec.def
  CHECK(fields.front().name == "ratio");
  CHECK(fields.back().name == "m2_threshold");
  const LossSpec d{};
  CHECK(field("epsilon_low").kind == SpecFieldKind::Real);
  CHECK(field("epsilon_low").default_value == d.epsilon_low);
  CHECK(field("is_max").kind == SpecFieldKind::Unsettable);
  CHECK(field("is_max").default_value == 3.0);
  CHECK(field("is_max").unset == INFINITY);
  CHECK(std::isnan(field("off_policy_mask_threshold").unset));
  CHECK(field("num_items_in_batch").kind == SpecFieldKind::Count);
  CHECK(field("num_items_in_batch").unset == -1.0);
  CHECK(field("divide_by_ga").kind == SpecFieldKind::Flag);
  CHECK(field("divide_by_ga").default_value == 0.0);
  CHECK(field("aggregation").kind == SpecFieldKind::Rule);
  CHECK(field("aggregation").values[static_cast<size_t>(field("aggregation").default_value)] == "token_mean");
  for (const auto& f : fields) {
    INFO(f.name);
    CHECK((f.kind == SpecFieldKind::Rule) == !f.values.empty());
    CHECK(f.values.size() == f.docs.size());
  }
}

TEST_CASE("set_spec_field writes the member it names; rule names map to their enumerators", "[loss_spec]") {
  LossSpec s;
  set_spec_field(s, "delta", 1.5);
  set_spec_field(s, "kl_is_corrected", 1.0);
  set_spec_field(s, "num_sequences", 8.0);
  set_spec_field(s, "ratio", "sequence_token");
  set_spec_field(s, "aggregation", "seq_mean_token_sum_norm");
  set_spec_field(s, "logp_weight", "vespo");
  set_spec_field(s, "selection", "kl_cov");
  CHECK(s.delta == 1.5);
  CHECK(s.kl_is_corrected);
  CHECK(s.num_sequences == 8.0);
  CHECK(s.ratio == RatioLevel::SequenceToken);
  CHECK(s.aggregation == Aggregation::SeqMeanTokenSumNorm);
  CHECK(s.logp_weight == LogpWeight::Vespo);
  CHECK(s.selection == Selection::KlCov);
  CHECK(spec_enum_values("kl") == std::vector<std::string>{"none", "k1", "k2", "k3", "abs"});
  CHECK_THROWS_AS(set_spec_field(s, "ratio", "tokens"), Error);
  CHECK_THROWS_AS(set_spec_field(s, "nope", 1.0), Error);
  CHECK_THROWS_AS(set_spec_field(s, "delta", "token"), Error);
  CHECK_THROWS_AS(set_spec_field(s, "delta", std::nan("")), Error);
  CHECK_NOTHROW(set_spec_field(s, "off_policy_mask_threshold", std::nan("")));  // NaN is its unset value
}

TEST_CASE("validate_spec refuses negative counts other than the unset value", "[loss_spec]") {
  LossSpec s;
  CHECK_NOTHROW(validate_spec(s));
  s.num_items_in_batch = 12.0;
  CHECK_NOTHROW(validate_spec(s));
  s.num_items_in_batch = -5.0;
  CHECK_THROWS_AS(validate_spec(s), Error);
  s = LossSpec{};
  s.max_completion_length = -2.0;
  CHECK_THROWS_AS(validate_spec(s), Error);
  s.max_completion_length = 0.0;
  CHECK_THROWS_AS(validate_spec(s), Error);
}
