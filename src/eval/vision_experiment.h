// Vision post-training experiments: a recipe (eval/vision_recipe.h) run on a fresh copy of a classifier and
// measured: test accuracy, model size, and energy per inference under the energy model.
#pragma once

#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>
#include <torch/types.h>

#include "eval/classifier_work.h"
#include "eval/energy.h"
#include "eval/vision_recipe.h"
#include "quant/vision_ptq.h"
#include "quant/vision_sensitivity.h"
#include "models/classifier_checkpoint.h"
#include "data/image_data.h"

namespace atq {

// What every recipe of a run shares.
struct VisionExperiment {
  std::function<LoadedClassifier()> load;  // a fresh full-precision copy each call
  ImageTensors test;
  torch::Tensor calibration;               // [N, C, H, W] normalized training images
  int64_t sensitivity_images = 256;        // of the calibration images, for per-layer sensitivity
  EnergyModel energy;
  std::map<std::string, VisionSensitivity> sensitivities;  // measured once per candidate set and settings
};

struct VisionOutcome {
  std::string name;
  double accuracy = 0;
  int64_t model_bytes = 0;    // weight layers packed, every other tensor float32
  double energy_pj = 0;       // per image
  double seconds = 0;         // quantization, without the test evaluation
  nlohmann::json details;     // recipe, per-layer report, energy per layer, mixed-precision plan
};

// Chooses each layer's bit widths by the recipe's mixed-precision rule (threshold, or the least total
// sensitivity under the size or energy budget), writes them into options.layers, and returns the plan as JSON.
nlohmann::json PlanVisionMixedPrecision(VisionExperiment& experiment, const VisionRecipe& recipe,
                                        const std::vector<LayerWork>& work, VisionPtqOptions& options);

// Quantizes a fresh copy by `recipe` (mixed precision measures, or reuses, the sensitivity table first) and
// evaluates it on the test set.
VisionOutcome RunVisionRecipe(VisionExperiment& experiment, const VisionRecipe& recipe);

// The calibration set: `count` training images of `config`'s dataset in an order fixed by `seed`.
torch::Tensor CalibrationImages(const ClassifierConfig& config, const std::string& data_dir, int64_t count,
                                uint64_t seed);

}  // namespace atq
