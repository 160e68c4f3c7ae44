// MeasureVisionSensitivity, the threshold rule and the budgeted assignment.
#include "quant/vision_sensitivity.h"

#include <torch/torch.h>

#include <algorithm>
#include <cmath>

#include "models/quant_layers.h"
#include "quant/batchnorm_fold.h"
#include "quant/planner.h"
#include "util/error.h"
#include "util/progress.h"

namespace atq {
namespace {

// The knapsack rounds each cost up to 1/65536 of the budget: a plan within a few of those units of the budget
// (a uniform setting whose cost is the budget) can be excluded, so the units are fine.
constexpr int64_t kBudgetUnits = int64_t{1} << 16;

}  // namespace

nlohmann::json VisionSensitivity::ToJson() const {
  nlohmann::json names = nlohmann::json::array();
  for (const LayerBitWidths& candidate : candidates) names.push_back(BitWidthsName(candidate));
  nlohmann::json rows = nlohmann::json::array();
  for (size_t l = 0; l < layers.size(); ++l) {
    rows.push_back({{"layer", layers[l]}, {"sensitivity", sensitivity[l]}, {"bytes", bytes[l]}});
  }
  return {{"candidates", names}, {"layers", rows}};
}

VisionSensitivity MeasureVisionSensitivity(ClassifierModule& model, const torch::Tensor& calibration,
                                           const std::vector<LayerBitWidths>& candidates,
                                           const VisionPtqOptions& options) {
  Require(!candidates.empty(), "sensitivity: no candidate bit widths");
  Require(calibration.defined() && calibration.size(0) > 0, "sensitivity: no calibration images");
  model.eval();
  torch::NoGradGuard no_grad;
  if (options.fold_batchnorm) FoldBatchNorms(model);
  const auto run = [&]() {
    std::vector<torch::Tensor> logits;
    for (int64_t begin = 0; begin < calibration.size(0); begin += options.batch_size) {
      logits.push_back(model.forward(calibration.slice(0, begin, begin + options.batch_size)));
    }
    return torch::cat(logits);
  };
  std::vector<std::pair<std::string, QuantWeightLayer*>> layers;
  for (const auto& [name, interface] : model.QuantLayers()) {
    auto* layer = dynamic_cast<QuantWeightLayer*>(interface);
    Require(layer != nullptr, "sensitivity: layer '{}' is not a QuantWeightLayer", name);
    Require(!layer->quant_config().quantized,
            "sensitivity: layer '{}' was trained quantized; measure the full-precision model", name);
    layers.emplace_back(name, layer);
    layer->input_quant->Observe();  // every layer's full-precision input, in one pass
  }
  const torch::Tensor reference = run();
  for (auto& [name, layer] : layers) layer->input_quant->Disable();

  VisionSensitivity table;
  table.candidates = candidates;
  Progress progress("sensitivity", static_cast<int64_t>(layers.size() * candidates.size()), "layer widths");
  for (auto& [name, layer] : layers) {
    const torch::Tensor original = layer->weight.detach().clone();
    table.layers.push_back(name);
    table.sensitivity.emplace_back();
    table.bytes.emplace_back();
    for (const LayerBitWidths& candidate : candidates) {
      QuantizeLayerWeight(*layer, candidate, options);
      if (candidate.activations != kFloatBits) {
        layer->input_quant->Calibrate(candidate.activations, options.activation_range, options.percentile,
                                      options.affine_activations);
      }
      const double distance = (run() - reference).norm().item<double>() / std::sqrt(calibration.size(0));
      table.sensitivity.back().push_back(distance);
      table.bytes.back().push_back(
          static_cast<double>(PackedLayerBytes(layer->weight, layer->bias, candidate, options)));
      layer->weight.copy_(original);
      layer->input_quant->Disable();
      progress.Advance(1, name + " " + BitWidthsName(candidate));
    }
  }
  progress.Finish();
  return table;
}

std::vector<size_t> AssignByThreshold(const VisionSensitivity& table, double high, double moderate) {
  Require(table.candidates.size() == 3, "the threshold rule needs three candidates (high, moderate, low), not {}",
          table.candidates.size());
  Require(high >= moderate && moderate >= 0, "threshold rule: need high >= moderate >= 0");
  double largest = 0;
  for (const auto& row : table.sensitivity) largest = std::max(largest, row.back());
  std::vector<size_t> choice;
  for (const auto& row : table.sensitivity) {
    const double relative = largest > 0 ? row.back() / largest : 0;
    choice.push_back(relative >= high ? 0 : relative >= moderate ? 1 : 2);
  }
  return choice;
}

std::vector<size_t> AssignUnderBudget(const VisionSensitivity& table, const std::vector<std::vector<double>>& cost,
                                      double fixed_cost, double budget) {
  return PlanUnderBudget(cost, table.sensitivity, budget, fixed_cost, kBudgetUnits);
}

std::map<std::string, LayerBitWidths> ChosenBits(const VisionSensitivity& table, const std::vector<size_t>& choice) {
  Require(choice.size() == table.layers.size(), "mixed precision: {} choices for {} layers", choice.size(),
          table.layers.size());
  std::map<std::string, LayerBitWidths> chosen;
  for (size_t l = 0; l < choice.size(); ++l) chosen[table.layers[l]] = table.candidates.at(choice[l]);
  return chosen;
}

std::string BitWidthsName(const LayerBitWidths& bits) {
  return "W" + (bits.ternary ? std::string("t") : std::to_string(bits.weights)) + "A" + std::to_string(bits.activations);
}

LayerBitWidths ParseBitWidths(const std::string& text) {
  const auto fail = [&]() {
    Fail("bit widths '{}': expected W<bits>A<bits> such as W8A8, W4A32 or Wt (ternary) A8, bits 2..8 or 32", text);
  };
  if (text.size() < 2 || (text[0] != 'W' && text[0] != 'w')) fail();
  const size_t a = text.find_first_of("Aa");
  const std::string weights = text.substr(1, a == std::string::npos ? std::string::npos : a - 1);
  const std::string activations = a == std::string::npos ? "32" : text.substr(a + 1);
  LayerBitWidths bits;
  const auto number = [&](const std::string& digits) {
    if (digits.empty() || digits.size() > 2 || !std::all_of(digits.begin(), digits.end(), ::isdigit)) fail();
    return std::stoi(digits);
  };
  if (weights == "t" || weights == "T") {
    bits.ternary = true;
    bits.weights = 2;
  } else {
    bits.weights = number(weights);
  }
  bits.activations = number(activations);
  if (!ValidBitWidths(bits)) fail();
  return bits;
}

}  // namespace atq
