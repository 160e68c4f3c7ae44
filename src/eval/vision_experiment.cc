// One measured run of a vision recipe, and the calibration images.
#include "eval/vision_experiment.h"

#include <torch/torch.h>

#include <algorithm>
#include <chrono>

#include "eval/classifier_work.h"
#include "io/idx.h"
#include "models/quant_layers.h"
#include "train/trainer.h"
#include "util/error.h"
#include "util/log.h"

namespace atq {
namespace {

constexpr int64_t kFloat32Bytes = 4;

}  // namespace

VisionOutcome RunVisionRecipe(VisionExperiment& experiment, const VisionRecipe& recipe) {
  const auto start = std::chrono::steady_clock::now();
  VisionOutcome outcome;
  outcome.name = recipe.name;
  outcome.details["recipe"] = recipe.settings;
  LoadedClassifier loaded = experiment.load();
  ClassifierModule& model = *loaded.model;
  const std::vector<LayerWork> work =
      CountClassifierWork(model, loaded.config.in_channels, loaded.config.image_size);
  VisionPtqOptions options = recipe.ptq;
  std::vector<LayerBits> bits(work.size());  // float32 throughout
  int64_t packed_layer_bytes = 0, layer_float_bytes = 0;
  // A checkpoint with layers trained quantized is measured as trained: those layers keep their bits, the rest
  // and every activation stay float.
  const auto layers = model.QuantLayers();
  const bool trained = std::any_of(layers.begin(), layers.end(), [](const auto& layer) {
    return layer.second->quant_config().quantized;
  });
  if (recipe.full_precision && trained) {
    options = VisionPtqOptions{};
    options.bits = {kFloatBits, kFloatBits, false};
    outcome.details["as_trained"] = true;
  }
  if (!recipe.full_precision || trained) {
    if (!recipe.mixed.empty()) outcome.details["mixed"] = PlanVisionMixedPrecision(experiment, recipe, work, options);
    if (recipe.first_last) {
      options.layers[layers.front().first] = options.layers[layers.back().first] = *recipe.first_last;
    }
    const VisionPtqReport report = QuantizeClassifier(model, experiment.calibration, options);
    outcome.details["layers"] = report.ToJson();
    packed_layer_bytes = report.packed_bytes();
    bits = RecipeBits(work, report, options.bits.activations);
    for (const auto& [name, interface] : model.QuantLayers()) {
      auto* layer = dynamic_cast<QuantWeightLayer*>(interface);
      layer_float_bytes += (layer->weight.numel() + (layer->bias.defined() ? layer->bias.numel() : 0)) * kFloat32Bytes;
    }
  }
  outcome.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  int64_t parameters = 0;
  for (const torch::Tensor& parameter : model.parameters()) parameters += parameter.numel();
  outcome.model_bytes = parameters * kFloat32Bytes - layer_float_bytes + packed_layer_bytes;
  const std::vector<LayerEnergy> energy = NetworkEnergy(experiment.energy, work, bits);
  outcome.energy_pj = TotalEnergy(energy);
  outcome.details["energy"] = EnergyJson(experiment.energy, energy);
  outcome.accuracy = Evaluate(model, experiment.test).accuracy;
  LogInfo("{}: accuracy {:.2f}%, {:.3f} MB, {:.3f} uJ per image", recipe.name, 100 * outcome.accuracy,
          outcome.model_bytes / 1e6, outcome.energy_pj / 1e6);
  return outcome;
}

torch::Tensor CalibrationImages(const ClassifierConfig& config, const std::string& data_dir, int64_t count,
                                uint64_t seed) {
  Require(count > 0, "calibration needs at least one image, not {}", count);
  const std::string dir = data_dir.empty() ? DefaultDataDir(config.dataset) : data_dir;
  const ImageTensors train = ToTensors(LoadIdxDataset(dir, /*train=*/true), config.normalization);
  Require(train.images.size(2) == config.image_size && train.images.size(1) == config.in_channels,
          "{}: training images are {}x{} with {} channel(s); the model takes {}x{} with {}", dir,
          train.images.size(2), train.images.size(3), train.images.size(1), config.image_size, config.image_size,
          config.in_channels);
  const std::vector<int64_t> order = ShuffledOrder(train.size(), seed);
  const int64_t n = std::min(count, train.size());
  return train.images.index_select(0, torch::tensor(std::vector<int64_t>(order.begin(), order.begin() + n)));
}

}  // namespace atq
