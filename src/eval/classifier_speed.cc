#include "eval/classifier_speed.h"

#include <chrono>
#include <map>
#include <memory>

#include <fmt/format.h>
#include <torch/torch.h>

#include "models/classifiers.h"
#include "models/packed_classifier.h"
#include "util/error.h"

namespace atq {
namespace {

// Images per second of `model` on `images`: one warm-up pass, then passes until `min_seconds` have gone by.
double ImagesPerSecond(ClassifierModule& model, const torch::Tensor& images, double min_seconds) {
  torch::NoGradGuard no_grad;
  model.forward(images);
  using Clock = std::chrono::steady_clock;
  const auto start = Clock::now();
  int64_t passes = 0;
  double seconds = 0;
  do {
    model.forward(images);
    ++passes;
    seconds = std::chrono::duration<double>(Clock::now() - start).count();
  } while (seconds < min_seconds);
  return static_cast<double>(passes * images.size(0)) / seconds;
}

// The float32 model libtorch runs: every packed layer's weight dequantized once (codes x scales plus the RPB
// values), every other tensor copied, no layer quantized.
std::shared_ptr<ClassifierModule> FloatModel(const LoadedClassifier& packed) {
  const ClassifierConfig& config = packed.config;
  auto model = MakeClassifier(config.model, config.in_channels, config.classes, config.image_size, config.patch_size);
  torch::NoGradGuard no_grad;
  std::map<std::string, torch::Tensor> weights;
  for (const auto& [name, layer] : packed.model->QuantLayers()) weights[name + ".weight"] = layer->FloatWeight();
  const auto parameters = packed.model->named_parameters();
  for (auto& parameter : model->named_parameters()) {
    const auto found = weights.find(parameter.key());
    parameter.value().copy_(found != weights.end() ? found->second : parameters[parameter.key()]);
  }
  const auto buffers = packed.model->named_buffers();
  for (auto& buffer : model->named_buffers()) buffer.value().copy_(buffers[buffer.key()]);
  model->eval();
  return model;
}

}  // namespace

nlohmann::json MeasureClassifierSpeed(const std::string& packed_path, const ClassifierSpeedOptions& options) {
  Require(!options.batches.empty(), "classifier speed: no batch sizes");
  const LoadedClassifier kernels = LoadPackedClassifier(packed_path, PackedRun::kKernels);
  const std::shared_ptr<ClassifierModule> floats = FloatModel(kernels);
  const ClassifierConfig& config = kernels.config;
  nlohmann::json report = {{"model", config.model},
                           {"file", packed_path},
                           {"image_size", config.image_size},
                           {"threads", torch::get_num_threads()},
                           {"results", nlohmann::json::array()}};
  if (options.on_line) {
    options.on_line(fmt::format("{} ({}x{}), {} thread(s): images/s", config.model, config.image_size,
                                config.image_size, torch::get_num_threads()));
    options.on_line(fmt::format("{:>6} {:>14} {:>14} {:>8}", "batch", "libtorch f32", "packed", "ratio"));
  }
  torch::manual_seed(1);
  for (int64_t batch : options.batches) {
    Require(batch > 0, "classifier speed: batch {} is not positive", batch);
    const torch::Tensor images = torch::randn({batch, config.in_channels, config.image_size, config.image_size});
    const double float_rate = ImagesPerSecond(*floats, images, options.min_seconds);
    const double packed_rate = ImagesPerSecond(*kernels.model, images, options.min_seconds);
    report["results"].push_back({{"batch", batch},
                                 {"libtorch_f32_images_per_second", float_rate},
                                 {"packed_images_per_second", packed_rate},
                                 {"packed_over_f32", packed_rate / float_rate}});
    if (options.on_line) {
      options.on_line(fmt::format("{:>6} {:>14.1f} {:>14.1f} {:>7.2f}x", batch, float_rate, packed_rate,
                                  packed_rate / float_rate));
    }
  }
  return report;
}

void WriteRandomTernaryClassifier(const std::string& arch, int64_t image_size, QuantType type,
                                  const std::string& path) {
  LayerQuantConfig ternary;
  ternary.quantized = true;
  const LoadedClassifier loaded = RandomClassifier(arch, image_size, ternary, 7);
  ExportPackedClassifier(loaded, type, path);
}

}  // namespace atq
