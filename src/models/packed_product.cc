// PackedProduct, PackedRows and the RPB residual of packed layers.
#include "models/packed_product.h"

#include <torch/torch.h>

#include <vector>

#include "kernels/backend.h"

namespace atq {

torch::Tensor PackedProduct(const torch::Tensor& x, const PackedWeights& weights) {
  const int64_t cols = weights.layout.cols, rows = weights.layout.rows;
  TORCH_CHECK(x.size(-1) == cols, "packed product: input has ", x.size(-1), " features, the weights ", cols);
  // The backend of the input's device; the weights' bytes live where that backend keeps them (host memory for
  // the CPU backend, the only one built today).
  const Device device = x.is_cuda() ? Device::kCuda : Device::kCpu;
  const torch::Tensor flat = x.reshape({-1, cols}).to(torch::kFloat32).contiguous();
  std::vector<int64_t> shape = x.sizes().vec();
  shape.back() = rows;
  torch::Tensor y = torch::empty({flat.size(0), rows}, flat.options());
  PackedMatMul(device, weights.view(), flat.data_ptr<float>(), flat.size(0), y.data_ptr<float>());
  if (!weights.boosted_index.empty()) AddBoosted(weights, flat.data_ptr<float>(), flat.size(0), y.data_ptr<float>());
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

torch::Tensor PackedProduct(const torch::Tensor& x, const PackedLayerWeights& weights, const torch::Tensor& bias) {
  torch::Tensor y = PackedProduct(x, weights.weights);
  if (weights.residual.defined()) {
    const int64_t cols = weights.weights.layout.cols;
    const torch::Tensor flat = x.reshape({-1, cols}).to(torch::kFloat32);
    y += torch::mm(weights.residual, flat.t()).t().reshape(y.sizes());
  }
  if (bias.defined()) y += bias.to(torch::kFloat32);
  return y;
}

torch::Tensor DequantizedWeight(const PackedLayerWeights& weights) {
  const Layout& layout = weights.weights.layout;
  torch::Tensor dense = torch::empty({layout.rows, layout.cols}, torch::kFloat32);
  for (int64_t r = 0; r < layout.rows; ++r) {
    DequantizeRow(weights.weights.view(), r, dense.data_ptr<float>() + r * layout.cols);
  }
  if (weights.residual.defined()) dense += weights.residual.to_dense();
  return dense;
}

}  // namespace atq
