// Linear and 2-D convolution layers whose weight runs full precision, ternary or uniform b-bit (fake-quantized
// in the forward pass, latent float weights trained through straight-through estimators).
#pragma once

#include <cstdint>
#include <string>

#include <torch/nn/module.h>
#include <torch/nn/pimpl.h>
#include <torch/types.h>

#include "models/classifier.h"

namespace atq {

// What both layers share: the configuration and the statistics of a weight [out, ...] with an optional bias.
LayerQuantStats WeightQuantStats(const std::string& name, const torch::Tensor& weight, const torch::Tensor& bias,
                                 const LayerQuantConfig& config);

// y = x W^T + b with W fake-quantized. Parameters "weight" [out, in] and "bias" [out] (torch::nn::Linear's names
// and initialization).
class QuantLinearImpl : public torch::nn::Module, public QuantizableLayer {
 public:
  QuantLinearImpl(int64_t in_features, int64_t out_features, bool bias = true);

  // x: [N, in] -> [N, out]
  torch::Tensor forward(const torch::Tensor& x);
  void reset_parameters();

  void SetQuantConfig(const LayerQuantConfig& config) override { config_ = config; }
  const LayerQuantConfig& quant_config() const override { return config_; }
  torch::Tensor EffectiveWeight() const override;
  torch::Tensor FloatWeight() const override { return weight.detach(); }
  LayerQuantStats Stats(const std::string& name) const override;

  int64_t in_features() const { return in_features_; }
  int64_t out_features() const { return out_features_; }

  torch::Tensor weight;
  torch::Tensor bias;  // undefined when built without bias

 private:
  int64_t in_features_;
  int64_t out_features_;
  LayerQuantConfig config_;
};
TORCH_MODULE(QuantLinear);

// 2-D convolution (square kernel, groups = 1, dilation = 1) with W fake-quantized. Parameters "weight"
// [out, in, k, k] and "bias" [out] (torch::nn::Conv2d's names and initialization).
class QuantConv2dImpl : public torch::nn::Module, public QuantizableLayer {
 public:
  QuantConv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride = 1,
                  int64_t padding = 0, bool bias = true);

  // x: [N, in, H, W] -> [N, out, H', W']
  torch::Tensor forward(const torch::Tensor& x);
  void reset_parameters();

  void SetQuantConfig(const LayerQuantConfig& config) override { config_ = config; }
  const LayerQuantConfig& quant_config() const override { return config_; }
  torch::Tensor EffectiveWeight() const override;
  torch::Tensor FloatWeight() const override { return weight.detach(); }
  LayerQuantStats Stats(const std::string& name) const override;

  int64_t in_channels() const { return in_channels_; }
  int64_t out_channels() const { return out_channels_; }
  int64_t kernel_size() const { return kernel_size_; }
  int64_t stride() const { return stride_; }
  int64_t padding() const { return padding_; }

  torch::Tensor weight;
  torch::Tensor bias;  // undefined when built without bias

 private:
  int64_t in_channels_;
  int64_t out_channels_;
  int64_t kernel_size_;
  int64_t stride_;
  int64_t padding_;
  LayerQuantConfig config_;
};
TORCH_MODULE(QuantConv2d);

}  // namespace atq
