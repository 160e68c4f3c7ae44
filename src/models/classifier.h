// Image classifiers whose every weight layer is quantizable: the contract shared by models, training and
// evaluation. A layer runs full precision, ternary (fake-quantized, straight-through estimator) or uniform b-bit.
#pragma once

#include <memory>
#include <string>
#include <utility>
#include <vector>

#include <torch/nn/module.h>
#include <torch/types.h>

namespace atq {

enum class WeightMode { kFull, kTernary, kUniform };

// How a ternary layer picks its threshold from its own weights (recomputed at every forward while training).
enum class ThresholdMode {
  kSparsity,           // threshold = the `sparsity` quantile of |w|: that share of weights becomes 0
  kMagnitudeAbsolute,  // threshold = `magnitude`
  kMagnitudeRelative,  // threshold = `magnitude` * mean |w|
};

struct LayerQuantConfig {
  WeightMode mode = WeightMode::kFull;
  int bits = 8;  // kUniform: symmetric per-channel b-bit
  ThresholdMode threshold_mode = ThresholdMode::kSparsity;
  double sparsity = 0.5;    // kSparsity target; the training schedule moves it
  double magnitude = 0.7;   // kMagnitude* cutoff
  bool per_channel = true;  // one scale per output channel (else one per layer)
  double rpb_fraction = 0;  // residual precision boosting: share of weights kept exactly (sparse f16 residual)
  // Straight-through estimator: the gradient reaches a latent weight while |w| <= ste_clip * scale of its
  // channel (or when it points back toward zero); see quant/ternary.h.
  double ste_clip = 2.0;
};

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

// A classifier: forward gives logits [N, classes] for images [N, C, H, W].
class ClassifierModule : public torch::nn::Module {
 public:
  virtual torch::Tensor forward(torch::Tensor images) = 0;
  // Every weight layer, in order, with its parameter-path name ("features.0", "fc").
  virtual std::vector<std::pair<std::string, QuantizableLayer*>> QuantLayers() = 0;
  // Every weight layer directly followed by a BatchNorm, as (layer name, BatchNorm name) module paths, so the
  // BatchNorm can be folded into the layer (quant/batchnorm_fold.h). Empty for models without BatchNorm.
  virtual std::vector<std::pair<std::string, std::string>> BatchNormPairs() { return {}; }
};

}  // namespace atq
