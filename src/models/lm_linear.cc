// LmLinear's forward pass.
#include "models/lm_linear.h"

#include <torch/torch.h>

#include "kernels/matmul.h"

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

torch::Tensor PackedProduct(const torch::Tensor& x, const PackedWeights& weights) {
  const int64_t cols = weights.layout.cols, rows = weights.layout.rows;
  TORCH_CHECK(x.size(-1) == cols, "packed product: input has ", x.size(-1), " features, the weights ", cols);
  const torch::Tensor flat = x.reshape({-1, cols}).to(torch::kFloat32).contiguous();
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = rows;
  torch::Tensor y = torch::empty({flat.size(0), rows}, torch::kFloat32);
  MatMul(weights.view(), flat.data_ptr<float>(), flat.size(0), y.data_ptr<float>());
  return y.reshape(shape);
}

torch::Tensor PackedRows(const torch::Tensor& ids, const PackedWeights& table) {
  const torch::Tensor flat = ids.reshape({-1}).to(torch::kInt64).contiguous();
  const int64_t dim = table.layout.cols;
  torch::Tensor out = torch::empty({flat.size(0), dim}, torch::kFloat32);
  const int64_t* id = flat.data_ptr<int64_t>();
  for (int64_t i = 0; i < flat.size(0); ++i) {
    TORCH_CHECK(id[i] >= 0 && id[i] < table.layout.rows, "token id ", id[i], " is outside the vocabulary of ",
                table.layout.rows);
    DequantizeRow(table.view(), id[i], out.data_ptr<float>() + i * dim);
  }
  std::vector<int64_t> shape = ids.sizes().vec();
  shape.push_back(dim);
  return out.reshape(shape);
}

}  // namespace atq
