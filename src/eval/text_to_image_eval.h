// How good a text-to-image model's pictures are, measured rather than eyeballed: images drawn for held-out
// caption wordings of every class (equal counts), judged by a trained classifier (the ResNet-18 fixture):
// the share it assigns to the prompt's class, and the Fréchet distance between the drawn images and as many real
// test images in that classifier's penultimate features; images per second of the sampler.
#pragma once

#include <cstdint>
#include <functional>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "data/captions.h"
#include "data/image_data.h"
#include "models/classifier.h"
#include "models/diffusion.h"
#include "models/quant_layers.h"

namespace atq {

struct TextToImageJudge {
  ClassifierModule* classifier = nullptr;  // eval mode; PenultimateFeatures for the distance
  Normalization normalization;             // its input: (pixel / 255 - mean) / std
};

struct TextToImageEvalOptions {
  int64_t samples = 1000;    // spread evenly over the classes (a multiple of the class count is exact)
  SamplerOptions sampler;    // steps, guidance, seed of the noise, batch
  uint64_t caption_seed = 0; // which held-out wordings the prompts use
};

struct TextToImageQuality {
  int64_t samples = 0;
  double class_accuracy = 0;               // judge's class == prompt's class
  std::vector<double> per_class_accuracy;  // by prompt class
  double frechet_distance = 0;             // generated vs the first `samples` real test images
  double real_class_accuracy = 0;          // the judge on those real images (its own reference point)
  double seconds = 0;                      // sampling only
  double images_per_second = 0;
  nlohmann::json ToJson() const;
};

// Draws the images (returned in `pixels` as uint8 [N, S, S] when not null; prompt class of row i in `labels`).
TextToImageQuality EvaluateTextToImage(UNetImpl& unet, const CaptionConditioner& conditioner,
                                       const CaptionSet& captions, const ImageTensors& real,
                                       const TextToImageJudge& judge, const TextToImageEvalOptions& options,
                                       torch::Tensor* pixels = nullptr, torch::Tensor* labels = nullptr);

// How far images drawn from the same prompts and starting noise lie from reference ones (a quantized model's
// against the float model's): a paired measure, so unlike the Fréchet distance it has no sampling noise of its
// own and tells small differences between settings apart with a few hundred images.
struct ImageDeviation {
  int64_t images = 0;
  double mean_abs_pixel = 0;  // on the 0..255 scale
  double psnr_db = 0;         // 10 log10(255^2 / mean squared difference); infinite for identical images
  nlohmann::json ToJson() const;
};
// pixels and reference: uint8 [N, S, S] of the same shape.
ImageDeviation CompareImages(const torch::Tensor& pixels, const torch::Tensor& reference);

// The UNet's weights as stored: its quantized layers (trained ternary or uniform) packed, the rest float32.
struct UNetWeightSize {
  QuantizedModelSize size;
  double sparsity = 0;  // zero codes over the ternary layers
  nlohmann::json ToJson() const;
};
UNetWeightSize MeasureUNetWeights(UNetImpl& unet);

}  // namespace atq
