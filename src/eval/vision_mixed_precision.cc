// Vision mixed precision: the sensitivity table (measured once per setting), then the plan by the recipe's rule,
// under a size or energy budget through the one planner (quant/planner.h).
#include "eval/vision_experiment.h"

#include <algorithm>

#include <torch/torch.h>

#include "util/error.h"
#include "util/log.h"

namespace atq {
namespace {

// The sensitivity table's cache key: every setting the table depends on.
std::string SensitivityKey(const VisionRecipe& recipe) {
  std::string key;
  for (const LayerBitWidths& candidate : recipe.candidates) key += BitWidthsName(candidate) + ",";
  return fmt::format("{}|{}|{}|{}|{}|{}|{}", key, recipe.ptq.per_channel, static_cast<int>(recipe.ptq.activation_range),
                     recipe.ptq.affine_activations, recipe.ptq.percentile, recipe.ptq.ternary_ratio,
                     recipe.ptq.fold_batchnorm);
}

}  // namespace

nlohmann::json PlanVisionMixedPrecision(VisionExperiment& experiment, const VisionRecipe& recipe,
                                  const std::vector<LayerWork>& work, VisionPtqOptions& options) {
  const std::string key = SensitivityKey(recipe);
  auto cached = experiment.sensitivities.find(key);
  if (cached == experiment.sensitivities.end()) {
    LoadedClassifier copy = experiment.load();
    const torch::Tensor images =
        experiment.calibration.slice(0, 0, std::min(experiment.sensitivity_images, experiment.calibration.size(0)));
    cached = experiment.sensitivities
                 .emplace(key, MeasureVisionSensitivity(*copy.model, images, recipe.candidates, options))
                 .first;
  } else {
    LogInfo("mixed precision: reusing the sensitivities measured under the same settings");
  }
  const VisionSensitivity& table = cached->second;
  nlohmann::json plan = {{"rule", recipe.mixed}, {"sensitivity", table.ToJson()}};
  std::vector<size_t> choice;
  if (recipe.mixed == "threshold") {
    choice = AssignByThreshold(table, recipe.high, recipe.moderate);
    plan["high"] = recipe.high;
    plan["moderate"] = recipe.moderate;
  } else {
    // Costs per layer and candidate: packed bytes, or the layer's energy at the candidate's widths.
    std::vector<std::vector<double>> cost = table.bytes;
    double fixed = 0;
    if (recipe.mixed == "energy") {
      for (size_t l = 0; l < table.layers.size(); ++l) {
        const auto found = std::find_if(work.begin(), work.end(), [&](const LayerWork& w) { return w.name == table.layers[l]; });
        Require(found != work.end(), "mixed precision: no operation count for layer '{}'", table.layers[l]);
        for (size_t c = 0; c < table.candidates.size(); ++c) {
          const LayerBitWidths& b = table.candidates[c];
          cost[l][c] = TotalEnergy(NetworkEnergy(experiment.energy, {*found}, {{b.ternary ? 2 : b.weights, b.activations}}));
        }
      }
      for (const LayerWork& w : work) {
        if (w.operands == MacOperands::kActivationTimesActivation) {
          fixed += TotalEnergy(NetworkEnergy(experiment.energy, {w}, {{kFloatBits, options.bits.activations}}));
        }
      }
    }
    double budget = recipe.budget;
    if (!recipe.budget_like.empty()) {
      const std::string like = BitWidthsName(ParseBitWidths(recipe.budget_like));
      const auto index = std::find_if(table.candidates.begin(), table.candidates.end(),
                                      [&](const LayerBitWidths& c) { return BitWidthsName(c) == like; });
      Require(index != table.candidates.end(), "{}: budget_like {} must be one of the candidates", recipe.name, like);
      budget = fixed;
      for (const auto& row : cost) budget += row[static_cast<size_t>(index - table.candidates.begin())];
      plan["budget_like"] = like;
    }
    Require(budget > 0, "{}: mixed precision by {} needs budget or budget_like", recipe.name, recipe.mixed);
    choice = AssignUnderBudget(table, cost, fixed, budget);
    double used = fixed;
    for (size_t l = 0; l < choice.size(); ++l) used += cost[l][choice[l]];
    plan["budget"] = budget;
    plan["cost"] = used;
    plan["unit"] = recipe.mixed == "size" ? "bytes" : "pJ";
  }
  options.layers = ChosenBits(table, choice);
  nlohmann::json chosen = nlohmann::json::object();
  for (const auto& [layer, bits] : options.layers) chosen[layer] = BitWidthsName(bits);
  plan["chosen"] = chosen;
  return plan;
}


}  // namespace atq
