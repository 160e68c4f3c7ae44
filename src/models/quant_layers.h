// Linear and 2-D convolution layers whose weight runs full precision, ternary or uniform b-bit (fake-quantized
// in the forward pass, latent float weights trained through straight-through estimators).
#pragma once

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "models/activation_quant.h"
#include "models/classifier.h"
#include "kernels/conv2d.h"
#include "models/packed_product.h"

namespace atq {

// What both layers share: the configuration and the statistics of a weight [out, ...] with an optional bias.
LayerQuantStats WeightQuantStats(const std::string& name, const torch::Tensor& weight, const torch::Tensor& bias,
                                 const LayerQuantConfig& config);
// The same for packed weights: codes, scales and bytes as stored (the threshold is not stored: NaN).
LayerQuantStats PackedWeightStats(const std::string& name, const PackedLayerWeights& packed,
                                  const torch::Tensor& bias);

// A model's weights as stored against float32: its quantized layers as packed (codes, scales, RPB pairs, biases),
// every other parameter and floating buffer as float32. Every model report (image-text, text-to-image) counts so.
struct QuantizedModelSize {
  int64_t parameters = 0;
  int64_t quantized_layers = 0;       // layers on a ternary or uniform grid
  int64_t quantized_weights = 0;
  int64_t quantized_fp32_bytes = 0;   // those layers' weights and biases as float32
  int64_t quantized_bytes = 0;        // as stored
  int64_t model_fp32_bytes = 0;
  int64_t model_bytes = 0;            // the same with the quantized layers as stored
  bool packed_kernels = false;        // some layer runs through atq's packed kernels
  std::vector<LayerQuantStats> layers;  // the quantized layers, in `layers` order
  double Compression() const {
    return quantized_bytes > 0 ? static_cast<double>(quantized_fp32_bytes) / static_cast<double>(quantized_bytes) : 1.0;
  }
};
QuantizedModelSize MeasureQuantizedModel(const torch::nn::Module& model, const NamedQuantLayers& layers);

// What both layers share: a weight [out, ...] with optional bias [out], its quantization configuration, and the
// QuantizableLayer views of it. Registers "weight" and "bias" as torch::nn's layers name them.
class QuantWeightLayer : public torch::nn::Module, public QuantizableLayer {
 public:
  void SetQuantConfig(const LayerQuantConfig& config) override { config_ = config; }
  const LayerQuantConfig& quant_config() const override { return config_; }
  torch::Tensor EffectiveWeight() const override;
  torch::Tensor FloatWeight() const override;
  LayerQuantStats Stats(const std::string& name) const override;
  // torch::nn's initialization: Kaiming-uniform weight, uniform bias by fan-in.
  void reset_parameters();
  // W[o] *= scale[o] and b[o] = b[o] * scale[o] + shift[o] (a bias is added when the layer had none): folds an
  // affine map of the outputs, such as an evaluation-mode BatchNorm, into the layer. scale, shift: [out].
  void FoldAffine(const torch::Tensor& scale, const torch::Tensor& shift);
  // Runs the layer from packed weights, as `run` says. `packed` is [out, in * k * k]; the float weight is released
  // (a zero-stride placeholder of its shape stays registered), and EffectiveWeight, FloatWeight and Stats read
  // the packed weights. The quantization config is the caller's to set; it no longer changes the forward pass.
  virtual void AttachPacked(std::shared_ptr<const PackedLayerWeights> packed, PackedRun run);
  const PackedLayerWeights* packed() const { return packed_.get(); }
  bool RunsPackedKernels() const { return packed_ && run_ == PackedRun::kKernels; }

  torch::Tensor weight;
  torch::Tensor bias;  // undefined when built without bias
  // Fake-quantizes the layer's input (post-training activation quantization); the identity until configured.
  ActivationQuantizer input_quant;

 protected:
  QuantWeightLayer(const std::vector<int64_t>& weight_shape, bool bias);
  // The weight the forward pass uses, differentiable through the straight-through estimators.
  torch::Tensor ForwardWeight() const;
  // x [..., in * k * k] through the packed kernels plus bias -> [..., out]; only when RunsPackedKernels().
  torch::Tensor PackedForward(const torch::Tensor& x) const;

 private:
  LayerQuantConfig config_;
  std::shared_ptr<const PackedLayerWeights> packed_;
  PackedRun run_ = PackedRun::kKernels;
};

// y = x W^T + b with W fake-quantized. Parameters "weight" [out, in] and "bias" [out] (torch::nn::Linear's names
// and initialization).
class QuantLinearImpl : public QuantWeightLayer {
 public:
  QuantLinearImpl(int64_t in_features, int64_t out_features, bool bias = true);

  // x: [N, in] -> [N, out]
  torch::Tensor forward(const torch::Tensor& x);

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

 private:
  int64_t in_features_;
  int64_t out_features_;
};
TORCH_MODULE(QuantLinear);

// 2-D convolution (square kernel, groups = 1, dilation = 1) with W fake-quantized. Parameters "weight"
// [out, in, k, k] and "bias" [out] (torch::nn::Conv2d's names and initialization).
class QuantConv2dImpl : public QuantWeightLayer {
 public:
  QuantConv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
                  int64_t padding = 0, bool bias = true);

  // x: [N, in, H, W] -> [N, out, H', W']
  torch::Tensor forward(const torch::Tensor& x);

  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t kernel_size() const { return kernel_size_; }
  int64_t stride() const { return stride_; }
  int64_t padding() const { return padding_; }

  // Also keeps the weights in the channels-last column order of PackedConv2d (kernels/conv2d.h) where the format
  // allows it (atq's per-tensor and per-channel types).
  void AttachPacked(std::shared_ptr<const PackedLayerWeights> packed, PackedRun run) override;

 private:
  // Through PackedConv2d where the weights were reordered for it; else as im2col columns (torch's unfold) times
  // the packed weights, a few images at a time.
  torch::Tensor PackedConvolution(const torch::Tensor& x) const;

  std::shared_ptr<const PackedConvWeights> channels_last_;

  int64_t in_channels_;
  int64_t out_channels_;
  int64_t kernel_size_;
  int64_t stride_;
  int64_t padding_;
};
TORCH_MODULE(QuantConv2d);

}  // namespace atq
