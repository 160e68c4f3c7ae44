// The weight-QAT flags every training command shares (atq train, atq train-image-text): the grid, the threshold
// rule and its sparsity schedule, RPB.
#pragma once

#include <string>

#include <CLI/CLI.hpp>

#include "train/qat_schedule.h"

namespace atq::cli {

struct WeightQatFlags {
  WeightQatOptions options;
  std::string mode = "full";
  std::string threshold_mode = "sparsity";
  std::string ramp = "linear";
  bool use_rpb = false;
};

// --mode --bits --sparsity --ramp-epochs --ramp --threshold-mode --magnitude --per-layer-scale --use-rpb
// --rpb-fraction
void AddWeightQatFlags(CLI::App& app, WeightQatFlags& flags);

// The options the flags give (throws atq::Error for an unknown threshold mode).
WeightQatOptions ResolveWeightQat(const WeightQatFlags& flags);

}  // namespace atq::cli
