// LossSpec fields by name: the enum tables, the numeric and flag fields, and the spec's checks
// (the bindings set a spec field by field). The engine itself: loss_engine.cpp.
#include "grpokit/loss.hpp"

#include <cmath>
#include <map>
#include <sstream>
#include <string>
#include <vector>

namespace grpokit {
namespace {

// ---- spec fields by name -------------------------------------------------------------------------

template <class E>
struct EnumTable {
  const char* field;
  std::vector<std::pair<const char*, E>> values;
  E parse(const std::string& v) const {
    for (const auto& kv : values)
      if (v == kv.first) return kv.second;
    std::ostringstream os;
    for (size_t i = 0; i < values.size(); ++i) os << (i ? ", " : "") << "'" << values[i].first << "'";
    value_error(field, ": expected one of ", os.str(), ", got '", v, "'");
  }
  std::vector<std::string> names() const {
    std::vector<std::string> out;
    for (const auto& kv : values) out.emplace_back(kv.first);
    return out;
  }
};

const EnumTable<RatioLevel> kRatio{"ratio",
                                   {{"token", RatioLevel::Token},
                                    {"sequence", RatioLevel::Sequence},
                                    {"sequence_token", RatioLevel::SequenceToken},
                                    {"sequence_sum", RatioLevel::SequenceSum}}};
const EnumTable<Surrogate> kSurrogate{"surrogate",
                                      {{"clip", Surrogate::Clip},
                                       {"unclipped", Surrogate::Unclipped},
                                       {"sapo", Surrogate::Sapo},
                                       {"logp", Surrogate::Logp},
                                       {"geo_mean", Surrogate::GeoMean}}};
const EnumTable<LogpWeight> kLogpWeight{"logp_weight",
                                        {{"one", LogpWeight::One},
                                         {"ratio", LogpWeight::Ratio},
                                         {"clip", LogpWeight::Clip},
                                         {"cap", LogpWeight::Cap},
                                         {"dppo_tv", LogpWeight::DppoTv},
                                         {"dppo_kl", LogpWeight::DppoKl},
                                         {"vespo", LogpWeight::Vespo}}};
const EnumTable<Aggregation> kAggregation{"aggregation",
                                          {{"token_mean", Aggregation::TokenMean},
                                           {"token_sum", Aggregation::TokenSum},
                                           {"seq_mean_token_mean", Aggregation::SeqMeanTokenMean},
                                           {"seq_mean_token_sum", Aggregation::SeqMeanTokenSum},
                                           {"seq_mean_token_sum_norm", Aggregation::SeqMeanTokenSumNorm}}};
const EnumTable<KlEstimator> kKlTable{"kl",
                                 {{"none", KlEstimator::None},
                                  {"k1", KlEstimator::K1},
                                  {"k2", KlEstimator::K2},
                                  {"k3", KlEstimator::K3},
                                  {"abs", KlEstimator::Abs}}};
const EnumTable<SamplerIs> kSamplerIs{"sampler_is",
                                      {{"none", SamplerIs::None},
                                       {"token_truncate", SamplerIs::TokenTruncate},
                                       {"token_mask", SamplerIs::TokenMask},
                                       {"sequence_truncate", SamplerIs::SequenceTruncate},
                                       {"sequence_mask", SamplerIs::SequenceMask}}};
const EnumTable<Selection> kSelection{"selection",
                                      {{"none", Selection::None},
                                       {"clip_cov", Selection::ClipCov},
                                       {"kl_cov", Selection::KlCov}}};
const EnumTable<EntropyAggregation> kEntropyAgg{"entropy_aggregation",
                                                {{"local_token_mean", EntropyAggregation::LocalTokenMean},
                                                 {"policy", EntropyAggregation::Policy}}};

std::map<std::string, double LossSpec::*> double_fields() {
  return {{"epsilon_low", &LossSpec::epsilon_low},
          {"epsilon_high", &LossSpec::epsilon_high},
          {"delta", &LossSpec::delta},
          {"clip_ratio_c", &LossSpec::clip_ratio_c},
          {"log_ratio_min", &LossSpec::log_ratio_min},
          {"log_ratio_max", &LossSpec::log_ratio_max},
          {"beta", &LossSpec::beta},
          {"kl_log_clamp", &LossSpec::kl_log_clamp},
          {"kl_value_clamp", &LossSpec::kl_value_clamp},
          {"dro_beta", &LossSpec::dro_beta},
          {"ppo_kl_coef", &LossSpec::ppo_kl_coef},
          {"entropy_coef", &LossSpec::entropy_coef},
          {"top_entropy_quantile", &LossSpec::top_entropy_quantile},
          {"off_policy_mask_threshold", &LossSpec::off_policy_mask_threshold},
          {"prune_threshold", &LossSpec::prune_threshold},
          {"is_min", &LossSpec::is_min},
          {"is_max", &LossSpec::is_max},
          {"sapo_temperature_pos", &LossSpec::sapo_temperature_pos},
          {"sapo_temperature_neg", &LossSpec::sapo_temperature_neg},
          {"vespo_k_pos", &LossSpec::vespo_k_pos},
          {"vespo_lambda_pos", &LossSpec::vespo_lambda_pos},
          {"vespo_k_neg", &LossSpec::vespo_k_neg},
          {"vespo_lambda_neg", &LossSpec::vespo_lambda_neg},
          {"num_items_in_batch", &LossSpec::num_items_in_batch},
          {"num_sequences", &LossSpec::num_sequences},
          {"max_completion_length", &LossSpec::max_completion_length},
          {"dp_size", &LossSpec::dp_size},
          {"gradient_accumulation_steps", &LossSpec::gradient_accumulation_steps}};
}

std::map<std::string, bool LossSpec::*> bool_fields() {
  return {{"kl_is_corrected", &LossSpec::kl_is_corrected},
          {"kl_straight_through", &LossSpec::kl_straight_through},
          {"gtpo_entropy", &LossSpec::gtpo_entropy},
          {"divide_by_ga", &LossSpec::divide_by_ga},
          {"seq_count_nonempty", &LossSpec::seq_count_nonempty}};
}

}  // namespace

// ---- public API ----------------------------------------------------------------------------------

void set_spec_field(LossSpec& spec, const std::string& name, double value) {
  static const auto doubles = double_fields();
  static const auto bools = bool_fields();
  if (auto it = doubles.find(name); it != doubles.end()) {
    if (std::isnan(value) && name != "off_policy_mask_threshold")
      value_error(name, ": expected a number, got NaN");
    spec.*(it->second) = value;
    return;
  }
  if (auto it = bools.find(name); it != bools.end()) {
    spec.*(it->second) = value != 0.0;
    return;
  }
  value_error("LossSpec has no numeric field '", name, "'");
}

void set_spec_field(LossSpec& spec, const std::string& name, const std::string& value) {
  if (name == "ratio") spec.ratio = kRatio.parse(value);
  else if (name == "surrogate") spec.surrogate = kSurrogate.parse(value);
  else if (name == "logp_weight") spec.logp_weight = kLogpWeight.parse(value);
  else if (name == "aggregation") spec.aggregation = kAggregation.parse(value);
  else if (name == "kl") spec.kl = kKlTable.parse(value);
  else if (name == "sampler_is") spec.sampler_is = kSamplerIs.parse(value);
  else if (name == "entropy_aggregation") spec.entropy_aggregation = kEntropyAgg.parse(value);
  else if (name == "selection") spec.selection = kSelection.parse(value);
  else value_error("LossSpec has no rule field '", name, "'");
}

std::vector<std::string> spec_enum_values(const std::string& name) {
  if (name == "ratio") return kRatio.names();
  if (name == "surrogate") return kSurrogate.names();
  if (name == "logp_weight") return kLogpWeight.names();
  if (name == "aggregation") return kAggregation.names();
  if (name == "kl") return kKlTable.names();
  if (name == "sampler_is") return kSamplerIs.names();
  if (name == "entropy_aggregation") return kEntropyAgg.names();
  if (name == "selection") return kSelection.names();
  value_error("LossSpec has no rule field '", name, "'");
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
  if (!std::isfinite(s.entropy_coef)) value_error("entropy_coef: expected a finite value, got ", s.entropy_coef);
  nonneg(s.dro_beta, "dro_beta");
  positive(s.kl_log_clamp, "kl_log_clamp");
  positive(s.kl_value_clamp, "kl_value_clamp");
  if (!(s.top_entropy_quantile > 0.0 && s.top_entropy_quantile <= 1.0))
    value_error("top_entropy_quantile: expected a value in (0, 1], got ", s.top_entropy_quantile);
  if (!std::isnan(s.off_policy_mask_threshold) && !(s.off_policy_mask_threshold >= 0.0))
    value_error("off_policy_mask_threshold: expected a value >= 0 (or None), got ", s.off_policy_mask_threshold);
  if (!(s.is_min < s.is_max))
    value_error("vllm_importance_sampling_clip_min: must be less than the max, got ", s.is_min, " >= ", s.is_max);
  positive(s.sapo_temperature_pos, "sapo_temperature_pos");
  positive(s.sapo_temperature_neg, "sapo_temperature_neg");
  positive(s.dp_size, "dp_size");
  positive(s.gradient_accumulation_steps, "gradient_accumulation_steps");
  if (s.num_items_in_batch == 0.0) value_error("num_items_in_batch: expected a positive count, got 0");
  if (s.num_sequences == 0.0) value_error("num_sequences: expected a positive count, got 0");
  if (s.max_completion_length == 0.0 || std::isnan(s.max_completion_length))
    value_error("max_completion_length: the constant normaliser C must be > 0, got ", s.max_completion_length);
}

}  // namespace grpokit
