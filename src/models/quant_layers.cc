// QuantLinear and QuantConv2d: latent float weights, fake quantization in forward, per-layer statistics.
#include "models/quant_layers.h"

#include <torch/nn/functional/conv.h>
#include <torch/nn/functional/fold.h>
#include <torch/nn/functional/linear.h>
#include <torch/nn/init.h>
#include <torch/utils.h>

#include <algorithm>
#include <cmath>
#include <limits>
#include <utility>

#include "formats/atq_packed.h"
#include "formats/quant_type.h"
#include "io/tensor_info.h"
#include "grid/fake_quant.h"
#include "util/error.h"

namespace atq {
namespace {

constexpr int64_t kFloat32Bytes = 4;
constexpr int64_t kColumnBudget = int64_t{1} << 21;  // floats of im2col columns per packed convolution step

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
  if (!config.quantized) {
    SetShares(stats, weight);
    stats.packed_bytes = stats.fp32_bytes;
    return stats;
  }
  // The packer's own quantization: codes, scales and bytes exactly as export would store them.
  const LayerQuantization q = QuantizeLayer(weight, config);
  const QuantizedWeight& packed = q.packed;
  const bool per_tensor = packed.layout.granularity == Granularity::kTensor;
  stats.scales = ToVector(per_tensor ? packed.scales.slice(0, 0, 1) : packed.scales);
  if (packed.thresholds.defined()) stats.threshold = packed.thresholds.mean().item<double>();
  // Signs of the stored values (trits for ternary grids, levels for uniform ones).
  SetShares(stats, packed.values);
  stats.rpb_weights = q.boosted.sum().item<int64_t>();
  stats.packed_bytes = PackedBytes(packed.layout) + stats.rpb_weights * kRpbBytesPerWeight + bias_bytes;
  return stats;
}

LayerQuantStats PackedWeightStats(const std::string& name, const PackedLayerWeights& packed,
                                  const torch::Tensor& bias) {
  const PackedMatrix matrix = packed.weights.view();
  const Layout& layout = matrix.layout;
  Require(!IsFloatWeight(layout.type), "{}: packed statistics need a quantized type, not {}", name,
          TypeName(layout.type));
  LayerQuantStats stats;
  stats.name = name;
  stats.weights = layout.rows * layout.cols;
  const int64_t bias_bytes = bias.defined() ? bias.numel() * kFloat32Bytes : 0;
  stats.fp32_bytes = stats.weights * kFloat32Bytes + bias_bytes;
  stats.threshold = std::numeric_limits<double>::quiet_NaN();
  stats.rpb_weights = packed.boosted();
  stats.packed_bytes =
      static_cast<int64_t>(packed.weights.size()) + stats.rpb_weights * kRpbBytesPerWeight + bias_bytes;
  const RowDecoder decoder(matrix);
  const int64_t segment = KernelSegment(layout), segments = SegmentsPerRow(layout);
  std::vector<uint8_t> codes(static_cast<size_t>(segment * segments));
  std::vector<float> scales(static_cast<size_t>(segments));
  std::vector<int32_t> offsets(static_cast<size_t>(segments));
  int64_t minus = 0, plus = 0;
  for (int64_t r = 0; r < layout.rows; ++r) {
    decoder.Decode(r, codes.data(), scales.data(), offsets.data());
    for (int64_t j = 0; j < layout.cols; ++j) {
      const int32_t level = static_cast<int32_t>(codes[j]) - offsets[j / segment];
      minus += level < 0;
      plus += level > 0;
    }
    if (r == 0 || layout.granularity == Granularity::kChannel) stats.scales.push_back(scales[0]);
  }
  stats.share_minus = static_cast<double>(minus) / static_cast<double>(stats.weights);
  stats.share_plus = static_cast<double>(plus) / static_cast<double>(stats.weights);
  stats.share_zero = 1 - stats.share_minus - stats.share_plus;
  return stats;
}

QuantizedModelSize MeasureQuantizedModel(const torch::nn::Module& model, const NamedQuantLayers& layers) {
  QuantizedModelSize size;
  for (const auto& p : model.parameters()) {
    size.parameters += p.numel();
    size.model_fp32_bytes += 4 * p.numel();
  }
  for (const auto& b : model.buffers()) {
    if (b.is_floating_point()) size.model_fp32_bytes += 4 * b.numel();
  }
  size.model_bytes = size.model_fp32_bytes;
  for (const auto& [name, layer] : layers) {
    const auto* weights = dynamic_cast<const QuantWeightLayer*>(layer);
    size.packed_kernels = size.packed_kernels || (weights != nullptr && weights->RunsPackedKernels());
    if (layer->quant_config().mode() == WeightMode::kFull) continue;
    LayerQuantStats stats = layer->Stats(name);
    ++size.quantized_layers;
    size.quantized_weights += stats.weights;
    size.quantized_fp32_bytes += stats.fp32_bytes;
    size.quantized_bytes += stats.packed_bytes;
    size.model_bytes += stats.packed_bytes - stats.fp32_bytes;
    size.layers.push_back(std::move(stats));
  }
  return size;
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

void QuantWeightLayer::AttachPacked(std::shared_ptr<const PackedLayerWeights> packed, PackedRun run) {
  const Layout& layout = packed->weights.layout;
  Require(layout.rows == weight.size(0) && layout.cols == weight.numel() / weight.size(0),
          "packed weights {}x{} do not fit the layer's weight {}", layout.rows, layout.cols,
          ShapeString(std::vector<int64_t>(weight.sizes().begin(), weight.sizes().end())));
  Require(!packed->residual.defined() || packed->residual.sizes() == torch::IntArrayRef({layout.rows, layout.cols}),
          "packed weights: the residual's shape is not {}x{}", layout.rows, layout.cols);
  torch::NoGradGuard no_grad;
  weight.set_data(torch::zeros({1}, weight.options()).expand(weight.sizes()));
  packed_ = std::move(packed);
  run_ = run;
}

torch::Tensor QuantWeightLayer::ForwardWeight() const {
  return packed_ ? EffectiveWeight() : FakeQuantize(weight, config_);
}

torch::Tensor QuantWeightLayer::PackedForward(const torch::Tensor& x) const {
  return PackedProduct(x, *packed_, bias).to(x.scalar_type());
}

torch::Tensor QuantWeightLayer::EffectiveWeight() const {
  return packed_ ? DequantizedWeight(*packed_).view(weight.sizes()) : QuantizedWeightValues(weight, config_);
}

torch::Tensor QuantWeightLayer::FloatWeight() const { return packed_ ? EffectiveWeight() : weight.detach(); }

LayerQuantStats QuantWeightLayer::Stats(const std::string& name) const {
  return packed_ ? PackedWeightStats(name, *packed_, bias) : WeightQuantStats(name, weight, bias, config_);
}

QuantLinearImpl::QuantLinearImpl(int64_t in_features, int64_t out_features, bool bias)
    : QuantWeightLayer({out_features, in_features}, bias), in_features_(in_features), out_features_(out_features) {}

torch::Tensor QuantLinearImpl::forward(const torch::Tensor& x) {
  if (RunsPackedKernels()) return PackedForward(input_quant(x));
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
  if (RunsPackedKernels()) return PackedConvolution(input_quant(x));
  return torch::conv2d(input_quant(x), ForwardWeight(), bias, {stride_, stride_}, {padding_, padding_});
}

void QuantConv2dImpl::AttachPacked(std::shared_ptr<const PackedLayerWeights> packed, PackedRun run) {
  QuantWeightLayer::AttachPacked(packed, run);
  channels_last_.reset();
  if (run != PackedRun::kKernels || !ConvolutionRepacks(packed->weights.layout)) return;
  // The RPB residual as the kernels' boosted weights: flat indices and the values kept (packed + residual).
  PackedWeights torch_order;
  torch_order.layout = packed->weights.layout;
  torch_order.bytes.assign(packed->weights.data(), packed->weights.data() + packed->weights.size());
  if (packed->boosted() > 0) {
    const torch::Tensor indices = packed->residual._indices().to(torch::kLong).contiguous();
    const torch::Tensor values = packed->residual._values().to(torch::kFloat32).contiguous();
    const auto at = indices.accessor<int64_t, 2>();
    const float* residual = values.data_ptr<float>();
    const int64_t cols = torch_order.layout.cols;
    std::vector<int64_t> index(static_cast<size_t>(values.numel()));
    std::vector<float> value(index.size());
    std::vector<float> row(static_cast<size_t>(cols));
    int64_t decoded = -1;  // coalesced: entries sorted by row, each row decoded once
    for (int64_t e = 0; e < values.numel(); ++e) {
      const int64_t r = at[0][e], c = at[1][e];
      if (r != decoded) DequantizeRow(torch_order.view(), decoded = r, row.data());
      index[static_cast<size_t>(e)] = r * cols + c;
      value[static_cast<size_t>(e)] = row[static_cast<size_t>(c)] + residual[e];
    }
    SetBoosted(torch_order, std::move(index), std::move(value), "packed convolution");
  }
  const ConvGeometry geometry{in_channels_, out_channels_, kernel_size_, stride_, padding_};
  channels_last_ = std::make_shared<const PackedConvWeights>(ChannelsLastConvWeights(torch_order, geometry));
}

torch::Tensor QuantConv2dImpl::PackedConvolution(const torch::Tensor& x) const {
  namespace F = torch::nn::functional;
  Require(x.dim() == 4 && x.size(1) == in_channels_, "packed convolution: input must be [N, {}, H, W]", in_channels_);
  if (channels_last_) {
    // Channels-last in and out: the layers after a convolution (BatchNorm, ReLU, pooling, the residual sum)
    // keep torch's channels_last format, so only the first packed convolution's input is rearranged.
    const torch::Tensor input = x.to(torch::kFloat32).contiguous(torch::MemoryFormat::ChannelsLast);
    const torch::Tensor bias_values = bias.defined() ? bias.detach().to(torch::kFloat32).contiguous() : bias;
    const ConvGeometry& g = channels_last_->geometry;
    torch::Tensor y = torch::empty({x.size(0), out_channels_, g.OutSide(x.size(2)), g.OutSide(x.size(3))},
                                   input.options().memory_format(torch::MemoryFormat::ChannelsLast));
    PackedConv2d(*channels_last_, bias_values.defined() ? bias_values.data_ptr<float>() : nullptr,
                 input.data_ptr<float>(), x.size(0), x.size(2), x.size(3), y.data_ptr<float>());
    return y.to(x.scalar_type());
  }
  const auto side = [&](int64_t size) { return (size + 2 * padding_ - kernel_size_) / stride_ + 1; };
  const int64_t n = x.size(0), out_h = side(x.size(2)), out_w = side(x.size(3));
  const int64_t fan_in = in_channels_ * kernel_size_ * kernel_size_;
  const int64_t chunk = std::max<int64_t>(1, kColumnBudget / std::max<int64_t>(1, out_h * out_w * fan_in));
  torch::Tensor y = torch::empty({n, out_channels_, out_h, out_w}, x.options());
  for (int64_t start = 0; start < n; start += chunk) {
    const int64_t stop = std::min(n, start + chunk);
    const torch::Tensor columns =  // [b, in * k * k, out_h * out_w], channel-major like the weight's rows
        F::unfold(x.slice(0, start, stop), F::UnfoldFuncOptions(kernel_size_).padding(padding_).stride(stride_));
    y.slice(0, start, stop).copy_(PackedForward(columns.transpose(1, 2)).transpose(1, 2).reshape(
        {stop - start, out_channels_, out_h, out_w}));
  }
  return y;
}

}  // namespace atq
