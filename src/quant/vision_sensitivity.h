// Per-layer sensitivity of an image classifier and the bit widths mixed precision gives each layer: the
// threshold rule (high -> the first candidate, moderate -> the second, low -> the third) or the least total
// sensitivity under a size or energy budget (an exact multiple-choice knapsack, quant/knapsack.h).
#pragma once

#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "models/classifier.h"
#include "quant/vision_ptq.h"

namespace atq {

struct VisionSensitivity {
  std::vector<LayerBitWidths> candidates;
  std::vector<std::string> layers;                // QuantLayers() order
  std::vector<std::vector<double>> sensitivity;   // [layer][candidate]
  std::vector<std::vector<double>> bytes;         // [layer][candidate] packed bytes
  nlohmann::json ToJson() const;
};

// S_l(c) = ||y_full - y_l,c||_2 / sqrt(N): the logits of the N calibration images with only layer l at
// candidate c (its weights and its input), every other layer full precision. Folds BatchNorm first when
// options.fold_batchnorm (the model is changed in place: pass a copy); other settings (granularity, ranges,
// ternary ratio) come from `options`. Shows progress per layer.
VisionSensitivity MeasureVisionSensitivity(ClassifierModule& model, const torch::Tensor& calibration,
                                           const std::vector<LayerBitWidths>& candidates,
                                           const VisionPtqOptions& options);

// The threshold rule on the sensitivity at the last (lowest) candidate, relative to the largest: >= high ->
// candidate 0, >= moderate -> candidate 1, else candidate 2. Needs exactly three candidates.
std::vector<size_t> AssignByThreshold(const VisionSensitivity& table, double high, double moderate);

// The candidate per layer with the least total sensitivity whose summed cost[layer][candidate] plus
// fixed_cost is at most budget. Throws atq::Error naming the budget when nothing fits.
std::vector<size_t> AssignUnderBudget(const VisionSensitivity& table, const std::vector<std::vector<double>>& cost,
                                      double fixed_cost, double budget);

// Per-layer overrides for VisionPtqOptions::layers from a choice.
std::map<std::string, LayerBitWidths> ChosenBits(const VisionSensitivity& table, const std::vector<size_t>& choice);

// "W8A8", "W4A32", "WtA8" (ternary): a candidate's name; ParseBitWidths reads it back (A omitted: 32).
std::string BitWidthsName(const LayerBitWidths& bits);
LayerBitWidths ParseBitWidths(const std::string& text);

}  // namespace atq
