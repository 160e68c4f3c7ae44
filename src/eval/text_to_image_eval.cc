#include "eval/text_to_image_eval.h"

#include <chrono>
#include <cmath>
#include <limits>

#include <torch/torch.h>

#include "eval/frechet.h"
#include "train/qat_schedule.h"
#include "util/error.h"

namespace atq {
namespace {

// The judge's features and predictions for pixels in [0, 1] [N, 1, S, S], in batches.
std::pair<torch::Tensor, torch::Tensor> Judge(const TextToImageJudge& judge, const torch::Tensor& unit_pixels) {
  torch::NoGradGuard no_grad;
  std::vector<torch::Tensor> features, predictions;
  for (int64_t first = 0; first < unit_pixels.size(0); first += 250) {
    const torch::Tensor x = (unit_pixels.slice(0, first, std::min(unit_pixels.size(0), first + 250)) -
                             judge.normalization.mean) /
                            judge.normalization.std;
    features.push_back(judge.classifier->PenultimateFeatures(x));
    predictions.push_back(judge.classifier->forward(x).argmax(1));
  }
  return {torch::cat(features), torch::cat(predictions)};
}

}  // namespace

nlohmann::json TextToImageQuality::ToJson() const {
  return {{"samples", samples},
          {"class_accuracy", class_accuracy},
          {"per_class_accuracy", per_class_accuracy},
          {"frechet_distance", frechet_distance},
          {"judge_accuracy_on_real_images", real_class_accuracy},
          {"sampling_seconds", seconds},
          {"images_per_second", images_per_second}};
}

TextToImageQuality EvaluateTextToImage(UNetImpl& unet, const CaptionConditioner& conditioner,
                                       const CaptionSet& captions, const ImageTensors& real,
                                       const TextToImageJudge& judge, const TextToImageEvalOptions& options,
                                       torch::Tensor* pixels_out, torch::Tensor* labels_out) {
  Require(judge.classifier != nullptr, "text-to-image evaluation needs a judge classifier");
  const int classes = captions.classes();
  Require(options.samples >= 2 * classes && real.size() >= options.samples,
          "text-to-image evaluation: {} samples for {} classes and {} real images", options.samples, classes,
          real.size());
  judge.classifier->eval();
  const CaptionGenerator held_out(captions, CaptionSplit::kHeldOut, options.caption_seed);
  std::vector<std::string> prompts;
  std::vector<int64_t> prompt_labels;
  for (int64_t i = 0; i < options.samples; ++i) {
    const int label = static_cast<int>(i % classes);
    prompts.push_back(held_out.Caption(label, i));
    prompt_labels.push_back(label);
  }
  const auto start = std::chrono::steady_clock::now();
  const torch::Tensor samples =
      SampleDdim(unet, NoiseSchedule(), conditioner.Encode(prompts), conditioner.Encode({""}), options.sampler);
  TextToImageQuality quality;
  quality.samples = options.samples;
  quality.seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  quality.images_per_second = static_cast<double>(options.samples) / quality.seconds;
  // Both sets as 8-bit pixels, as a saved image would be.
  const torch::Tensor pixels = ToPixels(samples);
  const torch::Tensor generated = pixels.unsqueeze(1).to(torch::kFloat32) / 255;
  const torch::Tensor real_unit =
      ((real.images.slice(0, 0, options.samples) * real.normalization.std + real.normalization.mean) * 255)
          .round()
          .clamp(0, 255) /
      255;
  const auto [generated_features, predicted] = Judge(judge, generated);
  const auto [real_features, real_predicted] = Judge(judge, real_unit);
  const torch::Tensor labels = torch::tensor(prompt_labels, torch::kLong);
  const torch::Tensor correct = predicted.eq(labels).to(torch::kFloat64);
  quality.class_accuracy = correct.mean().item<double>();
  for (int label = 0; label < classes; ++label) {
    quality.per_class_accuracy.push_back(correct.index({labels.eq(label)}).mean().item<double>());
  }
  quality.frechet_distance = FrechetDistance(generated_features, real_features);
  quality.real_class_accuracy =
      real_predicted.eq(real.labels.slice(0, 0, options.samples)).to(torch::kFloat64).mean().item<double>();
  if (pixels_out != nullptr) *pixels_out = pixels;
  if (labels_out != nullptr) *labels_out = labels;
  return quality;
}

nlohmann::json ImageDeviation::ToJson() const {
  return {{"images", images},
          {"mean_abs_pixel", mean_abs_pixel},
          {"psnr_db", std::isfinite(psnr_db) ? nlohmann::json(psnr_db) : nlohmann::json("inf")}};
}

ImageDeviation CompareImages(const torch::Tensor& pixels, const torch::Tensor& reference) {
  Require(pixels.sizes() == reference.sizes() && pixels.numel() > 0,
          "image comparison: {} images against {} reference ones of another shape", pixels.size(0),
          reference.size(0));
  const torch::Tensor difference = pixels.to(torch::kFloat64) - reference.to(torch::kFloat64);
  ImageDeviation deviation;
  deviation.images = pixels.size(0);
  deviation.mean_abs_pixel = difference.abs().mean().item<double>();
  const double mse = difference.pow(2).mean().item<double>();
  deviation.psnr_db = mse > 0 ? 10 * std::log10(255.0 * 255.0 / mse) : std::numeric_limits<double>::infinity();
  return deviation;
}

nlohmann::json UNetWeightSize::ToJson() const {
  return {{"quantized_layers", size.quantized_layers},
          {"quantized_weights", size.quantized_weights},
          {"quantized_fp32_bytes", size.quantized_fp32_bytes},
          {"quantized_bytes", size.quantized_bytes},
          {"model_fp32_bytes", size.model_fp32_bytes},
          {"model_bytes", size.model_bytes},
          {"sparsity", sparsity},
          {"packed_kernels", size.packed_kernels}};
}

UNetWeightSize MeasureUNetWeights(UNetImpl& unet) {
  const NamedQuantLayers layers = unet.QuantLayers();
  return {MeasureQuantizedModel(unet, layers), MeasuredSparsity(layers)};
}

}  // namespace atq
