// QuantLinear and QuantConv2d: latent float weights, fake quantization in forward, per-layer statistics.
#include "models/quant_layers.h"

#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

#include <cmath>

#include "formats/atq_packed.h"
#include "formats/quant_type.h"
#include "io/tensor_info.h"
#include "quant/ternary.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr int64_t kFloat32Bytes = 4;

// torch::nn::Linear / Conv2d's reset_parameters: kaiming_uniform(a = sqrt(5)) for the weight, and the bias
// uniform in +-1/sqrt(fan_in).
void ResetLikeTorch(torch::Tensor& weight, torch::Tensor& bias) {
  torch::NoGradGuard no_grad;
  torch::nn::init::kaiming_uniform_(weight, std::sqrt(5.0));
  if (bias.defined()) {
    const double fan_in = static_cast<double>(weight.numel() / weight.size(0));
    const double bound = 1 / std::sqrt(fan_in);
    torch::nn::init::uniform_(bias, -bound, bound);
  }
}

Layout PackedLayout(QuantType type, const torch::Tensor& weight, bool per_channel) {
  Layout layout;
  layout.type = type;
  layout.rows = weight.size(0);
  layout.cols = weight.numel() / weight.size(0);
  layout.granularity = per_channel ? Granularity::kChannel : Granularity::kTensor;
  return layout;
}

void SetShares(LayerQuantStats& stats, const torch::Tensor& signs) {
  const double n = static_cast<double>(signs.numel());
  stats.share_minus = static_cast<double>((signs < 0).sum().item<int64_t>()) / n;
  stats.share_plus = static_cast<double>((signs > 0).sum().item<int64_t>()) / n;
  stats.share_zero = 1 - stats.share_minus - stats.share_plus;
}

std::vector<float> ToVector(const torch::Tensor& values) {
  const torch::Tensor flat = values.detach().to(torch::kCPU, torch::kFloat).contiguous();
  return std::vector<float>(flat.data_ptr<float>(), flat.data_ptr<float>() + flat.numel());
}

}  // namespace

LayerQuantStats WeightQuantStats(const std::string& name, const torch::Tensor& weight, const torch::Tensor& bias,
                                 const LayerQuantConfig& config) {
  torch::NoGradGuard no_grad;
  LayerQuantStats stats;
  stats.name = name;
  stats.weights = weight.numel();
  const int64_t bias_bytes = bias.defined() ? bias.numel() * kFloat32Bytes : 0;
  stats.fp32_bytes = stats.weights * kFloat32Bytes + bias_bytes;
  switch (config.mode) {
    case WeightMode::kFull:
      SetShares(stats, weight);
      stats.packed_bytes = stats.fp32_bytes;
      break;
    case WeightMode::kTernary: {
      const TernaryResult ternary = Ternarize(weight, config);
      stats.threshold = ternary.thresholds.mean().item<double>();
      stats.scales = ToVector(ternary.scales);
      SetShares(stats, ternary.codes);
      stats.rpb_weights = ternary.boosted.sum().item<int64_t>();
      stats.packed_bytes = AtqPackedBytes(PackedLayout(QuantType::kTernary2, weight, config.per_channel)) +
                           stats.rpb_weights * kRpbBytesPerWeight + bias_bytes;
      break;
    }
    case WeightMode::kUniform: {
      const UniformResult uniform = QuantizeUniform(weight, config.bits, config.per_channel);
      stats.scales = ToVector(uniform.scales);
      SetShares(stats, uniform.codes);
      const auto type = static_cast<QuantType>(static_cast<uint32_t>(QuantType::kUniform2Sym) + config.bits - 2);
      stats.packed_bytes = AtqPackedBytes(PackedLayout(type, weight, config.per_channel)) + bias_bytes;
      break;
    }
  }
  return stats;
}

QuantWeightLayer::QuantWeightLayer(const std::vector<int64_t>& weight_shape, bool bias) {
  for (const int64_t dim : weight_shape) {
    Require(dim > 0, "quantizable layer: weight shape {} needs positive sizes", ShapeString(weight_shape));
  }
  weight = register_parameter("weight", torch::empty(weight_shape));
  if (bias) this->bias = register_parameter("bias", torch::empty({weight_shape[0]}));
  input_quant = register_module("input_quant", ActivationQuantizer());
  reset_parameters();
}

void QuantWeightLayer::reset_parameters() { ResetLikeTorch(weight, bias); }

void QuantWeightLayer::FoldAffine(const torch::Tensor& scale, const torch::Tensor& shift) {
  Require(scale.dim() == 1 && scale.size(0) == weight.size(0) && shift.sizes() == scale.sizes(),
          "FoldAffine: scale and shift must be [{}]", weight.size(0));
  torch::NoGradGuard no_grad;
  std::vector<int64_t> broadcast(weight.dim(), 1);
  broadcast[0] = weight.size(0);
  weight.mul_(scale.to(weight.dtype()).view(broadcast));
  if (!bias.defined()) bias = register_parameter("bias", torch::zeros({weight.size(0)}, weight.options()));
  bias.mul_(scale.to(bias.dtype())).add_(shift.to(bias.dtype()));
}

torch::Tensor QuantWeightLayer::ForwardWeight() const { return FakeQuantize(weight, config_); }

torch::Tensor QuantWeightLayer::EffectiveWeight() const { return QuantizedWeight(weight, config_); }

LayerQuantStats QuantWeightLayer::Stats(const std::string& name) const {
  return WeightQuantStats(name, weight, bias, config_);
}

QuantLinearImpl::QuantLinearImpl(int64_t in_features, int64_t out_features, bool bias)
    : QuantWeightLayer({out_features, in_features}, bias), in_features_(in_features), out_features_(out_features) {}

torch::Tensor QuantLinearImpl::forward(const torch::Tensor& x) {
  return torch::nn::functional::linear(input_quant(x), ForwardWeight(), bias);
}

QuantConv2dImpl::QuantConv2dImpl(int64_t in_channels, int64_t out_channels, int64_t kernel_size, int64_t stride,
                                 int64_t padding, bool bias)
    : QuantWeightLayer({out_channels, in_channels, kernel_size, kernel_size}, bias),
      in_channels_(in_channels),
      out_channels_(out_channels),
      kernel_size_(kernel_size),
      stride_(stride),
      padding_(padding) {
  Require(stride > 0 && padding >= 0, "QuantConv2d: bad stride {} or padding {}", stride, padding);
}

torch::Tensor QuantConv2dImpl::forward(const torch::Tensor& x) {
  return torch::conv2d(input_quant(x), ForwardWeight(), bias, {stride_, stride_}, {padding_, padding_});
}

}  // namespace atq
