// The policy loss's metrics: one table of ids and names for the CPU engine and the CUDA kernels, so a
// metric means the same on both (the ids say *what* is measured; two ids may share a peer's name).
#pragma once

namespace grpokit {
namespace loss_metrics {

enum Metric {
  kClipLowMean,
  kClipHighMean,
  kClipRegionMean,
  kClipLowMin,
  kClipHighMax,
  kPgClipfrac,
  kPgClipfracLower,
  kCispoClipRatio,
  kWeightClipfrac,
  kRatioMin,
  kRatioMean,
  kRatioMax,
  kPpoKl,
  kKl,
  kEntropy,
  kIsMin,
  kIsMean,
  kIsMax,
  kVespoPhi,
  kM2poMaskedFraction,
  kNumMetrics
};

// kWeightClipfrac is verl's pg_clipfrac of CISPO (r ≠ clip r) and DPPO (invalid tokens): same name,
// another measurement than the PPO clip fraction.
constexpr const char* kMetricNames[kNumMetrics] = {"clip_ratio/low_mean",
                                                   "clip_ratio/high_mean",
                                                   "clip_ratio/region_mean",
                                                   "clip_ratio/low_min",
                                                   "clip_ratio/high_max",
                                                   "pg_clipfrac",
                                                   "pg_clipfrac_lower",
                                                   "cispo_clip_ratio",
                                                   "pg_clipfrac",
                                                   "ratio/min",
                                                   "ratio/mean",
                                                   "ratio/max",
                                                   "ppo_kl",
                                                   "kl",
                                                   "entropy",
                                                   "sampling/importance_sampling_ratio/min",
                                                   "sampling/importance_sampling_ratio/mean",
                                                   "sampling/importance_sampling_ratio/max",
                                                   "vespo/phi_seq_mean",
                                                   "m2po/masked_fraction"};

}  // namespace loss_metrics
}  // namespace grpokit
