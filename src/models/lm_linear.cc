// LmLinear's forward pass.
#include "models/lm_linear.h"

#include <torch/torch.h>

#include "models/packed_product.h"

namespace atq {

namespace {
thread_local bool placeholders = false;
}  // namespace

PlaceholderLmWeights::PlaceholderLmWeights() : previous_(placeholders) { placeholders = true; }
PlaceholderLmWeights::~PlaceholderLmWeights() { placeholders = previous_; }
bool PlaceholderLmWeights::active() { return placeholders; }

torch::Tensor PlaceholderWeight(const std::vector<int64_t>& shape) { return torch::zeros({1}).expand(shape); }

bool IsPlaceholderWeight(const torch::Tensor& weight) {
  if (weight.numel() == 0) return true;
  for (const int64_t stride : weight.strides()) {
    if (stride != 0) return false;
  }
  return weight.numel() > 1;
}

torch::nn::Embedding MakeLmEmbedding(int64_t count, int64_t width) {
  torch::nn::EmbeddingOptions options(count, width);
  if (placeholders) options._weight(PlaceholderWeight({count, width}));
  return torch::nn::Embedding(options);
}

LmLinearImpl::LmLinearImpl(int64_t in_features, int64_t out_features, bool bias) {
  if (placeholders) {
    weight = register_parameter("weight", PlaceholderWeight({out_features, in_features}), /*requires_grad=*/false);
  } else {
    weight = register_parameter("weight", torch::empty({out_features, in_features}));
    torch::nn::init::normal_(weight, 0, 0.02);
  }
  if (bias) this->bias = register_parameter("bias", torch::zeros({out_features}));
}

torch::Tensor LmLinearImpl::forward(const torch::Tensor& x) {
  if (tap) tap(x);
  torch::Tensor y;
  if (packed) {
    y = PackedProduct(x, *packed);
    if (bias.defined()) y = y + bias.to(torch::kFloat32);
    y = y.to(x.scalar_type());
  } else {
    y = torch::nn::functional::linear(x, quant.quantized ? FakeQuantize(weight, quant, learned_scale) : weight, bias);
  }
  if (output_tap) output_tap(y);
  return y;
}

}  // namespace atq
