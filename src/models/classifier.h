// Image classifiers whose every weight layer is quantizable: the contract shared by models, training and
// evaluation. A layer runs full precision, ternary (fake-quantized, straight-through estimator) or uniform b-bit.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

#include "grid/fake_quant.h"

namespace atq {

// What a quantized layer reports (for evaluation and export).
struct LayerQuantStats {
  std::string name;
  int64_t weights = 0;
  double threshold = 0;              // mean over channels for per-channel thresholds
  std::vector<float> scales;         // one per output channel or one
  double share_minus = 0, share_zero = 0, share_plus = 0;  // ternary code shares
  int64_t rpb_weights = 0;           // boosted weights kept exactly
  int64_t packed_bytes = 0;          // t2 codes + f32 scales + RPB (int32 index + f16 value each) + bias
  int64_t fp32_bytes = 0;            // weights + bias as float32
};

// Implemented by QuantLinear and QuantConv2d.
class QuantizableLayer {
 public:
  virtual ~QuantizableLayer() = default;
  virtual void SetQuantConfig(const LayerQuantConfig& config) = 0;
  virtual const LayerQuantConfig& quant_config() const = 0;
  // The weight the forward pass uses now (fake-quantized, boosted), detached. Shape of the float weight.
  virtual torch::Tensor EffectiveWeight() const = 0;
  virtual torch::Tensor FloatWeight() const = 0;
  virtual LayerQuantStats Stats(const std::string& name) const = 0;
};

// A model's quantizable layers in order, each with its parameter-path name ("features.0", "text.proj").
using NamedQuantLayers = std::vector<std::pair<std::string, QuantizableLayer*>>;

// A classifier: forward gives logits [N, classes] for images [N, C, H, W].
class ClassifierModule : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor images) = 0;
  // Every weight layer, in order, with its parameter-path name ("features.0", "fc").
  virtual std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers() = 0;
  // Every weight layer directly followed by a BatchNorm, as (layer name, BatchNorm name) module paths, so the
  // BatchNorm can be folded into the layer (quant/batchnorm_fold.h). Empty for models without BatchNorm.
  virtual std::vector<std::pair<std::string, std::string>> BatchNormPairs() { return {}; }
  // The features the last layer reads, [N, D] (what Fréchet distances are measured in). Models that do not say
  // throw atq::Error.
  virtual torch::Tensor PenultimateFeatures(const torch::Tensor& images);
};

}  // namespace atq
