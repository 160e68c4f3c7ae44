// LmLinear's forward pass.
#include "models/lm_linear.h"

#include <torch/torch.h>

#include "models/packed_product.h"

namespace atq {

LmLinearImpl::LmLinearImpl(int64_t in_features, int64_t out_features, bool bias) {
  weight = register_parameter("weight", torch::empty({out_features, in_features}));
  torch::nn::init::normal_(weight, 0, 0.02);
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
    y = torch::nn::functional::linear(x, weight, bias);
  }
  if (output_tap) output_tap(y);
  return y;
}

}  // namespace atq
