// The weight side of quantization-aware training, shared by every trainer of QuantizableLayers (the image
// classifiers, the image-text model): the grid a layer starts with, the progressive-sparsity schedule pushed
// into the layers step by step, and the share of zeros they reach.
#pragma once

#include <string>
#include <utility>
#include <vector>

#include <nlohmann/json.hpp>

#include "grid/fake_quant.h"
#include "models/classifier.h"

namespace atq {

struct WeightQatOptions {
  WeightMode mode = WeightMode::kFull;
  int bits = 4;                   // kUniform
  double sparsity = 0.5;          // kSparsity target, reached after ramp_epochs
  int ramp_epochs = 0;            // progressive sparsity: 0 -> sparsity over these epochs (0: from the start)
  SparsityRamp ramp = SparsityRamp::kLinear;
  ThresholdRule threshold_rule = ThresholdRule::kSparsity;
  double magnitude = 0.7;         // kRatio (times mean |w|) or kAbsolute cutoff
  bool per_channel = true;
  double rpb_fraction = 0;        // residual precision boosting: share of each layer's weights kept exactly

  // Ternary with a sparsity-target threshold: the schedule moves the target as training goes.
  bool Scheduled() const { return FollowsSparsitySchedule(mode, threshold_rule); }
  // Throws atq::Error naming the first value out of range.
  void Validate() const;
  // {"mode", "bits", "sparsity", "ramp_epochs", "ramp", "threshold_mode", "magnitude", "per_channel",
  //  "rpb_fraction"}
  nlohmann::json ToJson() const;
};

// The configuration every quantized layer starts training with (FullPrecisionLayer() for kFull).
LayerQuantConfig QatLayerConfig(const WeightQatOptions& options);

// Sets each layer of `layers` to QatLayerConfig(options), except those `keep_full` names, which stay full
// precision with the same grid (so that a later export knows what they would have been).
void ApplyQatConfig(const WeightQatOptions& options, const NamedQuantLayers& layers,
                    const std::vector<std::string>& keep_full);

// Pushes the schedule's sparsity at `epochs` (fractional epochs trained so far) into every ternary layer of
// `layers` that picks its threshold by sparsity; nothing unless options.Scheduled().
void ScheduleSparsity(const WeightQatOptions& options, const NamedQuantLayers& layers, double epochs);

// The share of zero codes over all ternary layers' weights (0 when none is ternary).
double MeasuredSparsity(const NamedQuantLayers& layers);

}  // namespace atq
